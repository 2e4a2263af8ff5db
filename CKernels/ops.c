// Parallel operations over a weft_pool: each packs its arguments, splits the
// work into one contiguous range per thread and runs the kernel on it.
#include "weft_ops.h"

void weft_gemm_panel_range(int n, int threads, int t, int *p0, int *p1) {
    int nr = weft_gemm_nr();
    long panels = (n + nr - 1) / nr, b, e;
    weft_split_range(panels, threads, t, &b, &e);
    *p0 = (int)b;
    *p1 = (int)e;
}

int weft_gemm_row_block(void) {
    // The micro-kernel height of the GEMM path in use, from that path itself.
    switch (weft_isa_current()) {
    case WEFT_ISA_AVX512: return weft_gemm_mr_avx512();
    case WEFT_ISA_AVX2: return weft_gemm_mr_avx2();
    default: return weft_gemm_mr_scalar();
    }
}

typedef struct {
    int m, n, k;
    const float *x;
    size_t ldx;
    const float *w;
    float *y;
    size_t ldy;
} linear_task;

static void linear_run(void *ctx, int t, int threads) {
    const linear_task *a = ctx;
    int p0, p1, nr = weft_gemm_nr();
    weft_gemm_panel_range(a->n, threads, t, &p0, &p1);
    if (p0 >= p1) return;
    int n0 = p0 * nr, n1 = p1 * nr < a->n ? p1 * nr : a->n;
    weft_gemm_packed(a->m, n0, n1, a->k, a->x, a->ldx, a->w, a->y, a->ldy, 0);
}

void weft_op_linear(weft_pool *pool, int m, int n, int k, const float *x, size_t ldx,
                    const float *wpacked, float *y, size_t ldy) {
    if (m <= 0 || n <= 0) return;
    linear_task task = {m, n, k, x, ldx, wpacked, y, ldy};
    weft_pool_run(pool, linear_run, &task);
}

typedef struct {
    float *residual;
    size_t ldr;
    const float *x;     // input (rmsnorm) or delta (add_rmsnorm)
    size_t ldx;
    const float *w;
    float *y;
    size_t ldy;
    int rows, dim;
    float eps;
} norm_task;

static void rmsnorm_run(void *ctx, int t, int threads) {
    const norm_task *a = ctx;
    long r0, r1;
    weft_split_range(a->rows, threads, t, &r0, &r1);
    if (r0 < r1)
        weft_rmsnorm(a->x + r0 * a->ldx, a->ldx, a->w, a->y + r0 * a->ldy, a->ldy,
                     (int)(r1 - r0), a->dim, a->eps);
}

void weft_op_rmsnorm(weft_pool *pool, const float *x, size_t ldx, const float *w, float *y,
                     size_t ldy, int rows, int dim, float eps) {
    norm_task task = {0, 0, x, ldx, w, y, ldy, rows, dim, eps};
    weft_pool_run(pool, rmsnorm_run, &task);
}

static void add_rmsnorm_run(void *ctx, int t, int threads) {
    const norm_task *a = ctx;
    long r0, r1;
    weft_split_range(a->rows, threads, t, &r0, &r1);
    if (r0 < r1)
        weft_add_rmsnorm(a->residual + r0 * a->ldr, a->ldr, a->x + r0 * a->ldx, a->ldx, a->w,
                         a->y + r0 * a->ldy, a->ldy, (int)(r1 - r0), a->dim, a->eps);
}

void weft_op_add_rmsnorm(weft_pool *pool, float *residual, size_t ldr, const float *delta,
                         size_t ldd, const float *w, float *y, size_t ldy, int rows, int dim,
                         float eps) {
    norm_task task = {residual, ldr, delta, ldd, w, y, ldy, rows, dim, eps};
    weft_pool_run(pool, add_rmsnorm_run, &task);
}

typedef struct {
    const float *gate, *up;
    size_t ldin;
    float *out;
    size_t ldout;
    int rows, n;
} silu_task;

static void silu_run(void *ctx, int t, int threads) {
    const silu_task *a = ctx;
    long r0, r1;
    weft_split_range(a->rows, threads, t, &r0, &r1);
    if (r0 < r1)
        weft_silu_mul(a->gate + r0 * a->ldin, a->up + r0 * a->ldin, a->ldin,
                      a->out + r0 * a->ldout, a->ldout, (int)(r1 - r0), a->n);
}

void weft_op_silu_mul(weft_pool *pool, const float *gate, const float *up, size_t ldin,
                      float *out, size_t ldout, int rows, int n) {
    silu_task task = {gate, up, ldin, out, ldout, rows, n};
    weft_pool_run(pool, silu_run, &task);
}

typedef struct {
    float *x;
    size_t ldx;
    int rows, heads, head_dim;
    const int32_t *positions;
    const float *inv_freq;
} rope_task;

static void rope_run(void *ctx, int t, int threads) {
    const rope_task *a = ctx;
    long r0, r1;
    weft_split_range(a->rows, threads, t, &r0, &r1);
    if (r0 < r1)
        weft_rope(a->x + r0 * a->ldx, a->ldx, (int)(r1 - r0), a->heads, a->head_dim,
                  a->positions + r0, a->inv_freq);
}

void weft_op_rope(weft_pool *pool, float *x, size_t ldx, int rows, int heads, int head_dim,
                  const int32_t *positions, const float *inv_freq) {
    rope_task task = {x, ldx, rows, heads, head_dim, positions, inv_freq};
    weft_pool_run(pool, rope_run, &task);
}

// Attention work items are (token, head) pairs. Later tokens of a prefill see
// longer contexts, so items are dealt out by estimated cost (context length),
// not by count, to keep threads balanced on causal attention.
static void attention_share(int n_tokens, int n_heads, const int32_t *positions, int t, int threads,
                            long *begin_out, long *end_out) {
    long items = (long)n_tokens * n_heads;
    double total = 0;
    for (int tok = 0; tok < n_tokens; tok++) total += (double)(positions[tok] + 1) * n_heads;
    double lo = total * t / threads, hi = total * (t + 1) / threads, acc = 0;
    long begin = -1, end = -1;
    for (long item = 0; item < items; item++) {
        double cost = positions[item / n_heads] + 1;
        double mid = acc + cost / 2;  // an item belongs to the thread owning its midpoint
        if (mid >= lo && (mid < hi || t == threads - 1)) {
            if (begin < 0) begin = item;
            end = item + 1;
        }
        acc += cost;
    }
    *begin_out = begin;
    *end_out = end;
}

static void attention_run(void *ctx, int t, int threads) {
    const weft_attention_args *a = ctx;
    if (threads == 1) { weft_attention(a, 0, a->n_tokens * a->n_heads); return; }
    long begin, end;
    attention_share(a->n_tokens, a->n_heads, a->positions, t, threads, &begin, &end);
    if (begin >= 0) weft_attention(a, (int)begin, (int)end);
}

static void attention_kv_run(void *ctx, int t, int threads) {
    const weft_attention_kv_args *a = ctx;
    if (threads == 1) { weft_attention_kv(a, 0, a->n_tokens * a->n_heads); return; }
    long begin, end;
    attention_share(a->n_tokens, a->n_heads, a->positions, t, threads, &begin, &end);
    if (begin >= 0) weft_attention_kv(a, (int)begin, (int)end);
}

void weft_op_attention_kv(weft_pool *pool, const weft_attention_kv_args *a) {
    weft_pool_run(pool, attention_kv_run, (void *)a);
}

void weft_op_attention(weft_pool *pool, const weft_attention_args *a) {
    weft_pool_run(pool, attention_run, (void *)a);
}
