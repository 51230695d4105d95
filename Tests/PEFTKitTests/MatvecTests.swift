import CPEFTKitKernels
import Testing
@testable import PEFTKit

// PEFTKit's fp32 matrix-vector kernels (Sources/CPEFTKitKernels/matvec.c), every instruction-set path this CPU
// runs, against a Double-precision reference. What the tests state:
//   - each output is within (k + 8)·2⁻²⁴·(|alpha|·Σ|w·x| + |beta·y|) of the exact value (a float sum of k
//     products, any order), with beta == 0 not reading y (a NaN there is overwritten);
//   - an output is bitwise the same whatever range of outputs a call computes (so whatever the thread split),
//     and `sgemm` with one row gives bitwise the same for 1, 2 and 3 threads;
//   - the column kernel adds each output's products in the order of l: AVX2 and AVX-512 (both fused) agree
//     bitwise.
@Suite struct MatvecTests {
    struct Case: CustomStringConvertible, Sendable {
        let n, k: Int
        let alpha, beta: Float
        var description: String { "n \(n) k \(k) alpha \(alpha) beta \(beta)" }
    }

    // Odd sizes: k not a multiple of 16 or 8, n = 1, k = 0, n past the column kernel's 4096-column tile.
    static let shapes: [(Int, Int)] = [(1, 0), (5, 0), (1, 1), (1, 37), (3, 7), (4, 8), (7, 16), (9, 31), (17, 33),
                                       (64, 100), (5, 577), (1100, 19), (4100, 5)]
    static let cases: [Case] = shapes.flatMap { (n, k) in
        [(Float(1), Float(0)), (0.5, 1), (-2, 0.25)].map { Case(n: n, k: k, alpha: $0.0, beta: $0.1) }
    }

    static func uniform(_ n: Int, seed: UInt64) -> [Float] {
        var r = Rng(seed: seed)
        return (0..<n).map { _ in 2 * r.nextFloat() - 1 }
    }

    /// y for outputs [o0, o1) of a [rows, ld] matrix against x: `rows` layout when `byRows`, columns otherwise.
    static func run(_ isa: ElementwiseISA, byRows: Bool, w: [Float], ld: Int, x: [Float], k: Int, alpha: Float,
                    beta: Float, y: inout [Float], ranges: [(Int, Int)]) {
        w.withUnsafeBufferPointer { pw in
            x.withUnsafeBufferPointer { px in
                y.withUnsafeMutableBufferPointer { py in
                    for (o0, o1) in ranges {
                        if byRows {
                            pk_f32mv_rows(isa.rawValue, pw.baseAddress!, Int64(ld), px.baseAddress!, Int64(k), alpha,
                                           beta, py.baseAddress!, Int64(o0), Int64(o1))
                        } else {
                            pk_f32mv_cols(isa.rawValue, pw.baseAddress!, Int64(ld), px.baseAddress!, Int64(k), alpha,
                                           beta, py.baseAddress!, Int64(o0), Int64(o1))
                        }
                    }
                }
            }
        }
    }

    static let pathsAndLayouts: [(ElementwiseISA, Bool)] = ElementwiseISA.available.flatMap { isa in [(isa, true), (isa, false)] }

    @Test(arguments: pathsAndLayouts)
    func againstDoubleReference(_ isa: ElementwiseISA, _ byRows: Bool) {
        for c in Self.cases {
            let (n, k) = (c.n, c.k)
            // Rows: W is [n, k] with row stride k + 3. Columns: B is [k, n] with row stride n + 5. Both padded
            // with huge values the kernels must not read.
            let ld = byRows ? k + 3 : n + 5, rows = byRows ? n : k, cols = byRows ? k : n
            var w = Self.uniform(max(1, rows * ld), seed: UInt64(7 * n + k))
            for r in 0..<rows { for j in cols..<ld { w[r * ld + j] = 1e30 } }
            let x = Self.uniform(max(1, k), seed: 99)
            let y0 = c.beta == 0 ? [Float](repeating: .nan, count: n + 1) : Self.uniform(n + 1, seed: 5)
            var y = y0
            Self.run(isa, byRows: byRows, w: w, ld: ld, x: x, k: k, alpha: c.alpha, beta: c.beta, y: &y,
                     ranges: [(0, n)])
            var worst = 0.0
            for o in 0..<n {
                var s = 0.0, mag = 0.0
                for l in 0..<k {
                    let wv = Double(byRows ? w[o * ld + l] : w[l * ld + o])
                    s += wv * Double(x[l])
                    mag += abs(wv * Double(x[l]))
                }
                let prior = c.beta == 0 ? 0 : Double(c.beta) * Double(y0[o])
                let want = Double(c.alpha) * s + prior
                let bound = Double(k + 8) * 0x1p-24 * (abs(Double(c.alpha)) * mag + abs(prior)) + 1e-30
                let err = abs(Double(y[o]) - want)
                #expect(y[o].isFinite, "\(isa) rows \(byRows) \(c): y[\(o)] = \(y[o])")
                worst = max(worst, err / bound)
            }
            #expect(worst <= 1, "\(isa) rows \(byRows) \(c): error / bound \(worst)")
            // The output past n is untouched.
            #expect(y[n].bitPattern == y0[n].bitPattern)
        }
    }

    @Test(arguments: pathsAndLayouts)
    func rangesDoNotChangeResults(_ isa: ElementwiseISA, _ byRows: Bool) {
        for (n, k) in [(37, 45), (4100, 19), (130, 577)] {
            let ld = byRows ? k : n
            let w = Self.uniform((byRows ? n : k) * ld, seed: 3), x = Self.uniform(k, seed: 4)
            var whole = Self.uniform(n, seed: 6), pieces = whole
            Self.run(isa, byRows: byRows, w: w, ld: ld, x: x, k: k, alpha: 1, beta: 1, y: &whole, ranges: [(0, n)])
            // Uneven pieces, some of them not multiples of the row group (4) or the lanes.
            let cuts = [0, 1, 6, n / 2, n / 2 + 7, n - 3, n]
            Self.run(isa, byRows: byRows, w: w, ld: ld, x: x, k: k, alpha: 1, beta: 1, y: &pieces,
                     ranges: zip(cuts, cuts.dropFirst()).map { ($0, $1) })
            #expect(whole.map(\.bitPattern) == pieces.map(\.bitPattern), "\(isa) rows \(byRows) n \(n) k \(k)")
        }
    }

    @Test func fusedColumnPathsAgree() {
        let paths = ElementwiseISA.available.filter { $0 != .scalar }
        guard paths.count > 1 else { return }
        let (n, k) = (1100, 333)
        let w = Self.uniform(n * k, seed: 8), x = Self.uniform(k, seed: 9)
        let results: [[UInt32]] = paths.map { isa in
            var y = [Float](repeating: 0, count: n)
            Self.run(isa, byRows: false, w: w, ld: n, x: x, k: k, alpha: 1, beta: 0, y: &y, ranges: [(0, n)])
            return y.map(\.bitPattern)
        }
        for r in results.dropFirst() { #expect(r == results[0]) }
    }

    /// `sgemm` with one row routes to these kernels, split over the pool: bitwise the same for any thread count,
    /// in both layouts of B (GPT-2's [k, n] Conv1D and nn.Linear's [n, k]).
    @Test(arguments: [false, true])
    func sgemmOneRowIndependentOfThreads(_ transB: Bool) {
        let (n, k) = (3001, 700)
        let b = Self.uniform(n * k, seed: 11), a = Self.uniform(k, seed: 12)
        func product(_ t: Int) -> [UInt32] {
            var c = Self.uniform(n, seed: 13)
            withThreads(t) {
                a.withUnsafeBufferPointer { pa in
                    b.withUnsafeBufferPointer { pb in
                        c.withUnsafeMutableBufferPointer { pc in
                            sgemm(transA: false, transB: transB, m: 1, n: n, k: k, alpha: 1, a: pa.baseAddress!, lda: k,
                                  b: pb.baseAddress!, ldb: transB ? k : n, beta: 1, c: pc.baseAddress!, ldc: n)
                        }
                    }
                }
            }
            return c.map(\.bitPattern)
        }
        let one = product(1)
        #expect(product(2) == one)
        #expect(product(3) == one)
    }
}
