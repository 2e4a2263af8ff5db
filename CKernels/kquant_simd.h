// The k-quant kernels' one body, included by kquant_avx2.c (AVX2 + FMA + F16C)
// and kquant_avx512.c (the same 256-bit code as EVEX, with AVX-512 VNNI's
// vpdpwssd fusing the scale multiply and the add). The includer defines:
//   KQ_TARGET      function attribute (target ISA)
//   KQ_SUFFIX      name suffix (avx2, avx512_plain, avx512vnni)
//   KQ_SCALED_ADD(acc, scale16, p16)  acc + sum of pairs scale16 * p16 (int32)
//
// A tile is NR weight rows x NC activation rows. Per super-block and (row,
// activation) pair the kernel forms the exact integer sums in 8 int32 lanes
// (vpmaddubsw of the unsigned 4/5/6-bit values with the int8 activations,
// then the sub-block scale with vpmaddwd), reduces them to one int and takes
// the float32 step of kquant_internal.h, so every tile shape and every ISA
// gives the scalar reference's bits. Within a tile, a weight row's unpacked
// values serve every activation row and an activation load serves every
// weight row.
#include "kquant_internal.h"
#include "quant_tiles.h"

#include <immintrin.h>
#include <string.h>

// Software prefetch distance on the weight rows (bytes ahead of the super-block
// being read): the 4-row tiles read four streams at once, which the hardware
// prefetchers alone left at about half the memory bandwidth (Q6_K: 5.5 -> 11
// GB/s on one Zen 3 thread with it).
#define KQ_PREFETCH 1024

#define KQ_CAT2(a, b) a##_##b
#define KQ_CAT(a, b) KQ_CAT2(a, b)
#define KQ_NAME(base) KQ_CAT(base, KQ_SUFFIX)
#define KQ_INLINE static inline __attribute__((always_inline)) KQ_TARGET

KQ_INLINE int KQ_NAME(kq_hsum_i32)(__m256i v) {
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4E));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xB1));
    return _mm_cvtsi128_si32(s);
}

KQ_INLINE float KQ_NAME(kq_fp16)(uint16_t h) { return _cvtsh_ss(h); }

// Sum of each of up to four int32 vectors, in lanes 0..3 (exact).
KQ_INLINE __m128i KQ_NAME(kq_hsum4)(const __m256i *v, int count) {
    __m128i f[4];
    for (int p = 0; p < 4; p++)
        f[p] = p < count ? _mm_add_epi32(_mm256_castsi256_si128(v[p]), _mm256_extracti128_si256(v[p], 1))
                         : _mm_setzero_si128();
    return _mm_hadd_epi32(_mm_hadd_epi32(f[0], f[1]), _mm_hadd_epi32(f[2], f[3]));
}

// Q4_K / Q5_K scales and mins as 16-bit lanes (ggml's utmp unpacking):
// *scales = sc[0..7] in both 128-bit halves, *mins = m[0..7].
KQ_INLINE void KQ_NAME(kq_scales_mins16)(const uint8_t *packed, __m256i *scales, __m128i *mins) {
    uint32_t u[4];
    memcpy(u, packed, 12);
    u[3] = ((u[2] >> 4) & 0x0f0f0f0fu) | (((u[1] >> 6) & 0x03030303u) << 4);
    const uint32_t aux = u[1] & 0x3f3f3f3fu;
    u[1] = (u[2] & 0x0f0f0f0fu) | (((u[0] >> 6) & 0x03030303u) << 4);
    u[2] = aux;
    u[0] &= 0x3f3f3f3fu;
    const __m256i ms = _mm256_cvtepu8_epi16(_mm_set_epi32((int)u[3], (int)u[2], (int)u[1], (int)u[0]));
    *scales = _mm256_broadcastsi128_si256(_mm256_castsi256_si128(ms));
    *mins = _mm256_extracti128_si256(ms, 1);
}

// vpshufb patterns broadcasting 16-bit lane j of a 128-bit half (ggml's get_scale_shuffle_k4).
static const uint8_t KQ_NAME(kq_shuffle16)[8][32] __attribute__((aligned(32))) = {
#define KQ_S(j) {2 * j, 2 * j + 1, 2 * j, 2 * j + 1, 2 * j, 2 * j + 1, 2 * j, 2 * j + 1, 2 * j, 2 * j + 1, 2 * j,  \
                 2 * j + 1, 2 * j, 2 * j + 1, 2 * j, 2 * j + 1, 2 * j, 2 * j + 1, 2 * j, 2 * j + 1, 2 * j, 2 * j + 1, \
                 2 * j, 2 * j + 1, 2 * j, 2 * j + 1, 2 * j, 2 * j + 1, 2 * j, 2 * j + 1, 2 * j, 2 * j + 1}
    KQ_S(0), KQ_S(1), KQ_S(2), KQ_S(3), KQ_S(4), KQ_S(5), KQ_S(6), KQ_S(7)
#undef KQ_S
};

// ------------------------------------------------------------- Q4_K / Q5_K
// FIVE = 0: Q4_K (qs at byte 16), 1: Q5_K (qh at 16, qs at 48).
KQ_INLINE void KQ_NAME(q45k_tile)(int nb, const unsigned char *w, size_t bw, const unsigned char *a,
                                  size_t ba, float *out, size_t ldo, const int NR, const int NC, const int FIVE) {
    const __m256i m4 = _mm256_set1_epi8(0x0F), one = _mm256_set1_epi8(1);
    const size_t xb = FIVE ? sizeof(weft_block_q5_K) : sizeof(weft_block_q4_K);
    const int qs_at = FIVE ? 48 : 16;
    float sumf[4][4] = {{0}};
    for (int i = 0; i < nb; i++) {
        const unsigned char *x[4];
        const weft_block_q8_K *y[4];
        __m256i sc[4], hb[4], acc[4][4];
        __m128i mn[4], q8s[4];
        for (int r = 0; r < NR; r++) {
            x[r] = w + (size_t)r * bw + (size_t)i * xb;
            for (size_t o = 0; o < xb; o += 64) _mm_prefetch((const char *)x[r] + KQ_PREFETCH + o, _MM_HINT_T0);
            KQ_NAME(kq_scales_mins16)(x[r] + 4, &sc[r], &mn[r]);
            if (FIVE) hb[r] = _mm256_loadu_si256((const __m256i *)(x[r] + 16));
        }
        for (int c = 0; c < NC; c++) {
            y[c] = (const weft_block_q8_K *)(a + (size_t)c * ba) + i;
            const __m256i bs = _mm256_loadu_si256((const __m256i *)y[c]->bsums);
            q8s[c] = _mm_hadd_epi16(_mm256_castsi256_si128(bs), _mm256_extracti128_si256(bs, 1));  // pair sums
        }
        for (int r = 0; r < NR; r++)
            for (int c = 0; c < NC; c++) acc[r][c] = _mm256_setzero_si256();
        for (int j = 0; j < 4; j++) {
            for (int r = 0; r < NR; r++) {
                const __m256i bits = _mm256_loadu_si256((const __m256i *)(x[r] + qs_at + 32 * j));
                __m256i lo = _mm256_and_si256(bits, m4);
                __m256i hi = _mm256_and_si256(_mm256_srli_epi16(bits, 4), m4);
                if (FIVE) {
                    // hb[r] is qh >> 2j (16-bit lanes): bit 0 of each byte is bit 2j of that
                    // byte of qh, after one more shift bit 2j + 1; moved to bit 4.
                    lo = _mm256_or_si256(lo, _mm256_slli_epi16(_mm256_and_si256(hb[r], one), 4));
                    hi = _mm256_or_si256(hi, _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hb[r], 1), one), 4));
                    hb[r] = _mm256_srli_epi16(hb[r], 2);
                }
                const __m256i s0 = _mm256_shuffle_epi8(sc[r], _mm256_load_si256((const __m256i *)KQ_NAME(kq_shuffle16)[2 * j]));
                const __m256i s1 = _mm256_shuffle_epi8(sc[r], _mm256_load_si256((const __m256i *)KQ_NAME(kq_shuffle16)[2 * j + 1]));
                for (int c = 0; c < NC; c++) {
                    const __m256i q0 = _mm256_loadu_si256((const __m256i *)(y[c]->qs + 64 * j));
                    const __m256i q1 = _mm256_loadu_si256((const __m256i *)(y[c]->qs + 64 * j + 32));
                    acc[r][c] = KQ_SCALED_ADD(acc[r][c], s0, _mm256_maddubs_epi16(lo, q0));
                    acc[r][c] = KQ_SCALED_ADD(acc[r][c], s1, _mm256_maddubs_epi16(hi, q1));
                }
            }
        }
        // The exact sums of up to four (row, activation) pairs at once, then the float
        // step of kquant_internal.h per pair.
        __m256i v[4], mv[4];
        int np = 0;
        for (int r = 0; r < NR; r++)
            for (int c = 0; c < NC; c++, np++) {
                v[np] = acc[r][c];
                mv[np] = _mm256_castsi128_si256(_mm_madd_epi16(mn[r], q8s[c]));
                mv[np] = _mm256_inserti128_si256(mv[np], _mm_setzero_si128(), 1);
            }
        int sumi[4], summ[4];
        _mm_storeu_si128((__m128i *)sumi, KQ_NAME(kq_hsum4)(v, np));
        _mm_storeu_si128((__m128i *)summ, KQ_NAME(kq_hsum4)(mv, np));
        np = 0;
        for (int r = 0; r < NR; r++) {
            uint16_t dh, mh;
            memcpy(&dh, x[r], 2);
            memcpy(&mh, x[r] + 2, 2);
            const float d = KQ_NAME(kq_fp16)(dh), dmin = KQ_NAME(kq_fp16)(mh);
            for (int c = 0; c < NC; c++, np++)
                sumf[r][c] = weft_kq_accumulate(sumf[r][c], y[c]->d, d, dmin, sumi[np], summ[np]);
        }
    }
    for (int r = 0; r < NR; r++)
        for (int c = 0; c < NC; c++) out[(size_t)c * ldo + (size_t)r] = sumf[r][c];
}

KQ_INLINE void KQ_NAME(q4k_tile)(int nb, const unsigned char *w, size_t bw, const unsigned char *a, size_t ba,
                                 float *out, size_t ldo, const int NR, const int NC) {
    KQ_NAME(q45k_tile)(nb, w, bw, a, ba, out, ldo, NR, NC, 0);
}
KQ_INLINE void KQ_NAME(q5k_tile)(int nb, const unsigned char *w, size_t bw, const unsigned char *a, size_t ba,
                                 float *out, size_t ldo, const int NR, const int NC) {
    KQ_NAME(q45k_tile)(nb, w, bw, a, ba, out, ldo, NR, NC, 1);
}

// ------------------------------------------------------------------- Q6_K
// Per half h and quarter t (32 elements, two scale groups of 16), the scale
// vector holds scales[8h + 2t] in its low 128 bits and scales[8h + 2t + 1] in
// its high 128 bits, as 16-bit lanes. The -32 offset is taken out exactly as
// 32 * sum_g scales[g] * bsums[g] (vpmaddwd of the two).
KQ_INLINE void KQ_NAME(q6k_tile)(int nb, const unsigned char *w, size_t bw, const unsigned char *a,
                                 size_t ba, float *out, size_t ldo, const int NR, const int NC) {
    const __m256i m4 = _mm256_set1_epi8(0x0F);
    const __m256i m3 = _mm256_set1_epi8(0x03);
    float sumf[4][4] = {{0}};
    for (int i = 0; i < nb; i++) {
        const weft_block_q6_K *x[4];
        const weft_block_q8_K *y[4];
        __m128i sc8[4];
        __m256i bs[4];
        for (int r = 0; r < NR; r++) {
            x[r] = (const weft_block_q6_K *)(w + (size_t)r * bw) + i;
            sc8[r] = _mm_loadu_si128((const __m128i *)x[r]->scales);
        }
        for (int c = 0; c < NC; c++) {
            y[c] = (const weft_block_q8_K *)(a + (size_t)c * ba) + i;
            bs[c] = _mm256_loadu_si256((const __m256i *)y[c]->bsums);
        }
        __m256i acc[4][4];
        for (int r = 0; r < NR; r++)
            for (int c = 0; c < NC; c++)  // start from -32 * sum_g scales[g] * bsums[g]
                acc[r][c] = _mm256_sub_epi32(_mm256_setzero_si256(),
                                             _mm256_slli_epi32(_mm256_madd_epi16(bs[c], _mm256_cvtepi8_epi16(sc8[r])), 5));
        for (int h = 0; h < 2; h++) {
            for (int r = 0; r < NR; r++) {
                _mm_prefetch((const char *)x[r] + KQ_PREFETCH + 105 * h, _MM_HINT_T0);
                _mm_prefetch((const char *)x[r] + KQ_PREFETCH + 105 * h + 64, _MM_HINT_T0);
                const __m256i l0 = _mm256_loadu_si256((const __m256i *)(x[r]->ql + 64 * h));
                const __m256i l1 = _mm256_loadu_si256((const __m256i *)(x[r]->ql + 64 * h + 32));
                const __m256i hh = _mm256_loadu_si256((const __m256i *)(x[r]->qh + 32 * h));
                __m256i q[4];
                q[0] = _mm256_or_si256(_mm256_and_si256(l0, m4), _mm256_slli_epi16(_mm256_and_si256(hh, m3), 4));
                q[1] = _mm256_or_si256(_mm256_and_si256(l1, m4),
                                       _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hh, 2), m3), 4));
                q[2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l0, 4), m4),
                                       _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hh, 4), m3), 4));
                q[3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1, 4), m4),
                                       _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hh, 6), m3), 4));
                for (int t = 0; t < 4; t++) {
                    // scales[8h + 2t] in the low 8 bytes, scales[8h + 2t + 1] in the high, widened.
                    const int g = 8 * h + 2 * t;
                    const __m128i pick = _mm_unpacklo_epi64(_mm_set1_epi8((char)g), _mm_set1_epi8((char)(g + 1)));
                    const __m256i s = _mm256_cvtepi8_epi16(_mm_shuffle_epi8(sc8[r], pick));
                    for (int c = 0; c < NC; c++) {
                        const __m256i qy = _mm256_loadu_si256((const __m256i *)(y[c]->qs + 128 * h + 32 * t));
                        acc[r][c] = KQ_SCALED_ADD(acc[r][c], s, _mm256_maddubs_epi16(q[t], qy));
                    }
                }
            }
        }
        __m256i v[4];
        int np = 0;
        for (int r = 0; r < NR; r++)
            for (int c = 0; c < NC; c++) v[np++] = acc[r][c];
        int sumi[4];
        _mm_storeu_si128((__m128i *)sumi, KQ_NAME(kq_hsum4)(v, np));
        np = 0;
        for (int r = 0; r < NR; r++) {
            const float d = KQ_NAME(kq_fp16)(x[r]->d);
            for (int c = 0; c < NC; c++, np++) sumf[r][c] = weft_kq6_accumulate(sumf[r][c], y[c]->d, d, sumi[np]);
        }
    }
    for (int r = 0; r < NR; r++)
        for (int c = 0; c < NC; c++) out[(size_t)c * ldo + (size_t)r] = sumf[r][c];
}

// ------------------------------------------------------------- instances
#define KQ_TILE_INSTANCES(fmt)                                                                         \
    static KQ_TARGET void KQ_NAME(fmt##_r1c1)(int k, const void *w, size_t bw, const void *a,          \
                                               size_t ba, float *y, size_t ldy) {                      \
        KQ_NAME(fmt##_tile)(k / WEFT_QK_K, w, bw, a, ba, y, ldy, 1, 1);                               \
    }                                                                                                  \
    static KQ_TARGET void KQ_NAME(fmt##_r4c1)(int k, const void *w, size_t bw, const void *a,          \
                                               size_t ba, float *y, size_t ldy) {                      \
        KQ_NAME(fmt##_tile)(k / WEFT_QK_K, w, bw, a, ba, y, ldy, 4, 1);                               \
    }                                                                                                  \
    static KQ_TARGET void KQ_NAME(fmt##_r1c2)(int k, const void *w, size_t bw, const void *a,          \
                                               size_t ba, float *y, size_t ldy) {                      \
        KQ_NAME(fmt##_tile)(k / WEFT_QK_K, w, bw, a, ba, y, ldy, 1, 2);                               \
    }                                                                                                  \
    static KQ_TARGET void KQ_NAME(fmt##_r1c3)(int k, const void *w, size_t bw, const void *a,          \
                                               size_t ba, float *y, size_t ldy) {                      \
        KQ_NAME(fmt##_tile)(k / WEFT_QK_K, w, bw, a, ba, y, ldy, 1, 3);                               \
    }                                                                                                  \
    static KQ_TARGET void KQ_NAME(fmt##_r1c4)(int k, const void *w, size_t bw, const void *a,          \
                                               size_t ba, float *y, size_t ldy) {                      \
        KQ_NAME(fmt##_tile)(k / WEFT_QK_K, w, bw, a, ba, y, ldy, 1, 4);                               \
    }                                                                                                  \
    static const weft_qtiles KQ_NAME(fmt##_tiles) = {                                                  \
        KQ_NAME(fmt##_r1c1), KQ_NAME(fmt##_r4c1), {KQ_NAME(fmt##_r1c2), KQ_NAME(fmt##_r1c3),           \
                                                   KQ_NAME(fmt##_r1c4)}};

KQ_TILE_INSTANCES(q4k)
KQ_TILE_INSTANCES(q5k)
KQ_TILE_INSTANCES(q6k)

// ----------------------------------------------------------- Q8_K quantizer
// ggml's quantize_row_q8_K_ref step for step: amax over |x| (NaN ignored, as
// the reference's `ax > amax`), the first element of that magnitude, iscale =
// -127 / max, nearest_int through the same float addition of 1.5 * 2^23, the
// min with 127 and a truncation to int8; so the bytes are the reference's.
static KQ_TARGET __attribute__((unused)) void KQ_NAME(kq_quantize_q8_K)(const float *x, weft_block_q8_K *y, int64_t k) {
    const __m256 sign = _mm256_set1_ps(-0.0f), magic = _mm256_set1_ps(12582912.f);
    const __m256i mant = _mm256_set1_epi32(0x007fffff), bias = _mm256_set1_epi32(0x00400000);
    const __m256i i127 = _mm256_set1_epi32(127), low = _mm256_set1_epi32(0xff);
    const __m256i perm = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    const __m128i flip = _mm_set1_epi8((char)0x80);
    for (int64_t i = 0; i < k / WEFT_QK_K; i++, x += WEFT_QK_K) {
        __m256 vmax = _mm256_setzero_ps();
        for (int j = 0; j < WEFT_QK_K; j += 8)
            vmax = _mm256_max_ps(_mm256_andnot_ps(sign, _mm256_loadu_ps(x + j)), vmax);  // NaN: keeps vmax
        __m128 m = _mm_max_ps(_mm256_castps256_ps128(vmax), _mm256_extractf128_ps(vmax, 1));
        m = _mm_max_ps(m, _mm_movehl_ps(m, m));
        m = _mm_max_ss(m, _mm_movehdup_ps(m));
        const float amax = _mm_cvtss_f32(m);
        if (!amax) {
            y[i].d = 0;
            memset(y[i].qs, 0, sizeof y[i].qs);
            memset(y[i].bsums, 0, sizeof y[i].bsums);
            continue;
        }
        float max = amax;
        const __m256 va = _mm256_set1_ps(amax);
        for (int j = 0; j < WEFT_QK_K; j += 8) {
            const int hit = _mm256_movemask_ps(_mm256_cmp_ps(_mm256_andnot_ps(sign, _mm256_loadu_ps(x + j)), va, _CMP_EQ_OQ));
            if (hit) {
                max = x[j + __builtin_ctz((unsigned)hit)];
                break;
            }
        }
        const float iscale = -127.f / max;
        const __m256 vs = _mm256_set1_ps(iscale);
        for (int j = 0; j < WEFT_QK_K; j += 32) {
            __m256i q[4];
            for (int t = 0; t < 4; t++) {
                const __m256 v = _mm256_add_ps(_mm256_mul_ps(vs, _mm256_loadu_ps(x + j + 8 * t)), magic);
                const __m256i iv = _mm256_sub_epi32(_mm256_and_si256(_mm256_castps_si256(v), mant), bias);
                q[t] = _mm256_and_si256(_mm256_min_epi32(iv, i127), low);  // the int8 truncation, as bytes
            }
            const __m256i p = _mm256_packus_epi16(_mm256_packus_epi32(q[0], q[1]), _mm256_packus_epi32(q[2], q[3]));
            _mm256_storeu_si256((__m256i *)(y[i].qs + j), _mm256_permutevar8x32_epi32(p, perm));
        }
        for (int g = 0; g < WEFT_QK_K / 16; g++) {
            // Sum of 16 int8 = sum of the 16 bytes + 128 (unsigned, vpsadbw) - 16 * 128.
            const __m128i b = _mm_xor_si128(_mm_loadu_si128((const __m128i *)(y[i].qs + 16 * g)), flip);
            const __m128i sad = _mm_sad_epu8(b, _mm_setzero_si128());
            y[i].bsums[g] = (int16_t)(_mm_cvtsi128_si32(sad) + _mm_extract_epi16(sad, 4) - 16 * 128);
        }
        y[i].d = 1 / iscale;
    }
}
