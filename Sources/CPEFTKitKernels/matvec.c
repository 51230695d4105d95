// fp32 matrix-vector products for decode (see peftkit_matvec.h): one activation row against a weight matrix that
// is read once from memory, so the loops are shaped for streaming: the weight is read in address order, one row
// at a time (a single sequential stream per thread, which the hardware prefetchers follow at the read bandwidth;
// interleaving four rows, four streams 2 KB apart, measured about a third slower on Zen 4), with four independent
// accumulators, and x (or the partial sums of the column kernel) kept in L1. Three paths, each a few lines per layout: portable C vectors
// (8 lanes, the baseline target, no fused multiply-adds), AVX2+FMA (8 lanes) and AVX-512F (16 lanes), the vector
// ones compiled under target attributes (no -march), chosen at run time through pk_ew_detect.
//
// Determinism: an output's arithmetic depends on the path and on k only. The row kernel sums a row in four
// accumulators of W lanes (element l goes to accumulator (l / W) mod 4, lane l mod W), adds them as
// (a0 + a1) + (a2 + a3) and the lanes in one fixed tree; the column kernel adds an output's products in the order
// of l, one at a time, whatever tile holds it.
#pragma clang fp contract(off)

#include "peftkit_matvec.h"
#include "peftkit_elementwise.h"

#include <stdint.h>
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#define MV_X86 1
#include <immintrin.h>
#else
#define MV_X86 0
#endif

#pragma clang diagnostic ignored "-Wpsabi"

/// Columns per tile of the column kernel: the partial sums of one tile (16 KB) stay in L1 while B's rows stream by.
/// Wide enough for GPT-2's widest Conv1D (3072): a narrower tile reads pieces of each row, strided, at half speed.
enum { MV_TILE = 4096 };

/// y = alpha·s + beta·y, with beta == 0 not reading y (sgemm's convention).
static inline float mv_finish(float s, float alpha, float beta, float y) {
    const float t = alpha * s;
    return beta == 0.0f ? t : t + beta * y;
}

// ---- portable: eight lanes of plain C vectors -----------------------------------------------------------------

typedef float mv_v8f __attribute__((vector_size(32)));

static inline mv_v8f mv_load8(const float *p) {
    mv_v8f v;
    memcpy(&v, p, sizeof v);
    return v;
}
/// The first min(n, 8) floats at p, zeros after.
static inline mv_v8f mv_load8n(const float *p, int64_t n) {
    mv_v8f v = {0, 0, 0, 0, 0, 0, 0, 0};
    memcpy(&v, p, (size_t)(n < 8 ? n : 8) * sizeof(float));
    return v;
}
static inline float mv_hsum8(mv_v8f t) {
    return ((t[0] + t[4]) + (t[2] + t[6])) + ((t[1] + t[5]) + (t[3] + t[7]));
}

static void mv_rows_scalar(const float *w, int64_t ld, const float *x, int64_t k, float alpha, float beta, float *y,
                           int64_t r0, int64_t r1) {
    const int64_t kb = k & ~(int64_t)31, rem = k - kb;
    for (int64_t r = r0; r < r1; r++) {
        const float *wr = w + r * ld;
        mv_v8f a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0};
        for (int64_t l = 0; l < kb; l += 32) {
            a0 = a0 + mv_load8(wr + l) * mv_load8(x + l);
            a1 = a1 + mv_load8(wr + l + 8) * mv_load8(x + l + 8);
            a2 = a2 + mv_load8(wr + l + 16) * mv_load8(x + l + 16);
            a3 = a3 + mv_load8(wr + l + 24) * mv_load8(x + l + 24);
        }
        // The last k mod 32: blocks of 8 into a0, a1, a2, a3 in turn, the final one zero-filled.
        if (rem > 0) a0 = a0 + mv_load8n(wr + kb, rem) * mv_load8n(x + kb, rem);
        if (rem > 8) a1 = a1 + mv_load8n(wr + kb + 8, rem - 8) * mv_load8n(x + kb + 8, rem - 8);
        if (rem > 16) a2 = a2 + mv_load8n(wr + kb + 16, rem - 16) * mv_load8n(x + kb + 16, rem - 16);
        if (rem > 24) a3 = a3 + mv_load8n(wr + kb + 24, rem - 24) * mv_load8n(x + kb + 24, rem - 24);
        y[r] = mv_finish(mv_hsum8((a0 + a1) + (a2 + a3)), alpha, beta, y[r]);
    }
}

static void mv_cols_scalar(const float *b, int64_t ld, const float *x, int64_t k, float alpha, float beta, float *y,
                           int64_t j0, int64_t j1) {
    float acc[MV_TILE];
    for (int64_t t0 = j0; t0 < j1; t0 += MV_TILE) {
        const int64_t tw = j1 - t0 < MV_TILE ? j1 - t0 : MV_TILE;
        memset(acc, 0, (size_t)tw * sizeof(float));
        for (int64_t l = 0; l < k; l++) {
            const float xl = x[l], *bl = b + l * ld + t0;
            for (int64_t j = 0; j < tw; j++) acc[j] = acc[j] + bl[j] * xl;
        }
        for (int64_t j = 0; j < tw; j++) y[t0 + j] = mv_finish(acc[j], alpha, beta, y[t0 + j]);
    }
}

#if MV_X86
// ---- AVX2 + FMA: eight lanes -----------------------------------------------------------------------------------

#pragma clang attribute push(__attribute__((target("avx2,fma"))), apply_to = function)

/// Lanes 0..<n set (0 <= n <= 8).
static inline __m256i mv_mask_avx2(int64_t n) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32((int)n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}
static inline float mv_hsum_avx2(__m256 v) {
    float t[8];
    _mm256_storeu_ps(t, v);
    return ((t[0] + t[4]) + (t[2] + t[6])) + ((t[1] + t[5]) + (t[3] + t[7]));
}

/// The first min(n, 8) floats at p, zeros after.
static inline __m256 mv_load_avx2(const float *p, int64_t n) {
    return _mm256_maskload_ps(p, mv_mask_avx2(n < 8 ? n : 8));
}

static void mv_rows_avx2(const float *w, int64_t ld, const float *x, int64_t k, float alpha, float beta, float *y,
                         int64_t r0, int64_t r1) {
    const int64_t kb = k & ~(int64_t)31, rem = k - kb;
    for (int64_t r = r0; r < r1; r++) {
        const float *wr = w + r * ld;
        __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        for (int64_t l = 0; l < kb; l += 32) {
            a0 = _mm256_fmadd_ps(_mm256_loadu_ps(wr + l), _mm256_loadu_ps(x + l), a0);
            a1 = _mm256_fmadd_ps(_mm256_loadu_ps(wr + l + 8), _mm256_loadu_ps(x + l + 8), a1);
            a2 = _mm256_fmadd_ps(_mm256_loadu_ps(wr + l + 16), _mm256_loadu_ps(x + l + 16), a2);
            a3 = _mm256_fmadd_ps(_mm256_loadu_ps(wr + l + 24), _mm256_loadu_ps(x + l + 24), a3);
        }
        if (rem > 0) a0 = _mm256_fmadd_ps(mv_load_avx2(wr + kb, rem), mv_load_avx2(x + kb, rem), a0);
        if (rem > 8) a1 = _mm256_fmadd_ps(mv_load_avx2(wr + kb + 8, rem - 8), mv_load_avx2(x + kb + 8, rem - 8), a1);
        if (rem > 16) a2 = _mm256_fmadd_ps(mv_load_avx2(wr + kb + 16, rem - 16), mv_load_avx2(x + kb + 16, rem - 16), a2);
        if (rem > 24) a3 = _mm256_fmadd_ps(mv_load_avx2(wr + kb + 24, rem - 24), mv_load_avx2(x + kb + 24, rem - 24), a3);
        y[r] = mv_finish(mv_hsum_avx2(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3))), alpha, beta, y[r]);
    }
}

static void mv_cols_avx2(const float *b, int64_t ld, const float *x, int64_t k, float alpha, float beta, float *y,
                         int64_t j0, int64_t j1) {
    float acc[MV_TILE] __attribute__((aligned(32)));
    for (int64_t t0 = j0; t0 < j1; t0 += MV_TILE) {
        const int64_t tw = j1 - t0 < MV_TILE ? j1 - t0 : MV_TILE;
        const int64_t tb = tw & ~(int64_t)7, tt = tw - tb;
        const __m256i m = mv_mask_avx2(tt);
        memset(acc, 0, (size_t)(tb + (tt ? 8 : 0)) * sizeof(float));
        for (int64_t l = 0; l < k; l++) {
            const __m256 xl = _mm256_set1_ps(x[l]);
            const float *bl = b + l * ld + t0;
            for (int64_t j = 0; j < tb; j += 8)
                _mm256_store_ps(acc + j, _mm256_fmadd_ps(_mm256_loadu_ps(bl + j), xl, _mm256_load_ps(acc + j)));
            if (tt) _mm256_store_ps(acc + tb, _mm256_fmadd_ps(_mm256_maskload_ps(bl + tb, m), xl, _mm256_load_ps(acc + tb)));
        }
        for (int64_t j = 0; j < tw; j++) y[t0 + j] = mv_finish(acc[j], alpha, beta, y[t0 + j]);
    }
}

#pragma clang attribute pop

// ---- AVX-512F: sixteen lanes -----------------------------------------------------------------------------------

#pragma clang attribute push(__attribute__((target("avx512f"))), apply_to = function)

/// The lanes of v added in a fixed tree: the two halves, then the eight-lane tree of the other paths.
static inline float mv_hsum_avx512(__m512 v) {
    float t[16];
    _mm512_storeu_ps(t, v);
    float h[8];
    for (int j = 0; j < 8; j++) h[j] = t[j] + t[j + 8];
    return ((h[0] + h[4]) + (h[2] + h[6])) + ((h[1] + h[5]) + (h[3] + h[7]));
}

/// The first min(n, 16) floats at p, zeros after.
static inline __m512 mv_load_avx512(const float *p, int64_t n) {
    return _mm512_maskz_loadu_ps(n >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << n) - 1), p);
}

static void mv_rows_avx512(const float *w, int64_t ld, const float *x, int64_t k, float alpha, float beta, float *y,
                           int64_t r0, int64_t r1) {
    const int64_t kb = k & ~(int64_t)63, rem = k - kb;
    for (int64_t r = r0; r < r1; r++) {
        const float *wr = w + r * ld;
        __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        for (int64_t l = 0; l < kb; l += 64) {
            a0 = _mm512_fmadd_ps(_mm512_loadu_ps(wr + l), _mm512_loadu_ps(x + l), a0);
            a1 = _mm512_fmadd_ps(_mm512_loadu_ps(wr + l + 16), _mm512_loadu_ps(x + l + 16), a1);
            a2 = _mm512_fmadd_ps(_mm512_loadu_ps(wr + l + 32), _mm512_loadu_ps(x + l + 32), a2);
            a3 = _mm512_fmadd_ps(_mm512_loadu_ps(wr + l + 48), _mm512_loadu_ps(x + l + 48), a3);
        }
        if (rem > 0) a0 = _mm512_fmadd_ps(mv_load_avx512(wr + kb, rem), mv_load_avx512(x + kb, rem), a0);
        if (rem > 16) a1 = _mm512_fmadd_ps(mv_load_avx512(wr + kb + 16, rem - 16), mv_load_avx512(x + kb + 16, rem - 16), a1);
        if (rem > 32) a2 = _mm512_fmadd_ps(mv_load_avx512(wr + kb + 32, rem - 32), mv_load_avx512(x + kb + 32, rem - 32), a2);
        if (rem > 48) a3 = _mm512_fmadd_ps(mv_load_avx512(wr + kb + 48, rem - 48), mv_load_avx512(x + kb + 48, rem - 48), a3);
        y[r] = mv_finish(mv_hsum_avx512(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3))), alpha, beta, y[r]);
    }
}

static void mv_cols_avx512(const float *b, int64_t ld, const float *x, int64_t k, float alpha, float beta, float *y,
                           int64_t j0, int64_t j1) {
    float acc[MV_TILE] __attribute__((aligned(64)));
    for (int64_t t0 = j0; t0 < j1; t0 += MV_TILE) {
        const int64_t tw = j1 - t0 < MV_TILE ? j1 - t0 : MV_TILE;
        const int64_t tb = tw & ~(int64_t)15, tt = tw - tb;
        const __mmask16 m = (__mmask16)((1u << tt) - 1);
        memset(acc, 0, (size_t)(tb + (tt ? 16 : 0)) * sizeof(float));
        for (int64_t l = 0; l < k; l++) {
            const __m512 xl = _mm512_set1_ps(x[l]);
            const float *bl = b + l * ld + t0;
            for (int64_t j = 0; j < tb; j += 16)
                _mm512_store_ps(acc + j, _mm512_fmadd_ps(_mm512_loadu_ps(bl + j), xl, _mm512_load_ps(acc + j)));
            if (tt) _mm512_store_ps(acc + tb, _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, bl + tb), xl, _mm512_load_ps(acc + tb)));
        }
        for (int64_t j = 0; j < tw; j++) y[t0 + j] = mv_finish(acc[j], alpha, beta, y[t0 + j]);
    }
}

#pragma clang attribute pop
#endif  // MV_X86

// ---- dispatch --------------------------------------------------------------------------------------------------

static inline int mv_clamp(int isa) {
    const int best = pk_ew_detect();
    return isa > best || isa < 0 ? best : isa;
}

void pk_f32mv_rows(int isa, const float *w, int64_t ld, const float *x, int64_t k, float alpha, float beta,
                    float *y, int64_t r0, int64_t r1) {
    if (r1 <= r0) return;
#if MV_X86
    switch (mv_clamp(isa)) {
    case PK_EW_AVX512: mv_rows_avx512(w, ld, x, k, alpha, beta, y, r0, r1); return;
    case PK_EW_AVX2: mv_rows_avx2(w, ld, x, k, alpha, beta, y, r0, r1); return;
    default: break;
    }
#else
    (void)isa;
#endif
    mv_rows_scalar(w, ld, x, k, alpha, beta, y, r0, r1);
}

void pk_f32mv_cols(int isa, const float *b, int64_t ld, const float *x, int64_t k, float alpha, float beta,
                    float *y, int64_t j0, int64_t j1) {
    if (j1 <= j0) return;
#if MV_X86
    switch (mv_clamp(isa)) {
    case PK_EW_AVX512: mv_cols_avx512(b, ld, x, k, alpha, beta, y, j0, j1); return;
    case PK_EW_AVX2: mv_cols_avx2(b, ld, x, k, alpha, beta, y, j0, j1); return;
    default: break;
    }
#else
    (void)isa;
#endif
    mv_cols_scalar(b, ld, x, k, alpha, beta, y, j0, j1);
}
