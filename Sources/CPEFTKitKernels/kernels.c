// Dispatch and shared helpers of the quantized-weight kernels. The per-format code lives in two bodies that
// are compiled once per instruction-set path (scalar, AVX2+FMA, AVX-512) by including them under a
// `#pragma clang attribute` target: quant_body.h (dequantisation, block scales, scalar dot products) and
// quant_simd.h (the vector dot products). No -march flag: every path is built on every x86-64 machine and
// chosen at run time with __builtin_cpu_supports.
//
// Block formats (little-endian, `half` = IEEE binary16 scale; a "group" is 32 consecutive elements):
//   Q8_0  34 B / 32:  half d, int8 q[32]                      x = q·d
//   Q4_0  18 B / 32:  half d, u8 qs[16]                       x = (q − 8)·d      q_j = qs[j] & 15, q_{j+16} = qs[j] >> 4
//   Q4_1  20 B / 32:  half d, half m, u8 qs[16]               x = q·d + m
//   Q5_0  22 B / 32:  half d, u32 qh, u8 qs[16]               x = (q − 16)·d     q_j |= bit j of qh << 4
//   Q5_1  24 B / 32:  half d, half m, u32 qh, u8 qs[16]       x = q·d + m
//   Q4_K 144 B / 256: half d, half dmin, u8 scales[12], u8 qs[128]; 8 groups, 6-bit scale s_j and min m_j packed
//                     in `scales`; group j reads the low (j even) or high (j odd) nibbles of qs[32·(j/2) ...+32]:
//                     x = (d·s_j)·q − (dmin·m_j)
//   Q5_K 176 B / 256: as Q4_K plus u8 qh[32] before qs: element l of group j gets bit j of qh[l] as bit 4
//   Q6_K 210 B / 256: u8 ql[128], u8 qh[64], int8 scales[16], half d; two halves of 128, each 4 groups k of
//                     32: low 4 bits from ql[64h + 32(k&1) + l] (low nibble for k < 2, high for k >= 2),
//                     high 2 bits from qh[32h + l] >> 2k; x = (d·scales[e/16])·(q − 32)
// The product order written here is the one of ggml and of gguf-py's numpy code; with contraction off
// (below) every path dequantises bit-identically to `gguf.quants.dequantize`.
#pragma clang fp contract(off)

#include "peftkit_kernels.h"
#include "quant_common.h"

#include <float.h>
#include <math.h>
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#define PK_X86 1
#include <immintrin.h>
#else
#define PK_X86 0
#endif

int pk_type_supported(int type) {
    switch (type) {
    case T_F32: case T_F16: case T_BF16: case T_Q4_0: case T_Q4_1: case T_Q5_0: case T_Q5_1: case T_Q8_0:
    case T_Q4_K: case T_Q5_K: case T_Q6_K:
        return 1;
    default:
        return 0;
    }
}

// ---- per-path bodies ------------------------------------------------------------------------------------

#define PK_SFX(name) name##_scalar
#define PK_HALF(p) pk_half_bits(pk_rd16(p))
#include "quant_body.h"
#undef PK_SFX
#undef PK_HALF

#if PK_X86
#pragma clang attribute push(__attribute__((target("avx2,fma,f16c"))), apply_to = function)
#define PK_SFX(name) name##_avx2
#define PK_HALF(p) _cvtsh_ss(pk_rd16(p))
#define PK_SIMD_AVX2 1
#include "quant_body.h"
#include "quant_simd.h"
#undef PK_SIMD_AVX2
#undef PK_SFX
#undef PK_HALF
#pragma clang attribute pop

#pragma clang attribute push(__attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni"))), apply_to = function)
#define PK_SFX(name) name##_avx512
#define PK_HALF(p) _cvtsh_ss(pk_rd16(p))
#define PK_SIMD_AVX512 1
#include "quant_body.h"
#include "quant_simd.h"
#undef PK_SIMD_AVX512
#undef PK_SFX
#undef PK_HALF
#pragma clang attribute pop
#endif

// ---- dispatch -------------------------------------------------------------------------------------------

static int pk_isa_cached = -1;

int pk_isa_detect(void) {
    int isa = __atomic_load_n(&pk_isa_cached, __ATOMIC_RELAXED);
    if (isa >= 0) return isa;
    isa = PK_ISA_SCALAR;
#if PK_X86
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c")) {
        isa = PK_ISA_AVX2;
        if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw")
            && __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq")
            && __builtin_cpu_supports("avx512vnni"))
            isa = PK_ISA_AVX512;
    }
#endif
    __atomic_store_n(&pk_isa_cached, isa, __ATOMIC_RELAXED);  // a racing thread stores the same value
    return isa;
}

/// A requested path the CPU cannot run falls back to the best one it can.
static inline int pk_isa_clamp(int isa) {
    int best = pk_isa_detect();
    return isa > best || isa < 0 ? best : isa;
}

void pk_dequantize_rows(int isa, int type, const void *src, size_t row_bytes, int64_t nrows, int64_t n,
                        float *dst, int64_t ldd) {
    const uint8_t *s = (const uint8_t *)src;
    switch (pk_isa_clamp(isa)) {
#if PK_X86
    case PK_ISA_AVX512:
        for (int64_t r = 0; r < nrows; r++) pk_deq_row_avx512(type, s + r * row_bytes, n, dst + r * ldd);
        return;
    case PK_ISA_AVX2:
        for (int64_t r = 0; r < nrows; r++) pk_deq_row_avx2(type, s + r * row_bytes, n, dst + r * ldd);
        return;
#endif
    default:
        for (int64_t r = 0; r < nrows; r++) pk_deq_row_scalar(type, s + r * row_bytes, n, dst + r * ldd);
        return;
    }
}

static void pk_quantize_act_scalar(const float *x, int64_t n, int8_t *xq, float *xd, int16_t *xs) {
    for (int64_t g = 0; g < n / 32; g++) {
        const float *v = x + 32 * g;
        float amax = 0;
        int finite = 1;
        for (int i = 0; i < 32; i++) {
            float a = fabsf(v[i]);
            if (!(a <= FLT_MAX)) finite = 0;
            else if (a > amax) amax = a;
        }
        int8_t *q = xq + 32 * g;
        if (!finite) {
            xd[g] = NAN;
            memset(q, 0, 32);
            xs[2 * g] = xs[2 * g + 1] = 0;
            continue;
        }
        float d = amax / 127.0f;
        float id = d > 0 ? 1.0f / d : 0.0f;
        int s0 = 0, s1 = 0;
        for (int i = 0; i < 32; i++) {
            // Round half away from zero (no libm call); |v·id| <= 127 up to one rounding, clamped anyway.
            float t = v[i] * id;
            int r = (int)(t + (t >= 0 ? 0.5f : -0.5f));
            q[i] = (int8_t)(r > 127 ? 127 : (r < -127 ? -127 : r));
            if (i < 16) s0 += q[i]; else s1 += q[i];
        }
        xd[g] = d;
        xs[2 * g] = (int16_t)s0;
        xs[2 * g + 1] = (int16_t)s1;
    }
}

void pk_matvec_rows(int isa, int type, const void *w, size_t row_bytes, int64_t r0, int64_t r1, int64_t n,
                    const int8_t *xq, const float *xd, const int16_t *xs, float *y) {
    const uint8_t *base = (const uint8_t *)w;
    switch (pk_isa_clamp(isa)) {
#if PK_X86
    case PK_ISA_AVX512:
        pk_rows_avx512(type, base, row_bytes, r0, r1, n, xq, xd, xs, y);
        return;
    case PK_ISA_AVX2:
        pk_rows_avx2(type, base, row_bytes, r0, r1, n, xq, xd, xs, y);
        return;
#endif
    default:
        for (int64_t r = r0; r < r1; r++) y[r] = pk_row_dot_ref_scalar(type, base + r * row_bytes, n, xq, xd, xs);
        return;
    }
}

#if PK_X86
/// pk_quantize_act_scalar with eight lanes: the same operations per element (max, one division, one product,
/// a ±0.5 add, truncation, clamp), so the same bytes, scales and sums.
__attribute__((target("avx2,fma")))
static void pk_quantize_act_avx2(const float *x, int64_t n, int8_t *xq, float *xd, int16_t *xs) {
    const __m256 sign = _mm256_set1_ps(-0.0f), big = _mm256_set1_ps(FLT_MAX), zero = _mm256_setzero_ps();
    const __m256 ph = _mm256_set1_ps(0.5f), mh = _mm256_set1_ps(-0.5f);
    const __m256i lo = _mm256_set1_epi32(-127), hi = _mm256_set1_epi32(127);
    const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    for (int64_t g = 0; g < n / 32; g++) {
        const float *v = x + 32 * g;
        __m256 xv[4], amax = zero;
        int finite = 1;
        for (int k = 0; k < 4; k++) {
            xv[k] = _mm256_loadu_ps(v + 8 * k);
            const __m256 a = _mm256_andnot_ps(sign, xv[k]);
            if (_mm256_movemask_ps(_mm256_cmp_ps(a, big, _CMP_LE_OQ)) != 0xff) finite = 0;
            amax = _mm256_max_ps(amax, a);
        }
        int8_t *q = xq + 32 * g;
        if (!finite) {
            xd[g] = NAN;
            memset(q, 0, 32);
            xs[2 * g] = xs[2 * g + 1] = 0;
            continue;
        }
        __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(amax), _mm256_extractf128_ps(amax, 1));
        m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
        m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
        const float d = _mm_cvtss_f32(m4) / 127.0f;
        const __m256 id = _mm256_set1_ps(d > 0 ? 1.0f / d : 0.0f);
        __m256i r[4];
        for (int k = 0; k < 4; k++) {
            const __m256 t = _mm256_mul_ps(xv[k], id);
            const __m256 h = _mm256_blendv_ps(mh, ph, _mm256_cmp_ps(t, zero, _CMP_GE_OQ));
            r[k] = _mm256_min_epi32(_mm256_max_epi32(_mm256_cvttps_epi32(_mm256_add_ps(t, h)), lo), hi);
        }
        const __m256i p = _mm256_packs_epi16(_mm256_packs_epi32(r[0], r[1]), _mm256_packs_epi32(r[2], r[3]));
        _mm256_storeu_si256((__m256i *)q, _mm256_permutevar8x32_epi32(p, order));
        __m256i s0 = _mm256_add_epi32(r[0], r[1]), s1 = _mm256_add_epi32(r[2], r[3]);
        __m256i s01 = _mm256_hadd_epi32(s0, s1);        // [s0 s0 s1 s1 | s0 s0 s1 s1] partial sums
        s01 = _mm256_hadd_epi32(s01, s01);              // [s0 s1 s0 s1 | s0 s1 s0 s1]
        const __m128i t = _mm_add_epi32(_mm256_castsi256_si128(s01), _mm256_extracti128_si256(s01, 1));
        xd[g] = d;
        xs[2 * g] = (int16_t)_mm_cvtsi128_si32(t);
        xs[2 * g + 1] = (int16_t)_mm_extract_epi32(t, 1);
    }
}
#endif

void pk_quantize_act_isa(int isa, const float *x, int64_t n, int8_t *xq, float *xd, int16_t *xs) {
#if PK_X86
    if (pk_isa_clamp(isa) >= PK_ISA_AVX2) {
        pk_quantize_act_avx2(x, n, xq, xd, xs);
        return;
    }
#endif
    pk_quantize_act_scalar(x, n, xq, xd, xs);
}

void pk_quantize_act(const float *x, int64_t n, int8_t *xq, float *xd, int16_t *xs) {
    pk_quantize_act_isa(pk_isa_detect(), x, n, xq, xd, xs);
}
