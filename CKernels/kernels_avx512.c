// AVX-512 paths. Placeholder: forwards to the scalar references until the
// vectorized kernels land (tracked in the kernels work).
#include "weft_kernels.h"

void weft_bf16_to_f32_avx512(const uint16_t *src, float *dst, size_t n) { weft_bf16_to_f32_scalar(src, dst, n); }
void weft_f16_to_f32_avx512(const uint16_t *src, float *dst, size_t n) { weft_f16_to_f32_scalar(src, dst, n); }
void weft_gemm_packed_avx512(int m, int n0, int n1, int k, const float *x, size_t ldx,
                             const float *wpacked, float *y, size_t ldy, int accumulate) {
    weft_gemm_packed_scalar(m, n0, n1, k, x, ldx, wpacked, y, ldy, accumulate);
}
void weft_rmsnorm_avx512(const float *x, size_t ldx, const float *w, float *y, size_t ldy, int rows, int dim, float eps) {
    weft_rmsnorm_scalar(x, ldx, w, y, ldy, rows, dim, eps);
}
void weft_add_rmsnorm_avx512(float *residual, size_t ldr, const float *delta, size_t ldd,
                             const float *w, float *y, size_t ldy, int rows, int dim, float eps) {
    weft_add_rmsnorm_scalar(residual, ldr, delta, ldd, w, y, ldy, rows, dim, eps);
}
void weft_silu_mul_avx512(const float *gate, const float *up, size_t ldin, float *out, size_t ldout, int rows, int n) {
    weft_silu_mul_scalar(gate, up, ldin, out, ldout, rows, n);
}
void weft_rope_avx512(float *x, size_t ldx, int rows, int heads, int head_dim, const int32_t *positions, const float *inv_freq) {
    weft_rope_scalar(x, ldx, rows, heads, head_dim, positions, inv_freq);
}
void weft_attention_avx512(const weft_attention_args *a, int item_begin, int item_end) {
    weft_attention_scalar(a, item_begin, item_end);
}
