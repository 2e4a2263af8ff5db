// Shared by the k-quant kernels (kquant.c, kquant_avx2.c, kquant_avx512.c):
// the float32 step of a super-block, identical in every path, so every
// path gives the scalar reference's result bit for bit.
#ifndef WEFT_KQUANT_INTERNAL_H
#define WEFT_KQUANT_INTERNAL_H

#include <stdint.h>

// ggml's get_scale_min_k4 for j = 0..7.
static inline void weft_kq_scales_mins(const uint8_t *q, uint8_t sc[8], uint8_t m[8]) {
    for (int j = 0; j < 4; j++) {
        sc[j] = q[j] & 63;
        m[j] = q[j + 4] & 63;
    }
    for (int j = 4; j < 8; j++) {
        sc[j] = (uint8_t)((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4));
        m[j] = (uint8_t)((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
    }
}

// sum_j m[j] * (bsums[2j] + bsums[2j+1]): exact.
static inline int weft_kq_mins_sum(const uint8_t m[8], const int16_t bsums[16]) {
    int s = 0;
    for (int j = 0; j < 8; j++) s += m[j] * (bsums[2 * j] + bsums[2 * j + 1]);
    return s;
}

// Q4_K / Q5_K: sumf + ((yd * d) * sumi - (yd * dmin) * summ), each operation
// rounded on its own (separate statements: never contracted to an FMA).
static inline float weft_kq_accumulate(float sumf, float yd, float d, float dmin, int sumi, int summ) {
    const float dd = yd * d;
    const float dm = yd * dmin;
    const float a = dd * (float)sumi;
    const float b = dm * (float)summ;
    const float t = a - b;
    return sumf + t;
}

// Q6_K: sumf + (yd * d) * sumi.
static inline float weft_kq6_accumulate(float sumf, float yd, float d, int sumi) {
    const float dd = yd * d;
    const float a = dd * (float)sumi;
    return sumf + a;
}

#endif
