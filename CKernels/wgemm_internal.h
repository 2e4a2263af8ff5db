// Internal to the wgemm*.c files: the per-ISA pieces weft_wgemm dispatches to.
#ifndef WEFT_WGEMM_INTERNAL_H
#define WEFT_WGEMM_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "gemm_blocked.h"
#include "weft_quant.h"
#include "weft_wgemm.h"

// Prefill (panel) path: a block of WGEMM_BLOCK_PANELS panels of WEFT_GEMM_NR
// weight rows by WGEMM_KC columns is dequantized into float32 packed-panel
// layout (the layout weft_gemm_packed reads), then multiplied with the
// activation rows, packed once per call, by the float32 micro-kernels
// (weft_gemm_xp_<isa>). A block is 8 * 32 * 256 * 4 = 256 KiB:
// half of Zen 3's L2, as the float32 driver's own L2 block.
#ifndef WGEMM_KC
#define WGEMM_KC 256
#endif
#ifndef WGEMM_BLOCK_PANELS
#define WGEMM_BLOCK_PANELS 8
#endif
#define WGEMM_BLOCK_ROWS (WGEMM_BLOCK_PANELS * WEFT_GEMM_NR)
// Activation rows packed (and multiplied) per round of the panel path: its
// scratch holds WGEMM_MB * k floats of packed x at most, whatever m.
#ifndef WGEMM_MB
#define WGEMM_MB 512
#endif

// 16-bit weights (F16 or BF16), decode: y[i][j] = dot(x[i], w[j]) for
// i < m and j in [j0, j1); w row j at w + j * k.
typedef void (*wgemm16_fn)(int bf16, int m, long j0, long j1, int k, const float *x, size_t ldx,
                           const uint16_t *w, float *y, size_t ldy);
void weft_wgemm16_rows_scalar(int bf16, int m, long j0, long j1, int k, const float *x,
                              size_t ldx, const uint16_t *w, float *y, size_t ldy);
void weft_wgemm16_rows_avx2(int bf16, int m, long j0, long j1, int k, const float *x,
                            size_t ldx, const uint16_t *w, float *y, size_t ldy);
void weft_wgemm16_rows_avx512(int bf16, int m, long j0, long j1, int k, const float *x,
                              size_t ldx, const uint16_t *w, float *y, size_t ldy);

// 16-bit rows straight into one packed panel: rows [0, nrows) of w (row
// stride ldw elements), columns [0, kc), to dst[kk * NR + r]; rows nrows..NR-1
// are zero.
typedef void (*wgemm_pack16_fn)(int bf16, const uint16_t *w, size_t ldw, int nrows, int kc,
                                float *dst);
void weft_wgemm_pack16_scalar(int bf16, const uint16_t *w, size_t ldw, int nrows, int kc, float *dst);
void weft_wgemm_pack16_avx2(int bf16, const uint16_t *w, size_t ldw, int nrows, int kc, float *dst);
void weft_wgemm_pack16_avx512(int bf16, const uint16_t *w, size_t ldw, int nrows, int kc, float *dst);

// float32 rows (row-major, stride ldr floats) into one packed panel, as above.
typedef void (*wgemm_pack32_fn)(const float *rows, size_t ldr, int nrows, int kc, float *dst);
void weft_wgemm_pack32_scalar(const float *rows, size_t ldr, int nrows, int kc, float *dst);
void weft_wgemm_pack32_avx2(const float *rows, size_t ldr, int nrows, int kc, float *dst);
void weft_wgemm_pack32_avx512(const float *rows, size_t ldr, int nrows, int kc, float *dst);

// Block-format rows (Q8_0, Q4_0, Q4_1; row j at w + j * row_bytes, columns
// [0, kc) with kc a multiple of 32) straight into one packed panel, with the
// reference dequantizers' values. Returns 0 (nothing written) for a format
// without a direct packer here: the caller dequantizes rows and uses pack32.
typedef int (*wgemm_packq_fn)(int wtype, const void *w, size_t row_bytes, int nrows, int kc,
                              float *dst);
int weft_wgemm_packq_scalar(int wtype, const void *w, size_t row_bytes, int nrows, int kc, float *dst);
int weft_wgemm_packq_avx2(int wtype, const void *w, size_t row_bytes, int nrows, int kc, float *dst);
int weft_wgemm_packq_avx512(int wtype, const void *w, size_t row_bytes, int nrows, int kc, float *dst);

// Sum of the 64-bit words of [p, p + bytes) (bytes a multiple of 64).
uint64_t weft_wgemm_read_scalar(const unsigned char *p, size_t bytes);
uint64_t weft_wgemm_read_avx2(const unsigned char *p, size_t bytes);
uint64_t weft_wgemm_read_avx512(const unsigned char *p, size_t bytes);

// 1 when the CPU has F16C next to AVX2 + FMA (every AVX2 CPU in practice;
// weft_isa_detect does not check it).
int weft_wgemm_has_f16c(void);

#endif
