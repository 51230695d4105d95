import COpenBLAS

/// Measures OpenBLAS `sgemm` throughput for C[m,n] = A[m,k]·B[k,n] with the current thread setting.
/// Returns the best GFLOP/s over `iterations` runs (after one warm-up).
public func measureSGEMM(m: Int = 1024, n: Int = 768, k: Int = 768, iterations: Int = 10) throws -> Double {
    let a = try Tensor(zeros: [m, k]), b = try Tensor(zeros: [k, n]), c = try Tensor(zeros: [m, n])
    var rng = Rng(seed: 1)
    fillNormal(a.data, a.count, std: 1, rng: &rng)
    fillNormal(b.data, b.count, std: 1, rng: &rng)
    let clock = ContinuousClock()
    var best = Double.infinity
    for i in 0...max(1, iterations) {
        let t0 = clock.now
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(m), Int32(n), Int32(k), 1, a.data, Int32(k),
                    b.data, Int32(n), 0, c.data, Int32(n))
        let dt = (clock.now - t0).seconds
        if i > 0 { best = min(best, dt) }
    }
    return 2 * Double(m) * Double(n) * Double(k) / best / 1e9
}

extension Duration {
    /// The duration in seconds as a Double.
    public var seconds: Double {
        let c = components
        return Double(c.seconds) + Double(c.attoseconds) * 1e-18
    }
}
