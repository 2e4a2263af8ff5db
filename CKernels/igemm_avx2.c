// AVX2 + FMA + F16C register tiles of weft_igemm (igemm_internal.h has the
// kernels; this file compiles them for AVX2). Function-level target
// attributes; runs only where weft_igemm_has_avx2().
#if defined(__x86_64__)
#define IG_TARGET "avx2,fma,f16c"
#endif
#include "igemm_internal.h"

#if defined(__x86_64__)



IG_PANELS(ig_avx2)

// 8 weight rows x 4 activation rows (measured: /tmp/coord/igemm-results.md).
#ifndef IG_AVX2_PANEL_RN
#define IG_AVX2_PANEL_RN 4
#endif
static const weft_ig_panel_kernel p_q4_0 = {IG_AVX2_PANEL_RN, IG_PB_Q4_0, IG_SB_32, ig_avx2_pack_q4_0, ig_avx2_side_q8_0, IG_PTABLE(ig_avx2_p_q4_0)};
static const weft_ig_panel_kernel p_q4_1 = {IG_AVX2_PANEL_RN, IG_PB_Q4_1, IG_SB_32, ig_avx2_pack_q4_1, ig_avx2_side_q8_1, IG_PTABLE(ig_avx2_p_q4_1)};
static const weft_ig_panel_kernel p_q8_0 = {IG_AVX2_PANEL_RN, IG_PB_Q8_0, IG_SB_32, ig_avx2_pack_q8_0, ig_avx2_side_q8_0, IG_PTABLE(ig_avx2_p_q8_0)};
static const weft_ig_panel_kernel p_q4_k = {IG_AVX2_PANEL_RN, IG_PB_Q4_K, IG_SB_K, ig_avx2_pack_q4_k, ig_avx2_side_q8_k, IG_PTABLE(ig_avx2_p_q4_k)};
static const weft_ig_panel_kernel p_q6_k = {IG_AVX2_PANEL_RN, IG_PB_Q6_K, IG_SB_K6, ig_avx2_pack_q6_k, ig_avx2_side_q8_k6, IG_PTABLE(ig_avx2_p_q6_k)};

const weft_ig_panel_kernel *weft_ig_panel_avx2(int wtype) {
    switch (wtype) {
    case WEFT_QTYPE_Q8_0: return &p_q8_0;
    case WEFT_QTYPE_Q4_0: return &p_q4_0;
    case WEFT_QTYPE_Q4_1: return &p_q4_1;
    case WEFT_QTYPE_Q4_K: return &p_q4_k;
#ifndef IG_NO_Q6K_PANEL
    case WEFT_QTYPE_Q6_K: return &p_q6_k;
#endif
    default: return NULL;
    }
}


#else
const weft_ig_panel_kernel *weft_ig_panel_avx2(int wtype) { (void)wtype; return NULL; }
#endif
