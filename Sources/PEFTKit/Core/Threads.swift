import COpenBLAS
#if canImport(Glibc)
import Glibc
#endif
import Dispatch
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

/// The number of threads currently used.
public func numThreads() -> Int {
    _ = blasSingleThreaded
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
/// Inside a chunk (a loop's body, or a product split by `sgemm` within one) a nested `parallelFor` runs inline:
/// the pool is already busy, and more tasks would only oversubscribe the cores.
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
        nonisolated(unsafe) let f = b
        DispatchQueue.concurrentPerform(iterations: chunks) { c in
            let s = count * c / chunks
            let e = count * (c + 1) / chunks
            guard s < e else { return }
            let outer = pthread_getspecific(parallelChunkKey)
            pthread_setspecific(parallelChunkKey, parallelChunkMarker)
            f(s, e)
            pthread_setspecific(parallelChunkKey, outer)
        }
    }
}

/// Whether this thread runs a chunk of a `parallelFor`.
var insideParallelChunk: Bool { pthread_getspecific(parallelChunkKey) != nil }

private let parallelChunkKey: pthread_key_t = {
    var key = pthread_key_t()
    pthread_key_create(&key, nil)
    return key
}()
nonisolated(unsafe) private let parallelChunkMarker = UnsafeRawPointer(bitPattern: 1)
