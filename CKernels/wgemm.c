// weft_wgemm: linear layers over weights in their stored format. The format
// table, row conversions and the driver that picks a kernel per format and
// row count. Integer-dot decode kernels are in quant*.c; the 16-bit and
// dequantize-into-float32 paths are here.
#include "weft_wgemm.h"
#include "weft_kernels.h"
#include "weft_ops.h"
#include "weft_quant.h"
#include "weft_igemm.h"
#include "wgemm_internal.h"

#include <string.h>

int weft_wtype_supported(int wtype) {
    switch (wtype) {
    case WEFT_WTYPE_F32: case WEFT_WTYPE_F16: case WEFT_WTYPE_BF16:
    case WEFT_WTYPE_Q8_0: case WEFT_WTYPE_Q4_0: case WEFT_WTYPE_Q4_1:
    case WEFT_WTYPE_Q4_K: case WEFT_WTYPE_Q5_K: case WEFT_WTYPE_Q6_K:
        return 1;
    default:
        return 0;
    }
}

int weft_wtype_block_elements(int wtype) {
    switch (wtype) {
    case WEFT_WTYPE_F32: case WEFT_WTYPE_F16: case WEFT_WTYPE_BF16: return 1;
    case WEFT_WTYPE_Q8_0: case WEFT_WTYPE_Q4_0: case WEFT_WTYPE_Q4_1: return WEFT_QK;
    case WEFT_WTYPE_Q4_K: case WEFT_WTYPE_Q5_K: case WEFT_WTYPE_Q6_K: return 256;
    default: return 0;
    }
}

size_t weft_wtype_block_bytes(int wtype) {
    switch (wtype) {
    case WEFT_WTYPE_F32: return 4;
    case WEFT_WTYPE_F16: case WEFT_WTYPE_BF16: return 2;
    case WEFT_WTYPE_Q8_0: case WEFT_WTYPE_Q4_0: case WEFT_WTYPE_Q4_1: return weft_qtype_block_bytes(wtype);
    case WEFT_WTYPE_Q4_K: return 144;
    case WEFT_WTYPE_Q5_K: return 176;
    case WEFT_WTYPE_Q6_K: return 210;
    default: return 0;
    }
}

size_t weft_wtype_row_bytes(int wtype, int64_t k) {
    int be = weft_wtype_block_elements(wtype);
    if (be == 0 || k <= 0 || k % be != 0) return 0;
    return (size_t)(k / be) * weft_wtype_block_bytes(wtype);
}

static uint16_t fp32_to_bf16(float f) {
    uint32_t x;
    memcpy(&x, &f, sizeof x);
    if ((x & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((x >> 16) | 0x40u);  // quiet NaN
    x += 0x7fffu + ((x >> 16) & 1u);  // round to nearest even
    return (uint16_t)(x >> 16);
}

int weft_dequantize_row(int wtype, const void *src, float *dst, int64_t k) {
    if (weft_wtype_row_bytes(wtype, k) == 0 || !weft_wtype_supported(wtype)) return -1;
    switch (wtype) {
    case WEFT_WTYPE_F32: memcpy(dst, src, (size_t)k * sizeof(float)); return 0;
    case WEFT_WTYPE_F16: weft_f16_to_f32(src, dst, (size_t)k); return 0;
    case WEFT_WTYPE_BF16: weft_bf16_to_f32(src, dst, (size_t)k); return 0;
    case WEFT_WTYPE_Q8_0: weft_dequantize_row_q8_0(src, dst, k); return 0;
    case WEFT_WTYPE_Q4_0: weft_dequantize_row_q4_0(src, dst, k); return 0;
    case WEFT_WTYPE_Q4_1: weft_dequantize_row_q4_1(src, dst, k); return 0;
    case WEFT_WTYPE_Q4_K: weft_dequantize_row_q4_K(src, dst, k); return 0;
    case WEFT_WTYPE_Q5_K: weft_dequantize_row_q5_K(src, dst, k); return 0;
    case WEFT_WTYPE_Q6_K: weft_dequantize_row_q6_K(src, dst, k); return 0;
    default: return -1;
    }
}

int weft_quantize_row(int wtype, const float *src, void *dst, int64_t k) {
    if (weft_wtype_row_bytes(wtype, k) == 0) return -1;
    switch (wtype) {
    case WEFT_WTYPE_F32: memcpy(dst, src, (size_t)k * sizeof(float)); return 0;
    case WEFT_WTYPE_F16:
        for (int64_t i = 0; i < k; i++) ((uint16_t *)dst)[i] = weft_fp32_to_fp16(src[i]);
        return 0;
    case WEFT_WTYPE_BF16:
        for (int64_t i = 0; i < k; i++) ((uint16_t *)dst)[i] = fp32_to_bf16(src[i]);
        return 0;
    case WEFT_WTYPE_Q8_0: weft_quantize_row_q8_0(src, dst, k); return 0;
    case WEFT_WTYPE_Q4_0: weft_quantize_row_q4_0(src, dst, k); return 0;
    case WEFT_WTYPE_Q4_1: weft_quantize_row_q4_1(src, dst, k); return 0;
    default: return -1;
    }
}

static float widen16(int bf16, uint16_t h) {
    if (!bf16) return weft_fp16_to_fp32(h);
    uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

void weft_wgemm_thread_rows(int wtype, int n, int count, int index, long *begin, long *end) {
    (void)wtype;
    weft_split_range(n, count, index, begin, end);
}

// ------------------------------------------------- 16-bit scalar references
// The definitions the SIMD paths are tested against: each weight element
// widened exactly, products summed in float32 in k order.
void weft_wgemm16_rows_scalar(int bf16, int m, long j0, long j1, int k, const float *x,
                              size_t ldx, const uint16_t *w, float *y, size_t ldy) {
    for (long j = j0; j < j1; j++) {
        const uint16_t *wj = w + (size_t)j * (size_t)k;
        for (int i = 0; i < m; i++) {
            const float *xi = x + (size_t)i * ldx;
            float s = 0.0f;
            for (int t = 0; t < k; t++) s += xi[t] * widen16(bf16, wj[t]);
            y[(size_t)i * ldy + (size_t)j] = s;
        }
    }
}

void weft_wgemm_pack16_scalar(int bf16, const uint16_t *w, size_t ldw, int nrows, int kc, float *dst) {
    for (int kk = 0; kk < kc; kk++)
        for (int r = 0; r < WEFT_GEMM_NR; r++)
            dst[(size_t)kk * WEFT_GEMM_NR + r] = r < nrows ? widen16(bf16, w[(size_t)r * ldw + kk]) : 0.0f;
}

void weft_wgemm_pack32_scalar(const float *rows, size_t ldr, int nrows, int kc, float *dst) {
    for (int kk = 0; kk < kc; kk++)
        for (int r = 0; r < WEFT_GEMM_NR; r++)
            dst[(size_t)kk * WEFT_GEMM_NR + r] = r < nrows ? rows[(size_t)r * ldr + kk] : 0.0f;
}

// The reference has no direct block-format packer: rows are dequantized by
// weft_dequantize_row and packed by weft_wgemm_pack32_scalar.
int weft_wgemm_packq_scalar(int wtype, const void *w, size_t row_bytes, int nrows, int kc, float *dst) {
    (void)wtype, (void)w, (void)row_bytes, (void)nrows, (void)kc, (void)dst;
    return 0;
}

// ------------------------------------------------------- per-ISA selection
typedef struct {
    wgemm16_fn rows16;
    wgemm_pack16_fn pack16;
    wgemm_pack32_fn pack32;
    wgemm_packq_fn packq;
} wgemm_isa_fns;

static wgemm_isa_fns isa_fns(void) {
    switch (weft_isa_current()) {
    case WEFT_ISA_AVX512:
        return (wgemm_isa_fns){weft_wgemm16_rows_avx512, weft_wgemm_pack16_avx512, weft_wgemm_pack32_avx512,
                               weft_wgemm_packq_avx512};
    case WEFT_ISA_AVX2:
        if (weft_wgemm_has_f16c())
            return (wgemm_isa_fns){weft_wgemm16_rows_avx2, weft_wgemm_pack16_avx2, weft_wgemm_pack32_avx2,
                                   weft_wgemm_packq_avx2};
        // fall through: an AVX2 CPU without F16C gets the references
    default:
        return (wgemm_isa_fns){weft_wgemm16_rows_scalar, weft_wgemm_pack16_scalar, weft_wgemm_pack32_scalar,
                               weft_wgemm_packq_scalar};
    }
}

// ------------------------------------------------------------- the paths
static int is16(int wtype) { return wtype == WEFT_WTYPE_F16 || wtype == WEFT_WTYPE_BF16; }

// Per-thread scratch of the panel path: one block of packed panels and, for
// block formats, 32 dequantized rows of a K chunk; 64 bytes of alignment slack.
static size_t panel_thread_bytes(int wtype, int k) {
    size_t kc = (size_t)(k < WGEMM_KC ? k : WGEMM_KC);
    size_t floats = (size_t)WGEMM_BLOCK_ROWS * kc + (is16(wtype) ? 0 : (size_t)WEFT_GEMM_NR * kc);
    return floats * sizeof(float) + 64;
}

// The panel path's activations, packed once per call into the float32
// micro-kernel's row groups (shared by the threads): up to WGEMM_MB rows at a
// time, k floats each, 64 bytes of alignment slack.
static size_t panel_x_bytes(int m, int k) {
    size_t mb = (size_t)(m < WGEMM_MB ? m : WGEMM_MB);
    return mb * (size_t)k * sizeof(float) + 64;
}

// The dot path's scratch: none for 16-bit weights (nominally 64 bytes, so
// that 0 keeps meaning "invalid"), the quantized activations of weft_qgemv
// otherwise (0 when weft_qgemv does not take the format).
static size_t dot_bytes(int wtype, int m, int k) {
    if (is16(wtype)) return 64;
    return weft_qgemv_scratch_bytes(wtype, m, k);
}

// The integer path's scratch: the activations quantized to the format's 8-bit
// partner blocks (m rows, rounded to 64 bytes), then weft_igemm's own (per
// thread one interleaved 8-row panel and the activation pieces' side data).
static size_t int_act_bytes(int wtype, int m, int k) {
    size_t rb = weft_igemm_act_row_bytes(wtype, k);
    return rb == 0 ? 0 : ((size_t)m * rb + 63) / 64 * 64;
}

static size_t int_bytes(int wtype, int m, int n, int k, int threads) {
    if (!weft_igemm_supported(wtype)) return 0;
    size_t act = int_act_bytes(wtype, m, k), own = weft_igemm_scratch_bytes(wtype, m, n, k, threads);
    return act == 0 || own == 0 ? 0 : act + own;
}

size_t weft_wgemm_path_scratch_bytes(int path, int wtype, int m, int n, int k, int threads) {
    if (m < 1 || n < 0 || threads < 1 || wtype == WEFT_WTYPE_F32 || !weft_wtype_supported(wtype) ||
        weft_wtype_row_bytes(wtype, k) == 0)
        return 0;
    switch (path) {
    case WEFT_WGEMM_DOT: return dot_bytes(wtype, m, k);
    case WEFT_WGEMM_PANEL: return panel_x_bytes(m, k) + (size_t)threads * panel_thread_bytes(wtype, k);
    case WEFT_WGEMM_INT: return int_bytes(wtype, m, n, k, threads);
    default: return 0;
    }
}

// The smallest m from which weft_wgemm takes the panel path, per format and
// thread count: where the panel path's GFLOP/s overtook the dot path's in
// `weft bench gemm --path dot|panel` on the Llama-3.2-1B shapes (Zen 3, AVX2;
// 1 thread on 2048x2048 and 8192x2048, 2 threads on 2048x2048 for m = 8..32);
// Docs/Kernels.md ("Weights in their stored format") has the tables.
// Below it the weights are the traffic (or, for the block formats, the
// integer dot products beat dequantizing into float32); above it the float32
// micro-kernel's reuse of each weight across activation rows wins.
static int panel_from(int wtype, int threads) {
    // On 2 threads the panel path overtook BF16's, Q4_0's and Q4_1's dot path
    // at m = 16 already (1 thread: at 32); the other crossovers did not move.
    switch (wtype) {
    case WEFT_WTYPE_F16: return 16;
    case WEFT_WTYPE_BF16: return threads >= 2 ? 16 : 32;
    case WEFT_WTYPE_Q8_0: return 8;
    case WEFT_WTYPE_Q4_0: return threads >= 2 ? 16 : 32;
    case WEFT_WTYPE_Q4_1: return threads >= 2 ? 16 : 32;
    case WEFT_WTYPE_Q4_K: return 256;
    case WEFT_WTYPE_Q5_K: return 256;
    case WEFT_WTYPE_Q6_K: return 256;
    default: return 1;  // formats without an integer-dot kernel
    }
}

// The smallest m from which weft_wgemm takes the integer path (weft_igemm) on
// a SIMD ISA: where it overtook the dot path (and the panel path) on the
// Llama-3.2-1B shapes, 1 thread, Zen 3 AVX2 (Docs/Kernels.md, "Integer
// prefill"); formats weft_igemm does not take never do.
static int int_from(int wtype) {
    if (!weft_igemm_supported(wtype) || weft_isa_current() == WEFT_ISA_SCALAR) return 1 << 30;
    switch (wtype) {
    case WEFT_WTYPE_Q4_0: return 8;   // 1.1-1.3x the dot path at m = 8
    case WEFT_WTYPE_Q4_1: return 8;   // 1.1-1.15x at m = 8
    case WEFT_WTYPE_Q8_0: return 16;  // 1.18-1.39x at m = 16 (0.99-1.22x at 8)
    case WEFT_WTYPE_Q4_K: return 16;  // 1.53-1.67x at m = 16
    case WEFT_WTYPE_Q6_K: return 32;  // 1.26-1.39x at m = 32 (0.95-1.06x at 16)
    default: return 1 << 30;
    }
}

int weft_wgemm_choose(int wtype, int m, int n, int k, int threads) {
    if (weft_wgemm_path_scratch_bytes(WEFT_WGEMM_PANEL, wtype, m, n, k, threads) == 0) return 0;
    if (m >= int_from(wtype) && weft_wgemm_path_scratch_bytes(WEFT_WGEMM_INT, wtype, m, n, k, threads) != 0)
        return WEFT_WGEMM_INT;
    if (m >= panel_from(wtype, threads)) return WEFT_WGEMM_PANEL;
    return weft_wgemm_path_scratch_bytes(WEFT_WGEMM_DOT, wtype, m, n, k, threads) ? WEFT_WGEMM_DOT
                                                                                  : WEFT_WGEMM_PANEL;
}

size_t weft_wgemm_scratch_bytes(int wtype, int m, int n, int k, int threads) {
    if (weft_wgemm_choose(wtype, m, n, k, threads) == 0) return 0;
    // Nondecreasing in m: a buffer sized for the largest batch serves every
    // smaller one, whichever path those take. The path is constant between
    // the thresholds and each path's scratch grows with m, so the largest
    // need is at the last m' <= m before each threshold, or at m.
    int ends[3] = {m, panel_from(wtype, threads) - 1, int_from(wtype) - 1};
    size_t need = 0;
    for (int e = 0; e < 3; e++) {
        int at = ends[e];
        if (at < 1 || at > m) continue;
        size_t bytes = weft_wgemm_path_scratch_bytes(weft_wgemm_choose(wtype, at, n, k, threads), wtype, at, n, k, threads);
        if (bytes > need) need = bytes;
    }
    return need;
}

typedef struct {
    int wtype, m, n, k;
    const float *x;
    size_t ldx;
    const unsigned char *w;
    size_t row_bytes;
    float *y;
    size_t ldy;
    unsigned char *scratch;  // panel path: per-thread blocks
    size_t thread_bytes;
    wgemm_isa_fns fns;
    // Panel path: rows [i0, i0 + mb) of x, packed in row groups of at most mr
    // rows (the K chunk at pc at xp + pc * mb), multiplied by xp_fn.
    float *xp;
    int i0, mb, mr;
    void (*xp_fn)(int m, int n, int kc, const float *xp, const float *w, float *y, size_t ldy, int load_c);
} wgemm_task;

static void dot16_rows(const wgemm_task *t, int thread, long j0, long j1) {
    (void)thread;
    if (j0 < j1)
        t->fns.rows16(t->wtype == WEFT_WTYPE_BF16, t->m, j0, j1, t->k, t->x, t->ldx,
                      (const uint16_t *)t->w, t->y, t->ldy);
}

// Rows [j0, j1) in blocks of WGEMM_BLOCK_ROWS: each K chunk of a block is
// dequantized into packed panels, then the float32 micro-kernels multiply it
// with the mb activation rows packed in t->xp (adding into y after the first
// chunk).
static void panel_rows(const wgemm_task *t, int thread, long j0, long j1) {
    const int NR = WEFT_GEMM_NR, k = t->k;
    uintptr_t base = (uintptr_t)(t->scratch + (size_t)thread * t->thread_bytes);
    float *block = (float *)((base + 63) & ~(uintptr_t)63);
    float *rows = block + (size_t)WGEMM_BLOCK_ROWS * (size_t)(k < WGEMM_KC ? k : WGEMM_KC);
    const int be = weft_wtype_block_elements(t->wtype);
    const size_t bb = weft_wtype_block_bytes(t->wtype);
    const int sixteen = is16(t->wtype), bf16 = t->wtype == WEFT_WTYPE_BF16;
    for (long b0 = j0; b0 < j1; b0 += WGEMM_BLOCK_ROWS) {
        long b1 = j1 - b0 < WGEMM_BLOCK_ROWS ? j1 : b0 + WGEMM_BLOCK_ROWS;
        for (int pc = 0; pc < k; pc += WGEMM_KC) {
            int kc = k - pc < WGEMM_KC ? k - pc : WGEMM_KC;
            for (long p0 = b0; p0 < b1; p0 += NR) {
                int nrows = b1 - p0 < NR ? (int)(b1 - p0) : NR;
                float *dst = block + (size_t)((p0 - b0) / NR) * NR * (size_t)kc;
                if (sixteen) {
                    t->fns.pack16(bf16, (const uint16_t *)t->w + (size_t)p0 * (size_t)k + pc, (size_t)k,
                                  nrows, kc, dst);
                } else if (!t->fns.packq(t->wtype, t->w + (size_t)p0 * t->row_bytes + (size_t)(pc / be) * bb,
                                         t->row_bytes, nrows, kc, dst)) {
                    for (int r = 0; r < nrows; r++)
                        weft_dequantize_row(t->wtype, t->w + (size_t)(p0 + r) * t->row_bytes + (size_t)(pc / be) * bb,
                                            rows + (size_t)r * kc, kc);
                    t->fns.pack32(rows, (size_t)kc, nrows, kc, dst);
                }
            }
            // All mb activation rows, packed once per call (not once per
            // block): each row group's x micro-panel stays in L1 while it
            // goes over the block's panels, and the block stays in L2.
            t->xp_fn(t->mb, (int)(b1 - b0), kc, t->xp + (size_t)pc * t->mb, block,
                     t->y + (size_t)t->i0 * t->ldy + b0, t->ldy, pc > 0);
        }
    }
}

static void dot16_pool_task(void *context, int index, int count) {
    const wgemm_task *t = context;
    long j0, j1;
    weft_wgemm_thread_rows(t->wtype, t->n, count, index, &j0, &j1);
    dot16_rows(t, index, j0, j1);
}

// Packs the row groups [g0, g1) thread `index` of `count` takes, every K chunk.
static void pack_x_pool_task(void *context, int index, int count) {
    const wgemm_task *t = context;
    long g0, g1;
    weft_split_range(weft_gemm_groups(t->mb, t->mr), count, index, &g0, &g1);
    for (int pc = 0; pc < t->k; pc += WGEMM_KC) {
        int kc = t->k - pc < WGEMM_KC ? t->k - pc : WGEMM_KC;
        weft_gemm_pack_groups(t->mb, t->mr, (int)g0, (int)g1, kc, t->x + (size_t)t->i0 * t->ldx + pc, t->ldx,
                              t->xp + (size_t)pc * t->mb);
    }
}

static void panel_pool_task(void *context, int index, int count) {
    const wgemm_task *t = context;
    long j0, j1;
    weft_wgemm_thread_rows(t->wtype, t->n, count, index, &j0, &j1);
    if (j0 < j1) panel_rows(t, index, j0, j1);
}

int weft_wgemm_path(int path, int wtype, int m, int n, int k, const float *x, size_t ldx,
                    const void *w, float *y, size_t ldy, void *scratch, size_t scratch_bytes,
                    weft_pool *pool) {
    int threads = pool ? weft_pool_size(pool) : 1;
    if (path == WEFT_WGEMM_AUTO) path = weft_wgemm_choose(wtype, m, n, k, threads);
    size_t need = weft_wgemm_path_scratch_bytes(path, wtype, m, n, k, threads);
    if (need == 0 || scratch_bytes < need || !x || !w || !y || !scratch) return -1;
    if (ldx < (size_t)k || ldy < (size_t)n) return -1;
    if (n == 0) return 0;
    wgemm_task t = {wtype, m, n, k, x, ldx, w, weft_wtype_row_bytes(wtype, k), y, ldy,
                    scratch, panel_thread_bytes(wtype, k), isa_fns(), NULL, 0, 0, 0, NULL};
    if (path == WEFT_WGEMM_DOT && !is16(wtype))
        return weft_qgemv(wtype, m, n, k, x, ldx, w, y, ldy, scratch, pool);
    if (path == WEFT_WGEMM_INT) {
        size_t rb = weft_igemm_act_row_bytes(wtype, k), act = int_act_bytes(wtype, m, k);
        if (weft_igemm_quantize(wtype, m, k, x, ldx, scratch, rb, pool) != 0) return -1;
        return weft_igemm(wtype, m, n, k, scratch, rb, w, y, ldy, (unsigned char *)scratch + act,
                          scratch_bytes - act, pool);
    }
    if (path == WEFT_WGEMM_DOT) {
        if (threads > 1) weft_pool_run(pool, dot16_pool_task, &t);
        else dot16_pool_task(&t, 0, 1);
        return 0;
    }
    // Panel path: x packed (by all threads) into the front of the scratch,
    // then each thread's weight rows, WGEMM_MB activation rows at a time.
    t.xp = (float *)(((uintptr_t)scratch + 63) & ~(uintptr_t)63);
    t.scratch = (unsigned char *)scratch + panel_x_bytes(m, k);
    t.mr = weft_gemm_row_block();
    switch (weft_isa_current()) {
    case WEFT_ISA_AVX512: t.xp_fn = weft_gemm_xp_avx512; break;
    case WEFT_ISA_AVX2: t.xp_fn = weft_gemm_xp_avx2; break;
    default: t.xp_fn = weft_gemm_xp_scalar; break;
    }
    for (t.i0 = 0; t.i0 < m; t.i0 += WGEMM_MB) {
        t.mb = m - t.i0 < WGEMM_MB ? m - t.i0 : WGEMM_MB;
        if (threads > 1) {
            weft_pool_run(pool, pack_x_pool_task, &t);
            weft_pool_run(pool, panel_pool_task, &t);
        } else {
            pack_x_pool_task(&t, 0, 1);
            panel_pool_task(&t, 0, 1);
        }
    }
    return 0;
}

int weft_wgemm(int wtype, int m, int n, int k, const float *x, size_t ldx, const void *w,
               float *y, size_t ldy, void *scratch, size_t scratch_bytes, weft_pool *pool) {
    return weft_wgemm_path(WEFT_WGEMM_AUTO, wtype, m, n, k, x, ldx, w, y, ldy, scratch,
                           scratch_bytes, pool);
}

// ------------------------------------------------------ benchmark read loop
uint64_t weft_wgemm_read_scalar(const unsigned char *p, size_t bytes) {
    uint64_t sum = 0, word;
    for (size_t i = 0; i + 8 <= bytes; i += 8) {
        memcpy(&word, p + i, 8);
        sum += word;
    }
    return sum;
}

typedef struct {
    const unsigned char *p;
    size_t bytes;
    uint64_t (*read)(const unsigned char *, size_t);
    uint64_t sums[256];
} read_task;

static void read_pool_task(void *context, int index, int count) {
    read_task *t = context;
    long l0, l1, lines = (long)(t->bytes / 64);
    weft_split_range(lines, count, index, &l0, &l1);
    size_t end = index == count - 1 ? t->bytes : (size_t)l1 * 64;
    uint64_t s = t->read(t->p + (size_t)l0 * 64, end - (size_t)l0 * 64);
    if (index < 256) t->sums[index] = s;
}

uint64_t weft_wgemm_read_loop(const void *p, size_t bytes, weft_pool *pool) {
    if (!p || bytes == 0) return 0;
    read_task t = {p, bytes, weft_wgemm_read_scalar, {0}};
    switch (weft_isa_current()) {
    case WEFT_ISA_AVX512: t.read = weft_wgemm_read_avx512; break;
    case WEFT_ISA_AVX2: t.read = weft_wgemm_read_avx2; break;
    default: break;
    }
    int threads = pool ? weft_pool_size(pool) : 1;
    if (threads > 1) weft_pool_run(pool, read_pool_task, &t);
    else read_pool_task(&t, 0, 1);
    uint64_t sum = 0;
    for (int i = 0; i < threads && i < 256; i++) sum += t.sums[i];
    return sum;
}
