#ifndef PEFTKIT_COPENBLAS_SHIM_H
#define PEFTKIT_COPENBLAS_SHIM_H
#include <cblas.h>
#include <stddef.h>
/* Declared by OpenBLAS' cblas.h; repeated here in case a distribution's header omits them. */
void openblas_set_num_threads(int num_threads);
int openblas_get_num_threads(void);
/* LAPACK routines libopenblas carries (Debian ships no lapacke.h next to it): the Fortran symbols, column-major,
 * every argument by pointer, each character argument followed by its hidden length (gfortran's convention). Used
 * by LoRA's PiSSA (SVD) and OLoRA (QR) initialisation. */
void dgesdd_(const char *jobz, const int *m, const int *n, double *a, const int *lda, double *s, double *u,
             const int *ldu, double *vt, const int *ldvt, double *work, const int *lwork, int *iwork, int *info,
             size_t jobz_len);
void dgeqrf_(const int *m, const int *n, double *a, const int *lda, double *tau, double *work, const int *lwork,
             int *info);
void dorgqr_(const int *m, const int *n, const int *k, double *a, const int *lda, const double *tau, double *work,
             const int *lwork, int *info);
#endif
