// Included by kernels.c once per instruction-set path, with PK_SFX(name) giving the path's suffix and
// PK_HALF(p) reading a binary16 scale. Plain C loops: the compiler vectorises them for the path's target.
// Not a header to include anywhere else.

/// Dequantises one row of `n` elements (a whole number of blocks).
static void PK_SFX(pk_deq_row)(int type, const uint8_t *s, int64_t n, float *y) {
    switch (type) {
    case T_F32:
        memcpy(y, s, (size_t)n * 4);
        return;
    case T_F16: {
        int64_t i = 0;
#if defined(PK_SIMD_AVX2) || defined(PK_SIMD_AVX512)
        for (; i + 8 <= n; i += 8)
            _mm256_storeu_ps(y + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(s + 2 * i))));
#endif
        for (; i < n; i++) y[i] = pk_half_bits(pk_rd16(s + 2 * i));
        return;
    }
    case T_BF16:
        for (int64_t i = 0; i < n; i++) {
            uint32_t b = (uint32_t)pk_rd16(s + 2 * i) << 16;
            memcpy(y + i, &b, 4);
        }
        return;
    case T_Q8_0:
        for (int64_t b = 0; b < n / 32; b++) {
            const uint8_t *p = s + 34 * b;
            const float d = PK_HALF(p);
            const int8_t *q = (const int8_t *)(p + 2);
            float *o = y + 32 * b;
            for (int j = 0; j < 32; j++) o[j] = (float)q[j] * d;
        }
        return;
    case T_Q4_0:
        for (int64_t b = 0; b < n / 32; b++) {
            const uint8_t *p = s + 18 * b, *q = p + 2;
            const float d = PK_HALF(p);
            float *o = y + 32 * b;
            for (int j = 0; j < 16; j++) {
                o[j] = d * (float)((q[j] & 15) - 8);
                o[j + 16] = d * (float)((q[j] >> 4) - 8);
            }
        }
        return;
    case T_Q4_1:
        for (int64_t b = 0; b < n / 32; b++) {
            const uint8_t *p = s + 20 * b, *q = p + 4;
            const float d = PK_HALF(p), m = PK_HALF(p + 2);
            float *o = y + 32 * b;
            for (int j = 0; j < 16; j++) {
                o[j] = d * (float)(q[j] & 15) + m;
                o[j + 16] = d * (float)(q[j] >> 4) + m;
            }
        }
        return;
    case T_Q5_0:
        for (int64_t b = 0; b < n / 32; b++) {
            const uint8_t *p = s + 22 * b, *q = p + 6;
            const float d = PK_HALF(p);
            const uint32_t qh = pk_rd32(p + 2);
            float *o = y + 32 * b;
            for (int j = 0; j < 16; j++) {
                int lo = (q[j] & 15) | (int)(((qh >> j) & 1) << 4);
                int hi = (q[j] >> 4) | (int)(((qh >> (j + 16)) & 1) << 4);
                o[j] = d * (float)(lo - 16);
                o[j + 16] = d * (float)(hi - 16);
            }
        }
        return;
    case T_Q5_1:
        for (int64_t b = 0; b < n / 32; b++) {
            const uint8_t *p = s + 24 * b, *q = p + 8;
            const float d = PK_HALF(p), m = PK_HALF(p + 2);
            const uint32_t qh = pk_rd32(p + 4);
            float *o = y + 32 * b;
            for (int j = 0; j < 16; j++) {
                int lo = (q[j] & 15) | (int)(((qh >> j) & 1) << 4);
                int hi = (q[j] >> 4) | (int)(((qh >> (j + 16)) & 1) << 4);
                o[j] = d * (float)lo + m;
                o[j + 16] = d * (float)hi + m;
            }
        }
        return;
    case T_Q4_K:
    case T_Q5_K: {
        const int five = type == T_Q5_K;
        const int64_t bb = five ? 176 : 144;
        for (int64_t b = 0; b < n / 256; b++) {
            const uint8_t *p = s + bb * b, *sc = p + 4, *qh = p + 16, *qs = p + (five ? 48 : 16);
            const float d = PK_HALF(p), dmin = PK_HALF(p + 2);
            for (int j = 0; j < 8; j++) {
                uint8_t a, m;
                pk_k_scale_min(j, sc, &a, &m);
                const float dl = d * (float)a, ml = dmin * (float)m;
                const uint8_t *q = qs + 32 * (j / 2);
                const int sh = (j & 1) * 4;
                float *o = y + 256 * b + 32 * j;
                if (five) {
                    for (int l = 0; l < 32; l++)
                        o[l] = dl * (float)(((q[l] >> sh) & 15) | (((qh[l] >> j) & 1) << 4)) - ml;
                } else {
                    for (int l = 0; l < 32; l++) o[l] = dl * (float)((q[l] >> sh) & 15) - ml;
                }
            }
        }
        return;
    }
    case T_Q6_K:
        for (int64_t b = 0; b < n / 256; b++) {
            const uint8_t *p = s + 210 * b, *ql = p, *qh = p + 128;
            const int8_t *sc = (const int8_t *)(p + 192);
            const float d = PK_HALF(p + 208);
            for (int h = 0; h < 2; h++) {
                for (int k = 0; k < 4; k++) {
                    const uint8_t *lq = ql + 64 * h + 32 * (k & 1), *hq = qh + 32 * h;
                    const int sh = k >= 2 ? 4 : 0;
                    float *o = y + 256 * b + 128 * h + 32 * k;
                    const float d0 = d * (float)sc[8 * h + 2 * k], d1 = d * (float)sc[8 * h + 2 * k + 1];
                    for (int l = 0; l < 32; l++) {
                        int q = ((lq[l] >> sh) & 15) | (((hq[l] >> (2 * k)) & 3) << 4);
                        o[l] = (l < 16 ? d0 : d1) * (float)(q - 32);
                    }
                }
            }
        }
        return;
    default:
        memset(y, 0, (size_t)n * 4);
        return;
    }
}

/// Per-group factors of one block (1 group for the 32-element formats, 8 for K-quants): with u the unsigned
/// quants of the group (signed int8 for Q8_0) and x̂ the quantized activation, the group's contribution is
/// dx · (sl·Σ_{0..15} u·x̂ + sh·Σ_{16..31} u·x̂ + cl·Σ_{0..15} x̂ + ch·Σ_{16..31} x̂).
/// Returns the number of groups.
static inline __attribute__((always_inline)) int PK_SFX(pk_block_scales)(int type, const uint8_t *p, float *sl, float *sh, float *cl, float *ch) {
    switch (type) {
    case T_Q8_0: sl[0] = sh[0] = PK_HALF(p); cl[0] = ch[0] = 0; return 1;
    case T_Q4_0: { float d = PK_HALF(p); sl[0] = sh[0] = d; cl[0] = ch[0] = -8.0f * d; return 1; }
    case T_Q5_0: { float d = PK_HALF(p); sl[0] = sh[0] = d; cl[0] = ch[0] = -16.0f * d; return 1; }
    case T_Q4_1:
    case T_Q5_1: sl[0] = sh[0] = PK_HALF(p); cl[0] = ch[0] = PK_HALF(p + 2); return 1;
    case T_Q4_K:
    case T_Q5_K: {
        const float d = PK_HALF(p), dmin = PK_HALF(p + 2);
        for (int j = 0; j < 8; j++) {
            uint8_t a, m;
            pk_k_scale_min(j, p + 4, &a, &m);
            sl[j] = sh[j] = d * (float)a;
            cl[j] = ch[j] = -(dmin * (float)m);
        }
        return 8;
    }
    case T_Q6_K: {
        const float d = PK_HALF(p + 208);
        const int8_t *sc = (const int8_t *)(p + 192);
        for (int j = 0; j < 8; j++) {
            sl[j] = d * (float)sc[2 * j];
            sh[j] = d * (float)sc[2 * j + 1];
            cl[j] = -32.0f * sl[j];
            ch[j] = -32.0f * sh[j];
        }
        return 8;
    }
    default: return 0;
    }
}

static inline int64_t PK_SFX(pk_block_bytes)(int type) {
    switch (type) {
    case T_Q8_0: return 34;
    case T_Q4_0: return 18;
    case T_Q4_1: return 20;
    case T_Q5_0: return 22;
    case T_Q5_1: return 24;
    case T_Q4_K: return 144;
    case T_Q5_K: return 176;
    case T_Q6_K: return 210;
    default: return 0;
    }
}

#if !defined(PK_SIMD_AVX2) && !defined(PK_SIMD_AVX512)
/// The 32 unsigned quants of group j of the block at p (not Q8_0).
static inline void PK_SFX(pk_group_quants)(int type, const uint8_t *p, int j, uint8_t *u) {
    switch (type) {
    case T_Q4_0:
    case T_Q4_1: {
        const uint8_t *q = p + (type == T_Q4_0 ? 2 : 4);
        for (int l = 0; l < 16; l++) { u[l] = q[l] & 15; u[l + 16] = q[l] >> 4; }
        return;
    }
    case T_Q5_0:
    case T_Q5_1: {
        const uint8_t *q = p + (type == T_Q5_0 ? 6 : 8);
        const uint32_t qh = pk_rd32(p + (type == T_Q5_0 ? 2 : 4));
        for (int l = 0; l < 16; l++) {
            u[l] = (uint8_t)((q[l] & 15) | (((qh >> l) & 1) << 4));
            u[l + 16] = (uint8_t)((q[l] >> 4) | (((qh >> (l + 16)) & 1) << 4));
        }
        return;
    }
    case T_Q4_K:
    case T_Q5_K: {
        const int five = type == T_Q5_K;
        const uint8_t *q = p + (five ? 48 : 16) + 32 * (j / 2), *qh = p + 16;
        const int sh = (j & 1) * 4;
        for (int l = 0; l < 32; l++)
            u[l] = (uint8_t)(((q[l] >> sh) & 15) | (five ? (((qh[l] >> j) & 1) << 4) : 0));
        return;
    }
    case T_Q6_K: {
        const int h = j / 4, k = j % 4;
        const uint8_t *lq = p + 64 * h + 32 * (k & 1), *hq = p + 128 + 32 * h;
        const int sh = k >= 2 ? 4 : 0;
        for (int l = 0; l < 32; l++) u[l] = (uint8_t)(((lq[l] >> sh) & 15) | (((hq[l] >> (2 * k)) & 3) << 4));
        return;
    }
    default:
        memset(u, 0, 32);
        return;
    }
}

/// Reference row dot product (the scalar path): integer sums per half-group, float scales per group.
static float PK_SFX(pk_row_dot_ref)(int type, const uint8_t *row, int64_t n, const int8_t *xq, const float *xd,
                                     const int16_t *xs) {
    const int64_t bb = PK_SFX(pk_block_bytes)(type);
    const int per = (type == T_Q4_K || type == T_Q5_K || type == T_Q6_K) ? 8 : 1;
    float sl[8], sh[8], cl[8], ch[8];
    uint8_t u[32];
    float acc = 0;
    for (int64_t b = 0; b < n / (32 * per); b++) {
        const uint8_t *p = row + bb * b;
        PK_SFX(pk_block_scales)(type, p, sl, sh, cl, ch);
        for (int j = 0; j < per; j++) {
            const int64_t g = b * per + j;
            const int8_t *x = xq + 32 * g;
            int32_t lo = 0, hi = 0;
            if (type == T_Q8_0) {
                const int8_t *q = (const int8_t *)(p + 2);
                for (int l = 0; l < 16; l++) { lo += q[l] * x[l]; hi += q[l + 16] * x[l + 16]; }
            } else {
                PK_SFX(pk_group_quants)(type, p, j, u);
                for (int l = 0; l < 16; l++) { lo += u[l] * x[l]; hi += u[l + 16] * x[l + 16]; }
            }
            acc += xd[g] * (sl[j] * (float)lo + sh[j] * (float)hi + cl[j] * (float)xs[2 * g]
                            + ch[j] * (float)xs[2 * g + 1]);
        }
    }
    return acc;
}
#endif
