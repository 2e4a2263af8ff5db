// Internal: the 16-bit decode kernel and the panel packers, written once over
// a small vector vocabulary and instantiated per ISA by wgemm_avx2.c and
// wgemm_avx512.c. The including file defines, under its target attribute
// (W_TARGET / W_INLINE):
//
//   wv, WVW                 vector of WVW floats
//   W_FN(name)              name##_<isa>
//   w_zero w_load w_store w_fma     (fma(a, b, c) = a * b + c)
//   w_hsum                  horizontal sum
//   w_load_f16(p) w_load_bf16(p)   WVW 16-bit floats widened to float32
//   W_MX, W_RW              activation rows and weight rows per register tile
//
// The pack functions use 8 x 8 float transposes in 256-bit registers (AVX2
// instructions, which every AVX-512 CPU has).
#ifndef W_FN
#error "include wgemm_simd.h from an ISA file"
#endif


W_INLINE float W_FN(widen1)(const int bf16, uint16_t h) {
    if (bf16) {
        uint32_t bits = (uint32_t)h << 16;
        float f;
        memcpy(&f, &bits, sizeof f);
        return f;
    }
    return _cvtsh_ss(h);
}

// kind 0: F16, 1: BF16, 2: float32.
W_INLINE wv W_FN(widen)(const int kind, const void *p) {
    if (kind == 2) return w_load((const float *)p);
    return kind == 1 ? w_load_bf16((const uint16_t *)p) : w_load_f16((const uint16_t *)p);
}

W_INLINE float W_FN(elem)(const int kind, const void *p, size_t at) {
    if (kind == 2) return ((const float *)p)[at];
    return W_FN(widen1)(kind, ((const uint16_t *)p)[at]);
}

// y[i][r] (+)= dot(x[i], w[r]) over [0, kc) for MX activation rows and RW
// weight rows: MX * RW accumulators, each weight vector widened once and used
// MX times, each activation vector loaded once and used RW times.
W_INLINE void W_FN(tile16)(const int kind, const int MX, const int RW, int kc, const float *x,
                           size_t ldx, const void *w, size_t ldw, float *y, size_t ldy,
                           int accumulate) {
    const size_t es = kind == 2 ? 4 : 2;
    wv acc[W_MX][W_RW];
#pragma GCC unroll 16
    for (int i = 0; i < MX; i++)
#pragma GCC unroll 16
        for (int r = 0; r < RW; r++) acc[i][r] = w_zero();
    int kk = 0;
    for (; kk + WVW <= kc; kk += WVW) {
        wv wr[W_RW];
#pragma GCC unroll 16
        for (int r = 0; r < RW; r++) wr[r] = W_FN(widen)(kind, (const char *)w + ((size_t)r * ldw + kk) * es);
#pragma GCC unroll 16
        for (int i = 0; i < MX; i++) {
            wv xv = w_load(x + (size_t)i * ldx + kk);
#pragma GCC unroll 16
            for (int r = 0; r < RW; r++) acc[i][r] = w_fma(xv, wr[r], acc[i][r]);
        }
    }
#pragma GCC unroll 16
    for (int i = 0; i < MX; i++) {
#pragma GCC unroll 16
        for (int r = 0; r < RW; r++) {
            float s = w_hsum(acc[i][r]);
            for (int t = kk; t < kc; t++)
                s += x[(size_t)i * ldx + t] * W_FN(elem)(kind, w, (size_t)r * ldw + t);
            float *yo = y + (size_t)i * ldy + r;
            *yo = accumulate ? *yo + s : s;
        }
    }
}

#define W_TILE_FN(B, MX, RW)                                                                    \
    static W_TARGET void W_FN(tile16_##B##_##MX##_##RW)(int kc, const float *x, size_t ldx,   \
                                                       const void *w, size_t ldw, float *y, \
                                                       size_t ldy, int accumulate) {           \
        W_FN(tile16)(B, MX, RW, kc, x, ldx, w, ldw, y, ldy, accumulate);                      \
    }
#if W_RW >= 4
#define W_TILE_FNS(B, MX) W_TILE_FN(B, MX, 1) W_TILE_FN(B, MX, 2) W_TILE_FN(B, MX, 3) W_TILE_FN(B, MX, 4)
#define W_TILE_ROW(B, MX) {0, W_FN(tile16_##B##_##MX##_1), W_FN(tile16_##B##_##MX##_2), \
                           W_FN(tile16_##B##_##MX##_3), W_FN(tile16_##B##_##MX##_4)}
#else
#define W_TILE_FNS(B, MX) W_TILE_FN(B, MX, 1) W_TILE_FN(B, MX, 2) W_TILE_FN(B, MX, 3)
#define W_TILE_ROW(B, MX) {0, W_FN(tile16_##B##_##MX##_1), W_FN(tile16_##B##_##MX##_2), \
                           W_FN(tile16_##B##_##MX##_3)}
#endif
W_TILE_FNS(0, 1) W_TILE_FNS(0, 2) W_TILE_FNS(0, 3)
W_TILE_FNS(1, 1) W_TILE_FNS(1, 2) W_TILE_FNS(1, 3)
W_TILE_FNS(2, 1) W_TILE_FNS(2, 2) W_TILE_FNS(2, 3)
#if W_MX >= 4
W_TILE_FNS(0, 4) W_TILE_FNS(1, 4) W_TILE_FNS(2, 4)
#endif

typedef void (*W_FN(tile_fn))(int, const float *, size_t, const void *, size_t, float *, size_t, int);
static const W_FN(tile_fn) W_FN(tiles)[3][W_MX + 1][W_RW + 1] = {
    {{0}, W_TILE_ROW(0, 1), W_TILE_ROW(0, 2), W_TILE_ROW(0, 3),
#if W_MX >= 4
     W_TILE_ROW(0, 4),
#endif
    },
    {{0}, W_TILE_ROW(1, 1), W_TILE_ROW(1, 2), W_TILE_ROW(1, 3),
#if W_MX >= 4
     W_TILE_ROW(1, 4),
#endif
    },
    {{0}, W_TILE_ROW(2, 1), W_TILE_ROW(2, 2), W_TILE_ROW(2, 3),
#if W_MX >= 4
     W_TILE_ROW(2, 4),
#endif
    },
};

// Columns of a K chunk when several activation groups share each weight tile:
// the chunk of x (m * 1024 floats) stays in L2 while the tiles stream past,
// and the tile's weights are widened once into a float32 buffer in L1 (rows
// W_KCHUNK + 16 floats apart: a 4 KiB stride would put every row in the same
// L1 sets).
#define W_KCHUNK 1024
#define W_WIDE_LD (W_KCHUNK + 16)

W_TARGET void W_FN(weft_wgemm16_rows)(int bf16, int m, long j0, long j1, int k, const float *x,
                                      size_t ldx, const uint16_t *w, float *y, size_t ldy) {
    bf16 = bf16 != 0;
    int groups = (m + W_MX - 1) / W_MX, base = m / groups, extra = m % groups;
    if (groups <= 2) {  // decode: weight rows widened in registers (the second group rereads them from L1/L2)
        for (long j = j0; j < j1; j += W_RW) {
            int rw = j1 - j < W_RW ? (int)(j1 - j) : W_RW;
            for (int g = 0, row = 0; g < groups; g++) {
                int rows = base + (g < extra);
                W_FN(tiles)[bf16][rows][rw](k, x + (size_t)row * ldx, ldx, w + (size_t)j * (size_t)k, (size_t)k,
                                            y + (size_t)row * ldy + j, ldy, 0);
                row += rows;
            }
        }
        return;
    }
    float wide[W_RW * W_WIDE_LD] __attribute__((aligned(64)));
    for (int pc = 0; pc < k; pc += W_KCHUNK) {
        int kc = k - pc < W_KCHUNK ? k - pc : W_KCHUNK;
        for (long j = j0; j < j1; j += W_RW) {
            int rw = j1 - j < W_RW ? (int)(j1 - j) : W_RW;
            const uint16_t *wj = w + (size_t)j * (size_t)k + pc;
            for (int r = 0; r < rw; r++) {
                int kk = 0;
                // The next tile's chunk is prefetched meanwhile: chunks of rows
                // 4 KiB and more apart are too short for the hardware prefetcher.
                const char *next = (const char *)(wj + (size_t)(r + W_RW) * k);
                int pf = j + W_RW < j1;
                for (; kk + WVW <= kc; kk += WVW) {
                    if (pf && (kk * 2) % 64 == 0) _mm_prefetch(next + kk * 2, _MM_HINT_T0);
                    w_store(wide + (size_t)r * W_WIDE_LD + kk, W_FN(widen)(bf16, wj + (size_t)r * k + kk));
                }
                for (; kk < kc; kk++) wide[(size_t)r * W_WIDE_LD + kk] = W_FN(widen1)(bf16, wj[(size_t)r * k + kk]);
            }
            for (int g = 0, row = 0; g < groups; g++) {
                int rows = base + (g < extra);
                W_FN(tiles)[2][rows][rw](kc, x + (size_t)row * ldx + pc, ldx, wide, W_WIDE_LD,
                                         y + (size_t)row * ldy + j, ldy, pc > 0);
                row += rows;
            }
        }
    }
}

// 8 x 8 transpose: r[c] becomes column c of the input rows.
W_INLINE void W_FN(transpose8)(__m256 r[8]) {
    __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
    __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
    __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
    __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
    __m256 s0 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(1, 0, 1, 0));
    __m256 s1 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(3, 2, 3, 2));
    __m256 s2 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(1, 0, 1, 0));
    __m256 s3 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(3, 2, 3, 2));
    __m256 s4 = _mm256_shuffle_ps(t4, t6, _MM_SHUFFLE(1, 0, 1, 0));
    __m256 s5 = _mm256_shuffle_ps(t4, t6, _MM_SHUFFLE(3, 2, 3, 2));
    __m256 s6 = _mm256_shuffle_ps(t5, t7, _MM_SHUFFLE(1, 0, 1, 0));
    __m256 s7 = _mm256_shuffle_ps(t5, t7, _MM_SHUFFLE(3, 2, 3, 2));
    r[0] = _mm256_permute2f128_ps(s0, s4, 0x20);
    r[1] = _mm256_permute2f128_ps(s1, s5, 0x20);
    r[2] = _mm256_permute2f128_ps(s2, s6, 0x20);
    r[3] = _mm256_permute2f128_ps(s3, s7, 0x20);
    r[4] = _mm256_permute2f128_ps(s0, s4, 0x31);
    r[5] = _mm256_permute2f128_ps(s1, s5, 0x31);
    r[6] = _mm256_permute2f128_ps(s2, s6, 0x31);
    r[7] = _mm256_permute2f128_ps(s3, s7, 0x31);
}

// Elements kk..kk+7 (kk a multiple of 8) of a block-format row: block kk/32,
// ggml's layouts (weft_quant.h), value = q * d (Q8_0), (q - 8) * d (Q4_0),
// q * d + m (Q4_1), computed as the reference dequantizers do.
W_INLINE __m256 W_FN(block8)(const int kind, const unsigned char *row, int kk) {
    const int o = kk & 31;
    if (kind == 3) {
        const weft_block_q8_0 *b = (const weft_block_q8_0 *)row + kk / 32;
        __m256i q = _mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(b->qs + o)));
        return _mm256_mul_ps(_mm256_cvtepi32_ps(q), _mm256_set1_ps(_cvtsh_ss(b->d)));
    }
    const uint8_t *qs;
    uint16_t d, mn = 0;
    if (kind == 4) {
        const weft_block_q4_0 *b = (const weft_block_q4_0 *)row + kk / 32;
        qs = b->qs;
        d = b->d;
    } else {
        const weft_block_q4_1 *b = (const weft_block_q4_1 *)row + kk / 32;
        qs = b->qs;
        d = b->d;
        mn = b->m;
    }
    __m256i q = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(qs + (o & 15))));
    if (o >= 16) q = _mm256_srli_epi32(q, 4);
    q = _mm256_and_si256(q, _mm256_set1_epi32(15));
    if (kind == 4) {
        q = _mm256_sub_epi32(q, _mm256_set1_epi32(8));
        return _mm256_mul_ps(_mm256_cvtepi32_ps(q), _mm256_set1_ps(_cvtsh_ss(d)));
    }
    // q * d + m, rounded twice as the reference's x * d + m (no fused multiply-add)
    return _mm256_add_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(q), _mm256_set1_ps(_cvtsh_ss(d))),
                         _mm256_set1_ps(_cvtsh_ss(mn)));
}

W_INLINE __m256 W_FN(row8)(const int kind, const void *rows, size_t ld, int r, int kk) {
    if (kind >= 3) return W_FN(block8)(kind, (const unsigned char *)rows + (size_t)r * ld, kk);
    if (kind == 2) return _mm256_loadu_ps((const float *)rows + (size_t)r * ld + kk);
    __m128i h = _mm_loadu_si128((const __m128i *)((const uint16_t *)rows + (size_t)r * ld + kk));
    if (kind == 1) return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
    return _mm256_cvtph_ps(h);
}

// kind: 0 F16, 1 BF16, 2 float32 (ld in elements); 3 Q8_0, 4 Q4_0, 5 Q4_1
// (ld in bytes, kc a multiple of 32).
W_INLINE void W_FN(pack)(const int kind, const void *rows, size_t ld, int nrows, int kc, float *dst) {
    const int NR = WEFT_GEMM_NR;
    int kc8 = kc & ~7;  // all of kc for the block formats
    for (int r0 = 0; r0 < NR; r0 += 8) {
        int live = nrows - r0 < 8 ? (nrows - r0 > 0 ? nrows - r0 : 0) : 8;
        if (live == 0) {
            for (int kk = 0; kk < kc; kk++) _mm256_storeu_ps(dst + (size_t)kk * NR + r0, _mm256_setzero_ps());
            continue;
        }
        for (int kk = 0; kk < kc8; kk += 8) {
            __m256 v[8];
            if (live == 8) {
#pragma GCC unroll 8
                for (int r = 0; r < 8; r++) v[r] = W_FN(row8)(kind, rows, ld, r0 + r, kk);
            } else {
                for (int r = 0; r < 8; r++)
                    v[r] = r < live ? W_FN(row8)(kind, rows, ld, r0 + r, kk) : _mm256_setzero_ps();
            }
            W_FN(transpose8)(v);
#pragma GCC unroll 8
            for (int c = 0; c < 8; c++) _mm256_storeu_ps(dst + (size_t)(kk + c) * NR + r0, v[c]);
        }
        for (int kk = kc8; kk < kc; kk++)
            for (int r = 0; r < 8; r++) {
                float f = 0.0f;
                if (r < live) {
                    size_t at = (size_t)(r0 + r) * ld + kk;
                    f = kind == 2 ? ((const float *)rows)[at]
                                  : W_FN(widen1)(kind, ((const uint16_t *)rows)[at]);
                }
                dst[(size_t)kk * NR + r0 + r] = f;
            }
    }
}

W_TARGET void W_FN(weft_wgemm_pack16)(int bf16, const uint16_t *w, size_t ldw, int nrows, int kc,
                                      float *dst) {
    if (bf16) W_FN(pack)(1, w, ldw, nrows, kc, dst);
    else W_FN(pack)(0, w, ldw, nrows, kc, dst);
}

W_TARGET void W_FN(weft_wgemm_pack32)(const float *rows, size_t ldr, int nrows, int kc, float *dst) {
    W_FN(pack)(2, rows, ldr, nrows, kc, dst);
}

W_TARGET int W_FN(weft_wgemm_packq)(int wtype, const void *w, size_t row_bytes, int nrows, int kc,
                                    float *dst) {
    switch (wtype) {
    case WEFT_WTYPE_Q8_0: W_FN(pack)(3, w, row_bytes, nrows, kc, dst); return 1;
    case WEFT_WTYPE_Q4_0: W_FN(pack)(4, w, row_bytes, nrows, kc, dst); return 1;
    case WEFT_WTYPE_Q4_1: W_FN(pack)(5, w, row_bytes, nrows, kc, dst); return 1;
    default: return 0;
    }
}

// Read loop of weft_wgemm_read_loop: four independent 64-byte lines per step.
W_TARGET uint64_t W_FN(weft_wgemm_read)(const unsigned char *p, size_t bytes) {
    __m256i a = _mm256_setzero_si256(), b = a, c = a, d = a;
    size_t i = 0;
    for (; i + 256 <= bytes; i += 256) {
        a = _mm256_add_epi64(a, _mm256_add_epi64(_mm256_loadu_si256((const __m256i *)(p + i)),
                                                 _mm256_loadu_si256((const __m256i *)(p + i + 32))));
        b = _mm256_add_epi64(b, _mm256_add_epi64(_mm256_loadu_si256((const __m256i *)(p + i + 64)),
                                                 _mm256_loadu_si256((const __m256i *)(p + i + 96))));
        c = _mm256_add_epi64(c, _mm256_add_epi64(_mm256_loadu_si256((const __m256i *)(p + i + 128)),
                                                 _mm256_loadu_si256((const __m256i *)(p + i + 160))));
        d = _mm256_add_epi64(d, _mm256_add_epi64(_mm256_loadu_si256((const __m256i *)(p + i + 192)),
                                                 _mm256_loadu_si256((const __m256i *)(p + i + 224))));
    }
    a = _mm256_add_epi64(_mm256_add_epi64(a, b), _mm256_add_epi64(c, d));
    uint64_t lanes[4];
    _mm256_storeu_si256((__m256i *)lanes, a);
    uint64_t sum = lanes[0] + lanes[1] + lanes[2] + lanes[3];
    return sum + weft_wgemm_read_scalar(p + i, bytes - i);
}
