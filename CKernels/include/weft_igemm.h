#ifndef WEFT_IGEMM_H
#define WEFT_IGEMM_H
// Prefill over block-quantized weights at integer speed: y = x · Wᵀ for m
// activation rows already quantized to the format's partner blocks (the same
// blocks weft_qgemv quantizes to: Q8_0 for Q8_0 and Q4_0 weights, Q8_1 for
// Q4_1, Q8_K for Q4_K and Q6_K), with register tiles of weight rows x
// activation rows whose per-block products are exact integer sums
// (vpmaddubsw + vpmaddwd, or VNNI's vpdpbusd), converted to float32 and
// multiplied by the block scales (and, for Q4_1 / Q4_K, the min terms from
// the activations' sums).
//
// Results:
//  - weft_igemm_scalar computes each output with the decode scalar reference
//    (weft_vec_dot_*_scalar over the same blocks): bit for bit the result of
//    weft_qgemv_scalar on the same activation blocks.
//  - the SIMD paths compute the same exact integer block sums, but sum the
//    scaled block products in 8 float32 lanes with FMA (and, when k is longer
//    than one cache block, in pieces added into y): they differ from the
//    scalar reference only by float32 rounding, |err| <= ~ (k / 32 + 8) *
//    2^-24 * sum over blocks of |scaled block product| (tests use 1e-5
//    relative to that sum).
//
// Weight rows are split over the pool's threads as weft_wgemm_thread_rows
// splits them, so every thread reads the rows it filled at load.

#include <stddef.h>
#include <stdint.h>

#include "weft_pool.h"

#ifdef __cplusplus
extern "C" {
#endif

/// 1 when weft_igemm takes this weight format (ggml type number): Q8_0, Q4_0,
/// Q4_1, Q4_K, Q6_K.
int weft_igemm_supported(int wtype);
/// The activation block type a weight format pairs with (Q8_0 = 8, Q8_1 = 9,
/// Q8_K = 15), 0 if weft_igemm does not take the format.
int weft_igemm_act_type(int wtype);
/// Bytes of one quantized activation row of k elements (0 when the format is
/// not taken or k is not a positive multiple of its block: 32, or 256 for the
/// k-quants).
size_t weft_igemm_act_row_bytes(int wtype, int k);

/// Quantize m float32 rows (stride ldx floats) to the partner blocks of
/// `wtype`, row i at byte offset i * ldxq_bytes of xq (ldxq_bytes >=
/// weft_igemm_act_row_bytes). Same bytes as weft_qgemv's quantization (ggml's
/// reference quantizers). Rows split over the pool (NULL: calling thread).
/// Returns 0, or -1 (nothing written) for invalid arguments.
int weft_igemm_quantize(int wtype, int m, int k, const float *x, size_t ldx, void *xq, size_t ldxq_bytes,
                        weft_pool *pool);

/// Scratch bytes weft_igemm needs on a pool of `threads` threads (per thread:
/// one repacked 8-row weight panel of a k piece, <= ~20 KB, and the side data
/// of up to ~120 activation rows of that piece); never 0 for valid arguments,
/// 0 for invalid ones. It does not decrease as m grows.
size_t weft_igemm_scratch_bytes(int wtype, int m, int n, int k, int threads);

/// y[i][j] = dot(weight row j, activation row i) for i < m, j < n. `w`: n rows
/// of `wtype` blocks, row j at byte offset j * (k / block) * block bytes (as
/// weft_wgemm). xq: m quantized activation rows (weft_igemm_quantize), stride
/// ldxq_bytes. y stride ldy floats (>= n). scratch: weft_igemm_scratch_bytes
/// for the pool's thread count (any alignment).
/// Returns 0, or -1 (nothing written) for an unsupported format, k not a
/// positive multiple of the block, m < 1, n < 0, a short stride or scratch,
/// or a null pointer.
int weft_igemm(int wtype, int m, int n, int k, const void *xq, size_t ldxq_bytes, const void *w, float *y,
               size_t ldy, void *scratch, size_t scratch_bytes, weft_pool *pool);
int weft_igemm_scalar(int wtype, int m, int n, int k, const void *xq, size_t ldxq_bytes, const void *w,
                      float *y, size_t ldy, void *scratch, size_t scratch_bytes, weft_pool *pool);
/// AVX2: every format on interleaved 8-row weight panels repacked per thread
/// (8 weight x 4 activation rows per tile).
int weft_igemm_avx2(int wtype, int m, int n, int k, const void *xq, size_t ldxq_bytes, const void *w,
                    float *y, size_t ldy, void *scratch, size_t scratch_bytes, weft_pool *pool);
/// AVX-512 F/BW/VL (+ VNNI's vpdpbusd where the CPU has avx512vnni): the same
/// panels and tiles compiled for that target, 256-bit vectors (not measured:
/// the development machine has no AVX-512).
int weft_igemm_avx512(int wtype, int m, int n, int k, const void *xq, size_t ldxq_bytes, const void *w,
                      float *y, size_t ldy, void *scratch, size_t scratch_bytes, weft_pool *pool);

/// 1 when the CPU can run weft_igemm_avx2 (AVX2, FMA, F16C) / weft_igemm_avx512
/// (AVX-512 F, BW, VL + AVX2, FMA, F16C).
int weft_igemm_has_avx2(void);
int weft_igemm_has_avx512(void);

/// Register tile (weight rows x activation rows) of a SIMD path for a format:
/// isa 1 = AVX2, 2 = AVX-512. 0 in both when the path does not take it.
void weft_igemm_tile_shape(int isa, int wtype, int *rows, int *cols);

#ifdef __cplusplus
}
#endif
#endif
