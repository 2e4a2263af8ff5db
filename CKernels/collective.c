// Fused reduce + residual + RMSNorm kernels and the shared-memory flag protocol.
#include "weft_collective.h"
#include "weft_kernels.h"

#include <math.h>
#include <sched.h>
#include <stdatomic.h>
#include <time.h>

void weft_reduce_add_rmsnorm_scalar(const float *const *partials, int parts, size_t ldp,
                                    float *residual, size_t ldr, const float *w,
                                    float *out, size_t ldo, int rows, int dim, float eps) {
    for (int r = 0; r < rows; r++) {
        float *res = residual + (size_t)r * ldr;
        float sum = 0.0f;
        for (int i = 0; i < dim; i++) {
            float acc = 0.0f;   // peers summed in rank order, then added to the residual
            for (int p = 0; p < parts; p++) acc += partials[p][(size_t)r * ldp + i];
            res[i] += acc;
            sum += res[i] * res[i];
        }
        float inv = 1.0f / sqrtf(sum / (float)dim + eps);
        float *o = out + (size_t)r * ldo;
        for (int i = 0; i < dim; i++) o[i] = w[i] * (res[i] * inv);
    }
}

#if defined(__x86_64__)
#include <immintrin.h>
#define AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,fma")))

AVX512 void weft_reduce_add_rmsnorm_avx512(const float *const *partials, int parts, size_t ldp,
                                           float *residual, size_t ldr, const float *w,
                                           float *out, size_t ldo, int rows, int dim, float eps) {
    for (int r = 0; r < rows; r++) {
        float *res = residual + (size_t)r * ldr;
        __m512 sq = _mm512_setzero_ps();
        int i = 0;
        for (; i + 16 <= dim; i += 16) {
            __m512 acc = _mm512_setzero_ps();
            for (int p = 0; p < parts; p++) acc = _mm512_add_ps(acc, _mm512_loadu_ps(partials[p] + (size_t)r * ldp + i));
            __m512 v = _mm512_add_ps(_mm512_loadu_ps(res + i), acc);
            _mm512_storeu_ps(res + i, v);
            sq = _mm512_fmadd_ps(v, v, sq);
        }
        if (i < dim) {
            __mmask16 m = (__mmask16)((1u << (dim - i)) - 1);
            __m512 acc = _mm512_setzero_ps();
            for (int p = 0; p < parts; p++) acc = _mm512_add_ps(acc, _mm512_maskz_loadu_ps(m, partials[p] + (size_t)r * ldp + i));
            __m512 v = _mm512_add_ps(_mm512_maskz_loadu_ps(m, res + i), acc);
            _mm512_mask_storeu_ps(res + i, m, v);
            sq = _mm512_fmadd_ps(v, v, sq);
        }
        float inv = 1.0f / sqrtf(_mm512_reduce_add_ps(sq) / (float)dim + eps);
        __m512 vinv = _mm512_set1_ps(inv);
        float *o = out + (size_t)r * ldo;
        for (i = 0; i + 16 <= dim; i += 16)
            _mm512_storeu_ps(o + i, _mm512_mul_ps(_mm512_loadu_ps(w + i), _mm512_mul_ps(_mm512_loadu_ps(res + i), vinv)));
        if (i < dim) {
            __mmask16 m = (__mmask16)((1u << (dim - i)) - 1);
            _mm512_mask_storeu_ps(o + i, m, _mm512_mul_ps(_mm512_maskz_loadu_ps(m, w + i), _mm512_mul_ps(_mm512_maskz_loadu_ps(m, res + i), vinv)));
        }
    }
}

#define AVX2 __attribute__((target("avx2,fma")))

static AVX2 inline float hsum256(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

AVX2 void weft_reduce_add_rmsnorm_avx2(const float *const *partials, int parts, size_t ldp,
                                       float *residual, size_t ldr, const float *w,
                                       float *out, size_t ldo, int rows, int dim, float eps) {
    for (int r = 0; r < rows; r++) {
        float *res = residual + (size_t)r * ldr;
        __m256 sq = _mm256_setzero_ps();
        int i = 0;
        for (; i + 8 <= dim; i += 8) {
            __m256 acc = _mm256_setzero_ps();
            for (int p = 0; p < parts; p++) acc = _mm256_add_ps(acc, _mm256_loadu_ps(partials[p] + (size_t)r * ldp + i));
            __m256 v = _mm256_add_ps(_mm256_loadu_ps(res + i), acc);
            _mm256_storeu_ps(res + i, v);
            sq = _mm256_fmadd_ps(v, v, sq);
        }
        float sum = hsum256(sq);
        for (; i < dim; i++) {   // tail in scalar, same order as the reference
            float acc = 0.0f;
            for (int p = 0; p < parts; p++) acc += partials[p][(size_t)r * ldp + i];
            res[i] += acc;
            sum += res[i] * res[i];
        }
        float inv = 1.0f / sqrtf(sum / (float)dim + eps);
        __m256 vinv = _mm256_set1_ps(inv);
        float *o = out + (size_t)r * ldo;
        for (i = 0; i + 8 <= dim; i += 8)
            _mm256_storeu_ps(o + i, _mm256_mul_ps(_mm256_loadu_ps(w + i), _mm256_mul_ps(_mm256_loadu_ps(res + i), vinv)));
        for (; i < dim; i++) o[i] = w[i] * (res[i] * inv);
    }
}
#else
void weft_reduce_add_rmsnorm_avx2(const float *const *partials, int parts, size_t ldp,
                                  float *residual, size_t ldr, const float *w,
                                  float *out, size_t ldo, int rows, int dim, float eps) {
    weft_reduce_add_rmsnorm_scalar(partials, parts, ldp, residual, ldr, w, out, ldo, rows, dim, eps);
}
void weft_reduce_add_rmsnorm_avx512(const float *const *partials, int parts, size_t ldp,
                                    float *residual, size_t ldr, const float *w,
                                    float *out, size_t ldo, int rows, int dim, float eps) {
    weft_reduce_add_rmsnorm_scalar(partials, parts, ldp, residual, ldr, w, out, ldo, rows, dim, eps);
}
#endif

void weft_reduce_add_rmsnorm(const float *const *partials, int parts, size_t ldp,
                             float *residual, size_t ldr, const float *w,
                             float *out, size_t ldo, int rows, int dim, float eps) {
    weft_isa isa = weft_isa_current();
    if (isa == WEFT_ISA_AVX512)
        weft_reduce_add_rmsnorm_avx512(partials, parts, ldp, residual, ldr, w, out, ldo, rows, dim, eps);
    else if (isa == WEFT_ISA_AVX2)
        weft_reduce_add_rmsnorm_avx2(partials, parts, ldp, residual, ldr, w, out, ldo, rows, dim, eps);
    else
        weft_reduce_add_rmsnorm_scalar(partials, parts, ldp, residual, ldr, w, out, ldo, rows, dim, eps);
}

void weft_sum_rows(const float *const *partials, int parts, size_t ldp, float *out, size_t ldo,
                   int rows, int dim) {
    for (int r = 0; r < rows; r++) {
        float *o = out + (size_t)r * ldo;
        const float *first = partials[0] + (size_t)r * ldp;
        for (int i = 0; i < dim; i++) o[i] = first[i];
        for (int p = 1; p < parts; p++) {
            const float *src = partials[p] + (size_t)r * ldp;
            for (int i = 0; i < dim; i++) o[i] += src[i];
        }
    }
}

void weft_flag_publish(uint64_t *flag, uint64_t epoch) {
    __atomic_store_n(flag, epoch, __ATOMIC_RELEASE);
}

uint64_t weft_flag_read(const uint64_t *flag) { return __atomic_load_n(flag, __ATOMIC_ACQUIRE); }

int weft_flags_behind(uint64_t *const *flags, int count, int skip, uint64_t epoch) {
    for (int i = 0; i < count; i++)
        if (i != skip && __atomic_load_n(flags[i], __ATOMIC_ACQUIRE) < epoch) return i;
    return -1;
}

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

int weft_flags_wait(uint64_t *const *flags, int count, int skip, uint64_t epoch,
                    double timeout_seconds) {
    double deadline = -1;
    long sleep_ns = 1000;
    for (long attempt = 0;; attempt++) {
        int behind = weft_flags_behind(flags, count, skip, epoch);
        if (behind < 0) return -1;
        if (attempt < 2000) {
#if defined(__x86_64__)
            __builtin_ia32_pause();
#endif
        } else if (attempt < 2200) {
            sched_yield();
        } else {
            if (deadline < 0) deadline = now_seconds() + timeout_seconds;
            else if (now_seconds() > deadline) return behind;
            struct timespec ts = {0, sleep_ns};
            nanosleep(&ts, NULL);
            if (sleep_ns < 100000) sleep_ns *= 2;
        }
    }
}
