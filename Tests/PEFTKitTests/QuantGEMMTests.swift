import Testing
@testable import PEFTKit
import CPEFTKitKernels

// Tests of the int8 GEMM (CPEFTKitKernels/qgemm.c, `QuantizedMatrix.matmulInt8`) and of where `FrozenLinear`
// uses it: every block format within `matvecErrorBound` of the product with the widened weight, odd shapes (rows
// not a multiple of the 16- and 32-row tiles, 1..7 and 13 activation rows, strided input and output, K-quant
// super-blocks), the AVX2 and AVX-512 paths bit for bit equal to the scalar one, results independent of the
// thread count, and the training path untouched.

private let gemmTypes: [GGMLType] = [.q8_0, .q4_0, .q4_1, .q5_0, .q5_1, .q4_K, .q5_K, .q6_K]

/// Activations with some heavy-tailed groups (one outlier dominating its group's scale).
private func heavyTailed(_ count: Int, _ rng: inout Rng) -> FBuf {
    let x = FBuf.random(count, &rng)
    for i in stride(from: 5, to: count, by: 97) { x.p[i] *= 30 }
    return x
}

@Suite struct QuantGEMMTests {
    @Test func int8GEMMStaysWithinTheBoundAndEveryPathGivesTheSameBits() throws {
        var rng = Rng(seed: 41)
        for t in gemmTypes {
            #expect(pk_qgemm_supported(Int32(t.rawValue)) != 0, "\(t)")
            for inF in (t.blockSize == 256 ? [256, 768] : [32, 96, 576]) {
                for out in [1, 15, 17, 45] {
                    let bytes = randomMatrixBytes(t, out: out, inF: inF, &rng)
                    try bytes.withUnsafeBytes { raw in
                        let m = try QuantizedMatrix(type: t, outFeatures: out, inFeatures: inF, data: raw.baseAddress!,
                                                    byteCount: raw.count)
                        let w = FBuf(out * inF)
                        m.dequantizeRows(0, out, into: w.p)
                        for rows in [1, 2, 3, 4, 5, 6, 7, 13] {
                            let (ldi, ldo) = (inF + 3, out + 2)
                            let x = heavyTailed(rows * ldi, &rng)
                            var results: [QuantISA: [Float]] = [:]
                            for isa in QuantISA.available {
                                // NaN where the output is not to be written (beta 0 does not read it either).
                                let y = FBuf(rows * ldo, value: .nan)
                                m.matmulInt8(out: y.p, ldo: ldo, inp: x.p, ldi: ldi, rows: rows, isa: isa)
                                var worst = 0.0
                                for c in 0..<rows {
                                    let xc = x.p + c * ldi
                                    for o in 0..<out {
                                        var ref = 0.0
                                        for i in 0..<inF { ref += Double(w.p[o * inF + i]) * Double(xc[i]) }
                                        let bound = QuantizedMatrix.matvecErrorBound(weightRow: w.p + o * inF, x: xc, n: inF)
                                        worst = max(worst, abs(Double(y.p[c * ldo + o]) - ref) / (bound + 1e-30))
                                    }
                                    #expect(y.p[c * ldo + out].isNaN && y.p[c * ldo + out + 1].isNaN,
                                            "\(t) \(isa): wrote past the row")
                                }
                                #expect(worst <= 1, "\(t) \(out)x\(inF) rows \(rows) \(isa): error \(worst) × its bound")
                                results[isa] = (0..<rows).flatMap { c in (0..<out).map { y.p[c * ldo + $0] } }
                            }
                            if let s = results[.scalar] {
                                for (isa, v) in results where isa != .scalar {
                                    #expect(zip(s, v).allSatisfy { $0.bitPattern == $1.bitPattern },
                                            "\(t) \(out)x\(inF) rows \(rows): \(isa) differs from scalar")
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    @Test func betaAddsToTheOutputAndNaNStaysInItsRow() throws {
        var rng = Rng(seed: 42)
        for t in [GGMLType.q8_0, .q4_K, .q6_K] {
            let (out, inF, rows) = (37, 512, 5)
            let bytes = randomMatrixBytes(t, out: out, inF: inF, &rng)
            try bytes.withUnsafeBytes { raw in
                let m = try QuantizedMatrix(type: t, outFeatures: out, inFeatures: inF, data: raw.baseAddress!,
                                            byteCount: raw.count)
                let x = FBuf.random(rows * inF, &rng)
                for isa in QuantISA.available {
                    let y0 = FBuf(rows * out)
                    m.matmulInt8(out: y0.p, ldo: out, inp: x.p, ldi: inF, rows: rows, isa: isa)
                    let old = FBuf.random(rows * out, &rng), y = old.clone()
                    m.matmulInt8(out: y.p, ldo: out, inp: x.p, ldi: inF, rows: rows, beta: 0.5, isa: isa)
                    #expect((0..<(rows * out)).allSatisfy { y.p[$0] == 0.5 * old.p[$0] + y0.p[$0] }, "\(t) \(isa) beta")
                    // A NaN in row 2's activation makes row 2 NaN and leaves the others as they were.
                    let xn = x.clone()
                    xn.p[2 * inF + 100] = .nan
                    let yn = FBuf(rows * out)
                    m.matmulInt8(out: yn.p, ldo: out, inp: xn.p, ldi: inF, rows: rows, isa: isa)
                    for c in 0..<rows {
                        let row = (0..<out).map { yn.p[c * out + $0] }
                        if c == 2 { #expect(row.allSatisfy { $0.isNaN }, "\(t) \(isa) NaN row") }
                        else { #expect(row == (0..<out).map { y0.p[c * out + $0] }, "\(t) \(isa) row \(c)") }
                    }
                }
            }
        }
    }

    @Test func int8GEMMDoesNotDependOnTheThreadCount() throws {
        var rng = Rng(seed: 43)
        for t in [GGMLType.q8_0, .q4_1, .q5_K] {
            let (out, inF, rows) = (333, 512, 23)
            let bytes = randomMatrixBytes(t, out: out, inF: inF, &rng)
            try bytes.withUnsafeBytes { raw in
                let m = try QuantizedMatrix(type: t, outFeatures: out, inFeatures: inF, data: raw.baseAddress!,
                                            byteCount: raw.count)
                let x = FBuf.random(rows * inF, &rng)
                var first: [Float]?
                for threads in [1, 2, 3, 5] {
                    let y = FBuf(rows * out)
                    withThreads(threads) { m.matmulInt8(out: y.p, ldo: out, inp: x.p, ldi: inF, rows: rows) }
                    if let f = first {
                        #expect(f.elementsEqual(y.array) { $0.bitPattern == $1.bitPattern }, "\(t) \(threads) threads")
                    } else {
                        first = y.array
                    }
                }
            }
        }
    }

    /// `FrozenLinear.forward` takes the int8 GEMM only inside `withInt8Prefill` (a pass without gradients);
    /// outside, as in training, it is the widened product (`matmul`) bit for bit.
    @Test func forwardUsesTheInt8GEMMOnlyWhenAskedTo() throws {
        var rng = Rng(seed: 44)
        let (out, inF, rows) = (70, 256, 9)
        let bytes = randomMatrixBytes(.q8_0, out: out, inF: inF, &rng)
        try bytes.withUnsafeBytes { raw in
            let m = try QuantizedMatrix(type: .q8_0, outFeatures: out, inFeatures: inF, data: raw.baseAddress!,
                                        byteCount: raw.count)
            let lin = FrozenLinear(quantized: m, bias: nil, workspace: try QuantWorkspace(for: [m]))
            let x = FBuf.random(rows * inF, &rng)
            let exact = FBuf(rows * out), int8 = FBuf(rows * out), y = FBuf(rows * out)
            m.matmul(out: exact.p, ldo: out, inp: x.p, ldi: inF, rows: rows, beta: 0)
            m.matmulInt8(out: int8.p, ldo: out, inp: x.p, ldi: inF, rows: rows)
            #expect(exact.array != int8.array)
            lin.forward(out: y.p, inp: x.p, rows: rows)
            #expect(y.array == exact.array, "forward outside withInt8Prefill")
            #expect(!FrozenLinear.int8Prefill)
            FrozenLinear.withInt8Prefill {
                #expect(FrozenLinear.int8Prefill)
                lin.forward(out: y.p, inp: x.p, rows: rows)
            }
            #expect(y.array == (m.servesInt8GEMM(isa: .active) ? int8.array : exact.array), "forward inside withInt8Prefill")
            #expect(!FrozenLinear.int8Prefill)
        }
    }
}
