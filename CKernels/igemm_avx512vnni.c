// AVX-512 VNNI build of weft_igemm's interleaved-panel kernels
// (igemm_internal.h): the unsigned x signed byte dot products of Q8_0 / Q4_0 /
// Q4_1 are vpdpbusd into int32 (exact, no saturation) instead of vpmaddubsw +
// vpmaddwd; the k-quant kernels are as in igemm_avx512.c. Runs only where the
// CPU has avx512vnni (and F/BW/VL). Not measured on the development machine (Zen 3).
#if defined(__x86_64__)
#define IG_TARGET "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c"
#define IG_VNNI 1
#endif
#include "igemm_internal.h"

#if defined(__x86_64__)

IG_PANELS(ig_avx512vnni)

// The interleaved 8-row panels of igemm_avx2.c (8 x 4 tiles), compiled for this target.
static const weft_ig_panel_kernel p_q4_0 = {4, IG_PB_Q4_0, IG_SB_32, ig_avx512vnni_pack_q4_0, ig_avx512vnni_side_q8_0, IG_PTABLE(ig_avx512vnni_p_q4_0)};
static const weft_ig_panel_kernel p_q4_1 = {4, IG_PB_Q4_1, IG_SB_32, ig_avx512vnni_pack_q4_1, ig_avx512vnni_side_q8_1, IG_PTABLE(ig_avx512vnni_p_q4_1)};
static const weft_ig_panel_kernel p_q8_0 = {4, IG_PB_Q8_0, IG_SB_32, ig_avx512vnni_pack_q8_0, ig_avx512vnni_side_q8_0, IG_PTABLE(ig_avx512vnni_p_q8_0)};
static const weft_ig_panel_kernel p_q4_k = {4, IG_PB_Q4_K, IG_SB_K, ig_avx512vnni_pack_q4_k, ig_avx512vnni_side_q8_k, IG_PTABLE(ig_avx512vnni_p_q4_k)};
static const weft_ig_panel_kernel p_q6_k = {4, IG_PB_Q6_K, IG_SB_K6, ig_avx512vnni_pack_q6_k, ig_avx512vnni_side_q8_k6, IG_PTABLE(ig_avx512vnni_p_q6_k)};

const weft_ig_panel_kernel *weft_ig_panel_avx512vnni(int wtype) {
    switch (wtype) {
    case WEFT_QTYPE_Q8_0: return &p_q8_0;
    case WEFT_QTYPE_Q4_0: return &p_q4_0;
    case WEFT_QTYPE_Q4_1: return &p_q4_1;
    case WEFT_QTYPE_Q4_K: return &p_q4_k;
    case WEFT_QTYPE_Q6_K: return &p_q6_k;
    default: return NULL;
    }
}



#else
const weft_ig_panel_kernel *weft_ig_panel_avx512vnni(int wtype) { (void)wtype; return NULL; }
#endif
