// AVX2 + FMA paths, for x86-64 CPUs without AVX-512 (Zen 2/3, Haswell..Alder
// Lake). Same algorithms as the AVX-512 paths with 8-lane vectors; every
// function carries a target attribute, so the file builds without -m flags
// and runs only where weft_isa_detect() found AVX2 and FMA.
#include "weft_kernels.h"

#include <string.h>

#if defined(__x86_64__)

#include <immintrin.h>

#include "gemm_blocked.h"

#define SIMD_TARGET __attribute__((target("avx2,fma")))
#define SIMD_INLINE static inline __attribute__((always_inline)) SIMD_TARGET
#define SIMD_FN(name) name##_avx2
#define VW 8
typedef __m256 vf;

SIMD_INLINE vf v_zero(void) { return _mm256_setzero_ps(); }
SIMD_INLINE vf v_set1(float f) { return _mm256_set1_ps(f); }
SIMD_INLINE vf v_load(const float *p) { return _mm256_loadu_ps(p); }
SIMD_INLINE void v_store(float *p, vf v) { _mm256_storeu_ps(p, v); }
SIMD_INLINE __m256i lane_mask(int n) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}
SIMD_INLINE vf v_load_n(const float *p, int n) { return _mm256_maskload_ps(p, lane_mask(n)); }
SIMD_INLINE void v_store_n(float *p, vf v, int n) { _mm256_maskstore_ps(p, lane_mask(n), v); }
SIMD_INLINE vf v_add(vf a, vf b) { return _mm256_add_ps(a, b); }
SIMD_INLINE vf v_sub(vf a, vf b) { return _mm256_sub_ps(a, b); }
SIMD_INLINE vf v_mul(vf a, vf b) { return _mm256_mul_ps(a, b); }
SIMD_INLINE vf v_div(vf a, vf b) { return _mm256_div_ps(a, b); }
SIMD_INLINE vf v_fma(vf a, vf b, vf c) { return _mm256_fmadd_ps(a, b, c); }
SIMD_INLINE float v_hsum(vf v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

// e^x: Cody-Waite reduction x = n ln2 + r, |r| <= ln2/2, Cephes' degree-6
// polynomial (about 1 ulp), and 2^n applied as two normal powers of two so
// that overflow gives +inf and underflow goes gradually to 0. The clamp keeps
// NaN (max/min return their second operand when either is NaN).
SIMD_INLINE vf v_exp(vf x) {
    x = _mm256_min_ps(_mm256_set1_ps(89.0f), _mm256_max_ps(_mm256_set1_ps(-104.0f), x));
    vf fx = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                            _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    vf r = _mm256_fnmadd_ps(fx, _mm256_set1_ps(0.693359375f), x);
    r = _mm256_fnmadd_ps(fx, _mm256_set1_ps(-2.12194440e-4f), r);
    vf p = _mm256_set1_ps(1.9875691500e-4f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
    vf y = _mm256_add_ps(_mm256_fmadd_ps(p, _mm256_mul_ps(r, r), r), _mm256_set1_ps(1.0f));
    __m256i n = _mm256_cvtps_epi32(fx);  // in [-150, 129]
    __m256i n1 = _mm256_srai_epi32(n, 1), n2 = _mm256_sub_epi32(n, n1);
    __m256i bias = _mm256_set1_epi32(127);
    vf s1 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n1, bias), 23));
    vf s2 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n2, bias), 23));
    return _mm256_mul_ps(_mm256_mul_ps(y, s1), s2);
}

// 16-bit KV cache loads (F16C's vcvtph2ps; bfloat16 is the high half of a float).
#define SIMD_KV_TARGET __attribute__((target("avx2,fma,f16c")))
#define SIMD_KV_INLINE static inline __attribute__((always_inline)) SIMD_KV_TARGET
SIMD_KV_INLINE vf v_load_f16(const uint16_t *p) {
    return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p));
}
SIMD_KV_INLINE vf v_load_bf16(const uint16_t *p) {
    __m256i x = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)p));
    return _mm256_castsi256_ps(_mm256_slli_epi32(x, 16));
}
SIMD_KV_INLINE vf v_load_f16_n(const uint16_t *p, int n) {  // n < 8: no 16-bit masked load in AVX2
    uint16_t b[8] = {0};
    memcpy(b, p, sizeof(uint16_t) * (size_t)n);
    return v_load_f16(b);
}
SIMD_KV_INLINE vf v_load_bf16_n(const uint16_t *p, int n) {
    uint16_t b[8] = {0};
    memcpy(b, p, sizeof(uint16_t) * (size_t)n);
    return v_load_bf16(b);
}

#include "simd_kernels.h"

// ------------------------------------------------------- dtype conversions
SIMD_TARGET void weft_bf16_to_f32_avx2(const uint16_t *src, float *dst, size_t n) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256i h = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(src + i)));
        _mm256_storeu_si256((__m256i *)(dst + i), _mm256_slli_epi32(h, 16));
    }
    weft_bf16_to_f32_scalar(src + i, dst + i, n - i);
}

// Bit-exact half -> single (the hardware vcvtph2ps quiets signaling NaNs; the
// reference keeps their payload as is).
SIMD_INLINE __m256i f16_bits_to_f32_bits(__m256i h) {
    __m256i sign = _mm256_slli_epi32(_mm256_and_si256(h, _mm256_set1_epi32(0x8000)), 16);
    __m256i em = _mm256_and_si256(h, _mm256_set1_epi32(0x7fff));
    __m256i shifted = _mm256_slli_epi32(em, 13);
    __m256i normal = _mm256_add_epi32(shifted, _mm256_set1_epi32(112 << 23));
    __m256i infnan = _mm256_add_epi32(shifted, _mm256_set1_epi32(224 << 23));
    __m256i sub = _mm256_castps_si256(
        _mm256_mul_ps(_mm256_cvtepi32_ps(em), _mm256_set1_ps(1.0f / 16777216.0f)));  // mant * 2^-24
    __m256i is_sub = _mm256_cmpgt_epi32(_mm256_set1_epi32(0x400), em);
    __m256i is_special = _mm256_cmpgt_epi32(em, _mm256_set1_epi32(0x7bff));
    __m256i bits = _mm256_blendv_epi8(normal, sub, is_sub);
    bits = _mm256_blendv_epi8(bits, infnan, is_special);
    return _mm256_or_si256(bits, sign);
}

SIMD_TARGET void weft_f16_to_f32_avx2(const uint16_t *src, float *dst, size_t n) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256i h = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(src + i)));
        _mm256_storeu_si256((__m256i *)(dst + i), f16_bits_to_f32_bits(h));
    }
    weft_f16_to_f32_scalar(src + i, dst + i, n - i);
}

// ------------------------------------------------------------------- GEMM
// Micro-kernel: MR = 6 rows of x by a 16-column half panel, 12 ymm
// accumulators, 2 ymm of weights and one broadcast register (BLIS' Haswell
// shape). The packed x micro-panel (<= 6 x kc) stays in L1. With one or two
// rows (decode), even and odd k steps accumulate separately to hide the FMA
// latency while the weights stream from memory.
#define AVX2_MR 6
#ifndef AVX2_KC  // blocking, overridable for tuning runs
#define AVX2_KC 256
#endif
#ifndef AVX2_NB
#define AVX2_NB 8
#endif
#ifndef AVX2_MC
#define AVX2_MC 240
#endif
#ifndef AVX2_PF
#define AVX2_PF 16
#endif
// Software prefetch of the weight row AVX2_PF k steps ahead, both 64-byte
// halves of the 128-byte panel row (the other half is the next slice's).
#if AVX2_PF > 0
#define AVX2_PREFETCH(p)                                                              \
    do {                                                                              \
        _mm_prefetch((const char *)((p) + AVX2_PF * WEFT_GEMM_NR), _MM_HINT_T0);      \
        _mm_prefetch((const char *)((p) + AVX2_PF * WEFT_GEMM_NR + 16), _MM_HINT_T0); \
    } while (0)
#else
#define AVX2_PREFETCH(p) ((void)0)
#endif

SIMD_INLINE void ukernel_avx2(const int rows, int kc, const float *xp, const float *b, float *c,
                              size_t ldc, int width, int load_c) {
    __m256 c0[AVX2_MR], c1[AVX2_MR];
#pragma GCC unroll 16
    for (int i = 0; i < rows; i++) c0[i] = c1[i] = _mm256_setzero_ps();
    int kk = 0;
    if (rows <= 2) {  // decode: even and odd k steps in separate accumulators
        __m256 d0[2], d1[2];
#pragma GCC unroll 16
        for (int i = 0; i < rows; i++) d0[i] = d1[i] = _mm256_setzero_ps();
        for (; kk + 2 <= kc; kk += 2) {
            AVX2_PREFETCH(b);
            AVX2_PREFETCH(b + WEFT_GEMM_NR);
            __m256 b0 = _mm256_loadu_ps(b), b1 = _mm256_loadu_ps(b + 8);
            __m256 b2 = _mm256_loadu_ps(b + WEFT_GEMM_NR), b3 = _mm256_loadu_ps(b + WEFT_GEMM_NR + 8);
#pragma GCC unroll 16
            for (int i = 0; i < rows; i++) {
                __m256 a = _mm256_broadcast_ss(xp + i), a2 = _mm256_broadcast_ss(xp + rows + i);
                c0[i] = _mm256_fmadd_ps(a, b0, c0[i]);
                c1[i] = _mm256_fmadd_ps(a, b1, c1[i]);
                d0[i] = _mm256_fmadd_ps(a2, b2, d0[i]);
                d1[i] = _mm256_fmadd_ps(a2, b3, d1[i]);
            }
            xp += 2 * rows;
            b += 2 * WEFT_GEMM_NR;
        }
#pragma GCC unroll 16
        for (int i = 0; i < rows; i++) {
            c0[i] = _mm256_add_ps(c0[i], d0[i]);
            c1[i] = _mm256_add_ps(c1[i], d1[i]);
        }
    }
    for (; kk < kc; kk++) {
        AVX2_PREFETCH(b);
        __m256 b0 = _mm256_loadu_ps(b), b1 = _mm256_loadu_ps(b + 8);
#pragma GCC unroll 16
        for (int i = 0; i < rows; i++) {
            __m256 a = _mm256_broadcast_ss(xp + i);
            c0[i] = _mm256_fmadd_ps(a, b0, c0[i]);
            c1[i] = _mm256_fmadd_ps(a, b1, c1[i]);
        }
        xp += rows;
        b += WEFT_GEMM_NR;
    }
    if (width == 16) {
#pragma GCC unroll 16
        for (int i = 0; i < rows; i++) {
            float *ci = c + (size_t)i * ldc;
            if (load_c) {
                c0[i] = _mm256_add_ps(c0[i], _mm256_loadu_ps(ci));
                c1[i] = _mm256_add_ps(c1[i], _mm256_loadu_ps(ci + 8));
            }
            _mm256_storeu_ps(ci, c0[i]);
            _mm256_storeu_ps(ci + 8, c1[i]);
        }
    } else {  // partial last panel: only `width` columns exist in y
#pragma GCC unroll 16
        for (int i = 0; i < rows; i++) {
            float *ci = c + (size_t)i * ldc;
            int w0 = width < 8 ? width : 8, w1 = width - w0;
            if (load_c) {
                c0[i] = _mm256_add_ps(c0[i], v_load_n(ci, w0));
                if (w1 > 0) c1[i] = _mm256_add_ps(c1[i], v_load_n(ci + 8, w1));
            }
            v_store_n(ci, c0[i], w0);
            if (w1 > 0) v_store_n(ci + 8, c1[i], w1);
        }
    }
}

#define DEFINE_UKERNEL(R)                                                                    \
    static SIMD_TARGET void ukernel_avx2_##R(int kc, const float *xp, const float *b,       \
                                             float *c, size_t ldc, int width, int load_c) { \
        ukernel_avx2(R, kc, xp, b, c, ldc, width, load_c);                                   \
    }
DEFINE_UKERNEL(1)
DEFINE_UKERNEL(2)
DEFINE_UKERNEL(3)
DEFINE_UKERNEL(4)
DEFINE_UKERNEL(5)
DEFINE_UKERNEL(6)

static const weft_gemm_plan gemm_plan_avx2 = {
    .mr = AVX2_MR, .nrk = 16, .kc = AVX2_KC, .nb = AVX2_NB, .mc = AVX2_MC,
    .kernel = {0, ukernel_avx2_1, ukernel_avx2_2, ukernel_avx2_3, ukernel_avx2_4,
               ukernel_avx2_5, ukernel_avx2_6},
};

// Decode micro-kernel (m <= 2): a whole 32-column panel per call, so the
// driver streams each panel once without K blocking; 4 ymm accumulators per
// row (8 for one row, with even/odd k steps split) and 4 ymm of weights.
SIMD_INLINE void ukernel_avx2_panel(const int rows, int kc, const float *xp, const float *b,
                                    float *c, size_t ldc, int width, int load_c) {
    __m256 acc[2][4], odd[4];
#pragma GCC unroll 16
    for (int i = 0; i < rows; i++)
#pragma GCC unroll 16
        for (int j = 0; j < 4; j++) acc[i][j] = _mm256_setzero_ps();
#pragma GCC unroll 16
    for (int j = 0; j < 4; j++) odd[j] = _mm256_setzero_ps();
    int kk = 0;
    if (rows == 1) {
        for (; kk + 2 <= kc; kk += 2) {
            AVX2_PREFETCH(b);
            AVX2_PREFETCH(b + WEFT_GEMM_NR);
            __m256 a = _mm256_broadcast_ss(xp), a2 = _mm256_broadcast_ss(xp + 1);
#pragma GCC unroll 16
            for (int j = 0; j < 4; j++) {
                acc[0][j] = _mm256_fmadd_ps(a, _mm256_loadu_ps(b + 8 * j), acc[0][j]);
                odd[j] = _mm256_fmadd_ps(a2, _mm256_loadu_ps(b + WEFT_GEMM_NR + 8 * j), odd[j]);
            }
            xp += 2;
            b += 2 * WEFT_GEMM_NR;
        }
#pragma GCC unroll 16
        for (int j = 0; j < 4; j++) acc[0][j] = _mm256_add_ps(acc[0][j], odd[j]);
    }
    for (; kk < kc; kk++) {
        AVX2_PREFETCH(b);
        __m256 w[4];
#pragma GCC unroll 16
        for (int j = 0; j < 4; j++) w[j] = _mm256_loadu_ps(b + 8 * j);
#pragma GCC unroll 16
        for (int i = 0; i < rows; i++) {
            __m256 a = _mm256_broadcast_ss(xp + i);
#pragma GCC unroll 16
            for (int j = 0; j < 4; j++) acc[i][j] = _mm256_fmadd_ps(a, w[j], acc[i][j]);
        }
        xp += rows;
        b += WEFT_GEMM_NR;
    }
#pragma GCC unroll 16
    for (int i = 0; i < rows; i++) {
        float *ci = c + (size_t)i * ldc;
#pragma GCC unroll 16
        for (int j = 0; j < 4; j++) {
            int n = width - 8 * j < 8 ? width - 8 * j : 8;
            if (n <= 0) break;
            if (n == 8) {
                if (load_c) acc[i][j] = _mm256_add_ps(acc[i][j], _mm256_loadu_ps(ci + 8 * j));
                _mm256_storeu_ps(ci + 8 * j, acc[i][j]);
            } else {
                if (load_c) acc[i][j] = _mm256_add_ps(acc[i][j], v_load_n(ci + 8 * j, n));
                v_store_n(ci + 8 * j, acc[i][j], n);
            }
        }
    }
}

#define DEFINE_PANEL_UKERNEL(R)                                                                  \
    static SIMD_TARGET void ukernel_avx2_panel_##R(int kc, const float *xp, const float *b,     \
                                                   float *c, size_t ldc, int width, int load_c) { \
        ukernel_avx2_panel(R, kc, xp, b, c, ldc, width, load_c);                                 \
    }
DEFINE_PANEL_UKERNEL(1)
DEFINE_PANEL_UKERNEL(2)

static const weft_gemm_plan gemm_plan_avx2_decode = {
    .mr = 2, .nrk = 32, .kc = AVX2_KC, .nb = AVX2_NB, .mc = 2,
    .kernel = {0, ukernel_avx2_panel_1, ukernel_avx2_panel_2},
};

void weft_gemm_packed_avx2(int m, int n0, int n1, int k, const float *x, size_t ldx,
                           const float *wpacked, float *y, size_t ldy, int accumulate) {
    const weft_gemm_plan *plan = m <= 2 ? &gemm_plan_avx2_decode : &gemm_plan_avx2;
    weft_gemm_blocked(plan, m, n0, n1, k, x, ldx, wpacked, y, ldy, accumulate);
}

int weft_gemm_mr_avx2(void) { return AVX2_MR; }

void weft_gemm_xp_avx2(int m, int n, int kc, const float *xp, const float *w, float *y,
                       size_t ldy, int load_c) {
    weft_gemm_blocked_xp(&gemm_plan_avx2, m, n, kc, xp, w, y, ldy, load_c);
}

// ------------------------------------------------ float32 -> 16-bit (KV cache)
SIMD_KV_TARGET void weft_f32_to_f16_avx2(const float *src, uint16_t *dst, size_t n) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm_storeu_si128((__m128i *)(dst + i), _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT));
    weft_f32_to_f16_scalar(src + i, dst + i, n - i);
}

SIMD_TARGET void weft_f32_to_bf16_avx2(const float *src, uint16_t *dst, size_t n) {
    size_t i = 0;
    const __m256i one = _mm256_set1_epi32(1), round = _mm256_set1_epi32(0x7fff);
    const __m256i abs_mask = _mm256_set1_epi32(0x7fffffff), inf = _mm256_set1_epi32(0x7f800000);
    const __m256i quiet = _mm256_set1_epi32(0x40);
    for (; i + 8 <= n; i += 8) {
        __m256i x = _mm256_loadu_si256((const __m256i *)(src + i));
        __m256i hi = _mm256_srli_epi32(x, 16);
        __m256i r = _mm256_srli_epi32(_mm256_add_epi32(_mm256_add_epi32(x, round), _mm256_and_si256(hi, one)), 16);
        __m256i is_nan = _mm256_cmpgt_epi32(_mm256_and_si256(x, abs_mask), inf);
        r = _mm256_blendv_epi8(r, _mm256_or_si256(hi, quiet), is_nan);
        __m256i packed = _mm256_permute4x64_epi64(_mm256_packus_epi32(r, r), 0xD8);
        _mm_storeu_si128((__m128i *)(dst + i), _mm256_castsi256_si128(packed));
    }
    weft_f32_to_bf16_scalar(src + i, dst + i, n - i);
}

#else  // not x86-64: the scalar references

void weft_bf16_to_f32_avx2(const uint16_t *src, float *dst, size_t n) { weft_bf16_to_f32_scalar(src, dst, n); }
void weft_f16_to_f32_avx2(const uint16_t *src, float *dst, size_t n) { weft_f16_to_f32_scalar(src, dst, n); }
void weft_gemm_packed_avx2(int m, int n0, int n1, int k, const float *x, size_t ldx,
                           const float *wpacked, float *y, size_t ldy, int accumulate) {
    weft_gemm_packed_scalar(m, n0, n1, k, x, ldx, wpacked, y, ldy, accumulate);
}
int weft_gemm_mr_avx2(void) { return weft_gemm_mr_scalar(); }
void weft_gemm_xp_avx2(int m, int n, int kc, const float *xp, const float *w, float *y,
                       size_t ldy, int load_c) {
    weft_gemm_xp_scalar(m, n, kc, xp, w, y, ldy, load_c);
}
void weft_rmsnorm_avx2(const float *x, size_t ldx, const float *w, float *y, size_t ldy,
                       int rows, int dim, float eps) {
    weft_rmsnorm_scalar(x, ldx, w, y, ldy, rows, dim, eps);
}
void weft_add_rmsnorm_avx2(float *residual, size_t ldr, const float *delta, size_t ldd,
                           const float *w, float *y, size_t ldy, int rows, int dim, float eps) {
    weft_add_rmsnorm_scalar(residual, ldr, delta, ldd, w, y, ldy, rows, dim, eps);
}
void weft_silu_mul_avx2(const float *gate, const float *up, size_t ldin, float *out,
                        size_t ldout, int rows, int n) {
    weft_silu_mul_scalar(gate, up, ldin, out, ldout, rows, n);
}
void weft_rope_avx2(float *x, size_t ldx, int rows, int heads, int head_dim,
                    const int32_t *positions, const float *inv_freq) {
    weft_rope_scalar(x, ldx, rows, heads, head_dim, positions, inv_freq);
}
void weft_attention_avx2(const weft_attention_args *a, int item_begin, int item_end) {
    weft_attention_scalar(a, item_begin, item_end);
}
void weft_attention_kv_avx2(const weft_attention_kv_args *a, int item_begin, int item_end) {
    weft_attention_kv_scalar(a, item_begin, item_end);
}
void weft_f32_to_f16_avx2(const float *src, uint16_t *dst, size_t n) { weft_f32_to_f16_scalar(src, dst, n); }
void weft_f32_to_bf16_avx2(const float *src, uint16_t *dst, size_t n) { weft_f32_to_bf16_scalar(src, dst, n); }

#endif
