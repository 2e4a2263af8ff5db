#ifndef WEFT_COLLECTIVE_H
#define WEFT_COLLECTIVE_H
// The fused AllReduce + residual + RMSNorm, sequence-parallel: each rank sums
// the peers' partial rows of its own token shard, adds its residual, normalizes
// and publishes the result; peers synchronize through per-rank flags with an
// epoch counter in shared memory (acquire/release atomics, no MPI_Barrier).

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/// For rows [0, rows): residual[r] += sum_p partials[p][r]; out[r] = rmsnorm(residual[r]) * w.
/// `partials[p]` points at row 0 of peer p's partial sums (row stride ldp).
void weft_reduce_add_rmsnorm(const float *const *partials, int parts, size_t ldp,
                             float *residual, size_t ldr, const float *w,
                             float *out, size_t ldo, int rows, int dim, float eps);
void weft_reduce_add_rmsnorm_scalar(const float *const *partials, int parts, size_t ldp,
                                    float *residual, size_t ldr, const float *w,
                                    float *out, size_t ldo, int rows, int dim, float eps);
void weft_reduce_add_rmsnorm_avx512(const float *const *partials, int parts, size_t ldp,
                                    float *residual, size_t ldr, const float *w,
                                    float *out, size_t ldo, int rows, int dim, float eps);
void weft_reduce_add_rmsnorm_avx2(const float *const *partials, int parts, size_t ldp,
                                  float *residual, size_t ldr, const float *w,
                                  float *out, size_t ldo, int rows, int dim, float eps);

/// out[r] = sum_p partials[p][r] for rows [0, rows) (the node-local step of the
/// hierarchical all-reduce).
void weft_sum_rows(const float *const *partials, int parts, size_t ldp, float *out, size_t ldo,
                   int rows, int dim);

/// Publishes `epoch` in a flag (release store).
void weft_flag_publish(uint64_t *flag, uint64_t epoch);
/// Reads a flag (acquire load).
uint64_t weft_flag_read(const uint64_t *flag);

/// The index of the first flag (i != skip) still below `epoch`, or -1 if none
/// is (acquire loads; never blocks).
int weft_flags_behind(uint64_t *const *flags, int count, int skip, uint64_t epoch);

/// Waits until every flags[i] (i != skip) reaches `epoch` (acquire loads). Spins
/// briefly, then yields, then sleeps in growing steps up to 100 µs, so an
/// oversubscribed machine keeps making progress. Returns -1 on success, or the
/// index of the first flag still behind after `timeout_seconds`.
int weft_flags_wait(uint64_t *const *flags, int count, int skip, uint64_t epoch,
                    double timeout_seconds);

#ifdef __cplusplus
}
#endif
#endif
