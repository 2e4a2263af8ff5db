#ifndef WEFT_KERNELS_H
#define WEFT_KERNELS_H
// Weft compute kernels.
//
// Every operation has a portable scalar reference (`*_scalar`) and, where it
// pays, ISA-specific paths (`*_avx512`, `*_avx2`) compiled with function-level
// target attributes. The unsuffixed entry point dispatches on the ISA selected at run
// time (weft_isa_select), so one binary runs on every x86-64 node of a mixed
// cluster. Tests compare each SIMD path against its scalar reference.

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

// ---------------------------------------------------------------- ISA choice
// Ordered by capability: a request is lowered to the best level the CPU has.
typedef enum {
    WEFT_ISA_SCALAR = 0,
    WEFT_ISA_AVX2 = 1,     // AVX2 + FMA (Zen 2/3, Haswell and later without AVX-512)
    WEFT_ISA_AVX512 = 2,   // AVX-512 F + BW + VL (+ FMA)
} weft_isa;

/// The best ISA this CPU supports.
weft_isa weft_isa_detect(void);
/// Selects the ISA used by the dispatching entry points. Requests beyond what
/// the CPU supports are lowered; returns the ISA in force.
weft_isa weft_isa_select(weft_isa isa);
weft_isa weft_isa_current(void);
const char *weft_isa_name(weft_isa isa);

// ------------------------------------------------------- dtype conversions
void weft_bf16_to_f32(const uint16_t *src, float *dst, size_t n);
void weft_bf16_to_f32_scalar(const uint16_t *src, float *dst, size_t n);
void weft_bf16_to_f32_avx512(const uint16_t *src, float *dst, size_t n);
void weft_bf16_to_f32_avx2(const uint16_t *src, float *dst, size_t n);
void weft_f16_to_f32(const uint16_t *src, float *dst, size_t n);
void weft_f16_to_f32_scalar(const uint16_t *src, float *dst, size_t n);
void weft_f16_to_f32_avx512(const uint16_t *src, float *dst, size_t n);
void weft_f16_to_f32_avx2(const uint16_t *src, float *dst, size_t n);

// ------------------------------------------------------------------- GEMM
// Linear layers compute y[m][j] = sum_k x[m][k] * W[j][k]  (W is [n x k],
// Hugging Face's [out_features x in_features]). Weights are packed once at
// load time into panels of NR output rows: panel p holds rows
// [p*NR, p*NR+NR) as k-major groups of NR floats (rows past n are zero).
// Panel p starts at float offset p * NR * k.

/// Rows per packed panel (a compile-time constant of the kernel library).
int weft_gemm_nr(void);
/// Floats needed to pack an [n x k] weight.
size_t weft_gemm_packed_floats(int n, int k);
/// Packs `nrows` (<= NR) rows of length k, row stride `ldr` floats, into one
/// panel at `dst` (NR * k floats); missing rows are zero-filled.
void weft_gemm_pack_panel(const float *rows, size_t ldr, int nrows, int k, float *dst);

/// y[0:m, n0:n1) = x[0:m, 0:k] · W[n0:n1, :]^T (+ y if accumulate).
/// n0 must be a multiple of NR; `wpacked` is the whole packed weight.
void weft_gemm_packed(int m, int n0, int n1, int k,
                      const float *x, size_t ldx,
                      const float *wpacked,
                      float *y, size_t ldy, int accumulate);
void weft_gemm_packed_scalar(int m, int n0, int n1, int k, const float *x, size_t ldx,
                             const float *wpacked, float *y, size_t ldy, int accumulate);
void weft_gemm_packed_avx512(int m, int n0, int n1, int k, const float *x, size_t ldx,
                             const float *wpacked, float *y, size_t ldy, int accumulate);
void weft_gemm_packed_avx2(int m, int n0, int n1, int k, const float *x, size_t ldx,
                           const float *wpacked, float *y, size_t ldy, int accumulate);
/// One K chunk against activation rows packed once per call: y[0:m, 0:n) (+)=
/// x . W, where xp holds x[0:m, 0:kc) in the path's balanced row groups of at
/// most weft_gemm_mr_<isa>() rows (gemm_blocked.h, weft_gemm_pack_groups),
/// and w the packed panels of n rows of this chunk (panel p at w + p * 32 * kc,
/// element (kk, j) at [kk * 32 + j]). load_c adds the existing y.
void weft_gemm_xp_scalar(int m, int n, int kc, const float *xp, const float *w, float *y,
                         size_t ldy, int load_c);
void weft_gemm_xp_avx512(int m, int n, int kc, const float *xp, const float *w, float *y,
                         size_t ldy, int load_c);
void weft_gemm_xp_avx2(int m, int n, int kc, const float *xp, const float *w, float *y,
                       size_t ldy, int load_c);
/// Rows per micro-kernel call of each GEMM path (its MR); see weft_gemm_row_block.
int weft_gemm_mr_scalar(void);
int weft_gemm_mr_avx512(void);
int weft_gemm_mr_avx2(void);

// ------------------------------------------------------- row-wise kernels
/// y[r] = x[r] / sqrt(mean(x[r]^2) + eps) * w, for rows [0, rows).
void weft_rmsnorm(const float *x, size_t ldx, const float *w, float *y, size_t ldy,
                  int rows, int dim, float eps);
void weft_rmsnorm_scalar(const float *x, size_t ldx, const float *w, float *y, size_t ldy,
                         int rows, int dim, float eps);
void weft_rmsnorm_avx512(const float *x, size_t ldx, const float *w, float *y, size_t ldy,
                         int rows, int dim, float eps);
void weft_rmsnorm_avx2(const float *x, size_t ldx, const float *w, float *y, size_t ldy,
                       int rows, int dim, float eps);

/// residual[r] += delta[r]; y[r] = rmsnorm(residual[r]) * w. The fused
/// residual + norm step that follows every all-reduce.
void weft_add_rmsnorm(float *residual, size_t ldr, const float *delta, size_t ldd,
                      const float *w, float *y, size_t ldy, int rows, int dim, float eps);
void weft_add_rmsnorm_scalar(float *residual, size_t ldr, const float *delta, size_t ldd,
                             const float *w, float *y, size_t ldy, int rows, int dim, float eps);
void weft_add_rmsnorm_avx512(float *residual, size_t ldr, const float *delta, size_t ldd,
                             const float *w, float *y, size_t ldy, int rows, int dim, float eps);
void weft_add_rmsnorm_avx2(float *residual, size_t ldr, const float *delta, size_t ldd,
                           const float *w, float *y, size_t ldy, int rows, int dim, float eps);

/// out[r][i] = silu(gate[r][i]) * up[r][i] for i < n.
void weft_silu_mul(const float *gate, const float *up, size_t ldin, float *out, size_t ldout,
                   int rows, int n);
void weft_silu_mul_scalar(const float *gate, const float *up, size_t ldin, float *out,
                          size_t ldout, int rows, int n);
void weft_silu_mul_avx512(const float *gate, const float *up, size_t ldin, float *out,
                          size_t ldout, int rows, int n);
void weft_silu_mul_avx2(const float *gate, const float *up, size_t ldin, float *out,
                        size_t ldout, int rows, int n);

/// Rotary position embedding in place, Hugging Face's rotate-half convention:
/// for each of `heads` heads of `head_dim` in row r, with theta_i =
/// positions[r] * inv_freq[i] (float32) and h = head_dim / 2:
///   x[i] <- x[i] cos - x[i+h] sin,  x[i+h] <- x[i+h] cos + x[i] sin.
void weft_rope(float *x, size_t ldx, int rows, int heads, int head_dim,
               const int32_t *positions, const float *inv_freq);
void weft_rope_scalar(float *x, size_t ldx, int rows, int heads, int head_dim,
                      const int32_t *positions, const float *inv_freq);
void weft_rope_avx512(float *x, size_t ldx, int rows, int heads, int head_dim,
                      const int32_t *positions, const float *inv_freq);
void weft_rope_avx2(float *x, size_t ldx, int rows, int heads, int head_dim,
                    const int32_t *positions, const float *inv_freq);

/// y[i] += b[i] for each row (bias of Qwen2's q/k/v projections).
void weft_add_bias(float *y, size_t ldy, const float *b, int rows, int n);

/// dst row i = src row index[i], `dim` floats each (a mixture-of-experts
/// layer gathers each expert's tokens into one GEMM's input).
void weft_gather_rows(const float *src, size_t lds, const int32_t *index, int rows, int dim,
                      float *dst, size_t ldd);
/// dst row index[i] += scale[i] * src row i (the expert outputs, weighted
/// by the router, back into their tokens' rows).
void weft_scatter_add_scaled(float *dst, size_t ldd, const int32_t *index, const float *scale,
                             int rows, int dim, const float *src, size_t lds);

// ------------------------------------------------------------- attention
// Paged KV cache: a layer's keys live in blocks of `block_size` positions,
// each position holding n_kv_heads * head_dim floats: element
// (block b, slot s, kv head g, d) is at ((b * block_size + s) * n_kv_heads + g) * head_dim + d.
// Values use the same layout in their own pool.
typedef struct {
    int n_tokens;             // query rows in the flattened batch
    int n_heads;              // local query heads
    int n_kv_heads;           // local KV heads
    int head_dim;
    const float *q;           // [n_tokens][ldq]; head h at q + h*head_dim
    size_t ldq;
    float *out;               // [n_tokens][ldo]; head h at out + h*head_dim
    size_t ldo;
    const float *k_cache;     // this layer's key pool
    const float *v_cache;     // this layer's value pool
    int block_size;
    const int32_t *positions;     // [n_tokens] position of each query token
    const int32_t *table_row;     // [n_tokens] which row of block_tables is its sequence's
    const int32_t *block_tables;  // [rows][max_blocks] block ids
    int max_blocks;
    const int32_t *kv_head_of;    // [n_heads] local kv head used by each local q head
    float scale;                  // usually 1/sqrt(head_dim)
} weft_attention_args;

/// Causal attention for work items [item_begin, item_end), item = t * n_heads + h:
/// token t attends to positions 0..positions[t] of its own sequence, whose
/// keys and values must already be in the cache.
void weft_attention(const weft_attention_args *a, int item_begin, int item_end);
void weft_attention_scalar(const weft_attention_args *a, int item_begin, int item_end);
void weft_attention_avx512(const weft_attention_args *a, int item_begin, int item_end);
void weft_attention_avx2(const weft_attention_args *a, int item_begin, int item_end);

/// Copies rows' keys and values (n_kv_heads * head_dim floats each) into the
/// paged cache at their positions.
void weft_kv_write(float *k_cache, float *v_cache, int block_size, int kv_width,
                   const float *k, size_t ldk, const float *v, size_t ldv,
                   const int32_t *positions, const int32_t *table_row,
                   const int32_t *block_tables, int max_blocks, int rows);

// ------------------------------------------------- KV cache element types
// The cache may hold keys and values as float32, IEEE half (f16) or bfloat16.
// Attention widens 16-bit elements to float32 as it loads them, and computes
// the dot products, the online softmax and the weighted sum in float32.
typedef enum {
    WEFT_KV_F32 = 0,
    WEFT_KV_F16 = 1,
    WEFT_KV_BF16 = 2,
} weft_kv_dtype;

/// Bytes per cache element of `dtype` (0 for an unknown value).
size_t weft_kv_dtype_size(int dtype);

/// float32 -> f16, round to nearest even (as vcvtps2ph with RNE; overflow
/// gives +-inf, NaN a quiet NaN of the same sign).
void weft_f32_to_f16(const float *src, uint16_t *dst, size_t n);
void weft_f32_to_f16_scalar(const float *src, uint16_t *dst, size_t n);
void weft_f32_to_f16_avx512(const float *src, uint16_t *dst, size_t n);
void weft_f32_to_f16_avx2(const float *src, uint16_t *dst, size_t n);
/// float32 -> bfloat16, round to nearest even (NaN stays a quiet NaN).
void weft_f32_to_bf16(const float *src, uint16_t *dst, size_t n);
void weft_f32_to_bf16_scalar(const float *src, uint16_t *dst, size_t n);
void weft_f32_to_bf16_avx512(const float *src, uint16_t *dst, size_t n);
void weft_f32_to_bf16_avx2(const float *src, uint16_t *dst, size_t n);

/// weft_attention_args over a cache of any weft_kv_dtype. The pools hold
/// `kv_dtype` elements in a head-major paged layout: element
/// (block b, kv head g, slot s, d) is at
/// ((b * n_kv_heads + g) * block_size + s) * head_dim + d, so the rows one KV
/// head reads in a block are contiguous (streamed by the hardware prefetchers).
typedef struct {
    int n_tokens;
    int n_heads;
    int n_kv_heads;
    int head_dim;
    const float *q;
    size_t ldq;
    float *out;
    size_t ldo;
    const void *k_cache;
    const void *v_cache;
    int kv_dtype;                 // weft_kv_dtype
    int block_size;
    const int32_t *positions;
    const int32_t *table_row;
    const int32_t *block_tables;
    int max_blocks;
    const int32_t *kv_head_of;
    float scale;
} weft_attention_kv_args;

/// weft_attention over a cache of a->kv_dtype, in the layout above. The query
/// heads that share a KV head are computed together (each key and value row
/// read once for the group). An unknown dtype writes NaN to the outputs.
void weft_attention_kv(const weft_attention_kv_args *a, int item_begin, int item_end);
void weft_attention_kv_scalar(const weft_attention_kv_args *a, int item_begin, int item_end);
void weft_attention_kv_avx512(const weft_attention_kv_args *a, int item_begin, int item_end);
void weft_attention_kv_avx2(const weft_attention_kv_args *a, int item_begin, int item_end);

/// Copies rows' keys and values (n_kv_heads * head_dim floats each) into a
/// cache of `kv_dtype` in weft_attention_kv's layout, rounded (RNE) to the
/// cache's type. Returns 0, or -1 for an unknown dtype (nothing written).
int weft_kv_write_dtype(void *k_cache, void *v_cache, int kv_dtype, int block_size,
                        int n_kv_heads, int head_dim,
                        const float *k, size_t ldk, const float *v, size_t ldv,
                        const int32_t *positions, const int32_t *table_row,
                        const int32_t *block_tables, int max_blocks, int rows);

#ifdef __cplusplus
}
#endif
#endif
