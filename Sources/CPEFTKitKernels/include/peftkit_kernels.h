// Internal C kernels of PEFTKit (not part of the public C ABI in include/peftkit.h): dequantisation of ggml
// block formats and the integer dot products of a quantized matrix-vector product, with a scalar, an AVX2+FMA
// and an AVX-512 (F/BW/VL/DQ/VNNI) implementation chosen at run time. No function here validates its input:
// the Swift caller (Kernels/QuantizedMatrix.swift) checks sizes and types first.
#ifndef PEFTKIT_KERNELS_H
#define PEFTKIT_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/// Instruction-set paths. PK_ISA_AVX512 implies AVX2 + FMA as well.
enum { PK_ISA_SCALAR = 0, PK_ISA_AVX2 = 1, PK_ISA_AVX512 = 2 };

/// The best path this CPU runs (cached after the first call).
int pk_isa_detect(void);

/// Whether `type` (a ggml type id) has kernels here: F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K,
/// Q6_K.
int pk_type_supported(int type);

/// Dequantises `nrows` rows of `n` elements each (row r at `src + r * row_bytes`) into `dst + r * ldd`.
/// `n` is a multiple of the type's block size. Bit-identical on every path (no fused multiply-adds).
void pk_dequantize_rows(int isa, int type, const void *src, size_t row_bytes, int64_t nrows, int64_t n,
                        float *dst, int64_t ldd);

/// Quantises an activation of `n` elements (n % 32 == 0) to 8 bits per 32-element group g:
/// xd[g] = max|x| / 127, xq = round(x / xd) in [-127, 127], xs[h] = sum of the 16 xq of half-group h.
/// A group holding NaN or infinity gets xd = NaN (the products it enters become NaN).
void pk_quantize_act(const float *x, int64_t n, int8_t *xq, float *xd, int16_t *xs);

/// pk_quantize_act on a given path (scalar, or AVX2 for AVX2 and AVX-512); every path writes the same bytes.
void pk_quantize_act_isa(int isa, const float *x, int64_t n, int8_t *xq, float *xd, int16_t *xs);

/// y[r] = dot(row r of the matrix, x) for r in [r0, r1), from the quantized activation of pk_quantize_act.
/// Quantized types only (not F32/F16/BF16); `n` is a multiple of the type's block size.
void pk_matvec_rows(int isa, int type, const void *w, size_t row_bytes, int64_t r0, int64_t r1, int64_t n,
                    const int8_t *xq, const float *xd, const int16_t *xs, float *y);

// ---- int8 matrix-matrix product (qgemm.c): prefill without gradients ----------------------------------------
// Activations: `rows` rows quantized by pk_quantize_act, row c at xq + c·n, xd + c·(n/32), xs + c·(n/16);
// pk_qgemm_prepare adds per row and chunk (pk_qgemm_chunks per row) the integer start xo and the min factor xm.

/// Whether `type` has the int8 product: Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K.
int pk_qgemm_supported(int type);

/// Chunks per activation row (n/16 for Q6_K, n/32 otherwise): the length of a row of xo and xm.
int64_t pk_qgemm_chunks(int type, int64_t n);

/// Bytes of the scratch one pk_qgemm_rows call unpacks its weight panels into.
size_t pk_qgemm_scratch_bytes(int type, int64_t n);

/// xo[c·chunks + j] and xm[c·chunks + j] of `rows` quantized activation rows (the same on every path).
void pk_qgemm_prepare(int type, int64_t n, int64_t rows, const float *xd, const int16_t *xs, int32_t *xo,
                      float *xm);

/// out[c·ldo + r] = Σ_i w_ri·x̂_ci (+ beta·out[c·ldo + r] when beta != 0; with beta == 0 out is not read) for
/// weight rows r0 <= r < r1 and activation rows 0 <= c < rows. Integer dot products per scale chunk, then one
/// fp32 product and fused multiply-adds per chunk in a fixed order: every path gives the same bits, whatever
/// range of rows a call computes.
void pk_qgemm_rows(int isa, int type, const void *w, size_t row_bytes, int64_t r0, int64_t r1, int64_t n,
                   int64_t rows, const int8_t *xq, const float *xd, const int32_t *xo, const float *xm,
                   float *out, int64_t ldo, float beta, void *scratch);

#ifdef __cplusplus
}
#endif
#endif
