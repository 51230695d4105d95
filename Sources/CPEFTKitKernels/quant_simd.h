// Included by kernels.c for the AVX2 (PK_SIMD_AVX2) and AVX-512 (PK_SIMD_AVX512) paths, after quant_body.h.
// A group of 32 weights becomes 32 unsigned bytes u (for Q8_0: |w| with the activation's signs flipped where
// w < 0), multiplied with the 32 int8 activations: AVX2 by vpmaddubsw + vpmaddwd (no saturation: |u| <= 128,
// |x| <= 127, so a pair sums to at most 32512), AVX-512 by vpdpbusd (256-bit for the 32-element formats, two
// blocks per step into two accumulators; 512-bit for K-quants, two groups of a block per register). Lane k of
// the int32 result holds elements 4k..4k+3, so lanes 0-3 and 4-7 are the two half-groups with their own scales
// (Q6_K has a scale per 16). Not a header to include anywhere else.

#define PK_ALWAYS static inline __attribute__((always_inline))

/// 16 bytes of packed nibbles to 32 quants: low nibbles first (elements 0-15), then high (16-31).
PK_ALWAYS __m256i PK_SFX(pk_nib16)(const uint8_t *q) {
    const __m128i v = _mm_loadu_si128((const __m128i *)q), m = _mm_set1_epi8(15);
    return _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(v, 4), m), _mm_and_si128(v, m));
}

/// Byte l = 0x10 where bit l of `bits` is set, else 0.
PK_ALWAYS __m256i PK_SFX(pk_bit16)(uint32_t bits) {
    const __m256i shuf = _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1,
                                          2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3);
    const __m256i sel = _mm256_set1_epi64x((long long)0x8040201008040201ULL);
    const __m256i t = _mm256_and_si256(_mm256_shuffle_epi8(_mm256_set1_epi32((int)bits), shuf), sel);
    return _mm256_and_si256(_mm256_cmpeq_epi8(t, sel), _mm256_set1_epi8(0x10));
}

/// The (u, x) byte vectors of group j of the block at p; `type` is a constant after inlining.
PK_ALWAYS void PK_SFX(pk_group_v)(const int type, const uint8_t *p, const int j, const int8_t *xq,
                                  __m256i *u, __m256i *x) {
    const __m256i m15 = _mm256_set1_epi8(15);
    __m256i xv = _mm256_loadu_si256((const __m256i *)xq);
    switch (type) {
    case T_Q8_0: {
        const __m256i w = _mm256_loadu_si256((const __m256i *)(p + 2));
        *u = _mm256_abs_epi8(w);
        *x = _mm256_sign_epi8(xv, w);
        return;
    }
    case T_Q4_0: *u = PK_SFX(pk_nib16)(p + 2); break;
    case T_Q4_1: *u = PK_SFX(pk_nib16)(p + 4); break;
    case T_Q5_0: *u = _mm256_or_si256(PK_SFX(pk_nib16)(p + 6), PK_SFX(pk_bit16)(pk_rd32(p + 2))); break;
    case T_Q5_1: *u = _mm256_or_si256(PK_SFX(pk_nib16)(p + 8), PK_SFX(pk_bit16)(pk_rd32(p + 4))); break;
    case T_Q4_K:
    case T_Q5_K: {
        const __m256i v = _mm256_loadu_si256((const __m256i *)(p + (type == T_Q5_K ? 48 : 16) + 32 * (j / 2)));
        __m256i q = (j & 1) ? _mm256_and_si256(_mm256_srli_epi16(v, 4), m15) : _mm256_and_si256(v, m15);
        if (type == T_Q5_K) {
            const __m256i bit = _mm256_set1_epi8((char)(1 << j));
            const __m256i hb = _mm256_and_si256(_mm256_loadu_si256((const __m256i *)(p + 16)), bit);
            q = _mm256_or_si256(q, _mm256_and_si256(_mm256_cmpeq_epi8(hb, bit), _mm256_set1_epi8(0x10)));
        }
        *u = q;
        break;
    }
    case T_Q6_K: {
        const int h = j / 4, k = j % 4;
        const __m256i lq = _mm256_loadu_si256((const __m256i *)(p + 64 * h + 32 * (k & 1)));
        const __m256i hq = _mm256_loadu_si256((const __m256i *)(p + 128 + 32 * h));
        const __m256i nib = k >= 2 ? _mm256_and_si256(_mm256_srli_epi16(lq, 4), m15) : _mm256_and_si256(lq, m15);
        const __m256i hb = _mm256_and_si256(_mm256_srl_epi16(hq, _mm_cvtsi32_si128(2 * k)), _mm256_set1_epi8(3));
        *u = _mm256_or_si256(nib, _mm256_slli_epi16(hb, 4));
        break;
    }
    default: *u = _mm256_setzero_si256(); break;
    }
    *x = xv;
}

PK_ALWAYS __m256i PK_SFX(pk_dot32)(__m256i u, __m256i x) {
#if defined(PK_SIMD_AVX512)
    return _mm256_dpbusd_epi32(_mm256_setzero_si256(), u, x);
#else
    return _mm256_madd_epi16(_mm256_maddubs_epi16(u, x), _mm256_set1_epi16(1));
#endif
}

PK_ALWAYS float PK_SFX(pk_hsum256)(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

PK_ALWAYS __m256 PK_SFX(pk_scale8)(float lo, float hi) {
    return _mm256_setr_m128(_mm_set1_ps(lo), _mm_set1_ps(hi));
}

/// One row's dot product with the quantized activation; `type` is a constant after inlining.
PK_ALWAYS float PK_SFX(pk_row_dot_t)(const int type, const uint8_t *row, int64_t n, const int8_t *xq,
                                     const float *xd, const int16_t *xs) {
    const int64_t bb = PK_SFX(pk_block_bytes)(type);
    const int per = (type == T_Q4_K || type == T_Q5_K || type == T_Q6_K) ? 8 : 1;
    const int64_t ng = n / 32;
    float sl[8], sh[8], cl[8], ch[8];
    float off = 0;
    __m256 acc = _mm256_setzero_ps();
    if (per == 1) {
        // Two blocks per step into two accumulators: the fmadd and offset chains are the latency bound.
        __m256 acc_b = _mm256_setzero_ps();
        float off_b = 0, sl2[1], sh2[1], cl2[1], ch2[1];
        int64_t g = 0;
        for (; g + 2 <= ng; g += 2) {
            const uint8_t *pa = row + bb * g, *pb = pa + bb;
            PK_SFX(pk_block_scales)(type, pa, sl, sh, cl, ch);
            PK_SFX(pk_block_scales)(type, pb, sl2, sh2, cl2, ch2);
            __m256i ua, xa, ub, xb;
            PK_SFX(pk_group_v)(type, pa, 0, xq + 32 * g, &ua, &xa);
            PK_SFX(pk_group_v)(type, pb, 0, xq + 32 * (g + 1), &ub, &xb);
            const float da = xd[g], db = xd[g + 1];
            acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(PK_SFX(pk_dot32)(ua, xa)), PK_SFX(pk_scale8)(sl[0] * da, sh[0] * da), acc);
            acc_b = _mm256_fmadd_ps(_mm256_cvtepi32_ps(PK_SFX(pk_dot32)(ub, xb)), PK_SFX(pk_scale8)(sl2[0] * db, sh2[0] * db), acc_b);
            off += da * (cl[0] * (float)xs[2 * g] + ch[0] * (float)xs[2 * g + 1]);
            off_b += db * (cl2[0] * (float)xs[2 * g + 2] + ch2[0] * (float)xs[2 * g + 3]);
        }
        if (g < ng) {
            const uint8_t *p = row + bb * g;
            PK_SFX(pk_block_scales)(type, p, sl, sh, cl, ch);
            __m256i u, x;
            PK_SFX(pk_group_v)(type, p, 0, xq + 32 * g, &u, &x);
            const float dx = xd[g];
            acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(PK_SFX(pk_dot32)(u, x)), PK_SFX(pk_scale8)(sl[0] * dx, sh[0] * dx), acc);
            off += dx * (cl[0] * (float)xs[2 * g] + ch[0] * (float)xs[2 * g + 1]);
        }
        return PK_SFX(pk_hsum256)(_mm256_add_ps(acc, acc_b)) + (off + off_b);
    }
#if defined(PK_SIMD_AVX512)
    // K-quants: two groups of one block per 512-bit step.
    __m512 acc2 = _mm512_setzero_ps();
    int64_t g = 0;
    if (per == 8) {
        for (; g < ng; g += 8) {
            const uint8_t *p = row + bb * (g / 8);
            PK_SFX(pk_block_scales)(type, p, sl, sh, cl, ch);
            for (int j = 0; j < 8; j += 2) {
                __m256i ua, xa, ub, xb;
                PK_SFX(pk_group_v)(type, p, j, xq + 32 * (g + j), &ua, &xa);
                PK_SFX(pk_group_v)(type, p, j + 1, xq + 32 * (g + j + 1), &ub, &xb);
                const __m512i u = _mm512_inserti64x4(_mm512_castsi256_si512(ua), ub, 1);
                const __m512i x = _mm512_inserti64x4(_mm512_castsi256_si512(xa), xb, 1);
                const __m512i d = _mm512_dpbusd_epi32(_mm512_setzero_si512(), u, x);
                const float da = xd[g + j], db = xd[g + j + 1];
                const __m512 s = _mm512_insertf32x8(
                    _mm512_castps256_ps512(PK_SFX(pk_scale8)(sl[j] * da, sh[j] * da)),
                    PK_SFX(pk_scale8)(sl[j + 1] * db, sh[j + 1] * db), 1);
                acc2 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(d), s, acc2);
                off += da * (cl[j] * (float)xs[2 * (g + j)] + ch[j] * (float)xs[2 * (g + j) + 1])
                     + db * (cl[j + 1] * (float)xs[2 * (g + j + 1)] + ch[j + 1] * (float)xs[2 * (g + j + 1) + 1]);
            }
        }
    }
    for (; g < ng; g++) {  // an odd last 32-block
        const uint8_t *p = row + bb * g;
        PK_SFX(pk_block_scales)(type, p, sl, sh, cl, ch);
        __m256i u, x;
        PK_SFX(pk_group_v)(type, p, 0, xq + 32 * g, &u, &x);
        const float dx = xd[g];
        acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(PK_SFX(pk_dot32)(u, x)), PK_SFX(pk_scale8)(sl[0] * dx, sh[0] * dx), acc);
        off += dx * (cl[0] * (float)xs[2 * g] + ch[0] * (float)xs[2 * g + 1]);
    }
    return _mm512_reduce_add_ps(acc2) + PK_SFX(pk_hsum256)(acc) + off;
#else
    for (int64_t b = 0; b < ng / per; b++) {
        const uint8_t *p = row + bb * b;
        PK_SFX(pk_block_scales)(type, p, sl, sh, cl, ch);
        for (int j = 0; j < per; j++) {
            const int64_t g = b * per + j;
            __m256i u, x;
            PK_SFX(pk_group_v)(type, p, j, xq + 32 * g, &u, &x);
            const float dx = xd[g];
            acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(PK_SFX(pk_dot32)(u, x)), PK_SFX(pk_scale8)(sl[j] * dx, sh[j] * dx), acc);
            off += dx * (cl[j] * (float)xs[2 * g] + ch[j] * (float)xs[2 * g + 1]);
        }
    }
    return PK_SFX(pk_hsum256)(acc) + off;
#endif
}

static float PK_SFX(pk_row_dot)(int type, const uint8_t *row, int64_t n, const int8_t *xq, const float *xd,
                                const int16_t *xs) {
    switch (type) {
    case T_Q8_0: return PK_SFX(pk_row_dot_t)(T_Q8_0, row, n, xq, xd, xs);
    case T_Q4_0: return PK_SFX(pk_row_dot_t)(T_Q4_0, row, n, xq, xd, xs);
    case T_Q4_1: return PK_SFX(pk_row_dot_t)(T_Q4_1, row, n, xq, xd, xs);
    case T_Q5_0: return PK_SFX(pk_row_dot_t)(T_Q5_0, row, n, xq, xd, xs);
    case T_Q5_1: return PK_SFX(pk_row_dot_t)(T_Q5_1, row, n, xq, xd, xs);
    case T_Q4_K: return PK_SFX(pk_row_dot_t)(T_Q4_K, row, n, xq, xd, xs);
    case T_Q5_K: return PK_SFX(pk_row_dot_t)(T_Q5_K, row, n, xq, xd, xs);
    case T_Q6_K: return PK_SFX(pk_row_dot_t)(T_Q6_K, row, n, xq, xd, xs);
    default: return 0;
    }
}

#undef PK_ALWAYS
