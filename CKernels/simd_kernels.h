// Internal: the row-wise and attention kernels, written once over a small
// vector vocabulary and instantiated per ISA. The including file defines, with
// its target attribute (SIMD_TARGET / SIMD_INLINE):
//
//   vf, VW                                vector of VW floats
//   SIMD_FN(name)                         name##_<isa>
//   v_zero v_set1 v_load v_store          full vectors (unaligned)
//   v_load_n(p, n) v_store_n(p, v, n)     first n < VW lanes (others zero / untouched)
//   v_add v_sub v_mul v_div v_fma(a,b,c)=a*b+c
//   v_hsum v_hmax                         horizontal sum / maximum
//   v_exp                                 e^x for all floats (NaN, +-inf, subnormal results)
//
// Each kernel keeps the scalar reference's per-element operation order
// (kernels_scalar.c); only sums are re-associated, so results differ from the
// reference by rounding only (rope and the residual add are exact).
#ifndef SIMD_FN
#error "include simd_kernels.h from an ISA file"
#endif

#include <math.h>

SIMD_INLINE float SIMD_FN(sum_squares)(const float *x, int n) {
    vf s0 = v_zero(), s1 = v_zero(), s2 = v_zero(), s3 = v_zero();
    int i = 0;
    for (; i + 4 * VW <= n; i += 4 * VW) {
        vf a = v_load(x + i), b = v_load(x + i + VW);
        vf c = v_load(x + i + 2 * VW), d = v_load(x + i + 3 * VW);
        s0 = v_fma(a, a, s0);
        s1 = v_fma(b, b, s1);
        s2 = v_fma(c, c, s2);
        s3 = v_fma(d, d, s3);
    }
    for (; i + VW <= n; i += VW) {
        vf a = v_load(x + i);
        s0 = v_fma(a, a, s0);
    }
    if (i < n) {
        vf a = v_load_n(x + i, n - i);
        s1 = v_fma(a, a, s1);
    }
    return v_hsum(v_add(v_add(s0, s1), v_add(s2, s3)));
}

// y = w * (x * inv), the reference's order.
SIMD_INLINE void SIMD_FN(scale_by_weight)(const float *x, const float *w, float inv, float *y,
                                          int n) {
    vf vinv = v_set1(inv);
    int i = 0;
    for (; i + VW <= n; i += VW) v_store(y + i, v_mul(v_load(w + i), v_mul(v_load(x + i), vinv)));
    if (i < n)
        v_store_n(y + i, v_mul(v_load_n(w + i, n - i), v_mul(v_load_n(x + i, n - i), vinv)), n - i);
}

SIMD_TARGET void SIMD_FN(weft_rmsnorm)(const float *x, size_t ldx, const float *w, float *y,
                                       size_t ldy, int rows, int dim, float eps) {
    for (int r = 0; r < rows; r++) {
        const float *xr = x + (size_t)r * ldx;
        float sum = SIMD_FN(sum_squares)(xr, dim);
        float inv = 1.0f / sqrtf(sum / (float)dim + eps);
        SIMD_FN(scale_by_weight)(xr, w, inv, y + (size_t)r * ldy, dim);
    }
}

SIMD_TARGET void SIMD_FN(weft_add_rmsnorm)(float *residual, size_t ldr, const float *delta,
                                           size_t ldd, const float *w, float *y, size_t ldy,
                                           int rows, int dim, float eps) {
    for (int r = 0; r < rows; r++) {
        float *rr = residual + (size_t)r * ldr;
        const float *dr = delta + (size_t)r * ldd;
        // residual += delta and the sum of squares in one pass.
        vf s0 = v_zero(), s1 = v_zero();
        int i = 0;
        for (; i + 2 * VW <= dim; i += 2 * VW) {
            vf a = v_add(v_load(rr + i), v_load(dr + i));
            vf b = v_add(v_load(rr + i + VW), v_load(dr + i + VW));
            v_store(rr + i, a);
            v_store(rr + i + VW, b);
            s0 = v_fma(a, a, s0);
            s1 = v_fma(b, b, s1);
        }
        for (; i < dim; i += VW) {
            int n = dim - i < VW ? dim - i : VW;
            vf a = v_add(v_load_n(rr + i, n), v_load_n(dr + i, n));
            v_store_n(rr + i, a, n);
            s0 = v_fma(a, a, s0);
        }
        float inv = 1.0f / sqrtf(v_hsum(v_add(s0, s1)) / (float)dim + eps);
        SIMD_FN(scale_by_weight)(rr, w, inv, y + (size_t)r * ldy, dim);
    }
}

SIMD_INLINE vf SIMD_FN(silu_mul_vec)(vf g, vf u) {
    vf one = v_set1(1.0f);
    vf e = v_exp(v_sub(v_zero(), g));
    return v_mul(v_div(g, v_add(one, e)), u);
}

SIMD_TARGET void SIMD_FN(weft_silu_mul)(const float *gate, const float *up, size_t ldin,
                                        float *out, size_t ldout, int rows, int n) {
    for (int r = 0; r < rows; r++) {
        const float *g = gate + (size_t)r * ldin;
        const float *u = up + (size_t)r * ldin;
        float *o = out + (size_t)r * ldout;
        int i = 0;
        for (; i + VW <= n; i += VW) v_store(o + i, SIMD_FN(silu_mul_vec)(v_load(g + i), v_load(u + i)));
        if (i < n)
            v_store_n(o + i, SIMD_FN(silu_mul_vec)(v_load_n(g + i, n - i), v_load_n(u + i, n - i)), n - i);
    }
}

// Rotary embedding: cos/sin come from libm exactly as in the reference (the
// arguments can be large, so a vector sin/cos would need careful range
// reduction); the rotation of all heads is vectorized over i.
#define WEFT_ROPE_CHUNK 64
SIMD_TARGET void SIMD_FN(weft_rope)(float *x, size_t ldx, int rows, int heads, int head_dim,
                                    const int32_t *positions, const float *inv_freq) {
    int half = head_dim / 2;
    float cs[WEFT_ROPE_CHUNK] __attribute__((aligned(64)));
    float sn[WEFT_ROPE_CHUNK] __attribute__((aligned(64)));
    memset(cs, 0, sizeof cs);  // lanes past a short chunk are loaded but unused
    memset(sn, 0, sizeof sn);
    for (int r = 0; r < rows; r++) {
        float pos = (float)positions[r];
        float *xr = x + (size_t)r * ldx;
        for (int i0 = 0; i0 < half; i0 += WEFT_ROPE_CHUNK) {
            int cnt = half - i0 < WEFT_ROPE_CHUNK ? half - i0 : WEFT_ROPE_CHUNK;
            for (int i = 0; i < cnt; i++) {
                float theta = pos * inv_freq[i0 + i];
                cs[i] = cosf(theta);
                sn[i] = sinf(theta);
            }
            for (int h = 0; h < heads; h++) {
                float *lo = xr + (size_t)h * head_dim + i0, *hi = lo + half;
                for (int i = 0; i < cnt; i += VW) {
                    int n = cnt - i < VW ? cnt - i : VW;
                    vf c = v_load(cs + i), s = v_load(sn + i);  // in-bounds: arrays are CHUNK long
                    vf a = n == VW ? v_load(lo + i) : v_load_n(lo + i, n);
                    vf b = n == VW ? v_load(hi + i) : v_load_n(hi + i, n);
                    vf na = v_sub(v_mul(a, c), v_mul(b, s));
                    vf nb = v_add(v_mul(b, c), v_mul(a, s));
                    if (n == VW) {
                        v_store(lo + i, na);
                        v_store(hi + i, nb);
                    } else {
                        v_store_n(lo + i, na, n);
                        v_store_n(hi + i, nb, n);
                    }
                }
            }
        }
    }
}

// ------------------------------------------------------------- attention
static inline const float *SIMD_FN(kv_row)(const float *pool, const weft_attention_args *a,
                                           const int32_t *table, int pos, int g) {
    int block = table[pos / a->block_size];
    int slot = pos % a->block_size;
    return pool + (((size_t)block * a->block_size + slot) * a->n_kv_heads + g) * a->head_dim;
}

SIMD_INLINE float SIMD_FN(dot)(const float *q, const float *k, int n) {
    vf s0 = v_zero(), s1 = v_zero();
    int d = 0;
    for (; d + 2 * VW <= n; d += 2 * VW) {
        s0 = v_fma(v_load(q + d), v_load(k + d), s0);
        s1 = v_fma(v_load(q + d + VW), v_load(k + d + VW), s1);
    }
    for (; d < n; d += VW) {
        int c = n - d < VW ? n - d : VW;
        s0 = v_fma(v_load_n(q + d, c), v_load_n(k + d, c), s0);
    }
    return v_hsum(v_add(s0, s1));
}

// Four dot products sharing the loads of q.
SIMD_INLINE void SIMD_FN(dot4)(const float *q, const float *k0, const float *k1,
                               const float *k2, const float *k3, int n, float *out) {
    vf s0 = v_zero(), s1 = v_zero(), s2 = v_zero(), s3 = v_zero();
    int d = 0;
    for (; d + VW <= n; d += VW) {
        vf qv = v_load(q + d);
        s0 = v_fma(qv, v_load(k0 + d), s0);
        s1 = v_fma(qv, v_load(k1 + d), s1);
        s2 = v_fma(qv, v_load(k2 + d), s2);
        s3 = v_fma(qv, v_load(k3 + d), s3);
    }
    if (d < n) {
        int c = n - d;
        vf qv = v_load_n(q + d, c);
        s0 = v_fma(qv, v_load_n(k0 + d, c), s0);
        s1 = v_fma(qv, v_load_n(k1 + d, c), s1);
        s2 = v_fma(qv, v_load_n(k2 + d, c), s2);
        s3 = v_fma(qv, v_load_n(k3 + d, c), s3);
    }
    out[0] = v_hsum(s0);
    out[1] = v_hsum(s1);
    out[2] = v_hsum(s2);
    out[3] = v_hsum(s3);
}

// out[0:n) = out * scale
SIMD_INLINE void SIMD_FN(scale_row)(float *out, float scale, int n) {
    vf s = v_set1(scale);
    int d = 0;
    for (; d + VW <= n; d += VW) v_store(out + d, v_mul(v_load(out + d), s));
    if (d < n) v_store_n(out + d, v_mul(v_load_n(out + d, n - d), s), n - d);
}

// out[0:n) += w0*v0 + w1*v1 + w2*v2 + w3*v3 (added in that order)
SIMD_INLINE void SIMD_FN(axpy4)(float *out, const float *w, const float *v0, const float *v1,
                                const float *v2, const float *v3, int n) {
    vf w0 = v_set1(w[0]), w1 = v_set1(w[1]), w2 = v_set1(w[2]), w3 = v_set1(w[3]);
    int d = 0;
    for (; d + VW <= n; d += VW) {
        vf o = v_load(out + d);
        o = v_fma(w0, v_load(v0 + d), o);
        o = v_fma(w1, v_load(v1 + d), o);
        o = v_fma(w2, v_load(v2 + d), o);
        o = v_fma(w3, v_load(v3 + d), o);
        v_store(out + d, o);
    }
    if (d < n) {
        int c = n - d;
        vf o = v_load_n(out + d, c);
        o = v_fma(w0, v_load_n(v0 + d, c), o);
        o = v_fma(w1, v_load_n(v1 + d, c), o);
        o = v_fma(w2, v_load_n(v2 + d, c), o);
        o = v_fma(w3, v_load_n(v3 + d, c), o);
        v_store_n(out + d, o, c);
    }
}

SIMD_INLINE void SIMD_FN(axpy1)(float *out, float w, const float *v, int n) {
    vf wv = v_set1(w);
    int d = 0;
    for (; d + VW <= n; d += VW) v_store(out + d, v_fma(wv, v_load(v + d), v_load(out + d)));
    if (d < n) v_store_n(out + d, v_fma(wv, v_load_n(v + d, n - d), v_load_n(out + d, n - d)), n - d);
}

// Online softmax over chunks of keys: the scores of a chunk are computed
// first, the running maximum is raised once per chunk (rescaling the partial
// output and denominator as the reference does per key), then the chunk's
// weights are exponentiated together and its values accumulated.
#define WEFT_ATTN_CHUNK 64
SIMD_TARGET void SIMD_FN(weft_attention)(const weft_attention_args *a, int item_begin,
                                         int item_end) {
    int hd = a->head_dim;
    float scores[WEFT_ATTN_CHUNK] __attribute__((aligned(64)));
    const float *kr[WEFT_ATTN_CHUNK], *vr[WEFT_ATTN_CHUNK];
    for (int item = item_begin; item < item_end; item++) {
        int t = item / a->n_heads, h = item % a->n_heads;
        int g = a->kv_head_of[h];
        const float *q = a->q + (size_t)t * a->ldq + (size_t)h * hd;
        float *out = a->out + (size_t)t * a->ldo + (size_t)h * hd;
        const int32_t *table = a->block_tables + (size_t)a->table_row[t] * a->max_blocks;
        int context = a->positions[t] + 1;
        float running_max = -INFINITY, denom = 0.0f;
        memset(out, 0, sizeof(float) * (size_t)hd);
        for (int p0 = 0; p0 < context; p0 += WEFT_ATTN_CHUNK) {
            int cnt = context - p0 < WEFT_ATTN_CHUNK ? context - p0 : WEFT_ATTN_CHUNK;
            for (int j = 0; j < cnt; j++) {
                kr[j] = SIMD_FN(kv_row)(a->k_cache, a, table, p0 + j, g);
                vr[j] = SIMD_FN(kv_row)(a->v_cache, a, table, p0 + j, g);
            }
            int j = 0;
            for (; j + 4 <= cnt; j += 4) SIMD_FN(dot4)(q, kr[j], kr[j + 1], kr[j + 2], kr[j + 3], hd, scores + j);
            for (; j < cnt; j++) scores[j] = SIMD_FN(dot)(q, kr[j], hd);
            float chunk_max = -INFINITY;
            for (j = 0; j < cnt; j++) {
                scores[j] *= a->scale;
                if (scores[j] > chunk_max) chunk_max = scores[j];
            }
            if (chunk_max > running_max) {
                float correction = expf(running_max - chunk_max);
                denom *= correction;
                SIMD_FN(scale_row)(out, correction, hd);
                running_max = chunk_max;
            }
            vf vmax = v_set1(running_max);
            for (j = 0; j < cnt; j += VW) {
                int n = cnt - j < VW ? cnt - j : VW;
                vf w = v_exp(v_sub(v_load_n(scores + j, n), vmax));
                v_store_n(scores + j, w, n);
            }
            for (j = 0; j < cnt; j++) denom += scores[j];
            for (j = 0; j + 4 <= cnt; j += 4)
                SIMD_FN(axpy4)(out, scores + j, vr[j], vr[j + 1], vr[j + 2], vr[j + 3], hd);
            for (; j < cnt; j++) SIMD_FN(axpy1)(out, scores[j], vr[j], hd);
        }
        SIMD_FN(scale_row)(out, 1.0f / denom, hd);
    }
}

// ------------------------------------- attention over a cache of any KV dtype
// The query heads that share a KV head (grouped-query attention) run
// together: each key and value row is loaded (and widened, for a 16-bit
// cache) once for the whole group, not once per head. Within a group the
// algorithm is weft_attention's: chunks of keys, the running maximum raised
// once per chunk, the chunk's weights exponentiated together, all float32.
// The including file defines, under SIMD_KV_TARGET / SIMD_KV_INLINE,
// v_load_f16, v_load_f16_n, v_load_bf16 and v_load_bf16_n (VW or the first
// n < VW 16-bit elements, widened). `dt` and `G` are compile-time constants
// in every instantiation below.
#define WEFT_ATTN_GROUP 8  // query heads per group at most
#ifndef WEFT_ATTN_AHEAD
#define WEFT_ATTN_AHEAD 8  // key/value rows prefetched ahead of use
#endif

SIMD_KV_INLINE vf SIMD_FN(kv_load)(const char *row, int d, int dt) {
    if (dt == WEFT_KV_F32) return v_load((const float *)row + d);
    if (dt == WEFT_KV_F16) return v_load_f16((const uint16_t *)row + d);
    return v_load_bf16((const uint16_t *)row + d);
}
SIMD_KV_INLINE vf SIMD_FN(kv_load_n)(const char *row, int d, int n, int dt) {
    if (dt == WEFT_KV_F32) return v_load_n((const float *)row + d, n);
    if (dt == WEFT_KV_F16) return v_load_f16_n((const uint16_t *)row + d, n);
    return v_load_bf16_n((const uint16_t *)row + d, n);
}

// Heads h0 .. h0+G-1 of token t, all reading KV head kv_head_of[h0].
SIMD_KV_INLINE void SIMD_FN(attention_group)(const weft_attention_kv_args *a, int t, int h0,
                                             const int G, const int dt) {
    const int hd = a->head_dim;
    const size_t es = dt == WEFT_KV_F32 ? 4 : 2;
    float scores[WEFT_ATTN_GROUP][WEFT_ATTN_CHUNK] __attribute__((aligned(64)));
    // Row pointers of the chunk and of the WEFT_ATTN_AHEAD positions after
    // it: each key's rows are prefetched that far ahead (the hardware
    // prefetchers lose the stream at every block boundary).
    const char *kr[WEFT_ATTN_CHUNK + WEFT_ATTN_AHEAD], *vr[WEFT_ATTN_CHUNK + WEFT_ATTN_AHEAD];
    const char *kpool = a->k_cache, *vpool = a->v_cache;
    const size_t row_bytes = (size_t)hd * es;
    const int g = a->kv_head_of[h0];
    const float *q = a->q + (size_t)t * a->ldq + (size_t)h0 * hd;  // head i at q + i*hd
    float *out = a->out + (size_t)t * a->ldo + (size_t)h0 * hd;
    const int32_t *table = a->block_tables + (size_t)a->table_row[t] * a->max_blocks;
    const int context = a->positions[t] + 1;
    float running_max[WEFT_ATTN_GROUP], denom[WEFT_ATTN_GROUP];
    for (int i = 0; i < G; i++) {
        running_max[i] = -INFINITY;
        denom[i] = 0.0f;
    }
    memset(out, 0, sizeof(float) * (size_t)hd * (size_t)G);
    const int tail = hd % VW, full = hd - tail;
    for (int p0 = 0; p0 < context; p0 += WEFT_ATTN_CHUNK) {
        const int cnt = context - p0 < WEFT_ATTN_CHUNK ? context - p0 : WEFT_ATTN_CHUNK;
        const int ahead = context - p0 - cnt < WEFT_ATTN_AHEAD ? context - p0 - cnt : WEFT_ATTN_AHEAD;
        for (int j = 0; j < cnt + ahead; j++) {
            int pos = p0 + j;
            size_t off = (((size_t)table[pos / a->block_size] * a->n_kv_heads + g) * a->block_size +
                          pos % a->block_size) * hd * es;
            kr[j] = kpool + off;
            vr[j] = vpool + off;
        }
        if (p0 == 0)  // the first rows: nothing prefetched them
            for (int j = 0; j < WEFT_ATTN_AHEAD && j < cnt; j++)
                for (size_t b = 0; b < row_bytes; b += 64) {
                    __builtin_prefetch(kr[j] + b);
                    __builtin_prefetch(vr[j] + b);
                }
        // Scores: each key row once for the G heads.
        for (int j = 0; j < cnt; j++) {
            if (j + WEFT_ATTN_AHEAD < cnt + ahead)
                for (size_t b = 0; b < row_bytes; b += 64) {
                    __builtin_prefetch(kr[j + WEFT_ATTN_AHEAD] + b);
                    __builtin_prefetch(vr[j + WEFT_ATTN_AHEAD] + b);
                }
            vf acc[WEFT_ATTN_GROUP];
#pragma GCC unroll 8
            for (int i = 0; i < G; i++) acc[i] = v_zero();
            for (int d = 0; d < full; d += VW) {
                vf k = SIMD_FN(kv_load)(kr[j], d, dt);
#pragma GCC unroll 8
                for (int i = 0; i < G; i++) acc[i] = v_fma(v_load(q + i * hd + d), k, acc[i]);
            }
            if (tail) {
                vf k = SIMD_FN(kv_load_n)(kr[j], full, tail, dt);
#pragma GCC unroll 8
                for (int i = 0; i < G; i++) acc[i] = v_fma(v_load_n(q + i * hd + full, tail), k, acc[i]);
            }
#pragma GCC unroll 8
            for (int i = 0; i < G; i++) scores[i][j] = v_hsum(acc[i]);
        }
        // Online softmax, per head.
        for (int i = 0; i < G; i++) {
            float *s = scores[i];
            float chunk_max = -INFINITY;
            for (int j = 0; j < cnt; j++) {
                s[j] *= a->scale;
                if (s[j] > chunk_max) chunk_max = s[j];
            }
            if (chunk_max > running_max[i]) {
                float correction = expf(running_max[i] - chunk_max);
                denom[i] *= correction;
                SIMD_FN(scale_row)(out + i * hd, correction, hd);
                running_max[i] = chunk_max;
            }
            // The weights, and their sum in vector lanes (a serial scalar sum
            // was a 4-cycle dependency per key and head).
            vf vmax = v_set1(running_max[i]), vsum = v_zero();
            for (int j = 0; j < cnt; j += VW) {
                int n = cnt - j < VW ? cnt - j : VW;
                vf w = v_exp(v_sub(v_load_n(s + j, n), vmax));
                v_store_n(s + j, w, n);
                vsum = v_add(vsum, n == VW ? w : v_load_n(s + j, n));
            }
            denom[i] += v_hsum(vsum);
        }
        // Weighted values: each value row slice once for the G heads; with
        // few heads, even and odd keys accumulate separately (FMA latency).
        for (int d = 0; d < hd; d += VW) {
            const int c = hd - d < VW ? hd - d : VW;
            vf acc[WEFT_ATTN_GROUP], odd[WEFT_ATTN_GROUP];
#pragma GCC unroll 8
            for (int i = 0; i < G; i++) {
                acc[i] = c == VW ? v_load(out + i * hd + d) : v_load_n(out + i * hd + d, c);
                odd[i] = v_zero();
            }
            int j = 0;
            if (G <= 4) {
                for (; j + 2 <= cnt; j += 2) {
                    vf v0 = c == VW ? SIMD_FN(kv_load)(vr[j], d, dt) : SIMD_FN(kv_load_n)(vr[j], d, c, dt);
                    vf v1 = c == VW ? SIMD_FN(kv_load)(vr[j + 1], d, dt) : SIMD_FN(kv_load_n)(vr[j + 1], d, c, dt);
#pragma GCC unroll 8
                    for (int i = 0; i < G; i++) {
                        acc[i] = v_fma(v_set1(scores[i][j]), v0, acc[i]);
                        odd[i] = v_fma(v_set1(scores[i][j + 1]), v1, odd[i]);
                    }
                }
            }
            for (; j < cnt; j++) {
                vf v0 = c == VW ? SIMD_FN(kv_load)(vr[j], d, dt) : SIMD_FN(kv_load_n)(vr[j], d, c, dt);
#pragma GCC unroll 8
                for (int i = 0; i < G; i++) acc[i] = v_fma(v_set1(scores[i][j]), v0, acc[i]);
            }
#pragma GCC unroll 8
            for (int i = 0; i < G; i++) {
                vf r = G <= 4 ? v_add(acc[i], odd[i]) : acc[i];
                if (c == VW) v_store(out + i * hd + d, r);
                else v_store_n(out + i * hd + d, r, c);
            }
        }
    }
    for (int i = 0; i < G; i++) SIMD_FN(scale_row)(out + i * hd, 1.0f / denom[i], hd);
}

// Items [item_begin, item_end) (item = t * n_heads + h), consecutive heads of
// one token that share a KV head taken as one group.
SIMD_KV_INLINE void SIMD_FN(attention_items)(const weft_attention_kv_args *a, int item_begin,
                                             int item_end, const int dt) {
    int item = item_begin;
    while (item < item_end) {
        int t = item / a->n_heads, h = item % a->n_heads;
        int g = a->kv_head_of[h], n = 1;
        while (n < WEFT_ATTN_GROUP && item + n < item_end && h + n < a->n_heads && a->kv_head_of[h + n] == g) n++;
        switch (n) {
        case 1: SIMD_FN(attention_group)(a, t, h, 1, dt); break;
        case 2: SIMD_FN(attention_group)(a, t, h, 2, dt); break;
        case 3: SIMD_FN(attention_group)(a, t, h, 3, dt); break;
        case 4: SIMD_FN(attention_group)(a, t, h, 4, dt); break;
        case 5: SIMD_FN(attention_group)(a, t, h, 5, dt); break;
        case 6: SIMD_FN(attention_group)(a, t, h, 6, dt); break;
        case 7: SIMD_FN(attention_group)(a, t, h, 7, dt); break;
        default: SIMD_FN(attention_group)(a, t, h, 8, dt); break;
        }
        item += n;
    }
}

static SIMD_KV_TARGET void SIMD_FN(attention_f32)(const weft_attention_kv_args *a, int item_begin,
                                                  int item_end) {
    SIMD_FN(attention_items)(a, item_begin, item_end, WEFT_KV_F32);
}
static SIMD_KV_TARGET void SIMD_FN(attention_f16)(const weft_attention_kv_args *a, int item_begin,
                                                  int item_end) {
    SIMD_FN(attention_items)(a, item_begin, item_end, WEFT_KV_F16);
}
static SIMD_KV_TARGET void SIMD_FN(attention_bf16)(const weft_attention_kv_args *a, int item_begin,
                                                   int item_end) {
    SIMD_FN(attention_items)(a, item_begin, item_end, WEFT_KV_BF16);
}

SIMD_TARGET void SIMD_FN(weft_attention_kv)(const weft_attention_kv_args *a, int item_begin,
                                            int item_end) {
    switch (a->kv_dtype) {
    case WEFT_KV_F32: SIMD_FN(attention_f32)(a, item_begin, item_end); break;
    case WEFT_KV_F16: SIMD_FN(attention_f16)(a, item_begin, item_end); break;
    case WEFT_KV_BF16: SIMD_FN(attention_bf16)(a, item_begin, item_end); break;
    default: weft_attention_kv_scalar(a, item_begin, item_end); break;  // writes NaN
    }
}
