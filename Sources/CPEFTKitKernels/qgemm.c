// Int8 matrix-matrix product of a block-quantized weight with 8-bit activations (prefill without gradients):
// out[c, r] = Σ_i w_ri·x̂_ci for many activation rows c at once, where x̂ is pk_quantize_act's activation.
//
// The weight is unpacked a panel of 16 rows at a time into one layout for every format (the "chunk" is the
// span of one scale: 16 elements for Q6_K, 32 otherwise). A chunk of a panel holds
//   u[cs/4][16][4]  unsigned quants: step k, row l, the four elements 4k..4k+3 of the chunk
//   s[16]           the row's scale of the chunk (fp32)
//   m[16]           the row's min of the chunk (fp32; only Q4_1, Q5_1, Q4_K, Q5_K)
// so that w = s·(u − o) + m with a per-format integer offset o (Q8_0: q + 128 and o = 128; Q4_0 8; Q5_0 16;
// Q6_K 32; the formats with a min 0). One vpdpbusd multiplies the four quants of 16 rows with four activation
// bytes broadcast to every lane, so a lane sums one row's integer dot product over the chunk (cs/4 steps) with
// no horizontal reduction; the offset enters as the accumulator's start value −o·Σx̂ (exact integers), and per
// chunk, lane and activation row there is one conversion, one product with the activation scale and one fma:
//   t = float(Σ (u − o)·q) · dx;   acc = fma(t, s, acc);   [acc = fma(m, dx·Σq, acc)]
// The scalar path performs exactly these operations with fmaf, so every path gives the same bits, and an
// element's value does not depend on the panel, tile or thread that computed it.
//
// AVX-512 (VNNI): 3 panels (48 rows) × 4 activation rows of accumulators per tile (QG_RV512 × QG_C512; measured
// on Zen 4 at N = 512: 4 rows against 5 and 6, which spill accumulators, was best or level for every format, Q8_0
// 3.2-3.4x the widened sgemm against 2.8-3.0x with 6; 3 panels against 2 about 5 % faster, most on Q8_0). AVX2: vpmaddubsw + vpmaddwd
// on the two 8-row halves of a panel × 4 activation rows; Q8_0 there uses |q| and the activation's signs
// flipped by q (vpmaddubsw's int16 pair sums would overflow with q + 128).
#pragma clang fp contract(off)

#include "peftkit_kernels.h"
#include "quant_common.h"

#include <math.h>
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#define QG_X86 1
#include <immintrin.h>
#else
#define QG_X86 0
#endif

#define QG_ALWAYS static inline __attribute__((always_inline))

/// Chunk size, offset and whether the format has a min; 0 for a type without the int8 product.
static int qg_params(int type, int *cs, int *off, int *mins) {
    *cs = 32; *off = 0; *mins = 0;
    switch (type) {
    case T_Q8_0: *off = 128; return 1;
    case T_Q4_0: *off = 8; return 1;
    case T_Q5_0: *off = 16; return 1;
    case T_Q4_1: case T_Q5_1: case T_Q4_K: case T_Q5_K: *mins = 1; return 1;
    case T_Q6_K: *cs = 16; *off = 32; return 1;
    default: return 0;
    }
}

static int64_t qg_block_elems(int type) { return (type == T_Q4_K || type == T_Q5_K || type == T_Q6_K) ? 256 : 32; }

static int64_t qg_chunk_bytes(int cs, int mins) { return 16 * cs + 64 + (mins ? 64 : 0); }

int pk_qgemm_supported(int type) {
    int cs, off, mins;
    return qg_params(type, &cs, &off, &mins);
}

int64_t pk_qgemm_chunks(int type, int64_t n) {
    int cs, off, mins;
    return qg_params(type, &cs, &off, &mins) ? n / cs : 0;
}

size_t pk_qgemm_scratch_bytes(int type, int64_t n) {
    int cs, off, mins;
    if (!qg_params(type, &cs, &off, &mins)) return 0;
    const int64_t nch = n / cs;
    // Three panels, then one row's quants, scales and mins before they are interleaved.
    return (size_t)(3 * nch * qg_chunk_bytes(cs, mins) + n + 8 * nch + 64);
}

void pk_qgemm_prepare(int type, int64_t n, int64_t rows, const float *xd, const int16_t *xs, int32_t *xo,
                      float *xm) {
    int cs, off, mins;
    if (!qg_params(type, &cs, &off, &mins)) return;
    const int64_t nch = n / cs, g = n / 32;
    for (int64_t r = 0; r < rows; r++) {
        const float *d = xd + r * g;
        const int16_t *s = xs + r * 2 * g;
        for (int64_t ch = 0; ch < nch; ch++) {
            const int32_t sum = cs == 32 ? (int32_t)s[2 * ch] + s[2 * ch + 1] : s[ch];
            xo[r * nch + ch] = -off * sum;
            xm[r * nch + ch] = mins ? d[ch * cs / 32] * (float)sum : 0.0f;
        }
    }
}

/// One row's unsigned quants u[n] (Q8_0: q + 128), scales s[n/cs] and mins m[n/cs], with w = s·(u − o) + m
/// equal to what pk_dequantize_rows gives up to the rounding of s·(u − o) + m.
static void qg_unpack_row(int type, const uint8_t *row, int64_t n, uint8_t *u, float *s, float *m) {
    switch (type) {
    case T_Q8_0:
        for (int64_t b = 0; b < n / 32; b++) {
            const uint8_t *p = row + 34 * b;
            s[b] = pk_half_bits(pk_rd16(p));
            for (int j = 0; j < 32; j++) u[32 * b + j] = p[2 + j] ^ 0x80;
        }
        return;
    case T_Q4_0:
    case T_Q4_1:
        for (int64_t b = 0; b < n / 32; b++) {
            const int one = type == T_Q4_1;
            const uint8_t *p = row + (one ? 20 : 18) * b, *q = p + (one ? 4 : 2);
            s[b] = pk_half_bits(pk_rd16(p));
            if (one) m[b] = pk_half_bits(pk_rd16(p + 2));
            for (int j = 0; j < 16; j++) { u[32 * b + j] = q[j] & 15; u[32 * b + j + 16] = q[j] >> 4; }
        }
        return;
    case T_Q5_0:
    case T_Q5_1:
        for (int64_t b = 0; b < n / 32; b++) {
            const int one = type == T_Q5_1;
            const uint8_t *p = row + (one ? 24 : 22) * b, *q = p + (one ? 8 : 6);
            const uint32_t qh = pk_rd32(p + (one ? 4 : 2));
            s[b] = pk_half_bits(pk_rd16(p));
            if (one) m[b] = pk_half_bits(pk_rd16(p + 2));
            for (int j = 0; j < 16; j++) {
                u[32 * b + j] = (uint8_t)((q[j] & 15) | (((qh >> j) & 1) << 4));
                u[32 * b + j + 16] = (uint8_t)((q[j] >> 4) | (((qh >> (j + 16)) & 1) << 4));
            }
        }
        return;
    case T_Q4_K:
    case T_Q5_K: {
        const int five = type == T_Q5_K;
        for (int64_t b = 0; b < n / 256; b++) {
            const uint8_t *p = row + (five ? 176 : 144) * b, *qh = p + 16, *qs = p + (five ? 48 : 16);
            const float d = pk_half_bits(pk_rd16(p)), dmin = pk_half_bits(pk_rd16(p + 2));
            for (int j = 0; j < 8; j++) {
                uint8_t a, mm;
                pk_k_scale_min(j, p + 4, &a, &mm);
                s[8 * b + j] = d * (float)a;
                m[8 * b + j] = -(dmin * (float)mm);
                const uint8_t *q = qs + 32 * (j / 2);
                const int sh = (j & 1) * 4;
                uint8_t *o = u + 256 * b + 32 * j;
                if (five) {
                    for (int l = 0; l < 32; l++) o[l] = (uint8_t)(((q[l] >> sh) & 15) | (((qh[l] >> j) & 1) << 4));
                } else {
                    for (int l = 0; l < 32; l++) o[l] = (q[l] >> sh) & 15;
                }
            }
        }
        return;
    }
    case T_Q6_K:
        for (int64_t b = 0; b < n / 256; b++) {
            const uint8_t *p = row + 210 * b;
            const int8_t *sc = (const int8_t *)(p + 192);
            const float d = pk_half_bits(pk_rd16(p + 208));
            for (int i = 0; i < 16; i++) s[16 * b + i] = d * (float)sc[i];
            for (int h = 0; h < 2; h++) {
                for (int k = 0; k < 4; k++) {
                    const uint8_t *lq = p + 64 * h + 32 * (k & 1), *hq = p + 128 + 32 * h;
                    const int sh = k >= 2 ? 4 : 0;
                    uint8_t *o = u + 256 * b + 128 * h + 32 * k;
                    for (int l = 0; l < 32; l++) o[l] = (uint8_t)(((lq[l] >> sh) & 15) | (((hq[l] >> (2 * k)) & 3) << 4));
                }
            }
        }
        return;
    default:
        return;
    }
}

/// Rows r .. r + nr − 1 (nr <= 16) into one panel; lanes nr..15 get zero quants, scales and mins.
static void qg_pack(int type, const uint8_t *w, size_t rb, int64_t r, int64_t nr, int64_t n, uint8_t *pan,
                    uint8_t *tu, float *ts, float *tm) {
    int cs, off, mins;
    qg_params(type, &cs, &off, &mins);
    const int64_t nch = n / cs, cb = qg_chunk_bytes(cs, mins);
    if (nr < 16) memset(pan, 0, (size_t)(nch * cb));
    for (int64_t l = 0; l < nr; l++) {
        qg_unpack_row(type, w + (size_t)(r + l) * rb, n, tu, ts, tm);
        for (int64_t ch = 0; ch < nch; ch++) {
            uint8_t *pc = pan + ch * cb;
            const uint8_t *uc = tu + ch * cs;
            for (int k = 0; k < cs / 4; k++) memcpy(pc + 64 * k + 4 * l, uc + 4 * k, 4);
            memcpy(pc + 16 * cs + 4 * l, ts + ch, 4);
            if (mins) memcpy(pc + 16 * cs + 64 + 4 * l, tm + ch, 4);
        }
    }
}

/// The scalar path over one panel: the operations of the vector paths, one lane at a time.
static void qg_panel_scalar(int cs, int mins, const uint8_t *pan, int64_t nr, int64_t n, int64_t rows,
                            const int8_t *xq, const float *xd, const int32_t *xo, const float *xm,
                            float *out, int64_t ldo, float beta) {
    const int64_t nch = n / cs, cb = qg_chunk_bytes(cs, mins), g = n / 32;
    for (int64_t c = 0; c < rows; c++) {
        for (int64_t l = 0; l < nr; l++) {
            float acc = 0;
            for (int64_t ch = 0; ch < nch; ch++) {
                const uint8_t *pc = pan + ch * cb;
                const int8_t *x = xq + c * n + ch * cs;
                int32_t isum = xo[c * nch + ch];
                for (int k = 0; k < cs / 4; k++)
                    for (int j = 0; j < 4; j++) isum += (int32_t)pc[64 * k + 4 * l + j] * x[4 * k + j];
                float sc, mn;
                memcpy(&sc, pc + 16 * cs + 4 * l, 4);
                const float t = (float)isum * xd[c * g + ch * cs / 32];
                acc = fmaf(t, sc, acc);
                if (mins) {
                    memcpy(&mn, pc + 16 * cs + 64 + 4 * l, 4);
                    acc = fmaf(mn, xm[c * nch + ch], acc);
                }
            }
            float *o = out + c * ldo + l;
            *o = beta == 0 ? acc : beta * *o + acc;
        }
    }
}

#if QG_X86
// ---- AVX-512 VNNI ---------------------------------------------------------------------------------------
#pragma clang attribute push(__attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni"))), apply_to = function)

/// RV panels (1..3, `pb` bytes apart) × C activation rows (1..6): every chunk of the panels against the rows.
QG_ALWAYS void qg_tile512(const int CS, const int MINS, const int RV, const int C, const uint8_t *pan, int64_t pb,
                          int64_t n, const int8_t *xq, const float *xd, const int32_t *xo, const float *xm,
                          float *out, int64_t ldo, float beta, const __mmask16 *mks) {
    const int64_t nch = n / CS, cb = qg_chunk_bytes(CS, MINS), g = n / 32;
    __m512 fa[3][6];
    _Pragma("clang loop unroll(full)") for (int p = 0; p < RV; p++)
        _Pragma("clang loop unroll(full)") for (int c = 0; c < C; c++) fa[p][c] = _mm512_setzero_ps();
    for (int64_t ch = 0; ch < nch; ch++) {
        const uint8_t *pc = pan + ch * cb;
        const int8_t *xc = xq + ch * CS;
        __m512i ia[3][6];
        _Pragma("clang loop unroll(full)") for (int c = 0; c < C; c++) {
            const __m512i i0 = _mm512_set1_epi32(xo[c * nch + ch]);
            _Pragma("clang loop unroll(full)") for (int p = 0; p < RV; p++) ia[p][c] = i0;
        }
        _Pragma("clang loop unroll(full)") for (int k = 0; k < CS / 4; k++) {
            __m512i W[3];
            _Pragma("clang loop unroll(full)") for (int p = 0; p < RV; p++)
                W[p] = _mm512_loadu_si512((const void *)(pc + p * pb + 64 * k));
            _Pragma("clang loop unroll(full)") for (int c = 0; c < C; c++) {
                int32_t v;
                memcpy(&v, xc + c * n + 4 * k, 4);
                const __m512i xb = _mm512_set1_epi32(v);
                _Pragma("clang loop unroll(full)") for (int p = 0; p < RV; p++)
                    ia[p][c] = _mm512_dpbusd_epi32(ia[p][c], W[p], xb);
            }
        }
        _Pragma("clang loop unroll(full)") for (int p = 0; p < RV; p++) {
            const __m512 S = _mm512_loadu_ps((const float *)(pc + p * pb + 16 * CS));
            _Pragma("clang loop unroll(full)") for (int c = 0; c < C; c++) {
                const __m512 t = _mm512_mul_ps(_mm512_cvtepi32_ps(ia[p][c]), _mm512_set1_ps(xd[c * g + ch * CS / 32]));
                fa[p][c] = _mm512_fmadd_ps(t, S, fa[p][c]);
            }
            if (MINS) {
                const __m512 M = _mm512_loadu_ps((const float *)(pc + p * pb + 16 * CS + 64));
                _Pragma("clang loop unroll(full)") for (int c = 0; c < C; c++)
                    fa[p][c] = _mm512_fmadd_ps(M, _mm512_set1_ps(xm[c * nch + ch]), fa[p][c]);
            }
        }
    }
    _Pragma("clang loop unroll(full)") for (int c = 0; c < C; c++)
        _Pragma("clang loop unroll(full)") for (int p = 0; p < RV; p++) {
            float *o = out + c * ldo + 16 * p;
            const __mmask16 mk = mks[p];
            __m512 v = fa[p][c];
            if (beta != 0) v = _mm512_add_ps(_mm512_mul_ps(_mm512_set1_ps(beta), _mm512_maskz_loadu_ps(mk, o)), v);
            _mm512_mask_storeu_ps(o, mk, v);
        }
}

// Activation rows per AVX-512 tile (at most 6: the accumulator arrays); see the top of the file.
#ifndef QG_C512
#define QG_C512 4
#endif
#define QG_C6(CALL) switch (cc) { case 1: CALL(1); break; case 2: CALL(2); break; case 3: CALL(3); break; \
                                  case 4: CALL(4); break; case 5: CALL(5); break; default: CALL(QG_C512); break; }

QG_ALWAYS void qg_sweep512(const int CS, const int MINS, const int RV, const uint8_t *pan, int64_t pb, int64_t n,
                           int64_t rows, const int8_t *xq, const float *xd, const int32_t *xo, const float *xm,
                           float *out, int64_t ldo, float beta, const __mmask16 *mks) {
    const int64_t nch = n / CS, g = n / 32;
    for (int64_t c0 = 0; c0 < rows; c0 += QG_C512) {
        const int64_t cc = rows - c0 < QG_C512 ? rows - c0 : QG_C512;
#define QG_T(C) qg_tile512(CS, MINS, RV, C, pan, pb, n, xq + c0 * n, xd + c0 * g, xo + c0 * nch, xm + c0 * nch, \
                           out + c0 * ldo, ldo, beta, mks)
        QG_C6(QG_T)
#undef QG_T
    }
}

// Panels per AVX-512 tile (2 or 3); see the top of the file.
#ifndef QG_RV512
#define QG_RV512 3
#endif
static void qg_run512(int cs, int mins, const uint8_t *pan, int64_t pb, int np, int64_t n, int64_t rows,
                      const int8_t *xq, const float *xd, const int32_t *xo, const float *xm, float *out, int64_t ldo,
                      float beta, const __mmask16 *mks) {
#define QG_S(CS, MINS, RV) qg_sweep512(CS, MINS, RV, pan, pb, n, rows, xq, xd, xo, xm, out, ldo, beta, mks)
#define QG_NP(CS, MINS) do { if (np == 1) QG_S(CS, MINS, 1); else if (np == 2 || QG_RV512 == 2) QG_S(CS, MINS, 2); \
                             else QG_S(CS, MINS, QG_RV512); } while (0)
    if (cs == 16) QG_NP(16, 0);
    else if (mins) QG_NP(32, 1);
    else QG_NP(32, 0);
#undef QG_NP
#undef QG_S
}
#pragma clang attribute pop

// ---- AVX2 -----------------------------------------------------------------------------------------------
#pragma clang attribute push(__attribute__((target("avx2,fma,f16c"))), apply_to = function)

/// One panel (two 8-row halves) × C activation rows (1..4). Q8 (Q8_0): the packed bytes are q + 128; the
/// product is |q| times the activation with q's signs, so the accumulator starts at 0 instead of −128·Σx̂.
QG_ALWAYS void qg_tile256(const int CS, const int MINS, const int Q8, const int C, const uint8_t *pan, int64_t n,
                          const int8_t *xq, const float *xd, const int32_t *xo, const float *xm,
                          float *out, int64_t ldo, float beta, __m256i k0, __m256i k1) {
    const int64_t nch = n / CS, cb = qg_chunk_bytes(CS, MINS), g = n / 32;
    const __m256i ones = _mm256_set1_epi16(1), bias = _mm256_set1_epi8((char)0x80);
    __m256 fa[2][4];
    _Pragma("clang loop unroll(full)") for (int h = 0; h < 2; h++)
        _Pragma("clang loop unroll(full)") for (int c = 0; c < C; c++) fa[h][c] = _mm256_setzero_ps();
    for (int64_t ch = 0; ch < nch; ch++) {
        const uint8_t *pc = pan + ch * cb;
        const int8_t *xc = xq + ch * CS;
        __m256i ia[2][4];
        _Pragma("clang loop unroll(full)") for (int c = 0; c < C; c++) {
            const __m256i i0 = Q8 ? _mm256_setzero_si256() : _mm256_set1_epi32(xo[c * nch + ch]);
            ia[0][c] = i0;
            ia[1][c] = i0;
        }
        _Pragma("clang loop unroll(full)") for (int k = 0; k < CS / 4; k++) {
            __m256i W[2], A[2];
            _Pragma("clang loop unroll(full)") for (int h = 0; h < 2; h++) {
                W[h] = _mm256_loadu_si256((const __m256i *)(pc + 64 * k + 32 * h));
                if (Q8) {
                    W[h] = _mm256_xor_si256(W[h], bias);  // q, signed
                    A[h] = _mm256_abs_epi8(W[h]);
                }
            }
            _Pragma("clang loop unroll(full)") for (int c = 0; c < C; c++) {
                int32_t v;
                memcpy(&v, xc + c * n + 4 * k, 4);
                const __m256i xb = _mm256_set1_epi32(v);
                _Pragma("clang loop unroll(full)") for (int h = 0; h < 2; h++) {
                    const __m256i pr = Q8 ? _mm256_maddubs_epi16(A[h], _mm256_sign_epi8(xb, W[h]))
                                          : _mm256_maddubs_epi16(W[h], xb);
                    ia[h][c] = _mm256_add_epi32(ia[h][c], _mm256_madd_epi16(pr, ones));
                }
            }
        }
        _Pragma("clang loop unroll(full)") for (int h = 0; h < 2; h++) {
            const __m256 S = _mm256_loadu_ps((const float *)(pc + 16 * CS + 32 * h));
            _Pragma("clang loop unroll(full)") for (int c = 0; c < C; c++) {
                const __m256 t = _mm256_mul_ps(_mm256_cvtepi32_ps(ia[h][c]), _mm256_set1_ps(xd[c * g + ch * CS / 32]));
                fa[h][c] = _mm256_fmadd_ps(t, S, fa[h][c]);
            }
            if (MINS) {
                const __m256 M = _mm256_loadu_ps((const float *)(pc + 16 * CS + 64 + 32 * h));
                _Pragma("clang loop unroll(full)") for (int c = 0; c < C; c++)
                    fa[h][c] = _mm256_fmadd_ps(M, _mm256_set1_ps(xm[c * nch + ch]), fa[h][c]);
            }
        }
    }
    _Pragma("clang loop unroll(full)") for (int c = 0; c < C; c++)
        _Pragma("clang loop unroll(full)") for (int h = 0; h < 2; h++) {
            float *o = out + c * ldo + 8 * h;
            const __m256i mk = h ? k1 : k0;
            __m256 v = fa[h][c];
            if (beta != 0) v = _mm256_add_ps(_mm256_mul_ps(_mm256_set1_ps(beta), _mm256_maskload_ps(o, mk)), v);
            _mm256_maskstore_ps(o, mk, v);
        }
}

#define QG_C4(CALL) switch (cc) { case 1: CALL(1); break; case 2: CALL(2); break; case 3: CALL(3); break; \
                                  default: CALL(4); break; }

QG_ALWAYS void qg_sweep256(const int CS, const int MINS, const int Q8, const uint8_t *pan, int64_t n, int64_t rows,
                           const int8_t *xq, const float *xd, const int32_t *xo, const float *xm, float *out,
                           int64_t ldo, float beta, __m256i k0, __m256i k1) {
    const int64_t nch = n / CS, g = n / 32;
    for (int64_t c0 = 0; c0 < rows; c0 += 4) {
        const int64_t cc = rows - c0 < 4 ? rows - c0 : 4;
#define QG_T(C) qg_tile256(CS, MINS, Q8, C, pan, n, xq + c0 * n, xd + c0 * g, xo + c0 * nch, xm + c0 * nch, \
                           out + c0 * ldo, ldo, beta, k0, k1)
        QG_C4(QG_T)
#undef QG_T
    }
}

static void qg_run256(int type, int cs, int mins, const uint8_t *pan, int64_t n, int64_t rows, const int8_t *xq,
                      const float *xd, const int32_t *xo, const float *xm, float *out, int64_t ldo, float beta,
                      int64_t nr) {
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    const __m256i k0 = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)nr), lane);
    const __m256i k1 = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)nr - 8), lane);
#define QG_S(CS, MINS, Q8) qg_sweep256(CS, MINS, Q8, pan, n, rows, xq, xd, xo, xm, out, ldo, beta, k0, k1)
    if (type == T_Q8_0) QG_S(32, 0, 1);
    else if (cs == 16) QG_S(16, 0, 0);
    else if (mins) QG_S(32, 1, 0);
    else QG_S(32, 0, 0);
#undef QG_S
}
#pragma clang attribute pop
#endif

void pk_qgemm_rows(int isa, int type, const void *w, size_t row_bytes, int64_t r0, int64_t r1, int64_t n,
                   int64_t rows, const int8_t *xq, const float *xd, const int32_t *xo, const float *xm,
                   float *out, int64_t ldo, float beta, void *scratch) {
    int cs, off, mins;
    if (!qg_params(type, &cs, &off, &mins) || r1 <= r0 || rows <= 0 || n % qg_block_elems(type) != 0) return;
    const int best = pk_isa_detect();
    if (isa > best || isa < 0) isa = best;
    const int64_t nch = n / cs, pb = nch * qg_chunk_bytes(cs, mins);
    uint8_t *pan = (uint8_t *)(((uintptr_t)scratch + 63) & ~(uintptr_t)63);
    uint8_t *tu = pan + 3 * pb;
    float *ts = (float *)(((uintptr_t)(tu + n) + 3) & ~(uintptr_t)3), *tm = ts + nch;
    const uint8_t *wb = (const uint8_t *)w;
    const int64_t step = isa == PK_ISA_AVX512 ? 16 * QG_RV512 : 16;
    for (int64_t r = r0; r < r1; r += step) {
        const int64_t nr = r1 - r < step ? r1 - r : step;
        const int np = (int)((nr + 15) / 16);
        for (int p = 0; p < np; p++)
            qg_pack(type, wb, row_bytes, r + 16 * p, nr - 16 * p < 16 ? nr - 16 * p : 16, n, pan + p * pb, tu, ts, tm);
        switch (isa) {
#if QG_X86
        case PK_ISA_AVX512: {
            __mmask16 mks[3];
            for (int p = 0; p < 3; p++) {
                const int64_t left = nr - 16 * p;
                mks[p] = left >= 16 ? 0xffff : left <= 0 ? 0 : (__mmask16)((1u << left) - 1);
            }
            qg_run512(cs, mins, pan, pb, np, n, rows, xq, xd, xo, xm, out + r, ldo, beta, mks);
            break;
        }
        case PK_ISA_AVX2:
            qg_run256(type, cs, mins, pan, n, rows, xq, xd, xo, xm, out + r, ldo, beta, nr);
            break;
#endif
        default:
            qg_panel_scalar(cs, mins, pan, nr, n, rows, xq, xd, xo, xm, out + r, ldo, beta);
            break;
        }
    }
}
