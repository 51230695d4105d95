#ifndef PEFTKIT_H
#define PEFTKIT_H
#endif
