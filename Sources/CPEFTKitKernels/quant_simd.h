// Included by kernels.c for the AVX2 (PK_SIMD_AVX2) and AVX-512 (PK_SIMD_AVX512) paths, after quant_body.h.
// A group of 32 weights becomes 32 unsigned bytes u (for Q8_0: |w| with the activation's signs flipped where
// w < 0), multiplied with the 32 int8 activations: AVX2 by vpmaddubsw + vpmaddwd (no saturation: |u| <= 128,
// |x| <= 127, so a pair sums to at most 32512), AVX-512 by vpdpbusd. Lane k of the int32 result holds elements
// 4k..4k+3 of the bytes' order, so each half-group of 16 has four lanes of its own (Q6_K has a scale per 16).
// pk_rows is the entry: four rows per pass sharing the activation loads (pk_rows_dot32 for the 32-element
// formats, two blocks per 512-bit step with AVX-512; pk_rows_dotk for K-quants with AVX-512, pk_rows_dotk2 with
// AVX2). pk_row_dot_t is the older one-row form. Not a header to include anywhere else.

#define PK_ALWAYS static inline __attribute__((always_inline))
// Rows ahead that the multi-row kernels prefetch (two passes of four): 4, 8, 12 and 16 measured on Zen 4, 8 best.
#ifndef PK_PF
#define PK_PF 8
#endif

/// 16 bytes of packed nibbles to 32 quants: low nibbles first (elements 0-15), then high (16-31).
PK_ALWAYS __m256i PK_SFX(pk_nib16)(const uint8_t *q) {
    const __m128i v = _mm_loadu_si128((const __m128i *)q), m = _mm_set1_epi8(15);
    return _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(v, 4), m), _mm_and_si128(v, m));
}

/// Byte l = 0x10 where bit l of `bits` is set, else 0.
PK_ALWAYS __m256i PK_SFX(pk_bit16)(uint32_t bits) {
#if defined(PK_SIMD_AVX512)
    return _mm256_maskz_mov_epi8((__mmask32)bits, _mm256_set1_epi8(0x10));  // the bits are the byte mask
#endif
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

/// R rows (1..4) of a 32-element format (Q8_0, Q4_0, Q4_1, Q5_0, Q5_1) against one quantized activation, one
/// block of every row per step: the activation group, its scale and its sum are loaded once for the R rows.
/// Block g of row r adds dw·dx·Σ u·x̂ to the row's vector accumulator and its offset term c·(k·dx·Σx̂) to the
/// row's offset (c = m, k = 1 for Q4_1/Q5_1; c = dw, k = −8 / −16 for Q4_0/Q5_0; none for Q8_0). The block's
/// binary16 scales are widened together ([dw, c] by one vcvtph2ps) and multiplied by [dx, k·dx·Σx̂] in one
/// step. Each row's arithmetic is the same whatever R is, so a row's result does not depend on how the rows
/// are split (thread count, chunking).
PK_ALWAYS void PK_SFX(pk_rows_dot32)(const int type, const int R, const uint8_t *row, size_t rb, int64_t ng,
                                     const int8_t *xq, const float *xd, const int16_t *xs, float *y) {
    const int64_t bb = PK_SFX(pk_block_bytes)(type);
    const float k = type == T_Q4_0 ? -8.0f : (type == T_Q5_0 ? -16.0f : 1.0f);
    __m256 acc[4];
    __m128 off[4];
    _Pragma("clang loop unroll(full)") for (int r = 0; r < R; r++) { acc[r] = _mm256_setzero_ps(); off[r] = _mm_setzero_ps(); }
    int64_t g = 0;
#if defined(PK_SIMD_AVX512)
    // Two blocks a, b per 512-bit step. Nibble formats unpack the two 16-byte quant arrays as
    // [a low, b low, a high, b high] (16 bytes each), so the activation pair is permuted once to match; Q8_0
    // keeps the natural order. Lane k of the dot product sums elements 4k..4k+3 of that order, so lanes 0-3 and
    // 8-11 belong to a, 4-7 and 12-15 to b (Q8_0: 0-7 a, 8-15 b); the scales [dwa·dxa, ca·sxa, dwb·dxb,
    // cb·sxb] are spread over the lanes by one permute.
    __m512 acc2[4];
    __m128 off2[4];
    _Pragma("clang loop unroll(full)") for (int r = 0; r < R; r++) { acc2[r] = _mm512_setzero_ps(); off2[r] = _mm_setzero_ps(); }
    const int nib = type != T_Q8_0;
    const __m512i spread = nib ? _mm512_setr_epi32(0, 0, 0, 0, 2, 2, 2, 2, 0, 0, 0, 0, 2, 2, 2, 2)
                               : _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 2, 2, 2, 2, 2, 2, 2, 2);
    const __m512i m15 = _mm512_set1_epi8(15), hbit = _mm512_set1_epi8(0x10);
    const int qo = type == T_Q4_0 ? 2 : type == T_Q4_1 ? 4 : type == T_Q5_0 ? 6 : 8;  // quant offset (nibbles)
    for (; g + 2 <= ng; g += 2) {
        __m512i xv = _mm512_loadu_si512((const void *)(xq + 32 * g));
        if (nib) xv = _mm512_shuffle_i64x2(xv, xv, _MM_SHUFFLE(3, 1, 2, 0));
        const float dxa = xd[g], dxb = xd[g + 1];
        const float sxa = type == T_Q8_0 ? 0.0f : k * (dxa * (float)(xs[2 * g] + xs[2 * g + 1]));
        const float sxb = type == T_Q8_0 ? 0.0f : k * (dxb * (float)(xs[2 * g + 2] + xs[2 * g + 3]));
        const __m128 dxs = _mm_setr_ps(dxa, sxa, dxb, sxb);
        for (int64_t o = 0; o < 2 * R * bb; o += 64)
            _mm_prefetch((const char *)(row + PK_PF * rb + R * bb * g + o), _MM_HINT_T0);
        _Pragma("clang loop unroll(full)") for (int r = 0; r < R; r++) {
            const uint8_t *pa = row + (size_t)r * rb + bb * g, *pb = pa + bb;
            __m512i u, xx = xv;
            if (type == T_Q8_0) {
                const __m512i w = _mm512_inserti64x4(
                    _mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)(pa + 2))),
                    _mm256_loadu_si256((const __m256i *)(pb + 2)), 1);
                u = _mm512_abs_epi8(w);
                xx = _mm512_mask_sub_epi8(xv, _mm512_movepi8_mask(w), _mm512_setzero_si512(), xv);
            } else {
                const __m256i q = _mm256_loadu2_m128i((const __m128i *)(pb + qo), (const __m128i *)(pa + qo));
                u = _mm512_and_si512(_mm512_inserti64x4(_mm512_castsi256_si512(q), _mm256_srli_epi16(q, 4), 1), m15);
                if (type == T_Q5_0 || type == T_Q5_1) {
                    const uint64_t ha = pk_rd32(pa + qo - 4), hb = pk_rd32(pb + qo - 4);
                    const uint64_t bits = (ha & 0xffff) | (hb & 0xffff) << 16 | (ha >> 16) << 32 | (hb >> 16) << 48;
                    u = _mm512_or_si512(u, _mm512_maskz_mov_epi8((__mmask64)bits, hbit));
                }
            }
            const __m512 f = _mm512_cvtepi32_ps(_mm512_dpbusd_epi32(_mm512_setzero_si512(), u, xx));
            // [da, ma, db, mb] for Q4_1/Q5_1; the others read [da, -, db, -] (the next two bytes are quants)
            // and repeat d.
            __m128 h = _mm_cvtph_ps(_mm_cvtsi64_si128((long long)((uint64_t)pk_rd32(pa) | (uint64_t)pk_rd32(pb) << 32)));
            if (!(type == T_Q4_1 || type == T_Q5_1)) h = _mm_moveldup_ps(h);
            const __m128 sc = _mm_mul_ps(h, dxs);
            acc2[r] = _mm512_fmadd_ps(f, _mm512_permutexvar_ps(spread, _mm512_zextps128_ps512(sc)), acc2[r]);
            if (type != T_Q8_0) off2[r] = _mm_add_ps(off2[r], sc);
        }
    }
#endif
    for (; g < ng; g++) {
        const __m256i xv = _mm256_loadu_si256((const __m256i *)(xq + 32 * g));
        const float dx = xd[g];
        const float sx = type == T_Q8_0 ? 0.0f : k * (dx * (float)(xs[2 * g] + xs[2 * g + 1]));
        const __m128 dxs = _mm_setr_ps(dx, sx, 0, 0);
        // The R rows are R short interleaved streams that the hardware prefetchers barely learn before they end:
        // prefetch the rows PK_PF further down as one sequential stream, R·bb bytes per step (the same pace as
        // the rows are read; no fault past the end of the matrix: a prefetch is a hint).
        for (int64_t o = 0; o < R * bb; o += 64)
            _mm_prefetch((const char *)(row + PK_PF * rb + R * bb * g + o), _MM_HINT_T0);
        _Pragma("clang loop unroll(full)") for (int r = 0; r < R; r++) {
            const uint8_t *p = row + (size_t)r * rb + bb * g;
            __m256i u, xx = xv;
            switch (type) {
            case T_Q8_0: {
                const __m256i w = _mm256_loadu_si256((const __m256i *)(p + 2));
                u = _mm256_abs_epi8(w);
                xx = _mm256_sign_epi8(xv, w);
                break;
            }
            case T_Q4_0: u = PK_SFX(pk_nib16)(p + 2); break;
            case T_Q4_1: u = PK_SFX(pk_nib16)(p + 4); break;
            case T_Q5_0: u = _mm256_or_si256(PK_SFX(pk_nib16)(p + 6), PK_SFX(pk_bit16)(pk_rd32(p + 2))); break;
            default: u = _mm256_or_si256(PK_SFX(pk_nib16)(p + 8), PK_SFX(pk_bit16)(pk_rd32(p + 4))); break;
            }
            const __m256 f = _mm256_cvtepi32_ps(PK_SFX(pk_dot32)(u, xx));
            // [dw, c]: Q4_1/Q5_1 store d then m; the others repeat d (the two bytes after it are quants).
            __m128 h = _mm_cvtph_ps(_mm_cvtsi32_si128((int)pk_rd32(p)));
            if (!(type == T_Q4_1 || type == T_Q5_1)) h = _mm_moveldup_ps(h);
            const __m128 s = _mm_mul_ps(h, dxs);
            acc[r] = _mm256_fmadd_ps(f, _mm256_broadcastss_ps(s), acc[r]);
            if (type != T_Q8_0) off[r] = _mm_add_ps(off[r], s);
        }
    }
    _Pragma("clang loop unroll(full)") for (int r = 0; r < R; r++) {
        float v = PK_SFX(pk_hsum256)(acc[r]), o = _mm_cvtss_f32(_mm_movehdup_ps(off[r]));
#if defined(PK_SIMD_AVX512)
        v = _mm512_reduce_add_ps(acc2[r]) + v;
        const __m128 o2 = _mm_movehdup_ps(off2[r]);  // lanes 1 and 3 hold the offsets of a and b
        o = (_mm_cvtss_f32(o2) + _mm_cvtss_f32(_mm_movehl_ps(o2, o2))) + o;
#endif
        y[r] = v + (type == T_Q8_0 ? 0.0f : o);
    }
}

/// Rows [r0, r1) of a 32-element format, four at a time.
PK_ALWAYS void PK_SFX(pk_rows32_t)(const int type, const uint8_t *w, size_t rb, int64_t r0, int64_t r1, int64_t n,
                                   const int8_t *xq, const float *xd, const int16_t *xs, float *y) {
    int64_t r = r0;
    for (; r + 4 <= r1; r += 4) PK_SFX(pk_rows_dot32)(type, 4, w + (size_t)r * rb, rb, n / 32, xq, xd, xs, y + r);
    for (; r < r1; r++) PK_SFX(pk_rows_dot32)(type, 1, w + (size_t)r * rb, rb, n / 32, xq, xd, xs, y + r);
}

#if defined(PK_SIMD_AVX512)
/// R rows (1..4) of a K-quant (Q4_K, Q5_K, Q6_K) against one quantized activation, one 256-element block of every
/// row per step, two groups per 512-bit product. Everything is kept per half-group of 16 (the finest scale, Q6_K's):
/// lane k of a product sums elements 4k..4k+3, so lanes 4h'..4h'+3 of the pair (2k, 2k+1) are half-group 4k + h'.
/// Shared by the R rows: the activation block, dx per half-group and S = dx·Σx̂ per half-group. Per row: the
/// scales as 16 floats c (the weight scale times dx) and the offset coefficients o (−dmin·m for Q4_K/Q5_K,
/// −32·d·sc for Q6_K); the block adds Σ_pairs cvt(dot)·c[lanes] to the row's accumulator and o·S to its
/// offsets. As for the 32-element formats, a row's arithmetic does not depend on R.
PK_ALWAYS void PK_SFX(pk_rows_dotk)(const int type, const int R, const uint8_t *row, size_t rb, int64_t nb,
                                    const int8_t *xq, const float *xd, const int16_t *xs, float *y) {
    const int64_t bb = PK_SFX(pk_block_bytes)(type);
    const __m512i m15 = _mm512_set1_epi8(15), three = _mm512_set1_epi8(3), hbit = _mm512_set1_epi8(0x10);
    const __m512i halves = _mm512_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7);
    __m512 acc[4], off[4];
    _Pragma("clang loop unroll(full)") for (int r = 0; r < R; r++) { acc[r] = _mm512_setzero_ps(); off[r] = _mm512_setzero_ps(); }
    for (int64_t b = 0; b < nb; b++) {
        const int8_t *xb = xq + 256 * b;
        __m512i X[4];
        for (int k = 0; k < 4; k++) X[k] = _mm512_loadu_si512((const void *)(xb + 64 * k));
        const __m512 dx16 = _mm512_permutexvar_ps(halves, _mm512_castps256_ps512(_mm256_loadu_ps(xd + 8 * b)));
        const __m512 S = _mm512_mul_ps(dx16, _mm512_cvtepi32_ps(_mm512_cvtepi16_epi32(
            _mm256_loadu_si256((const __m256i *)(xs + 16 * b)))));
        for (int64_t o = 0; o < R * bb; o += 64)
            _mm_prefetch((const char *)(row + PK_PF * rb + R * bb * b + o), _MM_HINT_T0);
        _Pragma("clang loop unroll(full)") for (int r = 0; r < R; r++) {
            const uint8_t *p = row + (size_t)r * rb + bb * b;
            __m512 c, o;
            if (type == T_Q6_K) {
                const __m512 w = _mm512_mul_ps(_mm512_set1_ps(PK_HALF(p + 208)),
                    _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(p + 192)))));
                c = _mm512_mul_ps(w, dx16);
                o = _mm512_mul_ps(w, _mm512_set1_ps(-32.0f));
            } else {
                // The 6-bit scales and mins of groups 0-3 and 4-7 from the 12 packed bytes (see pk_k_scale_min).
                const uint32_t w0 = pk_rd32(p + 4), w1 = pk_rd32(p + 8), w2 = pk_rd32(p + 12);
                const uint64_t sc = (w0 & 0x3f3f3f3fu)
                    | (uint64_t)((w2 & 0x0f0f0f0fu) | ((w0 >> 6) & 0x03030303u) << 4) << 32;
                const uint64_t mn = (w1 & 0x3f3f3f3fu)
                    | (uint64_t)(((w2 >> 4) & 0x0f0f0f0fu) | ((w1 >> 6) & 0x03030303u) << 4) << 32;
                const __m128i scv = _mm_cvtsi64_si128((long long)sc), mnv = _mm_cvtsi64_si128((long long)mn);
                const __m512 scf = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_unpacklo_epi8(scv, scv)));
                const __m512 mnf = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_unpacklo_epi8(mnv, mnv)));
                c = _mm512_mul_ps(_mm512_mul_ps(_mm512_set1_ps(PK_HALF(p)), scf), dx16);
                o = _mm512_mul_ps(_mm512_set1_ps(-PK_HALF(p + 2)), mnf);
            }
            off[r] = _mm512_fmadd_ps(o, S, off[r]);
            __m512i qh = _mm512_setzero_si512();
            if (type == T_Q5_K) qh = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(p + 16)));
            _Pragma("clang loop unroll(full)") for (int k = 0; k < 4; k++) {
                __m512i u;
                if (type == T_Q6_K) {
                    const int h = k / 2;
                    const __m512i l = _mm512_loadu_si512((const void *)(p + 64 * h));
                    const __m512i nibs = (k & 1) ? _mm512_and_si512(_mm512_srli_epi16(l, 4), m15) : _mm512_and_si512(l, m15);
                    const __m512i hq = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(p + 128 + 32 * h)));
                    const int s0 = 4 * (k & 1);  // bit pair of the first group; the second's is 2 higher
                    const __m512i cnt = _mm512_inserti64x4(_mm512_set1_epi16((short)s0), _mm256_set1_epi16((short)(s0 + 2)), 1);
                    u = _mm512_or_si512(nibs, _mm512_slli_epi16(_mm512_and_si512(_mm512_srlv_epi16(hq, cnt), three), 4));
                } else {
                    const __m256i q = _mm256_loadu_si256((const __m256i *)(p + (type == T_Q5_K ? 48 : 16) + 32 * k));
                    u = _mm512_and_si512(_mm512_inserti64x4(_mm512_castsi256_si512(q), _mm256_srli_epi16(q, 4), 1), m15);
                    if (type == T_Q5_K) {
                        const __m512i sel = _mm512_inserti64x4(_mm512_set1_epi8((char)(1 << (2 * k))),
                                                               _mm256_set1_epi8((char)(1 << (2 * k + 1))), 1);
                        u = _mm512_or_si512(u, _mm512_maskz_mov_epi8(_mm512_test_epi8_mask(qh, sel), hbit));
                    }
                }
                const __m512i lanes = _mm512_setr_epi32(4 * k, 4 * k, 4 * k, 4 * k, 4 * k + 1, 4 * k + 1, 4 * k + 1, 4 * k + 1,
                                                        4 * k + 2, 4 * k + 2, 4 * k + 2, 4 * k + 2, 4 * k + 3, 4 * k + 3, 4 * k + 3, 4 * k + 3);
                const __m512 f = _mm512_cvtepi32_ps(_mm512_dpbusd_epi32(_mm512_setzero_si512(), u, X[k]));
                acc[r] = _mm512_fmadd_ps(f, _mm512_permutexvar_ps(lanes, c), acc[r]);
            }
        }
    }
    _Pragma("clang loop unroll(full)") for (int r = 0; r < R; r++)
        y[r] = _mm512_reduce_add_ps(acc[r]) + _mm512_reduce_add_ps(off[r]);
}

/// Rows [r0, r1) of a K-quant, four at a time.
PK_ALWAYS void PK_SFX(pk_rowsk_t)(const int type, const uint8_t *w, size_t rb, int64_t r0, int64_t r1, int64_t n,
                                  const int8_t *xq, const float *xd, const int16_t *xs, float *y) {
    int64_t r = r0;
    for (; r + 4 <= r1; r += 4) PK_SFX(pk_rows_dotk)(type, 4, w + (size_t)r * rb, rb, n / 256, xq, xd, xs, y + r);
    for (; r < r1; r++) PK_SFX(pk_rows_dotk)(type, 1, w + (size_t)r * rb, rb, n / 256, xq, xd, xs, y + r);
}
#endif

#if !defined(PK_SIMD_AVX512)
/// Four 8-lane products (lanes 0-3: elements 0-15 of group a..d, lanes 4-7: elements 16-31) to one vector of
/// their half-group sums: [a₀ b₀ c₀ d₀ a₁ b₁ c₁ d₁] (exact: integer additions).
PK_ALWAYS __m256i PK_SFX(pk_hsum4)(__m256i a, __m256i b, __m256i c, __m256i d) {
    return _mm256_hadd_epi32(_mm256_hadd_epi32(a, b), _mm256_hadd_epi32(c, d));
}

/// AVX2: R rows (1..4) of a K-quant (Q4_K, Q5_K, Q6_K) against one quantized activation, one 256-element block of
/// every row per step. Group j (32 elements) is one vpmaddubsw + vpmaddwd product per row (lanes 0-3: elements
/// 0-15, lanes 4-7: 16-31). The activation groups and the block's shared factors are loaded once for the R rows
/// (sixteen ymm registers cannot also hold a whole block's activation next to four accumulators, so the loop over
/// groups is outside the one over rows). Q4_K/Q5_K: per group and row one conversion and one fma with the group's
/// c = d·s_j·dx_j (one lane of the row's 8 scales, vpermps). Q6_K, per quarter of four groups: the four products
/// reduced by integer horizontal adds to their eight half-group sums (pk_hsum4), then one conversion and one fma
/// per row with c = d·sc·dx per half-group in that order (on Zen 4 this measured 1.0-1.2x the per-group form for
/// Q6_K, 0.8-0.95x for Q4_K/Q5_K, whose vphaddd cost is not paid back). The offset o·S is folded into the row's
/// accumulator (o = −dmin·m, S = dx·Σx̂ per group for Q4_K/Q5_K; o = d·sc, S = −32·dx·Σx̂ per half-group for Q6_K).
/// A row's arithmetic is the same whatever R is, so its result does not depend on the split.
PK_ALWAYS void PK_SFX(pk_rows_dotk2)(const int type, const int R, const uint8_t *row, size_t rb, int64_t nb,
                                     const int8_t *xq, const float *xd, const int16_t *xs, float *y) {
    const int64_t bb = PK_SFX(pk_block_bytes)(type);
    const __m256i m15 = _mm256_set1_epi8(15), ones = _mm256_set1_epi16(1);
    __m256 acc[4];
    _Pragma("clang loop unroll(full)") for (int r = 0; r < R; r++) acc[r] = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        const int8_t *xb = xq + 256 * b;
        const __m256 dx8 = _mm256_loadu_ps(xd + 8 * b);
        for (int64_t o = 0; o < R * bb; o += 64)
            _mm_prefetch((const char *)(row + PK_PF * rb + R * bb * b + o), _MM_HINT_T0);
        if (type == T_Q6_K) {
            const __m256i xs16 = _mm256_loadu_si256((const __m256i *)(xs + 16 * b));
            for (int h = 0; h < 2; h++) {
                // Groups 4h..4h+3; lane order [g0 lo, g1 lo, g2 lo, g3 lo, g0 hi, g1 hi, g2 hi, g3 hi].
                const __m256 dxh = _mm256_permutevar8x32_ps(dx8, _mm256_setr_epi32(4 * h, 4 * h + 1, 4 * h + 2, 4 * h + 3,
                                                                                   4 * h, 4 * h + 1, 4 * h + 2, 4 * h + 3));
                const __m256i shalf = _mm256_cvtepi16_epi32(h ? _mm256_extracti128_si256(xs16, 1) : _mm256_castsi256_si128(xs16));
                const __m256i order = _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7);
                const __m256 S = _mm256_mul_ps(_mm256_mul_ps(dxh, _mm256_cvtepi32_ps(_mm256_permutevar8x32_epi32(shalf, order))),
                                               _mm256_set1_ps(-32.0f));
                __m256i X[4];
                _Pragma("clang loop unroll(full)") for (int k = 0; k < 4; k++)
                    X[k] = _mm256_loadu_si256((const __m256i *)(xb + 128 * h + 32 * k));
                _Pragma("clang loop unroll(full)") for (int r = 0; r < R; r++) {
                    const uint8_t *p = row + (size_t)r * rb + bb * b;
                    const __m256i sc = _mm256_permutevar8x32_epi32(
                        _mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(p + 192 + 8 * h))), order);
                    const __m256 w = _mm256_mul_ps(_mm256_set1_ps(PK_HALF(p + 208)), _mm256_cvtepi32_ps(sc));
                    acc[r] = _mm256_fmadd_ps(w, S, acc[r]);
                    const __m256i hq = _mm256_loadu_si256((const __m256i *)(p + 128 + 32 * h));
                    const __m256i l0 = _mm256_loadu_si256((const __m256i *)(p + 64 * h));
                    const __m256i l1 = _mm256_loadu_si256((const __m256i *)(p + 64 * h + 32));
                    const __m256i m30 = _mm256_set1_epi8(0x30);
                    // Group k: nibbles of l(k&1), low for k < 2; bits 2k, 2k+1 of qh moved to bits 4, 5.
                    const __m256i u0 = _mm256_or_si256(_mm256_and_si256(l0, m15), _mm256_and_si256(_mm256_slli_epi16(hq, 4), m30));
                    const __m256i u1 = _mm256_or_si256(_mm256_and_si256(l1, m15), _mm256_and_si256(_mm256_slli_epi16(hq, 2), m30));
                    const __m256i u2 = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l0, 4), m15), _mm256_and_si256(hq, m30));
                    const __m256i u3 = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1, 4), m15),
                                                       _mm256_and_si256(_mm256_srli_epi16(hq, 2), m30));
                    const __m256i d = PK_SFX(pk_hsum4)(
                        _mm256_madd_epi16(_mm256_maddubs_epi16(u0, X[0]), ones), _mm256_madd_epi16(_mm256_maddubs_epi16(u1, X[1]), ones),
                        _mm256_madd_epi16(_mm256_maddubs_epi16(u2, X[2]), ones), _mm256_madd_epi16(_mm256_maddubs_epi16(u3, X[3]), ones));
                    acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(d), _mm256_mul_ps(w, dxh), acc[r]);
                }
            }
        } else {
            // S per group: dx · (Σ of the two half-group sums).
            const __m256 S = _mm256_mul_ps(dx8, _mm256_cvtepi32_ps(
                _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)(xs + 16 * b)), ones)));
            __m256 c[4];
            _Pragma("clang loop unroll(full)") for (int r = 0; r < R; r++) {
                const uint8_t *p = row + (size_t)r * rb + bb * b;
                // The 6-bit scales and mins of groups 0-3 and 4-7 from the 12 packed bytes (see pk_k_scale_min).
                const uint32_t w0 = pk_rd32(p + 4), w1 = pk_rd32(p + 8), w2 = pk_rd32(p + 12);
                const uint64_t sc = (w0 & 0x3f3f3f3fu)
                    | (uint64_t)((w2 & 0x0f0f0f0fu) | ((w0 >> 6) & 0x03030303u) << 4) << 32;
                const uint64_t mn = (w1 & 0x3f3f3f3fu)
                    | (uint64_t)(((w2 >> 4) & 0x0f0f0f0fu) | ((w1 >> 6) & 0x03030303u) << 4) << 32;
                const __m256 scf = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_cvtsi64_si128((long long)sc)));
                const __m256 mnf = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_cvtsi64_si128((long long)mn)));
                c[r] = _mm256_mul_ps(_mm256_mul_ps(_mm256_set1_ps(PK_HALF(p)), scf), dx8);
                acc[r] = _mm256_fmadd_ps(_mm256_mul_ps(_mm256_set1_ps(-PK_HALF(p + 2)), mnf), S, acc[r]);
            }
            _Pragma("clang loop unroll(full)") for (int j = 0; j < 8; j++) {
                const __m256i X = _mm256_loadu_si256((const __m256i *)(xb + 32 * j));
                const __m256i lane = _mm256_set1_epi32(j);
                _Pragma("clang loop unroll(full)") for (int r = 0; r < R; r++) {
                    const uint8_t *p = row + (size_t)r * rb + bb * b;
                    const __m256i v = _mm256_loadu_si256((const __m256i *)(p + (type == T_Q5_K ? 48 : 16) + 32 * (j / 2)));
                    __m256i u = (j & 1) ? _mm256_and_si256(_mm256_srli_epi16(v, 4), m15) : _mm256_and_si256(v, m15);
                    if (type == T_Q5_K) {
                        // Bit j of qh[l] moved to bit 4 of byte l.
                        const __m256i qh = _mm256_loadu_si256((const __m256i *)(p + 16));
                        const __m256i hb = j <= 4 ? _mm256_slli_epi16(qh, 4 - j) : _mm256_srli_epi16(qh, j - 4);
                        u = _mm256_or_si256(u, _mm256_and_si256(hb, _mm256_set1_epi8(0x10)));
                    }
                    const __m256i d = _mm256_madd_epi16(_mm256_maddubs_epi16(u, X), ones);
                    acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(d), _mm256_permutevar8x32_ps(c[r], lane), acc[r]);
                }
            }
        }
    }
    _Pragma("clang loop unroll(full)") for (int r = 0; r < R; r++) y[r] = PK_SFX(pk_hsum256)(acc[r]);
}

/// Rows [r0, r1) of a K-quant, four at a time.
PK_ALWAYS void PK_SFX(pk_rowsk_t)(const int type, const uint8_t *w, size_t rb, int64_t r0, int64_t r1, int64_t n,
                                  const int8_t *xq, const float *xd, const int16_t *xs, float *y) {
    int64_t r = r0;
    for (; r + 4 <= r1; r += 4) PK_SFX(pk_rows_dotk2)(type, 4, w + (size_t)r * rb, rb, n / 256, xq, xd, xs, y + r);
    for (; r < r1; r++) PK_SFX(pk_rows_dotk2)(type, 1, w + (size_t)r * rb, rb, n / 256, xq, xd, xs, y + r);
}
#endif

/// y[r] for r in [r0, r1): the multi-row kernels (pk_rows_dot32, pk_rows_dotk with AVX-512, pk_rows_dotk2 with AVX2).
static void PK_SFX(pk_rows)(int type, const uint8_t *w, size_t rb, int64_t r0, int64_t r1, int64_t n,
                            const int8_t *xq, const float *xd, const int16_t *xs, float *y) {
    switch (type) {
    case T_Q8_0: PK_SFX(pk_rows32_t)(T_Q8_0, w, rb, r0, r1, n, xq, xd, xs, y); return;
    case T_Q4_0: PK_SFX(pk_rows32_t)(T_Q4_0, w, rb, r0, r1, n, xq, xd, xs, y); return;
    case T_Q4_1: PK_SFX(pk_rows32_t)(T_Q4_1, w, rb, r0, r1, n, xq, xd, xs, y); return;
    case T_Q5_0: PK_SFX(pk_rows32_t)(T_Q5_0, w, rb, r0, r1, n, xq, xd, xs, y); return;
    case T_Q5_1: PK_SFX(pk_rows32_t)(T_Q5_1, w, rb, r0, r1, n, xq, xd, xs, y); return;
    case T_Q4_K: PK_SFX(pk_rowsk_t)(T_Q4_K, w, rb, r0, r1, n, xq, xd, xs, y); return;
    case T_Q5_K: PK_SFX(pk_rowsk_t)(T_Q5_K, w, rb, r0, r1, n, xq, xd, xs, y); return;
    case T_Q6_K: PK_SFX(pk_rowsk_t)(T_Q6_K, w, rb, r0, r1, n, xq, xd, xs, y); return;
    default:
        for (int64_t r = r0; r < r1; r++) y[r] = PK_SFX(pk_row_dot)(type, w + (size_t)r * rb, n, xq, xd, xs);
        return;
    }
}

#undef PK_ALWAYS
