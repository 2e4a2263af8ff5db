#ifndef WEFT_QUANT_H
#define WEFT_QUANT_H
// Block-quantized weights in ggml's (GGUF's) layouts: Q8_0, Q4_0, Q4_1, and
// Q8_1 for the activations of Q4_1. Quantizers and dequantizers are bit-exact
// with ggml's `quantize_row_*_ref` / `dequantize_row_*` (and the gguf Python
// package's numpy reference). Dot products follow ggml's ggml_vec_dot_*:
// per-block integer sums (exact in every path), scaled by the block scales in
// float32; the SIMD paths differ from the scalar reference only in the order
// of the float32 scale multiplies and sums.
//
// Every kernel has a scalar reference (`*_scalar`), an AVX2 + FMA + F16C path
// (`*_avx2`) and an AVX-512 F/BW/VL path (`*_avx512`, which uses VNNI's
// vpdpbusd when the CPU has avx512vnni; `*_avx512vnni` forces it). The
// unsuffixed entry points dispatch on weft_isa_current().

#include <stddef.h>
#include <stdint.h>

#include "weft_pool.h"

#ifdef __cplusplus
extern "C" {
#endif

/// Elements per block of every format here.
#define WEFT_QK 32

/// ggml's type numbers (GGMLQuantizationType).
typedef enum {
    WEFT_QTYPE_Q4_0 = 2,
    WEFT_QTYPE_Q4_1 = 3,
    WEFT_QTYPE_Q8_0 = 8,
    WEFT_QTYPE_Q8_1 = 9,
    WEFT_QTYPE_Q4_K = 12,
    WEFT_QTYPE_Q5_K = 13,
    WEFT_QTYPE_Q6_K = 14,
    WEFT_QTYPE_Q8_K = 15,
} weft_qtype;

/// fp16 scale d, 32 signed bytes; value = qs[i] * d. 34 bytes.
typedef struct { uint16_t d; int8_t qs[WEFT_QK]; } weft_block_q8_0;
/// fp16 scale d, fp16 s = d * sum(qs), 32 signed bytes. 36 bytes.
typedef struct { uint16_t d; uint16_t s; int8_t qs[WEFT_QK]; } weft_block_q8_1;
/// fp16 scale d, 16 bytes of nibbles: element j < 16 is the low nibble of
/// qs[j], element j + 16 its high nibble; value = (q - 8) * d. 18 bytes.
typedef struct { uint16_t d; uint8_t qs[WEFT_QK / 2]; } weft_block_q4_0;
/// fp16 scale d and minimum m, nibbles as Q4_0; value = q * d + m. 20 bytes.
typedef struct { uint16_t d; uint16_t m; uint8_t qs[WEFT_QK / 2]; } weft_block_q4_1;

// ------------------------------------------------ k-quants (super-blocks of 256)
/// Elements per super-block of the k-quants (ggml's QK_K).
#define WEFT_QK_K 256

/// ggml's block_q4_K, 144 bytes: fp16 d and dmin; scales[12] packs eight 6-bit
/// scales sc[j] and mins m[j] (j < 4: sc = scales[j] & 63, m = scales[j + 4] & 63;
/// j >= 4: sc = (scales[j + 4] & 15) | (scales[j - 4] >> 6) << 4,
/// m = (scales[j + 4] >> 4) | (scales[j] >> 6) << 4); qs[128]: sub-block 2i
/// (32 elements) in the low nibbles of qs[32i .. 32i + 31], sub-block 2i + 1 in
/// their high nibbles. value = d * sc[j] * q - dmin * m[j].
typedef struct { uint16_t d; uint16_t dmin; uint8_t scales[12]; uint8_t qs[WEFT_QK_K / 2]; } weft_block_q4_K;
/// ggml's block_q5_K, 176 bytes: as Q4_K plus a fifth bit: bit j of qh[l] is
/// bit 4 of element l of sub-block j.
typedef struct {
    uint16_t d; uint16_t dmin; uint8_t scales[12]; uint8_t qh[WEFT_QK_K / 8]; uint8_t qs[WEFT_QK_K / 2];
} weft_block_q5_K;
/// ggml's block_q6_K, 210 bytes: 6-bit q in two halves of 128 elements; in half
/// h (ql + 64h, qh + 32h), for l < 32: element l = ql[l] & 15, element l + 32 =
/// ql[l + 32] & 15, element l + 64 = ql[l] >> 4, element l + 96 = ql[l + 32] >> 4,
/// their bits 4..5 in bits 0..1, 2..3, 4..5, 6..7 of qh[l]; 16 int8 scales, one
/// per 16 elements; fp16 d last. value = d * scales[g] * (q - 32).
typedef struct { uint8_t ql[WEFT_QK_K / 2]; uint8_t qh[WEFT_QK_K / 4]; int8_t scales[WEFT_QK_K / 16]; uint16_t d; } weft_block_q6_K;
/// ggml's block_q8_K (the activations of the k-quant dot products), 292 bytes:
/// float32 d, 256 int8 values, bsums[g] = sum of the 16 values of group g.
typedef struct { float d; int8_t qs[WEFT_QK_K]; int16_t bsums[WEFT_QK_K / 16]; } weft_block_q8_K;

/// Bytes per block of a type (0 for an unknown type).
size_t weft_qtype_block_bytes(int type);

/// fp32 -> fp16 with round-to-nearest-even (as F16C's vcvtps2ph and ggml's
/// GGML_FP32_TO_FP16; overflow gives +-inf, NaN gives a quiet NaN).
uint16_t weft_fp32_to_fp16(float f);
float weft_fp16_to_fp32(uint16_t h);

// ------------------------------------------- quantizers (k multiple of 32)
void weft_quantize_row_q8_0(const float *x, weft_block_q8_0 *y, int64_t k);
void weft_quantize_row_q8_1(const float *x, weft_block_q8_1 *y, int64_t k);
void weft_quantize_row_q4_0(const float *x, weft_block_q4_0 *y, int64_t k);
void weft_quantize_row_q4_1(const float *x, weft_block_q4_1 *y, int64_t k);

/// AVX2 versions of the 8-bit quantizers (the activations of weft_qgemv on the
/// AVX2 and AVX-512 paths): the same bytes as the references above.
void weft_quantize_row_q8_0_avx2(const float *x, weft_block_q8_0 *y, int64_t k);
void weft_quantize_row_q8_1_avx2(const float *x, weft_block_q8_1 *y, int64_t k);

void weft_dequantize_row_q8_0(const weft_block_q8_0 *x, float *y, int64_t k);
void weft_dequantize_row_q8_1(const weft_block_q8_1 *x, float *y, int64_t k);
void weft_dequantize_row_q4_0(const weft_block_q4_0 *x, float *y, int64_t k);
void weft_dequantize_row_q4_1(const weft_block_q4_1 *x, float *y, int64_t k);

// k-quants (k a multiple of 256). Dequantizers bit-exact with ggml's
// dequantize_row_*_K and the gguf package. Q8_K: ggml's quantize_row_q8_K_ref
// (d = max / -127 from the first value of largest magnitude, q = nearest-even
// round of x / d, bsums; an all-zero block gives d = 0 and zero sums); the SIMD
// variants write the same bytes.
void weft_quantize_row_q8_K(const float *x, weft_block_q8_K *y, int64_t k);
void weft_quantize_row_q8_K_scalar(const float *x, weft_block_q8_K *y, int64_t k);
void weft_quantize_row_q8_K_avx2(const float *x, weft_block_q8_K *y, int64_t k);
void weft_quantize_row_q8_K_avx512(const float *x, weft_block_q8_K *y, int64_t k);
void weft_dequantize_row_q4_K(const weft_block_q4_K *x, float *y, int64_t k);
void weft_dequantize_row_q5_K(const weft_block_q5_K *x, float *y, int64_t k);
void weft_dequantize_row_q6_K(const weft_block_q6_K *x, float *y, int64_t k);
void weft_dequantize_row_q8_K(const weft_block_q8_K *x, float *y, int64_t k);

// ------------------------------------- dot products (n multiple of 32)
// x: one weight row of n elements; y: the activation row quantized to Q8_0
// (Q8_1 for q4_1).
float weft_vec_dot_q8_0_q8_0(int n, const weft_block_q8_0 *x, const weft_block_q8_0 *y);
float weft_vec_dot_q8_0_q8_0_scalar(int n, const weft_block_q8_0 *x, const weft_block_q8_0 *y);
float weft_vec_dot_q8_0_q8_0_avx2(int n, const weft_block_q8_0 *x, const weft_block_q8_0 *y);
float weft_vec_dot_q8_0_q8_0_avx512(int n, const weft_block_q8_0 *x, const weft_block_q8_0 *y);
float weft_vec_dot_q8_0_q8_0_avx512vnni(int n, const weft_block_q8_0 *x, const weft_block_q8_0 *y);

float weft_vec_dot_q4_0_q8_0(int n, const weft_block_q4_0 *x, const weft_block_q8_0 *y);
float weft_vec_dot_q4_0_q8_0_scalar(int n, const weft_block_q4_0 *x, const weft_block_q8_0 *y);
float weft_vec_dot_q4_0_q8_0_avx2(int n, const weft_block_q4_0 *x, const weft_block_q8_0 *y);
float weft_vec_dot_q4_0_q8_0_avx512(int n, const weft_block_q4_0 *x, const weft_block_q8_0 *y);
float weft_vec_dot_q4_0_q8_0_avx512vnni(int n, const weft_block_q4_0 *x, const weft_block_q8_0 *y);

float weft_vec_dot_q4_1_q8_1(int n, const weft_block_q4_1 *x, const weft_block_q8_1 *y);
float weft_vec_dot_q4_1_q8_1_scalar(int n, const weft_block_q4_1 *x, const weft_block_q8_1 *y);
float weft_vec_dot_q4_1_q8_1_avx2(int n, const weft_block_q4_1 *x, const weft_block_q8_1 *y);
float weft_vec_dot_q4_1_q8_1_avx512(int n, const weft_block_q4_1 *x, const weft_block_q8_1 *y);
float weft_vec_dot_q4_1_q8_1_avx512vnni(int n, const weft_block_q4_1 *x, const weft_block_q8_1 *y);

// k-quant weight rows (n a multiple of 256) with Q8_K activations. Every
// path computes, per super-block, the same exact integer sums
// (sumi = sum_j sc[j] * sum q*q8 and, for Q4_K/Q5_K, summ = sum_j m[j] * bsums)
// and then the same float32 operations in the same order
// (sumf += (y.d * d) * sumi - (y.d * dmin) * summ), so all paths give the
// scalar reference's result bit for bit.
float weft_vec_dot_q4_K_q8_K(int n, const weft_block_q4_K *x, const weft_block_q8_K *y);
float weft_vec_dot_q4_K_q8_K_scalar(int n, const weft_block_q4_K *x, const weft_block_q8_K *y);
float weft_vec_dot_q4_K_q8_K_avx2(int n, const weft_block_q4_K *x, const weft_block_q8_K *y);
float weft_vec_dot_q4_K_q8_K_avx512(int n, const weft_block_q4_K *x, const weft_block_q8_K *y);
float weft_vec_dot_q4_K_q8_K_avx512vnni(int n, const weft_block_q4_K *x, const weft_block_q8_K *y);

float weft_vec_dot_q5_K_q8_K(int n, const weft_block_q5_K *x, const weft_block_q8_K *y);
float weft_vec_dot_q5_K_q8_K_scalar(int n, const weft_block_q5_K *x, const weft_block_q8_K *y);
float weft_vec_dot_q5_K_q8_K_avx2(int n, const weft_block_q5_K *x, const weft_block_q8_K *y);
float weft_vec_dot_q5_K_q8_K_avx512(int n, const weft_block_q5_K *x, const weft_block_q8_K *y);
float weft_vec_dot_q5_K_q8_K_avx512vnni(int n, const weft_block_q5_K *x, const weft_block_q8_K *y);

float weft_vec_dot_q6_K_q8_K(int n, const weft_block_q6_K *x, const weft_block_q8_K *y);
float weft_vec_dot_q6_K_q8_K_scalar(int n, const weft_block_q6_K *x, const weft_block_q8_K *y);
float weft_vec_dot_q6_K_q8_K_avx2(int n, const weft_block_q6_K *x, const weft_block_q8_K *y);
float weft_vec_dot_q6_K_q8_K_avx512(int n, const weft_block_q6_K *x, const weft_block_q8_K *y);
float weft_vec_dot_q6_K_q8_K_avx512vnni(int n, const weft_block_q6_K *x, const weft_block_q8_K *y);

/// 1 when the CPU (and OS) can run the AVX2 quant paths (AVX2, FMA, F16C).
int weft_quant_has_avx2(void);
/// 1 when the CPU can run the `_avx512vnni` kernels (AVX-512 F/BW/VL + VNNI).
int weft_quant_has_avx512vnni(void);

// ------------------------------------------------------------- GEMV driver
/// Scratch bytes weft_qgemv needs for m activation rows of length k
/// (0 when the type is unknown, k is not a positive multiple of the type's
/// block (32, or 256 for the k-quants) or m < 1).
size_t weft_qgemv_scratch_bytes(int wtype, int m, int k);

/// y[i][j] = dot(weight row j, activation row i) for i < m, j < n.
/// `w` holds n rows of blocks of `wtype` (Q8_0, Q4_0, Q4_1: 32 elements per
/// block; Q4_K, Q5_K, Q6_K: 256), row j at byte offset j * (k / block
/// elements) * block bytes. The float32 activations x (row stride ldx floats)
/// are quantized once per call (Q8_0, Q8_1 for Q4_1, Q8_K for the k-quants)
/// into `scratch` (weft_qgemv_scratch_bytes). The n rows are split over the
/// threads of `pool` (NULL: the calling thread only).
/// Returns 0, or -1 (nothing written) for an unknown type, k not a positive
/// multiple of the block, m < 1, n < 0, or a null pointer.
int weft_qgemv(int wtype, int m, int n, int k, const float *x, size_t ldx, const void *w,
               float *y, size_t ldy, void *scratch, weft_pool *pool);
int weft_qgemv_scalar(int wtype, int m, int n, int k, const float *x, size_t ldx, const void *w,
                      float *y, size_t ldy, void *scratch, weft_pool *pool);
int weft_qgemv_avx2(int wtype, int m, int n, int k, const float *x, size_t ldx, const void *w,
                    float *y, size_t ldy, void *scratch, weft_pool *pool);
int weft_qgemv_avx512(int wtype, int m, int n, int k, const float *x, size_t ldx, const void *w,
                      float *y, size_t ldy, void *scratch, weft_pool *pool);

#ifdef __cplusplus
}
#endif
#endif
