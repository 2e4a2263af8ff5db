// AVX-512 (F + BW + VL) dot products of the block formats: two blocks per
// 512-bit vector, each block's 32 products summed exactly in integers
// (vpmaddubsw + vpmaddwd, or VNNI's vpdpbusd in the `_avx512vnni` variants)
// into its own 8 int32 lanes, then scaled by that block's scale product (lanes
// 0..7 block i, 8..15 block i+1) with one FMA. An odd last block uses 256-bit
// vectors. Function-level target attributes; `_avx512` runs where
// weft_isa_detect() found AVX-512 and switches to the VNNI kernels when the
// CPU has avx512vnni.
#include "weft_quant.h"

#if defined(__x86_64__)

#include <immintrin.h>

#define QTARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx2,fma,f16c")))
#define QTARGET_VNNI __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")))
#define QINLINE static inline __attribute__((always_inline)) QTARGET
#define QINLINE_VNNI static inline __attribute__((always_inline)) QTARGET_VNNI

QINLINE float fp16_f16c(uint16_t h) { return _cvtsh_ss(h); }

QINLINE __m256i nibbles_256(const uint8_t *p) {
    const __m128i tmp = _mm_loadu_si128((const __m128i *)p);
    return _mm256_and_si256(_mm256_set1_epi8(0x0F), _mm256_set_m128i(_mm_srli_epi16(tmp, 4), tmp));
}

QINLINE __m512i join_256(__m256i lo, __m256i hi) {
    return _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
}

// Lanes 0..7 = a, 8..15 = b.
QINLINE __m512 scales_2(float a, float b) {
    const __m256d lo = _mm256_castps_pd(_mm256_set1_ps(a)), hi = _mm256_castps_pd(_mm256_set1_ps(b));
    return _mm512_castpd_ps(_mm512_insertf64x4(_mm512_castpd256_pd512(lo), hi, 1));
}

// Per-pair sums of unsigned ax times signed sy into 16 int32 lanes.
QINLINE __m512i us8_sums_512(__m512i ax, __m512i sy) {
    return _mm512_madd_epi16(_mm512_maddubs_epi16(ax, sy), _mm512_set1_epi16(1));
}
QINLINE_VNNI __m512i us8_sums_512_vnni(__m512i ax, __m512i sy) {
    return _mm512_dpbusd_epi32(_mm512_setzero_si512(), ax, sy);
}

// |x| and y with x's sign (y where x < 0 is negated; where x == 0 |x| is 0).
QINLINE void abs_sign_512(__m512i x, __m512i y, __m512i *ax, __m512i *sy) {
    *ax = _mm512_abs_epi8(x);
    *sy = _mm512_mask_sub_epi8(y, _mm512_movepi8_mask(x), _mm512_setzero_si512(), y);
}

// 256-bit block (the odd last one), as the AVX2 path.
QINLINE __m256 i8_block_256(__m256i x, __m256i y) {
    const __m256i ax = _mm256_sign_epi8(x, x), sy = _mm256_sign_epi8(y, x);
    return _mm256_cvtepi32_ps(_mm256_madd_epi16(_mm256_maddubs_epi16(ax, sy), _mm256_set1_epi16(1)));
}
QINLINE __m256 u8_block_256(__m256i ax, __m256i sy) {
    return _mm256_cvtepi32_ps(_mm256_madd_epi16(_mm256_maddubs_epi16(ax, sy), _mm256_set1_epi16(1)));
}

QINLINE float hsum_256(__m256 x) {
    __m128 res = _mm_add_ps(_mm256_extractf128_ps(x, 1), _mm256_castps256_ps128(x));
    res = _mm_add_ps(res, _mm_movehl_ps(res, res));
    res = _mm_add_ss(res, _mm_movehdup_ps(res));
    return _mm_cvtss_f32(res);
}

QINLINE __m256i load_256(const void *p) { return _mm256_loadu_si256((const __m256i *)p); }

// One kernel body per format, instantiated with the plain and the VNNI sum.
#define DEFINE_DOTS(SUFFIX, TARGET, SUMS)                                                        \
    TARGET float weft_vec_dot_q8_0_q8_0_##SUFFIX(int n, const weft_block_q8_0 *x,               \
                                                  const weft_block_q8_0 *y) {                   \
        const int nb = n / WEFT_QK;                                                              \
        __m512 acc = _mm512_setzero_ps();                                                        \
        __m256 tail = _mm256_setzero_ps();                                                       \
        int ib = 0;                                                                              \
        for (; ib + 2 <= nb; ib += 2) {                                                          \
            const __m512 d = scales_2(fp16_f16c(x[ib].d) * fp16_f16c(y[ib].d),                   \
                                      fp16_f16c(x[ib + 1].d) * fp16_f16c(y[ib + 1].d));          \
            __m512i ax, sy;                                                                      \
            abs_sign_512(join_256(load_256(x[ib].qs), load_256(x[ib + 1].qs)),                  \
                         join_256(load_256(y[ib].qs), load_256(y[ib + 1].qs)), &ax, &sy);       \
            acc = _mm512_fmadd_ps(d, _mm512_cvtepi32_ps(SUMS(ax, sy)), acc);                     \
        }                                                                                        \
        if (ib < nb) {                                                                           \
            const __m256 d = _mm256_set1_ps(fp16_f16c(x[ib].d) * fp16_f16c(y[ib].d));            \
            tail = _mm256_mul_ps(d, i8_block_256(load_256(x[ib].qs), load_256(y[ib].qs)));      \
        }                                                                                        \
        return _mm512_reduce_add_ps(acc) + hsum_256(tail);                                       \
    }                                                                                            \
                                                                                                 \
    TARGET float weft_vec_dot_q4_0_q8_0_##SUFFIX(int n, const weft_block_q4_0 *x,               \
                                                  const weft_block_q8_0 *y) {                   \
        const int nb = n / WEFT_QK;                                                              \
        __m512 acc = _mm512_setzero_ps();                                                        \
        __m256 tail = _mm256_setzero_ps();                                                       \
        int ib = 0;                                                                              \
        for (; ib + 2 <= nb; ib += 2) {                                                          \
            const __m512 d = scales_2(fp16_f16c(x[ib].d) * fp16_f16c(y[ib].d),                   \
                                      fp16_f16c(x[ib + 1].d) * fp16_f16c(y[ib + 1].d));          \
            const __m512i qx = _mm512_sub_epi8(join_256(nibbles_256(x[ib].qs),                   \
                                                        nibbles_256(x[ib + 1].qs)),              \
                                               _mm512_set1_epi8(8));                             \
            __m512i ax, sy;                                                                      \
            abs_sign_512(qx, join_256(load_256(y[ib].qs), load_256(y[ib + 1].qs)), &ax, &sy);   \
            acc = _mm512_fmadd_ps(d, _mm512_cvtepi32_ps(SUMS(ax, sy)), acc);                     \
        }                                                                                        \
        if (ib < nb) {                                                                           \
            const __m256 d = _mm256_set1_ps(fp16_f16c(x[ib].d) * fp16_f16c(y[ib].d));            \
            const __m256i qx = _mm256_sub_epi8(nibbles_256(x[ib].qs), _mm256_set1_epi8(8));      \
            tail = _mm256_mul_ps(d, i8_block_256(qx, load_256(y[ib].qs)));                       \
        }                                                                                        \
        return _mm512_reduce_add_ps(acc) + hsum_256(tail);                                       \
    }                                                                                            \
                                                                                                 \
    TARGET float weft_vec_dot_q4_1_q8_1_##SUFFIX(int n, const weft_block_q4_1 *x,               \
                                                  const weft_block_q8_1 *y) {                   \
        const int nb = n / WEFT_QK;                                                              \
        __m512 acc = _mm512_setzero_ps();                                                        \
        __m256 tail = _mm256_setzero_ps();                                                       \
        float summs = 0;                                                                         \
        int ib = 0;                                                                              \
        for (; ib + 2 <= nb; ib += 2) {                                                          \
            const __m512 d = scales_2(fp16_f16c(x[ib].d) * fp16_f16c(y[ib].d),                   \
                                      fp16_f16c(x[ib + 1].d) * fp16_f16c(y[ib + 1].d));          \
            summs += fp16_f16c(x[ib].m) * fp16_f16c(y[ib].s);                                    \
            summs += fp16_f16c(x[ib + 1].m) * fp16_f16c(y[ib + 1].s);                            \
            const __m512i qx = join_256(nibbles_256(x[ib].qs), nibbles_256(x[ib + 1].qs));       \
            const __m512i qy = join_256(load_256(y[ib].qs), load_256(y[ib + 1].qs));             \
            acc = _mm512_fmadd_ps(d, _mm512_cvtepi32_ps(SUMS(qx, qy)), acc);                     \
        }                                                                                        \
        if (ib < nb) {                                                                           \
            const __m256 d = _mm256_set1_ps(fp16_f16c(x[ib].d) * fp16_f16c(y[ib].d));            \
            summs += fp16_f16c(x[ib].m) * fp16_f16c(y[ib].s);                                    \
            tail = _mm256_mul_ps(d, u8_block_256(nibbles_256(x[ib].qs), load_256(y[ib].qs)));   \
        }                                                                                        \
        return _mm512_reduce_add_ps(acc) + hsum_256(tail) + summs;                               \
    }

DEFINE_DOTS(avx512_plain, static QTARGET, us8_sums_512)
DEFINE_DOTS(avx512vnni, QTARGET_VNNI, us8_sums_512_vnni)

// -1 unknown, 0 no, 1 yes.
static int vnni_state = -1;

static int use_vnni(void) {
    int s = __atomic_load_n(&vnni_state, __ATOMIC_RELAXED);
    if (s < 0) {
        s = weft_quant_has_avx512vnni();
        __atomic_store_n(&vnni_state, s, __ATOMIC_RELAXED);
    }
    return s;
}

float weft_vec_dot_q8_0_q8_0_avx512(int n, const weft_block_q8_0 *x, const weft_block_q8_0 *y) {
    return use_vnni() ? weft_vec_dot_q8_0_q8_0_avx512vnni(n, x, y)
                      : weft_vec_dot_q8_0_q8_0_avx512_plain(n, x, y);
}
float weft_vec_dot_q4_0_q8_0_avx512(int n, const weft_block_q4_0 *x, const weft_block_q8_0 *y) {
    return use_vnni() ? weft_vec_dot_q4_0_q8_0_avx512vnni(n, x, y)
                      : weft_vec_dot_q4_0_q8_0_avx512_plain(n, x, y);
}
float weft_vec_dot_q4_1_q8_1_avx512(int n, const weft_block_q4_1 *x, const weft_block_q8_1 *y) {
    return use_vnni() ? weft_vec_dot_q4_1_q8_1_avx512vnni(n, x, y)
                      : weft_vec_dot_q4_1_q8_1_avx512_plain(n, x, y);
}

#else  // not x86-64: the scalar references

float weft_vec_dot_q8_0_q8_0_avx512(int n, const weft_block_q8_0 *x, const weft_block_q8_0 *y) {
    return weft_vec_dot_q8_0_q8_0_scalar(n, x, y);
}
float weft_vec_dot_q4_0_q8_0_avx512(int n, const weft_block_q4_0 *x, const weft_block_q8_0 *y) {
    return weft_vec_dot_q4_0_q8_0_scalar(n, x, y);
}
float weft_vec_dot_q4_1_q8_1_avx512(int n, const weft_block_q4_1 *x, const weft_block_q8_1 *y) {
    return weft_vec_dot_q4_1_q8_1_scalar(n, x, y);
}
float weft_vec_dot_q8_0_q8_0_avx512vnni(int n, const weft_block_q8_0 *x, const weft_block_q8_0 *y) {
    return weft_vec_dot_q8_0_q8_0_scalar(n, x, y);
}
float weft_vec_dot_q4_0_q8_0_avx512vnni(int n, const weft_block_q4_0 *x, const weft_block_q8_0 *y) {
    return weft_vec_dot_q4_0_q8_0_scalar(n, x, y);
}
float weft_vec_dot_q4_1_q8_1_avx512vnni(int n, const weft_block_q4_1 *x, const weft_block_q8_1 *y) {
    return weft_vec_dot_q4_1_q8_1_scalar(n, x, y);
}

#endif
