// Block quantization (ggml's Q8_0, Q8_1, Q4_0, Q4_1): fp16 conversion, the
// reference quantizers and dequantizers, the scalar dot products, the
// run-time dispatch and the GEMV driver. The SIMD dot products are in
// quant_avx2.c and quant_avx512.c.
#include "weft_quant.h"
#include "weft_kernels.h"
#include "quant_tiles.h"

#include <math.h>
#include <string.h>

// As ggml's references: every product and sum rounded separately.
#pragma STDC FP_CONTRACT OFF

_Static_assert(sizeof(weft_block_q8_0) == 34, "block_q8_0 is 34 bytes");
_Static_assert(sizeof(weft_block_q8_1) == 36, "block_q8_1 is 36 bytes");
_Static_assert(sizeof(weft_block_q4_0) == 18, "block_q4_0 is 18 bytes");
_Static_assert(sizeof(weft_block_q4_1) == 20, "block_q4_1 is 20 bytes");

size_t weft_qtype_block_bytes(int type) {
    switch (type) {
    case WEFT_QTYPE_Q8_0: return sizeof(weft_block_q8_0);
    case WEFT_QTYPE_Q8_1: return sizeof(weft_block_q8_1);
    case WEFT_QTYPE_Q4_0: return sizeof(weft_block_q4_0);
    case WEFT_QTYPE_Q4_1: return sizeof(weft_block_q4_1);
    case WEFT_QTYPE_Q4_K: return sizeof(weft_block_q4_K);
    case WEFT_QTYPE_Q5_K: return sizeof(weft_block_q5_K);
    case WEFT_QTYPE_Q6_K: return sizeof(weft_block_q6_K);
    case WEFT_QTYPE_Q8_K: return sizeof(weft_block_q8_K);
    default: return 0;
    }
}

// ------------------------------------------------------------------ fp16
uint16_t weft_fp32_to_fp16(float f) {
    uint32_t x;
    memcpy(&x, &f, sizeof x);
    uint32_t sign = (x >> 16) & 0x8000u;
    x &= 0x7fffffffu;
    if (x > 0x7f800000u) return (uint16_t)(sign | 0x7e00u | ((x >> 13) & 0x3ffu));  // NaN, quiet
    if (x >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u);  // >= 65520 (and inf): inf
    if (x < 0x38800000u) {                                      // below 2^-14: subnormal half
        if (x < 0x33000000u) return (uint16_t)sign;             // <= 2^-25 rounds to 0
        uint32_t e = x >> 23, m = (x & 0x7fffffu) | 0x800000u;
        uint32_t shift = 126u - e;                              // 14..24
        uint32_t r = m >> shift, rem = m & ((1u << shift) - 1u), half = 1u << (shift - 1u);
        if (rem > half || (rem == half && (r & 1u))) r++;
        return (uint16_t)(sign | r);
    }
    uint32_t h = (x - 0x38000000u) >> 13, rem = x & 0x1fffu;  // rebias 127 -> 15
    if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) h++;  // a carry rounds up the exponent
    return (uint16_t)(sign | h);
}

float weft_fp16_to_fp32(uint16_t h) {
    uint32_t sign = ((uint32_t)h & 0x8000u) << 16, e = ((uint32_t)h >> 10) & 0x1fu, m = h & 0x3ffu;
    uint32_t bits;
    if (e == 0) {
        float v = (float)m * 0x1p-24f;  // exact
        memcpy(&bits, &v, sizeof bits);
        bits |= sign;
    } else if (e == 31) {
        bits = sign | 0x7f800000u | (m << 13);
    } else {
        bits = sign | ((e + 112u) << 23) | (m << 13);
    }
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

#define FP16(x) weft_fp16_to_fp32(x)

// ------------------------------------------------------------ quantizers
// One block of 32 as ggml's 8-bit reference quantizers do it: d = max|x| / 127,
// q = round(x / d). Returns d (in fp32, before its fp16 rounding).
static float quantize_block_8bit(const float *x, int8_t *qs) {
    float amax = 0.0f;
    for (int j = 0; j < WEFT_QK; j++) amax = fmaxf(amax, fabsf(x[j]));
    const float d = amax / ((1 << 7) - 1);
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    for (int j = 0; j < WEFT_QK; j++) qs[j] = (int8_t)roundf(x[j] * id);
    return d;
}

// ggml's quantize_row_q8_0_ref.
void weft_quantize_row_q8_0(const float *x, weft_block_q8_0 *y, int64_t k) {
    const int64_t nb = k / WEFT_QK;
    for (int64_t i = 0; i < nb; i++) y[i].d = weft_fp32_to_fp16(quantize_block_8bit(x + i * WEFT_QK, y[i].qs));
}

// ggml's quantize_row_q8_1_ref: s = d * sum(qs) from the fp32 d.
void weft_quantize_row_q8_1(const float *x, weft_block_q8_1 *y, int64_t k) {
    const int64_t nb = k / WEFT_QK;
    for (int64_t i = 0; i < nb; i++) {
        const float d = quantize_block_8bit(x + i * WEFT_QK, y[i].qs);
        y[i].d = weft_fp32_to_fp16(d);
        int sum = 0;
        for (int j = 0; j < WEFT_QK; j++) sum += y[i].qs[j];
        y[i].s = weft_fp32_to_fp16((float)sum * d);
    }
}

// ggml's quantize_row_q4_0_ref: d from the value of largest magnitude (its
// first occurrence), with its sign, so that it maps to -8.
void weft_quantize_row_q4_0(const float *x, weft_block_q4_0 *y, int64_t k) {
    const int64_t nb = k / WEFT_QK;
    for (int64_t i = 0; i < nb; i++) {
        float amax = 0.0f, max = 0.0f;
        for (int j = 0; j < WEFT_QK; j++) {
            const float v = x[i * WEFT_QK + j];
            if (amax < fabsf(v)) {
                amax = fabsf(v);
                max = v;
            }
        }
        const float d = max / -8;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        y[i].d = weft_fp32_to_fp16(d);
        for (int j = 0; j < WEFT_QK / 2; j++) {
            const float x0 = x[i * WEFT_QK + j] * id;
            const float x1 = x[i * WEFT_QK + WEFT_QK / 2 + j] * id;
            const int8_t t0 = (int8_t)(x0 + 8.5f), t1 = (int8_t)(x1 + 8.5f);
            const uint8_t xi0 = (uint8_t)(t0 < 15 ? t0 : 15);
            const uint8_t xi1 = (uint8_t)(t1 < 15 ? t1 : 15);
            y[i].qs[j] = (uint8_t)(xi0 | (xi1 << 4));
        }
    }
}

// ggml's quantize_row_q4_1_ref.
void weft_quantize_row_q4_1(const float *x, weft_block_q4_1 *y, int64_t k) {
    const int64_t nb = k / WEFT_QK;
    for (int64_t i = 0; i < nb; i++) {
        float min = 3.402823466e+38f, max = -3.402823466e+38f;
        for (int j = 0; j < WEFT_QK; j++) {
            const float v = x[i * WEFT_QK + j];
            if (v < min) min = v;
            if (v > max) max = v;
        }
        const float d = (max - min) / ((1 << 4) - 1);
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        y[i].d = weft_fp32_to_fp16(d);
        y[i].m = weft_fp32_to_fp16(min);
        for (int j = 0; j < WEFT_QK / 2; j++) {
            const float x0 = (x[i * WEFT_QK + j] - min) * id;
            const float x1 = (x[i * WEFT_QK + WEFT_QK / 2 + j] - min) * id;
            const int8_t t0 = (int8_t)(x0 + 0.5f), t1 = (int8_t)(x1 + 0.5f);
            const uint8_t xi0 = (uint8_t)(t0 < 15 ? t0 : 15);
            const uint8_t xi1 = (uint8_t)(t1 < 15 ? t1 : 15);
            y[i].qs[j] = (uint8_t)(xi0 | (xi1 << 4));
        }
    }
}

void weft_dequantize_row_q8_0(const weft_block_q8_0 *x, float *y, int64_t k) {
    for (int64_t i = 0; i < k / WEFT_QK; i++) {
        const float d = FP16(x[i].d);
        for (int j = 0; j < WEFT_QK; j++) y[i * WEFT_QK + j] = x[i].qs[j] * d;
    }
}

void weft_dequantize_row_q8_1(const weft_block_q8_1 *x, float *y, int64_t k) {
    for (int64_t i = 0; i < k / WEFT_QK; i++) {
        const float d = FP16(x[i].d);
        for (int j = 0; j < WEFT_QK; j++) y[i * WEFT_QK + j] = x[i].qs[j] * d;
    }
}

void weft_dequantize_row_q4_0(const weft_block_q4_0 *x, float *y, int64_t k) {
    for (int64_t i = 0; i < k / WEFT_QK; i++) {
        const float d = FP16(x[i].d);
        for (int j = 0; j < WEFT_QK / 2; j++) {
            const int x0 = (x[i].qs[j] & 0x0F) - 8, x1 = (x[i].qs[j] >> 4) - 8;
            y[i * WEFT_QK + j] = x0 * d;
            y[i * WEFT_QK + j + WEFT_QK / 2] = x1 * d;
        }
    }
}

void weft_dequantize_row_q4_1(const weft_block_q4_1 *x, float *y, int64_t k) {
    for (int64_t i = 0; i < k / WEFT_QK; i++) {
        const float d = FP16(x[i].d), m = FP16(x[i].m);
        for (int j = 0; j < WEFT_QK / 2; j++) {
            const int x0 = x[i].qs[j] & 0x0F, x1 = x[i].qs[j] >> 4;
            y[i * WEFT_QK + j] = x0 * d + m;
            y[i * WEFT_QK + j + WEFT_QK / 2] = x1 * d + m;
        }
    }
}

// ----------------------------------------------------- scalar dot products
// ggml's generic ggml_vec_dot_*: an exact int sum per block, then the scales
// in ggml's order.
float weft_vec_dot_q8_0_q8_0_scalar(int n, const weft_block_q8_0 *x, const weft_block_q8_0 *y) {
    float sumf = 0;
    for (int ib = 0; ib < n / WEFT_QK; ib++) {
        int sumi = 0;
        for (int j = 0; j < WEFT_QK; j++) sumi += x[ib].qs[j] * y[ib].qs[j];
        sumf += (float)sumi * (FP16(x[ib].d) * FP16(y[ib].d));
    }
    return sumf;
}

float weft_vec_dot_q4_0_q8_0_scalar(int n, const weft_block_q4_0 *x, const weft_block_q8_0 *y) {
    float sumf = 0;
    for (int ib = 0; ib < n / WEFT_QK; ib++) {
        int sumi0 = 0, sumi1 = 0;
        for (int j = 0; j < WEFT_QK / 2; j++) {
            const int v0 = (x[ib].qs[j] & 0x0F) - 8, v1 = (x[ib].qs[j] >> 4) - 8;
            sumi0 += v0 * y[ib].qs[j];
            sumi1 += v1 * y[ib].qs[j + WEFT_QK / 2];
        }
        const int sumi = sumi0 + sumi1;
        sumf += (float)sumi * FP16(x[ib].d) * FP16(y[ib].d);
    }
    return sumf;
}

float weft_vec_dot_q4_1_q8_1_scalar(int n, const weft_block_q4_1 *x, const weft_block_q8_1 *y) {
    float sumf = 0;
    for (int ib = 0; ib < n / WEFT_QK; ib++) {
        int sumi0 = 0, sumi1 = 0;
        for (int j = 0; j < WEFT_QK / 2; j++) {
            const int v0 = x[ib].qs[j] & 0x0F, v1 = x[ib].qs[j] >> 4;
            sumi0 += v0 * y[ib].qs[j];
            sumi1 += v1 * y[ib].qs[j + WEFT_QK / 2];
        }
        const int sumi = sumi0 + sumi1;
        sumf += (FP16(x[ib].d) * FP16(y[ib].d)) * (float)sumi + FP16(x[ib].m) * FP16(y[ib].s);
    }
    return sumf;
}

// ---------------------------------------------------------------- dispatch
int weft_quant_has_avx2(void) {
#if defined(__x86_64__)
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
           __builtin_cpu_supports("f16c");
#else
    return 0;
#endif
}

int weft_quant_has_avx512vnni(void) {
#if defined(__x86_64__)
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni");
#else
    return 0;
#endif
}

// The ISA the quant entry points use: weft_isa_current(), lowered to scalar
// when an AVX2 CPU lacks F16C. (Every AVX-512 CPU has F16C.)
static weft_isa quant_isa(void) {
    weft_isa isa = weft_isa_current();
    if (isa == WEFT_ISA_AVX2 && !weft_quant_has_avx2()) return WEFT_ISA_SCALAR;
    return isa;
}

#define QDISPATCH(name, args)                                                  \
    switch (quant_isa()) {                                                     \
    case WEFT_ISA_AVX512: return name##_avx512 args;                           \
    case WEFT_ISA_AVX2: return name##_avx2 args;                               \
    default: return name##_scalar args;                                        \
    }

float weft_vec_dot_q8_0_q8_0(int n, const weft_block_q8_0 *x, const weft_block_q8_0 *y) {
    QDISPATCH(weft_vec_dot_q8_0_q8_0, (n, x, y))
}
float weft_vec_dot_q4_0_q8_0(int n, const weft_block_q4_0 *x, const weft_block_q8_0 *y) {
    QDISPATCH(weft_vec_dot_q4_0_q8_0, (n, x, y))
}
float weft_vec_dot_q4_1_q8_1(int n, const weft_block_q4_1 *x, const weft_block_q8_1 *y) {
    QDISPATCH(weft_vec_dot_q4_1_q8_1, (n, x, y))
}

// ------------------------------------------------------------ GEMV driver
// Each format's kernels as tiles (quant_tiles.h): the block formats' single
// dot products here; the k-quants' tiles come from kquant*.c.
#define QTILE_WRAPPERS(isa)                                                                    \
    static void t_q8_0_##isa(int k, const void *w, size_t bw, const void *a, size_t ba,       \
                             float *y, size_t ldy) {                                          \
        (void)bw; (void)ba; (void)ldy;                                                         \
        *y = weft_vec_dot_q8_0_q8_0_##isa(k, w, a);                                            \
    }                                                                                          \
    static void t_q4_0_##isa(int k, const void *w, size_t bw, const void *a, size_t ba,       \
                             float *y, size_t ldy) {                                          \
        (void)bw; (void)ba; (void)ldy;                                                         \
        *y = weft_vec_dot_q4_0_q8_0_##isa(k, w, a);                                            \
    }                                                                                          \
    static void t_q4_1_##isa(int k, const void *w, size_t bw, const void *a, size_t ba,       \
                             float *y, size_t ldy) {                                          \
        (void)bw; (void)ba; (void)ldy;                                                         \
        *y = weft_vec_dot_q4_1_q8_1_##isa(k, w, a);                                            \
    }                                                                                          \
    static const weft_qtiles q8_0_tiles_##isa = {t_q8_0_##isa, NULL, {NULL, NULL, NULL}};      \
    static const weft_qtiles q4_0_tiles_##isa = {t_q4_0_##isa, NULL, {NULL, NULL, NULL}};      \
    static const weft_qtiles q4_1_tiles_##isa = {t_q4_1_##isa, NULL, {NULL, NULL, NULL}};      \
    static const weft_qtiles *block_tiles_##isa(int wtype) {                                   \
        switch (wtype) {                                                                       \
        case WEFT_QTYPE_Q8_0: return &q8_0_tiles_##isa;                                        \
        case WEFT_QTYPE_Q4_0: return &q4_0_tiles_##isa;                                        \
        case WEFT_QTYPE_Q4_1: return &q4_1_tiles_##isa;                                        \
        default: return weft_kq_tiles_##isa(wtype);                                            \
        }                                                                                      \
    }
QTILE_WRAPPERS(scalar)
QTILE_WRAPPERS(avx512)

// AVX2: quant_avx2.c's tiles (the scalar ones where it has none: not x86-64).
static const weft_qtiles *block_tiles_avx2(int wtype) {
    const weft_qtiles *t = weft_q_tiles_avx2(wtype);
    return t ? t : block_tiles_scalar(wtype);
}

// The activation quantizer of each path (one set of bytes: the SIMD ones
// write the reference's, so the path's dot products see the same blocks).
typedef void (*qquant_fn)(const float *x, void *y, int64_t k);
static void qq8_0_ref(const float *x, void *y, int64_t k) { weft_quantize_row_q8_0(x, y, k); }
static void qq8_1_ref(const float *x, void *y, int64_t k) { weft_quantize_row_q8_1(x, y, k); }
static void qq8_0_avx2(const float *x, void *y, int64_t k) { weft_quantize_row_q8_0_avx2(x, y, k); }
static void qq8_1_avx2(const float *x, void *y, int64_t k) { weft_quantize_row_q8_1_avx2(x, y, k); }
static void qq8_K_scalar(const float *x, void *y, int64_t k) { weft_quantize_row_q8_K_scalar(x, y, k); }
static void qq8_K_avx2(const float *x, void *y, int64_t k) { weft_quantize_row_q8_K_avx2(x, y, k); }
static void qq8_K_avx512(const float *x, void *y, int64_t k) { weft_quantize_row_q8_K_avx512(x, y, k); }

typedef struct {
    const weft_qtiles *(*tiles)(int wtype);
    qquant_fn q8_0, q8_1, q8_K;
} qgemv_path;

static const qgemv_path path_scalar = {block_tiles_scalar, qq8_0_ref, qq8_1_ref, qq8_K_scalar};
// (Every AVX-512 CPU runs the AVX2 8-bit quantizers.)
static const qgemv_path path_avx2 = {block_tiles_avx2, qq8_0_avx2, qq8_1_avx2, qq8_K_avx2};
static const qgemv_path path_avx512 = {block_tiles_avx512, qq8_0_avx2, qq8_1_avx2, qq8_K_avx512};

typedef struct {
    const weft_qtiles *tiles;
    int m, n, k;
    const unsigned char *xq;
    size_t xq_row_bytes;
    const unsigned char *w;
    size_t w_row_bytes;
    float *y;
    size_t ldy;
    const unsigned char *side;  // the 8-lane tiles' activation side data
} qgemv_task;

// Activation side data of the 8-lane tiles (quant_tiles.h).
size_t weft_qside_bytes(int m, int nb) {
    const size_t mpad = ((size_t)m + 3) & ~(size_t)3;
    return (size_t)nb * 2 * mpad * 4;
}

void weft_qside_fill(int wtype, int m, int nb, const void *a, size_t a_row_bytes, void *side) {
    const size_t mpad = ((size_t)m + 3) & ~(size_t)3;
    const size_t yb = wtype == WEFT_QTYPE_Q4_1 ? sizeof(weft_block_q8_1) : sizeof(weft_block_q8_0);
    const size_t yq = wtype == WEFT_QTYPE_Q4_1 ? 4 : 2;
    unsigned char *s = side;
    for (int b = 0; b < nb; b++) {
        float *dy = (float *)(s + (size_t)b * 2 * mpad * 4);
        for (size_t c = 0; c < (size_t)m; c++) {
            const unsigned char *y = (const unsigned char *)a + c * a_row_bytes + (size_t)b * yb;
            uint16_t d, s16;
            memcpy(&d, y, 2);
            dy[c] = weft_fp16_to_fp32(d);
            if (wtype == WEFT_QTYPE_Q4_1) {
                memcpy(&s16, y + 2, 2);
                dy[mpad + c] = weft_fp16_to_fp32(s16);
            } else {
                int8_t q[WEFT_QK];
                memcpy(q, y + yq, WEFT_QK);
                int32_t sum = 0;
                for (int j = 0; j < WEFT_QK; j++) sum += q[j];
                sum *= 8;
                memcpy(&dy[mpad + c], &sum, 4);
            }
        }
        for (size_t c = (size_t)m; c < mpad; c++) {
            dy[c] = dy[m - 1];
            dy[mpad + c] = dy[mpad + m - 1];
        }
    }
}

// Lane tiles (quant_tiles.h; the AVX2 Q8_0/Q4_0/Q4_1 kernels): m == 1 runs
// R weight rows x 1 activation row, m == 2 R x 2, m >= 3 R x 4 (the weight
// rows unpacked once per group of 4 activation rows). Other tiles: m == 1
// four weight rows per pass sharing the activation loads; m > 1 each weight
// row against up to four activation rows per pass (its unpacked values
// reused). Every tile gives its path's single-dot bits, so the grouping (and
// the thread split) never changes a result.
static void qgemv_rows(const qgemv_task *t, long j0, long j1) {
    const weft_qtiles *T = t->tiles;
    const size_t wrb = t->w_row_bytes, xrb = t->xq_row_bytes;
    long j = j0;
    if (t->m == 1 && T->rows1) {
        if (j0 < j1) T->rows1(t->k, t->w + (size_t)j0 * wrb, wrb, (int)(j1 - j0), t->xq, (const float *)t->side, t->y + j0);
        return;
    }
    if (T->lanes8[0]) {
        const int ci = t->m == 1 ? 0 : t->m == 2 ? 1 : 2, C = 1 << ci;
        const int R = T->lane_rows[ci];
        const weft_qtile8_fn f = T->lanes8[ci];
        const size_t mpad = ((size_t)t->m + 3) & ~(size_t)3;
        for (; j < j1; j += R) {
            const int nr = j1 - j < R ? (int)(j1 - j) : R;
            for (int i = 0; i < t->m; i += C) {
                const int nc = t->m - i < C ? t->m - i : C;
                f(t->k, t->w + (size_t)j * wrb, wrb, t->xq + (size_t)i * xrb, xrb, t->side + (size_t)i * 4,
                  2 * mpad, mpad, t->y + (size_t)i * t->ldy + (size_t)j, t->ldy, nr, nc, 0);
            }
        }
        return;
    }
    if (t->m == 1) {
        if (T->r4c1)
            for (; j + 4 <= j1; j += 4) T->r4c1(t->k, t->w + (size_t)j * wrb, wrb, t->xq, xrb, t->y + j, t->ldy);
        for (; j < j1; j++) T->r1c1(t->k, t->w + (size_t)j * wrb, wrb, t->xq, xrb, t->y + j, t->ldy);
        return;
    }
    for (; j < j1; j++) {
        const unsigned char *wr = t->w + (size_t)j * wrb;
        for (int i = 0; i < t->m;) {
            int c = t->m - i < 4 ? t->m - i : 4;
            weft_qtile_fn f = c == 1 ? T->r1c1 : T->r1c[c - 2];
            if (!f) {
                f = T->r1c1;
                c = 1;
            }
            f(t->k, wr, wrb, t->xq + (size_t)i * xrb, xrb, t->y + (size_t)i * t->ldy + (size_t)j, t->ldy);
            i += c;
        }
    }
}

static void qgemv_pool_task(void *context, int index, int count) {
    const qgemv_task *t = context;
    long j0, j1;
    weft_split_range(t->n, count, index, &j0, &j1);
    qgemv_rows(t, j0, j1);
}

static int block_elements(int wtype) {
    switch (wtype) {
    case WEFT_QTYPE_Q8_0: case WEFT_QTYPE_Q4_0: case WEFT_QTYPE_Q4_1: return WEFT_QK;
    case WEFT_QTYPE_Q4_K: case WEFT_QTYPE_Q5_K: case WEFT_QTYPE_Q6_K: return WEFT_QK_K;
    default: return 0;
    }
}

static size_t activation_block_bytes(int wtype) {
    switch (wtype) {
    case WEFT_QTYPE_Q8_0:
    case WEFT_QTYPE_Q4_0: return sizeof(weft_block_q8_0);
    case WEFT_QTYPE_Q4_1: return sizeof(weft_block_q8_1);
    case WEFT_QTYPE_Q4_K: case WEFT_QTYPE_Q5_K: case WEFT_QTYPE_Q6_K: return sizeof(weft_block_q8_K);
    default: return 0;
    }
}

// The quantized activations (m rows), then for Q8_0/Q4_0/Q4_1 the 8-lane
// tiles' side data at the next 32-byte boundary.
static size_t side_offset(int m, int nb, size_t ab) { return ((size_t)m * (size_t)nb * ab + 31) & ~(size_t)31; }

size_t weft_qgemv_scratch_bytes(int wtype, int m, int k) {
    size_t ab = activation_block_bytes(wtype);
    int be = block_elements(wtype);
    if (ab == 0 || m < 1 || k < be || k % be != 0) return 0;
    if (be == WEFT_QK) return side_offset(m, k / be, ab) + weft_qside_bytes(m, k / be);
    return (size_t)m * (size_t)(k / be) * ab;
}

static int qgemv(const qgemv_path *path, int wtype, int m, int n, int k, const float *x, size_t ldx,
                 const void *w, float *y, size_t ldy, void *scratch, weft_pool *pool) {
    size_t ab = activation_block_bytes(wtype);
    int be = block_elements(wtype);
    if (ab == 0 || m < 1 || n < 0 || k < be || k % be != 0) return -1;
    if (n == 0) return 0;
    if (!x || !w || !y || !scratch) return -1;
    const size_t nb = (size_t)(k / be);
    qgemv_task t = {
        .tiles = path->tiles(wtype),
        .m = m, .n = n, .k = k,
        .xq = scratch, .xq_row_bytes = nb * ab,
        .w = w, .w_row_bytes = nb * weft_qtype_block_bytes(wtype),
        .y = y, .ldy = ldy,
    };
    const qquant_fn quantize = be == WEFT_QK_K ? path->q8_K : wtype == WEFT_QTYPE_Q4_1 ? path->q8_1 : path->q8_0;
    // Activations once per call, on the calling thread (m * k floats: small
    // next to the n * k weights streamed below).
    for (int i = 0; i < m; i++)
        quantize(x + (size_t)i * ldx, (unsigned char *)scratch + (size_t)i * t.xq_row_bytes, k);
    if (m == 1 && t.tiles->rows1) {
        // The row kernel's activation scales as float32 (in the side data's
        // place: nb floats, where the side data takes 8 * nb).
        float *dy = (float *)((unsigned char *)scratch + side_offset(m, (int)nb, ab));
        for (size_t b = 0; b < nb; b++) {
            uint16_t d;
            memcpy(&d, (const unsigned char *)scratch + b * ab, 2);
            dy[b] = weft_fp16_to_fp32(d);
        }
        t.side = (const unsigned char *)dy;
    } else if (t.tiles->lanes8[0]) {
        unsigned char *side = (unsigned char *)scratch + side_offset(m, (int)nb, ab);
        weft_qside_fill(wtype, m, (int)nb, scratch, t.xq_row_bytes, side);
        t.side = side;
    }
    if (pool && weft_pool_size(pool) > 1)
        weft_pool_run(pool, qgemv_pool_task, &t);
    else
        qgemv_rows(&t, 0, n);
    return 0;
}

int weft_qgemv_scalar(int wtype, int m, int n, int k, const float *x, size_t ldx, const void *w,
                      float *y, size_t ldy, void *scratch, weft_pool *pool) {
    return qgemv(&path_scalar, wtype, m, n, k, x, ldx, w, y, ldy, scratch, pool);
}
int weft_qgemv_avx2(int wtype, int m, int n, int k, const float *x, size_t ldx, const void *w,
                    float *y, size_t ldy, void *scratch, weft_pool *pool) {
    return qgemv(&path_avx2, wtype, m, n, k, x, ldx, w, y, ldy, scratch, pool);
}
int weft_qgemv_avx512(int wtype, int m, int n, int k, const float *x, size_t ldx, const void *w,
                      float *y, size_t ldy, void *scratch, weft_pool *pool) {
    return qgemv(&path_avx512, wtype, m, n, k, x, ldx, w, y, ldy, scratch, pool);
}
int weft_qgemv(int wtype, int m, int n, int k, const float *x, size_t ldx, const void *w,
               float *y, size_t ldy, void *scratch, weft_pool *pool) {
    QDISPATCH(weft_qgemv, (wtype, m, n, k, x, ldx, w, y, ldy, scratch, pool))
}
