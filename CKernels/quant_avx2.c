// AVX2 + F16C dot products of Q8_0, Q4_0 and Q4_1 as 8-lane tiles of weight
// rows x activation rows (below), bit-exact with the scalar references, and
// the AVX2 8-bit activation quantizers. Function-level target attributes;
// runs only where weft_quant_has_avx2().
#include "weft_quant.h"
#include "quant_tiles.h"

#include <string.h>

#if defined(__x86_64__)

#include <immintrin.h>

#define QTARGET __attribute__((target("avx2,fma,f16c")))
#define QINLINE static inline __attribute__((always_inline)) QTARGET

// ------------------------------------------------------------------ tiles
// Tiles of weight rows x activation rows with one float32 lane per (weight
// row, activation row) pair (quant_tiles.h). Per block, each lane gets its
// exact integer block sum, then does the scalar reference's float32 steps in
// its order, one block after the other:
//   Q8_0 sum += (float)sumi * (dx * dy); Q4_0 sum += ((float)sumi * dx) * dy;
//   Q4_1 sum += (dx * dy) * (float)sumi + mx * sy.
// So every lane holds, bit for bit, the scalar reference's dot product,
// whatever the tile shape, the thread split or the ISA path. The weight rows'
// fp16 scales are put together in general-purpose registers (one vcvtph2ps per
// block for all rows: no per-row scalar conversion, no vpgatherdd, which was
// slower here); the activations' scales and Q4_0's 8 * sum(y) come from the
// side data (weft_qside_fill).

#pragma STDC FP_CONTRACT OFF

enum { FMT_Q4_0 = 0, FMT_Q4_1 = 1, FMT_Q8_0 = 2 };

// Weight bytes prefetched ahead on each row into L1 (every 4th block for Q4,
// every block for Q8_0's 8 x 1 tile, every other at m > 1); the next tile is
// prefetched into L2 besides (Q4 always, Q8_0 at m > 1). (Q8_0 at m = 1 runs
// the row stream below, not its 8 x 1 tile.)
#ifndef Q_PREFETCH
#define Q_PREFETCH 1024
#endif
#ifndef Q_HINT
#define Q_HINT _MM_HINT_T0
#endif

// The fp16 values at wr[r] + off of R <= 8 rows as float32 lanes 0..R-1
// (lanes R..7 repeat them).
QINLINE __m256 rows_fp16(const unsigned char *const *wr, size_t off, const int R) {
    uint16_t e[8];
    for (int r = 0; r < 8; r++) memcpy(&e[r], wr[r % R] + off, 2);
    const uint64_t d0 = e[0] | (uint64_t)e[1] << 16 | (uint64_t)e[2] << 32 | (uint64_t)e[3] << 48;
    const uint64_t d1 = R <= 4 ? d0 : e[4] | (uint64_t)e[5] << 16 | (uint64_t)e[6] << 32 | (uint64_t)e[7] << 48;
    return _mm256_cvtph_ps(_mm_set_epi64x((long long)d1, (long long)d0));
}

// Q4_1: the fp16 (d, m) pairs at wr[r] + off of 8 rows as float32 lanes
// 0..7 of *dx and *mx: one 4-byte load per row, two rows per general-purpose
// register, vpshufb to [d d d d m m m m] per 4 rows.
QINLINE void rows_fp16_pairs(const unsigned char *const *wr, size_t off, __m256 *dx, __m256 *mx) {
    uint32_t e[8];
    for (int r = 0; r < 8; r++) memcpy(&e[r], wr[r] + off, 4);
    const __m128i split = _mm_setr_epi8(0, 1, 4, 5, 8, 9, 12, 13, 2, 3, 6, 7, 10, 11, 14, 15);
    const __m128i a = _mm_shuffle_epi8(_mm_set_epi64x((long long)(e[2] | (uint64_t)e[3] << 32), (long long)(e[0] | (uint64_t)e[1] << 32)), split);
    const __m128i b = _mm_shuffle_epi8(_mm_set_epi64x((long long)(e[6] | (uint64_t)e[7] << 32), (long long)(e[4] | (uint64_t)e[5] << 32)), split);
    *dx = _mm256_cvtph_ps(_mm_unpacklo_epi64(a, b));
    *mx = _mm256_cvtph_ps(_mm_unpackhi_epi64(a, b));
}

QINLINE __m256i load_2x16(const void *lo, const void *hi) {
    return _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_loadu_si128((const __m128i *)lo)),
                                   _mm_loadu_si128((const __m128i *)hi), 1);
}

// Lane pattern of C per-activation values p[0..C-1] (lane l = r * C + c).
QINLINE __m256 lanes_of(const float *p, const int C) {
    if (C == 1) return _mm256_broadcast_ss(p);
    if (C == 2) return _mm256_castpd_ps(_mm256_broadcast_sd((const double *)p));
    return _mm256_broadcast_ps((const __m128 *)p);
}

// Lanes of the first nr weight rows and nc activation rows of a tile; lane of
// (r, c) at r * C + c (lanes_c = C) or c * 8 + r in acc[c] (the Q4 tiles).
QINLINE void store_lanes(float *out, size_t ldo, const float *lanes, int nr, int nc, const int C) {
    for (int r = 0; r < nr; r++)
        for (int c = 0; c < nc; c++) out[(size_t)c * ldo + (size_t)r] = lanes[r * C + c];
}

// Q4_0 / Q4_1: 8 weight rows x C = 1, 2, 4 activation rows, acc[c] lane r.
// Rows r and r + 4 share a vector (the block's 16 nibble bytes in each half);
// their low nibbles (elements 0..15) meet the activations' bytes 0..15 and
// the high nibbles (16..31) bytes 16..31, both broadcast to the two halves.
// The two vpmaddubsw results add up to 8 int16 lanes of 4 products per row;
// two vphaddw over the four row pairs leave 2 lanes of 16 products per row
// (at most 16 * 15 * 127 = 30480), and vpmaddwd gives each row's block sum in
// int32 lane r. Q4_0's -8 is taken out exactly as 8 * sum(y).
QINLINE void q4_rows8(int k, const unsigned char *w, size_t bw, const unsigned char *a, size_t ba,
                      const unsigned char *side, size_t sstride, size_t soff, float *out, size_t ldo, int nr,
                      int nc, int accumulate, const int C, const int FMT) {
    const int nb = k / WEFT_QK;
    const size_t xb = FMT == FMT_Q4_0 ? sizeof(weft_block_q4_0) : sizeof(weft_block_q4_1);
    const size_t yb = FMT == FMT_Q4_1 ? sizeof(weft_block_q8_1) : sizeof(weft_block_q8_0);
    const int xq = FMT == FMT_Q4_1 ? 4 : 2, yq = FMT == FMT_Q4_1 ? 4 : 2;
    const unsigned char *wr[8], *ar[4];
    for (int r = 0; r < 8; r++) wr[r] = w + (size_t)(r < nr ? r : nr - 1) * bw;
    for (int c = 0; c < C; c++) ar[c] = a + (size_t)(c < nc ? c : nc - 1) * ba;
    const __m256i m4 = _mm256_set1_epi8(0x0F), ones = _mm256_set1_epi16(1);
    __m256 acc[4];
    for (int c = 0; c < C; c++) {
        acc[c] = _mm256_setzero_ps();
        if (accumulate) {
            float init[8];
            for (int r = 0; r < 8; r++) init[r] = out[(size_t)(c < nc ? c : nc - 1) * ldo + (size_t)(r < nr ? r : nr - 1)];
            acc[c] = _mm256_loadu_ps(init);
        }
    }
    for (int ib = 0; ib < nb; ib++) {
        const size_t xo = (size_t)ib * xb, yo = (size_t)ib * yb;
        {   // The next 8-row tile's bytes into L2, at the pace this tile consumes
            // its own (8 * 18 or 20 bytes a block): the next tile's 8 row streams
            // are then warm when it starts. Without it the computation and the
            // memory stream barely overlapped (Q4_0 8.4 against 14.6-15.3 GB/s).
            const char *nx = (const char *)w + 8 * bw + (size_t)ib * 8 * xb;
            _mm_prefetch(nx, _MM_HINT_T1);
            _mm_prefetch(nx + 64, _MM_HINT_T1);
            _mm_prefetch(nx + 128, _MM_HINT_T1);
        }
        if (Q_PREFETCH && (ib & 3) == 0)  // and this tile's rows into L1
            for (int r = 0; r < 8; r++) _mm_prefetch((const char *)wr[r] + xo + Q_PREFETCH, Q_HINT);
        __m256i lo[4], hi[4];
        for (int r = 0; r < 4; r++) {
            const __m256i q = load_2x16(wr[r] + xo + xq, wr[r + 4] + xo + xq);
            lo[r] = _mm256_and_si256(q, m4);
            hi[r] = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
        }
        __m256 dx, mx = _mm256_setzero_ps();
        if (FMT == FMT_Q4_1)
            rows_fp16_pairs(wr, xo, &dx, &mx);
        else
            dx = rows_fp16(wr, xo, 8);
        for (int c = 0; c < C; c++) {
            const unsigned char *y = ar[c] + yo + yq;
            const __m256i y0 = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)y));
            const __m256i y1 = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)(y + 16)));
            __m256i s[4];
            for (int r = 0; r < 4; r++)
                s[r] = _mm256_add_epi16(_mm256_maddubs_epi16(lo[r], y0), _mm256_maddubs_epi16(hi[r], y1));
            const __m256i s16 = _mm256_hadd_epi16(_mm256_hadd_epi16(s[0], s[1]), _mm256_hadd_epi16(s[2], s[3]));
            __m256i sumi = _mm256_madd_epi16(s16, ones);
            const float *sd = (const float *)(side + (size_t)ib * sstride * 4) + c;
            if (FMT == FMT_Q4_0) sumi = _mm256_sub_epi32(sumi, _mm256_castps_si256(_mm256_broadcast_ss(sd + soff)));
            const __m256 dy = _mm256_broadcast_ss(sd), fs = _mm256_cvtepi32_ps(sumi);
            if (FMT == FMT_Q4_1)
                acc[c] = _mm256_add_ps(acc[c], _mm256_add_ps(_mm256_mul_ps(_mm256_mul_ps(dx, dy), fs),
                                                             _mm256_mul_ps(mx, _mm256_broadcast_ss(sd + soff))));
            else
                acc[c] = _mm256_add_ps(acc[c], _mm256_mul_ps(_mm256_mul_ps(fs, dx), dy));
        }
    }
    for (int c = 0; c < nc; c++) {
        if (nr == 8) {
            _mm256_storeu_ps(out + (size_t)c * ldo, acc[c]);
        } else {
            float lanes[8];
            _mm256_storeu_ps(lanes, acc[c]);
            store_lanes(out + (size_t)c * ldo, ldo, lanes, nr, 1, 1);
        }
    }
}

// Q8_0: R x C = 8 lanes (8 x 1, 4 x 2, 2 x 4), lane r * C + c. Each (r, c)
// product is |w| times sign(y, w) through vpmaddubsw and vpmaddwd (ggml's
// pattern, exact), 8 int32 lanes; a tree of vphaddd and one cross-half add
// puts the 8 block sums in the 8 lanes.
QINLINE void q8_lanes8(int k, const unsigned char *w, size_t bw, const unsigned char *a, size_t ba,
                       const unsigned char *side, size_t sstride, float *out, size_t ldo, int nr, int nc,
                       int accumulate, const int R, const int C) {
    const int nb = k / WEFT_QK;
    const size_t xb = sizeof(weft_block_q8_0), yb = sizeof(weft_block_q8_0);
    const unsigned char *wr[8], *ar[4];
    for (int r = 0; r < R; r++) wr[r] = w + (size_t)(r < nr ? r : nr - 1) * bw;
    for (int c = 0; c < C; c++) ar[c] = a + (size_t)(c < nc ? c : nc - 1) * ba;
    const __m256i ones = _mm256_set1_epi16(1);
    const __m256i expand = _mm256_setr_epi32(0 / C, 1 / C, 2 / C, 3 / C, 4 / C, 5 / C, 6 / C, 7 / C);
    __m256 acc = _mm256_setzero_ps();
    if (accumulate) {
        float init[8];
        for (int l = 0; l < 8; l++) {
            const int r = l / C, c = l % C;
            init[l] = out[(size_t)(c < nc ? c : nc - 1) * ldo + (size_t)(r < nr ? r : nr - 1)];
        }
        acc = _mm256_loadu_ps(init);
    }
    for (int ib = 0; ib < nb; ib++) {
        const size_t xo = (size_t)ib * xb, yo = (size_t)ib * yb;
        __m256i wv[8], yv[4], p[8];
        if (C > 1) {  // the next R-row tile into L2 at this tile's pace, as in q4_rows8
            // (measured better at m = 4; at m = 1 the per-row prefetch alone was)
            const char *nx = (const char *)w + (size_t)R * bw + (size_t)ib * R * xb;
            for (int o = 0; o < R * (int)xb; o += 64) _mm_prefetch(nx + o, _MM_HINT_T1);
        }
        if (Q_PREFETCH && (C == 1 || (ib & 1) == 0))
            for (int r = 0; r < R; r++) _mm_prefetch((const char *)wr[r] + xo + Q_PREFETCH, Q_HINT);
        for (int c = 0; c < C; c++) yv[c] = _mm256_loadu_si256((const __m256i *)(ar[c] + yo + 2));
        for (int r = 0; r < R; r++) wv[r] = _mm256_loadu_si256((const __m256i *)(wr[r] + xo + 2));
        for (int r = 0; r < R; r++)
            for (int c = 0; c < C; c++)
                p[r * C + c] = _mm256_madd_epi16(
                    _mm256_maddubs_epi16(_mm256_sign_epi8(wv[r], wv[r]), _mm256_sign_epi8(yv[c], wv[r])), ones);
        const __m256i g0 = _mm256_hadd_epi32(_mm256_hadd_epi32(p[0], p[1]), _mm256_hadd_epi32(p[2], p[3]));
        const __m256i g1 = _mm256_hadd_epi32(_mm256_hadd_epi32(p[4], p[5]), _mm256_hadd_epi32(p[6], p[7]));
        const __m256i sumi = _mm256_add_epi32(_mm256_permute2x128_si256(g0, g1, 0x20), _mm256_permute2x128_si256(g0, g1, 0x31));
        __m256 dx = rows_fp16(wr, xo, R);
        if (C > 1) dx = _mm256_permutevar8x32_ps(dx, expand);
        const float *sd = (const float *)(side + (size_t)ib * sstride * 4);
        acc = _mm256_add_ps(acc, _mm256_mul_ps(_mm256_cvtepi32_ps(sumi), _mm256_mul_ps(dx, lanes_of(sd, C))));
    }
    if (R == 8 && nr == 8) {
        _mm256_storeu_ps(out, acc);
        return;
    }
    float lanes[8];
    _mm256_storeu_ps(lanes, acc);
    store_lanes(out, ldo, lanes, nr, nc, C);
}

// Q8_0 at m = 1: whole rows one after the other, so that a thread reads its
// weight rows as one sequential stream (as ggml's row-by-row dot product
// does) instead of R interleaved short streams, and one prefetch pointer
// keeps ahead of it across row ends. Eight blocks of
// one row per step: their exact int32 sums in 8 lanes (the tiles' vphaddd
// tree), the scales' products in 8 lanes, t = (float)sumi * (dx * dy) as
// the reference rounds it, then the reference's running sum over the 8
// lanes in block order (a chain of dependent adds, which the next step's
// integer work overlaps). dy: the activation scales as float32, one per
// block (contiguous).
// Why: with the 8 x 1 tile at k = 2048 each tile started 8 cold 2176-byte
// streams and its 1 KiB per-row prefetch covered only the second half of
// each; a decode replay of the bench-1b shapes read 10.8-11.2 GB/s at
// k = 2048 (18.8 at k = 8192) against a 20 GB/s read loop. The row stream
// prefetches every line once, Q8_STREAM_PREFETCH bytes ahead, across row
// ends: 17-20 GB/s at every shape, 83-98 % of the read loop (measured 0,
// 1, 1.5, 2, 3, 4 KiB and T0/T1/NTA: no prefetch 14.5, 1 KiB 17, 2-4 KiB
// within the noise of each other; /tmp/coord/doc-q8.md).
#ifndef Q8_STREAM_PREFETCH
#define Q8_STREAM_PREFETCH 2048
#endif
#ifndef Q8_STREAM_HINT
#define Q8_STREAM_HINT _MM_HINT_T0
#endif

// The fp16 values at p + b * 34 of 8 consecutive blocks as float32 lanes.
QINLINE __m256 blocks_fp16(const unsigned char *p) {
    uint16_t e[8];
    for (int b = 0; b < 8; b++) memcpy(&e[b], p + (size_t)b * sizeof(weft_block_q8_0), 2);
    const uint64_t d0 = e[0] | (uint64_t)e[1] << 16 | (uint64_t)e[2] << 32 | (uint64_t)e[3] << 48;
    const uint64_t d1 = e[4] | (uint64_t)e[5] << 16 | (uint64_t)e[6] << 32 | (uint64_t)e[7] << 48;
    return _mm256_cvtph_ps(_mm_set_epi64x((long long)d1, (long long)d0));
}

QINLINE __m256i q8_block_p(const unsigned char *x, const unsigned char *y) {
    const __m256i wv = _mm256_loadu_si256((const __m256i *)(x + 2)), yv = _mm256_loadu_si256((const __m256i *)(y + 2));
    return _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_sign_epi8(wv, wv), _mm256_sign_epi8(yv, wv)),
                             _mm256_set1_epi16(1));
}

// s + the reference's sum over blocks [0, nb) of one row x against a.
// *pf: the next line to prefetch (every line once, Q8_STREAM_PREFETCH bytes
// ahead of the 8 blocks being read; NULL: none).
QINLINE float q8_row_stream(int nb, const unsigned char *x, const unsigned char *a, const float *dy, float s,
                            const char **pf) {
    const size_t B = sizeof(weft_block_q8_0);
    int ib = 0;
    for (; ib + 8 <= nb; ib += 8) {
        const unsigned char *xb = x + (size_t)ib * B, *yb = a + (size_t)ib * B;
        if (Q8_STREAM_PREFETCH && pf)
            for (const char *end = (const char *)xb + 8 * B + Q8_STREAM_PREFETCH; *pf < end; *pf += 64)
                _mm_prefetch(*pf, Q8_STREAM_HINT);
        __m256i p[8];
        for (int b = 0; b < 8; b++) p[b] = q8_block_p(xb + (size_t)b * B, yb + (size_t)b * B);
        const __m256i g0 = _mm256_hadd_epi32(_mm256_hadd_epi32(p[0], p[1]), _mm256_hadd_epi32(p[2], p[3]));
        const __m256i g1 = _mm256_hadd_epi32(_mm256_hadd_epi32(p[4], p[5]), _mm256_hadd_epi32(p[6], p[7]));
        const __m256i sumi = _mm256_add_epi32(_mm256_permute2x128_si256(g0, g1, 0x20), _mm256_permute2x128_si256(g0, g1, 0x31));
        const __m256 t = _mm256_mul_ps(_mm256_cvtepi32_ps(sumi), _mm256_mul_ps(blocks_fp16(xb), _mm256_loadu_ps(dy + ib)));
        float tl[8];
        _mm256_storeu_ps(tl, t);
        for (int b = 0; b < 8; b++) s += tl[b];
    }
    for (; ib < nb; ib++) {
        const unsigned char *xb = x + (size_t)ib * B;
        const __m256i p = q8_block_p(xb, a + (size_t)ib * B);
        __m128i q = _mm_add_epi32(_mm256_castsi256_si128(p), _mm256_extracti128_si256(p, 1));
        q = _mm_add_epi32(q, _mm_shuffle_epi32(q, 0x4E));
        q = _mm_add_epi32(q, _mm_shuffle_epi32(q, 0xB1));
        uint16_t dx;
        memcpy(&dx, xb, 2);
        s += (float)_mm_cvtsi128_si32(q) * (_cvtsh_ss(dx) * dy[ib]);
    }
    return s;
}

static QTARGET float q8_row_stream_avx2(int nb, const unsigned char *x, const unsigned char *a, const float *dy, float s) {
    return q8_row_stream(nb, x, a, dy, s, NULL);
}

// Rows [0, nrows) of w (row r at w + r * bw) against one activation row a
// (k elements), y[r] for each; dy as above.
static QTARGET void q8_0_avx2_rows(int k, const void *w, size_t bw, int nrows, const void *a, const float *dy, float *y) {
    const int nb = k / WEFT_QK;
    const char *pf = (const char *)((uintptr_t)w & ~(uintptr_t)63);
    for (int r = 0; r < nrows; r++)
        y[r] = q8_row_stream(nb, (const unsigned char *)w + (size_t)r * bw, a, dy, 0.0f, &pf);
}

#define Q4_TILE(name, FMT, C)                                                                           \
    static QTARGET void name(int k, const void *w, size_t bw, const void *a, size_t ba, const void *side, \
                             size_t ss, size_t so, float *y, size_t ldy, int nr, int nc, int acc) {      \
        q4_rows8(k, w, bw, a, ba, side, ss, so, y, ldy, nr, nc, acc, C, FMT);                            \
    }
#define Q8_TILE(name, R, C)                                                                             \
    static QTARGET void name(int k, const void *w, size_t bw, const void *a, size_t ba, const void *side, \
                             size_t ss, size_t so, float *y, size_t ldy, int nr, int nc, int acc) {      \
        (void)so;                                                                                        \
        q8_lanes8(k, w, bw, a, ba, side, ss, y, ldy, nr, nc, acc, R, C);                                 \
    }
Q4_TILE(q4_0_avx2_c1, FMT_Q4_0, 1)
Q4_TILE(q4_0_avx2_c2, FMT_Q4_0, 2)
Q4_TILE(q4_0_avx2_c4, FMT_Q4_0, 4)
Q4_TILE(q4_1_avx2_c1, FMT_Q4_1, 1)
Q4_TILE(q4_1_avx2_c2, FMT_Q4_1, 2)
Q4_TILE(q4_1_avx2_c4, FMT_Q4_1, 4)
Q8_TILE(q8_0_avx2_c1, 8, 1)
Q8_TILE(q8_0_avx2_c2, 4, 2)
Q8_TILE(q8_0_avx2_c4, 2, 4)

// One weight row against one activation row: the C = 1 tile with one valid
// row, the side data built on the stack for up to 256 blocks at a time.
static void single_dot(weft_qtile8_fn tile, int wtype, int k, const void *w, const void *a, float *y) {
    const size_t xb = weft_qtype_block_bytes(wtype);
    const size_t yb = wtype == WEFT_QTYPE_Q4_1 ? sizeof(weft_block_q8_1) : sizeof(weft_block_q8_0);
    unsigned char side[256 * 8 * 4];
    *y = 0.0f;
    for (int b0 = 0; b0 < k / WEFT_QK; b0 += 256) {
        const int nbc = k / WEFT_QK - b0 < 256 ? k / WEFT_QK - b0 : 256;
        const unsigned char *ac = (const unsigned char *)a + (size_t)b0 * yb;
        weft_qside_fill(wtype, 1, nbc, ac, 0, side);
        tile(nbc * WEFT_QK, (const unsigned char *)w + (size_t)b0 * xb, 0, ac, 0, side, 8, 4, y, 1, 1, 1, 1);
    }
}

// Q8_0's single dot product: the row stream, the activation scales converted
// on the stack 256 blocks at a time.
static void single_dot_q8_0(int k, const void *w, const void *a, float *y) {
    float dy[256], s = 0.0f;
    for (int b0 = 0; b0 < k / WEFT_QK; b0 += 256) {
        const int nbc = k / WEFT_QK - b0 < 256 ? k / WEFT_QK - b0 : 256;
        const unsigned char *ac = (const unsigned char *)a + (size_t)b0 * sizeof(weft_block_q8_0);
        for (int b = 0; b < nbc; b++) {
            uint16_t d;
            memcpy(&d, ac + (size_t)b * sizeof(weft_block_q8_0), 2);
            dy[b] = weft_fp16_to_fp32(d);
        }
        s = q8_row_stream_avx2(nbc, (const unsigned char *)w + (size_t)b0 * sizeof(weft_block_q8_0), ac, dy, s);
    }
    *y = s;
}

#define TILE_SET(name, wtype, R1, R2, R4, ROWS)                                                         \
    static void name##_1x1(int k, const void *w, size_t bw, const void *a, size_t ba, float *y,         \
                           size_t ldy) {                                                                \
        (void)bw; (void)ba; (void)ldy;                                                                  \
        if (wtype == WEFT_QTYPE_Q8_0) single_dot_q8_0(k, w, a, y);                                      \
        else single_dot(name##_c1, wtype, k, w, a, y);                                                  \
    }                                                                                                   \
    static const weft_qtiles name##_tiles = {name##_1x1, NULL, {NULL, NULL, NULL},                      \
                                             {name##_c1, name##_c2, name##_c4}, {R1, R2, R4}, ROWS};
TILE_SET(q4_0_avx2, WEFT_QTYPE_Q4_0, 8, 8, 8, NULL)
TILE_SET(q4_1_avx2, WEFT_QTYPE_Q4_1, 8, 8, 8, NULL)
TILE_SET(q8_0_avx2, WEFT_QTYPE_Q8_0, 8, 4, 2, q8_0_avx2_rows)

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
    q8_0_avx2_1x1(n, x, 0, y, 0, &s, 1);
    return s;
}
float weft_vec_dot_q4_0_q8_0_avx2(int n, const weft_block_q4_0 *x, const weft_block_q8_0 *y) {
    float s;
    q4_0_avx2_1x1(n, x, 0, y, 0, &s, 1);
    return s;
}
float weft_vec_dot_q4_1_q8_1_avx2(int n, const weft_block_q4_1 *x, const weft_block_q8_1 *y) {
    float s;
    q4_1_avx2_1x1(n, x, 0, y, 0, &s, 1);
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
