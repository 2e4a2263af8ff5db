// weft_wgemm: linear layers over weights in their stored format. The format
// table, row conversions and the driver that picks a kernel per format and
// row count. Integer-dot decode kernels are in quant*.c; the 16-bit and
// dequantize-into-float32 paths are here.
#include "weft_wgemm.h"
#include "weft_kernels.h"
#include "weft_quant.h"

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

void weft_wgemm_thread_rows(int wtype, int n, int count, int index, long *begin, long *end) {
    (void)wtype;
    weft_split_range(n, count, index, begin, end);
}

// ------------------------------------------- 16-bit weights (first version)
// Each weight row is widened into a per-thread float32 buffer, then dotted
// with every activation row.
typedef struct {
    int wtype, m, n, k;
    const float *x;
    size_t ldx;
    const uint16_t *w;
    float *y;
    size_t ldy;
    float *rows;  // per-thread k floats
} wide_task;

static float dot_f32(const float *a, const float *b, int k) {
    float s = 0;
    for (int i = 0; i < k; i++) s += a[i] * b[i];
    return s;
}

static void wide_rows(const wide_task *t, int thread, long j0, long j1) {
    float *row = t->rows + (size_t)thread * (size_t)t->k;
    for (long j = j0; j < j1; j++) {
        const uint16_t *src = t->w + (size_t)j * (size_t)t->k;
        if (t->wtype == WEFT_WTYPE_F16) weft_f16_to_f32(src, row, (size_t)t->k);
        else weft_bf16_to_f32(src, row, (size_t)t->k);
        for (int i = 0; i < t->m; i++)
            t->y[(size_t)i * t->ldy + (size_t)j] = dot_f32(row, t->x + (size_t)i * t->ldx, t->k);
    }
}

static void wide_pool_task(void *context, int index, int count) {
    const wide_task *t = context;
    long j0, j1;
    weft_wgemm_thread_rows(t->wtype, t->n, count, index, &j0, &j1);
    wide_rows(t, index, j0, j1);
}

size_t weft_wgemm_scratch_bytes(int wtype, int m, int n, int k, int threads) {
    if (m < 1 || n < 0 || threads < 1 || weft_wtype_row_bytes(wtype, k) == 0) return 0;
    switch (wtype) {
    case WEFT_WTYPE_F16: case WEFT_WTYPE_BF16:
        return (size_t)threads * (size_t)k * sizeof(float);
    case WEFT_WTYPE_Q8_0: case WEFT_WTYPE_Q4_0: case WEFT_WTYPE_Q4_1:
    case WEFT_WTYPE_Q4_K: case WEFT_WTYPE_Q5_K: case WEFT_WTYPE_Q6_K:
        return weft_qgemv_scratch_bytes(wtype, m, k);
    default:
        return 0;
    }
}

int weft_wgemm(int wtype, int m, int n, int k, const float *x, size_t ldx, const void *w,
               float *y, size_t ldy, void *scratch, size_t scratch_bytes, weft_pool *pool) {
    int threads = pool ? weft_pool_size(pool) : 1;
    size_t need = weft_wgemm_scratch_bytes(wtype, m, n, k, threads);
    if (need == 0 || scratch_bytes < need || !x || !w || !y || !scratch) return -1;
    if (n == 0) return 0;
    switch (wtype) {
    case WEFT_WTYPE_F16: case WEFT_WTYPE_BF16: {
        wide_task t = {wtype, m, n, k, x, ldx, w, y, ldy, scratch};
        if (threads > 1) weft_pool_run(pool, wide_pool_task, &t);
        else wide_rows(&t, 0, 0, n);
        return 0;
    }
    case WEFT_WTYPE_Q8_0: case WEFT_WTYPE_Q4_0: case WEFT_WTYPE_Q4_1:
    case WEFT_WTYPE_Q4_K: case WEFT_WTYPE_Q5_K: case WEFT_WTYPE_Q6_K:
        return weft_qgemv(wtype, m, n, k, x, ldx, w, y, ldy, scratch, pool);
    default:
        return -1;
    }
}
