// The hot element-wise and row-wise kernels of a training step, compiled once per instruction-set path: the body
// (elementwise_body.h) is written against a small vector vocabulary, defined below for portable C vectors (8 lanes,
// the baseline target: "scalar" = no extension), AVX2+FMA (8 lanes) and AVX-512F (16 lanes) and applied under a `#pragma clang attribute` target, so no -march
// flag is needed and every path is built on every x86-64 machine; pk_ew_detect picks one with
// __builtin_cpu_supports. Elsewhere only the portable path exists.
//
// Numerics per path: the same formulas in the same order; the vector paths fuse the multiply-adds the body names
// (VFMA / VFNMA); every path sums reductions in W lanes (float for softmax, double elsewhere) added in lane order
// at the end; the portable path rounds each product and has the lanes of the AVX2 path. Contraction is off, so the compiler adds no other
// fusion, and each path's result is fixed for given inputs.
#pragma clang fp contract(off)

#include "peftkit_elementwise.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#define EW_X86 1
#include <immintrin.h>
#else
#define EW_X86 0
#endif

// ---- portable: eight lanes of plain C vectors -----------------------------------------------------------------
// Clang's generic vectors, compiled for the baseline target (SSE2 pairs on x86-64, NEON on arm64): the lanes and
// reduction order of the AVX2 path without its fused multiply-adds. The fallback on x86-64 CPUs without AVX2 and
// the only path elsewhere ("scalar" in PEFTKIT_CPU: no instruction-set extension).

// 32-byte vectors pass differently with and without AVX; every function taking one is static and inlined, so
// no ABI is involved and the warning about it says nothing here.
#pragma clang diagnostic ignored "-Wpsabi"

typedef float ew_v8f __attribute__((vector_size(32)));
typedef int32_t ew_v8i __attribute__((vector_size(32)));
typedef double ew_v8d __attribute__((vector_size(64)));

#define EW_SFX(name) name##_scalar
#define EW_W 8
#define VF ew_v8f
#define VLOAD(p) ew_load_p(p)
#define VSTORE(p, v) ew_store_p((p), (v))
#define VLOADN(p, n) ew_loadn_p((p), (n))
#define VSTOREN(p, v, n) ew_storen_p((p), (v), (n))
#define VKEEPN(v, n) ew_keepn_p((v), (n))
#define VSET(x) ew_set_p((float)(x))
#define VADD(a, b) ((a) + (b))
#define VSUB(a, b) ((a) - (b))
#define VMUL(a, b) ((a) * (b))
#define VDIV(a, b) ((a) / (b))
#define VFMA(a, b, c) ((a) * (b) + (c))
#define VFNMA(a, b, c) ((c) - (a) * (b))
#define VMIN_X(c, x) ew_select_p((c) < (x), (c), (x))
#define VMAX_X(c, x) ew_select_p((c) > (x), (c), (x))
#define VMAX_NN(v, m) ew_select_p((v) > (m), (v), (m))
#define VSEL_LT(a, b, t, f) ew_select_p((a) < (b), (t), (f))
#define VSEL_GE(a, b, t, f) ew_select_p((a) >= (b), (t), (f))
#define VHSUM(v) ew_hsum_p(v)
#define VHMAX(v) ew_hmax_p(v)
#define VROUND_EXP(p, t, magic) ew_scale_p((p), (t), (magic))
#define DACC ew_v8d

static inline ew_v8f ew_load_p(const float *p) {
    ew_v8f v;
    memcpy(&v, p, sizeof v);
    return v;
}
static inline void ew_store_p(float *p, ew_v8f v) { memcpy(p, &v, sizeof v); }
static inline ew_v8f ew_loadn_p(const float *p, int64_t n) {
    ew_v8f v = {0, 0, 0, 0, 0, 0, 0, 0};
    memcpy(&v, p, (size_t)(n < 8 ? n : 8) * sizeof(float));
    return v;
}
static inline void ew_storen_p(float *p, ew_v8f v, int64_t n) { memcpy(p, &v, (size_t)(n < 8 ? n : 8) * sizeof(float)); }
static inline ew_v8f ew_keepn_p(ew_v8f v, int64_t n) {
    for (int j = 0; j < 8; j++)
        if (j >= n) v[j] = 0.0f;
    return v;
}
static inline ew_v8f ew_set_p(float x) { return (ew_v8f){x, x, x, x, x, x, x, x}; }
/// Lane j = mask[j] ? a[j] : b[j] (mask lanes are all ones or zero, as comparisons give).
static inline ew_v8f ew_select_p(ew_v8i mask, ew_v8f a, ew_v8f b) {
    return (ew_v8f)((mask & (ew_v8i)a) | (~mask & (ew_v8i)b));
}
static inline float ew_hsum_p(ew_v8f t) {
    return ((t[0] + t[1]) + (t[2] + t[3])) + ((t[4] + t[5]) + (t[6] + t[7]));
}
static inline float ew_hmax_p(ew_v8f t) {
    float m = -INFINITY;
    for (int j = 0; j < 8; j++)
        if (t[j] > m) m = t[j];
    return m;
}
static inline ew_v8f ew_scale_p(ew_v8f p, ew_v8f t, ew_v8f magic) {
    const ew_v8i n = (ew_v8i)t - (ew_v8i)magic;
    const ew_v8i n1 = n >> 1, n2 = n - n1;
    const ew_v8f s1 = (ew_v8f)((n1 + 127) << 23), s2 = (ew_v8f)((n2 + 127) << 23);
    return (p * s1) * s2;
}
static inline ew_v8d dacc_zero_scalar(void) { return (ew_v8d){0, 0, 0, 0, 0, 0, 0, 0}; }
static inline void dacc_add_scalar(ew_v8d *a, ew_v8f v) { *a += __builtin_convertvector(v, ew_v8d); }
static inline void dacc_add_prod_scalar(ew_v8d *a, ew_v8f x, ew_v8f y) {
    *a += __builtin_convertvector(x, ew_v8d) * __builtin_convertvector(y, ew_v8d);
}
static inline void dacc_add_sqdiff_scalar(ew_v8d *a, ew_v8f v, double m) {
    const ew_v8d d = __builtin_convertvector(v, ew_v8d) - m;
    *a += d * d;
}
static inline double dacc_sum_scalar(ew_v8d a) {
    double s = 0;
    for (int j = 0; j < 8; j++) s += a[j];
    return s;
}

#include "elementwise_body.h"

#undef EW_SFX
#undef EW_W
#undef VF
#undef VLOAD
#undef VSTORE
#undef VLOADN
#undef VSTOREN
#undef VKEEPN
#undef VSET
#undef VADD
#undef VSUB
#undef VMUL
#undef VDIV
#undef VFMA
#undef VFNMA
#undef VMIN_X
#undef VMAX_X
#undef VMAX_NN
#undef VSEL_LT
#undef VSEL_GE
#undef VHSUM
#undef VHMAX
#undef VROUND_EXP
#undef DACC

#if EW_X86
// ---- AVX2 + FMA: eight lanes -----------------------------------------------------------------------------------

#pragma clang attribute push(__attribute__((target("avx2,fma"))), apply_to = function)

#define EW_SFX(name) name##_avx2
#define EW_W 8
#define VF __m256
#define VLOAD(p) _mm256_loadu_ps(p)
#define VSTORE(p, v) _mm256_storeu_ps((p), (v))
#define VLOADN(p, n) _mm256_maskload_ps((p), ew_mask_avx2(n))
#define VSTOREN(p, v, n) _mm256_maskstore_ps((p), ew_mask_avx2(n), (v))
#define VKEEPN(v, n) _mm256_and_ps((v), _mm256_castsi256_ps(ew_mask_avx2(n)))
#define VSET(x) _mm256_set1_ps((float)(x))
#define VADD(a, b) _mm256_add_ps((a), (b))
#define VSUB(a, b) _mm256_sub_ps((a), (b))
#define VMUL(a, b) _mm256_mul_ps((a), (b))
#define VDIV(a, b) _mm256_div_ps((a), (b))
#define VFMA(a, b, c) _mm256_fmadd_ps((a), (b), (c))
#define VFNMA(a, b, c) _mm256_fnmadd_ps((a), (b), (c))
#define VMIN_X(c, x) _mm256_min_ps((c), (x))
#define VMAX_X(c, x) _mm256_max_ps((c), (x))
#define VMAX_NN(v, m) _mm256_max_ps((v), (m))
#define VSEL_LT(a, b, t, f) _mm256_blendv_ps((f), (t), _mm256_cmp_ps((a), (b), _CMP_LT_OQ))
#define VSEL_GE(a, b, t, f) _mm256_blendv_ps((f), (t), _mm256_cmp_ps((a), (b), _CMP_GE_OQ))
#define VHSUM(v) ew_hsum_avx2(v)
#define VHMAX(v) ew_hmax_avx2(v)
#define VROUND_EXP(p, t, magic) ew_scale_avx2((p), (t), (magic))
#define DACC ew_dacc_avx2

/// Lanes 0..<n set (n < 8 here; n >= 8 sets all).
static inline __m256i ew_mask_avx2(int64_t n) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32((int)(n < 8 ? n : 8)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}
static inline float ew_hsum_avx2(__m256 v) {
    float t[8];
    _mm256_storeu_ps(t, v);
    return ((t[0] + t[1]) + (t[2] + t[3])) + ((t[4] + t[5]) + (t[6] + t[7]));
}
static inline float ew_hmax_avx2(__m256 v) {
    float t[8], m = -INFINITY;
    _mm256_storeu_ps(t, v);
    for (int j = 0; j < 8; j++)
        if (t[j] > m) m = t[j];
    return m;
}
static inline __m256 ew_scale_avx2(__m256 p, __m256 t, __m256 magic) {
    const __m256i n = _mm256_sub_epi32(_mm256_castps_si256(t), _mm256_castps_si256(magic));
    const __m256i n1 = _mm256_srai_epi32(n, 1), n2 = _mm256_sub_epi32(n, n1), bias = _mm256_set1_epi32(127);
    const __m256 s1 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n1, bias), 23));
    const __m256 s2 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n2, bias), 23));
    return _mm256_mul_ps(_mm256_mul_ps(p, s1), s2);
}
typedef struct { __m256d lo, hi; } ew_dacc_avx2;
static inline ew_dacc_avx2 dacc_zero_avx2(void) { return (ew_dacc_avx2){_mm256_setzero_pd(), _mm256_setzero_pd()}; }
static inline void dacc_add_avx2(ew_dacc_avx2 *a, __m256 v) {
    a->lo = _mm256_add_pd(a->lo, _mm256_cvtps_pd(_mm256_castps256_ps128(v)));
    a->hi = _mm256_add_pd(a->hi, _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1)));
}
static inline void dacc_add_prod_avx2(ew_dacc_avx2 *a, __m256 x, __m256 y) {
    a->lo = _mm256_fmadd_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(x)), _mm256_cvtps_pd(_mm256_castps256_ps128(y)), a->lo);
    a->hi = _mm256_fmadd_pd(_mm256_cvtps_pd(_mm256_extractf128_ps(x, 1)), _mm256_cvtps_pd(_mm256_extractf128_ps(y, 1)), a->hi);
}
static inline void dacc_add_sqdiff_avx2(ew_dacc_avx2 *a, __m256 v, double m) {
    const __m256d vm = _mm256_set1_pd(m);
    const __m256d dl = _mm256_sub_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(v)), vm);
    const __m256d dh = _mm256_sub_pd(_mm256_cvtps_pd(_mm256_extractf128_ps(v, 1)), vm);
    a->lo = _mm256_fmadd_pd(dl, dl, a->lo);
    a->hi = _mm256_fmadd_pd(dh, dh, a->hi);
}
static inline double dacc_sum_avx2(ew_dacc_avx2 a) {
    double t[8];
    _mm256_storeu_pd(t, a.lo);
    _mm256_storeu_pd(t + 4, a.hi);
    double s = 0;
    for (int j = 0; j < 8; j++) s += t[j];
    return s;
}

#include "elementwise_body.h"

#pragma clang attribute pop

#undef EW_SFX
#undef EW_W
#undef VF
#undef VLOAD
#undef VSTORE
#undef VLOADN
#undef VSTOREN
#undef VKEEPN
#undef VSET
#undef VADD
#undef VSUB
#undef VMUL
#undef VDIV
#undef VFMA
#undef VFNMA
#undef VMIN_X
#undef VMAX_X
#undef VMAX_NN
#undef VSEL_LT
#undef VSEL_GE
#undef VHSUM
#undef VHMAX
#undef VROUND_EXP
#undef DACC

// ---- AVX-512F: sixteen lanes -----------------------------------------------------------------------------------

#pragma clang attribute push(__attribute__((target("avx2,fma,avx512f"))), apply_to = function)

#define EW_SFX(name) name##_avx512
#define EW_W 16
#define VF __m512
#define VLOAD(p) _mm512_loadu_ps(p)
#define VSTORE(p, v) _mm512_storeu_ps((p), (v))
#define VLOADN(p, n) _mm512_maskz_loadu_ps(ew_mask_avx512(n), (p))
#define VSTOREN(p, v, n) _mm512_mask_storeu_ps((p), ew_mask_avx512(n), (v))
#define VKEEPN(v, n) _mm512_maskz_mov_ps(ew_mask_avx512(n), (v))
#define VSET(x) _mm512_set1_ps((float)(x))
#define VADD(a, b) _mm512_add_ps((a), (b))
#define VSUB(a, b) _mm512_sub_ps((a), (b))
#define VMUL(a, b) _mm512_mul_ps((a), (b))
#define VDIV(a, b) _mm512_div_ps((a), (b))
#define VFMA(a, b, c) _mm512_fmadd_ps((a), (b), (c))
#define VFNMA(a, b, c) _mm512_fnmadd_ps((a), (b), (c))
#define VMIN_X(c, x) _mm512_min_ps((c), (x))
#define VMAX_X(c, x) _mm512_max_ps((c), (x))
#define VMAX_NN(v, m) _mm512_max_ps((v), (m))
#define VSEL_LT(a, b, t, f) _mm512_mask_blend_ps(_mm512_cmp_ps_mask((a), (b), _CMP_LT_OQ), (f), (t))
#define VSEL_GE(a, b, t, f) _mm512_mask_blend_ps(_mm512_cmp_ps_mask((a), (b), _CMP_GE_OQ), (f), (t))
#define VHSUM(v) ew_hsum_avx512(v)
#define VHMAX(v) ew_hmax_avx512(v)
#define VROUND_EXP(p, t, magic) ew_scale_avx512((p), (t), (magic))
#define DACC ew_dacc_avx512

static inline __mmask16 ew_mask_avx512(int64_t n) {
    return n >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << n) - 1u);
}
static inline float ew_hsum_avx512(__m512 v) {
    float t[16];
    _mm512_storeu_ps(t, v);
    float s[4];
    for (int q = 0; q < 4; q++) s[q] = (t[4 * q] + t[4 * q + 1]) + (t[4 * q + 2] + t[4 * q + 3]);
    return (s[0] + s[1]) + (s[2] + s[3]);
}
static inline float ew_hmax_avx512(__m512 v) {
    float t[16], m = -INFINITY;
    _mm512_storeu_ps(t, v);
    for (int j = 0; j < 16; j++)
        if (t[j] > m) m = t[j];
    return m;
}
static inline __m512 ew_scale_avx512(__m512 p, __m512 t, __m512 magic) {
    const __m512i n = _mm512_sub_epi32(_mm512_castps_si512(t), _mm512_castps_si512(magic));
    const __m512i n1 = _mm512_srai_epi32(n, 1), n2 = _mm512_sub_epi32(n, n1), bias = _mm512_set1_epi32(127);
    const __m512 s1 = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_add_epi32(n1, bias), 23));
    const __m512 s2 = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_add_epi32(n2, bias), 23));
    return _mm512_mul_ps(_mm512_mul_ps(p, s1), s2);
}
typedef struct { __m512d lo, hi; } ew_dacc_avx512;
static inline __m256 ew_hi8_avx512(__m512 v) { return _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)); }
static inline ew_dacc_avx512 dacc_zero_avx512(void) { return (ew_dacc_avx512){_mm512_setzero_pd(), _mm512_setzero_pd()}; }
static inline void dacc_add_avx512(ew_dacc_avx512 *a, __m512 v) {
    a->lo = _mm512_add_pd(a->lo, _mm512_cvtps_pd(_mm512_castps512_ps256(v)));
    a->hi = _mm512_add_pd(a->hi, _mm512_cvtps_pd(ew_hi8_avx512(v)));
}
static inline void dacc_add_prod_avx512(ew_dacc_avx512 *a, __m512 x, __m512 y) {
    a->lo = _mm512_fmadd_pd(_mm512_cvtps_pd(_mm512_castps512_ps256(x)), _mm512_cvtps_pd(_mm512_castps512_ps256(y)), a->lo);
    a->hi = _mm512_fmadd_pd(_mm512_cvtps_pd(ew_hi8_avx512(x)), _mm512_cvtps_pd(ew_hi8_avx512(y)), a->hi);
}
static inline void dacc_add_sqdiff_avx512(ew_dacc_avx512 *a, __m512 v, double m) {
    const __m512d vm = _mm512_set1_pd(m);
    const __m512d dl = _mm512_sub_pd(_mm512_cvtps_pd(_mm512_castps512_ps256(v)), vm);
    const __m512d dh = _mm512_sub_pd(_mm512_cvtps_pd(ew_hi8_avx512(v)), vm);
    a->lo = _mm512_fmadd_pd(dl, dl, a->lo);
    a->hi = _mm512_fmadd_pd(dh, dh, a->hi);
}
static inline double dacc_sum_avx512(ew_dacc_avx512 a) {
    double t[16];
    _mm512_storeu_pd(t, a.lo);
    _mm512_storeu_pd(t + 8, a.hi);
    double s = 0;
    for (int j = 0; j < 16; j++) s += t[j];
    return s;
}

#include "elementwise_body.h"

#pragma clang attribute pop
#endif  // EW_X86

// ---- dispatch --------------------------------------------------------------------------------------------------

static int ew_isa_cached = -1;

int pk_ew_detect(void) {
    int isa = __atomic_load_n(&ew_isa_cached, __ATOMIC_RELAXED);
    if (isa >= 0) return isa;
    isa = PK_EW_SCALAR;
#if EW_X86
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
        isa = PK_EW_AVX2;
        if (__builtin_cpu_supports("avx512f")) isa = PK_EW_AVX512;
    }
#endif
    __atomic_store_n(&ew_isa_cached, isa, __ATOMIC_RELAXED);  // a racing thread stores the same value
    return isa;
}

/// A requested path the CPU cannot run (or an unknown value) falls back to the best one it can.
static inline int ew_clamp(int isa) {
    const int best = pk_ew_detect();
    return isa > best || isa < 0 ? best : isa;
}

#if EW_X86
#define EW_DISPATCH(call_scalar, call_avx2, call_avx512) \
    switch (ew_clamp(isa)) {                             \
    case PK_EW_AVX512: call_avx512; break;               \
    case PK_EW_AVX2: call_avx2; break;                   \
    default: call_scalar; break;                         \
    }
#else
#define EW_DISPATCH(call_scalar, call_avx2, call_avx512) \
    (void)isa;                                           \
    call_scalar;
#endif

#define EW_CALL(fn, ...) EW_DISPATCH(fn##_scalar(__VA_ARGS__), fn##_avx2(__VA_ARGS__), fn##_avx512(__VA_ARGS__))

void pk_ew_exp(int isa, const float *x, float *y, int64_t n) {
    if (n <= 0) return;
    EW_CALL(ew_exp_n, x, y, n)
}

void pk_ew_erf(int isa, const float *x, float *y, int64_t n) {
    if (n <= 0) return;
    EW_CALL(ew_erf_n, x, y, n)
}

void pk_ew_act_forward(int isa, int act, float *out, const float *inp, int64_t n) {
    if (n <= 0) return;
    EW_CALL(ew_act_forward, act, out, inp, n)
}

void pk_ew_act_backward(int isa, int act, float *dinp, const float *inp, const float *dout, int64_t n) {
    if (n <= 0) return;
    EW_CALL(ew_act_backward, act, dinp, inp, dout, n)
}

void pk_ew_swiglu_forward(int isa, float *out, const float *gate, const float *up, int64_t n) {
    if (n <= 0) return;
    EW_CALL(ew_swiglu_forward, out, gate, up, n)
}

void pk_ew_swiglu_backward(int isa, float *dgate, float *dup, const float *dout, const float *gate, const float *up,
                           int64_t n) {
    if (n <= 0) return;
    EW_CALL(ew_swiglu_backward, dgate, dup, dout, gate, up, n)
}

void pk_ew_softmax_row(int isa, float *row, int64_t valid, int64_t width, float mx) {
    if (valid < 0) valid = 0;
    EW_CALL(ew_softmax_row, row, valid, width, mx)
}

void pk_ew_masked_softmax_row(int isa, float *row, int64_t valid, int64_t width, const int32_t *mask, int64_t off) {
    if (valid < 0) valid = 0;
    EW_CALL(ew_masked_softmax_row, row, valid, width, mask, off)
}

double pk_ew_xent_row(int isa, float *row, int64_t V, int64_t target, int grad, float scale) {
    double loss = 0;
    EW_DISPATCH(loss = ew_xent_row_scalar(row, V, target, grad, scale),
                loss = ew_xent_row_avx2(row, V, target, grad, scale),
                loss = ew_xent_row_avx512(row, V, target, grad, scale))
    return loss;
}

void pk_ew_layernorm_forward(int isa, float *out, float *mean, float *rstd, const float *inp, const float *w,
                             const float *b, int64_t rows, int64_t C, float eps) {
    if (rows <= 0 || C <= 0) return;
    EW_CALL(ew_layernorm_forward, out, mean, rstd, inp, w, b, rows, C, eps)
}

void pk_ew_layernorm_backward(int isa, float *dinp, const float *dout, const float *inp, const float *w,
                              const float *mean, const float *rstd, int64_t rows, int64_t C) {
    if (rows <= 0 || C <= 0) return;
    EW_CALL(ew_layernorm_backward, dinp, dout, inp, w, mean, rstd, rows, C)
}

void pk_ew_rmsnorm_forward(int isa, float *out, float *rstd, const float *inp, const float *w, int64_t rows,
                           int64_t C, float eps) {
    if (rows <= 0 || C <= 0) return;
    EW_CALL(ew_rmsnorm_forward, out, rstd, inp, w, rows, C, eps)
}

void pk_ew_rmsnorm_backward(int isa, float *dinp, const float *dout, const float *inp, const float *w,
                            const float *rstd, int64_t rows, int64_t C) {
    if (rows <= 0 || C <= 0) return;
    EW_CALL(ew_rmsnorm_backward, dinp, dout, inp, w, rstd, rows, C)
}

void pk_ew_rope_row(int isa, float *x, const float *cos_row, const float *sin_row, int64_t heads, int64_t head_dim,
                    float sign) {
    if (heads <= 0 || head_dim < 2) return;
    EW_CALL(ew_rope_row, x, cos_row, sin_row, heads, head_dim, sign)
}
