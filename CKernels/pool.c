// Pinned compute thread pool with a generation counter: the caller publishes
// a task by bumping `generation`, workers spin a little and then sleep on a
// condition variable; completion is an atomic countdown the caller waits on.
#include "weft_pool.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>

struct weft_pool {
    int threads;
    int spin_iterations;
    pthread_t *workers;
    int *cpus;                      // NULL when unpinned

    pthread_mutex_t lock;
    pthread_cond_t wake;            // workers wait here for a new generation
    pthread_cond_t done;            // the caller waits here for pending == 0

    _Atomic unsigned long generation;
    _Atomic int pending;            // workers still running the current task
    _Atomic int stopping;
    weft_task_fn fn;
    void *context;
};

typedef struct {
    weft_pool *pool;
    int index;
} worker_start;

int weft_pin_current_thread(int cpu) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    return pthread_setaffinity_np(pthread_self(), sizeof set, &set);
}

int weft_current_cpu(void) { return sched_getcpu(); }

int weft_affinity_cpus(int *cpus, int max) {
    cpu_set_t set;
    CPU_ZERO(&set);
    if (sched_getaffinity(0, sizeof set, &set) != 0) return 0;
    int count = 0;
    for (int cpu = 0; cpu < CPU_SETSIZE && count < max; cpu++)
        if (CPU_ISSET(cpu, &set)) cpus[count++] = cpu;
    return count;
}

void weft_split_range(long total, int parts, int index, long *begin, long *end) {
    long base = total / parts, extra = total % parts;
    *begin = index * base + (index < extra ? index : extra);
    *end = *begin + base + (index < extra ? 1 : 0);
}

static void *worker_main(void *arg) {
    worker_start start = *(worker_start *)arg;
    free(arg);
    weft_pool *pool = start.pool;
    if (pool->cpus) weft_pin_current_thread(pool->cpus[start.index]);
    unsigned long seen = 0;
    for (;;) {
        unsigned long gen = atomic_load_explicit(&pool->generation, memory_order_acquire);
        for (int spin = 0; gen == seen && spin < pool->spin_iterations; spin++) {
            sched_yield();
            gen = atomic_load_explicit(&pool->generation, memory_order_acquire);
        }
        if (gen == seen) {
            pthread_mutex_lock(&pool->lock);
            while ((gen = atomic_load_explicit(&pool->generation, memory_order_acquire)) == seen &&
                   !atomic_load(&pool->stopping))
                pthread_cond_wait(&pool->wake, &pool->lock);
            pthread_mutex_unlock(&pool->lock);
        }
        if (atomic_load(&pool->stopping)) return NULL;
        seen = gen;
        pool->fn(pool->context, start.index, pool->threads);
        if (atomic_fetch_sub_explicit(&pool->pending, 1, memory_order_acq_rel) == 1) {
            pthread_mutex_lock(&pool->lock);
            pthread_cond_signal(&pool->done);
            pthread_mutex_unlock(&pool->lock);
        }
    }
}

weft_pool *weft_pool_create(int threads, const int *cpus, int spin_iterations) {
    if (threads < 1) { errno = EINVAL; return NULL; }
    weft_pool *pool = calloc(1, sizeof *pool);
    if (!pool) return NULL;
    pool->threads = threads;
    pool->spin_iterations = spin_iterations < 0 ? 0 : spin_iterations;
    pthread_mutex_init(&pool->lock, NULL);
    pthread_cond_init(&pool->wake, NULL);
    pthread_cond_init(&pool->done, NULL);
    if (cpus) {
        pool->cpus = malloc(sizeof(int) * threads);
        for (int i = 0; i < threads; i++) pool->cpus[i] = cpus[i];
        weft_pin_current_thread(cpus[0]);
    }
    pool->workers = calloc(threads, sizeof(pthread_t));
    for (int i = 1; i < threads; i++) {
        worker_start *start = malloc(sizeof *start);
        start->pool = pool;
        start->index = i;
        int rc = pthread_create(&pool->workers[i], NULL, worker_main, start);
        if (rc != 0) {
            free(start);
            pool->threads = i;  // destroy joins only the ones started
            weft_pool_destroy(pool);
            errno = rc;
            return NULL;
        }
    }
    return pool;
}

int weft_pool_size(const weft_pool *pool) { return pool->threads; }

void weft_pool_run(weft_pool *pool, weft_task_fn fn, void *context) {
    if (pool->threads == 1) { fn(context, 0, 1); return; }
    pool->fn = fn;
    pool->context = context;
    atomic_store_explicit(&pool->pending, pool->threads - 1, memory_order_relaxed);
    pthread_mutex_lock(&pool->lock);
    atomic_fetch_add_explicit(&pool->generation, 1, memory_order_release);
    pthread_cond_broadcast(&pool->wake);
    pthread_mutex_unlock(&pool->lock);

    fn(context, 0, pool->threads);

    for (int spin = 0; atomic_load_explicit(&pool->pending, memory_order_acquire) != 0 &&
                       spin < pool->spin_iterations; spin++)
        sched_yield();
    if (atomic_load_explicit(&pool->pending, memory_order_acquire) != 0) {
        pthread_mutex_lock(&pool->lock);
        while (atomic_load_explicit(&pool->pending, memory_order_acquire) != 0)
            pthread_cond_wait(&pool->done, &pool->lock);
        pthread_mutex_unlock(&pool->lock);
    }
}

void weft_pool_destroy(weft_pool *pool) {
    if (!pool) return;
    pthread_mutex_lock(&pool->lock);
    atomic_store(&pool->stopping, 1);
    pthread_cond_broadcast(&pool->wake);
    pthread_mutex_unlock(&pool->lock);
    for (int i = 1; i < pool->threads; i++) pthread_join(pool->workers[i], NULL);
    pthread_mutex_destroy(&pool->lock);
    pthread_cond_destroy(&pool->wake);
    pthread_cond_destroy(&pool->done);
    free(pool->workers);
    free(pool->cpus);
    free(pool);
}
