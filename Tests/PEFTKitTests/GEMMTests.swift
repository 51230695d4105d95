import Testing
@testable import PEFTKit

/// `sgemm` splits a product across PEFTKit's pool. Every element is still one dot product over the whole of k, but
/// OpenBLAS picks its kernel by the size of the call (a small-matrix path for some transposes), so a split can
/// move the last bit: the split equals one call to rounding, is the same on every run at one thread count, and
/// both equal the naive triple loop to rounding.
@Suite(.serialized) struct GEMMTests {
    struct Case: CustomStringConvertible {
        let m, n, k: Int
        let transA, transB: Bool
        let beta: Float
        var description: String { "\(m)x\(n)x\(k) tA \(transA) tB \(transB) beta \(beta)" }
    }

    // Tall (split by rows) and wide (split by columns) shapes, sizes that are not multiples of 16.
    static func uniform(_ n: Int, seed: UInt64) -> [Float] {
        var r = Rng(seed: seed)
        return (0..<n).map { _ in 2 * r.nextFloat() - 1 }
    }

    static let cases: [Case] = [(300, 70, 129), (45, 333, 200)].flatMap { (m, n, k) in
        [false, true].flatMap { ta in [false, true].flatMap { tb in [Float(0), 1].map { Case(m: m, n: n, k: k, transA: ta, transB: tb, beta: $0) } } }
    }

    /// C = op(A)·op(B) + beta·C with leading dimensions 3 larger than the matrices (sub-matrix views).
    static func run(_ c: Case, threads: Int) -> [Float] {
        let (m, n, k) = (c.m, c.n, c.k)
        let (ar, ac) = c.transA ? (k, m) : (m, k), (br, bc) = c.transB ? (n, k) : (k, n)
        let lda = ac + 3, ldb = bc + 3, ldc = n + 3
        let a = GEMMTests.uniform(ar * lda, seed: 1), b = GEMMTests.uniform(br * ldb, seed: 2)
        var out = GEMMTests.uniform(m * ldc, seed: 3)
        setNumThreads(threads)
        defer { setNumThreads(0) }
        a.withUnsafeBufferPointer { pa in
            b.withUnsafeBufferPointer { pb in
                out.withUnsafeMutableBufferPointer { pc in
                    sgemm(transA: c.transA, transB: c.transB, m: m, n: n, k: k, alpha: 0.5, a: pa.baseAddress!, lda: lda,
                          b: pb.baseAddress!, ldb: ldb, beta: c.beta, c: pc.baseAddress!, ldc: ldc)
                }
            }
        }
        return out
    }

    @Test(arguments: cases)
    func splitEqualsOneCall(_ c: Case) {
        let one = GEMMTests.run(c, threads: 1), split = GEMMTests.run(c, threads: 4)
        #expect(GEMMTests.run(c, threads: 4).map(\.bitPattern) == split.map(\.bitPattern), "deterministic")
        #expect(TS.maxAbsDiff(one, split) <= 1e-5, "split against one call")
        // And both are the product: the naive loop in Double.
        let (m, n, k) = (c.m, c.n, c.k)
        let (ac, bc) = (c.transA ? m : k, c.transB ? k : n)
        let lda = ac + 3, ldb = bc + 3, ldc = n + 3
        let a = GEMMTests.uniform((c.transA ? k : m) * lda, seed: 1), b = GEMMTests.uniform((c.transB ? n : k) * ldb, seed: 2)
        let c0 = GEMMTests.uniform(m * ldc, seed: 3)
        var worst = 0.0
        for i in 0..<m {
            for j in 0..<n {
                var s = 0.0
                for p in 0..<k {
                    let x = c.transA ? a[p * lda + i] : a[i * lda + p]
                    let y = c.transB ? b[j * ldb + p] : b[p * ldb + j]
                    s += Double(x) * Double(y)
                }
                let want = 0.5 * s + Double(c.beta) * Double(c0[i * ldc + j])
                worst = max(worst, abs(want - Double(split[i * ldc + j])))
            }
            // The padding columns of C are untouched.
            for j in n..<ldc { #expect(split[i * ldc + j] == c0[i * ldc + j]) }
        }
        #expect(worst < 1e-4, "max |error| \(worst)")
    }
}
