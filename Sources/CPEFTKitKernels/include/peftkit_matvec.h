// PEFTKit's fp32 matrix-vector products (internal; not part of the public C ABI in include/peftkit.h): the decode
// products, where one activation row meets a whole weight matrix and the time is the time to stream the weight
// from memory once. Each function computes a range of outputs so the Swift caller (`sgemm`, m == 1) can split a
// product between the pool's threads; nothing is validated here: the caller checks sizes first.
//
// `isa` takes the numbering of peftkit_elementwise.h (PK_EW_SCALAR, PK_EW_AVX2, PK_EW_AVX512); a path the CPU
// cannot run falls back to the best one it can. Every output is one dot product in a fixed order that depends
// only on the path and on k, never on the range it was computed in, so a split between threads changes nothing.
//
// Both functions follow sgemm's alpha/beta: y = alpha·dot + beta·y, and with beta == 0 y is not read (a NaN
// there does not survive). k == 0 gives y = beta·y (0 when beta == 0).
#ifndef PEFTKIT_MATVEC_H
#define PEFTKIT_MATVEC_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/// Rows of a row-major W (row r at w + r·ld, k contiguous floats): y[r] = alpha·Σₗ w[r·ld + l]·x[l] + beta·y[r]
/// for r0 <= r < r1, one row after the other (the weight is read as one sequential stream). A row's dot product
/// runs in four accumulators of W lanes (W = 16 on AVX-512, 8 otherwise; element l goes to accumulator
/// (l / W) mod 4, lane l mod W; fused multiply-adds on AVX2/AVX-512, product then sum on the portable path),
/// added as (a0 + a1) + (a2 + a3) and then lane by lane in a fixed tree.
void pk_f32mv_rows(int isa, const float *w, int64_t ld, const float *x, int64_t k, float alpha, float beta,
                    float *y, int64_t r0, int64_t r1);

/// Columns of a row-major B (row l at b + l·ld): y[j] = alpha·Σₗ x[l]·b[l·ld + j] + beta·y[j] for j0 <= j < j1
/// (y = Bᵀx, GPT-2's Conv1D layout). Each output adds its k products in the order of l, one after the other
/// (fused on AVX2/AVX-512), so the result of a column does not depend on which lane holds it, only on whether
/// products are fused. B is read one row at a time, in contiguous pieces of up to 4096 columns whose partial
/// sums stay in L1/L2; split by columns, threads would read strided pieces of every row, so callers run a
/// product on one thread.
void pk_f32mv_cols(int isa, const float *b, int64_t ld, const float *x, int64_t k, float alpha, float beta,
                    float *y, int64_t j0, int64_t j1);

#ifdef __cplusplus
}
#endif
#endif
