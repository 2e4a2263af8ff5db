// AVX2 + FMA + F16C paths of weft_wgemm: the 16-bit decode kernel (F16 with
// vcvtph2ps, BF16 by shifting into the high half) and the panel packers of
// the prefill path. Function-level target attributes; weft_wgemm calls these
// only where weft_isa_current() is AVX2 and the CPU has F16C.
#include "wgemm_internal.h"

#include <string.h>

#if defined(__x86_64__)

#include <immintrin.h>

#define W_TARGET __attribute__((target("avx2,fma,f16c")))
#define W_INLINE static inline __attribute__((always_inline)) W_TARGET
#define W_FN(name) name##_avx2
#define WVW 8
// 3 x 3 accumulators + 3 weight vectors + 1 activation: 13 of 16 ymm (a 3 x 4
// tile needs 17, and the compiler's spills put accumulators through memory).
#define W_MX 3
#define W_RW 3
typedef __m256 wv;

W_INLINE wv w_zero(void) { return _mm256_setzero_ps(); }
W_INLINE wv w_load(const float *p) { return _mm256_loadu_ps(p); }
W_INLINE void w_store(float *p, wv v) { _mm256_storeu_ps(p, v); }
W_INLINE wv w_fma(wv a, wv b, wv c) { return _mm256_fmadd_ps(a, b, c); }
W_INLINE float w_hsum(wv v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}
W_INLINE wv w_load_f16(const uint16_t *p) { return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p)); }
W_INLINE wv w_load_bf16(const uint16_t *p) {
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)p)), 16));
}

#include "wgemm_simd.h"

int weft_wgemm_has_f16c(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
           __builtin_cpu_supports("f16c");
}

#else  // not x86-64: the scalar references

uint64_t weft_wgemm_read_avx2(const unsigned char *p, size_t bytes) { return weft_wgemm_read_scalar(p, bytes); }
int weft_wgemm_packq_avx2(int wtype, const void *w, size_t row_bytes, int nrows, int kc, float *dst) {
    return weft_wgemm_packq_scalar(wtype, w, row_bytes, nrows, kc, dst);
}
void weft_wgemm16_rows_avx2(int bf16, int m, long j0, long j1, int k, const float *x,
                            size_t ldx, const uint16_t *w, float *y, size_t ldy) {
    weft_wgemm16_rows_scalar(bf16, m, j0, j1, k, x, ldx, w, y, ldy);
}
void weft_wgemm_pack16_avx2(int bf16, const uint16_t *w, size_t ldw, int nrows, int kc, float *dst) {
    weft_wgemm_pack16_scalar(bf16, w, ldw, nrows, kc, dst);
}
void weft_wgemm_pack32_avx2(const float *rows, size_t ldr, int nrows, int kc, float *dst) {
    weft_wgemm_pack32_scalar(rows, ldr, nrows, kc, dst);
}
int weft_wgemm_has_f16c(void) { return 0; }

#endif
