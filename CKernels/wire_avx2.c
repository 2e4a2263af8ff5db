// The q8_0 wire format's AVX2 + F16C path: the same bytes and floats as the
// scalar reference in wire.c (see weft_wire.h).
#include "weft_wire.h"
#include "weft_quant.h"

#include <string.h>

#if defined(__x86_64__)

#include <immintrin.h>

#define WTARGET __attribute__((target("avx2,fma,f16c")))
#define WINLINE static inline __attribute__((always_inline)) WTARGET

// One full block of 32: max|x| over all lanes, non-finite detection on the bit
// patterns, the reference's products x * id, then roundf (half away from zero)
// as trunc + (|frac| >= 0.5 ? sign : 0), exact for |t| <= 127.
WINLINE void encode_block(const float *x, unsigned char *out) {
    const __m256 sign = _mm256_set1_ps(-0.0f), half = _mm256_set1_ps(0.5f), one = _mm256_set1_ps(1.0f);
    __m256 v[4];
    __m256 vmax = _mm256_setzero_ps();
    __m256i bad = _mm256_setzero_si256();
    const __m256i maxfinite = _mm256_set1_epi32(0x7f7fffff);
    for (int t = 0; t < 4; t++) {
        v[t] = _mm256_loadu_ps(x + 8 * t);
        const __m256 a = _mm256_andnot_ps(sign, v[t]);
        bad = _mm256_or_si256(bad, _mm256_cmpgt_epi32(_mm256_castps_si256(a), maxfinite));
        vmax = _mm256_max_ps(a, vmax);
    }
    if (!_mm256_testz_si256(bad, bad)) {
        const uint16_t nan = 0x7e00u;
        memcpy(out, &nan, 2);
        memset(out + 2, 0, WEFT_WIRE_Q8_0_BLOCK);
        return;
    }
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(vmax), _mm256_extractf128_ps(vmax, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_movehdup_ps(m));
    const float d = _mm_cvtss_f32(m) / ((1 << 7) - 1);
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    const __m256 vid = _mm256_set1_ps(id), lo = _mm256_set1_ps(-127.0f), hi = _mm256_set1_ps(127.0f);
    __m256i q[4];
    for (int t = 0; t < 4; t++) {
        __m256 p = _mm256_mul_ps(v[t], vid);
        p = _mm256_and_ps(p, _mm256_cmp_ps(p, p, _CMP_ORD_Q));      // NaN -> 0
        p = _mm256_min_ps(_mm256_max_ps(p, lo), hi);
        const __m256 tr = _mm256_round_ps(p, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
        const __m256 frac = _mm256_andnot_ps(sign, _mm256_sub_ps(p, tr));
        const __m256 step = _mm256_and_ps(_mm256_cmp_ps(frac, half, _CMP_GE_OQ), _mm256_or_ps(_mm256_and_ps(p, sign), one));
        q[t] = _mm256_cvttps_epi32(_mm256_add_ps(tr, step));
    }
    // int32 -> int16 -> int8 with signed saturation (values are in [-127, 127]);
    // the packs interleave 128-bit lanes, the permute puts them back in order.
    const __m256i packed = _mm256_packs_epi16(_mm256_packs_epi32(q[0], q[1]), _mm256_packs_epi32(q[2], q[3]));
    const __m256i ordered = _mm256_permutevar8x32_epi32(packed, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
    const uint16_t dh = _cvtss_sh(d, _MM_FROUND_TO_NEAREST_INT);
    memcpy(out, &dh, 2);
    _mm256_storeu_si256((__m256i *)(out + 2), ordered);
}

WINLINE void decode_block(const unsigned char *in, float *y) {
    uint16_t dh;
    memcpy(&dh, in, 2);
    const __m256 d = _mm256_set1_ps(weft_fp16_to_fp32(dh));
    const __m256i qs = _mm256_loadu_si256((const __m256i *)(in + 2));
    const __m128i q0 = _mm256_castsi256_si128(qs), q1 = _mm256_extracti128_si256(qs, 1);
    _mm256_storeu_ps(y, _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q0)), d));
    _mm256_storeu_ps(y + 8, _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(q0, 8))), d));
    _mm256_storeu_ps(y + 16, _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q1)), d));
    _mm256_storeu_ps(y + 24, _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(q1, 8))), d));
}

WTARGET void weft_wire_q8_0_encode_avx2(const float *src, void *dst, size_t rows, size_t dim) {
    unsigned char *out = dst;
    const size_t full = dim / WEFT_WIRE_Q8_0_BLOCK, tail = dim % WEFT_WIRE_Q8_0_BLOCK;
    for (size_t r = 0; r < rows; r++) {
        const float *x = src + r * dim;
        for (size_t b = 0; b < full; b++, out += WEFT_WIRE_Q8_0_BLOCK_BYTES) encode_block(x + b * WEFT_WIRE_Q8_0_BLOCK, out);
        if (tail) {
            float padded[WEFT_WIRE_Q8_0_BLOCK] = {0};
            memcpy(padded, x + full * WEFT_WIRE_Q8_0_BLOCK, tail * sizeof(float));
            encode_block(padded, out);
            out += WEFT_WIRE_Q8_0_BLOCK_BYTES;
        }
    }
}

WTARGET void weft_wire_q8_0_decode_avx2(const void *src, float *dst, size_t rows, size_t dim) {
    const unsigned char *in = src;
    const size_t full = dim / WEFT_WIRE_Q8_0_BLOCK, tail = dim % WEFT_WIRE_Q8_0_BLOCK;
    for (size_t r = 0; r < rows; r++) {
        float *y = dst + r * dim;
        for (size_t b = 0; b < full; b++, in += WEFT_WIRE_Q8_0_BLOCK_BYTES) decode_block(in, y + b * WEFT_WIRE_Q8_0_BLOCK);
        if (tail) {
            float block[WEFT_WIRE_Q8_0_BLOCK];
            decode_block(in, block);
            memcpy(y + full * WEFT_WIRE_Q8_0_BLOCK, block, tail * sizeof(float));
            in += WEFT_WIRE_Q8_0_BLOCK_BYTES;
        }
    }
}

#else  // not x86-64: the scalar references

void weft_wire_q8_0_encode_avx2(const float *src, void *dst, size_t rows, size_t dim) {
    weft_wire_q8_0_encode_scalar(src, dst, rows, dim);
}
void weft_wire_q8_0_decode_avx2(const void *src, float *dst, size_t rows, size_t dim) {
    weft_wire_q8_0_decode_scalar(src, dst, rows, dim);
}

#endif
