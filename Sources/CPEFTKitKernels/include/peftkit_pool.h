// PEFTKit's one pool of worker threads (internal; not part of the public C ABI in include/peftkit.h).
//
// pk_pool_run(n, fn, ctx) calls fn(ctx, i) once for every i in [0, n), on the calling thread and up to n - 1
// workers, and returns when all calls have returned. Workers that finish a job keep polling for the next one for
// a short while (a few tens of microseconds) before they sleep, so a chain of small jobs (decode: hundreds of
// matrix-vector products per token) costs a cache-line handoff per job, not a futex wake-up.
//
// Calls made while the pool runs another job (from inside a job, or from a second host thread) run all their
// chunks on the calling thread, in order: the cores are busy already. Which thread runs chunk i never changes
// what chunk i computes, so results do not depend on scheduling.
#ifndef PEFTKIT_POOL_H
#define PEFTKIT_POOL_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef void (*pk_pool_fn)(void *ctx, int64_t index);

/// Runs fn(ctx, i) for i in [0, n) on at most `threads` threads (the caller included). n and threads are
/// clamped to [1, 4096].
void pk_pool_run(int64_t n, int threads, pk_pool_fn fn, void *ctx);

/// Whether the calling thread is running a chunk of a pool job (there, a nested pk_pool_run runs inline).
int pk_pool_inside(void);

/// How long an idle worker polls for the next job before it sleeps, in microseconds (default 100; 0 = sleep at
/// once). Read from PEFTKIT_POOL_SPIN_US when the pool starts; settable for benchmarks.
void pk_pool_set_spin_us(int us);

#ifdef __cplusplus
}
#endif
#endif
