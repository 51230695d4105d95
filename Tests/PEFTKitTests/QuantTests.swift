import Testing
@testable import PEFTKit
import CPEFTKitKernels
#if canImport(Glibc)
import Glibc
#endif

// Tests of Kernels/QuantBlocks.swift and Kernels/QuantizedMatrix.swift: dequantisation bit-identical to gguf-py
// (Tests/Fixtures/quant, every instruction-set path this CPU runs: scalar, AVX2, AVX-512), the fp32 products
// against a Double product of the dequantised weight, the 8-bit-activation matvec within its derived bound, and
// hostile shapes and byte counts.

// MARK: - Helpers

private func readFileBytes(_ path: String) -> [UInt8]? {
    guard let f = fopen(path, "rb") else { return nil }
    defer { fclose(f) }
    var out: [UInt8] = []
    var buf = [UInt8](repeating: 0, count: 1 << 16)
    while true {
        let n = fread(&buf, 1, buf.count, f)
        if n <= 0 { break }
        out += buf[0..<n]
    }
    return out
}

private func quantListDirectory(_ path: String) -> [String] {
    guard let d = opendir(path) else { return [] }
    defer { closedir(d) }
    var names: [String] = []
    while let e = readdir(d) {
        let name = withUnsafeBytes(of: e.pointee.d_name) { String(decoding: $0.prefix(while: { $0 != 0 }), as: UTF8.self) }
        if !name.hasPrefix(".") { names.append(name) }
    }
    return names.sorted()
}

private struct QuantFixture {
    let type: GGMLType
    let rows: Int
    let cols: Int
    let blocks: [UInt8]
    let expected: [UInt32]  // bit patterns
}

private func quantFixtures() -> [QuantFixture] {
    let dir = TS.fixtures + "/quant"
    guard let m = readFileBytes(dir + "/manifest.txt") else { return [] }
    var out: [QuantFixture] = []
    for line in String(decoding: m, as: UTF8.self).split(separator: "\n") where !line.hasPrefix("#") {
        let f = line.split(separator: " ")
        guard f.count == 4, let id = UInt32(f[1]), let type = GGMLType(rawValue: id), let rows = Int(f[2]),
              let cols = Int(f[3]), let blocks = readFileBytes("\(dir)/\(f[0]).blocks"),
              let ref = readFileBytes("\(dir)/\(f[0]).f32") else { continue }
        let bits = (0..<(ref.count / 4)).map { (i: Int) -> UInt32 in
            let b0 = UInt32(ref[4 * i]), b1 = UInt32(ref[4 * i + 1]), b2 = UInt32(ref[4 * i + 2]), b3 = UInt32(ref[4 * i + 3])
            return b0 | (b1 << 8) | (b2 << 16) | (b3 << 24)
        }
        out.append(QuantFixture(type: type, rows: rows, cols: cols, blocks: blocks, expected: bits))
    }
    return out
}

/// Byte offsets of the fp16 scale fields of one block.
private func halfFields(_ t: GGMLType) -> [Int] {
    switch t {
    case .q8_0, .q4_0, .q5_0: return [0]
    case .q4_1, .q5_1, .q4_K, .q5_K: return [0, 2]
    case .q6_K: return [208]
    default: return []
    }
}

/// A finite fp16 of magnitude 2^-12 ... 2^-3, random sign.
private func randomHalf(_ rng: inout Rng) -> UInt16 {
    let r = rng.nextUInt64()
    return UInt16(truncatingIfNeeded: (r & 0x8000) | (((r >> 16) % 10 + 3) << 10) | ((r >> 32) & 0x3ff))
}

/// Random bytes for an [out, inF] matrix of type t with finite scales (F16/BF16: random finite values).
func randomMatrixBytes(_ t: GGMLType, out: Int, inF: Int, _ rng: inout Rng) -> [UInt8] {
    let rowBytes = inF / t.blockSize * t.blockBytes
    var b = (0..<(rowBytes * out)).map { _ in UInt8(truncatingIfNeeded: rng.nextUInt64()) }
    switch t {
    case .f16, .bf16:
        for i in 0..<(out * inF) {
            let h: UInt16 = t == .f16 ? randomHalf(&rng) : UInt16(truncatingIfNeeded: (Float(rng.normal()) * 0.1).bitPattern >> 16)
            b[2 * i] = UInt8(h & 0xff)
            b[2 * i + 1] = UInt8(h >> 8)
        }
    case .f32:
        for i in 0..<(out * inF) {
            let v = (Float(rng.normal()) * 0.1).bitPattern
            for k in 0..<4 { b[4 * i + k] = UInt8(truncatingIfNeeded: v >> (8 * k)) }
        }
    default:
        for blk in 0..<(b.count / t.blockBytes) {
            for off in halfFields(t) {
                let h = randomHalf(&rng)
                b[blk * t.blockBytes + off] = UInt8(h & 0xff)
                b[blk * t.blockBytes + off + 1] = UInt8(h >> 8)
            }
        }
    }
    return b
}

private let quantTypes: [GGMLType] = [.q8_0, .q4_0, .q4_1, .q5_0, .q5_1, .q4_K, .q5_K, .q6_K, .f16, .bf16, .f32]

private func thrownError(_ f: () throws -> Void) -> PEFTKitError? {
    do { try f(); return nil } catch let e as PEFTKitError { return e } catch { return nil }
}

// MARK: - Tests

@Suite struct QuantTests {
    @Test func dequantisationIsBitIdenticalToGGUFPy() throws {
        let fixtures = quantFixtures()
        #expect(fixtures.count == 10, "Tests/Fixtures/quant is missing (scripts/make_quant_fixtures.py)")
        for fx in fixtures {
            try fx.blocks.withUnsafeBytes { raw in
                let m = try QuantizedMatrix(type: fx.type, outFeatures: fx.rows, inFeatures: fx.cols,
                                            data: raw.baseAddress!, byteCount: raw.count)
                for isa in QuantISA.available {
                    let out = FBuf(fx.rows * fx.cols, value: .nan)
                    m.dequantizeRows(0, fx.rows, into: out.p, isa: isa)
                    let mismatches = (0..<out.n).filter { out.p[$0].bitPattern != fx.expected[$0] }
                    #expect(mismatches.isEmpty, "\(fx.type) \(isa): \(mismatches.count) elements differ from gguf-py, first at \(mismatches.first ?? -1)")
                }
                // The GGUF reader decodes through the same code.
                let row = FBuf(fx.cols)
                ggmlDecodeRow(fx.type, raw.baseAddress! + m.rowBytes, row.p, fx.cols)
                #expect((0..<fx.cols).allSatisfy { row.p[$0].bitPattern == fx.expected[fx.cols + $0] }, "\(fx.type) ggmlDecodeRow")
            }
        }
    }

    @Test func matmulAndInputGradientMatchTheFp32Product() throws {
        var rng = Rng(seed: 11)
        // in-features: an odd number of 32-blocks (a tail for the paired AVX-512 loop), two K-blocks.
        for t in quantTypes {
            let inF = t.blockSize == 256 ? 512 : 288
            try checkProducts(t, out: 37, inF: inF, rows: 5, &rng)
        }
        // Larger than the panel budget (2^21 floats), so tiled: tileRows = 256 here, 640 = 256 + 256 + 128
        // rows, and the tiles must cover the rows exactly once.
        try checkProducts(.q4_K, out: 640, inF: 4096, rows: 3, &rng)
    }

    private func checkProducts(_ t: GGMLType, out: Int, inF: Int, rows: Int, _ rng: inout Rng) throws {
        let bytes = randomMatrixBytes(t, out: out, inF: inF, &rng)
        try bytes.withUnsafeBytes { raw in
            let m = try QuantizedMatrix(type: t, outFeatures: out, inFeatures: inF, data: raw.baseAddress!, byteCount: raw.count)
            if out > 256 { #expect(!m.widensWhole && m.tileRows < out, "the matrix must span several panels") }
            let w = FBuf(out * inF)
            m.dequantizeRows(0, out, into: w.p)
            if m.widensWhole {
                // Widened whole, the products are the fp32 path's own sgemm on the widened weight, bit for bit.
                let x = FBuf.random(rows * inF, &rng), dy = FBuf.random(rows * out, &rng)
                let (y, yf) = (FBuf(rows * out), FBuf(rows * out))
                m.matmul(out: y.p, ldo: out, inp: x.p, ldi: inF, rows: rows, beta: 0)
                sgemm(transA: false, transB: true, m: rows, n: out, k: inF, alpha: 1, a: x.p, lda: inF, b: w.p, ldb: inF,
                      beta: 0, c: yf.p, ldc: out)
                #expect((0..<y.n).allSatisfy { y.p[$0].bitPattern == yf.p[$0].bitPattern }, "\(t) whole-panel matmul")
                let (dx, dxf) = (FBuf(rows * inF), FBuf(rows * inF))
                m.matmulInputGradient(dinp: dx.p, lddi: inF, dout: dy.p, lddo: out, rows: rows, accumulate: false)
                sgemm(transA: false, transB: false, m: rows, n: inF, k: out, alpha: 1, a: dy.p, lda: out, b: w.p, ldb: inF,
                      beta: 0, c: dxf.p, ldc: inF)
                #expect((0..<dx.n).allSatisfy { dx.p[$0].bitPattern == dxf.p[$0].bitPattern }, "\(t) whole-panel input gradient")
            }
            let (ldi, ldo) = (inF + 3, out + 2)
            let x = FBuf.random(rows * ldi, &rng)
            let y0 = FBuf.random(rows * ldo, &rng)
            let beta: Float = 0.5
            for isa in QuantISA.available {
                // Forward: y = x·Wᵀ + beta·y0. Error of an fp32 sum against the exact one: ≤ 1e-6 · Σ|x||w| here.
                let y = FBuf(rows * ldo)
                y.p.update(from: y0.p, count: y0.n)
                m.matmul(out: y.p, ldo: ldo, inp: x.p, ldi: ldi, rows: rows, beta: beta, isa: isa)
                var worst = 0.0
                for r in 0..<rows {
                    for o in 0..<out {
                        var s = 0.0, sa = 0.0
                        for i in 0..<inF {
                            let p = Double(x.p[r * ldi + i]) * Double(w.p[o * inF + i])
                            s += p
                            sa += abs(p)
                        }
                        let ref = s + Double(beta) * Double(y0.p[r * ldo + o])
                        let tol = 1e-6 * (sa + abs(Double(beta) * Double(y0.p[r * ldo + o]))) + 1e-30
                        worst = max(worst, abs(Double(y.p[r * ldo + o]) - ref) / tol)
                    }
                    // Padding columns untouched.
                    #expect(y.p[r * ldo + out] == y0.p[r * ldo + out])
                }
                #expect(worst <= 1, "\(t) \(isa) matmul: error \(worst) × the 1e-6 relative bound")
                // With the model's workspace (each thread widens into its own slice of it): the same bits.
                let panel = FBuf(m.panelFloats)
                panel.p.update(repeating: .nan, count: panel.n)
                let yw = FBuf(rows * ldo)
                yw.p.update(from: y0.p, count: y0.n)
                m.matmul(out: yw.p, ldo: ldo, inp: x.p, ldi: ldi, rows: rows, beta: beta, isa: isa, panel: panel.p)
                #expect((0..<y.n).allSatisfy { y.p[$0].bitPattern == yw.p[$0].bitPattern }, "\(t) \(isa) matmul with a workspace")

                // Backward: dinp = dout·W (+ dinp0 when accumulating).
                let (lddo, lddi) = (out + 1, inF + 5)
                let dout = FBuf.random(rows * lddo, &rng)
                let d0 = FBuf.random(rows * lddi, &rng)
                for accumulate in [false, true] {
                    let dinp = FBuf(rows * lddi)
                    dinp.p.update(from: d0.p, count: d0.n)
                    m.matmulInputGradient(dinp: dinp.p, lddi: lddi, dout: dout.p, lddo: lddo, rows: rows,
                                          accumulate: accumulate, isa: isa)
                    var worstG = 0.0
                    for r in 0..<rows {
                        for i in 0..<inF {
                            var s = 0.0, sa = 0.0
                            for o in 0..<out {
                                let p = Double(dout.p[r * lddo + o]) * Double(w.p[o * inF + i])
                                s += p
                                sa += abs(p)
                            }
                            let base = accumulate ? Double(d0.p[r * lddi + i]) : 0
                            let tol = 1e-6 * (sa + abs(base)) + 1e-30
                            worstG = max(worstG, abs(Double(dinp.p[r * lddi + i]) - (s + base)) / tol)
                        }
                        #expect(dinp.p[r * lddi + inF] == d0.p[r * lddi + inF])
                    }
                    #expect(worstG <= 1, "\(t) \(isa) input gradient (accumulate \(accumulate)): error \(worstG) × bound")
                    let dw = FBuf(rows * lddi)
                    dw.p.update(from: d0.p, count: d0.n)
                    panel.p.update(repeating: .nan, count: panel.n)
                    m.matmulInputGradient(dinp: dw.p, lddi: lddi, dout: dout.p, lddo: lddo, rows: rows,
                                          accumulate: accumulate, isa: isa, panel: panel.p)
                    #expect((0..<dinp.n).allSatisfy { dinp.p[$0].bitPattern == dw.p[$0].bitPattern },
                            "\(t) \(isa) input gradient with a workspace (accumulate \(accumulate))")
                }
            }
        }
    }

    @Test func matvecWithEightBitActivationsStaysWithinItsBound() throws {
        var rng = Rng(seed: 12)
        for t in quantTypes {
            for inF in (t.blockSize == 256 ? [256, 768] : [32, 288, 1024]) {
                let out = 29
                let bytes = randomMatrixBytes(t, out: out, inF: inF, &rng)
                try bytes.withUnsafeBytes { raw in
                    let m = try QuantizedMatrix(type: t, outFeatures: out, inFeatures: inF, data: raw.baseAddress!,
                                                byteCount: raw.count)
                    let w = FBuf(out * inF)
                    m.dequantizeRows(0, out, into: w.p)
                    // Heavy-tailed activations: some groups dominated by one outlier.
                    let x = FBuf.random(inF, &rng)
                    for i in stride(from: 5, to: inF, by: 97) { x.p[i] *= 30 }
                    var results: [QuantISA: [Float]] = [:]
                    for isa in QuantISA.available {
                        let y = FBuf(out, value: .nan)
                        m.matvec(out: y.p, inp: x.p, isa: isa)
                        results[isa] = y.array
                        var worst = 0.0
                        for o in 0..<out {
                            var ref = 0.0
                            for i in 0..<inF { ref += Double(w.p[o * inF + i]) * Double(x.p[i]) }
                            let bound = t.isBlockQuantized
                                ? QuantizedMatrix.matvecErrorBound(weightRow: w.p + o * inF, x: x.p, n: inF)
                                : 1e-6 * (0..<inF).reduce(0.0) { $0 + abs(Double(w.p[o * inF + $1]) * Double(x.p[$1])) }
                            worst = max(worst, abs(Double(y.p[o]) - ref) / (bound + 1e-30))
                        }
                        #expect(worst <= 1, "\(t) in=\(inF) \(isa) matvec: error \(worst) × its bound")
                    }
                    // The paths compute the same integer sums; only the float accumulation order differs.
                    if let s = results[.scalar] {
                        for (isa, v) in results where isa != .scalar {
                            let d = zip(s, v).map { abs($0 - $1) / max(1e-6, abs($0)) }.max() ?? 0
                            #expect(d < 1e-4, "\(t) \(isa) vs scalar: relative difference \(d)")
                        }
                    }
                }
            }
        }
        #expect(QuantISA.available.contains(.avx2) || QuantISA.detected == .scalar)
    }

    @Test func activationQuantizationIsTheSameOnEveryPath() {
        var rng = Rng(seed: 14)
        let n = 32 * 67
        for trial in 0..<40 {
            let x = FBuf.random(n, &rng)
            // Ties (k + 0.5 after scaling), an all-zero group, outliers, a NaN and an infinity now and then.
            for i in stride(from: trial % 7, to: n, by: 13) { x.p[i] = Float(Int(rng.nextUInt64() % 255) - 127) * 0.5 }
            for i in 64..<96 { x.p[i] = 0 }
            x.p[Int(rng.nextUInt64() % UInt64(n))] *= 1e4
            if trial % 5 == 1 { x.p[Int(rng.nextUInt64() % UInt64(n))] = .nan }
            if trial % 5 == 2 { x.p[Int(rng.nextUInt64() % UInt64(n))] = -.infinity }
            var outs: [[UInt8]] = []
            for isa in QuantISA.available {
                var q = [Int8](repeating: 0, count: n), d = [Float](repeating: 0, count: n / 32)
                var sums = [Int16](repeating: 0, count: n / 16)
                pk_quantize_act_isa(isa.rawValue, x.p, Int64(n), &q, &d, &sums)
                outs.append(q.map { UInt8(bitPattern: $0) } + d.flatMap { v in (0..<4).map { UInt8(truncatingIfNeeded: v.bitPattern >> (8 * $0)) } }
                            + sums.flatMap { v in [UInt8(truncatingIfNeeded: v), UInt8(truncatingIfNeeded: v >> 8)] })
            }
            #expect(outs.allSatisfy { $0 == outs[0] }, "trial \(trial): the paths quantize differently")
        }
    }

    /// Rows go through the kernels several at a time and the pool splits them by thread count; a row's result
    /// must not depend on either, nor on whether its matrix shares the input with others in one call.
    @Test func matvecRowsDoNotDependOnSplitOrSharing() throws {
        var rng = Rng(seed: 15)
        for t in quantTypes where t.isBlockQuantized {
            let inF = t.blockSize == 256 ? 512 : 96
            let shapes = [37, 6, 130]
            // Copies of the blocks in memory the matrices can point at for the whole test.
            let blocks = shapes.map { out -> UnsafeMutableRawBufferPointer in
                let b = randomMatrixBytes(t, out: out, inF: inF, &rng)
                let p = UnsafeMutableRawBufferPointer.allocate(byteCount: b.count, alignment: 64)
                p.copyBytes(from: b)
                return p
            }
            defer { blocks.forEach { $0.deallocate() } }
            let qs = try zip(shapes, blocks).map { out, b in
                try QuantizedMatrix(type: t, outFeatures: out, inFeatures: inF, data: UnsafeRawPointer(b.baseAddress!),
                                    byteCount: b.count)
            }
            let x = FBuf.random(inF, &rng)
            for isa in QuantISA.available {
                var single: [[Float]] = []
                for m in qs {
                    let y = FBuf(m.outFeatures, value: .nan)
                    withThreads(1) { m.matvec(out: y.p, inp: x.p, isa: isa) }
                    single.append(y.array)
                    // One row per call of the C kernel: no multi-row pass at all.
                    var q = [Int8](repeating: 0, count: inF), d = [Float](repeating: 0, count: inF / 32)
                    var sums = [Int16](repeating: 0, count: inF / 16)
                    pk_quantize_act(x.p, Int64(inF), &q, &d, &sums)
                    let y1 = FBuf(m.outFeatures, value: .nan)
                    for r in 0..<m.outFeatures {
                        pk_matvec_rows(isa.rawValue, Int32(t.rawValue), m.data, m.rowBytes, Int64(r), Int64(r + 1),
                                       Int64(inF), q, d, sums, y1.p)
                    }
                    #expect(y1.array == y.array, "\(t) \(isa): one row per call differs from the multi-row pass")
                    // Calls of 1, 2, 3, 5, 6 and 7 rows from an unaligned start: every row lands in another position
                    // of its group of four (or in the one-row tail) than in the pass over the whole matrix.
                    for chunk in [2, 3, 5, 6, 7] {
                        let yc = FBuf(m.outFeatures, value: .nan)
                        pk_matvec_rows(isa.rawValue, Int32(t.rawValue), m.data, m.rowBytes, 0, 1, Int64(inF), q, d, sums, yc.p)
                        var r = 1
                        while r < m.outFeatures {
                            let e = min(r + chunk, m.outFeatures)
                            pk_matvec_rows(isa.rawValue, Int32(t.rawValue), m.data, m.rowBytes, Int64(r), Int64(e),
                                           Int64(inF), q, d, sums, yc.p)
                            r = e
                        }
                        #expect(yc.array == y.array, "\(t) \(isa): calls of \(chunk) rows differ from the whole pass")
                    }
                }
                for threads in [2, 3] {
                    let ys = qs.map { FBuf($0.outFeatures, value: .nan) }
                    withThreads(threads) {
                        QuantizedMatrix.matvecSharingInput(Array(zip(qs, ys.map(\.p))), inp: x.p, isa: isa)
                    }
                    for (i, y) in ys.enumerated() {
                        #expect(y.array == single[i], "\(t) \(isa) \(threads) threads, shared input: matrix \(i) differs")
                    }
                }
            }
        }
    }

    @Test func matvecPropagatesNonFiniteActivations() throws {
        var rng = Rng(seed: 13)
        let bytes = randomMatrixBytes(.q4_K, out: 3, inF: 256, &rng)
        try bytes.withUnsafeBytes { raw in
            let m = try QuantizedMatrix(type: .q4_K, outFeatures: 3, inFeatures: 256, data: raw.baseAddress!, byteCount: raw.count)
            let x = FBuf.random(256, &rng)
            x.p[100] = .infinity
            for isa in QuantISA.available {
                let y = FBuf(3)
                m.matvec(out: y.p, inp: x.p, isa: isa)
                #expect((0..<3).allSatisfy { y.p[$0].isNaN }, "\(isa)")
            }
        }
    }

    /// Replays fuzz/corpus/quant_blocks with the fuzz target's input layout (type, rows, blocks, seed, data).
    @Test func fuzzCorpusReplaysWithoutTrapping() {
        let types: [GGMLType] = [.q8_0, .q4_0, .q4_1, .q5_0, .q5_1, .q4_K, .q5_K, .q6_K, .f16, .bf16, .f32, .q2_K, .iq4_NL]
        let corpus = TS.fixtures.replacing("/Tests/Fixtures", with: "/fuzz/corpus/quant_blocks")
        var valid = 0
        for entry in quantListDirectory(corpus) {
            guard let input = readFileBytes(corpus + "/" + entry), input.count >= 4 else { continue }
            let type = types[Int(input[0]) % types.count]
            let out = Int(input[1] % 8) + 1
            let inF = (Int(input[2] % 4) + 1) * type.blockSize * (type.blockSize == 1 ? 32 : 1)
            let data = Array(input[4...])
            data.withUnsafeBytes { raw in
                guard let base = raw.baseAddress, let m = try? QuantizedMatrix(type: type, outFeatures: out,
                    inFeatures: inF, data: base, byteCount: raw.count) else { return }
                valid += 1
                let w = FBuf(out * inF), x = FBuf(inF, value: 0.5), y = FBuf(out)
                for isa in QuantISA.available {
                    m.dequantizeRows(0, out, into: w.p, isa: isa)
                    m.matvec(out: y.p, inp: x.p, isa: isa)
                }
            }
        }
        #expect(valid >= 11, "expected the valid seeds of fuzz/corpus/quant_blocks")
    }

    @Test func hostileShapesAndByteCountsThrowClearErrors() {
        let buf = [UInt8](repeating: 0, count: 4096)
        buf.withUnsafeBytes { raw in
            let p = raw.baseAddress!
            func make(_ t: GGMLType, _ out: Int, _ inF: Int, _ bytes: Int) -> PEFTKitError? {
                thrownError { _ = try QuantizedMatrix(type: t, outFeatures: out, inFeatures: inF, data: p, byteCount: bytes, name: "blk.0.ffn_up") }
            }
            // Truncated: 2 rows of one Q8_0 block need 68 bytes.
            let truncated = make(.q8_0, 2, 32, 67)
            #expect(truncated == .format("blk.0.ffn_up: 67 bytes do not hold 2 rows of 32 Q8_0 elements (68 bytes expected)"))
            #expect(make(.q8_0, 2, 32, 68) == nil)
            // In-features not a whole number of blocks.
            if case .format(let msg) = make(.q4_0, 1, 48, 27) {
                #expect(msg.contains("48 in-features is not a whole number of Q4_0 blocks (32 elements each)"))
            } else { Issue.record("Q4_0 with 48 in-features must throw format") }
            // K-quant with in-features a multiple of 32 but not of 256.
            if case .format(let msg) = make(.q4_K, 1, 288, 162) {
                #expect(msg.contains("not a whole number of Q4_K blocks (256 elements each)"))
            } else { Issue.record("Q4_K with 288 in-features must throw format") }
            if case .format = make(.q6_K, 2, 512 + 128, 1000) {} else { Issue.record("Q6_K 640 must throw") }
            // Unsupported types, empty and huge shapes.
            if case .unsupported(let msg) = make(.q2_K, 1, 256, 84) {
                #expect(msg.contains("Q2_K") && msg.contains("Q4_K"))
            } else { Issue.record("Q2_K must throw unsupported") }
            if case .unsupported = make(.iq4_NL, 1, 32, 18) {} else { Issue.record("IQ4_NL must throw unsupported") }
            if case .invalidArgument = make(.q8_0, 0, 32, 0) {} else { Issue.record("0 rows must throw") }
            if case .invalidArgument = make(.q8_0, 1, -32, 0) {} else { Issue.record("negative in must throw") }
            if case .format(let msg) = make(.f32, Int(Int32.max), Int(Int32.max), 4096) {
                #expect(msg.contains("more than Int.max"))
            } else { Issue.record("overflowing size must throw format") }
        }
    }
}
