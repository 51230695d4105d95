// Shared by kernels.c and qgemm.c (the quantized-weight kernels): ggml type ids, unaligned little-endian reads,
// binary16 scales and the packed 6-bit scales of Q4_K/Q5_K. Not a header to include anywhere else.
#ifndef PEFTKIT_QUANT_COMMON_H
#define PEFTKIT_QUANT_COMMON_H

#include <stdint.h>
#include <string.h>

enum {
    T_F32 = 0, T_F16 = 1, T_Q4_0 = 2, T_Q4_1 = 3, T_Q5_0 = 6, T_Q5_1 = 7, T_Q8_0 = 8,
    T_Q4_K = 12, T_Q5_K = 13, T_Q6_K = 14, T_BF16 = 30
};

static inline uint16_t pk_rd16(const uint8_t *p) { uint16_t v; memcpy(&v, p, 2); return v; }
static inline uint32_t pk_rd32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return v; }

/// IEEE binary16 bits to float, exactly (subnormals normalised, NaN payload kept).
static inline float pk_half_bits(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, e = (h >> 10) & 0x1f, m = h & 0x3ff, bits;
    if (e == 0x1f) bits = sign | 0x7f800000u | (m << 13);
    else if (e != 0) bits = sign | ((e + 112) << 23) | (m << 13);
    else if (m == 0) bits = sign;
    else {
        uint32_t ex = 113;
        while (!(m & 0x400)) { m <<= 1; ex--; }
        bits = sign | (ex << 23) | ((m & 0x3ff) << 13);
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

/// The 6-bit scale and min of group j (0..7) of a Q4_K/Q5_K block, from its 12 packed bytes.
static inline void pk_k_scale_min(int j, const uint8_t *q, uint8_t *sc, uint8_t *m) {
    if (j < 4) {
        *sc = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *sc = (uint8_t)((q[j + 4] & 0x0f) | ((q[j - 4] >> 6) << 4));
        *m = (uint8_t)((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
    }
}

#endif
