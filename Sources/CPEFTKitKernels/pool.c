// PEFTKit's one pool of worker threads: see include/peftkit_pool.h.
//
// One job at a time. The job is published through a single 64-bit ticket: generation (32 bits) | chunk count
// (16 bits) | next unclaimed chunk (16 bits). A thread claims chunk i by a compare-and-swap of the ticket from
// next = i to next = i + 1, so a thread that read the ticket of an older job can never claim a chunk of a newer
// one, and the job's function and context (written before the ticket) are those of the claimed chunk's job: that
// job cannot finish, and be replaced, before the claimed chunk has run.
#define _GNU_SOURCE
#include "peftkit_pool.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <time.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define PK_RELAX() _mm_pause()
#elif defined(__aarch64__)
#define PK_RELAX() __asm__ __volatile__("yield")
#else
#define PK_RELAX() ((void)0)
#endif

enum { PK_MAX_THREADS = 4096, PK_MAX_CHUNKS = 0xffff };

static struct {
    _Atomic uint64_t ticket;    // gen << 32 | chunks << 16 | next
    _Atomic int64_t done;       // chunks of the current job that have returned
    pk_pool_fn fn;              // the current job, written before its ticket
    void *ctx;
    int64_t base;               // index of the current job's chunk 0 (jobs above PK_MAX_CHUNKS run in rounds)
    _Atomic int workers_allowed; // workers 0..<workers_allowed take chunks of the current job
    _Atomic int busy;           // a host thread owns the pool
    _Atomic int sleepers;       // workers waiting on `cv`
    _Atomic int spin_us;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    pthread_mutex_t start_mu;
    int started;                // workers started (under start_mu)
    int spin_read;              // PEFTKIT_POOL_SPIN_US read (under start_mu)
} pool = {
    .spin_us = 100,
    .mu = PTHREAD_MUTEX_INITIALIZER,
    .cv = PTHREAD_COND_INITIALIZER,
    .start_mu = PTHREAD_MUTEX_INITIALIZER,
};

static _Thread_local int inside;

static inline uint32_t t_chunks(uint64_t t) { return (uint32_t)(t >> 16) & 0xffff; }
static inline uint32_t t_next(uint64_t t) { return (uint32_t)t & 0xffff; }

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

// Claims and runs chunks of the job whose ticket is `t` until none is left.
static void run_chunks(uint64_t t) {
    for (;;) {
        if (t_next(t) >= t_chunks(t)) return;
        if (atomic_compare_exchange_weak_explicit(&pool.ticket, &t, t + 1, memory_order_acq_rel,
                                                  memory_order_acquire)) {
            pool.fn(pool.ctx, pool.base + (int64_t)t_next(t));
            atomic_fetch_add_explicit(&pool.done, 1, memory_order_release);
            t = atomic_load_explicit(&pool.ticket, memory_order_acquire);
        }
        // On failure `t` holds the current ticket: of this job (another thread claimed), or of a later one.
    }
}

static void *worker_main(void *arg) {
    const int id = (int)(intptr_t)arg;
    inside = 1;
    uint64_t t = atomic_load_explicit(&pool.ticket, memory_order_acquire);
    for (;;) {
        if (id < atomic_load_explicit(&pool.workers_allowed, memory_order_acquire)) run_chunks(t);
        // Poll for the next job, then sleep until a new ticket is published.
        const uint64_t seen = atomic_load_explicit(&pool.ticket, memory_order_acquire);
        const int spin = id < atomic_load_explicit(&pool.workers_allowed, memory_order_relaxed)
                             ? atomic_load_explicit(&pool.spin_us, memory_order_relaxed) : 0;
        uint64_t cur = seen;
        if (spin > 0) {
            const int64_t deadline = now_ns() + (int64_t)spin * 1000;
            for (unsigned it = 1;; it++) {
                PK_RELAX();
                cur = atomic_load_explicit(&pool.ticket, memory_order_acquire);
                if (cur != seen) break;
                if ((it & 63) == 0 && now_ns() > deadline) break;
            }
        }
        if (cur == seen) {
            pthread_mutex_lock(&pool.mu);
            atomic_fetch_add_explicit(&pool.sleepers, 1, memory_order_seq_cst);
            while ((cur = atomic_load_explicit(&pool.ticket, memory_order_seq_cst)) == seen)
                pthread_cond_wait(&pool.cv, &pool.mu);
            atomic_fetch_sub_explicit(&pool.sleepers, 1, memory_order_relaxed);
            pthread_mutex_unlock(&pool.mu);
        }
        t = cur;
    }
    return NULL;
}

// Starts workers up to `want` (under start_mu); returns how many run.
static int ensure_workers(int want) {
    pthread_mutex_lock(&pool.start_mu);
    if (!pool.spin_read) {
        pool.spin_read = 1;
        const char *s = getenv("PEFTKIT_POOL_SPIN_US");
        if (s && *s) {
            long v = strtol(s, NULL, 10);
            if (v >= 0 && v <= 1000000) atomic_store(&pool.spin_us, (int)v);
        }
    }
    while (pool.started < want) {
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        pthread_t th;
        const int rc = pthread_create(&th, &attr, worker_main, (void *)(intptr_t)pool.started);
        pthread_attr_destroy(&attr);
        if (rc != 0) break;  // run with the workers there are
        pool.started++;
    }
    const int n = pool.started < want ? pool.started : want;
    pthread_mutex_unlock(&pool.start_mu);
    return n;
}

static void run_inline(int64_t n, pk_pool_fn fn, void *ctx) {
    const int outer = inside;
    inside = 1;
    for (int64_t i = 0; i < n; i++) fn(ctx, i);
    inside = outer;
}

void pk_pool_run(int64_t n, int threads, pk_pool_fn fn, void *ctx) {
    if (n <= 0) return;
    if (threads > PK_MAX_THREADS) threads = PK_MAX_THREADS;
    int expected = 0;
    if (n == 1 || threads <= 1 || inside ||
        !atomic_compare_exchange_strong_explicit(&pool.busy, &expected, 1, memory_order_acquire,
                                                 memory_order_relaxed)) {
        run_inline(n, fn, ctx);
        return;
    }
    const int workers = ensure_workers(threads - 1);
    inside = 1;
    for (int64_t base = 0; base < n; base += PK_MAX_CHUNKS) {
        const int64_t m = n - base < PK_MAX_CHUNKS ? n - base : PK_MAX_CHUNKS;
        pool.fn = fn;
        pool.ctx = ctx;
        pool.base = base;
        atomic_store_explicit(&pool.done, 0, memory_order_relaxed);
        atomic_store_explicit(&pool.workers_allowed, workers, memory_order_relaxed);
        const uint64_t old = atomic_load_explicit(&pool.ticket, memory_order_relaxed);
        const uint64_t t = ((old >> 32) + 1) << 32 | (uint64_t)m << 16;
        atomic_store_explicit(&pool.ticket, t, memory_order_seq_cst);
        if (atomic_load_explicit(&pool.sleepers, memory_order_seq_cst) > 0) {
            pthread_mutex_lock(&pool.mu);
            pthread_cond_broadcast(&pool.cv);
            pthread_mutex_unlock(&pool.mu);
        }
        run_chunks(t);
        for (unsigned it = 1; atomic_load_explicit(&pool.done, memory_order_acquire) < m; it++) {
            PK_RELAX();
            if ((it & 1023) == 0) sched_yield();  // a worker may have lost its core: let it run
        }
    }
    inside = 0;
    atomic_store_explicit(&pool.busy, 0, memory_order_release);
}

int pk_pool_inside(void) { return inside; }

void pk_pool_set_spin_us(int us) {
    pthread_mutex_lock(&pool.start_mu);
    pool.spin_read = 1;  // an explicit setting wins over the environment
    atomic_store(&pool.spin_us, us < 0 ? 0 : us > 1000000 ? 1000000 : us);
    pthread_mutex_unlock(&pool.start_mu);
}
