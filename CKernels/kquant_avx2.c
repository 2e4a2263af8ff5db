// AVX2 + FMA + F16C k-quant kernels (the body is kquant_simd.h) and the SIMD
// Q8_K activation quantizer. Function-level target attributes; runs only
// where weft_quant_has_avx2().
#include "weft_quant.h"
#include "quant_tiles.h"

// The float32 step is written to round each operation (kquant_internal.h).
#pragma STDC FP_CONTRACT OFF

#if defined(__x86_64__)

#define KQ_TARGET __attribute__((target("avx2,fma,f16c")))
#define KQ_SUFFIX avx2
#define KQ_SCALED_ADD(acc, s, p) _mm256_add_epi32((acc), _mm256_madd_epi16((s), (p)))
#include "kquant_simd.h"

float weft_vec_dot_q4_K_q8_K_avx2(int n, const weft_block_q4_K *x, const weft_block_q8_K *y) {
    float s;
    q4k_r1c1_avx2(n, x, 0, y, 0, &s, 1);
    return s;
}
float weft_vec_dot_q5_K_q8_K_avx2(int n, const weft_block_q5_K *x, const weft_block_q8_K *y) {
    float s;
    q5k_r1c1_avx2(n, x, 0, y, 0, &s, 1);
    return s;
}
float weft_vec_dot_q6_K_q8_K_avx2(int n, const weft_block_q6_K *x, const weft_block_q8_K *y) {
    float s;
    q6k_r1c1_avx2(n, x, 0, y, 0, &s, 1);
    return s;
}
void weft_quantize_row_q8_K_avx2(const float *x, weft_block_q8_K *y, int64_t k) {
    kq_quantize_q8_K_avx2(x, y, k);
}

const weft_qtiles *weft_kq_tiles_avx2(int wtype) {
    switch (wtype) {
    case WEFT_QTYPE_Q4_K: return &q4k_tiles_avx2;
    case WEFT_QTYPE_Q5_K: return &q5k_tiles_avx2;
    case WEFT_QTYPE_Q6_K: return &q6k_tiles_avx2;
    default: return NULL;
    }
}

#else  // not x86-64: the scalar references

float weft_vec_dot_q4_K_q8_K_avx2(int n, const weft_block_q4_K *x, const weft_block_q8_K *y) {
    return weft_vec_dot_q4_K_q8_K_scalar(n, x, y);
}
float weft_vec_dot_q5_K_q8_K_avx2(int n, const weft_block_q5_K *x, const weft_block_q8_K *y) {
    return weft_vec_dot_q5_K_q8_K_scalar(n, x, y);
}
float weft_vec_dot_q6_K_q8_K_avx2(int n, const weft_block_q6_K *x, const weft_block_q8_K *y) {
    return weft_vec_dot_q6_K_q8_K_scalar(n, x, y);
}
void weft_quantize_row_q8_K_avx2(const float *x, weft_block_q8_K *y, int64_t k) {
    weft_quantize_row_q8_K_scalar(x, y, k);
}
const weft_qtiles *weft_kq_tiles_avx2(int wtype) { return weft_kq_tiles_scalar(wtype); }

#endif
