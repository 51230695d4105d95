import COpenBLAS
#if canImport(Glibc)
import Glibc
#endif
import CPEFTKitKernels
import Synchronization

/// Process-wide thread count used by OpenBLAS and by PEFTKit's own parallel loops.
private let threadCountState = Atomic<Int>(0)

/// Sets the number of threads of PEFTKit's pool, which runs its loops and splits its matrix products (OpenBLAS
/// itself stays single-threaded: see `sgemm`). `n <= 0` restores the default (the number of online cores).
/// A call in progress keeps the count it started each loop with; the next loop uses the new one.
public func setNumThreads(_ n: Int) {
    let cores = onlineCores()
    let v = n <= 0 ? cores : min(n, 1024)
    threadCountState.store(v, ordering: .relaxed)
}

/// OpenBLAS single-threaded, once per process, before PEFTKit's first loop or product: PEFTKit's pool splits the
/// products instead (`sgemm`). This is the one change PEFTKit makes to process-wide OpenBLAS state.
let blasSingleThreaded: Void = { openblas_set_num_threads(1) }()

/// Runs `body` with the calling thread's loops and products split for `n` threads (the pool's size for this
/// thread only; other threads keep the process-wide count of `setNumThreads`). `n <= 0`: the process-wide count.
/// Tests compare thread counts with it while other tests run beside them.
func withThreads<R>(_ n: Int, _ body: () throws -> R) rethrows -> R {
    let outer = pthread_getspecific(localThreadsKey)
    pthread_setspecific(localThreadsKey, n > 0 ? UnsafeRawPointer(bitPattern: min(n, 1024)) : nil)
    defer { pthread_setspecific(localThreadsKey, outer) }
    return try body()
}

private let localThreadsKey: pthread_key_t = {
    var key = pthread_key_t()
    pthread_key_create(&key, nil)
    return key
}()

/// The number of threads currently used (by this thread's loops: see `withThreads`).
public func numThreads() -> Int {
    _ = blasSingleThreaded
    if let local = pthread_getspecific(localThreadsKey) { return Int(bitPattern: local) }
    let v = threadCountState.load(ordering: .relaxed)
    if v > 0 { return v }
    let c = onlineCores()
    threadCountState.store(c, ordering: .relaxed)
    return c
}

func onlineCores() -> Int {
    #if canImport(Glibc)
    let n = Int(sysconf(Int32(_SC_NPROCESSORS_ONLN)))
    return max(1, n)
    #else
    return 1
    #endif
}

/// Runs `body(start, end)` over `0..<count` split into contiguous chunks, in parallel when worthwhile.
/// `grain` is the minimum work items per chunk.
///
/// The chunks run on PEFTKit's one pool (`pk_pool_run` in CPEFTKitKernels/pool.c): the calling thread and up to
/// `numThreads() - 1` workers that poll briefly for the next job before they sleep, so the hundreds of small
/// products of a decoded token are handed out without a wake-up each. Chunk boundaries depend only on `count`,
/// `grain` and the thread count, never on which thread runs a chunk. Inside a chunk (a loop's body, or a product
/// split by `sgemm`), or while another host thread holds the pool, a nested `parallelFor` runs its chunks inline.
@inline(__always)
func parallelFor(_ count: Int, grain: Int = 1, _ body: (Int, Int) -> Void) {
    if count <= 0 { return }
    let t = numThreads()
    let chunks = min(t, max(1, count / max(1, grain)))
    if chunks <= 1 || insideParallelChunk {
        body(0, count)
        return
    }
    withoutActuallyEscaping(body) { b in
        var job = PoolJob(count: count, chunks: chunks, body: b)
        withUnsafeMutablePointer(to: &job) { p in
            pk_pool_run(Int64(chunks), Int32(t), { ctx, i in
                let job = ctx.unsafelyUnwrapped.assumingMemoryBound(to: PoolJob.self)
                let c = Int(i), n = job.pointee.count, k = job.pointee.chunks
                let s = n * c / k, e = n * (c + 1) / k
                if s < e { job.pointee.body(s, e) }
            }, p)
        }
    }
}

/// One `parallelFor` as the pool's C callback sees it.
private struct PoolJob {
    let count: Int
    let chunks: Int
    let body: (Int, Int) -> Void
}

/// Whether this thread runs a chunk of a `parallelFor`.
var insideParallelChunk: Bool { pk_pool_inside() != 0 }

/// Runs `body(i)` for every i in 0..<pieces on the pool: the calling thread and up to `threads - 1` workers
/// (`threads` at most `numThreads()`), each taking the next unclaimed piece when it is free. For work cut into more pieces than threads (a decode
/// product: up to 16 pieces per thread), so a thread that starts late (a worker still waking up, or descheduled by
/// another process) takes fewer pieces instead of keeping the others waiting. What piece i computes never depends
/// on which thread runs it. Inside a chunk, or while another host thread holds the pool, the pieces run inline.
func parallelPieces(_ pieces: Int, threads: Int, _ body: (Int) -> Void) {
    if pieces <= 0 { return }
    let t = min(threads, numThreads())
    if pieces == 1 || t <= 1 || insideParallelChunk {
        for i in 0..<pieces { body(i) }
        return
    }
    withoutActuallyEscaping(body) { b in
        var job = PieceJob(body: b)
        withUnsafeMutablePointer(to: &job) { p in
            pk_pool_run(Int64(pieces), Int32(t), { ctx, i in
                ctx.unsafelyUnwrapped.assumingMemoryBound(to: PieceJob.self).pointee.body(Int(i))
            }, p)
        }
    }
}

/// One `parallelPieces` as the pool's C callback sees it.
private struct PieceJob {
    let body: (Int) -> Void
}
