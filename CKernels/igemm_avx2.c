// AVX2 + FMA + F16C register tiles of weft_igemm (igemm_internal.h has the
// kernels; this file compiles them for AVX2). Function-level target
// attributes; runs only where weft_igemm_has_avx2().
#if defined(__x86_64__)
#define IG_TARGET "avx2,fma,f16c"
#endif
#include "igemm_internal.h"

#if defined(__x86_64__)

IG_KERNELS(ig_avx2)

// Register tiles (weight rows x activation rows), measured on Zen 3
// (/tmp/igemm harness; Docs/Kernels.md): 4 x 3 for the 32-element formats,
// 4 x 2 for the k-quants (their int32 super-block sums need a second set of
// accumulators).
static const weft_ig_kernel k_q8_0 = {4, 3, IG_TABLE(ig_avx2_t_q8_0)};
static const weft_ig_kernel k_q4_0 = {4, 3, IG_TABLE(ig_avx2_t_q4_0)};
static const weft_ig_kernel k_q4_1 = {4, 3, IG_TABLE(ig_avx2_t_q4_1)};
static const weft_ig_kernel k_q4_k = {4, 2, IG_TABLE(ig_avx2_t_q4_k)};
static const weft_ig_kernel k_q6_k = {4, 2, IG_TABLE(ig_avx2_t_q6_k)};

const weft_ig_kernel *weft_ig_kernel_avx2(int wtype) {
    switch (wtype) {
    case WEFT_QTYPE_Q8_0: return &k_q8_0;
    case WEFT_QTYPE_Q4_0: return &k_q4_0;
    case WEFT_QTYPE_Q4_1: return &k_q4_1;
    case WEFT_QTYPE_Q4_K: return &k_q4_k;
    case WEFT_QTYPE_Q6_K: return &k_q6_k;
    default: return NULL;
    }
}

#else
const weft_ig_kernel *weft_ig_kernel_avx2(int wtype) { (void)wtype; return NULL; }
#endif
