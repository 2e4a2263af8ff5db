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

typedef struct {
    weft_qtile_fn r1c1;    // 1 x 1 (always present)
    weft_qtile_fn r4c1;    // 4 weight rows x 1 activation row, or NULL
    weft_qtile_fn r1c[3];  // 1 weight row x 2, 3, 4 activation rows, or NULL
} weft_qtiles;

// The AVX2 tiles of Q8_0, Q4_0, Q4_1 (quant_avx2.c; then the k-quants').
const weft_qtiles *weft_q_tiles_avx2(int wtype);

// The k-quant tiles of an ISA for wtype 12, 13, 14 (NULL for another type).
const weft_qtiles *weft_kq_tiles_scalar(int wtype);
const weft_qtiles *weft_kq_tiles_avx2(int wtype);
const weft_qtiles *weft_kq_tiles_avx512(int wtype);

#endif
