// k-quants (ggml's Q4_K, Q5_K, Q6_K weights and Q8_K activations, super-blocks
// of 256): the Q8_K reference quantizer, the dequantizers, the scalar dot
// products and their run-time dispatch. The SIMD kernels are in
// kquant_avx2.c / kquant_avx512.c (one body, kquant_simd.h).
#include "weft_quant.h"
#include "weft_kernels.h"
#include "kquant_internal.h"
#include "quant_tiles.h"

#include <math.h>
#include <string.h>

// As ggml's references: every product and sum rounded separately.
#pragma STDC FP_CONTRACT OFF

_Static_assert(sizeof(weft_block_q4_K) == 144, "block_q4_K is 144 bytes");
_Static_assert(sizeof(weft_block_q5_K) == 176, "block_q5_K is 176 bytes");
_Static_assert(sizeof(weft_block_q6_K) == 210, "block_q6_K is 210 bytes");
_Static_assert(sizeof(weft_block_q8_K) == 292, "block_q8_K is 292 bytes");

// ggml's nearest_int: round to nearest even through the float mantissa
// (|fval| <= 2^22; the quantizer's values are within +-127.5).
static inline int nearest_int(float fval) {
    float val = fval + 12582912.f;
    int i;
    memcpy(&i, &val, sizeof(int));
    return (i & 0x007fffff) - 0x00400000;
}

// ggml's quantize_row_q8_K_ref, except that an all-zero block also gets zero
// bsums (ggml leaves them unset; they multiply d = 0 there).
void weft_quantize_row_q8_K_scalar(const float *x, weft_block_q8_K *y, int64_t k) {
    const int64_t nb = k / WEFT_QK_K;
    for (int64_t i = 0; i < nb; i++, x += WEFT_QK_K) {
        float max = 0, amax = 0;
        for (int j = 0; j < WEFT_QK_K; ++j) {
            const float ax = fabsf(x[j]);
            if (ax > amax) {
                amax = ax;
                max = x[j];
            }
        }
        if (!amax) {
            y[i].d = 0;
            memset(y[i].qs, 0, sizeof y[i].qs);
            memset(y[i].bsums, 0, sizeof y[i].bsums);
            continue;
        }
        const float iscale = -127.f / max;
        for (int j = 0; j < WEFT_QK_K; ++j) {
            const int v = nearest_int(iscale * x[j]);
            y[i].qs[j] = (int8_t)(v < 127 ? v : 127);
        }
        for (int j = 0; j < WEFT_QK_K / 16; ++j) {
            int sum = 0;
            for (int ii = 0; ii < 16; ++ii) sum += y[i].qs[j * 16 + ii];
            y[i].bsums[j] = (int16_t)sum;
        }
        y[i].d = 1 / iscale;
    }
}

// ----------------------------------------------------------- dequantizers
void weft_dequantize_row_q4_K(const weft_block_q4_K *x, float *y, int64_t k) {
    for (int64_t i = 0; i < k / WEFT_QK_K; i++) {
        const uint8_t *q = x[i].qs;
        const float d = weft_fp16_to_fp32(x[i].d), min = weft_fp16_to_fp32(x[i].dmin);
        uint8_t sc[8], m[8];
        weft_kq_scales_mins(x[i].scales, sc, m);
        for (int j = 0; j < 4; j++, q += 32) {
            const float d1 = d * sc[2 * j], m1 = min * m[2 * j];
            const float d2 = d * sc[2 * j + 1], m2 = min * m[2 * j + 1];
            for (int l = 0; l < 32; ++l) *y++ = d1 * (q[l] & 0xF) - m1;
            for (int l = 0; l < 32; ++l) *y++ = d2 * (q[l] >> 4) - m2;
        }
    }
}

void weft_dequantize_row_q5_K(const weft_block_q5_K *x, float *y, int64_t k) {
    for (int64_t i = 0; i < k / WEFT_QK_K; i++) {
        const uint8_t *ql = x[i].qs, *qh = x[i].qh;
        const float d = weft_fp16_to_fp32(x[i].d), min = weft_fp16_to_fp32(x[i].dmin);
        uint8_t sc[8], m[8];
        weft_kq_scales_mins(x[i].scales, sc, m);
        uint8_t u1 = 1, u2 = 2;
        for (int j = 0; j < 4; j++, ql += 32, u1 <<= 2, u2 <<= 2) {
            const float d1 = d * sc[2 * j], m1 = min * m[2 * j];
            const float d2 = d * sc[2 * j + 1], m2 = min * m[2 * j + 1];
            for (int l = 0; l < 32; ++l) *y++ = d1 * ((ql[l] & 0xF) + (qh[l] & u1 ? 16 : 0)) - m1;
            for (int l = 0; l < 32; ++l) *y++ = d2 * ((ql[l] >> 4) + (qh[l] & u2 ? 16 : 0)) - m2;
        }
    }
}

void weft_dequantize_row_q6_K(const weft_block_q6_K *x, float *y, int64_t k) {
    for (int64_t i = 0; i < k / WEFT_QK_K; i++) {
        const float d = weft_fp16_to_fp32(x[i].d);
        const uint8_t *ql = x[i].ql, *qh = x[i].qh;
        const int8_t *sc = x[i].scales;
        for (int n = 0; n < WEFT_QK_K; n += 128, y += 128, ql += 64, qh += 32, sc += 8) {
            for (int l = 0; l < 32; ++l) {
                const int is = l / 16;
                const int q1 = ((ql[l + 0] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
                const int q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
                const int q3 = ((ql[l + 0] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
                const int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
                y[l + 0] = d * sc[is + 0] * q1;
                y[l + 32] = d * sc[is + 2] * q2;
                y[l + 64] = d * sc[is + 4] * q3;
                y[l + 96] = d * sc[is + 6] * q4;
            }
        }
    }
}

void weft_dequantize_row_q8_K(const weft_block_q8_K *x, float *y, int64_t k) {
    for (int64_t i = 0; i < k / WEFT_QK_K; i++)
        for (int j = 0; j < WEFT_QK_K; j++) *y++ = x[i].d * x[i].qs[j];
}

// ------------------------------------------------------ scalar dot products
// The exact integer sums of one super-block; the float32 step is
// weft_kq_accumulate / weft_kq6_accumulate (kquant_internal.h), shared by
// every path.
float weft_vec_dot_q4_K_q8_K_scalar(int n, const weft_block_q4_K *x, const weft_block_q8_K *y) {
    float sumf = 0;
    for (int i = 0; i < n / WEFT_QK_K; i++) {
        uint8_t sc[8], m[8];
        weft_kq_scales_mins(x[i].scales, sc, m);
        int sumi = 0;
        for (int j = 0; j < 8; j++) {
            const uint8_t *q = x[i].qs + 32 * (j / 2);
            const int8_t *q8 = y[i].qs + 32 * j;
            const int shift = 4 * (j & 1);
            int s = 0;
            for (int l = 0; l < 32; l++) s += ((q[l] >> shift) & 0xF) * q8[l];
            sumi += sc[j] * s;
        }
        sumf = weft_kq_accumulate(sumf, y[i].d, weft_fp16_to_fp32(x[i].d), weft_fp16_to_fp32(x[i].dmin), sumi, weft_kq_mins_sum(m, y[i].bsums));
    }
    return sumf;
}

float weft_vec_dot_q5_K_q8_K_scalar(int n, const weft_block_q5_K *x, const weft_block_q8_K *y) {
    float sumf = 0;
    for (int i = 0; i < n / WEFT_QK_K; i++) {
        uint8_t sc[8], m[8];
        weft_kq_scales_mins(x[i].scales, sc, m);
        int sumi = 0;
        for (int j = 0; j < 8; j++) {
            const uint8_t *q = x[i].qs + 32 * (j / 2);
            const int8_t *q8 = y[i].qs + 32 * j;
            const int shift = 4 * (j & 1);
            int s = 0;
            for (int l = 0; l < 32; l++) {
                const int v = ((q[l] >> shift) & 0xF) | (((x[i].qh[l] >> j) & 1) << 4);
                s += v * q8[l];
            }
            sumi += sc[j] * s;
        }
        sumf = weft_kq_accumulate(sumf, y[i].d, weft_fp16_to_fp32(x[i].d), weft_fp16_to_fp32(x[i].dmin), sumi, weft_kq_mins_sum(m, y[i].bsums));
    }
    return sumf;
}

float weft_vec_dot_q6_K_q8_K_scalar(int n, const weft_block_q6_K *x, const weft_block_q8_K *y) {
    float sumf = 0;
    for (int i = 0; i < n / WEFT_QK_K; i++) {
        int sumi = 0;
        for (int h = 0; h < 2; h++) {
            const uint8_t *ql = x[i].ql + 64 * h, *qh = x[i].qh + 32 * h;
            const int8_t *q8 = y[i].qs + 128 * h;
            const int8_t *sc = x[i].scales + 8 * h;
            for (int g = 0; g < 8; g++) {  // 16 elements each: quarter g / 2, half g & 1
                const int quarter = g / 2, l0 = 16 * (g & 1);
                int s = 0;
                for (int l = l0; l < l0 + 16; l++) {
                    const int lo = quarter & 1 ? ql[l + 32] : ql[l];
                    const int v = (((quarter < 2 ? lo : lo >> 4) & 0xF) | (((qh[l] >> (2 * quarter)) & 3) << 4)) - 32;
                    s += v * q8[32 * quarter + l];
                }
                sumi += sc[2 * quarter + (g & 1)] * s;
            }
        }
        sumf = weft_kq6_accumulate(sumf, y[i].d, weft_fp16_to_fp32(x[i].d), sumi);
    }
    return sumf;
}

// ---------------------------------------------------------------- dispatch
static weft_isa kquant_isa(void) {
    weft_isa isa = weft_isa_current();
    if (isa == WEFT_ISA_AVX2 && !weft_quant_has_avx2()) return WEFT_ISA_SCALAR;
    return isa;
}

#define KDISPATCH(name, args)                                                  \
    switch (kquant_isa()) {                                                    \
    case WEFT_ISA_AVX512: return name##_avx512 args;                           \
    case WEFT_ISA_AVX2: return name##_avx2 args;                               \
    default: return name##_scalar args;                                        \
    }

void weft_quantize_row_q8_K(const float *x, weft_block_q8_K *y, int64_t k) {
    KDISPATCH(weft_quantize_row_q8_K, (x, y, k))
}
float weft_vec_dot_q4_K_q8_K(int n, const weft_block_q4_K *x, const weft_block_q8_K *y) {
    KDISPATCH(weft_vec_dot_q4_K_q8_K, (n, x, y))
}
float weft_vec_dot_q5_K_q8_K(int n, const weft_block_q5_K *x, const weft_block_q8_K *y) {
    KDISPATCH(weft_vec_dot_q5_K_q8_K, (n, x, y))
}
float weft_vec_dot_q6_K_q8_K(int n, const weft_block_q6_K *x, const weft_block_q8_K *y) {
    KDISPATCH(weft_vec_dot_q6_K_q8_K, (n, x, y))
}

// ------------------------------------------------- the driver's scalar tiles
static void q4k_r1c1_scalar(int k, const void *w, size_t bw, const void *a, size_t ba, float *y, size_t ldy) {
    (void)bw; (void)ba; (void)ldy;
    *y = weft_vec_dot_q4_K_q8_K_scalar(k, w, a);
}
static void q5k_r1c1_scalar(int k, const void *w, size_t bw, const void *a, size_t ba, float *y, size_t ldy) {
    (void)bw; (void)ba; (void)ldy;
    *y = weft_vec_dot_q5_K_q8_K_scalar(k, w, a);
}
static void q6k_r1c1_scalar(int k, const void *w, size_t bw, const void *a, size_t ba, float *y, size_t ldy) {
    (void)bw; (void)ba; (void)ldy;
    *y = weft_vec_dot_q6_K_q8_K_scalar(k, w, a);
}
static const weft_qtiles q4k_tiles_scalar = {q4k_r1c1_scalar, NULL, {NULL, NULL, NULL}};
static const weft_qtiles q5k_tiles_scalar = {q5k_r1c1_scalar, NULL, {NULL, NULL, NULL}};
static const weft_qtiles q6k_tiles_scalar = {q6k_r1c1_scalar, NULL, {NULL, NULL, NULL}};

const weft_qtiles *weft_kq_tiles_scalar(int wtype) {
    switch (wtype) {
    case WEFT_QTYPE_Q4_K: return &q4k_tiles_scalar;
    case WEFT_QTYPE_Q5_K: return &q5k_tiles_scalar;
    case WEFT_QTYPE_Q6_K: return &q6k_tiles_scalar;
    default: return NULL;
    }
}
