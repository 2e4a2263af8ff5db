// The GEMV driver's view of a format's kernels (private to CKernels): tiles of
// weight rows x activation rows over one whole row length k. A tile writes
// y[c * ldy + r] for weight row r (at w + r * w_row_bytes) and activation row c
// (at a + c * a_row_bytes). Every tile of a format and ISA gives, per
// (r, c), exactly the bits of that ISA's single dot product.
#ifndef WEFT_QUANT_TILES_H
#define WEFT_QUANT_TILES_H

#include <stddef.h>

typedef void (*weft_qtile_fn)(int k, const void *w, size_t w_row_bytes, const void *a,
                              size_t a_row_bytes, float *y, size_t ldy);

// Lane tiles (the AVX2 Q8_0, Q4_0, Q4_1 kernels): R weight rows x C = 1, 2
// or 4 activation rows (R given per C in weft_qtiles.lane_rows), one float32
// lane per (row, activation) pair, of which the first nr <= R rows and
// nc <= C activation rows are valid (the others repeat the last valid one and
// are not stored). `side` points at the
// activation side data of the tile's first activation row (weft_qside_fill):
// for block b, side[b * sstride + c] is activation row c's scale and
// side[b * sstride + soff + c] its second value (Q4_0: 8 * the sum of its
// int8 values, as int32; Q4_1: its fp16 s as float). `accumulate`: start
// from the values in y instead of 0 (the single dot product in chunks).
typedef void (*weft_qtile8_fn)(int k, const void *w, size_t w_row_bytes, const void *a, size_t a_row_bytes,
                               const void *side, size_t sstride, size_t soff, float *y, size_t ldy, int nr,
                               int nc, int accumulate);

// Whole rows against one activation row (m = 1): rows [0, nrows) of w (row
// r at w + r * w_row_bytes) against the quantized activation row a, y[r] for
// each, with a_scales[b] = the activation's block b scale as float32. Gives
// per row exactly the single dot product's bits.
typedef void (*weft_qrows_fn)(int k, const void *w, size_t w_row_bytes, int nrows, const void *a,
                              const float *a_scales, float *y);

typedef struct {
    weft_qtile_fn r1c1;    // 1 x 1 (always present)
    weft_qtile_fn r4c1;    // 4 weight rows x 1 activation row, or NULL
    weft_qtile_fn r1c[3];  // 1 weight row x 2, 3, 4 activation rows, or NULL
    weft_qtile8_fn lanes8[3];  // C = 1, 2, 4 (then the driver uses only these), or NULL
    int lane_rows[3];          // their R
    weft_qrows_fn rows1;       // m = 1 (then the driver uses it there), or NULL
} weft_qtiles;

/// Activation side data of weft_qtile8_fn for m quantized activation rows
/// (row i at a + i * a_row_bytes, nb blocks each) of format wtype's
/// activations: nb * 2 * mpad 4-byte entries, mpad = m rounded up to 4, the
/// rows past m copies of row m - 1.
size_t weft_qside_bytes(int m, int nb);
void weft_qside_fill(int wtype, int m, int nb, const void *a, size_t a_row_bytes, void *side);

// The AVX2 tiles of Q8_0, Q4_0, Q4_1 (quant_avx2.c; then the k-quants').
const weft_qtiles *weft_q_tiles_avx2(int wtype);

// The k-quant tiles of an ISA for wtype 12, 13, 14 (NULL for another type).
const weft_qtiles *weft_kq_tiles_scalar(int wtype);
const weft_qtiles *weft_kq_tiles_avx2(int wtype);
const weft_qtiles *weft_kq_tiles_avx512(int wtype);

#endif
