// AVX-512 k-quant kernels: kquant_simd.h's body compiled for AVX-512
// F/BW/VL (256-bit EVEX vectors), and with VNNI's vpdpwssd fusing the
// sub-block scale multiply and the add where the CPU has avx512vnni. The
// 256-bit width keeps one body for every ISA (a 512-bit version would need
// cross-lane scale shuffles); the results are the scalar reference's bits in
// every variant. Function-level target attributes; `_avx512` runs where
// weft_isa_detect() found AVX-512 and picks the VNNI variant at run time.
#include "weft_quant.h"
#include "quant_tiles.h"

#pragma STDC FP_CONTRACT OFF

#if defined(__x86_64__)

#define KQ_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx2,fma,f16c")))
#define KQ_SUFFIX avx512_plain
#define KQ_SCALED_ADD(acc, s, p) _mm256_add_epi32((acc), _mm256_madd_epi16((s), (p)))
#include "kquant_simd.h"
#undef KQ_TARGET
#undef KQ_SUFFIX
#undef KQ_SCALED_ADD

#define KQ_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")))
#define KQ_SUFFIX avx512vnni
#define KQ_SCALED_ADD(acc, s, p) _mm256_dpwssd_epi32((acc), (s), (p))
#include "kquant_simd.h"

// -1 unknown, 0 no, 1 yes.
static int kq_vnni_state = -1;

static int kq_use_vnni(void) {
    int s = __atomic_load_n(&kq_vnni_state, __ATOMIC_RELAXED);
    if (s < 0) {
        s = weft_quant_has_avx512vnni();
        __atomic_store_n(&kq_vnni_state, s, __ATOMIC_RELAXED);
    }
    return s;
}

#define KQ_DOT(fmt, T)                                                                              \
    float weft_vec_dot_##fmt##_q8_K_avx512vnni(int n, const T *x, const weft_block_q8_K *y) {       \
        float s;                                                                                    \
        fmt##_r1c1_avx512vnni(n, x, 0, y, 0, &s, 1);                                                \
        return s;                                                                                   \
    }                                                                                               \
    float weft_vec_dot_##fmt##_q8_K_avx512(int n, const T *x, const weft_block_q8_K *y) {           \
        if (kq_use_vnni()) return weft_vec_dot_##fmt##_q8_K_avx512vnni(n, x, y);                    \
        float s;                                                                                    \
        fmt##_r1c1_avx512_plain(n, x, 0, y, 0, &s, 1);                                              \
        return s;                                                                                   \
    }

// The tile names are q4k_..., the public ones q4_K_...
#define q4_K_r1c1_avx512vnni q4k_r1c1_avx512vnni
#define q5_K_r1c1_avx512vnni q5k_r1c1_avx512vnni
#define q6_K_r1c1_avx512vnni q6k_r1c1_avx512vnni
#define q4_K_r1c1_avx512_plain q4k_r1c1_avx512_plain
#define q5_K_r1c1_avx512_plain q5k_r1c1_avx512_plain
#define q6_K_r1c1_avx512_plain q6k_r1c1_avx512_plain
KQ_DOT(q4_K, weft_block_q4_K)
KQ_DOT(q5_K, weft_block_q5_K)
KQ_DOT(q6_K, weft_block_q6_K)

void weft_quantize_row_q8_K_avx512(const float *x, weft_block_q8_K *y, int64_t k) {
    kq_quantize_q8_K_avx512_plain(x, y, k);
}

const weft_qtiles *weft_kq_tiles_avx512(int wtype) {
    const int vnni = kq_use_vnni();
    switch (wtype) {
    case WEFT_QTYPE_Q4_K: return vnni ? &q4k_tiles_avx512vnni : &q4k_tiles_avx512_plain;
    case WEFT_QTYPE_Q5_K: return vnni ? &q5k_tiles_avx512vnni : &q5k_tiles_avx512_plain;
    case WEFT_QTYPE_Q6_K: return vnni ? &q6k_tiles_avx512vnni : &q6k_tiles_avx512_plain;
    default: return NULL;
    }
}

#else  // not x86-64: the scalar references

#define KQ_DOT_SCALAR(fmt, T)                                                                       \
    float weft_vec_dot_##fmt##_q8_K_avx512(int n, const T *x, const weft_block_q8_K *y) {           \
        return weft_vec_dot_##fmt##_q8_K_scalar(n, x, y);                                           \
    }                                                                                               \
    float weft_vec_dot_##fmt##_q8_K_avx512vnni(int n, const T *x, const weft_block_q8_K *y) {       \
        return weft_vec_dot_##fmt##_q8_K_scalar(n, x, y);                                           \
    }
KQ_DOT_SCALAR(q4_K, weft_block_q4_K)
KQ_DOT_SCALAR(q5_K, weft_block_q5_K)
KQ_DOT_SCALAR(q6_K, weft_block_q6_K)
void weft_quantize_row_q8_K_avx512(const float *x, weft_block_q8_K *y, int64_t k) {
    weft_quantize_row_q8_K_scalar(x, y, k);
}
const weft_qtiles *weft_kq_tiles_avx512(int wtype) { return weft_kq_tiles_scalar(wtype); }

#endif
