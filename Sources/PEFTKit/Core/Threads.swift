import COpenBLAS
#if canImport(Glibc)
import Glibc
#endif
import Dispatch
import Synchronization

/// Process-wide thread count used by OpenBLAS and by PEFTKit's own parallel loops.
private let threadCountState = Atomic<Int>(0)

/// Sets the number of threads for matrix multiplications (OpenBLAS) and PEFTKit's own loops.
/// `n <= 0` restores the default (the number of online cores).
public func setNumThreads(_ n: Int) {
    let cores = onlineCores()
    let v = n <= 0 ? cores : min(n, 1024)
    threadCountState.store(v, ordering: .relaxed)
    openblas_set_num_threads(Int32(v))
}

/// The number of threads currently used.
public func numThreads() -> Int {
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
@inline(__always)
func parallelFor(_ count: Int, grain: Int = 1, _ body: (Int, Int) -> Void) {
    if count <= 0 { return }
    let t = numThreads()
    let chunks = min(t, max(1, count / max(1, grain)))
    if chunks <= 1 {
        body(0, count)
        return
    }
    withoutActuallyEscaping(body) { b in
        nonisolated(unsafe) let f = b
        DispatchQueue.concurrentPerform(iterations: chunks) { c in
            let s = count * c / chunks
            let e = count * (c + 1) / chunks
            if s < e { f(s, e) }
        }
    }
}
