// Run-time ISA selection. The dispatching entry points read one global that is
// set once at start-up (and by tests); relaxed atomics keep that well-defined.
#include "weft_kernels.h"

#include <stdatomic.h>

static _Atomic int selected_isa = -1;

weft_isa weft_isa_detect(void) {
#if defined(__x86_64__) || defined(__i386__)
    // __builtin_cpu_supports also checks that the OS saves the vector state
    // (XCR0), so a hypervisor that hides AVX-512 is seen here.
    __builtin_cpu_init();
    int fma = __builtin_cpu_supports("fma");
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl") && fma)
        return WEFT_ISA_AVX512;
    if (__builtin_cpu_supports("avx2") && fma) return WEFT_ISA_AVX2;
#endif
    return WEFT_ISA_SCALAR;
}

weft_isa weft_isa_select(weft_isa isa) {
    weft_isa best = weft_isa_detect();
    if ((int)isa < 0) isa = WEFT_ISA_SCALAR;
    if (isa > best) isa = best;
    atomic_store_explicit(&selected_isa, (int)isa, memory_order_relaxed);
    return isa;
}

weft_isa weft_isa_current(void) {
    int isa = atomic_load_explicit(&selected_isa, memory_order_relaxed);
    if (isa < 0) return weft_isa_select(weft_isa_detect());
    return (weft_isa)isa;
}

const char *weft_isa_name(weft_isa isa) {
    switch (isa) {
    case WEFT_ISA_AVX512: return "avx512";
    case WEFT_ISA_AVX2: return "avx2";
    default: return "scalar";
    }
}

#define DISPATCH(name, args)                                                   \
    switch (weft_isa_current()) {                                              \
    case WEFT_ISA_AVX512: name##_avx512 args; break;                           \
    case WEFT_ISA_AVX2: name##_avx2 args; break;                               \
    default: name##_scalar args; break;                                        \
    }

void weft_bf16_to_f32(const uint16_t *src, float *dst, size_t n) {
    DISPATCH(weft_bf16_to_f32, (src, dst, n))
}
void weft_f16_to_f32(const uint16_t *src, float *dst, size_t n) {
    DISPATCH(weft_f16_to_f32, (src, dst, n))
}
void weft_gemm_packed(int m, int n0, int n1, int k, const float *x, size_t ldx,
                      const float *wpacked, float *y, size_t ldy, int accumulate) {
    DISPATCH(weft_gemm_packed, (m, n0, n1, k, x, ldx, wpacked, y, ldy, accumulate))
}
void weft_rmsnorm(const float *x, size_t ldx, const float *w, float *y, size_t ldy, int rows,
                  int dim, float eps) {
    DISPATCH(weft_rmsnorm, (x, ldx, w, y, ldy, rows, dim, eps))
}
void weft_add_rmsnorm(float *residual, size_t ldr, const float *delta, size_t ldd,
                      const float *w, float *y, size_t ldy, int rows, int dim, float eps) {
    DISPATCH(weft_add_rmsnorm, (residual, ldr, delta, ldd, w, y, ldy, rows, dim, eps))
}
void weft_silu_mul(const float *gate, const float *up, size_t ldin, float *out, size_t ldout,
                   int rows, int n) {
    DISPATCH(weft_silu_mul, (gate, up, ldin, out, ldout, rows, n))
}
void weft_rope(float *x, size_t ldx, int rows, int heads, int head_dim,
               const int32_t *positions, const float *inv_freq) {
    DISPATCH(weft_rope, (x, ldx, rows, heads, head_dim, positions, inv_freq))
}
void weft_attention(const weft_attention_args *a, int item_begin, int item_end) {
    DISPATCH(weft_attention, (a, item_begin, item_end))
}
void weft_f32_to_f16(const float *src, uint16_t *dst, size_t n) {
    DISPATCH(weft_f32_to_f16, (src, dst, n))
}
void weft_f32_to_bf16(const float *src, uint16_t *dst, size_t n) {
    DISPATCH(weft_f32_to_bf16, (src, dst, n))
}
void weft_attention_kv(const weft_attention_kv_args *a, int item_begin, int item_end) {
    DISPATCH(weft_attention_kv, (a, item_begin, item_end))
}
