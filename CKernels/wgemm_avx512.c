// AVX-512 F/BW/VL (+ F16C) paths of weft_wgemm: the 16-bit decode kernel with
// 16-lane vectors and 4 x 4 register tiles, and the panel packers (their 8 x 8
// transposes in 256-bit registers). Function-level target attributes; called
// only where weft_isa_current() is AVX-512.
#include "wgemm_internal.h"

#include <string.h>

#if defined(__x86_64__)

#include <immintrin.h>

#define W_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx2,fma,f16c")))
#define W_INLINE static inline __attribute__((always_inline)) W_TARGET
#define W_FN(name) name##_avx512
#define WVW 16
#define W_MX 4  // 4 x 4 accumulators + 4 weight vectors + 1 activation of 32 zmm
#define W_RW 4
typedef __m512 wv;

W_INLINE wv w_zero(void) { return _mm512_setzero_ps(); }
W_INLINE wv w_load(const float *p) { return _mm512_loadu_ps(p); }
W_INLINE void w_store(float *p, wv v) { _mm512_storeu_ps(p, v); }
W_INLINE wv w_fma(wv a, wv b, wv c) { return _mm512_fmadd_ps(a, b, c); }
W_INLINE float w_hsum(wv v) { return _mm512_reduce_add_ps(v); }
W_INLINE wv w_load_f16(const uint16_t *p) { return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)p)); }
W_INLINE wv w_load_bf16(const uint16_t *p) {
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)p)), 16));
}

#include "wgemm_simd.h"

#else  // not x86-64: the scalar references

uint64_t weft_wgemm_read_avx512(const unsigned char *p, size_t bytes) { return weft_wgemm_read_scalar(p, bytes); }
int weft_wgemm_packq_avx512(int wtype, const void *w, size_t row_bytes, int nrows, int kc, float *dst) {
    return weft_wgemm_packq_scalar(wtype, w, row_bytes, nrows, kc, dst);
}
void weft_wgemm16_rows_avx512(int bf16, int m, long j0, long j1, int k, const float *x,
                              size_t ldx, const uint16_t *w, float *y, size_t ldy) {
    weft_wgemm16_rows_scalar(bf16, m, j0, j1, k, x, ldx, w, y, ldy);
}
void weft_wgemm_pack16_avx512(int bf16, const uint16_t *w, size_t ldw, int nrows, int kc, float *dst) {
    weft_wgemm_pack16_scalar(bf16, w, ldw, nrows, kc, dst);
}
void weft_wgemm_pack32_avx512(const float *rows, size_t ldr, int nrows, int kc, float *dst) {
    weft_wgemm_pack32_scalar(rows, ldr, nrows, kc, dst);
}

#endif
