#ifndef WEFT_WGEMM_H
#define WEFT_WGEMM_H
// Linear layers over weights held in their stored format (GGUF / ggml block
// layouts, or 16-bit floats): y[i][j] = sum_k x[i][k] * W[j][k], W being n
// rows of k elements, row j at byte offset j * weft_wtype_row_bytes(type, k).
// The float32 format is not here: it uses the packed-panel GEMM
// (weft_gemm_packed / weft_op_linear).
//
// weft_wgemm chooses, per format and row count m, between integer dot
// products over 8-bit activation blocks (decode) and dequantizing weight
// panels into the float32 micro-kernel (prefill); Docs/Kernels.md has the
// measurements behind each choice.

#include <stddef.h>
#include <stdint.h>

#include "weft_pool.h"

#ifdef __cplusplus
extern "C" {
#endif

/// Weight formats, by ggml type number (GGMLQuantizationType).
typedef enum {
    WEFT_WTYPE_F32 = 0,
    WEFT_WTYPE_F16 = 1,
    WEFT_WTYPE_Q4_0 = 2,
    WEFT_WTYPE_Q4_1 = 3,
    WEFT_WTYPE_Q8_0 = 8,
    WEFT_WTYPE_Q4_K = 12,
    WEFT_WTYPE_Q5_K = 13,
    WEFT_WTYPE_Q6_K = 14,
    WEFT_WTYPE_BF16 = 30,
} weft_wtype;

/// 1 when weft_wgemm multiplies this format (F16, BF16, Q8_0, Q4_0, Q4_1,
/// Q4_K, Q5_K, Q6_K); F32 answers 1 too for the conversions below.
int weft_wtype_supported(int wtype);
/// Elements per block (1 for F32/F16/BF16, 32, or 256 for k-quants); 0 if unknown.
int weft_wtype_block_elements(int wtype);
/// Bytes per block; 0 if unknown.
size_t weft_wtype_block_bytes(int wtype);
/// Bytes of one row of k elements; 0 if unknown or k is not a positive
/// multiple of the block size.
size_t weft_wtype_row_bytes(int wtype, int64_t k);

/// One row of k elements in format `wtype` to float32 (every supported format).
/// Returns 0, or -1 for an unknown format or a k that is not a multiple of the block.
int weft_dequantize_row(int wtype, const void *src, float *dst, int64_t k);
/// One float32 row to `wtype` with ggml's reference rule (F32, F16, BF16:
/// round to nearest even; Q8_0, Q4_0, Q4_1: quantize_row_*_ref). Returns 0,
/// or -1 for a format without a quantizer here (the k-quants) or a bad k.
int weft_quantize_row(int wtype, const float *src, void *dst, int64_t k);

/// Scratch bytes weft_wgemm needs for m rows of length k and n outputs on a
/// pool of `threads` threads (0 if the arguments are invalid).
size_t weft_wgemm_scratch_bytes(int wtype, int m, int n, int k, int threads);

/// y[0:m, 0:n] = x[0:m, 0:k] · Wᵀ for W in format `wtype` (not F32). The
/// rows of W are split over the threads of `pool` (NULL: calling thread) in
/// the ranges weft_wgemm_thread_rows gives, so a weight filled by those
/// threads in the same ranges is read from local memory.
/// Returns 0, or -1 (nothing written) for invalid arguments.
int weft_wgemm(int wtype, int m, int n, int k, const float *x, size_t ldx, const void *w,
               float *y, size_t ldy, void *scratch, size_t scratch_bytes, weft_pool *pool);

/// The weight rows [*begin, *end) thread `index` of `count` multiplies in
/// weft_wgemm (weft_split_range over the n rows, for every format and path).
void weft_wgemm_thread_rows(int wtype, int n, int count, int index, long *begin, long *end);

/// The two kernels weft_wgemm chooses between.
typedef enum {
    WEFT_WGEMM_AUTO = 0,   // weft_wgemm's own choice (weft_wgemm_choose)
    /// Decode: weight rows streamed once against every activation row. 16-bit
    /// weights are widened in registers (F16C / a shift for BF16) into FMAs
    /// over register tiles of weight x activation rows; block formats use the
    /// integer dot products of weft_qgemv over 8-bit activation blocks.
    WEFT_WGEMM_DOT = 1,
    /// Prefill: the activations are packed once per call (up to 512 rows at a
    /// time) into the float32 micro-kernel's row groups; per thread, blocks of
    /// 256 weight rows x 256 columns are dequantized into float32 packed panels
    /// in the scratch and multiplied with them (weft_gemm_xp_<isa>).
    WEFT_WGEMM_PANEL = 2,
    /// Prefill, block formats weft_igemm takes (Q8_0, Q4_0, Q4_1, Q4_K,
    /// Q6_K): the activations quantized once per call to the format's 8-bit
    /// partner blocks (weft_igemm_quantize), then weft_igemm's integer
    /// register tiles over interleaved 8-row weight panels repacked per thread.
    WEFT_WGEMM_INT = 3,
} weft_wgemm_path_kind;

/// The path weft_wgemm takes for these arguments (0 if they are invalid).
int weft_wgemm_choose(int wtype, int m, int n, int k, int threads);
/// Scratch bytes of one path (0 if the arguments are invalid or the path does
/// not take the format). weft_wgemm_scratch_bytes is that of the chosen path,
/// raised so that it never decreases as m grows: a buffer sized for the
/// largest batch serves every smaller one.
size_t weft_wgemm_path_scratch_bytes(int path, int wtype, int m, int n, int k, int threads);
/// weft_wgemm on a given path (WEFT_WGEMM_AUTO: the chosen one), with that
/// path's scratch (weft_wgemm_path_scratch_bytes). Same results up to float
/// rounding (and, for block formats on the dot path, the 8-bit quantization
/// of the activations). Returns 0, or -1 for invalid arguments (also ldx < k
/// or ldy < n).
int weft_wgemm_path(int path, int wtype, int m, int n, int k, const float *x, size_t ldx,
                    const void *w, float *y, size_t ldy, void *scratch, size_t scratch_bytes,
                    weft_pool *pool);

/// Benchmark helper: reads `bytes` bytes at `p` once, split over the threads
/// of `pool` (NULL: the calling thread) as weft_split_range splits 64-byte
/// lines, with 256-bit loads on the SIMD paths. The machine's read
/// bandwidth for `weft bench gemm`; returns a checksum so the loads stay.
uint64_t weft_wgemm_read_loop(const void *p, size_t bytes, weft_pool *pool);

#ifdef __cplusplus
}
#endif
#endif
