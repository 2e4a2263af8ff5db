// AVX-512 paths (F + BW + VL, with FMA). Every function carries a target
// attribute, so the file builds with the package's default flags (no -m or
// -march) and runs only where weft_isa_detect() found these features.
#include "weft_kernels.h"

#include <string.h>

#if defined(__x86_64__)

#include <immintrin.h>

#include "gemm_blocked.h"

#define SIMD_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,fma")))
#define SIMD_INLINE static inline __attribute__((always_inline)) SIMD_TARGET
#define SIMD_FN(name) name##_avx512
#define VW 16
typedef __m512 vf;

SIMD_INLINE __mmask16 lane_mask(int n) { return (__mmask16)((1u << n) - 1u); }  // n <= 16
SIMD_INLINE vf v_zero(void) { return _mm512_setzero_ps(); }
SIMD_INLINE vf v_set1(float f) { return _mm512_set1_ps(f); }
SIMD_INLINE vf v_load(const float *p) { return _mm512_loadu_ps(p); }
SIMD_INLINE void v_store(float *p, vf v) { _mm512_storeu_ps(p, v); }
SIMD_INLINE vf v_load_n(const float *p, int n) { return _mm512_maskz_loadu_ps(lane_mask(n), p); }
SIMD_INLINE void v_store_n(float *p, vf v, int n) { _mm512_mask_storeu_ps(p, lane_mask(n), v); }
SIMD_INLINE vf v_add(vf a, vf b) { return _mm512_add_ps(a, b); }
SIMD_INLINE vf v_sub(vf a, vf b) { return _mm512_sub_ps(a, b); }
SIMD_INLINE vf v_mul(vf a, vf b) { return _mm512_mul_ps(a, b); }
SIMD_INLINE vf v_div(vf a, vf b) { return _mm512_div_ps(a, b); }
SIMD_INLINE vf v_fma(vf a, vf b, vf c) { return _mm512_fmadd_ps(a, b, c); }
SIMD_INLINE float v_hsum(vf v) { return _mm512_reduce_add_ps(v); }

// e^x: Cody-Waite reduction x = n ln2 + r, |r| <= ln2/2, Cephes' degree-6
// polynomial (about 1 ulp); vscalefps applies 2^n with correct overflow to
// +inf and gradual underflow. The clamp keeps NaN (max/min return their
// second operand when either is NaN).
SIMD_INLINE vf v_exp(vf x) {
    x = _mm512_min_ps(_mm512_set1_ps(89.0f), _mm512_max_ps(_mm512_set1_ps(-104.0f), x));
    vf fx = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                 _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    vf r = _mm512_fnmadd_ps(fx, _mm512_set1_ps(0.693359375f), x);
    r = _mm512_fnmadd_ps(fx, _mm512_set1_ps(-2.12194440e-4f), r);
    vf p = _mm512_set1_ps(1.9875691500e-4f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
    vf y = _mm512_add_ps(_mm512_fmadd_ps(p, _mm512_mul_ps(r, r), r), _mm512_set1_ps(1.0f));
    return _mm512_scalef_ps(y, fx);
}

// 16-bit KV cache loads (vcvtph2ps is AVX-512F; bfloat16 is the high half of a float).
#define SIMD_KV_TARGET SIMD_TARGET
#define SIMD_KV_INLINE SIMD_INLINE
SIMD_INLINE vf v_load_f16(const uint16_t *p) {
    return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)p));
}
SIMD_INLINE vf v_load_f16_n(const uint16_t *p, int n) {
    return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(lane_mask(n), p));
}
SIMD_INLINE vf v_load_bf16(const uint16_t *p) {
    __m512i x = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)p));
    return _mm512_castsi512_ps(_mm512_slli_epi32(x, 16));
}
SIMD_INLINE vf v_load_bf16_n(const uint16_t *p, int n) {
    __m512i x = _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(lane_mask(n), p));
    return _mm512_castsi512_ps(_mm512_slli_epi32(x, 16));
}

#include "simd_kernels.h"

// ------------------------------------------------------- dtype conversions
SIMD_TARGET void weft_bf16_to_f32_avx512(const uint16_t *src, float *dst, size_t n) {
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m512i h = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(src + i)));
        _mm512_storeu_si512(dst + i, _mm512_slli_epi32(h, 16));
    }
    if (i < n) {
        __mmask16 m = lane_mask((int)(n - i));
        __m512i h = _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, src + i));
        _mm512_mask_storeu_epi32(dst + i, m, _mm512_slli_epi32(h, 16));
    }
}

// Bit-exact half -> single: vcvtph2ps would quiet signaling NaNs, while the
// reference keeps every payload bit, so the bits are assembled directly.
SIMD_INLINE __m512i f16_bits_to_f32_bits(__m512i h) {
    __m512i sign = _mm512_slli_epi32(_mm512_and_si512(h, _mm512_set1_epi32(0x8000)), 16);
    __m512i em = _mm512_and_si512(h, _mm512_set1_epi32(0x7fff));
    __m512i shifted = _mm512_slli_epi32(em, 13);
    __m512i bits = _mm512_add_epi32(shifted, _mm512_set1_epi32(112 << 23));  // normal numbers
    __mmask16 special = _mm512_cmpgt_epi32_mask(em, _mm512_set1_epi32(0x7bff));  // inf, NaN
    bits = _mm512_mask_add_epi32(bits, special, shifted, _mm512_set1_epi32(224 << 23));
    __mmask16 sub = _mm512_cmplt_epi32_mask(em, _mm512_set1_epi32(0x400));  // zero, subnormal
    __m512 subv = _mm512_mul_ps(_mm512_cvtepi32_ps(em), _mm512_set1_ps(1.0f / 16777216.0f));
    bits = _mm512_mask_mov_epi32(bits, sub, _mm512_castps_si512(subv));  // mant * 2^-24, exact
    return _mm512_or_si512(bits, sign);
}

SIMD_TARGET void weft_f16_to_f32_avx512(const uint16_t *src, float *dst, size_t n) {
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m512i h = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(src + i)));
        _mm512_storeu_si512(dst + i, f16_bits_to_f32_bits(h));
    }
    if (i < n) {
        __mmask16 m = lane_mask((int)(n - i));
        __m512i h = _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, src + i));
        _mm512_mask_storeu_epi32(dst + i, m, f16_bits_to_f32_bits(h));
    }
}

// ------------------------------------------------------------------- GEMM
// Micro-kernel: up to MR = 14 rows of x by one whole 32-column panel: 28 zmm
// accumulators, 2 zmm of weights per k step and the x values as broadcast
// memory operands of the FMAs (31 of 32 registers). With four rows or fewer
// (decode), even and odd k steps accumulate separately so that two FMA chains
// per accumulator overlap the FMA latency while the weights stream from memory.
#define AVX512_MR 14
#ifndef AVX512_KC  // blocking, overridable for tuning runs
#define AVX512_KC 256   // x micro-panel 14 x 256 floats = 14 KiB in L1
#endif
#ifndef AVX512_NB
#define AVX512_NB 16    // 16 panels x 256 k x 32 floats = 512 KiB of weights in L2
#endif
#ifndef AVX512_MC
#define AVX512_MC 588   // x rows per packed block (42 groups of 14)
#endif
#ifndef AVX512_PF
#define AVX512_PF 16    // prefetch the weight row 16 k steps (2 KiB) ahead; 0 disables
#endif
#if AVX512_PF > 0
#define AVX512_PREFETCH(p)                                                              \
    do {                                                                                \
        _mm_prefetch((const char *)((p) + AVX512_PF * WEFT_GEMM_NR), _MM_HINT_T0);      \
        _mm_prefetch((const char *)((p) + AVX512_PF * WEFT_GEMM_NR + 16), _MM_HINT_T0); \
    } while (0)
#else
#define AVX512_PREFETCH(p) ((void)0)
#endif

SIMD_INLINE void ukernel_avx512(const int rows, int kc, const float *xp, const float *b, float *c,
                                size_t ldc, int width, int load_c) {
    __m512 c0[AVX512_MR], c1[AVX512_MR];
#pragma GCC unroll 16
    for (int i = 0; i < rows; i++) c0[i] = c1[i] = _mm512_setzero_ps();
    int kk = 0;
    if (rows <= 4) {
        __m512 d0[4], d1[4];
#pragma GCC unroll 16
        for (int i = 0; i < rows; i++) d0[i] = d1[i] = _mm512_setzero_ps();
        for (; kk + 2 <= kc; kk += 2) {
            AVX512_PREFETCH(b);
            AVX512_PREFETCH(b + WEFT_GEMM_NR);
            __m512 b0 = _mm512_loadu_ps(b), b1 = _mm512_loadu_ps(b + 16);
            __m512 b2 = _mm512_loadu_ps(b + WEFT_GEMM_NR), b3 = _mm512_loadu_ps(b + WEFT_GEMM_NR + 16);
#pragma GCC unroll 16
            for (int i = 0; i < rows; i++) {
                __m512 a = _mm512_set1_ps(xp[i]), a2 = _mm512_set1_ps(xp[rows + i]);
                c0[i] = _mm512_fmadd_ps(a, b0, c0[i]);
                c1[i] = _mm512_fmadd_ps(a, b1, c1[i]);
                d0[i] = _mm512_fmadd_ps(a2, b2, d0[i]);
                d1[i] = _mm512_fmadd_ps(a2, b3, d1[i]);
            }
            xp += 2 * rows;
            b += 2 * WEFT_GEMM_NR;
        }
#pragma GCC unroll 16
        for (int i = 0; i < rows; i++) {
            c0[i] = _mm512_add_ps(c0[i], d0[i]);
            c1[i] = _mm512_add_ps(c1[i], d1[i]);
        }
    }
    for (; kk < kc; kk++) {
        AVX512_PREFETCH(b);
        __m512 b0 = _mm512_loadu_ps(b), b1 = _mm512_loadu_ps(b + 16);
#pragma GCC unroll 16
        for (int i = 0; i < rows; i++) {
            __m512 a = _mm512_set1_ps(xp[i]);
            c0[i] = _mm512_fmadd_ps(a, b0, c0[i]);
            c1[i] = _mm512_fmadd_ps(a, b1, c1[i]);
        }
        xp += rows;
        b += WEFT_GEMM_NR;
    }
    // A partial last panel stores only its `width` valid columns.
    __mmask16 m0 = width >= 16 ? (__mmask16)0xffff : lane_mask(width);
    __mmask16 m1 = width >= 32 ? (__mmask16)0xffff : width > 16 ? lane_mask(width - 16) : 0;
#pragma GCC unroll 16
    for (int i = 0; i < rows; i++) {
        float *ci = c + (size_t)i * ldc;
        if (load_c) {
            c0[i] = _mm512_add_ps(c0[i], _mm512_maskz_loadu_ps(m0, ci));
            c1[i] = _mm512_add_ps(c1[i], _mm512_maskz_loadu_ps(m1, ci + 16));
        }
        _mm512_mask_storeu_ps(ci, m0, c0[i]);
        _mm512_mask_storeu_ps(ci + 16, m1, c1[i]);
    }
}

#define DEFINE_UKERNEL(R)                                                                      \
    static SIMD_TARGET void ukernel_avx512_##R(int kc, const float *xp, const float *b,       \
                                               float *c, size_t ldc, int width, int load_c) { \
        ukernel_avx512(R, kc, xp, b, c, ldc, width, load_c);                                   \
    }
DEFINE_UKERNEL(1)
DEFINE_UKERNEL(2)
DEFINE_UKERNEL(3)
DEFINE_UKERNEL(4)
DEFINE_UKERNEL(5)
DEFINE_UKERNEL(6)
DEFINE_UKERNEL(7)
DEFINE_UKERNEL(8)
DEFINE_UKERNEL(9)
DEFINE_UKERNEL(10)
DEFINE_UKERNEL(11)
DEFINE_UKERNEL(12)
DEFINE_UKERNEL(13)
DEFINE_UKERNEL(14)

static const weft_gemm_plan gemm_plan_avx512 = {
    .mr = AVX512_MR, .nrk = 32, .kc = AVX512_KC, .nb = AVX512_NB, .mc = AVX512_MC,
    .kernel = {0, ukernel_avx512_1, ukernel_avx512_2, ukernel_avx512_3, ukernel_avx512_4,
               ukernel_avx512_5, ukernel_avx512_6, ukernel_avx512_7, ukernel_avx512_8,
               ukernel_avx512_9, ukernel_avx512_10, ukernel_avx512_11, ukernel_avx512_12,
               ukernel_avx512_13, ukernel_avx512_14},
};

void weft_gemm_packed_avx512(int m, int n0, int n1, int k, const float *x, size_t ldx,
                             const float *wpacked, float *y, size_t ldy, int accumulate) {
    weft_gemm_blocked(&gemm_plan_avx512, m, n0, n1, k, x, ldx, wpacked, y, ldy, accumulate);
}

int weft_gemm_mr_avx512(void) { return AVX512_MR; }

void weft_gemm_xp_avx512(int m, int n, int kc, const float *xp, const float *w, float *y,
                       size_t ldy, int load_c) {
    weft_gemm_blocked_xp(&gemm_plan_avx512, m, n, kc, xp, w, y, ldy, load_c);
}

// ------------------------------------------------ float32 -> 16-bit (KV cache)
SIMD_TARGET void weft_f32_to_f16_avx512(const float *src, uint16_t *dst, size_t n) {
    size_t i = 0;
    for (; i + 16 <= n; i += 16)
        _mm256_storeu_si256((__m256i *)(dst + i), _mm512_cvtps_ph(_mm512_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT));
    if (i < n) {
        __mmask16 m = lane_mask((int)(n - i));
        _mm256_mask_storeu_epi16(dst + i, m, _mm512_cvtps_ph(_mm512_maskz_loadu_ps(m, src + i), _MM_FROUND_TO_NEAREST_INT));
    }
}

SIMD_INLINE __m256i f32_to_bf16_16(__m512i x) {
    __m512i hi = _mm512_srli_epi32(x, 16);
    __m512i r = _mm512_srli_epi32(
        _mm512_add_epi32(_mm512_add_epi32(x, _mm512_set1_epi32(0x7fff)), _mm512_and_si512(hi, _mm512_set1_epi32(1))), 16);
    __mmask16 is_nan = _mm512_cmpgt_epu32_mask(_mm512_and_si512(x, _mm512_set1_epi32(0x7fffffff)),
                                               _mm512_set1_epi32(0x7f800000));
    r = _mm512_mask_mov_epi32(r, is_nan, _mm512_or_si512(hi, _mm512_set1_epi32(0x40)));
    return _mm512_cvtepi32_epi16(r);
}

SIMD_TARGET void weft_f32_to_bf16_avx512(const float *src, uint16_t *dst, size_t n) {
    size_t i = 0;
    for (; i + 16 <= n; i += 16)
        _mm256_storeu_si256((__m256i *)(dst + i), f32_to_bf16_16(_mm512_loadu_si512(src + i)));
    if (i < n) {
        __mmask16 m = lane_mask((int)(n - i));
        _mm256_mask_storeu_epi16(dst + i, m, f32_to_bf16_16(_mm512_maskz_loadu_epi32(m, src + i)));
    }
}

#else  // not x86-64: the scalar references

void weft_bf16_to_f32_avx512(const uint16_t *src, float *dst, size_t n) { weft_bf16_to_f32_scalar(src, dst, n); }
void weft_f16_to_f32_avx512(const uint16_t *src, float *dst, size_t n) { weft_f16_to_f32_scalar(src, dst, n); }
void weft_gemm_packed_avx512(int m, int n0, int n1, int k, const float *x, size_t ldx,
                             const float *wpacked, float *y, size_t ldy, int accumulate) {
    weft_gemm_packed_scalar(m, n0, n1, k, x, ldx, wpacked, y, ldy, accumulate);
}
int weft_gemm_mr_avx512(void) { return weft_gemm_mr_scalar(); }
void weft_gemm_xp_avx512(int m, int n, int kc, const float *xp, const float *w, float *y,
                       size_t ldy, int load_c) {
    weft_gemm_xp_scalar(m, n, kc, xp, w, y, ldy, load_c);
}
void weft_rmsnorm_avx512(const float *x, size_t ldx, const float *w, float *y, size_t ldy,
                         int rows, int dim, float eps) {
    weft_rmsnorm_scalar(x, ldx, w, y, ldy, rows, dim, eps);
}
void weft_add_rmsnorm_avx512(float *residual, size_t ldr, const float *delta, size_t ldd,
                             const float *w, float *y, size_t ldy, int rows, int dim, float eps) {
    weft_add_rmsnorm_scalar(residual, ldr, delta, ldd, w, y, ldy, rows, dim, eps);
}
void weft_silu_mul_avx512(const float *gate, const float *up, size_t ldin, float *out,
                          size_t ldout, int rows, int n) {
    weft_silu_mul_scalar(gate, up, ldin, out, ldout, rows, n);
}
void weft_rope_avx512(float *x, size_t ldx, int rows, int heads, int head_dim,
                      const int32_t *positions, const float *inv_freq) {
    weft_rope_scalar(x, ldx, rows, heads, head_dim, positions, inv_freq);
}
void weft_attention_avx512(const weft_attention_args *a, int item_begin, int item_end) {
    weft_attention_scalar(a, item_begin, item_end);
}
void weft_attention_kv_avx512(const weft_attention_kv_args *a, int item_begin, int item_end) {
    weft_attention_kv_scalar(a, item_begin, item_end);
}
void weft_f32_to_f16_avx512(const float *src, uint16_t *dst, size_t n) { weft_f32_to_f16_scalar(src, dst, n); }
void weft_f32_to_bf16_avx512(const float *src, uint16_t *dst, size_t n) { weft_f32_to_bf16_scalar(src, dst, n); }

#endif
