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
#include <stddef.h>
#include <string.h>

// Software prefetch distance on a single weight row (bytes ahead of the
// super-block being read; the 1-row tiles, kq_prefetch).
#ifndef KQ_PREFETCH
#define KQ_PREFETCH 1024
#endif

#define KQ_CAT2(a, b) a##_##b
#define KQ_CAT(a, b) KQ_CAT2(a, b)
#define KQ_NAME(base) KQ_CAT(base, KQ_SUFFIX)
#define KQ_INLINE static inline __attribute__((always_inline)) KQ_TARGET


// Sum of each of up to four int32 vectors, in lanes 0..3 (exact).
KQ_INLINE __m128i KQ_NAME(kq_hsum4)(const __m256i *v, int count) {
    __m128i f[4];
    for (int p = 0; p < 4; p++)
        f[p] = p < count ? _mm_add_epi32(_mm256_castsi256_si128(v[p]), _mm256_extracti128_si256(v[p], 1))
                         : _mm_setzero_si128();
    return _mm_hadd_epi32(_mm_hadd_epi32(f[0], f[1]), _mm_hadd_epi32(f[2], f[3]));
}

// vpshufb patterns broadcasting 16-bit lane j of a 128-bit half (ggml's get_scale_shuffle_k4).
static const uint8_t KQ_NAME(kq_shuffle16)[8][32] __attribute__((aligned(32))) = {
#define KQ_S(j) {2 * j, 2 * j + 1, 2 * j, 2 * j + 1, 2 * j, 2 * j + 1, 2 * j, 2 * j + 1, 2 * j, 2 * j + 1, 2 * j,  \
                 2 * j + 1, 2 * j, 2 * j + 1, 2 * j, 2 * j + 1, 2 * j, 2 * j + 1, 2 * j, 2 * j + 1, 2 * j, 2 * j + 1, \
                 2 * j, 2 * j + 1, 2 * j, 2 * j + 1, 2 * j, 2 * j + 1, 2 * j, 2 * j + 1, 2 * j, 2 * j + 1}
    KQ_S(0), KQ_S(1), KQ_S(2), KQ_S(3), KQ_S(4), KQ_S(5), KQ_S(6), KQ_S(7)
#undef KQ_S
};

// ------------------------------------------------------ the tiles' common part
// A tile's (weight row r, activation row c) pairs are float32 lanes p = r * NC + c
// of one 128-bit vector (NR * NC <= 4), so the float32 step of
// kquant_internal.h runs once per super-block for all pairs, lane by lane the
// same operations in the same order as the scalar reference.

// The fp16 at x[r] + off of the pairs' rows as float32 lanes (one vcvtph2ps).
KQ_INLINE __m128 KQ_NAME(kq_rows_fp16)(const unsigned char *const *x, size_t off, const int NR, const int NC) {
    uint64_t packed = 0;
    for (int p = 0; p < NR * NC; p++) {
        uint16_t h;
        memcpy(&h, x[p / NC] + off, 2);
        packed |= (uint64_t)h << (16 * p);
    }
    return _mm_cvtph_ps(_mm_cvtsi64_si128((long long)packed));
}

// The activations' float32 scales as lanes of the pairs.
KQ_INLINE __m128 KQ_NAME(kq_acts_d)(const weft_block_q8_K *const *y, const int NR, const int NC) {
    if (NC == 1) return _mm_set1_ps(y[0]->d);
    float v[4] = {0, 0, 0, 0};
    for (int p = 0; p < NR * NC; p++) v[p] = y[p % NC]->d;
    return _mm_loadu_ps(v);
}

// Sums of up to four 128-bit int32 vectors in lanes 0..3 (exact).
KQ_INLINE __m128i KQ_NAME(kq_hsum4_128)(const __m128i *v, int count) {
    __m128i f[4];
    for (int p = 0; p < 4; p++) f[p] = p < count ? v[p] : _mm_setzero_si128();
    return _mm_hadd_epi32(_mm_hadd_epi32(f[0], f[1]), _mm_hadd_epi32(f[2], f[3]));
}

KQ_INLINE void KQ_NAME(kq_store_pairs)(float *out, size_t ldo, __m128 sumf, const int NR, const int NC) {
    float s[4];
    _mm_storeu_ps(s, sumf);
    for (int p = 0; p < NR * NC; p++) out[(size_t)(p % NC) * ldo + (size_t)(p / NC)] = s[p];
}

// Prefetches of super-block i of a tile of NR rows of `bytes`-byte blocks.
// NR > 1 (the 4-row tiles of m = 1): the next NR rows (the driver's next tile:
// rows are contiguous, so the bytes right after this tile's last row) into L2
// at the pace this tile consumes its own, so that the next tile's four row
// streams are warm when it starts (as the Q4_0/Q4_1 lane tiles, quant_avx2.c).
// Without it the four streams were cold at every tile start and the 4-row
// tiles read at 45-50 % of a plain read loop. Their own rows are not prefetched
// into L1 besides (measured as fast or faster without, fewer instructions).
// NR = 1 (one weight row against 2-4 activation rows): the row KQ_PREFETCH
// bytes ahead into L1.
KQ_INLINE void KQ_NAME(kq_prefetch)(const unsigned char *w, size_t bw, int i, size_t bytes, const int NR) {
    if (NR > 1) {
        const char *nx = (const char *)w + (size_t)NR * bw + (size_t)i * NR * bytes;
        for (size_t o = 0; o < NR * bytes; o += 64) _mm_prefetch(nx + o, _MM_HINT_T1);
    }
    if (KQ_PREFETCH && NR == 1)
        for (int r = 0; r < NR; r++) {
            const char *x = (const char *)w + (size_t)r * bw + (size_t)i * bytes + KQ_PREFETCH;
            for (size_t o = 0; o < bytes; o += 64) _mm_prefetch(x + o, _MM_HINT_T0);
        }
}

// Q4_K / Q5_K scales and mins of two rows' blocks (ggml's get_scale_min_k4),
// the 12 packed bytes of row a at pa and of row b at pb, unpacked in the two
// 128-bit halves at once: byte j of a half is sc[j] (j < 8), byte 8 + j is m[j].
//   sc[j] = q[j] & 63, m[j] = q[j + 4] & 63                        (j < 4)
//   sc[j] = (q[j + 4] & 15) | (q[j - 4] >> 6) << 4,
//   m[j] = (q[j + 4] >> 4) | (q[j] >> 6) << 4                       (j >= 4)
KQ_INLINE __m256i KQ_NAME(kq_unpack_scales2)(const uint8_t *pa, const uint8_t *pb) {
    const __m256i q = _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_loadu_si128((const __m128i *)pa)),
                                              _mm_loadu_si128((const __m128i *)pb), 1);
    // A = [q0..3 q8..11 q4..7 q8..11], B = [0 q0..3 0 q4..7] per half.
    const __m256i pick_a = _mm256_setr_epi8(0, 1, 2, 3, 8, 9, 10, 11, 4, 5, 6, 7, 8, 9, 10, 11,
                                            0, 1, 2, 3, 8, 9, 10, 11, 4, 5, 6, 7, 8, 9, 10, 11);
    const __m256i pick_b = _mm256_setr_epi8(-1, -1, -1, -1, 0, 1, 2, 3, -1, -1, -1, -1, 4, 5, 6, 7,
                                            -1, -1, -1, -1, 0, 1, 2, 3, -1, -1, -1, -1, 4, 5, 6, 7);
    const __m256i keep = _mm256_setr_epi8(63, 63, 63, 63, 15, 15, 15, 15, 63, 63, 63, 63, 0, 0, 0, 0,
                                          63, 63, 63, 63, 15, 15, 15, 15, 63, 63, 63, 63, 0, 0, 0, 0);
    const __m256i keep_hi = _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 15, 15, 15, 15,
                                             0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 15, 15, 15, 15);
    const __m256i a = _mm256_shuffle_epi8(q, pick_a), b = _mm256_shuffle_epi8(q, pick_b);
    const __m256i top = _mm256_and_si256(_mm256_srli_epi16(b, 2), _mm256_set1_epi8(0x30));  // (x >> 6) << 4
    return _mm256_or_si256(_mm256_or_si256(_mm256_and_si256(a, keep), top),
                           _mm256_and_si256(_mm256_srli_epi16(a, 4), keep_hi));
}

// From kq_unpack_scales2's result: sub-block j's scale as the 16-bit pair
// (sc, sc) in dword j of each half's row (a 32-bit broadcast from memory then
// gives vpmaddwd its scale vector without a shuffle), stored as
// scd[0..7] = row a's dwords 0..3, row b's 0..3, scd[8..15] = their 4..7;
// and the two rows' mins as 16-bit lanes (*mins: row a low half, row b high).
KQ_INLINE void KQ_NAME(kq_scale_pairs2)(__m256i u, uint32_t scd[16], __m256i *mins) {
    const __m256i d0 = _mm256_setr_epi8(0, -1, 0, -1, 1, -1, 1, -1, 2, -1, 2, -1, 3, -1, 3, -1,
                                        0, -1, 0, -1, 1, -1, 1, -1, 2, -1, 2, -1, 3, -1, 3, -1);
    const __m256i d1 = _mm256_setr_epi8(4, -1, 4, -1, 5, -1, 5, -1, 6, -1, 6, -1, 7, -1, 7, -1,
                                        4, -1, 4, -1, 5, -1, 5, -1, 6, -1, 6, -1, 7, -1, 7, -1);
    const __m256i mz = _mm256_setr_epi8(8, -1, 9, -1, 10, -1, 11, -1, 12, -1, 13, -1, 14, -1, 15, -1,
                                        8, -1, 9, -1, 10, -1, 11, -1, 12, -1, 13, -1, 14, -1, 15, -1);
    _mm256_storeu_si256((__m256i *)scd, _mm256_shuffle_epi8(u, d0));
    _mm256_storeu_si256((__m256i *)(scd + 8), _mm256_shuffle_epi8(u, d1));
    *mins = _mm256_shuffle_epi8(u, mz);
}

// The dword of (row r, sub-block j) in kq_scale_pairs2's layout (r = 0, 1).
#define KQ_SCD(j, r) (((j) >= 4 ? 8 : 0) + 4 * (r) + ((j) & 3))

KQ_INLINE __m256i KQ_NAME(kq_bcast32)(const uint32_t *p) { return _mm256_castps_si256(_mm256_broadcast_ss((const float *)p)); }

// The (d, dmin) fp16 pairs at the start of the pairs' rows' blocks as float32
// lanes of *d and *dmin: one 4-byte load per row, one vpshufb, one vcvtph2ps.
KQ_INLINE void KQ_NAME(kq_rows_dmin)(const unsigned char *const *x, const int NR, const int NC, __m128 *d, __m128 *dmin) {
    uint32_t e[4];
    for (int r = 0; r < NR; r++) memcpy(&e[r], x[r], 4);
    __m128i v;
    if (NR == 4 && NC == 1) v = _mm_setr_epi32((int)e[0], (int)e[1], (int)e[2], (int)e[3]);
    else if (NR == 1) v = _mm_set1_epi32((int)e[0]);
    else {
        uint32_t f[4] = {0, 0, 0, 0};
        for (int p = 0; p < NR * NC; p++) f[p] = e[p / NC];
        v = _mm_loadu_si128((const __m128i *)f);
    }
    const __m128i split = _mm_setr_epi8(0, 1, 4, 5, 8, 9, 12, 13, 2, 3, 6, 7, 10, 11, 14, 15);
    const __m256 f = _mm256_cvtph_ps(_mm_shuffle_epi8(v, split));
    *d = _mm256_castps256_ps128(f);
    *dmin = _mm256_extractf128_ps(f, 1);
}

// ------------------------------------------------------------- Q4_K / Q5_K
// FIVE = 0: Q4_K (qs at byte 16), 1: Q5_K (qh at 16, qs at 48). Per sub-block
// pair j, each row's 32 bytes are unpacked once (low nibbles: sub-block 2j,
// high: 2j + 1) and meet every activation row's 64 bytes (vpmaddubsw), scaled
// by vpmaddwd into 8 int32 lanes per pair; per super-block the pairs' lanes
// are summed (kq_hsum4) and the mins term is m . (pair sums of bsums).
KQ_INLINE void KQ_NAME(q45k_tile)(int nb, const unsigned char *w, size_t bw, const unsigned char *a,
                                  size_t ba, float *out, size_t ldo, const int NR, const int NC, const int FIVE) {
    const __m256i m4 = _mm256_set1_epi8(0x0F), one = _mm256_set1_epi8(1);
    const size_t xb = FIVE ? sizeof(weft_block_q5_K) : sizeof(weft_block_q4_K);
    const int qs_at = FIVE ? 48 : 16;
    __m128 sumf = _mm_setzero_ps();
    for (int i = 0; i < nb; i++) {
        const unsigned char *x[4];
        const weft_block_q8_K *y[4];
        uint32_t scd[2][16] __attribute__((aligned(32)));
        __m256i hb[4], acc[4];
        __m128i mn[4], q8s[4];
        KQ_NAME(kq_prefetch)(w, bw, i, xb, NR);
        for (int r = 0; r < NR; r++) {
            x[r] = w + (size_t)r * bw + (size_t)i * xb;
            if (FIVE) hb[r] = _mm256_loadu_si256((const __m256i *)(x[r] + 16));
        }
        for (int r = 0; r < NR; r += 2) {  // rows r and r + 1 (NR = 1: row 0 twice)
            __m256i m2;
            KQ_NAME(kq_scale_pairs2)(KQ_NAME(kq_unpack_scales2)(x[r] + 4, x[NR > 1 ? r + 1 : r] + 4), scd[r / 2], &m2);
            mn[r] = _mm256_castsi256_si128(m2);
            if (NR > 1) mn[r + 1] = _mm256_extracti128_si256(m2, 1);
        }
        for (int c = 0; c < NC; c++) {
            y[c] = (const weft_block_q8_K *)(a + (size_t)c * ba) + i;
            const __m256i bs = _mm256_loadu_si256((const __m256i *)y[c]->bsums);
            q8s[c] = _mm_hadd_epi16(_mm256_castsi256_si128(bs), _mm256_extracti128_si256(bs, 1));  // pair sums
        }
        for (int p = 0; p < NR * NC; p++) acc[p] = _mm256_setzero_si256();
        for (int j = 0; j < 4; j++) {
            __m256i q0[4], q1[4];
            for (int c = 0; c < NC; c++) {
                q0[c] = _mm256_loadu_si256((const __m256i *)(y[c]->qs + 64 * j));
                q1[c] = _mm256_loadu_si256((const __m256i *)(y[c]->qs + 64 * j + 32));
            }
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
                const __m256i s0 = KQ_NAME(kq_bcast32)(&scd[r / 2][KQ_SCD(2 * j, r & 1)]);
                const __m256i s1 = KQ_NAME(kq_bcast32)(&scd[r / 2][KQ_SCD(2 * j + 1, r & 1)]);
                for (int c = 0; c < NC; c++) {
                    acc[r * NC + c] = KQ_SCALED_ADD(acc[r * NC + c], s0, _mm256_maddubs_epi16(lo, q0[c]));
                    acc[r * NC + c] = KQ_SCALED_ADD(acc[r * NC + c], s1, _mm256_maddubs_epi16(hi, q1[c]));
                }
            }
        }
        __m128i mv[4];
        for (int p = 0; p < NR * NC; p++) mv[p] = _mm_madd_epi16(mn[p / NC], q8s[p % NC]);
        const __m128i sumi = KQ_NAME(kq_hsum4)(acc, NR * NC), summ = KQ_NAME(kq_hsum4_128)(mv, NR * NC);
        __m128 d, dmin;
        KQ_NAME(kq_rows_dmin)(x, NR, NC, &d, &dmin);
        const __m128 yd = KQ_NAME(kq_acts_d)(y, NR, NC);
        // weft_kq_accumulate, lane by lane.
        const __m128 dd = _mm_mul_ps(yd, d);
        const __m128 dm = _mm_mul_ps(yd, dmin);
        const __m128 ta = _mm_mul_ps(dd, _mm_cvtepi32_ps(sumi));
        const __m128 tb = _mm_mul_ps(dm, _mm_cvtepi32_ps(summ));
        sumf = _mm_add_ps(sumf, _mm_sub_ps(ta, tb));
    }
    KQ_NAME(kq_store_pairs)(out, ldo, sumf, NR, NC);
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
// A row's 16 int8 scales widened to 16-bit lanes in the order [s0 s2 .. s14 |
// s1 s3 .. s15]: for half h and quarter t (32 elements, groups g = 8h + 2t and
// g + 1) the in-lane vpshufb broadcasting 16-bit lane 4h + t gives s_g in the
// low 128 bits and s_(g+1) in the high, as the products' groups lie. The -32
// offset is taken out exactly as 32 * sum_g s_g * bsums[g], the bsums put in
// the same order.
KQ_INLINE void KQ_NAME(q6k_tile)(int nb, const unsigned char *w, size_t bw, const unsigned char *a,
                                 size_t ba, float *out, size_t ldo, const int NR, const int NC) {
    const __m256i m4 = _mm256_set1_epi8(0x0F), m30 = _mm256_set1_epi8(0x30);
    const __m128i evenodd = _mm_setr_epi8(0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15);
    const __m256i evenodd16 = _mm256_setr_epi8(0, 1, 4, 5, 8, 9, 12, 13, 2, 3, 6, 7, 10, 11, 14, 15,
                                               0, 1, 4, 5, 8, 9, 12, 13, 2, 3, 6, 7, 10, 11, 14, 15);
    const size_t xb = sizeof(weft_block_q6_K);
    __m128 sumf = _mm_setzero_ps();
    for (int i = 0; i < nb; i++) {
        const unsigned char *x[4];
        const weft_block_q8_K *y[4];
        __m256i sv[4], bs[4], acc[4];
        KQ_NAME(kq_prefetch)(w, bw, i, xb, NR);
        for (int r = 0; r < NR; r++) {
            x[r] = w + (size_t)r * bw + (size_t)i * xb;
            const __m128i sc8 = _mm_loadu_si128((const __m128i *)(x[r] + offsetof(weft_block_q6_K, scales)));
            sv[r] = _mm256_cvtepi8_epi16(_mm_shuffle_epi8(sc8, evenodd));
        }
        for (int c = 0; c < NC; c++) {
            y[c] = (const weft_block_q8_K *)(a + (size_t)c * ba) + i;
            const __m256i b = _mm256_shuffle_epi8(_mm256_loadu_si256((const __m256i *)y[c]->bsums), evenodd16);
            bs[c] = _mm256_permute4x64_epi64(b, 0xD8);  // [b0 b2 .. b14 | b1 b3 .. b15]
        }
        for (int p = 0; p < NR * NC; p++)  // start from -32 * sum_g s_g * bsums[g]
            acc[p] = _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_slli_epi32(_mm256_madd_epi16(bs[p % NC], sv[p / NC]), 5));
        for (int h = 0; h < 2; h++) {
            __m256i qy[4][4];
            for (int c = 0; c < NC; c++)
                for (int t = 0; t < 4; t++) qy[c][t] = _mm256_loadu_si256((const __m256i *)(y[c]->qs + 128 * h + 32 * t));
            for (int r = 0; r < NR; r++) {
                const unsigned char *ql = x[r] + 64 * h, *qh = x[r] + 128 + 32 * h;
                const __m256i l0 = _mm256_loadu_si256((const __m256i *)ql);
                const __m256i l1 = _mm256_loadu_si256((const __m256i *)(ql + 32));
                const __m256i hh = _mm256_loadu_si256((const __m256i *)qh);
                __m256i q[4];
                // bits 4..5 of element l + 32u are bits 2u..2u+1 of qh[l].
                q[0] = _mm256_or_si256(_mm256_and_si256(l0, m4), _mm256_and_si256(_mm256_slli_epi16(hh, 4), m30));
                q[1] = _mm256_or_si256(_mm256_and_si256(l1, m4), _mm256_and_si256(_mm256_slli_epi16(hh, 2), m30));
                q[2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l0, 4), m4), _mm256_and_si256(hh, m30));
                q[3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1, 4), m4),
                                       _mm256_and_si256(_mm256_srli_epi16(hh, 2), m30));
                for (int t = 0; t < 4; t++) {
                    const __m256i s = _mm256_shuffle_epi8(sv[r], _mm256_load_si256((const __m256i *)KQ_NAME(kq_shuffle16)[4 * h + t]));
                    for (int c = 0; c < NC; c++)
                        acc[r * NC + c] = KQ_SCALED_ADD(acc[r * NC + c], s, _mm256_maddubs_epi16(q[t], qy[c][t]));
                }
            }
        }
        const __m128i sumi = KQ_NAME(kq_hsum4)(acc, NR * NC);
        const __m128 d = KQ_NAME(kq_rows_fp16)(x, offsetof(weft_block_q6_K, d), NR, NC);
        const __m128 yd = KQ_NAME(kq_acts_d)(y, NR, NC);
        // weft_kq6_accumulate, lane by lane.
        const __m128 dd = _mm_mul_ps(yd, d);
        sumf = _mm_add_ps(sumf, _mm_mul_ps(dd, _mm_cvtepi32_ps(sumi)));
    }
    KQ_NAME(kq_store_pairs)(out, ldo, sumf, NR, NC);
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
