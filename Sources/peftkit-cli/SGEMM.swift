import COpenBLAS
import PEFTKit

/// Measures OpenBLAS `sgemm` throughput for C[m,n] = A[m,k]·B[k,n] with the current thread setting.
/// Returns the best GFLOP/s over `iterations` runs (after one warm-up).
func measureSGEMM(m: Int = 1024, n: Int = 768, k: Int = 768, iterations: Int = 10) throws -> Double {
    var rng = Rng(seed: 1)
    let a = (0..<(m * k)).map { _ in rng.normal() }, b = (0..<(k * n)).map { _ in rng.normal() }
    var c = [Float](repeating: 0, count: m * n)
    // OpenBLAS's own threading is the reference: PEFTKit keeps OpenBLAS single-threaded and splits products over
    // its own pool, so the reference run lends OpenBLAS the same number of threads for its duration.
    _ = numThreads()
    openblas_set_num_threads(Int32(numThreads()))
    defer { openblas_set_num_threads(1) }
    let clock = ContinuousClock()
    var best = Double.infinity
    for i in 0...max(1, iterations) {
        let t0 = clock.now
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(m), Int32(n), Int32(k), 1, a, Int32(k),
                    b, Int32(n), 0, &c, Int32(n))
        let dt = (clock.now - t0).seconds
        if i > 0 { best = min(best, dt) }
    }
    return 2 * Double(m) * Double(n) * Double(k) / best / 1e9
}
