#ifndef PEFTKIT_COPENBLAS_SHIM_H
#define PEFTKIT_COPENBLAS_SHIM_H
#include <cblas.h>
/* Declared by OpenBLAS' cblas.h; repeated here in case a distribution's header omits them. */
void openblas_set_num_threads(int num_threads);
int openblas_get_num_threads(void);
#endif
