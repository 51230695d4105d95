import CPEFTKitKernels
import Testing
@testable import PEFTKit
#if canImport(Glibc)
import Glibc
#endif

// Every instruction-set path of the element-wise C kernels (Sources/CPEFTKitKernels/elementwise.c) that this CPU
// runs, against Double-precision references and against each other. What the tests state:
//   - exp: within 2 ulp of the exact value over the whole Float range on every path (measured: scalar 1.19 ulp,
//     AVX2 / AVX-512 0.90 ulp), with the special values right; erf (the exact GELU's) likewise within 2 ulp.
//   - maps (activations, SwiGLU, RoPE): AVX2 and AVX-512 give bitwise the same result (the same operations lane by
//     lane); the scalar path rounds each product separately and stays within 1e-6 of them relative to
//     max(1, |value|).
//   - row reductions (softmax, cross-entropy, LayerNorm, RMSNorm): every path within the same tolerance of the
//     Double reference as the kernels' other tests; paths differ in the order of their partial sums.
//   - each path gives bitwise the same result whatever the pieces a caller splits an array into (thread count).

/// Distance in units in the last place between two finite Floats (0 when bitwise equal, or both NaN).
private func ulpDistance(_ a: Float, _ b: Float) -> Int {
    if a.isNaN && b.isNaN { return 0 }
    if a.isNaN || b.isNaN { return Int.max }
    func ordered(_ x: Float) -> Int {
        let bits = Int(Int32(bitPattern: x.bitPattern))
        return bits < 0 ? Int(Int32.min) - bits : bits
    }
    return abs(ordered(a) - ordered(b))
}

private func maxUlp(_ a: FBuf, _ b: FBuf) -> Int {
    var m = 0
    for i in 0..<min(a.n, b.n) { m = max(m, ulpDistance(a.p[i], b.p[i])) }
    return m
}

@Suite struct ElementwiseSIMDTests {
    static let paths = ElementwiseISA.available

    @Test func pathsDetected() {
        print("element-wise paths on this CPU: \(Self.paths.map(\.description)); active \(ElementwiseISA.active)")
        #expect(Self.paths.first == .scalar)
        #expect(Self.paths.contains(ElementwiseISA.active))
    }

    @Test(arguments: ElementwiseISA.available) func expWithinTwoUlp(_ isa: ElementwiseISA) {
        // A sweep of the finite-result range in steps of 1/1024 plus the neighbourhood of zero, all in one call.
        var xs: [Float] = []
        var x: Float = -104
        while x < 89 { xs.append(x); x += 1.0 / 1024 }
        var t: Float = -1e-3
        while t < 1e-3 { xs.append(t); t += 1e-7 }
        var ys = [Float](repeating: 0, count: xs.count)
        xs.withUnsafeBufferPointer { xp in
            ys.withUnsafeMutableBufferPointer { yp in pk_ew_exp(isa.rawValue, xp.baseAddress!, yp.baseAddress!, Int64(xp.count)) }
        }
        var worst = 0.0, worstX: Float = 0
        for (x, y) in zip(xs, ys) {
            let exact = exp(Double(x))
            let rounded = Float(exact)
            let err = rounded.isFinite
                ? abs(Double(y) - exact) / Double(max(rounded.ulp, Float.leastNonzeroMagnitude))
                : (y == rounded ? 0 : .infinity)
            if !(err <= worst) { worst = err; worstX = x }
        }
        print("exp \(isa): max error \(worst) ulp at x = \(worstX) over \(xs.count) points")
        #expect(worst <= 2)
        let special = vexp(SIMD8<Float>(0, -.infinity, .infinity, .nan, 88.72283, 88.7229, -87.5, -200), isa: isa)
        #expect(special[0] == 1)
        #expect(special[1] == 0)
        #expect(special[2] == .infinity)
        #expect(special[3].isNaN)
        #expect(special[4].isFinite && special[4] > 3.4e38)
        #expect(special[5] == .infinity)
        #expect(special[6] > 0 && special[6] < Float.leastNormalMagnitude)
        #expect(special[7] == 0)
    }

    /// erf over a dense sweep of [-6, 6] (steps of 2^-12, both signs, the whole saturated tail beyond 3.92),
    /// the neighbourhood of zero down to subnormals, and the special values, against Double erf, on every path:
    /// within 2 ulp of the exact value. The scalar path (no fused multiply-adds) gets the same bound.
    @Test(arguments: ElementwiseISA.available) func erfWithinTwoUlp(_ isa: ElementwiseISA) {
        var xs: [Float] = []
        var x: Float = -6
        while x <= 6 { xs.append(x); x += 1.0 / 4096 }
        var t: Float = 1e-38
        while t < 2 { xs.append(t); xs.append(-t); t *= 1.0001 }
        let edges: [Float] = [1.25, Float(1.25).nextDown, 3.925, Float(3.925).nextDown, 3.9193, 10, 1e30,
                              .greatestFiniteMagnitude]
        for v in edges {
            xs.append(v); xs.append(-v)
        }
        var ys = [Float](repeating: 0, count: xs.count)
        xs.withUnsafeBufferPointer { xp in
            ys.withUnsafeMutableBufferPointer { yp in pk_ew_erf(isa.rawValue, xp.baseAddress!, yp.baseAddress!, Int64(xp.count)) }
        }
        var worst = 0.0, worstX: Float = 0
        for (x, y) in zip(xs, ys) {
            let exact = erf(Double(x))
            let err = abs(Double(y) - exact) / Double(max(Float(exact).magnitude.ulp, Float.leastNonzeroMagnitude))
            if !(err <= worst) { worst = err; worstX = x }
        }
        print("erf \(isa): max error \(worst) ulp at x = \(worstX) over \(xs.count) points")
        #expect(worst <= 2)
        let sp: [Float] = [0, -0.0, .infinity, -.infinity, .nan]
        var out = [Float](repeating: 1, count: sp.count)
        sp.withUnsafeBufferPointer { xp in
            out.withUnsafeMutableBufferPointer { yp in pk_ew_erf(isa.rawValue, xp.baseAddress!, yp.baseAddress!, Int64(xp.count)) }
        }
        #expect(out[0] == 0 && out[0].sign == .plus)
        #expect(out[1] == 0 && out[1].sign == .minus)
        #expect(out[2] == 1)
        #expect(out[3] == -1)
        #expect(out[4].isNaN)
    }

    /// gelu, gelu_new and SiLU forward and backward on every path against Double formulas; AVX2 == AVX-512 bitwise.
    @Test(arguments: [Activation.gelu, .geluTanh, .swish]) func activationsOnEveryPath(_ act: Activation) {
        var rng = Rng(seed: 31)
        let n = 1003
        let x = FBuf.random(n, &rng, scale: 4)
        x.p[0] = 0; x.p[1] = -30; x.p[2] = 30; x.p[3] = 1e-4; x.p[4] = -90; x.p[5] = 90
        let dout = FBuf.random(n, &rng)
        let base = FBuf.random(n, &rng)
        var outs: [ElementwiseISA: (FBuf, FBuf)] = [:]
        for isa in Self.paths {
            let y = FBuf(n), dx = base.clone()
            activationForward(act, y.p, x.p, n, isa: isa)
            activationBackward(act, dx.p, x.p, dout.p, n, isa: isa)
            var errF = 0.0, errB = 0.0
            for i in 0..<n {
                let xd = Double(x.p[i])
                let (f, fp) = Self.referenceWithDerivative(act, xd)
                errF = max(errF, abs(f - Double(y.p[i])) / max(1, abs(f)))
                let want = Double(base.p[i]) + Double(dout.p[i]) * fp
                errB = max(errB, abs(want - Double(dx.p[i])) / max(1, abs(want)))
            }
            print("\(act) \(isa): forward max err \(errF), backward max err \(errB)")
            #expect(errF < 1e-6)
            #expect(errB < 2e-6)
            outs[isa] = (y, dx)
        }
        Self.compareMaps("\(act) forward", outs.mapValues(\.0))
        Self.compareMaps("\(act) backward", outs.mapValues(\.1))
    }

    @Test func swigluOnEveryPath() {
        var rng = Rng(seed: 32)
        let n = 777
        let g = FBuf.random(n, &rng, scale: 3), u = FBuf.random(n, &rng), d = FBuf.random(n, &rng)
        let dg0 = FBuf.random(n, &rng), du0 = FBuf.random(n, &rng)
        var fw: [ElementwiseISA: FBuf] = [:], bg: [ElementwiseISA: FBuf] = [:], bu: [ElementwiseISA: FBuf] = [:]
        for isa in Self.paths {
            let y = FBuf(n), dg = dg0.clone(), du = du0.clone()
            swigluForward(y.p, g.p, u.p, n, isa: isa)
            swigluBackward(dg.p, du.p, d.p, g.p, u.p, n, isa: isa)
            var err = 0.0
            for i in 0..<n {
                let (s, sp) = Self.referenceWithDerivative(.swish, Double(g.p[i]))
                let uu = Double(u.p[i]), dd = Double(d.p[i])
                err = max(err, abs(s * uu - Double(y.p[i])) / max(1, abs(s * uu)))
                let wantU = Double(du0.p[i]) + dd * s, wantG = Double(dg0.p[i]) + dd * uu * sp
                err = max(err, abs(wantU - Double(du.p[i])) / max(1, abs(wantU)))
                err = max(err, abs(wantG - Double(dg.p[i])) / max(1, abs(wantG)))
            }
            print("swiglu \(isa): max err \(err)")
            #expect(err < 2e-6)
            fw[isa] = y; bg[isa] = dg; bu[isa] = du
        }
        Self.compareMaps("swiglu forward", fw)
        Self.compareMaps("swiglu dgate", bg)
        Self.compareMaps("swiglu dup", bu)
    }

    /// The element-wise maps give bitwise the same values when the array is processed in odd-sized pieces, on
    /// every path (what makes results independent of the thread count).
    @Test(arguments: ElementwiseISA.available) func piecesDoNotChangeResults(_ isa: ElementwiseISA) {
        var rng = Rng(seed: 33)
        let n = 301
        let x = FBuf.random(n, &rng, scale: 3), d = FBuf.random(n, &rng), u = FBuf.random(n, &rng)
        let cuts = [0, 5, 22, 23, 100, 117, 301]
        func run(_ whole: Bool, _ body: (Int, Int) -> Void) {
            if whole { body(0, n); return }
            for k in 0..<(cuts.count - 1) { body(cuts[k], cuts[k + 1] - cuts[k]) }
        }
        var results: [[FBuf]] = []
        for whole in [true, false] {
            let a = FBuf(n), b = FBuf(n), c = FBuf(n), e = FBuf(n), f = FBuf(n), g = FBuf(n)
            run(whole) { s, m in activationForward(.geluTanh, a.p + s, x.p + s, m, isa: isa) }
            run(whole) { s, m in activationBackward(.gelu, g.p + s, x.p + s, d.p + s, m, isa: isa) }
            run(whole) { s, m in activationBackward(.swish, b.p + s, x.p + s, d.p + s, m, isa: isa) }
            run(whole) { s, m in swigluForward(c.p + s, x.p + s, u.p + s, m, isa: isa) }
            run(whole) { s, m in swigluBackward(e.p + s, f.p + s, d.p + s, x.p + s, u.p + s, m, isa: isa) }
            results.append([a, b, c, e, f, g])
        }
        for k in 0..<results[0].count { #expect(bitwiseEqual(results[0][k], results[1][k]), "output \(k)") }
    }

    @Test func softmaxOnEveryPath() {
        var rng = Rng(seed: 34)
        let width = 77
        for valid in [1, 7, 16, 33, 77] {
            let x = FBuf.random(width, &rng, scale: 5)
            var mx = -Float.infinity
            for j in 0..<valid { mx = max(mx, x.p[j]) }
            var s = 0.0
            for j in 0..<valid { s += exp(Double(x.p[j] - mx)) }
            var rows: [ElementwiseISA: FBuf] = [:]
            for isa in Self.paths {
                let row = x.clone()
                softmaxRow(row.p, valid: valid, width: width, max: mx, isa: isa)
                var err = 0.0
                for j in 0..<valid {
                    let want = exp(Double(x.p[j] - mx)) / s
                    err = max(err, abs(Double(row.p[j]) - want) / want)
                }
                for j in valid..<width { #expect(row.p[j] == 0) }
                #expect(err < 1e-5, "valid \(valid) \(isa): rel err \(err)")
                rows[isa] = row
            }
            if let a = rows[.avx2], let b = rows[.avx512] { #expect(maxUlp(a, b) <= 4) }
        }
    }

    /// The masked softmax row (padding keys, encoders) gives bitwise what masking in Swift, the row max and
    /// `softmaxRow` give, on every path: keys before `off` (a prefix) are never masked, masked keys get exactly 0.
    @Test(arguments: ElementwiseISA.available) func maskedSoftmaxMatchesItsSteps(_ isa: ElementwiseISA) {
        var rng = Rng(seed: 39)
        let width = 45
        for (valid, off) in [(45, 0), (45, 5), (30, 5), (17, 0), (3, 2)] {
            let x = FBuf.random(width, &rng, scale: 5)
            x.p[1] = 40  // the largest score is masked below when off <= 1
            let mask: [Int32] = (0..<width).map { $0 % 3 == 1 ? 0 : 1 }
            let want = x.clone(), got = x.clone()
            for j in off..<valid where mask[j - off] == 0 { want.p[j] = -.infinity }
            var mx = -Float.infinity
            for j in 0..<valid { mx = max(mx, want.p[j]) }
            softmaxRow(want.p, valid: valid, width: width, max: mx, isa: isa)
            mask.withUnsafeBufferPointer { m in
                pk_ew_masked_softmax_row(isa.rawValue, got.p, Int64(valid), Int64(width), m.baseAddress!, Int64(off))
            }
            #expect(bitwiseEqual(want, got), "valid \(valid) off \(off) \(isa)")
            for j in off..<valid where mask[j - off] == 0 { #expect(got.p[j] == 0) }
        }
    }

    @Test func crossEntropyOnEveryPath() {
        var rng = Rng(seed: 35)
        let N = 5, V = 1001
        let logits = FBuf.random(N * V, &rng, scale: 4)
        for i in 0..<V { logits.p[4 * V + i] += 1000 }
        let targets: [Int32] = [0, 1000, -100, 517, 3]
        for isa in Self.paths {
            let grad = logits.clone(), losses = FBuf(N)
            let (sum, count) = targets.withUnsafeBufferPointer { t in
                crossEntropyForwardBackward(logits: grad.p, losses: losses.p, targets: t.baseAddress!, N: N, V: V,
                                            gradScale: 0.25, computeGrad: true, isa: isa)
            }
            #expect(count == 4)
            var naive = 0.0, gradErr = 0.0
            for r in 0..<N where targets[r] != -100 {
                var mx = -Double.infinity
                for i in 0..<V { mx = max(mx, Double(logits.p[r * V + i])) }
                var s = 0.0
                for i in 0..<V { s += exp(Double(logits.p[r * V + i]) - mx) }
                let t = Int(targets[r])
                let l = log(s) + mx - Double(logits.p[r * V + t])
                naive += l
                #expect(abs(Double(losses.p[r]) - l) <= 2e-6 * max(1, abs(l)), "\(isa) row \(r)")
                for i in 0..<V {
                    let p = exp(Double(logits.p[r * V + i]) - mx) / s
                    let want = 0.25 * (p - (i == t ? 1 : 0))
                    gradErr = max(gradErr, abs(want - Double(grad.p[r * V + i])))
                }
            }
            for i in 0..<V { #expect(grad.p[2 * V + i] == 0) }
            print("cross-entropy \(isa): loss sum \(sum) vs \(naive), max grad err \(gradErr)")
            #expect(abs(sum - naive) <= 1e-6 * abs(naive))
            #expect(gradErr < 1e-7)
        }
    }

    @Test func normsOnEveryPath() {
        var rng = Rng(seed: 36)
        let N = 7, C = 77, eps: Float = 1e-5
        let x = FBuf.random(N * C, &rng, scale: 3, shift: 0.7)
        let w = FBuf.random(C, &rng, scale: 0.5, shift: 1), b = FBuf.random(C, &rng)
        let dout = FBuf.random(N * C, &rng), dx0 = FBuf.random(N * C, &rng)
        for isa in Self.paths {
            // LayerNorm forward and input gradient against Double.
            let y = FBuf(N * C), mean = FBuf(N), rstd = FBuf(N), dx = dx0.clone()
            layerNormForward(y.p, mean.p, rstd.p, x.p, w.p, b.p, N, C, eps, isa: isa)
            layerNormBackward(dx.p, nil, nil, dout.p, x.p, w.p, mean.p, rstd.p, N, C, isa: isa)
            var errY = 0.0, errD = 0.0
            for r in 0..<N {
                let row = (0..<C).map { Double(x.p[r * C + $0]) }
                let m = row.reduce(0, +) / Double(C)
                let v = row.reduce(0) { $0 + ($1 - m) * ($1 - m) } / Double(C)
                let rs = 1 / (v + Double(eps)).squareRoot()
                #expect(abs(Double(mean.p[r]) - m) <= 1e-6 * max(1, abs(m)))
                #expect(abs(Double(rstd.p[r]) - rs) <= 1e-6 * rs)
                let xh = row.map { ($0 - m) * rs }
                let g = (0..<C).map { Double(dout.p[r * C + $0]) * Double(w.p[$0]) }
                let mg = g.reduce(0, +) / Double(C)
                let mgx = zip(g, xh).reduce(0) { $0 + $1.0 * $1.1 } / Double(C)
                for i in 0..<C {
                    let want = xh[i] * Double(w.p[i]) + Double(b.p[i])
                    errY = max(errY, abs(want - Double(y.p[r * C + i])) / max(1, abs(want)))
                    let wantD = Double(dx0.p[r * C + i]) + rs * (g[i] - mg - xh[i] * mgx)
                    errD = max(errD, abs(wantD - Double(dx.p[r * C + i])) / max(1, abs(wantD)))
                }
            }
            print("layerNorm \(isa): forward max err \(errY), input gradient max err \(errD)")
            #expect(errY < 2e-6)
            #expect(errD < 1e-5)

            // RMSNorm.
            let z = FBuf(N * C), rr = FBuf(N), dz = dx0.clone()
            rmsNormForward(z.p, rr.p, x.p, w.p, N, C, eps, isa: isa)
            rmsNormBackward(dz.p, nil, dout.p, x.p, w.p, rr.p, N, C, isa: isa)
            var errZ = 0.0, errDZ = 0.0
            for r in 0..<N {
                let row = (0..<C).map { Double(x.p[r * C + $0]) }
                let rs = 1 / (row.reduce(0) { $0 + $1 * $1 } / Double(C) + Double(eps)).squareRoot()
                #expect(abs(Double(rr.p[r]) - rs) <= 1e-6 * rs)
                let g = (0..<C).map { Double(dout.p[r * C + $0]) * Double(w.p[$0]) }
                let sgx = zip(g, row).reduce(0) { $0 + $1.0 * $1.1 }
                for i in 0..<C {
                    let want = Double(w.p[i]) * row[i] * rs
                    errZ = max(errZ, abs(want - Double(z.p[r * C + i])) / max(1, abs(want)))
                    let wantD = Double(dx0.p[r * C + i]) + rs * g[i] - rs * rs * rs / Double(C) * sgx * row[i]
                    errDZ = max(errDZ, abs(wantD - Double(dz.p[r * C + i])) / max(1, abs(wantD)))
                }
            }
            print("rmsNorm \(isa): forward max err \(errZ), input gradient max err \(errDZ)")
            #expect(errZ < 2e-6)
            #expect(errDZ < 1e-5)
        }
    }

    @Test func ropeOnEveryPath() throws {
        let heads = 3, headDim = 22, rows = 5, T = 5
        let table = try RopeTable(theta: 10000, headDim: headDim, maxPositions: 64)
        var rng = Rng(seed: 37)
        let x = FBuf.random(rows * heads * headDim, &rng)
        var outs: [ElementwiseISA: FBuf] = [:]
        for isa in Self.paths {
            let y = x.clone()
            ropeForward(y.p, table, rows: rows, seqLen: T, posOffset: 2, numHeads: heads, headDim: headDim,
                        rowStride: heads * headDim, isa: isa)
            var err = 0.0
            let half = headDim / 2
            for r in 0..<rows {
                let pos = 2 + r % T
                for h in 0..<heads {
                    let o = r * heads * headDim + h * headDim
                    for i in 0..<half {
                        let c = Double(table.cos[pos * half + i]), s = Double(table.sin[pos * half + i])
                        let a = Double(x.p[o + i]), b = Double(x.p[o + i + half])
                        err = max(err, abs(a * c - b * s - Double(y.p[o + i])))
                        err = max(err, abs(b * c + a * s - Double(y.p[o + i + half])))
                    }
                }
            }
            print("rope \(isa): max abs err \(err)")
            #expect(err < 1e-6)
            // The backward (inverse rotation) brings the values back to within rounding.
            let back = y.clone()
            ropeBackward(back.p, table, rows: rows, seqLen: T, posOffset: 2, numHeads: heads, headDim: headDim,
                         rowStride: heads * headDim, isa: isa)
            #expect(maxAbsDiff(back, x) < 1e-5)
            outs[isa] = y
        }
        Self.compareMaps("rope", outs)
    }

    /// Each backward accumulates (+=) with one rounding into the gradient, on every path: two calls on a zeroed
    /// gradient give exactly twice one call; an activation backward with `accumulate: false` gives bitwise one call
    /// on zeros.
    @Test(arguments: ElementwiseISA.available) func backwardsAccumulateExactly(_ isa: ElementwiseISA) {
        var rng = Rng(seed: 38)
        let N = 5, C = 37
        let x = FBuf.random(N * C, &rng), w = FBuf.random(C, &rng, shift: 1), b = FBuf.random(C, &rng)
        let u = FBuf.random(N * C, &rng), dout = FBuf.random(N * C, &rng)
        let out = FBuf(N * C), mean = FBuf(N), rstd = FBuf(N)
        func twice(_ name: String, _ grads: [FBuf], _ call: () -> Void) {
            for g in grads { g.zero() }
            call()
            let once = grads.map { $0.clone() }
            call()
            for (g, o) in zip(grads, once) {
                #expect((0..<g.n).allSatisfy { g.p[$0] == 2 * o.p[$0] }, "\(name) \(isa)")
            }
        }
        let dx = FBuf(N * C), dg = FBuf(N * C), du = FBuf(N * C)
        layerNormForward(out.p, mean.p, rstd.p, x.p, w.p, b.p, N, C, 1e-5, isa: isa)
        twice("layerNorm", [dx]) { layerNormBackward(dx.p, nil, nil, dout.p, x.p, w.p, mean.p, rstd.p, N, C, isa: isa) }
        rmsNormForward(out.p, rstd.p, x.p, w.p, N, C, 1e-6, isa: isa)
        twice("rmsNorm", [dx]) { rmsNormBackward(dx.p, nil, dout.p, x.p, w.p, rstd.p, N, C, isa: isa) }
        for act in [Activation.gelu, .geluTanh, .swish, .relu] {
            twice("\(act)", [dx]) { activationBackward(act, dx.p, x.p, dout.p, N * C, isa: isa) }
            // accumulate: false stores what one call on zeros gives, over whatever dinp held.
            let once = dx.clone()
            once.zero()
            activationBackward(act, once.p, x.p, dout.p, N * C, isa: isa)
            fillNormal(dx.p, N * C, std: 1, rng: &rng)
            activationBackward(act, dx.p, x.p, dout.p, N * C, accumulate: false, isa: isa)
            #expect(bitwiseEqual(dx, once), "\(act) \(isa) accumulate: false")
        }
        twice("swiglu", [dg, du]) { swigluBackward(dg.p, du.p, dout.p, x.p, u.p, N * C, isa: isa) }
    }

    // MARK: helpers

    /// AVX2 and AVX-512 agree bitwise; scalar within 1e-6 of the vector paths relative to max(1, |value|)
    /// (it rounds each product of a multiply-add; the ulp count printed is large only next to zero).
    static func compareMaps(_ name: String, _ outs: [ElementwiseISA: FBuf]) {
        if let a = outs[.avx2], let b = outs[.avx512] {
            #expect(bitwiseEqual(a, b), "\(name): AVX2 and AVX-512 differ by up to \(maxUlp(a, b)) ulp")
        }
        if let s = outs[.scalar], let v = outs[.avx2] {
            var rel = 0.0
            for i in 0..<min(s.n, v.n) {
                rel = max(rel, abs(Double(s.p[i]) - Double(v.p[i])) / max(1, abs(Double(v.p[i]))))
            }
            print("\(name): scalar vs vector max \(maxUlp(s, v)) ulp, \(rel) relative to max(1, |v|)")
            #expect(rel <= 1e-6)
        }
    }

    /// f(x) and f'(x) in Double.
    static func referenceWithDerivative(_ act: Activation, _ x: Double) -> (Double, Double) {
        switch act {
        case .geluTanh:
            let k = (2 / Double.pi).squareRoot()
            let u = k * (x + 0.044715 * x * x * x)
            let t = tanh(u)
            return (0.5 * x * (1 + t), 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * k * (1 + 3 * 0.044715 * x * x))
        case .swish:
            let s = 1 / (1 + exp(-x))
            return (x * s, s * (1 + x * (1 - s)))
        case .gelu:
            let cdf = 0.5 * (1 + erf(x / 2.0.squareRoot()))
            return (x * cdf, cdf + x * exp(-0.5 * x * x) / (2 * Double.pi).squareRoot())
        default:
            return (.nan, .nan)
        }
    }
}
