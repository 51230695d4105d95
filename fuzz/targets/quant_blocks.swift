// QuantizedMatrix: a [out, in] weight in ggml blocks (Kernels/QuantizedMatrix.swift, Sources/CPEFTKitKernels).
// Input: byte 0 picks the type, byte 1 the rows (1-8), byte 2 the blocks per row (1-4), byte 3 seeds the
// activation; the rest is the block data, whatever its length (a wrong length must throw). A matrix that
// validates is dequantised on every instruction-set path (bit-identical where not NaN), and its matvec and
// matmul must stay within their error bounds of the product with the dequantised weight.

@testable import PEFTKit

enum Target {
    static let types: [GGMLType] = [.q8_0, .q4_0, .q4_1, .q5_0, .q5_1, .q4_K, .q5_K, .q6_K, .f16, .bf16, .f32, .q2_K, .iq4_NL]

    static func setUp() throws {}

    static func run(_ input: [UInt8]) {
        guard input.count >= 4 else { return }
        let type = types[Int(input[0]) % types.count]
        let out = Int(input[1] % 8) + 1
        let inF = (Int(input[2] % 4) + 1) * type.blockSize * (type.blockSize == 1 ? 32 : 1)
        let data = Array(input[4...])
        data.withUnsafeBytes { raw in
            let base = raw.baseAddress ?? UnsafeRawPointer(bitPattern: 16)!
            guard let m = try? QuantizedMatrix(type: type, outFeatures: out, inFeatures: inF, data: base,
                                               byteCount: raw.count, name: "fuzz") else { return }
            let n = out * inF
            let w = UnsafeMutablePointer<Float>.allocate(capacity: n)
            let w2 = UnsafeMutablePointer<Float>.allocate(capacity: n)
            defer { w.deallocate(); w2.deallocate() }
            m.dequantizeRows(0, out, into: w, isa: .scalar)
            for isa in QuantISA.available where isa != .scalar {
                m.dequantizeRows(0, out, into: w2, isa: isa)
                for i in 0..<n where w[i].bitPattern != w2[i].bitPattern && !(w[i].isNaN && w2[i].isNaN) {
                    fatalError("\(type) \(isa): element \(i) dequantises to \(w2[i]), scalar gives \(w[i])")
                }
            }
            // Only finite weights of moderate size have a meaningful bound (the scales are random fp16).
            guard (0..<n).allSatisfy({ w[$0].isFinite && abs(w[$0]) < 1e6 }) else { return }
            var rng = Rng(seed: UInt64(input[3]))
            let x = UnsafeMutablePointer<Float>.allocate(capacity: 2 * inF)
            let y = UnsafeMutablePointer<Float>.allocate(capacity: 2 * out)
            defer { x.deallocate(); y.deallocate() }
            for i in 0..<(2 * inF) { x[i] = rng.normal() }
            for isa in QuantISA.available {
                m.matvec(out: y, inp: x, isa: isa)
                for o in 0..<out {
                    var ref = 0.0, sa = 0.0
                    for i in 0..<inF {
                        ref += Double(w[o * inF + i]) * Double(x[i])
                        sa += abs(Double(w[o * inF + i]) * Double(x[i]))
                    }
                    let bound = type.isBlockQuantized
                        ? QuantizedMatrix.matvecErrorBound(weightRow: w + o * inF, x: x, n: inF) : 1e-6 * sa
                    if !(abs(Double(y[o]) - ref) <= bound + 1e-30) {
                        fatalError("\(type) \(isa) matvec row \(o): \(y[o]) vs \(ref), bound \(bound)")
                    }
                }
                m.matmul(out: y, ldo: out, inp: x, ldi: inF, rows: 2, beta: 0, isa: isa)
                for r in 0..<2 {
                    for o in 0..<out {
                        var ref = 0.0, sa = 0.0
                        for i in 0..<inF {
                            ref += Double(w[o * inF + i]) * Double(x[r * inF + i])
                            sa += abs(Double(w[o * inF + i]) * Double(x[r * inF + i]))
                        }
                        if !(abs(Double(y[r * out + o]) - ref) <= 1e-6 * sa + 1e-30) {
                            fatalError("\(type) \(isa) matmul [\(r), \(o)]: \(y[r * out + o]) vs \(ref)")
                        }
                    }
                }
            }
        }
    }

    static func seeds() throws -> [String: [UInt8]] {
        var seeds: [String: [UInt8]] = [:]
        var rng = Rng(seed: 7)
        for (k, t) in types.enumerated() {
            let out = 2, blocks = 1
            let inF = blocks * t.blockSize * (t.blockSize == 1 ? 32 : 1)
            var data = (0..<(out * inF / t.blockSize * t.blockBytes)).map { _ in UInt8(truncatingIfNeeded: rng.nextUInt64()) }
            // Small finite fp16 scales where the block format has them at the start (d, m / dmin).
            if t.blockSize > 1 && t != .q6_K {
                for b in stride(from: 0, to: data.count, by: t.blockBytes) {
                    data[b] = 0x00; data[b + 1] = 0x20  // 2^-7
                    if t.blockBytes > 2, [.q4_1, .q5_1, .q4_K, .q5_K].contains(t) { data[b + 2] = 0x00; data[b + 3] = 0x1c }
                }
            }
            seeds["\(t)-valid"] = [UInt8(k), UInt8(out - 1), UInt8(blocks - 1), 3] + data
            seeds["\(t)-truncated"] = [UInt8(k), UInt8(out - 1), UInt8(blocks - 1), 3] + data.dropLast()
        }
        seeds["empty"] = []
        return seeds
    }
}
