#ifndef WEFT_POOL_H
#define WEFT_POOL_H
// A fixed pool of pinned compute threads. The calling thread takes part as
// thread 0, so a pool of N threads starts N-1 workers. Workers spin briefly
// for the next task and then sleep on a condition variable, so an
// oversubscribed machine (more ranks than cores) does not burn its cores.

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct weft_pool weft_pool;
typedef void (*weft_task_fn)(void *context, int thread_index, int thread_count);

/// Creates a pool of `threads` threads (>= 1). If `cpus` is non-null, thread i
/// is pinned to cpus[i] (the caller's thread too). `spin_iterations` bounds the
/// busy-wait before a worker sleeps. Returns NULL on failure (errno set).
weft_pool *weft_pool_create(int threads, const int *cpus, int spin_iterations);
void weft_pool_destroy(weft_pool *pool);
int weft_pool_size(const weft_pool *pool);
/// Runs fn(context, i, n) on every thread i of the pool and returns when all finished.
void weft_pool_run(weft_pool *pool, weft_task_fn fn, void *context);

/// The half-open range [*begin, *end) of `total` items given to part `index`
/// of `parts`, as even as possible (earlier parts get the remainder).
void weft_split_range(long total, int parts, int index, long *begin, long *end);

/// CPUs in this thread's affinity mask, in increasing order; returns the count
/// (at most max).
int weft_affinity_cpus(int *cpus, int max);
/// The CPU the calling thread runs on now (-1 if unknown).
int weft_current_cpu(void);
/// Pins the calling thread to one CPU; returns 0 or an errno value.
int weft_pin_current_thread(int cpu);

#ifdef __cplusplus
}
#endif
#endif
