// Portable scalar references for every kernel. They define the results the
// SIMD paths are tested against, so they favour clarity over speed.
#include "weft_kernels.h"

#include <math.h>
#include <string.h>

#include "gemm_blocked.h"

// The references round every product and sum separately, whatever the build
// flags: with -march=native clang would otherwise fuse a*b+c into an FMA and
// the exact comparisons (rope) would depend on the flags.
#pragma STDC FP_CONTRACT OFF

#define NR WEFT_GEMM_NR  // one definition for the packing, the references and the SIMD drivers

void weft_bf16_to_f32_scalar(const uint16_t *src, float *dst, size_t n) {
    for (size_t i = 0; i < n; i++) {
        uint32_t bits = (uint32_t)src[i] << 16;
        memcpy(&dst[i], &bits, sizeof bits);
    }
}

void weft_f16_to_f32_scalar(const uint16_t *src, float *dst, size_t n) {
    for (size_t i = 0; i < n; i++) {
        uint32_t h = src[i];
        uint32_t sign = (h & 0x8000u) << 16;
        uint32_t exponent = (h >> 10) & 0x1fu;
        uint32_t mantissa = h & 0x3ffu;
        uint32_t bits;
        if (exponent == 0) {
            if (mantissa == 0) {
                bits = sign;
            } else {  // subnormal: renormalize
                int e = -1;
                do { e++; mantissa <<= 1; } while ((mantissa & 0x400u) == 0);
                bits = sign | ((uint32_t)(127 - 15 - e) << 23) | ((mantissa & 0x3ffu) << 13);
            }
        } else if (exponent == 0x1f) {
            bits = sign | 0x7f800000u | (mantissa << 13);
        } else {
            bits = sign | ((exponent + 127 - 15) << 23) | (mantissa << 13);
        }
        memcpy(&dst[i], &bits, sizeof bits);
    }
}

int weft_gemm_nr(void) { return NR; }

size_t weft_gemm_packed_floats(int n, int k) {
    size_t panels = ((size_t)n + NR - 1) / NR;
    return panels * NR * (size_t)k;
}

void weft_gemm_pack_panel(const float *rows, size_t ldr, int nrows, int k, float *dst) {
    for (int kk = 0; kk < k; kk++) {
        float *group = dst + (size_t)kk * NR;
        for (int j = 0; j < NR; j++) group[j] = j < nrows ? rows[(size_t)j * ldr + kk] : 0.0f;
    }
}

int weft_gemm_mr_scalar(void) { return 1; }  // one row at a time

// With one-row groups the packed x is x itself, row-major with stride kc.
void weft_gemm_xp_scalar(int m, int n, int kc, const float *xp, const float *w, float *y,
                         size_t ldy, int load_c) {
    weft_gemm_packed_scalar(m, 0, n, kc, xp, (size_t)kc, w, y, ldy, load_c);
}

void weft_gemm_packed_scalar(int m, int n0, int n1, int k, const float *x, size_t ldx,
                             const float *wpacked, float *y, size_t ldy, int accumulate) {
    for (int j0 = n0; j0 < n1; j0 += NR) {
        const float *panel = wpacked + (size_t)(j0 / NR) * NR * (size_t)k;
        int width = n1 - j0 < NR ? n1 - j0 : NR;
        for (int i = 0; i < m; i++) {
            const float *xi = x + (size_t)i * ldx;
            float acc[NR];
            for (int j = 0; j < NR; j++) acc[j] = 0.0f;
            for (int kk = 0; kk < k; kk++) {
                float xv = xi[kk];
                const float *group = panel + (size_t)kk * NR;
                for (int j = 0; j < NR; j++) acc[j] += xv * group[j];
            }
            float *yi = y + (size_t)i * ldy + j0;
            for (int j = 0; j < width; j++) yi[j] = accumulate ? yi[j] + acc[j] : acc[j];
        }
    }
}

void weft_rmsnorm_scalar(const float *x, size_t ldx, const float *w, float *y, size_t ldy,
                         int rows, int dim, float eps) {
    for (int r = 0; r < rows; r++) {
        const float *xr = x + (size_t)r * ldx;
        float *yr = y + (size_t)r * ldy;
        float sum = 0.0f;
        for (int i = 0; i < dim; i++) sum += xr[i] * xr[i];
        float inv = 1.0f / sqrtf(sum / (float)dim + eps);
        for (int i = 0; i < dim; i++) yr[i] = w[i] * (xr[i] * inv);
    }
}

void weft_add_rmsnorm_scalar(float *residual, size_t ldr, const float *delta, size_t ldd,
                             const float *w, float *y, size_t ldy, int rows, int dim, float eps) {
    for (int r = 0; r < rows; r++) {
        float *rr = residual + (size_t)r * ldr;
        const float *dr = delta + (size_t)r * ldd;
        for (int i = 0; i < dim; i++) rr[i] += dr[i];
    }
    weft_rmsnorm_scalar(residual, ldr, w, y, ldy, rows, dim, eps);
}

void weft_silu_mul_scalar(const float *gate, const float *up, size_t ldin, float *out,
                          size_t ldout, int rows, int n) {
    for (int r = 0; r < rows; r++) {
        const float *g = gate + (size_t)r * ldin;
        const float *u = up + (size_t)r * ldin;
        float *o = out + (size_t)r * ldout;
        for (int i = 0; i < n; i++) o[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
    }
}

void weft_rope_scalar(float *x, size_t ldx, int rows, int heads, int head_dim,
                      const int32_t *positions, const float *inv_freq) {
    int half = head_dim / 2;
    for (int r = 0; r < rows; r++) {
        float pos = (float)positions[r];
        for (int i = 0; i < half; i++) {
            float theta = pos * inv_freq[i];
            float c = cosf(theta), s = sinf(theta);
            for (int h = 0; h < heads; h++) {
                float *xh = x + (size_t)r * ldx + (size_t)h * head_dim;
                float a = xh[i], b = xh[i + half];
                xh[i] = a * c - b * s;
                xh[i + half] = b * c + a * s;
            }
        }
    }
}

void weft_add_bias(float *y, size_t ldy, const float *b, int rows, int n) {
    for (int r = 0; r < rows; r++) {
        float *yr = y + (size_t)r * ldy;
        for (int i = 0; i < n; i++) yr[i] += b[i];
    }
}

void weft_gather_rows(const float *src, size_t lds, const int32_t *index, int rows, int dim,
                      float *dst, size_t ldd) {
    for (int i = 0; i < rows; i++) memcpy(dst + (size_t)i * ldd, src + (size_t)index[i] * lds, (size_t)dim * sizeof(float));
}

void weft_scatter_add_scaled(float *dst, size_t ldd, const int32_t *index, const float *scale,
                             int rows, int dim, const float *src, size_t lds) {
    for (int i = 0; i < rows; i++) {
        float *d = dst + (size_t)index[i] * ldd;
        const float *s = src + (size_t)i * lds;
        const float w = scale[i];
        for (int j = 0; j < dim; j++) d[j] += w * s[j];
    }
}

static inline const float *kv_row(const float *pool, const weft_attention_args *a,
                                  const int32_t *table, int pos, int g) {
    int block = table[pos / a->block_size];
    int slot = pos % a->block_size;
    return pool + (((size_t)block * a->block_size + slot) * a->n_kv_heads + g) * a->head_dim;
}

// Online (streaming) softmax: one pass over the keys with a running maximum,
// so no scratch buffer proportional to the context is needed.
void weft_attention_scalar(const weft_attention_args *a, int item_begin, int item_end) {
    int hd = a->head_dim;
    for (int item = item_begin; item < item_end; item++) {
        int t = item / a->n_heads, h = item % a->n_heads;
        int g = a->kv_head_of[h];
        const float *q = a->q + (size_t)t * a->ldq + (size_t)h * hd;
        float *out = a->out + (size_t)t * a->ldo + (size_t)h * hd;
        const int32_t *table = a->block_tables + (size_t)a->table_row[t] * a->max_blocks;
        int context = a->positions[t] + 1;
        float running_max = -INFINITY, denom = 0.0f;
        for (int d = 0; d < hd; d++) out[d] = 0.0f;
        for (int p = 0; p < context; p++) {
            const float *k = kv_row(a->k_cache, a, table, p, g);
            float score = 0.0f;
            for (int d = 0; d < hd; d++) score += q[d] * k[d];
            score *= a->scale;
            const float *v = kv_row(a->v_cache, a, table, p, g);
            if (score > running_max) {
                float correction = expf(running_max - score);
                denom *= correction;
                for (int d = 0; d < hd; d++) out[d] *= correction;
                running_max = score;
            }
            float weight = expf(score - running_max);
            denom += weight;
            for (int d = 0; d < hd; d++) out[d] += weight * v[d];
        }
        float inv = 1.0f / denom;
        for (int d = 0; d < hd; d++) out[d] *= inv;
    }
}

void weft_kv_write(float *k_cache, float *v_cache, int block_size, int kv_width,
                   const float *k, size_t ldk, const float *v, size_t ldv,
                   const int32_t *positions, const int32_t *table_row,
                   const int32_t *block_tables, int max_blocks, int rows) {
    for (int r = 0; r < rows; r++) {
        const int32_t *table = block_tables + (size_t)table_row[r] * max_blocks;
        int pos = positions[r];
        size_t slot = (size_t)table[pos / block_size] * block_size + pos % block_size;
        memcpy(k_cache + slot * kv_width, k + (size_t)r * ldk, sizeof(float) * kv_width);
        memcpy(v_cache + slot * kv_width, v + (size_t)r * ldv, sizeof(float) * kv_width);
    }
}

// ------------------------------------------------- KV cache element types
size_t weft_kv_dtype_size(int dtype) {
    switch (dtype) {
    case WEFT_KV_F32: return 4;
    case WEFT_KV_F16: case WEFT_KV_BF16: return 2;
    default: return 0;
    }
}

static inline uint16_t f32_to_f16_bits(float f) {
    uint32_t x;
    memcpy(&x, &f, sizeof x);
    uint32_t sign = (x >> 16) & 0x8000u, ax = x & 0x7fffffffu;
    if (ax > 0x7f800000u) return (uint16_t)(sign | 0x7e00u | ((ax >> 13) & 0x3ffu));  // NaN, quieted
    if (ax >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u);  // >= 65520 (or inf) rounds to inf
    if (ax >= 0x38800000u) {  // normal half: round to nearest even at bit 13, rebias the exponent
        uint32_t r = ax + 0xfffu + ((ax >> 13) & 1u);
        return (uint16_t)(sign | ((r - 0x38000000u) >> 13));
    }
    // Subnormal half (or zero): round(|f| * 2^24) to nearest even.
    uint32_t e = ax >> 23;
    if (e < 102) return (uint16_t)sign;  // below 2^-25: rounds to zero (ties at 2^-25 go to even 0)
    uint32_t m = (ax & 0x7fffffu) | 0x800000u;
    uint32_t shift = 126 - e;  // 14..24
    uint32_t q = m >> shift, rem = m & ((1u << shift) - 1u), half = 1u << (shift - 1);
    if (rem > half || (rem == half && (q & 1u))) q++;
    return (uint16_t)(sign | q);
}

static inline uint16_t f32_to_bf16_bits(float f) {
    uint32_t x;
    memcpy(&x, &f, sizeof x);
    if ((x & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((x >> 16) | 0x40u);  // NaN, quieted
    return (uint16_t)((x + 0x7fffu + ((x >> 16) & 1u)) >> 16);
}

void weft_f32_to_f16_scalar(const float *src, uint16_t *dst, size_t n) {
    for (size_t i = 0; i < n; i++) dst[i] = f32_to_f16_bits(src[i]);
}

void weft_f32_to_bf16_scalar(const float *src, uint16_t *dst, size_t n) {
    for (size_t i = 0; i < n; i++) dst[i] = f32_to_bf16_bits(src[i]);
}

static inline float kv_elem(const void *row, int dtype, int d) {
    if (dtype == WEFT_KV_F32) return ((const float *)row)[d];
    uint16_t h = ((const uint16_t *)row)[d];
    float f;
    if (dtype == WEFT_KV_BF16) {
        weft_bf16_to_f32_scalar(&h, &f, 1);
    } else {
        weft_f16_to_f32_scalar(&h, &f, 1);
    }
    return f;
}

static inline const void *kv_row_any(const void *pool, const weft_attention_kv_args *a, size_t esize,
                                     const int32_t *table, int pos, int g) {
    int block = table[pos / a->block_size];
    int slot = pos % a->block_size;
    return (const char *)pool + (((size_t)block * a->n_kv_heads + g) * a->block_size + slot) * a->head_dim * esize;
}

// The scalar reference over any element type: weft_attention_scalar's
// operation order, each cache element widened to float32 as it is read.
void weft_attention_kv_scalar(const weft_attention_kv_args *a, int item_begin, int item_end) {
    int hd = a->head_dim, dt = a->kv_dtype;
    size_t esize = weft_kv_dtype_size(dt);
    for (int item = item_begin; item < item_end; item++) {
        int t = item / a->n_heads, h = item % a->n_heads;
        int g = a->kv_head_of[h];
        const float *q = a->q + (size_t)t * a->ldq + (size_t)h * hd;
        float *out = a->out + (size_t)t * a->ldo + (size_t)h * hd;
        if (esize == 0) {  // unknown element type
            for (int d = 0; d < hd; d++) out[d] = NAN;
            continue;
        }
        const int32_t *table = a->block_tables + (size_t)a->table_row[t] * a->max_blocks;
        int context = a->positions[t] + 1;
        float running_max = -INFINITY, denom = 0.0f;
        for (int d = 0; d < hd; d++) out[d] = 0.0f;
        for (int p = 0; p < context; p++) {
            const void *k = kv_row_any(a->k_cache, a, esize, table, p, g);
            float score = 0.0f;
            for (int d = 0; d < hd; d++) score += q[d] * kv_elem(k, dt, d);
            score *= a->scale;
            const void *v = kv_row_any(a->v_cache, a, esize, table, p, g);
            if (score > running_max) {
                float correction = expf(running_max - score);
                denom *= correction;
                for (int d = 0; d < hd; d++) out[d] *= correction;
                running_max = score;
            }
            float weight = expf(score - running_max);
            denom += weight;
            for (int d = 0; d < hd; d++) out[d] += weight * kv_elem(v, dt, d);
        }
        float inv = 1.0f / denom;
        for (int d = 0; d < hd; d++) out[d] *= inv;
    }
}

int weft_kv_write_dtype(void *k_cache, void *v_cache, int kv_dtype, int block_size,
                        int n_kv_heads, int head_dim,
                        const float *k, size_t ldk, const float *v, size_t ldv,
                        const int32_t *positions, const int32_t *table_row,
                        const int32_t *block_tables, int max_blocks, int rows) {
    size_t esize = weft_kv_dtype_size(kv_dtype);
    if (esize == 0) return -1;
    for (int r = 0; r < rows; r++) {
        const int32_t *table = block_tables + (size_t)table_row[r] * max_blocks;
        int pos = positions[r];
        size_t block = (size_t)table[pos / block_size], slot = (size_t)(pos % block_size);
        for (int g = 0; g < n_kv_heads; g++) {
            size_t at = ((block * n_kv_heads + g) * block_size + slot) * head_dim;  // elements
            const float *kr = k + (size_t)r * ldk + (size_t)g * head_dim;
            const float *vr = v + (size_t)r * ldv + (size_t)g * head_dim;
            switch (kv_dtype) {
            case WEFT_KV_F32:
                memcpy((float *)k_cache + at, kr, sizeof(float) * (size_t)head_dim);
                memcpy((float *)v_cache + at, vr, sizeof(float) * (size_t)head_dim);
                break;
            case WEFT_KV_F16:
                weft_f32_to_f16(kr, (uint16_t *)k_cache + at, (size_t)head_dim);
                weft_f32_to_f16(vr, (uint16_t *)v_cache + at, (size_t)head_dim);
                break;
            default:
                weft_f32_to_bf16(kr, (uint16_t *)k_cache + at, (size_t)head_dim);
                weft_f32_to_bf16(vr, (uint16_t *)v_cache + at, (size_t)head_dim);
                break;
            }
        }
    }
    return 0;
}
