import Testing
import Foundation
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

    static func uniform(_ n: Int, seed: UInt64) -> [Float] {
        var r = Rng(seed: seed)
        return (0..<n).map { _ in 2 * r.nextFloat() - 1 }
    }

    // One-row products (decode: sgemv per chunk), with k = 0 (C = beta·C) as the edge.
    // Tall (split by rows) and wide (split by columns) shapes, sizes that are not multiples of 16.
    static let cases: [Case] = [(300, 70, 129), (45, 333, 200), (1, 3001, 700), (1, 40, 0)].flatMap { (m, n, k) in
        [false, true].flatMap { ta in [false, true].flatMap { tb in [Float(0), 1].map { Case(m: m, n: n, k: k, transA: ta, transB: tb, beta: $0) } } }
    }

    /// C = op(A)·op(B) + beta·C with leading dimensions 3 larger than the matrices (sub-matrix views).
    static func run(_ c: Case, threads: Int) -> [Float] {
        let (m, n, k) = (c.m, c.n, c.k)
        let (ar, ac) = c.transA ? (k, m) : (m, k), (br, bc) = c.transB ? (n, k) : (k, n)
        let lda = ac + 3, ldb = bc + 3, ldc = n + 3
        let a = GEMMTests.uniform(ar * lda, seed: 1), b = GEMMTests.uniform(br * ldb, seed: 2)
        var out = GEMMTests.uniform(m * ldc, seed: 3)
        withThreads(threads) {
        a.withUnsafeBufferPointer { pa in
            b.withUnsafeBufferPointer { pb in
                out.withUnsafeMutableBufferPointer { pc in
                    sgemm(transA: c.transA, transB: c.transB, m: m, n: n, k: k, alpha: 0.5, a: pa.baseAddress!, lda: lda,
                          b: pb.baseAddress!, ldb: ldb, beta: c.beta, c: pc.baseAddress!, ldc: ldc)
                }
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

/// Two models trained at the same time on two host threads share PEFTKit's pool and give bit for bit what each
/// gives alone: no call changes process-wide state (the OpenBLAS thread count) under the other.
@Suite struct ConcurrentModelsTests {
    static func train(_ seed: UInt64) throws -> [UInt32] {
        let cfg = ModelConfig(architecture: .llama, vocabSize: 256, hiddenSize: 128, numLayers: 2, numHeads: 4,
                              numKVHeads: 2, intermediateSize: 256, maxPositions: 64, ropeTheta: 10000,
                              tieWordEmbeddings: false)
        let m = try Model.create(config: cfg, seed: seed)
        try m.attachAdapter(name: "a", config: LoRAConfig())
        try m.setActiveAdapter("a")
        let ids = TS.ids(4 * 64, vocab: 256, seed: seed)
        var tc = TrainConfig(); tc.learningRate = 1e-2
        for _ in 0..<3 { _ = try m.trainStep(inputIDs: ids, batch: 4, seqLen: 64, config: tc) }
        return try m.withTrainableParameters { $0.map(\.bitPattern) }
    }

    @Test func twoModelsOnTwoThreadsEqualEachAlone() throws {
        let alone = [try ConcurrentModelsTests.train(1), try ConcurrentModelsTests.train(2)]
        nonisolated(unsafe) var together: [[UInt32]] = [[], []]
        nonisolated(unsafe) var failures: [String] = []
        let lock = NSLock()
        let threads = (0..<2).map { i in
            Thread {
                do {
                    let r = try ConcurrentModelsTests.train(UInt64(i + 1))
                    lock.lock(); together[i] = r; lock.unlock()
                } catch {
                    lock.lock(); failures.append("\(error)"); lock.unlock()
                }
            }
        }
        for t in threads { t.start() }
        while threads.contains(where: { !$0.isFinished }) { usleep(1000) }
        #expect(failures.isEmpty, "\(failures)")
        #expect(together[0] == alone[0] && together[1] == alone[1], "bit-identical to each model alone")
    }
}

/// The pool under `parallelFor`: every index of every job runs exactly once, with jobs posted back to back from two
/// host threads at once (one gets the pool, the other runs inline) and with nested loops (inline inside a chunk).
@Suite struct PoolTests {
    @Test func everyIndexOnceUnderConcurrencyAndNesting() async {
        let counts = await withTaskGroup(of: [Int].self) { group in
            for _ in 0..<2 {
                group.addTask {
                    let n = 257
                    let hits = UnsafeMutablePointer<Int>.allocate(capacity: n)
                    hits.initialize(repeating: 0, count: n)
                    defer { hits.deallocate() }
                    nonisolated(unsafe) let h = hits
                    for job in 0..<3000 { withThreads(4) {
                        parallelFor(n) { s, e in
                            for i in s..<e { h[i] += 1 }
                            if job % 500 == 0 {
                                // A nested loop runs inline on this chunk's thread: its own indices, once each.
                                var inner = 0
                                parallelFor(e - s) { s2, e2 in inner += e2 - s2 }
                                h[s] += inner - (e - s)
                            }
                        }
                    } }
                    return Array(UnsafeBufferPointer(start: hits, count: n))
                }
            }
            var all: [[Int]] = []
            for await c in group { all.append(c) }
            return all
        }
        #expect(counts.count == 2)
        for c in counts { #expect(c.allSatisfy { $0 == 3000 }, "hits per index: \(Set(c))") }
    }
}
