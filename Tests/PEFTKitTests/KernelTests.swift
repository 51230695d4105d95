import Testing
@testable import PEFTKit
#if canImport(Glibc)
import Glibc
#endif

// Tests of Sources/PEFTKit/Kernels: every backward against central finite differences of its forward,
// forwards against naive Double formulas, AdamW against an independent Double implementation, the
// accumulate (+=) convention, and bitwise independence from the thread count.

// MARK: - Helpers

/// A test-owned buffer of Floats, zeroed unless filled.
final class FBuf {
    let p: UnsafeMutablePointer<Float>
    let n: Int

    init(_ n: Int, value: Float = 0) {
        self.n = n
        p = .allocate(capacity: max(n, 1))
        p.initialize(repeating: value, count: max(n, 1))
    }

    convenience init(_ values: [Float]) {
        self.init(values.count)
        for (i, v) in values.enumerated() { p[i] = v }
    }

    /// Normal samples · scale + shift.
    static func random(_ n: Int, _ rng: inout Rng, scale: Float = 1, shift: Float = 0) -> FBuf {
        let b = FBuf(n)
        for i in 0..<n { b.p[i] = rng.normal() * scale + shift }
        return b
    }

    deinit { p.deallocate() }

    var array: [Float] { Array(UnsafeBufferPointer(start: p, count: n)) }
    func zero() { p.update(repeating: 0, count: n) }
    func clone() -> FBuf {
        let b = FBuf(n)
        b.p.update(from: p, count: n)
        return b
    }
    func load(_ other: FBuf) { p.update(from: other.p, count: min(n, other.n)) }
}

/// Σ a ⊙ b in Double.
func dot(_ a: FBuf, _ b: FBuf) -> Double {
    var s = 0.0
    for i in 0..<min(a.n, b.n) { s += Double(a.p[i]) * Double(b.p[i]) }
    return s
}

/// Largest |a - b| over the two buffers.
func maxAbsDiff(_ a: FBuf, _ b: FBuf) -> Double {
    var m = 0.0
    for i in 0..<min(a.n, b.n) { m = max(m, abs(Double(a.p[i]) - Double(b.p[i]))) }
    return m
}

func bitwiseEqual(_ a: FBuf, _ b: FBuf) -> Bool {
    guard a.n == b.n else { return false }
    for i in 0..<a.n where a.p[i].bitPattern != b.p[i].bitPattern { return false }
    return true
}

/// Checks `analytic` = d loss / d x by central differences: every element of `x` is moved by ±h, `loss`
/// re-runs the forward on the current contents of `x` and returns Σ out ⊙ r in Double. Prints the largest
/// differences and returns whether every element satisfies |a − n| ≤ atol + rtol · max(|a|, |n|).
func checkGrad(_ name: String, _ x: FBuf, _ analytic: FBuf, h: Float = 1e-2, atol: Double = 5e-4,
               rtol: Double = 5e-3, _ loss: () -> Double) -> Bool {
    precondition(x.n == analytic.n, "checkGrad: size mismatch")
    var maxAbs = 0.0, maxRel = 0.0, maxRatio = 0.0
    var ok = true
    for i in 0..<x.n {
        let x0 = x.p[i]
        let xp = x0 + h, xm = x0 - h
        x.p[i] = xp
        let lp = loss()
        x.p[i] = xm
        let lm = loss()
        x.p[i] = x0
        let numeric = (lp - lm) / (Double(xp) - Double(xm))
        let a = Double(analytic.p[i])
        let err = abs(a - numeric)
        let scale = max(abs(a), abs(numeric))
        maxAbs = max(maxAbs, err)
        if scale > 1e-6 { maxRel = max(maxRel, err / scale) }
        let allowed = atol + rtol * scale
        maxRatio = max(maxRatio, err / allowed)
        if err > allowed {
            ok = false
            print("  \(name)[\(i)]: analytic \(a) numeric \(numeric)")
        }
    }
    print("gradcheck \(name): n=\(x.n) max abs diff \(maxAbs), max rel diff \(maxRel), worst/allowed \(maxRatio)")
    _ = loss() // leave the forward outputs at the unperturbed point
    return ok
}

/// A vector away from relu's kink at 0 so that ±h never crosses it.
func awayFromZero(_ b: FBuf, _ margin: Float) {
    for i in 0..<b.n where abs(b.p[i]) < margin { b.p[i] = b.p[i] < 0 ? -margin - 0.1 : margin + 0.1 }
}

// MARK: - Tests

@Suite(.serialized) struct KernelTests {

    // MARK: Norms

    @Test func layerNormForwardMatchesNaive() {
        var rng = Rng(seed: 11)
        let N = 5, C = 33
        let x = FBuf.random(N * C, &rng, scale: 3, shift: 0.7)
        let w = FBuf.random(C, &rng, scale: 0.5, shift: 1)
        let b = FBuf.random(C, &rng)
        let out = FBuf(N * C), mean = FBuf(N), rstd = FBuf(N)
        let eps: Float = 1e-5
        layerNormForward(out.p, mean.p, rstd.p, x.p, w.p, b.p, N, C, eps)
        var maxErr = 0.0
        for r in 0..<N {
            var m = 0.0
            for i in 0..<C { m += Double(x.p[r * C + i]) }
            m /= Double(C)
            var v = 0.0
            for i in 0..<C { v += (Double(x.p[r * C + i]) - m) * (Double(x.p[r * C + i]) - m) }
            v /= Double(C)   // biased, as torch
            let rs = 1 / (v + Double(eps)).squareRoot()
            #expect(abs(Double(mean.p[r]) - m) <= 1e-6 * max(1, abs(m)))
            #expect(abs(Double(rstd.p[r]) - rs) <= 1e-6 * rs)
            for i in 0..<C {
                let y = (Double(x.p[r * C + i]) - m) * rs * Double(w.p[i]) + Double(b.p[i])
                maxErr = max(maxErr, abs(y - Double(out.p[r * C + i])) / max(1, abs(y)))
            }
        }
        print("layerNorm forward vs Double: max err \(maxErr)")
        #expect(maxErr < 2e-6)
        // In place (out == inp) gives the same values.
        let y2 = x.clone()
        layerNormForward(y2.p, mean.p, rstd.p, y2.p, w.p, b.p, N, C, eps)
        #expect(bitwiseEqual(y2, out))
    }

    @Test func layerNormGradients() {
        var rng = Rng(seed: 1)
        let N = 3, C = 10
        let x = FBuf.random(N * C, &rng, scale: 2, shift: 0.3)
        let w = FBuf.random(C, &rng, scale: 0.5, shift: 1)
        let b = FBuf.random(C, &rng)
        let r = FBuf.random(N * C, &rng)
        let out = FBuf(N * C), mean = FBuf(N), rstd = FBuf(N)
        func loss() -> Double {
            layerNormForward(out.p, mean.p, rstd.p, x.p, w.p, b.p, N, C, 1e-5)
            return dot(out, r)
        }
        _ = loss()
        let dx = FBuf(N * C), dw = FBuf(C), db = FBuf(C)
        layerNormBackward(dx.p, dw.p, db.p, r.p, x.p, w.p, mean.p, rstd.p, N, C)
        #expect(checkGrad("layerNorm dinp", x, dx, loss))
        #expect(checkGrad("layerNorm dweight", w, dw, loss))
        #expect(checkGrad("layerNorm dbias", b, db, loss))
        // Frozen weight and bias: dinp unchanged, nothing else touched.
        let dx2 = FBuf(N * C)
        layerNormBackward(dx2.p, nil, nil, r.p, x.p, w.p, mean.p, rstd.p, N, C)
        #expect(bitwiseEqual(dx, dx2))
    }

    @Test func rmsNormForwardMatchesNaive() {
        var rng = Rng(seed: 12)
        let N = 4, C = 40
        let x = FBuf.random(N * C, &rng, scale: 2)
        let w = FBuf.random(C, &rng, scale: 0.3, shift: 1)
        let out = FBuf(N * C), rstd = FBuf(N)
        let eps: Float = 1e-6
        rmsNormForward(out.p, rstd.p, x.p, w.p, N, C, eps)
        var maxErr = 0.0
        for r in 0..<N {
            var ms = 0.0
            for i in 0..<C { ms += Double(x.p[r * C + i]) * Double(x.p[r * C + i]) }
            let rs = 1 / (ms / Double(C) + Double(eps)).squareRoot()
            #expect(abs(Double(rstd.p[r]) - rs) <= 1e-6 * rs)
            for i in 0..<C {
                let y = Double(w.p[i]) * Double(x.p[r * C + i]) * rs
                maxErr = max(maxErr, abs(y - Double(out.p[r * C + i])) / max(1, abs(y)))
            }
        }
        print("rmsNorm forward vs Double: max err \(maxErr)")
        #expect(maxErr < 2e-6)
    }

    @Test func rmsNormGradients() {
        var rng = Rng(seed: 2)
        let N = 3, C = 12
        let x = FBuf.random(N * C, &rng, scale: 1.5, shift: 0.2)
        let w = FBuf.random(C, &rng, scale: 0.5, shift: 1)
        let r = FBuf.random(N * C, &rng)
        let out = FBuf(N * C), rstd = FBuf(N)
        func loss() -> Double {
            rmsNormForward(out.p, rstd.p, x.p, w.p, N, C, 1e-6)
            return dot(out, r)
        }
        _ = loss()
        let dx = FBuf(N * C), dw = FBuf(C)
        rmsNormBackward(dx.p, dw.p, r.p, x.p, w.p, rstd.p, N, C)
        #expect(checkGrad("rmsNorm dinp", x, dx, loss))
        #expect(checkGrad("rmsNorm dweight", w, dw, loss))
        let dx2 = FBuf(N * C)
        rmsNormBackward(dx2.p, nil, r.p, x.p, w.p, rstd.p, N, C)
        #expect(bitwiseEqual(dx, dx2))
    }

    // MARK: Activations

    /// The activation in Double, written independently of the kernels.
    static func reference(_ act: Activation, _ x: Double) -> Double {
        switch act {
        case .relu: return max(0, x)
        case .gelu: return 0.5 * x * (1 + erf(x / 2.0.squareRoot()))
        case .geluTanh: return 0.5 * x * (1 + tanh((2 / Double.pi).squareRoot() * (x + 0.044715 * x * x * x)))
        case .swish: return x / (1 + exp(-x))
        }
    }

    /// `vexp` against Double exp over the whole Float domain: at most 2 ulp off the correctly rounded value
    /// (subnormal results: 2 ulp of the smallest subnormal), and the special values.
    @Test func vectorExpAccuracy() {
        var worst = 0.0, worstX: Float = 0
        var rng = Rng(seed: 21)
        func check(_ xs: SIMD8<Float>) {
            let got = vexp(xs)
            for j in 0..<8 {
                let exact = exp(Double(xs[j]))
                let rounded = Float(exact)
                let err: Double
                if rounded.isFinite {
                    err = abs(Double(got[j]) - exact) / Double(max(rounded.ulp, Float.leastNonzeroMagnitude))
                } else {
                    err = got[j] == rounded ? 0 : .infinity   // overflow must give +inf
                }
                if !(err <= worst) { worst = err; worstX = xs[j] }
            }
        }
        // A dense sweep of [-104, 89] plus random points, and every Float in [-1, 1] near zero's neighbourhood.
        var x: Float = -104
        while x < 89 {
            var v = SIMD8<Float>()
            for j in 0..<8 { v[j] = x; x += 1.0 / 4096 }
            check(v)
        }
        for _ in 0..<200_000 {
            var v = SIMD8<Float>()
            for j in 0..<8 { v[j] = rng.nextFloat() * 193 - 104 }
            check(v)
        }
        print("vexp: max error \(worst) ulp at x = \(worstX)")
        #expect(worst <= 2)

        let special = vexp(SIMD8<Float>(0, -.infinity, .infinity, .nan, 88.72283, 88.7229, -87.5, -200))
        #expect(special[0] == 1)
        #expect(special[1] == 0)
        #expect(special[2] == .infinity)
        #expect(special[3].isNaN)
        #expect(special[4].isFinite && special[4] > 3.4e38)
        #expect(special[5] == .infinity)
        #expect(special[6] > 0 && special[6] < Float.leastNormalMagnitude)   // subnormal result
        #expect(special[7] == 0)
    }

    @Test(arguments: Activation.allCases) func activationForwardMatchesNaive(_ act: Activation) {
        var rng = Rng(seed: 3)
        let n = 200
        let x = FBuf.random(n, &rng, scale: 4)
        x.p[0] = 0; x.p[1] = -30; x.p[2] = 30; x.p[3] = 1e-4
        let out = FBuf(n)
        activationForward(act, out.p, x.p, n)
        // Error relative to max(1, |y|): for x ≈ −4, 1 + erf(x/√2) cancels in float32 (torch computes the same
        // expression), so small outputs carry an absolute error of ~1e-7, not a relative one.
        var maxErr = 0.0
        for i in 0..<n {
            let y = KernelTests.reference(act, Double(x.p[i]))
            maxErr = max(maxErr, abs(y - Double(out.p[i])) / max(1, abs(y)))
        }
        print("\(act) forward vs Double: max err \(maxErr)")
        #expect(maxErr < 1e-6)
        // In place.
        let y = x.clone()
        activationForward(act, y.p, y.p, n)
        #expect(bitwiseEqual(y, out))
        // NaN propagates (never hidden as a finite value).
        let nan = FBuf([.nan, 1, -1])
        activationForward(act, nan.p, nan.p, 3)
        #expect(nan.p[0].isNaN)
    }

    @Test(arguments: Activation.allCases) func activationGradients(_ act: Activation) {
        var rng = Rng(seed: 4)
        let n = 64
        let x = FBuf.random(n, &rng, scale: 2.5)
        if act == .relu { awayFromZero(x, 0.05) }
        let r = FBuf.random(n, &rng)
        let out = FBuf(n)
        func loss() -> Double {
            activationForward(act, out.p, x.p, n)
            return dot(out, r)
        }
        let dx = FBuf(n)
        activationBackward(act, dx.p, x.p, r.p, n)
        #expect(checkGrad("\(act) dinp", x, dx, loss))
    }

    @Test func swigluGradients() {
        var rng = Rng(seed: 5)
        let n = 48
        let g = FBuf.random(n, &rng, scale: 2.5)
        let u = FBuf.random(n, &rng, scale: 1.5)
        let r = FBuf.random(n, &rng)
        let out = FBuf(n)
        func loss() -> Double {
            swigluForward(out.p, g.p, u.p, n)
            return dot(out, r)
        }
        _ = loss()
        var maxErr = 0.0
        for i in 0..<n {
            let y = KernelTests.reference(.swish, Double(g.p[i])) * Double(u.p[i])
            maxErr = max(maxErr, abs(y - Double(out.p[i])) / max(1, abs(y)))
        }
        #expect(maxErr < 1e-6)
        let dg = FBuf(n), du = FBuf(n)
        swigluBackward(dg.p, du.p, r.p, g.p, u.p, n)
        #expect(checkGrad("swiglu dgate", g, dg, loss))
        #expect(checkGrad("swiglu dup", u, du, loss))
    }

    // MARK: RoPE

    @Test func ropeTableValues() throws {
        let table = try RopeTable(theta: 10000, headDim: 8, maxPositions: 16)
        // inv_freq = 1 / 10000^(2i/8) = 1, 0.1, 0.01, 0.001.
        let expectedInv: [Float] = [1, 0.1, 0.01, 0.001]
        for i in 0..<4 {
            #expect(abs(table.invFreq[i] - expectedInv[i]) <= expectedInv[i].ulp, "inv_freq[\(i)] = \(table.invFreq[i])")
        }
        // angle = pos * inv_freq; cos(5 * 0.1) = cos(0.5), sin(7 * 0.01) = sin(0.07), pos 3 with inv 1.
        #expect(abs(Double(table.cos[5 * 4 + 1]) - 0.8775825618903728) < 2e-7)
        #expect(abs(Double(table.sin[5 * 4 + 1]) - 0.479425538604203) < 2e-7)
        #expect(abs(Double(table.sin[7 * 4 + 2]) - 0.06994284733753277) < 2e-8)
        #expect(abs(Double(table.cos[3 * 4 + 0]) - (-0.9899924966004454)) < 2e-7)
        #expect(table.cos[0] == 1 && table.sin[0] == 0)

        // One head of [1 ... 8] at position 3, rotated by hand in Double.
        let x = FBuf((1...8).map { Float($0) })
        ropeForward(x.p, table, rows: 1, seqLen: 1, posOffset: 3, numHeads: 1, headDim: 8, rowStride: 8)
        let f: [Double] = [1, 0.1, 0.01, 0.001]
        for i in 0..<4 {
            let a = Double(i + 1), b = Double(i + 5)
            let c = cos(3 * f[i]), s = sin(3 * f[i])
            #expect(abs(Double(x.p[i]) - (a * c - b * s)) < 1e-5)
            #expect(abs(Double(x.p[i + 4]) - (b * c + a * s)) < 1e-5)
        }

        #expect(throws: PEFTKitError.self) { try RopeTable(theta: 10000, headDim: 7, maxPositions: 4) }
        #expect(throws: PEFTKitError.self) { try RopeTable(theta: 10000, headDim: 0, maxPositions: 4) }
        #expect(throws: PEFTKitError.self) { try RopeTable(theta: 10000, headDim: 8, maxPositions: 0) }
        #expect(throws: PEFTKitError.self) { try RopeTable(theta: -1, headDim: 8, maxPositions: 4) }
        #expect(throws: PEFTKitError.self) { try RopeTable(theta: .nan, headDim: 8, maxPositions: 4) }
    }

    /// The table grows on demand to the same values it would have had built at once, and a config allowing
    /// 2^20 positions of head_dim 1024 (a 4 GB table) costs only what is used.
    @Test func ropeTableGrowsLazily() throws {
        let full = try RopeTable(theta: 500000, headDim: 64, maxPositions: 300, initialCapacity: 300)
        let lazy = try RopeTable(theta: 500000, headDim: 64, maxPositions: 300, initialCapacity: 3)
        #expect(lazy.capacity == 3)
        for n in [2, 10, 11, 200, 300] { try lazy.reserve(n) }
        #expect(lazy.capacity == 300)
        for i in 0..<(300 * 32) {
            #expect(lazy.cos[i].bitPattern == full.cos[i].bitPattern && lazy.sin[i].bitPattern == full.sin[i].bitPattern)
        }
        #expect(throws: PEFTKitError.self) { try lazy.reserve(301) }
        let cfg = ModelConfig(architecture: .llama, vocabSize: 16, hiddenSize: 1024, numLayers: 1, numHeads: 1,
                              intermediateSize: 8, maxPositions: 1 << 20, tieWordEmbeddings: true)
        let m = try Model.create(config: cfg, seed: 1)
        #expect(m.engine.rope!.capacity <= 2048, "built for \(m.engine.rope!.capacity) positions at load")
        _ = try m.forward(inputIDs: [1, 2, 3], batch: 1, seqLen: 3)
    }

    @Test func ropeGradientsAndInverse() throws {
        var rng = Rng(seed: 6)
        let table = try RopeTable(theta: 10000, headDim: 8, maxPositions: 64)
        let rows = 6, seqLen = 3, posOffset = 40, heads = 2, D = 8, stride = 2 * 8 + 5
        let x = FBuf.random(rows * stride, &rng)
        let r = FBuf.random(rows * stride, &rng)
        let work = FBuf(rows * stride)
        func loss() -> Double {
            work.load(x)
            ropeForward(work.p, table, rows: rows, seqLen: seqLen, posOffset: posOffset, numHeads: heads,
                        headDim: D, rowStride: stride)
            return dot(work, r)
        }
        _ = loss()
        // The values between numHeads·headDim and rowStride are untouched.
        for row in 0..<rows {
            for j in heads * D..<stride {
                #expect(work.p[row * stride + j].bitPattern == x.p[row * stride + j].bitPattern)
            }
        }
        // Explicit positions give the same rotation.
        let positions: [Int32] = (0..<rows).map { Int32(posOffset + $0 % seqLen) }
        let viaPositions = x.clone()
        positions.withUnsafeBufferPointer { pos in
            ropeForward(viaPositions.p, table, rows: rows, positions: pos.baseAddress!, numHeads: heads,
                        headDim: D, rowStride: stride)
        }
        #expect(bitwiseEqual(viaPositions, work))

        // Backward = transpose rotation of dout; the gap values of dout pass through unchanged, which is the
        // identity part of the op, so the checked gradient covers the whole row.
        let dx = r.clone()
        ropeBackward(dx.p, table, rows: rows, seqLen: seqLen, posOffset: posOffset, numHeads: heads,
                     headDim: D, rowStride: stride)
        #expect(checkGrad("rope dx", x, dx, loss))
        let dxPos = r.clone()
        positions.withUnsafeBufferPointer { pos in
            ropeBackward(dxPos.p, table, rows: rows, positions: pos.baseAddress!, numHeads: heads, headDim: D,
                         rowStride: stride)
        }
        #expect(bitwiseEqual(dxPos, dx))

        // The rotation is orthogonal: backward(forward(x)) = x.
        let roundTrip = x.clone()
        ropeForward(roundTrip.p, table, rows: rows, seqLen: seqLen, posOffset: posOffset, numHeads: heads,
                    headDim: D, rowStride: stride)
        ropeBackward(roundTrip.p, table, rows: rows, seqLen: seqLen, posOffset: posOffset, numHeads: heads,
                     headDim: D, rowStride: stride)
        let err = maxAbsDiff(roundTrip, x)
        print("rope forward∘backward: max |x' - x| = \(err)")
        #expect(err < 1e-6)
    }

    // MARK: Cross-entropy

    @Test func crossEntropyLossAndGradient() {
        var rng = Rng(seed: 7)
        let N = 6, V = 11
        let logits = FBuf.random(N * V, &rng, scale: 3)
        for i in 0..<V { logits.p[5 * V + i] += 1000 }   // a row with huge logits stays finite
        let targets: [Int32] = [3, -100, 0, 10, 7, 4]
        let count = targets.filter { $0 != -100 }.count
        let gradScale = 1 / Float(count)
        let losses = FBuf(N, value: 99)
        let grad = logits.clone()
        let (sum, n) = targets.withUnsafeBufferPointer { t in
            crossEntropyForwardBackward(logits: grad.p, losses: losses.p, targets: t.baseAddress!, N: N, V: V,
                                        gradScale: gradScale, computeGrad: true)
        }
        #expect(n == count)

        // Loss against a naive Double computation.
        var naiveSum = 0.0
        for r in 0..<N where targets[r] != -100 {
            var mx = -Double.infinity
            for i in 0..<V { mx = max(mx, Double(logits.p[r * V + i])) }
            var s = 0.0
            for i in 0..<V { s += exp(Double(logits.p[r * V + i]) - mx) }
            let l = log(s) + mx - Double(logits.p[r * V + Int(targets[r])])
            naiveSum += l
            #expect(abs(Double(losses.p[r]) - l) <= 2e-6 * max(1, abs(l)), "row \(r): \(losses.p[r]) vs \(l)")
        }
        print("crossEntropy: loss sum \(sum) naive \(naiveSum)")
        #expect(abs(sum - naiveSum) <= 1e-6 * abs(naiveSum))
        #expect(losses.p[1] == 0)

        // Ignored row: exactly zero gradient.
        for i in 0..<V { #expect(grad.p[1 * V + i] == 0) }
        // Each counted row's gradient sums to ~0 (softmax − onehot).
        for r in 0..<N where targets[r] != -100 {
            var s = 0.0
            for i in 0..<V { s += Double(grad.p[r * V + i]) }
            #expect(abs(s) < 1e-6)
        }

        // Gradient against finite differences of gradScale · lossSum.
        let x = logits.clone()
        let scratchLosses = FBuf(N)
        func loss() -> Double {
            targets.withUnsafeBufferPointer { t in
                crossEntropyForwardBackward(logits: x.p, losses: scratchLosses.p, targets: t.baseAddress!, N: N,
                                            V: V, gradScale: gradScale, computeGrad: false).lossSum
            } * Double(gradScale)
        }
        // computeGrad == false leaves the logits unchanged; a nil losses pointer gives the same sum.
        _ = loss()
        #expect(bitwiseEqual(x, logits))
        let sumNoLosses = targets.withUnsafeBufferPointer { t in
            crossEntropyForwardBackward(logits: x.p, losses: nil, targets: t.baseAddress!, N: N, V: V,
                                        gradScale: gradScale, computeGrad: false).lossSum
        }
        #expect(sumNoLosses == sum)
        #expect(checkGrad("crossEntropy dlogits", x, grad, h: 1e-2, loss))
    }

    // MARK: Embedding and bias

    @Test func embeddingForwardAndGradients() {
        var rng = Rng(seed: 8)
        let vocab = 4, maxPos = 8, N = 6, T = 3, C = 5, posOffset = 2
        let ids: [Int32] = [1, 3, 1, 0, 1, 2]
        let wte = FBuf.random(vocab * C, &rng)
        let wpe = FBuf.random(maxPos * C, &rng)
        let r = FBuf.random(N * C, &rng)
        let out = FBuf(N * C)
        func loss() -> Double {
            ids.withUnsafeBufferPointer { id in
                embeddingForward(out.p, id.baseAddress!, wte.p, wpe.p, N, T, C, posOffset)
            }
            return dot(out, r)
        }
        _ = loss()
        for row in 0..<N {
            for c in 0..<C {
                let e = wte.p[Int(ids[row]) * C + c] + wpe.p[(posOffset + row % T) * C + c]
                #expect(out.p[row * C + c] == e)
            }
        }
        // Llama: no position table.
        let outNoPos = FBuf(N * C)
        ids.withUnsafeBufferPointer { id in
            embeddingForward(outNoPos.p, id.baseAddress!, wte.p, nil, N, T, C, posOffset)
        }
        for row in 0..<N {
            for c in 0..<C { #expect(outNoPos.p[row * C + c] == wte.p[Int(ids[row]) * C + c]) }
        }

        let dwte = FBuf(vocab * C), dwpe = FBuf(maxPos * C)
        ids.withUnsafeBufferPointer { id in
            embeddingBackward(dwte.p, dwpe.p, r.p, id.baseAddress!, N, T, C, posOffset)
        }
        #expect(checkGrad("embedding dwte", wte, dwte, loss))
        #expect(checkGrad("embedding dwpe", wpe, dwpe, loss))
        // A frozen table is skipped.
        let dwpe2 = FBuf(maxPos * C)
        ids.withUnsafeBufferPointer { id in
            embeddingBackward(nil, dwpe2.p, r.p, id.baseAddress!, N, T, C, posOffset)
        }
        #expect(bitwiseEqual(dwpe, dwpe2))
    }

    @Test func biasGradient() {
        var rng = Rng(seed: 9)
        let N = 7, C = 9
        let x = FBuf.random(N * C, &rng)
        let b = FBuf.random(C, &rng)
        let r = FBuf.random(N * C, &rng)
        let out = FBuf(N * C)
        func loss() -> Double {
            out.load(x)
            biasAdd(out.p, b.p, N, C)
            return dot(out, r)
        }
        _ = loss()
        for row in 0..<N {
            for c in 0..<C { #expect(out.p[row * C + c] == x.p[row * C + c] + b.p[c]) }
        }
        let db = FBuf(C)
        biasBackward(db.p, r.p, N, C)
        #expect(checkGrad("bias dbias", b, db, loss))
    }

    @Test func elementwiseHelpers() {
        var rng = Rng(seed: 10)
        let n = 1000
        let a = FBuf.random(n, &rng), b = FBuf.random(n, &rng)
        let out = FBuf(n)
        add(out.p, a.p, b.p, n)
        for i in 0..<n { #expect(out.p[i] == a.p[i] + b.p[i]) }
        let acc = a.clone()
        addInPlace(acc.p, b.p, n)
        #expect(bitwiseEqual(acc, out))
        let c = FBuf(n)
        copy(c.p, a.p, n)
        #expect(bitwiseEqual(c, a))
        fill(c.p, 2.5, n)
        #expect(c.array.allSatisfy { $0 == 2.5 })
        scaleInPlace(c.p, n, -2)
        #expect(c.array.allSatisfy { $0 == -5 })
    }

    // MARK: Optimizer and reductions

    /// AdamW written directly from the algorithm, in Double (independent of the kernel's operation order).
    /// Also returns, per element, the sum of the magnitudes of the terms that formed p, m and v: float32
    /// rounding is relative to those, not to a result that happens to cancel towards zero.
    static func referenceAdamW(_ p: inout [Double], _ m: inout [Double], _ v: inout [Double], _ g: [Double],
                               lr: Double, b1: Double, b2: Double, eps: Double, wd: Double,
                               step: Int) -> (p: [Double], m: [Double], v: [Double]) {
        let bc1 = 1 - pow(b1, Double(step))
        let bc2 = 1 - pow(b2, Double(step))
        var scale = (p: p, m: m, v: v)
        for i in 0..<p.count {
            p[i] *= 1 - lr * wd
            scale.m[i] = b1 * abs(m[i]) + (1 - b1) * abs(g[i])
            m[i] = b1 * m[i] + (1 - b1) * g[i]
            v[i] = b2 * v[i] + (1 - b2) * g[i] * g[i]
            scale.v[i] = v[i]
            let mHat = m[i] / bc1
            let vHat = v[i] / bc2
            let update = lr * mHat / (vHat.squareRoot() + eps)
            scale.p[i] = abs(p[i]) + abs(update)
            p[i] -= update
        }
        return scale
    }

    @Test(arguments: [0.9, 0.3]) func adamwMatchesReference(_ beta1: Double) {
        var rng = Rng(seed: 13)
        let n = 37
        let lr = 1e-2, beta2 = 0.999, eps = 1e-8, wd = 0.1
        let p = FBuf.random(n, &rng), m = FBuf(n), v = FBuf(n)
        var pd = p.array.map(Double.init), md = [Double](repeating: 0, count: n), vd = md
        var worst = 0.0
        for step in 1...3 {
            let g = FBuf.random(n, &rng, scale: 0.5)
            adamwUpdate(p.p, g.p, m.p, v.p, n, lr: lr, beta1: beta1, beta2: beta2, eps: eps, weightDecay: wd,
                        step: step)
            let scale = KernelTests.referenceAdamW(&pd, &md, &vd, g.array.map(Double.init), lr: lr, b1: beta1,
                                                   b2: beta2, eps: eps, wd: wd, step: step)
            for i in 0..<n {
                for (name, got, want, size) in [("p", p.p[i], pd[i], scale.p[i]), ("m", m.p[i], md[i], scale.m[i]),
                                                 ("v", v.p[i], vd[i], scale.v[i])] {
                    let rel = abs(Double(got) - want) / max(size, 1e-30)
                    worst = max(worst, rel)
                    #expect(rel <= 1e-6, "step \(step) \(name)[\(i)]: \(got) vs \(want)")
                }
            }
        }
        print("adamw (beta1 \(beta1)) vs Double reference: max rel diff \(worst)")
    }

    /// Bit patterns printed by torch.optim.AdamW (CPU, foreach=False, torch 2.x) for:
    ///     p0 = [0.5, -1.25, 2.0, 0.0, -0.75, 3.5, 1e-3, -2.5, 0.125, 1.75, -0.3]
    ///     gs = [[0.1 * ((i * 7 + s * 3) % 11 - 5) for i in range(11)] for s in range(3)]
    ///     AdamW([P], lr=1e-2, betas=(b1, 0.999), eps=1e-8, weight_decay=0.1, foreach=False), 3 steps with gs
    /// then P, exp_avg, exp_avg_sq viewed as int32. 11 elements cover torch's vector loop and its scalar tail.
    /// Every op of the kernel reproduces torch's bits except sqrt: torch's wheel takes it from MKL's vector
    /// math, which is off by one ulp in about a fifth of the elements, while ours is IEEE sqrt. So m and v
    /// (upstream of the sqrt) must match bitwise, p within 1e-6 relative to max(|p|, lr) (the update size;
    /// p[6] ends near zero after cancellation).
    @Test(arguments: [0.9, 0.3]) func adamwMatchesTorch(_ beta1: Double) {
        let expected: [Double: (p: [UInt32], m: [UInt32], v: [UInt32])] = [
            0.9: (p: [0x3F05EB31, 0xBFA269E0, 0x400021F9, 0xBC5B1BF0, 0xBF445BA2, 0x40605741, 0xBBE38870,
                      0xC01FD5C0, 0x3E1563D1, 0x3FDEF781, 0xBE997AD2],
                  m: [0xBD46A7F1, 0x3CFF9725, 0x3D06594B, 0x3C5D2F18, 0x3B86594F, 0x3BBAC715, 0xBC5ED286,
                      0xBCBC6A7D, 0xBCAF4F0F, 0xBD26B50A, 0x3D7559B4],
                  v: [0x399D00E0, 0x39C70E74, 0x395C1B4D, 0x39B1F2E0, 0x39ACEBB2, 0x393C8E18, 0x39ACC373,
                      0x39B235F4, 0x395BDAE9, 0x39C7010B, 0x399D4145]),
            0.3: (p: [0x3F040249, 0xBFA1E717, 0x3FFED3EC, 0xBBCBE1C5, 0xBF436033, 0x405FA9B8, 0x39CB9CF8,
                      0xC01FA7C2, 0x3E0C0AFF, 0x3FDFDD73, 0xBE9EACD5],
                  m: [0xBB65604B, 0xBDBD3C35, 0x3E93A92A, 0xBD010626, 0xBE4240B8, 0x3E43AFB8, 0xBE03E426,
                      0xBE92F1A9, 0x3DC01A37, 0xBE6786C2, 0x3EC57A78],
                  v: [0x399D00E0, 0x39C70E74, 0x395C1B4D, 0x39B1F2E0, 0x39ACEBB2, 0x393C8E18, 0x39ACC373,
                      0x39B235F4, 0x395BDAE9, 0x39C7010B, 0x399D4145]),
        ]
        let p0: [Double] = [0.5, -1.25, 2.0, 0.0, -0.75, 3.5, 1e-3, -2.5, 0.125, 1.75, -0.3]
        let n = p0.count
        let p = FBuf(p0.map { Float($0) }), m = FBuf(n), v = FBuf(n)
        for s in 0..<3 {
            let g = FBuf((0..<n).map { i in Float(0.1 * Double((i * 7 + s * 3) % 11 - 5)) })
            adamwUpdate(p.p, g.p, m.p, v.p, n, lr: 1e-2, beta1: beta1, beta2: 0.999, eps: 1e-8, weightDecay: 0.1,
                        step: s + 1)
        }
        guard let want = expected[beta1] else { Issue.record("no expectation for \(beta1)"); return }
        #expect(m.array.map(\.bitPattern) == want.m)
        #expect(v.array.map(\.bitPattern) == want.v)
        var bitwise = 0
        for i in 0..<n {
            let t = Float(bitPattern: want.p[i])
            if p.p[i].bitPattern == want.p[i] { bitwise += 1 }
            #expect(abs(Double(p.p[i]) - Double(t)) <= 1e-6 * max(abs(Double(t)), 1e-2), "p[\(i)]: \(p.p[i]) vs torch \(t)")
        }
        print("adamw (beta1 \(beta1)) vs torch: m, v bitwise; p bitwise in \(bitwise) of \(n)")
    }

    @Test func adamwWeightDecay() {
        var rng = Rng(seed: 14)
        let n = 20
        let p0 = FBuf.random(n, &rng)
        let zeros = FBuf(n)
        // Zero gradient, zero moments: only the decoupled decay p·(1 − lr·wd) acts (the Adam term is 0/eps).
        let p = p0.clone(), m = FBuf(n), v = FBuf(n)
        adamwUpdate(p.p, zeros.p, m.p, v.p, n, lr: 0.1, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.5,
                    step: 1)
        for i in 0..<n { #expect(p.p[i] == p0.p[i] * Float(1 - 0.1 * 0.5)) }
        // No decay: parameters unchanged.
        let q = p0.clone()
        adamwUpdate(q.p, zeros.p, m.p, v.p, n, lr: 0.1, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0,
                    step: 1)
        #expect(bitwiseEqual(q, p0))
        // The decay is decoupled: it does not enter the moments.
        #expect(m.array.allSatisfy { $0 == 0 } && v.array.allSatisfy { $0 == 0 })
    }

    @Test func reductions() {
        var rng = Rng(seed: 15)
        let n = 3 * 8192 + 77
        let x = FBuf.random(n, &rng, scale: 3)
        var naive = 0.0
        for i in 0..<n { naive += Double(x.p[i]) * Double(x.p[i]) }
        let s = sumOfSquares(x.p, n)
        #expect(abs(s - naive) <= 1e-12 * naive)
        #expect(sumOfSquares(x.p, 0) == 0)
        #expect(sumOfSquares(x.p, 5) == (0..<5).reduce(0.0) { $0 + Double(x.p[$1]) * Double(x.p[$1]) })

        #expect(isAllFinite(x.p, n))
        x.p[7] = .greatestFiniteMagnitude
        x.p[8] = .leastNonzeroMagnitude
        #expect(isAllFinite(x.p, n))
        for (index, bad) in [(0, Float.nan), (8200, Float.infinity), (n - 1, -Float.infinity), (n / 2, -Float.nan)] {
            let saved = x.p[index]
            x.p[index] = bad
            #expect(!isAllFinite(x.p, n), "non-finite at \(index) not found")
            x.p[index] = saved
        }
        #expect(isAllFinite(x.p, n))
    }

    // MARK: Random numbers

    @Test func rngProperties() {
        var a = Rng(seed: 42), b = Rng(seed: 42), c = Rng(seed: 43)
        var same = true, differs = false
        for _ in 0..<100 {
            let x = a.nextUInt64()
            if x != b.nextUInt64() { same = false }
            if x != c.nextUInt64() { differs = true }
        }
        #expect(same && differs)

        var rng = Rng(seed: 1)
        var lo: Float = 1, hi: Float = 0
        for _ in 0..<100_000 {
            let f = rng.nextFloat()
            lo = min(lo, f); hi = max(hi, f)
        }
        #expect(lo >= 0 && hi < 1 && lo < 1e-3 && hi > 0.999)

        let n = 200_000
        let buf = FBuf(n)
        fillNormal(buf.p, n, std: 2, rng: &rng)
        var mean = 0.0, sq = 0.0
        for i in 0..<n { mean += Double(buf.p[i]); sq += Double(buf.p[i]) * Double(buf.p[i]) }
        mean /= Double(n)
        let std = (sq / Double(n) - mean * mean).squareRoot()
        print("fillNormal(std 2): mean \(mean) std \(std)")
        #expect(abs(mean) < 0.02 && abs(std - 2) < 0.02)

        fillUniform(buf.p, n, low: -3, high: 5, rng: &rng)
        #expect(buf.array.allSatisfy { $0 >= -3 && $0 < 5 })

        fillTruncNormal(buf.p, n, std: 0.01, a: -0.02, b: 0.02, rng: &rng)
        #expect(buf.array.allSatisfy { $0 >= -0.02 && $0 <= 0.02 })
        sq = 0
        for i in 0..<n { sq += Double(buf.p[i]) * Double(buf.p[i]) }
        let tstd = (sq / Double(n)).squareRoot()
        print("fillTruncNormal(std 0.01 in ±0.02): std \(tstd)")
        #expect(tstd > 0.0085 && tstd < 0.0091)   // σ·0.8796 for truncation at ±2σ
        // A window far in the tail still terminates and stays inside.
        fillTruncNormal(buf.p, 100, std: 1, a: 10, b: 11, rng: &rng)
        #expect((0..<100).allSatisfy { buf.p[$0] >= 10 && buf.p[$0] <= 11 })
    }

    // MARK: Conventions

    /// Calling each backward twice on zeroed gradients gives exactly twice the gradient.
    @Test func backwardAccumulates() throws {
        var rng = Rng(seed: 16)
        let N = 5, C = 24
        let x = FBuf.random(N * C, &rng), w = FBuf.random(C, &rng, shift: 1), b = FBuf.random(C, &rng)
        let dout = FBuf.random(N * C, &rng)
        let out = FBuf(N * C), mean = FBuf(N), rstd = FBuf(N)

        func twice(_ name: String, _ grads: [FBuf], _ call: () -> Void) {
            for g in grads { g.zero() }
            call()
            let once = grads.map { $0.clone() }
            call()
            for (g, o) in zip(grads, once) {
                var ok = true
                for i in 0..<g.n where g.p[i] != 2 * o.p[i] { ok = false }
                #expect(ok, "\(name): second call did not double the gradient")
                #expect(o.array.contains { $0 != 0 }, "\(name): gradient is all zero")
            }
        }

        layerNormForward(out.p, mean.p, rstd.p, x.p, w.p, b.p, N, C, 1e-5)
        let dx = FBuf(N * C), dw = FBuf(C), db = FBuf(C)
        twice("layerNorm", [dx, dw, db]) {
            layerNormBackward(dx.p, dw.p, db.p, dout.p, x.p, w.p, mean.p, rstd.p, N, C)
        }
        rmsNormForward(out.p, rstd.p, x.p, w.p, N, C, 1e-6)
        twice("rmsNorm", [dx, dw]) { rmsNormBackward(dx.p, dw.p, dout.p, x.p, w.p, rstd.p, N, C) }
        for act in Activation.allCases {
            twice("\(act)", [dx]) { activationBackward(act, dx.p, x.p, dout.p, N * C) }
        }
        let dg = FBuf(N * C), du = FBuf(N * C)
        twice("swiglu", [dg, du]) { swigluBackward(dg.p, du.p, dout.p, x.p, out.p, N * C) }
        twice("bias", [db]) { biasBackward(db.p, dout.p, N, C) }

        // Embedding rows with repeated ids accumulate straight into the table, so allow rounding.
        let ids: [Int32] = [0, 2, 0, 1, 2]
        let dwte = FBuf(3 * C), dwpe = FBuf(8 * C)
        ids.withUnsafeBufferPointer { id in
            embeddingBackward(dwte.p, dwpe.p, dout.p, id.baseAddress!, N, 4, C, 1)
        }
        let once = [dwte.clone(), dwpe.clone()]
        ids.withUnsafeBufferPointer { id in
            embeddingBackward(dwte.p, dwpe.p, dout.p, id.baseAddress!, N, 4, C, 1)
        }
        for (g, o) in zip([dwte, dwpe], once) {
            for i in 0..<g.n { #expect(abs(g.p[i] - 2 * o.p[i]) <= 1e-6 * max(1, abs(o.p[i]))) }
        }
    }

    /// Every kernel gives bitwise the same result with 1 and 2 threads, at sizes where 2 threads split the work.
    @Test func resultsIndependentOfThreadCount() throws {
        /// A Double's 64 bits carried as two Floats, so that the bitwise comparison sees all of them.
        func doubleBits(_ d: Double) -> [Float] {
            [Float(bitPattern: UInt32(truncatingIfNeeded: d.bitPattern)),
             Float(bitPattern: UInt32(truncatingIfNeeded: d.bitPattern >> 32))]
        }
        func runAll() throws -> [[Float]] {
            var rng = Rng(seed: 17)
            var results: [[Float]] = []
            let N = 256, C = 512
            let x = FBuf.random(N * C, &rng, scale: 2, shift: 0.1)
            let w = FBuf.random(C, &rng, shift: 1), b = FBuf.random(C, &rng)
            let dout = FBuf.random(N * C, &rng)
            let out = FBuf(N * C), mean = FBuf(N), rstd = FBuf(N)
            let dx = FBuf(N * C), dw = FBuf(C), db = FBuf(C)

            layerNormForward(out.p, mean.p, rstd.p, x.p, w.p, b.p, N, C, 1e-5)
            layerNormBackward(dx.p, dw.p, db.p, dout.p, x.p, w.p, mean.p, rstd.p, N, C)
            results += [out.array, mean.array, rstd.array, dx.array, dw.array, db.array]
            dx.zero(); dw.zero()
            rmsNormForward(out.p, rstd.p, x.p, w.p, N, C, 1e-6)
            rmsNormBackward(dx.p, dw.p, dout.p, x.p, w.p, rstd.p, N, C)
            results += [out.array, rstd.array, dx.array, dw.array]
            for act in Activation.allCases {
                dx.zero()
                activationForward(act, out.p, x.p, N * C)
                activationBackward(act, dx.p, x.p, dout.p, N * C)
                results += [out.array, dx.array]
            }
            let dg = FBuf(N * C), du = FBuf(N * C)
            swigluForward(out.p, x.p, dout.p, N * C)
            swigluBackward(dg.p, du.p, out.p, x.p, dout.p, N * C)
            results += [out.array, dg.array, du.array]
            db.zero()
            biasBackward(db.p, dout.p, N, C)
            results.append(db.array)
            results.append(doubleBits(sumOfSquares(x.p, N * C)))

            let table = try RopeTable(theta: 10000, headDim: 64, maxPositions: 128)
            let q = x.clone()
            ropeForward(q.p, table, rows: N, seqLen: 128, posOffset: 0, numHeads: 4, headDim: 64, rowStride: C)
            results.append(q.array)
            ropeBackward(q.p, table, rows: N, seqLen: 128, posOffset: 0, numHeads: 4, headDim: 64, rowStride: C)
            results.append(q.array)

            let ids = (0..<N).map { Int32(($0 * 7) % 50) }
            let wte = FBuf.random(50 * C, &rng), dwte = FBuf(50 * C), dwpe = FBuf(N * C)
            ids.withUnsafeBufferPointer { id in
                embeddingForward(out.p, id.baseAddress!, wte.p, x.p, N, N, C, 0)
                embeddingBackward(dwte.p, dwpe.p, dout.p, id.baseAddress!, N, N, C, 0)
            }
            results += [out.array, dwte.array, dwpe.array]

            let V = 2000, rowsCE = 64
            let logits = FBuf.random(rowsCE * V, &rng, scale: 3)
            let targets = (0..<rowsCE).map { $0 % 9 == 0 ? Int32(-100) : Int32(($0 * 31) % V) }
            let losses = FBuf(rowsCE)
            let (sum, count) = targets.withUnsafeBufferPointer { t in
                crossEntropyForwardBackward(logits: logits.p, losses: losses.p, targets: t.baseAddress!,
                                            N: rowsCE, V: V, gradScale: 0.01, computeGrad: true)
            }
            results += [logits.array, losses.array, doubleBits(sum), [Float(count)]]

            let n = 100_000
            let p = FBuf.random(n, &rng), g = FBuf.random(n, &rng), m = FBuf(n), v = FBuf(n)
            for step in 1...2 {
                adamwUpdate(p.p, g.p, m.p, v.p, n, lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8,
                            weightDecay: 0.01, step: step)
            }
            results += [p.array, m.array, v.array]
            return results
        }
        let one = try withThreads(1) { try runAll() }
        let two = try withThreads(2) { try runAll() }
        #expect(one.count == two.count)
        var mismatches: [Int] = []
        for (i, (a, b)) in zip(one, two).enumerated() {
            if a.count != b.count || zip(a, b).contains(where: { $0.bitPattern != $1.bitPattern }) { mismatches.append(i) }
        }
        print("thread-count independence: \(one.count) result tensors compared, mismatching: \(mismatches)")
        #expect(mismatches.isEmpty)
    }
}
