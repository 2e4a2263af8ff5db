#ifndef WEFT_WIRE_H
#define WEFT_WIRE_H
// Wire formats of the fused collective between nodes (WeftComm's WireFormat).
//
// q8_0: ggml's block_q8_0 (weft_block_q8_0 in weft_quant.h): per 32 floats one
// fp16 scale d = max|x| / 127 and 32 int8 q = roundf(x / d) (x times the fp32
// reciprocal of d, rounded half away from zero), 34 bytes. For finite input
// the bytes equal ggml's quantize_row_q8_0_ref (and the gguf package's Q8_0);
// decoding gives q * d in float32, as ggml's dequantize_row_q8_0.
//
// Rows of `dim` floats are encoded one after another, ceil(dim / 32) blocks
// each: when dim is not a multiple of 32, each row's last block holds its
// dim % 32 values padded with zeros (padding does not change max|x|), so rows
// never share a block and any hidden size works.
//
// Where ggml's reference is undefined (a float -> int8 conversion of a NaN or
// out-of-range value) these kernels define it:
//   - a block holding a NaN or an infinity encodes as d = fp16 NaN (0x7e00),
//     q = 0, and decodes to 32 NaNs: a non-finite value is not lost silently,
//     though the block's finite values are;
//   - x / d is clamped to [-127, 127] and a NaN quotient (0 * inf when d is
//     a tiny subnormal) becomes 0; this changes no finite in-range case.
// Finite blocks with max|x| >= 65520 * 127 overflow the fp16 scale exactly as
// in ggml: d = inf, and they decode to +-inf (q != 0) and NaN (q == 0).
//
// Every entry point has a scalar reference (`*_scalar`) and an AVX2 + F16C
// path (`*_avx2`, bit-exact with the reference, used on AVX-512 CPUs too); the
// unsuffixed functions dispatch on weft_isa_current().

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/// Values per q8_0 block and bytes per block.
#define WEFT_WIRE_Q8_0_BLOCK 32
#define WEFT_WIRE_Q8_0_BLOCK_BYTES 34

/// Bytes of one encoded row of `dim` floats: ceil(dim / 32) * 34.
size_t weft_wire_q8_0_row_bytes(size_t dim);

/// `rows` rows of `dim` floats (contiguous) -> rows * weft_wire_q8_0_row_bytes(dim) bytes.
void weft_wire_q8_0_encode(const float *src, void *dst, size_t rows, size_t dim);
void weft_wire_q8_0_encode_scalar(const float *src, void *dst, size_t rows, size_t dim);
void weft_wire_q8_0_encode_avx2(const float *src, void *dst, size_t rows, size_t dim);

/// The inverse: rows * weft_wire_q8_0_row_bytes(dim) bytes -> rows * dim floats.
void weft_wire_q8_0_decode(const void *src, float *dst, size_t rows, size_t dim);
void weft_wire_q8_0_decode_scalar(const void *src, float *dst, size_t rows, size_t dim);
void weft_wire_q8_0_decode_avx2(const void *src, float *dst, size_t rows, size_t dim);

#ifdef __cplusplus
}
#endif

#endif
