// AVX2 + FMA + F16C dot products of the block formats as tiles of weight rows
// x activation rows (below). The products of a block are summed exactly in
// integers (vpmaddubsw, then vpmaddwd with ones), converted to float and
// multiplied by the blocks' scale products with FMAs into 8-lane
// accumulators. Function-level target attributes; runs only where
// weft_quant_has_avx2().
#include "weft_quant.h"
#include "quant_tiles.h"

#include <string.h>

#if defined(__x86_64__)

#include <immintrin.h>

#define QTARGET __attribute__((target("avx2,fma,f16c")))
#define QINLINE static inline __attribute__((always_inline)) QTARGET

QINLINE float fp16_f16c(uint16_t h) { return _cvtsh_ss(h); }

// Software prefetch distance on the weight rows (bytes ahead), as in kquant_simd.h.
#define Q_PREFETCH 1024

// Unsigned x (0..255) times signed y, pairs summed into 8 int32 lanes.
QINLINE __m256 mul_sum_us8_pairs_float(__m256i ax, __m256i sy) {
    const __m256i dot = _mm256_maddubs_epi16(ax, sy);
    const __m256i summed = _mm256_madd_epi16(_mm256_set1_epi16(1), dot);
    return _mm256_cvtepi32_ps(summed);
}

QINLINE float hsum_float_8(__m256 x) {
    __m128 res = _mm256_extractf128_ps(x, 1);
    res = _mm_add_ps(res, _mm256_castps256_ps128(x));
    res = _mm_add_ps(res, _mm_movehl_ps(res, res));
    res = _mm_add_ss(res, _mm_movehdup_ps(res));
    return _mm_cvtss_f32(res);
}

// ------------------------------------------------------------------ tiles
// The kernels are tiles of NR weight rows x NC activation rows (quant_tiles.h):
// the activation vectors of a block are loaded once for the NR rows, a weight
// row's unpacked values serve the NC activation rows. Each (row, activation)
// pair has its own float32 accumulators and the same operations in the same
// order whatever the tile shape, so every tile (and the single dot product,
// the 1 x 1 tile) gives the same bits.
//
// Q4_0 / Q4_1: two blocks per 256-bit vector. Block b's 16 nibble bytes go to
// the low 128 bits and block b + 1's to the high 128 bits; the low nibbles
// (elements 0..15 of each block) and the high nibbles (16..31) meet the
// activations arranged the same way. vpmaddubsw of the unsigned nibbles with
// the int8 activations, the two halves added in int16 and summed to int32
// (exact), give per 128-bit half four partial sums of one block; Q4_0's -8 is
// taken out exactly as 8 * the activations' partial sums. One FMA per pair of
// blocks applies both blocks' scales (d_x * d_y, in lanes 0..3 and 4..7).

QINLINE __m256i load_2x16(const void *lo, const void *hi) {
    return _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_loadu_si128((const __m128i *)lo)),
                                   _mm_loadu_si128((const __m128i *)hi), 1);
}

// Two fp16 values to float32 lanes 0 and 1.
QINLINE __m128 fp16_pair(uint16_t a, uint16_t b) {
    return _mm_cvtph_ps(_mm_cvtsi32_si128((int)((uint32_t)a | (uint32_t)b << 16)));
}

// [a0 a0 a0 a0 a1 a1 a1 a1] from lanes 0, 1 of a.
QINLINE __m256 spread_pair(__m128 a) {
    return _mm256_permutevar8x32_ps(_mm256_castps128_ps256(a), _mm256_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1));
}

QINLINE float hsum_128(__m128 x) {
    x = _mm_add_ps(x, _mm_movehl_ps(x, x));
    x = _mm_add_ss(x, _mm_movehdup_ps(x));
    return _mm_cvtss_f32(x);
}

// Q4_0 (OFFSET = 1) and Q4_1 (OFFSET = 0) share the body; wb is a row of
// 18- or 20-byte blocks (qs at byte qs_at, d at 0, Q4_1's m at 2), the
// activations Q8_0 (34 bytes: d, qs at 2) or Q8_1 (36: d, s, qs at 4).
QINLINE void q4_tile(int k, const unsigned char *w, size_t bw, const unsigned char *a, size_t ba, float *out,
                     size_t ldo, const int NR, const int NC, const int OFFSET) {
    const int nb = k / WEFT_QK;
    const size_t xb = OFFSET ? sizeof(weft_block_q4_0) : sizeof(weft_block_q4_1);
    const size_t yb = OFFSET ? sizeof(weft_block_q8_0) : sizeof(weft_block_q8_1);
    const int xq = OFFSET ? 2 : 4, yq = OFFSET ? 2 : 4;
    const __m256i m4 = _mm256_set1_epi8(0x0F), eight = _mm256_set1_epi8(8), ones = _mm256_set1_epi16(1);
    __m256 acc[4][4];
    __m128 ms[4][4];  // Q4_1: m_x * s_y of both blocks in lanes 0, 1
    for (int r = 0; r < NR; r++)
        for (int c = 0; c < NC; c++) {
            acc[r][c] = _mm256_setzero_ps();
            ms[r][c] = _mm_setzero_ps();
        }
    // 4 x 1 tiles: the 8 fp16 scales (and Q4_1 minimums) of a pair of blocks of
    // the 4 rows in one conversion, row r's in lanes 2r, 2r + 1; the same
    // products as the per-row path, so the same bits.
    const int GATHER = NR == 4 && NC == 1;
    __m256 ms8 = _mm256_setzero_ps();
    int ib = 0;
    for (; ib + 2 <= nb; ib += 2) {
        __m256i ylo[4], yhi[4], off[4];
        __m128 dy[4], sy[4];
        for (int c = 0; c < NC; c++) {
            const unsigned char *y0 = a + (size_t)c * ba + (size_t)ib * yb, *y1 = y0 + yb;
            ylo[c] = load_2x16(y0 + yq, y1 + yq);
            yhi[c] = load_2x16(y0 + yq + 16, y1 + yq + 16);
            uint16_t d0, d1;
            memcpy(&d0, y0, 2);
            memcpy(&d1, y1, 2);
            dy[c] = fp16_pair(d0, d1);
            if (OFFSET) {
                off[c] = _mm256_madd_epi16(_mm256_add_epi16(_mm256_maddubs_epi16(eight, ylo[c]),
                                                            _mm256_maddubs_epi16(eight, yhi[c])), ones);
            } else {
                uint16_t s0, s1;
                memcpy(&s0, y0 + 2, 2);
                memcpy(&s1, y1 + 2, 2);
                sy[c] = fp16_pair(s0, s1);
            }
        }
        __m256 scale8 = _mm256_setzero_ps();
        if (GATHER) {
            uint64_t dd[2], mm[2];
            for (int h = 0; h < 2; h++) {
                const unsigned char *p0 = w + (size_t)(2 * h) * bw + (size_t)ib * xb, *p1 = p0 + bw;
                uint16_t e[4], f[4];
                memcpy(&e[0], p0, 2);
                memcpy(&e[1], p0 + xb, 2);
                memcpy(&e[2], p1, 2);
                memcpy(&e[3], p1 + xb, 2);
                dd[h] = e[0] | (uint64_t)e[1] << 16 | (uint64_t)e[2] << 32 | (uint64_t)e[3] << 48;
                if (!OFFSET) {
                    memcpy(&f[0], p0 + 2, 2);
                    memcpy(&f[1], p0 + xb + 2, 2);
                    memcpy(&f[2], p1 + 2, 2);
                    memcpy(&f[3], p1 + xb + 2, 2);
                    mm[h] = f[0] | (uint64_t)f[1] << 16 | (uint64_t)f[2] << 32 | (uint64_t)f[3] << 48;
                }
            }
            const __m256 dy8 = _mm256_castpd_ps(_mm256_broadcastsd_pd(_mm_castps_pd(dy[0])));
            scale8 = _mm256_mul_ps(_mm256_cvtph_ps(_mm_set_epi64x((long long)dd[1], (long long)dd[0])), dy8);
            if (!OFFSET) {
                const __m256 sy8 = _mm256_castpd_ps(_mm256_broadcastsd_pd(_mm_castps_pd(sy[0])));
                ms8 = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_set_epi64x((long long)mm[1], (long long)mm[0])), sy8, ms8);
            }
        }
        for (int r = 0; r < NR; r++) {
            const unsigned char *x0 = w + (size_t)r * bw + (size_t)ib * xb, *x1 = x0 + xb;
            _mm_prefetch((const char *)x0 + Q_PREFETCH, _MM_HINT_T0);
            const __m256i q = load_2x16(x0 + xq, x1 + xq);
            const __m256i lo = _mm256_and_si256(q, m4), hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
            __m128 dx = _mm_setzero_ps(), mx = _mm_setzero_ps();
            if (!GATHER) {
                uint16_t d0, d1;
                memcpy(&d0, x0, 2);
                memcpy(&d1, x1, 2);
                dx = fp16_pair(d0, d1);
                if (!OFFSET) {
                    uint16_t m0, m1;
                    memcpy(&m0, x0 + 2, 2);
                    memcpy(&m1, x1 + 2, 2);
                    mx = fp16_pair(m0, m1);
                }
            }
            for (int c = 0; c < NC; c++) {
                __m256i s = _mm256_madd_epi16(_mm256_add_epi16(_mm256_maddubs_epi16(lo, ylo[c]),
                                                               _mm256_maddubs_epi16(hi, yhi[c])), ones);
                if (OFFSET) s = _mm256_sub_epi32(s, off[c]);
                const __m256 scale = GATHER ? _mm256_permutevar8x32_ps(scale8, _mm256_setr_epi32(2 * r, 2 * r, 2 * r, 2 * r,
                                                                                                  2 * r + 1, 2 * r + 1,
                                                                                                  2 * r + 1, 2 * r + 1))
                                            : spread_pair(_mm_mul_ps(dx, dy[c]));
                acc[r][c] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), scale, acc[r][c]);
                if (!OFFSET && !GATHER) ms[r][c] = _mm_fmadd_ps(mx, sy[c], ms[r][c]);
            }
        }
    }
    float tail[4][4] = {{0}};
    if (ib < nb) {  // the odd last block, in 128 bits
        const __m128i m4s = _mm_set1_epi8(0x0F), eights = _mm_set1_epi8(8), ones1 = _mm_set1_epi16(1);
        for (int c = 0; c < NC; c++) {
            const unsigned char *y0 = a + (size_t)c * ba + (size_t)ib * yb;
            const __m128i ylo1 = _mm_loadu_si128((const __m128i *)(y0 + yq));
            const __m128i yhi1 = _mm_loadu_si128((const __m128i *)(y0 + yq + 16));
            uint16_t dyh, syh = 0;
            memcpy(&dyh, y0, 2);
            if (!OFFSET) memcpy(&syh, y0 + 2, 2);
            const __m128i off1 = _mm_madd_epi16(_mm_add_epi16(_mm_maddubs_epi16(eights, ylo1),
                                                              _mm_maddubs_epi16(eights, yhi1)), ones1);
            for (int r = 0; r < NR; r++) {
                const unsigned char *x0 = w + (size_t)r * bw + (size_t)ib * xb;
                const __m128i q = _mm_loadu_si128((const __m128i *)(x0 + xq));
                const __m128i lo = _mm_and_si128(q, m4s), hi = _mm_and_si128(_mm_srli_epi16(q, 4), m4s);
                __m128i s = _mm_madd_epi16(_mm_add_epi16(_mm_maddubs_epi16(lo, ylo1), _mm_maddubs_epi16(hi, yhi1)), ones1);
                if (OFFSET) s = _mm_sub_epi32(s, off1);
                uint16_t dxh, mxh = 0;
                memcpy(&dxh, x0, 2);
                if (!OFFSET) memcpy(&mxh, x0 + 2, 2);
                const __m128 v = _mm_mul_ps(_mm_cvtepi32_ps(s), _mm_set1_ps(fp16_f16c(dxh) * fp16_f16c(dyh)));
                tail[r][c] = hsum_128(v);
                if (!OFFSET) tail[r][c] += fp16_f16c(mxh) * fp16_f16c(syh);
            }
        }
    }
    if (GATHER && !OFFSET) {  // row r's minimum terms from lanes 2r, 2r + 1, as the per-row path holds them
        float lanes[8];
        _mm256_storeu_ps(lanes, ms8);
        for (int r = 0; r < NR; r++) ms[r][0] = _mm_setr_ps(lanes[2 * r], lanes[2 * r + 1], 0.0f, 0.0f);
    }
    for (int r = 0; r < NR; r++)
        for (int c = 0; c < NC; c++)
            out[(size_t)c * ldo + (size_t)r] = hsum_float_8(acc[r][c]) + hsum_128(ms[r][c]) + tail[r][c];
}

// Q8_0: one block per vector; |x| and sign(y, x) into vpmaddubsw (ggml's
// pattern), the activation loads and scales shared by the NR rows.
QINLINE void q8_tile(int k, const unsigned char *w, size_t bw, const unsigned char *a, size_t ba, float *out,
                     size_t ldo, const int NR, const int NC) {
    const int nb = k / WEFT_QK;
    const size_t b8 = sizeof(weft_block_q8_0);
    __m256 acc[4][4];
    for (int r = 0; r < NR; r++)
        for (int c = 0; c < NC; c++) acc[r][c] = _mm256_setzero_ps();
    for (int ib = 0; ib < nb; ib++) {
        __m256i qy[4];
        float dy[4];
        for (int c = 0; c < NC; c++) {
            const weft_block_q8_0 *y = (const weft_block_q8_0 *)(a + (size_t)c * ba) + ib;
            qy[c] = _mm256_loadu_si256((const __m256i *)y->qs);
            dy[c] = fp16_f16c(y->d);
        }
        for (int r = 0; r < NR; r++) {
            const weft_block_q8_0 *x = (const weft_block_q8_0 *)(w + (size_t)r * bw + (size_t)ib * b8);
            _mm_prefetch((const char *)x + Q_PREFETCH, _MM_HINT_T0);
            const __m256i qx = _mm256_loadu_si256((const __m256i *)x->qs);
            const __m256i ax = _mm256_sign_epi8(qx, qx);
            const float dx = fp16_f16c(x->d);
            for (int c = 0; c < NC; c++)
                acc[r][c] = _mm256_fmadd_ps(_mm256_set1_ps(dx * dy[c]),
                                            mul_sum_us8_pairs_float(ax, _mm256_sign_epi8(qy[c], qx)), acc[r][c]);
        }
    }
    for (int r = 0; r < NR; r++)
        for (int c = 0; c < NC; c++) out[(size_t)c * ldo + (size_t)r] = hsum_float_8(acc[r][c]);
}

#define TILE_SET(name, call)                                                                         \
    static QTARGET void name##_r1c1(int k, const void *w, size_t bw, const void *a, size_t ba,       \
                                    float *y, size_t ldy) { call(1, 1); }                            \
    static QTARGET void name##_r4c1(int k, const void *w, size_t bw, const void *a, size_t ba,       \
                                    float *y, size_t ldy) { call(4, 1); }                            \
    static QTARGET void name##_r1c2(int k, const void *w, size_t bw, const void *a, size_t ba,       \
                                    float *y, size_t ldy) { call(1, 2); }                            \
    static QTARGET void name##_r1c3(int k, const void *w, size_t bw, const void *a, size_t ba,       \
                                    float *y, size_t ldy) { call(1, 3); }                            \
    static QTARGET void name##_r1c4(int k, const void *w, size_t bw, const void *a, size_t ba,       \
                                    float *y, size_t ldy) { call(1, 4); }                            \
    static const weft_qtiles name##_tiles = {name##_r1c1, name##_r4c1,                               \
                                             {name##_r1c2, name##_r1c3, name##_r1c4}};

#define CALL_Q40(NR, NC) q4_tile(k, w, bw, a, ba, y, ldy, NR, NC, 1)
#define CALL_Q41(NR, NC) q4_tile(k, w, bw, a, ba, y, ldy, NR, NC, 0)
#define CALL_Q80(NR, NC) q8_tile(k, w, bw, a, ba, y, ldy, NR, NC)
TILE_SET(q4_0_avx2, CALL_Q40)
TILE_SET(q4_1_avx2, CALL_Q41)
TILE_SET(q8_0_avx2, CALL_Q80)

const weft_qtiles *weft_q_tiles_avx2(int wtype) {
    switch (wtype) {
    case WEFT_QTYPE_Q8_0: return &q8_0_avx2_tiles;
    case WEFT_QTYPE_Q4_0: return &q4_0_avx2_tiles;
    case WEFT_QTYPE_Q4_1: return &q4_1_avx2_tiles;
    default: return weft_kq_tiles_avx2(wtype);
    }
}

float weft_vec_dot_q8_0_q8_0_avx2(int n, const weft_block_q8_0 *x, const weft_block_q8_0 *y) {
    float s;
    q8_0_avx2_r1c1(n, x, 0, y, 0, &s, 1);
    return s;
}
float weft_vec_dot_q4_0_q8_0_avx2(int n, const weft_block_q4_0 *x, const weft_block_q8_0 *y) {
    float s;
    q4_0_avx2_r1c1(n, x, 0, y, 0, &s, 1);
    return s;
}
float weft_vec_dot_q4_1_q8_1_avx2(int n, const weft_block_q4_1 *x, const weft_block_q8_1 *y) {
    float s;
    q4_1_avx2_r1c1(n, x, 0, y, 0, &s, 1);
    return s;
}

// --------------------------------------------------- activation quantizers
// ggml's quantize_row_q8_0_ref / q8_1_ref, 8 lanes at a time, writing the
// reference's bytes: amax as fmaxf (NaN ignored), d = amax / 127, id = 1 / d
// (0 for d = 0), roundf (half away from zero) as trunc plus a step of 1 where
// |x - trunc(x)| >= 0.5, and the int8 as the low byte of the truncating
// conversion (the reference's (int8_t) of cvttss2si). Q8_1's s = fp16(sum * d).
QINLINE float q8_block(const float *x, int8_t *qs) {
    const __m256 sign = _mm256_set1_ps(-0.0f), half = _mm256_set1_ps(0.5f), one = _mm256_set1_ps(1.0f);
    __m256 v[4];
    __m256 vmax = _mm256_setzero_ps();
    for (int t = 0; t < 4; t++) {
        v[t] = _mm256_loadu_ps(x + 8 * t);
        vmax = _mm256_max_ps(_mm256_andnot_ps(sign, v[t]), vmax);  // NaN: keeps vmax
    }
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(vmax), _mm256_extractf128_ps(vmax, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_movehdup_ps(m));
    const float d = _mm_cvtss_f32(m) / ((1 << 7) - 1);
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    const __m256 vid = _mm256_set1_ps(id), low = _mm256_castsi256_ps(_mm256_set1_epi32(0xff));
    __m256i q[4];
    for (int t = 0; t < 4; t++) {
        const __m256 p = _mm256_mul_ps(v[t], vid);
        const __m256 tr = _mm256_round_ps(p, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
        const __m256 frac = _mm256_andnot_ps(sign, _mm256_sub_ps(p, tr));
        const __m256 step = _mm256_and_ps(_mm256_cmp_ps(frac, half, _CMP_GE_OQ), _mm256_or_ps(_mm256_and_ps(p, sign), one));
        q[t] = _mm256_and_si256(_mm256_cvttps_epi32(_mm256_add_ps(tr, step)), _mm256_castps_si256(low));
    }
    const __m256i packed = _mm256_packus_epi16(_mm256_packus_epi32(q[0], q[1]), _mm256_packus_epi32(q[2], q[3]));
    _mm256_storeu_si256((__m256i *)qs, _mm256_permutevar8x32_epi32(packed, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7)));
    return d;
}

QTARGET void weft_quantize_row_q8_0_avx2(const float *x, weft_block_q8_0 *y, int64_t k) {
    for (int64_t i = 0; i < k / WEFT_QK; i++)
        y[i].d = _cvtss_sh(q8_block(x + i * WEFT_QK, y[i].qs), _MM_FROUND_TO_NEAREST_INT);
}

QTARGET void weft_quantize_row_q8_1_avx2(const float *x, weft_block_q8_1 *y, int64_t k) {
    for (int64_t i = 0; i < k / WEFT_QK; i++) {
        const float d = q8_block(x + i * WEFT_QK, y[i].qs);
        y[i].d = _cvtss_sh(d, _MM_FROUND_TO_NEAREST_INT);
        // Sum of 32 int8 = sum of the bytes + 128 (vpsadbw) - 32 * 128.
        const __m256i b = _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)y[i].qs), _mm256_set1_epi8((char)0x80));
        const __m256i sad = _mm256_sad_epu8(b, _mm256_setzero_si256());
        const __m128i s2 = _mm_add_epi64(_mm256_castsi256_si128(sad), _mm256_extracti128_si256(sad, 1));
        const int sum = (int)(_mm_cvtsi128_si64(s2) + _mm_extract_epi64(s2, 1)) - 32 * 128;
        y[i].s = _cvtss_sh((float)sum * d, _MM_FROUND_TO_NEAREST_INT);
    }
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
const weft_qtiles *weft_q_tiles_avx2(int wtype) { return weft_kq_tiles_avx2(wtype); }
void weft_quantize_row_q8_0_avx2(const float *x, weft_block_q8_0 *y, int64_t k) { weft_quantize_row_q8_0(x, y, k); }
void weft_quantize_row_q8_1_avx2(const float *x, weft_block_q8_1 *y, int64_t k) { weft_quantize_row_q8_1(x, y, k); }

#endif
