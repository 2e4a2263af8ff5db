#ifndef WEFT_OPS_H
#define WEFT_OPS_H
// Parallel operations: the kernels of weft_kernels.h spread over a weft_pool.
// Each call returns when the whole operation is done.

#include "weft_kernels.h"
#include "weft_pool.h"

#ifdef __cplusplus
extern "C" {
#endif

/// y[0:m, 0:n) = x · W^T with W packed (see weft_gemm_packed); panels are
/// split over the pool's threads by weft_gemm_panel_range, the same split the
/// loader uses to first-touch each thread's panels.
void weft_op_linear(weft_pool *pool, int m, int n, int k, const float *x, size_t ldx,
                    const float *wpacked, float *y, size_t ldy);
/// Rows of x one GEMM micro-kernel call covers for the selected ISA: batches
/// whose row count is a multiple of it leave no ragged micro-kernel tail.
int weft_gemm_row_block(void);
/// Panels [*p0, *p1) handled by thread t of `threads` for an n-row weight.
void weft_gemm_panel_range(int n, int threads, int t, int *p0, int *p1);

void weft_op_rmsnorm(weft_pool *pool, const float *x, size_t ldx, const float *w, float *y,
                     size_t ldy, int rows, int dim, float eps);
void weft_op_add_rmsnorm(weft_pool *pool, float *residual, size_t ldr, const float *delta,
                         size_t ldd, const float *w, float *y, size_t ldy, int rows, int dim,
                         float eps);
void weft_op_silu_mul(weft_pool *pool, const float *gate, const float *up, size_t ldin,
                      float *out, size_t ldout, int rows, int n);
void weft_op_rope(weft_pool *pool, float *x, size_t ldx, int rows, int heads, int head_dim,
                  const int32_t *positions, const float *inv_freq);
void weft_op_attention(weft_pool *pool, const weft_attention_args *a);
/// weft_attention_kv over the pool (any KV element type), items split as weft_op_attention.
void weft_op_attention_kv(weft_pool *pool, const weft_attention_kv_args *a);

#ifdef __cplusplus
}
#endif
#endif
