// Shared by igemm.c (driver) and igemm_avx2.c / igemm_avx512*.c (kernels).
// With IG_TARGET defined (a target attribute string) this header also
// defines the interleaved-panel kernels, so one source serves every ISA file:
// igemm_avx2.c compiles them for AVX2 + FMA + F16C, igemm_avx512.c for
// AVX-512 F/BW/VL (256-bit vectors), igemm_avx512vnni.c with IG_VNNI
// (vpdpbusd for the unsigned x signed byte dot products).
#ifndef WEFT_IGEMM_INTERNAL_H
#define WEFT_IGEMM_INTERNAL_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "weft_quant.h"

/// Interleaved-panel kernels (the fast AVX2 scheme, llama.cpp's repack gemm
/// done on the fly): per thread, 8 weight rows x a k piece are repacked into a
/// panel whose 32-byte vector g of each 32-element block holds bytes 4g..4g+3
/// of the 8 rows (nibbles widened to bytes), with the rows' scales as float32
/// vectors; one vpmaddubsw against a broadcast 4-byte group of one activation
/// row then gives 8 rows' partial sums side by side, so the integer sums stay
/// in int16 over a block and the scale FMA serves 8 (row, col) pairs at once.
/// The activation rows' float scales and sums ("side") are computed per piece.
typedef void (*weft_ig_pack_fn)(int nb, const unsigned char *w, size_t bw, int rows, unsigned char *panel);
typedef void (*weft_ig_side_fn)(int nb, const unsigned char *a, unsigned char *side);
typedef void (*weft_ig_ptile_fn)(int nb, const unsigned char *panel, const unsigned char *a, size_t ba,
                                 const unsigned char *side, size_t sstride, float *y, size_t ldy, int rows,
                                 int accumulate);
#define WEFT_IG_PANEL_RN 6
typedef struct {
    int rn;                      // activation rows per tile (weight rows: 8)
    size_t panel_block_bytes;    // panel bytes per block (32 or 256 elements) of 8 rows
    size_t side_block_bytes;     // side bytes per activation block
    weft_ig_pack_fn pack;
    weft_ig_side_fn side;
    weft_ig_ptile_fn tiles[WEFT_IG_PANEL_RN];  // tiles[rn - 1]
} weft_ig_panel_kernel;

const weft_ig_panel_kernel *weft_ig_panel_avx2(int wtype);
const weft_ig_panel_kernel *weft_ig_panel_avx512(int wtype);
const weft_ig_panel_kernel *weft_ig_panel_avx512vnni(int wtype);


#endif

// =============================================================== kernels
#if defined(IG_TARGET) && defined(__x86_64__) && !defined(WEFT_IGEMM_KERNELS_DEFINED)
#define WEFT_IGEMM_KERNELS_DEFINED
#include <immintrin.h>

#define IG_INLINE static inline __attribute__((always_inline)) __attribute__((target(IG_TARGET)))
#define IG_FN static __attribute__((target(IG_TARGET)))

IG_INLINE float ig_h2f(const unsigned char *p) {
    uint16_t h;
    memcpy(&h, p, 2);
    return _cvtsh_ss(h);
}

// Exact sums of 4 products of unsigned u and signed s bytes into 8 int32 lanes
// (vpmaddubsw cannot saturate here: |u| <= 128 (Q8_0's |w| through the sign
// trick), |s| <= 127, so a pair is at most 32512).
IG_INLINE __m256i ig_dot_us(__m256i u, __m256i s) {
#ifdef IG_VNNI
    return _mm256_dpbusd_epi32(_mm256_setzero_si256(), u, s);
#else
    return _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1));
#endif
}

// 32 elements of a Q4 block (low nibbles = elements 0..15, high = 16..31).
IG_INLINE __m256i ig_nibbles(const unsigned char *qs) {
    const __m128i q = _mm_loadu_si128((const __m128i *)qs);
    return _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(q, 4), q), _mm256_set1_epi8(0x0F));
}

// =================================================== interleaved panels
// 8x8 transpose of 32-bit elements: o[g] lane l = r[l] lane g.
IG_INLINE void ig_transpose8(const __m256i *r, __m256i *o) {
    __m256i t[8], u[8];
    for (int i = 0; i < 4; i++) {
        t[2 * i] = _mm256_unpacklo_epi32(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm256_unpackhi_epi32(r[2 * i], r[2 * i + 1]);
    }
    for (int i = 0; i < 2; i++) {
        u[4 * i + 0] = _mm256_unpacklo_epi64(t[4 * i], t[4 * i + 2]);
        u[4 * i + 1] = _mm256_unpackhi_epi64(t[4 * i], t[4 * i + 2]);
        u[4 * i + 2] = _mm256_unpacklo_epi64(t[4 * i + 1], t[4 * i + 3]);
        u[4 * i + 3] = _mm256_unpackhi_epi64(t[4 * i + 1], t[4 * i + 3]);
    }
    for (int g = 0; g < 4; g++) {
        o[g] = _mm256_permute2x128_si256(u[g], u[4 + g], 0x20);
        o[g + 4] = _mm256_permute2x128_si256(u[g], u[4 + g], 0x31);
    }
}

// Panel of a 32-element format, per block: 8 vectors (256 bytes) of q, then
// the 8 rows' d as float32 (32 bytes), then (Q4_1) their m (32 bytes); Q8_0
// adds 8 vectors of |q| (the signs stay in the first 8, for vpsignb).
enum { IG_P_Q4_0 = 0, IG_P_Q4_1 = 1, IG_P_Q8_0 = 2, IG_P_Q4_K = 3 };
#define IG_PB_Q4_0 (256 + 32)
#define IG_PB_Q4_1 (256 + 64)
#define IG_PB_Q8_0 (512 + 32)
// Q4_K, per super-block: 8 sub-blocks x 8 vectors of q (2048 bytes), 8 scale
// vectors (int16 sc[j] of row l in lanes 2l, 2l+1), 4 min vectors (lanes 2l,
// 2l+1 = m[2i], m[2i+1] of row l), d and dmin of the rows as float32.
#define IG_PB_Q4_K (2048 + 256 + 128 + 64)

IG_INLINE void ig_pack32(int nb, const unsigned char *w, size_t bw, int rows, unsigned char *panel, const int F) {
    const size_t wb = F == IG_P_Q8_0 ? sizeof(weft_block_q8_0) : F == IG_P_Q4_1 ? sizeof(weft_block_q4_1) : sizeof(weft_block_q4_0);
    const size_t pb = F == IG_P_Q8_0 ? IG_PB_Q8_0 : F == IG_P_Q4_1 ? IG_PB_Q4_1 : IG_PB_Q4_0;
    const int qo = F == IG_P_Q4_1 ? 4 : 2;
    for (int b = 0; b < nb; b++) {
        __m256i r[8], o[8];
        float d[8], m[8];
        unsigned char *pp = panel + (size_t)b * pb;
        for (int l = 0; l < 8; l++) {
            const unsigned char *p = w + (size_t)(l < rows ? l : rows - 1) * bw + (size_t)b * wb;
            r[l] = F == IG_P_Q8_0 ? _mm256_loadu_si256((const __m256i *)(p + qo)) : ig_nibbles(p + qo);
            d[l] = ig_h2f(p);
            m[l] = F == IG_P_Q4_1 ? ig_h2f(p + 2) : 0.0f;
        }
        ig_transpose8(r, o);
        for (int g = 0; g < 8; g++) _mm256_storeu_si256((__m256i *)(pp + 32 * g), o[g]);
        if (F == IG_P_Q8_0)
            for (int g = 0; g < 8; g++) _mm256_storeu_si256((__m256i *)(pp + 256 + 32 * g), _mm256_sign_epi8(o[g], o[g]));
        unsigned char *sp = pp + (F == IG_P_Q8_0 ? 512 : 256);
        memcpy(sp, d, 32);
        if (F == IG_P_Q4_1) memcpy(sp + 32, m, 32);
    }
}

IG_INLINE void ig_pack_q4_K(int nb, const unsigned char *w, size_t bw, int rows, unsigned char *panel) {
    const size_t wb = sizeof(weft_block_q4_K);
    const __m256i m4 = _mm256_set1_epi8(0x0F);
    for (int b = 0; b < nb; b++) {
        unsigned char *pp = panel + (size_t)b * IG_PB_Q4_K;
        int16_t sc[8][16], mn[4][16];
        float d[8], dm[8];
        for (int t = 0; t < 4; t++) {
            __m256i lo[8], hi[8], o[8];
            for (int l = 0; l < 8; l++) {
                const unsigned char *p = w + (size_t)(l < rows ? l : rows - 1) * bw + (size_t)b * wb;
                const __m256i raw = _mm256_loadu_si256((const __m256i *)(p + 16 + 32 * t));
                lo[l] = _mm256_and_si256(raw, m4);
                hi[l] = _mm256_and_si256(_mm256_srli_epi16(raw, 4), m4);
            }
            ig_transpose8(lo, o);
            for (int g = 0; g < 8; g++) _mm256_storeu_si256((__m256i *)(pp + 256 * (2 * t) + 32 * g), o[g]);
            ig_transpose8(hi, o);
            for (int g = 0; g < 8; g++) _mm256_storeu_si256((__m256i *)(pp + 256 * (2 * t + 1) + 32 * g), o[g]);
        }
        for (int l = 0; l < 8; l++) {
            const unsigned char *p = w + (size_t)(l < rows ? l : rows - 1) * bw + (size_t)b * wb;
            const unsigned char *q = p + 4;
            d[l] = ig_h2f(p);
            dm[l] = ig_h2f(p + 2);
            for (int j = 0; j < 8; j++) {
                int s, mm;
                if (j < 4) { s = q[j] & 63; mm = q[j + 4] & 63; }
                else { s = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4); mm = (q[j + 4] >> 4) | ((q[j] >> 6) << 4); }
                sc[j][2 * l] = sc[j][2 * l + 1] = (int16_t)s;
                mn[j / 2][2 * l + (j & 1)] = (int16_t)mm;
            }
        }
        memcpy(pp + 2048, sc, 256);
        memcpy(pp + 2048 + 256, mn, 128);
        memcpy(pp + 2048 + 384, d, 32);
        memcpy(pp + 2048 + 416, dm, 32);
    }
}

// Side data per activation block. Q8_0 (for Q4_0 and Q8_0): float d, int32
// 8 * sum(q) (Q4_0's -8 taken out exactly). Q8_1: float d, float s. Q8_K:
// float d, 8 int16 sums of the sub-blocks (bsums added pairwise).
#define IG_SB_32 8
#define IG_SB_K 32
IG_INLINE void ig_side32(int nb, const unsigned char *a, unsigned char *side, const int Q81) {
    for (int b = 0; b < nb; b++) {
        const unsigned char *p = a + (size_t)b * (Q81 ? sizeof(weft_block_q8_1) : sizeof(weft_block_q8_0));
        const float d = ig_h2f(p);
        memcpy(side + (size_t)b * IG_SB_32, &d, 4);
        if (Q81) {
            const float s = ig_h2f(p + 2);
            memcpy(side + (size_t)b * IG_SB_32 + 4, &s, 4);
        } else {
            const __m256i y = _mm256_loadu_si256((const __m256i *)(p + 2));
            const __m256i s16 = _mm256_maddubs_epi16(_mm256_set1_epi8(8), y);
            const __m256i s32 = _mm256_madd_epi16(s16, _mm256_set1_epi16(1));
            __m128i s = _mm_add_epi32(_mm256_castsi256_si128(s32), _mm256_extracti128_si256(s32, 1));
            s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4E));
            s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xB1));
            const int32_t v = _mm_cvtsi128_si32(s);
            memcpy(side + (size_t)b * IG_SB_32 + 4, &v, 4);
        }
    }
}

IG_INLINE void ig_side_K(int nb, const unsigned char *a, unsigned char *side) {
    for (int b = 0; b < nb; b++) {
        const unsigned char *p = a + (size_t)b * sizeof(weft_block_q8_K);
        memcpy(side + (size_t)b * IG_SB_K, p, 4);
        const __m128i bs = _mm_hadd_epi16(_mm_loadu_si128((const __m128i *)(p + 4 + 256)),
                                          _mm_loadu_si128((const __m128i *)(p + 4 + 256 + 16)));
        _mm_storeu_si128((__m128i *)(side + (size_t)b * IG_SB_K + 16), bs);
    }
}

IG_INLINE void ig_pstore(float *y, size_t ldy, const __m256 *acc, int RN, int rows, int accumulate) {
    for (int c = 0; c < RN; c++) {
        float *o = y + (size_t)c * ldy;
        if (rows == 8) {
            _mm256_storeu_ps(o, accumulate ? _mm256_add_ps(_mm256_loadu_ps(o), acc[c]) : acc[c]);
        } else {
            float v[8];
            _mm256_storeu_ps(v, acc[c]);
            for (int r = 0; r < rows; r++) o[r] = accumulate ? o[r] + v[r] : v[r];
        }
    }
}

IG_INLINE __m256i ig_bcast4(const unsigned char *p) {
    int32_t v;
    memcpy(&v, p, 4);
    return _mm256_set1_epi32(v);
}

// 8 weight rows x RN activation rows of a 32-element format.
IG_INLINE void ig_ptile32(int nb, const unsigned char *panel, const unsigned char *a, size_t ba,
                          const unsigned char *side, size_t sstride, float *y, size_t ldy, int rows, int accumulate,
                          const int RN, const int F) {
    const size_t pb = F == IG_P_Q8_0 ? IG_PB_Q8_0 : F == IG_P_Q4_1 ? IG_PB_Q4_1 : IG_PB_Q4_0;
    const size_t ab = F == IG_P_Q4_1 ? sizeof(weft_block_q8_1) : sizeof(weft_block_q8_0);
    const int yo = F == IG_P_Q4_1 ? 4 : 2;
    const __m256i ones = _mm256_set1_epi16(1);
    __m256 acc[WEFT_IG_PANEL_RN];
    for (int c = 0; c < RN; c++) acc[c] = _mm256_setzero_ps();
    for (int b = 0; b < nb; b++) {
        const unsigned char *pp = panel + (size_t)b * pb;
        __m256i s[WEFT_IG_PANEL_RN];
        for (int c = 0; c < RN; c++) s[c] = _mm256_setzero_si256();
        for (int g = 0; g < 8; g++) {
            const __m256i wq = _mm256_loadu_si256((const __m256i *)(pp + 32 * g));
            if (F == IG_P_Q8_0) {
                const __m256i wa = _mm256_loadu_si256((const __m256i *)(pp + 256 + 32 * g));
                for (int c = 0; c < RN; c++) {
                    const __m256i yv = ig_bcast4(a + (size_t)c * ba + (size_t)b * ab + yo + 4 * g);
                    s[c] = _mm256_add_epi32(s[c], ig_dot_us(wa, _mm256_sign_epi8(yv, wq)));
                }
            } else {
                for (int c = 0; c < RN; c++) {
                    const __m256i yv = ig_bcast4(a + (size_t)c * ba + (size_t)b * ab + yo + 4 * g);
#ifdef IG_VNNI
                    s[c] = _mm256_dpbusd_epi32(s[c], wq, yv);
#else
                    s[c] = _mm256_add_epi16(s[c], _mm256_maddubs_epi16(wq, yv));
#endif
                }
            }
        }
        const __m256 dw = _mm256_loadu_ps((const float *)(pp + (F == IG_P_Q8_0 ? 512 : 256)));
        const __m256 mw = F == IG_P_Q4_1 ? _mm256_loadu_ps((const float *)(pp + 256 + 32)) : _mm256_setzero_ps();
        for (int c = 0; c < RN; c++) {
            const unsigned char *sd = side + (size_t)c * sstride + (size_t)b * IG_SB_32;
            __m256i si = s[c];
#ifndef IG_VNNI
            if (F != IG_P_Q8_0) si = _mm256_madd_epi16(si, ones);
#endif
            if (F == IG_P_Q4_0) si = _mm256_sub_epi32(si, _mm256_castps_si256(_mm256_broadcast_ss((const float *)(sd + 4))));
            acc[c] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(si), _mm256_mul_ps(dw, _mm256_broadcast_ss((const float *)sd)), acc[c]);
            if (F == IG_P_Q4_1) acc[c] = _mm256_fmadd_ps(mw, _mm256_broadcast_ss((const float *)(sd + 4)), acc[c]);
        }
    }
    (void)ones;
    ig_pstore(y, ldy, acc, RN, rows, accumulate);
}

// 8 weight rows x RN activation rows of Q4_K.
IG_INLINE void ig_ptile_q4_K(int nb, const unsigned char *panel, const unsigned char *a, size_t ba,
                             const unsigned char *side, size_t sstride, float *y, size_t ldy, int rows, int accumulate,
                             const int RN) {
    const size_t ab = sizeof(weft_block_q8_K);
    __m256 acc[WEFT_IG_PANEL_RN];
    for (int c = 0; c < RN; c++) acc[c] = _mm256_setzero_ps();
    for (int b = 0; b < nb; b++) {
        const unsigned char *pp = panel + (size_t)b * IG_PB_Q4_K;
        __m256i sumi[WEFT_IG_PANEL_RN];
        for (int c = 0; c < RN; c++) sumi[c] = _mm256_setzero_si256();
        for (int j = 0; j < 8; j++) {
            __m256i s[WEFT_IG_PANEL_RN];
            for (int c = 0; c < RN; c++) s[c] = _mm256_setzero_si256();
            for (int g = 0; g < 8; g++) {
                const __m256i wq = _mm256_loadu_si256((const __m256i *)(pp + 256 * j + 32 * g));
                for (int c = 0; c < RN; c++) {
                    const __m256i yv = ig_bcast4(a + (size_t)c * ba + (size_t)b * ab + 4 + 32 * j + 4 * g);
                    s[c] = _mm256_add_epi16(s[c], _mm256_maddubs_epi16(wq, yv));
                }
            }
            const __m256i scv = _mm256_loadu_si256((const __m256i *)(pp + 2048 + 32 * j));
            for (int c = 0; c < RN; c++) sumi[c] = _mm256_add_epi32(sumi[c], _mm256_madd_epi16(s[c], scv));
        }
        const __m256 dw = _mm256_loadu_ps((const float *)(pp + 2048 + 384));
        const __m256 dmw = _mm256_loadu_ps((const float *)(pp + 2048 + 416));
        for (int c = 0; c < RN; c++) {
            const unsigned char *sd = side + (size_t)c * sstride + (size_t)b * IG_SB_K;
            __m256i summ = _mm256_setzero_si256();
            for (int i = 0; i < 4; i++)
                summ = _mm256_add_epi32(summ, _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)(pp + 2048 + 256 + 32 * i)),
                                                                ig_bcast4(sd + 16 + 4 * i)));
            const __m256 yd = _mm256_broadcast_ss((const float *)sd);
            acc[c] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sumi[c]), _mm256_mul_ps(dw, yd), acc[c]);
            acc[c] = _mm256_fnmadd_ps(_mm256_cvtepi32_ps(summ), _mm256_mul_ps(dmw, yd), acc[c]);
        }
    }
    ig_pstore(y, ldy, acc, RN, rows, accumulate);
}

// Q6_K, per super-block: 8 chunks x 8 vectors of q (0..63, 2048 bytes); 16
// scale vectors (int16 sc[g] of row l in lanes 2l, 2l+1; 512 bytes); 8 pair
// vectors (lanes 2l, 2l+1 = sc[2i], sc[2i+1] of row l; 256 bytes) for the -32
// offset, 32 * sum_g sc[g] * bsums[g]; d of the rows as float32.
#define IG_PB_Q6_K (2048 + 512 + 256 + 32)
// Side for Q6_K: float d, then the 16 int16 bsums at byte 16.
#define IG_SB_K6 48

IG_INLINE void ig_pack_q6_K(int nb, const unsigned char *w, size_t bw, int rows, unsigned char *panel) {
    const size_t wb = sizeof(weft_block_q6_K);
    const __m256i m4 = _mm256_set1_epi8(0x0F), m3 = _mm256_set1_epi8(0x03);
    for (int b = 0; b < nb; b++) {
        unsigned char *pp = panel + (size_t)b * IG_PB_Q6_K;
        for (int t = 0; t < 8; t++) {
            const int h = t / 4, quarter = t % 4;
            __m256i r[8], o[8];
            for (int l = 0; l < 8; l++) {
                const unsigned char *p = w + (size_t)(l < rows ? l : rows - 1) * bw + (size_t)b * wb;
                const __m256i qlv = _mm256_loadu_si256((const __m256i *)(p + 64 * h + 32 * (quarter & 1)));
                const __m256i qhv = _mm256_loadu_si256((const __m256i *)(p + 128 + 32 * h));
                const __m256i lo = quarter < 2 ? _mm256_and_si256(qlv, m4) : _mm256_and_si256(_mm256_srli_epi16(qlv, 4), m4);
                const __m256i hb = _mm256_and_si256(_mm256_srli_epi16(qhv, 2 * quarter), m3);
                r[l] = _mm256_or_si256(lo, _mm256_slli_epi16(hb, 4));
            }
            ig_transpose8(r, o);
            for (int g = 0; g < 8; g++) _mm256_storeu_si256((__m256i *)(pp + 256 * t + 32 * g), o[g]);
        }
        int16_t sc[16][16], pr[8][16];
        float d[8];
        for (int l = 0; l < 8; l++) {
            const unsigned char *p = w + (size_t)(l < rows ? l : rows - 1) * bw + (size_t)b * wb;
            const int8_t *s8 = (const int8_t *)(p + 192);
            for (int g = 0; g < 16; g++) {
                sc[g][2 * l] = sc[g][2 * l + 1] = s8[g];
                pr[g / 2][2 * l + (g & 1)] = s8[g];
            }
            d[l] = ig_h2f(p + 208);
        }
        memcpy(pp + 2048, sc, 512);
        memcpy(pp + 2048 + 512, pr, 256);
        memcpy(pp + 2048 + 768, d, 32);
    }
}

IG_INLINE void ig_side_K6(int nb, const unsigned char *a, unsigned char *side) {
    for (int b = 0; b < nb; b++) {
        const unsigned char *p = a + (size_t)b * sizeof(weft_block_q8_K);
        memcpy(side + (size_t)b * IG_SB_K6, p, 4);
        memcpy(side + (size_t)b * IG_SB_K6 + 16, p + 4 + 256, 32);
    }
}

// 8 weight rows x RN activation rows of Q6_K. vpmaddubsw pairs reach
// 2 * 63 * 127 = 16002, so two of them (8 elements) are added in int16 before
// vpmaddwd with the 16-element group's scale.
IG_INLINE void ig_ptile_q6_K(int nb, const unsigned char *panel, const unsigned char *a, size_t ba,
                             const unsigned char *side, size_t sstride, float *y, size_t ldy, int rows, int accumulate,
                             const int RN) {
    const size_t ab = sizeof(weft_block_q8_K);
    __m256 acc[WEFT_IG_PANEL_RN];
    for (int c = 0; c < RN; c++) acc[c] = _mm256_setzero_ps();
    for (int b = 0; b < nb; b++) {
        const unsigned char *pp = panel + (size_t)b * IG_PB_Q6_K;
        __m256i sumi[WEFT_IG_PANEL_RN];
        for (int c = 0; c < RN; c++) sumi[c] = _mm256_setzero_si256();
        for (int t = 0; t < 8; t++) {
            for (int hq = 0; hq < 4; hq++) {  // pairs of groups of 4 elements
                const __m256i w0 = _mm256_loadu_si256((const __m256i *)(pp + 256 * t + 64 * hq));
                const __m256i w1 = _mm256_loadu_si256((const __m256i *)(pp + 256 * t + 64 * hq + 32));
                const __m256i scv = _mm256_loadu_si256((const __m256i *)(pp + 2048 + 32 * (2 * t + hq / 2)));
                for (int c = 0; c < RN; c++) {
                    const unsigned char *q = a + (size_t)c * ba + (size_t)b * ab + 4 + 32 * t + 8 * hq;
                    const __m256i s16 = _mm256_add_epi16(_mm256_maddubs_epi16(w0, ig_bcast4(q)),
                                                         _mm256_maddubs_epi16(w1, ig_bcast4(q + 4)));
                    sumi[c] = _mm256_add_epi32(sumi[c], _mm256_madd_epi16(s16, scv));
                }
            }
        }
        const __m256 dw = _mm256_loadu_ps((const float *)(pp + 2048 + 768));
        for (int c = 0; c < RN; c++) {
            const unsigned char *sd = side + (size_t)c * sstride + (size_t)b * IG_SB_K6;
            __m256i corr = _mm256_setzero_si256();
            for (int i = 0; i < 8; i++)
                corr = _mm256_add_epi32(corr, _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)(pp + 2048 + 512 + 32 * i)),
                                                                ig_bcast4(sd + 16 + 4 * i)));
            const __m256i si = _mm256_sub_epi32(sumi[c], _mm256_slli_epi32(corr, 5));
            acc[c] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(si), _mm256_mul_ps(dw, _mm256_broadcast_ss((const float *)sd)), acc[c]);
        }
    }
    ig_pstore(y, ldy, acc, RN, rows, accumulate);
}

#define IG_PTILE(name, call, RN)                                                                           \
    IG_FN void name##_##RN(int nb, const unsigned char *panel, const unsigned char *a, size_t ba,          \
                           const unsigned char *side, size_t sstride, float *y, size_t ldy, int rows,      \
                           int accumulate) {                                                               \
        call;                                                                                              \
    }
#define IG_PTILES(name, callm) \
    IG_PTILE(name, callm(1), 1) IG_PTILE(name, callm(2), 2) IG_PTILE(name, callm(3), 3) \
    IG_PTILE(name, callm(4), 4) IG_PTILE(name, callm(5), 5) IG_PTILE(name, callm(6), 6)
#define IG_PTABLE(name) {name##_1, name##_2, name##_3, name##_4, name##_5, name##_6}
#define IG_PC_Q4_0(RN) ig_ptile32(nb, panel, a, ba, side, sstride, y, ldy, rows, accumulate, RN, IG_P_Q4_0)
#define IG_PC_Q4_1(RN) ig_ptile32(nb, panel, a, ba, side, sstride, y, ldy, rows, accumulate, RN, IG_P_Q4_1)
#define IG_PC_Q8_0(RN) ig_ptile32(nb, panel, a, ba, side, sstride, y, ldy, rows, accumulate, RN, IG_P_Q8_0)
#define IG_PC_Q4_K(RN) ig_ptile_q4_K(nb, panel, a, ba, side, sstride, y, ldy, rows, accumulate, RN)
#define IG_PC_Q6_K(RN) ig_ptile_q6_K(nb, panel, a, ba, side, sstride, y, ldy, rows, accumulate, RN)

#define IG_PANELS(prefix)                                                                                  \
    IG_PTILES(prefix##_p_q4_0, IG_PC_Q4_0)                                                                 \
    IG_PTILES(prefix##_p_q4_1, IG_PC_Q4_1)                                                                 \
    IG_PTILES(prefix##_p_q8_0, IG_PC_Q8_0)                                                                 \
    IG_PTILES(prefix##_p_q4_k, IG_PC_Q4_K)                                                                 \
    IG_PTILES(prefix##_p_q6_k, IG_PC_Q6_K)                                                                 \
    IG_FN void prefix##_pack_q6_k(int nb, const unsigned char *w, size_t bw, int rows, unsigned char *p) { \
        ig_pack_q6_K(nb, w, bw, rows, p);                                                                  \
    }                                                                                                      \
    IG_FN void prefix##_side_q8_k6(int nb, const unsigned char *a, unsigned char *s) { ig_side_K6(nb, a, s); } \
    IG_FN void prefix##_pack_q4_0(int nb, const unsigned char *w, size_t bw, int rows, unsigned char *p) { \
        ig_pack32(nb, w, bw, rows, p, IG_P_Q4_0);                                                          \
    }                                                                                                      \
    IG_FN void prefix##_pack_q4_1(int nb, const unsigned char *w, size_t bw, int rows, unsigned char *p) { \
        ig_pack32(nb, w, bw, rows, p, IG_P_Q4_1);                                                          \
    }                                                                                                      \
    IG_FN void prefix##_pack_q8_0(int nb, const unsigned char *w, size_t bw, int rows, unsigned char *p) { \
        ig_pack32(nb, w, bw, rows, p, IG_P_Q8_0);                                                          \
    }                                                                                                      \
    IG_FN void prefix##_pack_q4_k(int nb, const unsigned char *w, size_t bw, int rows, unsigned char *p) { \
        ig_pack_q4_K(nb, w, bw, rows, p);                                                                  \
    }                                                                                                      \
    IG_FN void prefix##_side_q8_0(int nb, const unsigned char *a, unsigned char *s) { ig_side32(nb, a, s, 0); } \
    IG_FN void prefix##_side_q8_1(int nb, const unsigned char *a, unsigned char *s) { ig_side32(nb, a, s, 1); } \
    IG_FN void prefix##_side_q8_k(int nb, const unsigned char *a, unsigned char *s) { ig_side_K(nb, a, s); }

#endif
