// The q8_0 wire format's scalar reference and dispatch (see weft_wire.h).
#include "weft_wire.h"
#include "weft_kernels.h"
#include "weft_quant.h"

#include <float.h>
#include <math.h>
#include <string.h>

// As ggml's reference: every product rounded separately.
#pragma STDC FP_CONTRACT OFF

size_t weft_wire_q8_0_row_bytes(size_t dim) {
    return (dim + WEFT_WIRE_Q8_0_BLOCK - 1) / WEFT_WIRE_Q8_0_BLOCK * WEFT_WIRE_Q8_0_BLOCK_BYTES;
}

// One block of n <= 32 values (the rest zero) as ggml's quantize_row_q8_0_ref,
// with the non-finite cases weft_wire.h defines.
static void encode_block(const float *x, int n, unsigned char *out) {
    float amax = 0.0f;
    int finite = 1;
    for (int j = 0; j < n; j++) {
        const float a = fabsf(x[j]);
        if (!(a <= FLT_MAX)) finite = 0;
        amax = fmaxf(amax, a);
    }
    int8_t qs[WEFT_WIRE_Q8_0_BLOCK] = {0};
    uint16_t dh = 0x7e00u;
    if (finite) {
        const float d = amax / ((1 << 7) - 1);
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        for (int j = 0; j < n; j++) {
            float t = x[j] * id;
            if (t != t) t = 0.0f;
            t = fminf(fmaxf(t, -127.0f), 127.0f);
            qs[j] = (int8_t)roundf(t);
        }
        dh = weft_fp32_to_fp16(d);
    }
    memcpy(out, &dh, 2);
    memcpy(out + 2, qs, WEFT_WIRE_Q8_0_BLOCK);
}

static void decode_block(const unsigned char *in, int n, float *y) {
    uint16_t dh;
    memcpy(&dh, in, 2);
    const float d = weft_fp16_to_fp32(dh);
    const int8_t *qs = (const int8_t *)(in + 2);
    for (int j = 0; j < n; j++) y[j] = (float)qs[j] * d;
}

void weft_wire_q8_0_encode_scalar(const float *src, void *dst, size_t rows, size_t dim) {
    unsigned char *out = dst;
    for (size_t r = 0; r < rows; r++) {
        const float *x = src + r * dim;
        for (size_t j = 0; j < dim; j += WEFT_WIRE_Q8_0_BLOCK) {
            const size_t left = dim - j;
            encode_block(x + j, left < WEFT_WIRE_Q8_0_BLOCK ? (int)left : WEFT_WIRE_Q8_0_BLOCK, out);
            out += WEFT_WIRE_Q8_0_BLOCK_BYTES;
        }
    }
}

void weft_wire_q8_0_decode_scalar(const void *src, float *dst, size_t rows, size_t dim) {
    const unsigned char *in = src;
    for (size_t r = 0; r < rows; r++) {
        float *y = dst + r * dim;
        for (size_t j = 0; j < dim; j += WEFT_WIRE_Q8_0_BLOCK) {
            const size_t left = dim - j;
            decode_block(in, left < WEFT_WIRE_Q8_0_BLOCK ? (int)left : WEFT_WIRE_Q8_0_BLOCK, y + j);
            in += WEFT_WIRE_Q8_0_BLOCK_BYTES;
        }
    }
}

// AVX-512 CPUs use the AVX2 path (the format's blocks are 256 bits wide).
void weft_wire_q8_0_encode(const float *src, void *dst, size_t rows, size_t dim) {
    if (weft_isa_current() >= WEFT_ISA_AVX2) weft_wire_q8_0_encode_avx2(src, dst, rows, dim);
    else weft_wire_q8_0_encode_scalar(src, dst, rows, dim);
}

void weft_wire_q8_0_decode(const void *src, float *dst, size_t rows, size_t dim) {
    if (weft_isa_current() >= WEFT_ISA_AVX2) weft_wire_q8_0_decode_avx2(src, dst, rows, dim);
    else weft_wire_q8_0_decode_scalar(src, dst, rows, dim);
}
