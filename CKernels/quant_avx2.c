// AVX2 + FMA + F16C dot products of the block formats, ggml's pattern: the
// 32 products of a block are summed exactly in integers (vpmaddubsw on
// |x| and sign(y, x), then vpmaddwd with ones), converted to float and
// multiplied by the block's scale product with one FMA per block into 8-lane
// accumulators. Function-level target attributes; runs only where
// weft_quant_has_avx2().
#include "weft_quant.h"

#if defined(__x86_64__)

#include <immintrin.h>

#define QTARGET __attribute__((target("avx2,fma,f16c")))
#define QINLINE static inline __attribute__((always_inline)) QTARGET

QINLINE float fp16_f16c(uint16_t h) { return _cvtsh_ss(h); }

// 32 nibbles -> 32 bytes: low nibbles in the lower 128 bits (elements 0..15),
// high nibbles in the upper (16..31).
QINLINE __m256i bytes_from_nibbles_32(const uint8_t *p) {
    const __m128i tmp = _mm_loadu_si128((const __m128i *)p);
    const __m256i bytes = _mm256_set_m128i(_mm_srli_epi16(tmp, 4), tmp);
    return _mm256_and_si256(_mm256_set1_epi8(0x0F), bytes);
}

// Unsigned x (0..255) times signed y, pairs summed into 8 int32 lanes.
QINLINE __m256 mul_sum_us8_pairs_float(__m256i ax, __m256i sy) {
    const __m256i dot = _mm256_maddubs_epi16(ax, sy);
    const __m256i summed = _mm256_madd_epi16(_mm256_set1_epi16(1), dot);
    return _mm256_cvtepi32_ps(summed);
}

// Signed x times signed y: |x| times y with x's sign.
QINLINE __m256 mul_sum_i8_pairs_float(__m256i x, __m256i y) {
    const __m256i ax = _mm256_sign_epi8(x, x);
    const __m256i sy = _mm256_sign_epi8(y, x);
    return mul_sum_us8_pairs_float(ax, sy);
}

QINLINE float hsum_float_8(__m256 x) {
    __m128 res = _mm256_extractf128_ps(x, 1);
    res = _mm_add_ps(res, _mm256_castps256_ps128(x));
    res = _mm_add_ps(res, _mm_movehl_ps(res, res));
    res = _mm_add_ss(res, _mm_movehdup_ps(res));
    return _mm_cvtss_f32(res);
}

QTARGET float weft_vec_dot_q8_0_q8_0_avx2(int n, const weft_block_q8_0 *x, const weft_block_q8_0 *y) {
    const int nb = n / WEFT_QK;
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    int ib = 0;
    for (; ib + 2 <= nb; ib += 2) {
        const __m256 d0 = _mm256_set1_ps(fp16_f16c(x[ib].d) * fp16_f16c(y[ib].d));
        const __m256 d1 = _mm256_set1_ps(fp16_f16c(x[ib + 1].d) * fp16_f16c(y[ib + 1].d));
        const __m256i qx0 = _mm256_loadu_si256((const __m256i *)x[ib].qs);
        const __m256i qy0 = _mm256_loadu_si256((const __m256i *)y[ib].qs);
        const __m256i qx1 = _mm256_loadu_si256((const __m256i *)x[ib + 1].qs);
        const __m256i qy1 = _mm256_loadu_si256((const __m256i *)y[ib + 1].qs);
        acc0 = _mm256_fmadd_ps(d0, mul_sum_i8_pairs_float(qx0, qy0), acc0);
        acc1 = _mm256_fmadd_ps(d1, mul_sum_i8_pairs_float(qx1, qy1), acc1);
    }
    for (; ib < nb; ib++) {
        const __m256 d = _mm256_set1_ps(fp16_f16c(x[ib].d) * fp16_f16c(y[ib].d));
        const __m256i qx = _mm256_loadu_si256((const __m256i *)x[ib].qs);
        const __m256i qy = _mm256_loadu_si256((const __m256i *)y[ib].qs);
        acc0 = _mm256_fmadd_ps(d, mul_sum_i8_pairs_float(qx, qy), acc0);
    }
    return hsum_float_8(_mm256_add_ps(acc0, acc1));
}

QTARGET float weft_vec_dot_q4_0_q8_0_avx2(int n, const weft_block_q4_0 *x, const weft_block_q8_0 *y) {
    const int nb = n / WEFT_QK;
    const __m256i off = _mm256_set1_epi8(8);
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    int ib = 0;
    for (; ib + 2 <= nb; ib += 2) {
        const __m256 d0 = _mm256_set1_ps(fp16_f16c(x[ib].d) * fp16_f16c(y[ib].d));
        const __m256 d1 = _mm256_set1_ps(fp16_f16c(x[ib + 1].d) * fp16_f16c(y[ib + 1].d));
        const __m256i qx0 = _mm256_sub_epi8(bytes_from_nibbles_32(x[ib].qs), off);
        const __m256i qx1 = _mm256_sub_epi8(bytes_from_nibbles_32(x[ib + 1].qs), off);
        const __m256i qy0 = _mm256_loadu_si256((const __m256i *)y[ib].qs);
        const __m256i qy1 = _mm256_loadu_si256((const __m256i *)y[ib + 1].qs);
        acc0 = _mm256_fmadd_ps(d0, mul_sum_i8_pairs_float(qx0, qy0), acc0);
        acc1 = _mm256_fmadd_ps(d1, mul_sum_i8_pairs_float(qx1, qy1), acc1);
    }
    for (; ib < nb; ib++) {
        const __m256 d = _mm256_set1_ps(fp16_f16c(x[ib].d) * fp16_f16c(y[ib].d));
        const __m256i qx = _mm256_sub_epi8(bytes_from_nibbles_32(x[ib].qs), off);
        const __m256i qy = _mm256_loadu_si256((const __m256i *)y[ib].qs);
        acc0 = _mm256_fmadd_ps(d, mul_sum_i8_pairs_float(qx, qy), acc0);
    }
    return hsum_float_8(_mm256_add_ps(acc0, acc1));
}

QTARGET float weft_vec_dot_q4_1_q8_1_avx2(int n, const weft_block_q4_1 *x, const weft_block_q8_1 *y) {
    const int nb = n / WEFT_QK;
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    float summs = 0;
    int ib = 0;
    for (; ib + 2 <= nb; ib += 2) {
        const __m256 d0 = _mm256_set1_ps(fp16_f16c(x[ib].d) * fp16_f16c(y[ib].d));
        const __m256 d1 = _mm256_set1_ps(fp16_f16c(x[ib + 1].d) * fp16_f16c(y[ib + 1].d));
        summs += fp16_f16c(x[ib].m) * fp16_f16c(y[ib].s);
        summs += fp16_f16c(x[ib + 1].m) * fp16_f16c(y[ib + 1].s);
        const __m256i qx0 = bytes_from_nibbles_32(x[ib].qs);
        const __m256i qx1 = bytes_from_nibbles_32(x[ib + 1].qs);
        const __m256i qy0 = _mm256_loadu_si256((const __m256i *)y[ib].qs);
        const __m256i qy1 = _mm256_loadu_si256((const __m256i *)y[ib + 1].qs);
        acc0 = _mm256_fmadd_ps(d0, mul_sum_us8_pairs_float(qx0, qy0), acc0);
        acc1 = _mm256_fmadd_ps(d1, mul_sum_us8_pairs_float(qx1, qy1), acc1);
    }
    for (; ib < nb; ib++) {
        const __m256 d = _mm256_set1_ps(fp16_f16c(x[ib].d) * fp16_f16c(y[ib].d));
        summs += fp16_f16c(x[ib].m) * fp16_f16c(y[ib].s);
        const __m256i qx = bytes_from_nibbles_32(x[ib].qs);
        const __m256i qy = _mm256_loadu_si256((const __m256i *)y[ib].qs);
        acc0 = _mm256_fmadd_ps(d, mul_sum_us8_pairs_float(qx, qy), acc0);
    }
    return hsum_float_8(_mm256_add_ps(acc0, acc1)) + summs;
}

#else  // not x86-64: the scalar references

float weft_vec_dot_q8_0_q8_0_avx2(int n, const weft_block_q8_0 *x, const weft_block_q8_0 *y) {
    return weft_vec_dot_q8_0_q8_0_scalar(n, x, y);
}
float weft_vec_dot_q4_0_q8_0_avx2(int n, const weft_block_q4_0 *x, const weft_block_q8_0 *y) {
    return weft_vec_dot_q4_0_q8_0_scalar(n, x, y);
}
float weft_vec_dot_q4_1_q8_1_avx2(int n, const weft_block_q4_1 *x, const weft_block_q8_1 *y) {
    return weft_vec_dot_q4_1_q8_1_scalar(n, x, y);
}

#endif
