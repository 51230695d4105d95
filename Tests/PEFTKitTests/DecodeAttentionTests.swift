import Testing
#if canImport(Glibc)
import Glibc
#endif
@testable import PEFTKit

/// The decode step's attention (one query per sequence over a key/value cache, `attentionForwardOneQuery`)
/// against softmax(q·kᵀ/√D)·v computed in double, with grouped key/value heads, head sizes that are and are not
/// a multiple of the vector width, caches laid out with a row stride wider than a head (as the fused q/k/v
/// buffer and the KV cache are), and every depth from one key to a few hundred.
@Suite struct DecodeAttentionTests {
    struct Case: CustomStringConvertible, Sendable {
        let batch, heads, kvHeads, headDim, pastLen: Int
        var description: String { "B\(batch) H\(heads)/\(kvHeads) D\(headDim) past \(pastLen)" }
    }
    static let cases = [
        Case(batch: 2, heads: 6, kvHeads: 2, headDim: 64, pastLen: 0),
        Case(batch: 2, heads: 6, kvHeads: 2, headDim: 64, pastLen: 300),
        Case(batch: 1, heads: 9, kvHeads: 3, headDim: 64, pastLen: 511),
        Case(batch: 3, heads: 4, kvHeads: 4, headDim: 40, pastLen: 77),
        Case(batch: 1, heads: 2, kvHeads: 1, headDim: 24, pastLen: 5),
        Case(batch: 2, heads: 8, kvHeads: 2, headDim: 128, pastLen: 129),
    ]

    @Test(arguments: cases)
    func matchesDoubleReference(_ c: Case) throws {
        let (B, H, KVH, D) = (c.batch, c.heads, c.kvHeads, c.headDim)
        let tk = c.pastLen + 1 + 3  // room past the visible keys: they must not be read
        let qld = (H + 2 * KVH) * D + 5, kld = 2 * KVH * D + 3
        var state: UInt64 = 0x9E37_79B9 &+ UInt64(c.pastLen * 131 + D)
        func rnd() -> Float {
            state = state &* 6364136223846793005 &+ 1442695040888963407
            return Float(Int64(bitPattern: state >> 11) % 2_000_001 - 1_000_000) / 1_000_000 * 2
        }
        var q = (0..<(B * qld)).map { _ in rnd() }
        var kv = (0..<(B * tk * kld)).map { _ in rnd() }
        // Keys and values past the visible ones are NaN: reading them would show.
        for b in 0..<B { for j in (c.pastLen + 1)..<tk { for i in 0..<kld { kv[(b * tk + j) * kld + i] = .nan } } }
        var out = [Float](repeating: .nan, count: B * H * D)
        var probs = [Float](repeating: .nan, count: B * H * tk)
        let s = AttentionShape(batch: B, tq: 1, tk: tk, pastLen: c.pastLen, heads: H, kvHeads: KVH, headDim: D)
        q.withUnsafeMutableBufferPointer { qp in
            kv.withUnsafeMutableBufferPointer { kvp in
                out.withUnsafeMutableBufferPointer { op in
                    probs.withUnsafeMutableBufferPointer { pp in
                        let k = StridedRows(ptr: kvp.baseAddress!, ld: kld, batchStride: tk * kld)
                        let v = StridedRows(ptr: kvp.baseAddress! + KVH * D, ld: kld, batchStride: tk * kld)
                        attentionForward(out: StridedRows(ptr: op.baseAddress!, ld: H * D, batchStride: H * D),
                                         probs: pp.baseAddress!, q: StridedRows(ptr: qp.baseAddress!, ld: qld, batchStride: qld),
                                         k: k, v: v, s)
                    }
                }
            }
        }
        var maxErr = 0.0, maxPErr = 0.0
        let valid = c.pastLen + 1
        for b in 0..<B {
            for h in 0..<H {
                let kvh = h / (H / KVH)
                var sc = [Double](repeating: 0, count: valid)
                for j in 0..<valid {
                    var d = 0.0
                    for i in 0..<D { d += Double(q[b * qld + h * D + i]) * Double(kv[(b * tk + j) * kld + kvh * D + i]) }
                    sc[j] = d / Double(D).squareRoot()
                }
                let m = sc.max()!
                let e = sc.map { exp($0 - m) }, z = e.reduce(0, +)
                for j in 0..<valid { maxPErr = max(maxPErr, abs(Double(probs[(b * H + h) * tk + j]) - e[j] / z)) }
                for i in 0..<D {
                    var o = 0.0
                    for j in 0..<valid { o += e[j] / z * Double(kv[(b * tk + j) * kld + KVH * D + kvh * D + i]) }
                    maxErr = max(maxErr, abs(Double(out[(b * H + h) * D + i]) - o))
                }
            }
        }
        print("\(c): max |out - ref| = \(maxErr), max |p - ref| = \(maxPErr)")
        #expect(out.allSatisfy { $0.isFinite })
        #expect(maxErr < 2e-5)
        #expect(maxPErr < 1e-5)
    }
}

