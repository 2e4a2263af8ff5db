// weft_igemm: prefill over block-quantized weights with integer dot products
// (weft_igemm.h). This file: format table, activation quantization, the
// scalar reference (the decode scalar dot products per output), the
// cache-blocked, threaded driver of the SIMD register tiles, and dispatch.
#include "weft_igemm.h"
#include "weft_kernels.h"
#include "weft_quant.h"
#include "weft_wgemm.h"
#include "igemm_internal.h"

#include <stdint.h>
#include <string.h>

// ------------------------------------------------------------- formats
static int block_elements(int wtype) {
    switch (wtype) {
    case WEFT_QTYPE_Q8_0: case WEFT_QTYPE_Q4_0: case WEFT_QTYPE_Q4_1: return WEFT_QK;
    case WEFT_QTYPE_Q4_K: case WEFT_QTYPE_Q6_K: return WEFT_QK_K;
    default: return 0;
    }
}

int weft_igemm_supported(int wtype) { return block_elements(wtype) != 0; }

int weft_igemm_act_type(int wtype) {
    switch (wtype) {
    case WEFT_QTYPE_Q8_0: case WEFT_QTYPE_Q4_0: return WEFT_QTYPE_Q8_0;
    case WEFT_QTYPE_Q4_1: return WEFT_QTYPE_Q8_1;
    case WEFT_QTYPE_Q4_K: case WEFT_QTYPE_Q6_K: return WEFT_QTYPE_Q8_K;
    default: return 0;
    }
}

static int valid_k(int wtype, int k) {
    const int be = block_elements(wtype);
    return be && k > 0 && k % be == 0;
}

size_t weft_igemm_act_row_bytes(int wtype, int k) {
    if (!valid_k(wtype, k)) return 0;
    return (size_t)(k / block_elements(wtype)) * weft_qtype_block_bytes(weft_igemm_act_type(wtype));
}

static size_t weight_row_bytes(int wtype, int k) {
    return (size_t)(k / block_elements(wtype)) * weft_qtype_block_bytes(wtype);
}

int weft_igemm_has_avx2(void) { return weft_quant_has_avx2(); }

int weft_igemm_has_avx512(void) {
#if defined(__x86_64__)
    __builtin_cpu_init();
    return weft_quant_has_avx2() && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl");
#else
    return 0;
#endif
}

static int has_vnni(void) { return weft_quant_has_avx512vnni(); }

// ------------------------------------------------------ quantization
typedef struct {
    int act, m, k;
    const float *x;
    size_t ldx;
    unsigned char *xq;
    size_t ldxq;
    int simd;
} quant_task;

static void quantize_one(const quant_task *t, int i) {
    const float *x = t->x + (size_t)i * t->ldx;
    void *dst = t->xq + (size_t)i * t->ldxq;
    switch (t->act) {
    case WEFT_QTYPE_Q8_0:
        if (t->simd) weft_quantize_row_q8_0_avx2(x, dst, t->k);
        else weft_quantize_row_q8_0(x, dst, t->k);
        break;
    case WEFT_QTYPE_Q8_1:
        if (t->simd) weft_quantize_row_q8_1_avx2(x, dst, t->k);
        else weft_quantize_row_q8_1(x, dst, t->k);
        break;
    default: weft_quantize_row_q8_K(x, dst, t->k); break;
    }
}

static void quant_pool_task(void *context, int index, int count) {
    const quant_task *t = context;
    long i0, i1;
    weft_split_range(t->m, count, index, &i0, &i1);
    for (long i = i0; i < i1; i++) quantize_one(t, (int)i);
}

int weft_igemm_quantize(int wtype, int m, int k, const float *x, size_t ldx, void *xq, size_t ldxq_bytes,
                        weft_pool *pool) {
    const size_t rb = weft_igemm_act_row_bytes(wtype, k);
    if (!rb || m < 1 || !x || !xq || ldx < (size_t)k || ldxq_bytes < rb) return -1;
    // The AVX2 quantizers write the same bytes as the references (weft_quant.h).
    quant_task t = {weft_igemm_act_type(wtype), m, k, x, ldx, xq, ldxq_bytes,
                    weft_isa_current() != WEFT_ISA_SCALAR && weft_quant_has_avx2()};
    if (pool && weft_pool_size(pool) > 1 && m > 1) weft_pool_run(pool, quant_pool_task, &t);
    else quant_pool_task(&t, 0, 1);
    return 0;
}

// ------------------------------------------------------------- driver
typedef struct {
    int wtype, m, n, k;
    const unsigned char *xq;
    size_t ldxq;
    const unsigned char *w;
    float *y;
    size_t ldy;
    const weft_ig_panel_kernel *panel;  // NULL: the scalar reference
    unsigned char *scratch;
    size_t thread_scratch;
} igemm_task;

static float scalar_dot(int wtype, int k, const void *w, const void *a) {
    switch (wtype) {
    case WEFT_QTYPE_Q8_0: return weft_vec_dot_q8_0_q8_0_scalar(k, w, a);
    case WEFT_QTYPE_Q4_0: return weft_vec_dot_q4_0_q8_0_scalar(k, w, a);
    case WEFT_QTYPE_Q4_1: return weft_vec_dot_q4_1_q8_1_scalar(k, w, a);
    case WEFT_QTYPE_Q4_K: return weft_vec_dot_q4_K_q8_K_scalar(k, w, a);
    default: return weft_vec_dot_q6_K_q8_K_scalar(k, w, a);
    }
}

// The scalar reference: the decode scalar dot product per output.
static void igemm_scalar_rows(const igemm_task *t, long j0, long j1) {
    const size_t wrow = weight_row_bytes(t->wtype, t->k);
    for (long j = j0; j < j1; j++)
        for (int i = 0; i < t->m; i++)
            t->y[(size_t)i * t->ldy + (size_t)j] =
                scalar_dot(t->wtype, t->k, t->w + (size_t)j * wrow, t->xq + (size_t)i * t->ldxq);
}

// Cache budgets of the SIMD path, per thread: the 8-row weight panel of one k
// piece (<= IG_L1_W bytes: L1), the activation rows of one m chunk over that
// piece (<= IG_L2_A bytes: L2).
#ifndef IG_L1_W
#define IG_L1_W (20 * 1024)
#endif
#ifndef IG_L2_A
#define IG_L2_A (256 * 1024)
#endif

// The interleaved-panel scheme (igemm_internal.h): k pieces of kcb blocks
// whose 8-row panel stays in L1; m chunks of mc rows whose activation pieces
// stay in L2; per piece and chunk, the activations' side data, then per 8
// weight rows one repack and the register tiles over the chunk's rows. Pieces
// after the first add into y (float32 sums in another order than the scalar
// reference: within the SIMD paths' tolerance).
typedef struct { int kcb, mc; size_t panel_bytes, side_bytes; } panel_plan;

static panel_plan plan_panel(const weft_ig_panel_kernel *pk, int wtype, int m, int k) {
    const int nbk = k / block_elements(wtype);
    const size_t ablk = weft_qtype_block_bytes(weft_igemm_act_type(wtype));
    panel_plan p;
    p.kcb = (int)(IG_L1_W / pk->panel_block_bytes);
    if (p.kcb < 1) p.kcb = 1;
    if (p.kcb >= nbk) p.kcb = nbk;
    else {
        const int pieces = (nbk + p.kcb - 1) / p.kcb;
        p.kcb = (nbk + pieces - 1) / pieces;
    }
    p.mc = (int)(IG_L2_A / ((size_t)p.kcb * ablk));
    p.mc = p.mc / pk->rn * pk->rn;
    if (p.mc < pk->rn) p.mc = pk->rn;
    if (p.mc > m) p.mc = m;
    p.panel_bytes = ((size_t)p.kcb * pk->panel_block_bytes + 63) / 64 * 64;
    p.side_bytes = ((size_t)p.mc * (size_t)p.kcb * pk->side_block_bytes + 63) / 64 * 64;
    return p;
}

static void igemm_panel_rows(const igemm_task *t, unsigned char *scratch, long j0, long j1) {
    const weft_ig_panel_kernel *pk = t->panel;
    const panel_plan p = plan_panel(pk, t->wtype, t->m, t->k);
    const int nbk = t->k / block_elements(t->wtype);
    const size_t wrow = weight_row_bytes(t->wtype, t->k);
    const size_t wblk = weft_qtype_block_bytes(t->wtype);
    const size_t ablk = weft_qtype_block_bytes(weft_igemm_act_type(t->wtype));
    unsigned char *panel = scratch, *side = scratch + p.panel_bytes;
    const size_t sstride = (size_t)p.kcb * pk->side_block_bytes;
    const int RN = pk->rn;
    for (int kb0 = 0; kb0 < nbk; kb0 += p.kcb) {
        const int nb = nbk - kb0 < p.kcb ? nbk - kb0 : p.kcb;
        for (int i0 = 0; i0 < t->m; i0 += p.mc) {
            const int i1 = t->m - i0 < p.mc ? t->m : i0 + p.mc;
            for (int i = i0; i < i1; i++)
                pk->side(nb, t->xq + (size_t)i * t->ldxq + (size_t)kb0 * ablk, side + (size_t)(i - i0) * sstride);
            for (long j = j0; j < j1; j += 8) {
                const int rows = j1 - j < 8 ? (int)(j1 - j) : 8;
                pk->pack(nb, t->w + (size_t)j * wrow + (size_t)kb0 * wblk, wrow, rows, panel);
                for (int i = i0; i < i1; i += RN) {
                    const int rn = i1 - i < RN ? i1 - i : RN;
                    pk->tiles[rn - 1](nb, panel, t->xq + (size_t)i * t->ldxq + (size_t)kb0 * ablk, t->ldxq,
                                      side + (size_t)(i - i0) * sstride, sstride, t->y + (size_t)i * t->ldy + (size_t)j,
                                      t->ldy, rows, kb0 > 0);
                }
            }
        }
    }
}

static void igemm_pool_task(void *context, int index, int count) {
    const igemm_task *t = context;
    long j0, j1;
    weft_wgemm_thread_rows(t->wtype, t->n, count, index, &j0, &j1);
    if (j0 >= j1) return;
    if (t->panel) igemm_panel_rows(t, t->scratch + (size_t)index * t->thread_scratch, j0, j1);
    else igemm_scalar_rows(t, j0, j1);
}

static size_t panel_thread_bytes(const weft_ig_panel_kernel *pk, int wtype, int m, int k) {
    const panel_plan p = plan_panel(pk, wtype, m, k);
    return p.panel_bytes + p.side_bytes;
}

size_t weft_igemm_scratch_bytes(int wtype, int m, int n, int k, int threads) {
    if (!valid_k(wtype, k) || m < 1 || n < 0 || threads < 1) return 0;
    size_t per = 0;
    const weft_ig_panel_kernel *pk = weft_ig_panel_avx2(wtype);
    if (pk) per = panel_thread_bytes(pk, wtype, m, k);
    return 64 + (size_t)threads * per;
}

static int igemm_run(const weft_ig_panel_kernel *panel, int simd, int wtype, int m, int n, int k, const void *xq, size_t ldxq_bytes, const void *w, float *y, size_t ldy,
                     void *scratch, size_t scratch_bytes, weft_pool *pool) {
    if (!valid_k(wtype, k) || m < 1 || n < 0 || !xq || !w || !y) return -1;
    if (ldxq_bytes < weft_igemm_act_row_bytes(wtype, k) || ldy < (size_t)n) return -1;
    if (simd && !panel) return -1;
    const int threads = pool ? weft_pool_size(pool) : 1;
    if (scratch_bytes < weft_igemm_scratch_bytes(wtype, m, n, k, threads) || !scratch) return -1;
    if (n == 0) return 0;
    igemm_task t = {wtype, m, n, k, xq, ldxq_bytes, w, y, ldy, simd ? panel : NULL, NULL, 0};
    if (t.panel) {
        t.scratch = (unsigned char *)(((uintptr_t)scratch + 63) & ~(uintptr_t)63);
        t.thread_scratch = panel_thread_bytes(panel, wtype, m, k);
    }
    if (pool && threads > 1) weft_pool_run(pool, igemm_pool_task, &t);
    else igemm_pool_task(&t, 0, 1);
    return 0;
}

int weft_igemm_scalar(int wtype, int m, int n, int k, const void *xq, size_t ldxq_bytes, const void *w,
                      float *y, size_t ldy, void *scratch, size_t scratch_bytes, weft_pool *pool) {
    return igemm_run(NULL, 0, wtype, m, n, k, xq, ldxq_bytes, w, y, ldy, scratch, scratch_bytes, pool);
}

int weft_igemm_avx2(int wtype, int m, int n, int k, const void *xq, size_t ldxq_bytes, const void *w,
                    float *y, size_t ldy, void *scratch, size_t scratch_bytes, weft_pool *pool) {
    if (!weft_igemm_has_avx2()) return -1;
    return igemm_run(weft_ig_panel_avx2(wtype), 1, wtype, m, n, k, xq, ldxq_bytes, w, y,
                     ldy, scratch, scratch_bytes, pool);
}

int weft_igemm_avx512(int wtype, int m, int n, int k, const void *xq, size_t ldxq_bytes, const void *w,
                      float *y, size_t ldy, void *scratch, size_t scratch_bytes, weft_pool *pool) {
    if (!weft_igemm_has_avx512()) return -1;
    const weft_ig_panel_kernel *panel = has_vnni() ? weft_ig_panel_avx512vnni(wtype) : weft_ig_panel_avx512(wtype);
    return igemm_run(panel, 1, wtype, m, n, k, xq, ldxq_bytes, w, y, ldy, scratch, scratch_bytes, pool);
}

int weft_igemm(int wtype, int m, int n, int k, const void *xq, size_t ldxq_bytes, const void *w, float *y,
               size_t ldy, void *scratch, size_t scratch_bytes, weft_pool *pool) {
    switch (weft_isa_current()) {
    case WEFT_ISA_AVX512:
        if (weft_igemm_has_avx512())
            return weft_igemm_avx512(wtype, m, n, k, xq, ldxq_bytes, w, y, ldy, scratch, scratch_bytes, pool);
        /* fall through */
    case WEFT_ISA_AVX2:
        if (weft_igemm_has_avx2())
            return weft_igemm_avx2(wtype, m, n, k, xq, ldxq_bytes, w, y, ldy, scratch, scratch_bytes, pool);
        /* fall through */
    default: return weft_igemm_scalar(wtype, m, n, k, xq, ldxq_bytes, w, y, ldy, scratch, scratch_bytes, pool);
    }
}

void weft_igemm_tile_shape(int isa, int wtype, int *rows, int *cols) {
    const weft_ig_panel_kernel *pk = isa == 1 ? weft_ig_panel_avx2(wtype)
                                     : isa == 2 ? (has_vnni() ? weft_ig_panel_avx512vnni(wtype) : weft_ig_panel_avx512(wtype))
                                                : NULL;
    if (rows) *rows = pk ? 8 : 0;
    if (cols) *cols = pk ? pk->rn : 0;
}
