import Testing
@testable import PEFTKit

/// The train step in two halves (computeGradients, applyGradients) around a host's change to the gradients.
@Suite struct SplitStepTests {
    static func model(_ arch: Architecture, _ config: AdapterConfig) throws -> Model {
        let m = try Model.create(config: TS.tinyConfig(arch), seed: 3)
        try m.attachAdapter(name: "a", config: config)
        try m.setActiveAdapter("a")
        return m
    }

    static func params(_ m: Model) throws -> [UInt32] { try m.withTrainableParameters { $0.map { $0.bitPattern } } }

    static let configs: [(Architecture, AdapterConfig)] = [
        (.gpt2, .lora({ var l = LoRAConfig(); l.dropout = 0.2; return l }())), (.llama, .prefix(PrefixConfig())),
        (.llama, .bottleneck(BottleneckConfig(preset: .houlsby, reductionFactor: 4))),
    ]

    @Test(arguments: 0..<configs.count)
    func halvesEqualTheOneCallStep(_ i: Int) throws {
        let (arch, cfg) = SplitStepTests.configs[i]
        let a = try SplitStepTests.model(arch, cfg), b = try SplitStepTests.model(arch, cfg)
        let ids: [Int32] = (0..<24).map { Int32(($0 * 7 + 3) % 37) }
        var tc = TrainConfig(); tc.learningRate = 1e-2; tc.maxGradNorm = 0.5
        for _ in 0..<3 {
            let r1 = try a.trainStep(inputIDs: ids, batch: 2, seqLen: 12, config: tc)
            let (loss, tokens) = try ids.withUnsafeBufferPointer { try b.computeGradients(inputIDs: $0, batch: 2, seqLen: 12, config: tc) }
            let r2 = try b.applyGradients(config: tc)
            #expect(r1 == r2 && loss == r1.loss && tokens == r1.tokens)
            #expect(try SplitStepTests.params(a) == SplitStepTests.params(b), "bit-identical weights")
        }
    }

    /// Two "ranks" with half the batch each, gradients of Σ loss / global tokens summed by the host, give the
    /// one-process step on the whole batch (to rounding: the sums are added in another order).
    @Test func twoHalvesSummedEqualTheWholeBatch() throws {
        let cfg = AdapterConfig.lora(LoRAConfig())
        let whole = try SplitStepTests.model(.llama, cfg)
        let r0 = try SplitStepTests.model(.llama, cfg), r1 = try SplitStepTests.model(.llama, cfg)
        let ids: [Int32] = (0..<48).map { Int32(($0 * 11 + 5) % 37) }
        var tc = TrainConfig(); tc.learningRate = 1e-2
        let ref = try whole.trainStep(inputIDs: ids, batch: 4, seqLen: 12, config: tc)
        let total = ref.tokens
        let half0 = Array(ids[0..<24]), half1 = Array(ids[24..<48])
        let l0 = try half0.withUnsafeBufferPointer { try r0.computeGradients(inputIDs: $0, batch: 2, seqLen: 12, config: tc, lossDivisor: total) }
        let l1 = try half1.withUnsafeBufferPointer { try r1.computeGradients(inputIDs: $0, batch: 2, seqLen: 12, config: tc, lossDivisor: total) }
        #expect(abs((l0.loss + l1.loss) - ref.loss) <= 1e-6 * abs(ref.loss))
        let g0 = try r0.withGradients { Array($0) }, g1 = try r1.withGradients { Array($0) }
        let sum = zip(g0, g1).map { $0 + $1 }
        for m in [r0, r1] { try m.withGradients { g in for i in g.indices { g[i] = sum[i] } } }
        _ = try r0.applyGradients(config: tc)
        _ = try r1.applyGradients(config: tc)
        #expect(try SplitStepTests.params(r0) == SplitStepTests.params(r1), "ranks hold bit-identical weights")
        let w = try whole.withTrainableParameters { Array($0) }, p = try r0.withTrainableParameters { Array($0) }
        let maxDiff = zip(w, p).map { abs($0 - $1) }.max() ?? 0
        let maxRef = w.map { abs($0) }.max() ?? 1
        #expect(maxDiff <= 1e-6 * maxRef, "max |diff| \(maxDiff) of max |w| \(maxRef)")
    }

    /// A batch that the micro-batch size does not divide runs as near-equal parts, smaller first (5 rows, size 3:
    /// 2 + 3), the split of MPI ranks: one process equals the "ranks" (each part's gradient of Σ loss / global
    /// tokens, added in part order) bit for bit, and the whole batch at once to rounding.
    @Test func unevenMicroBatchesAreTheRanksSplit() throws {
        let cfg = AdapterConfig.lora(LoRAConfig())
        let one = try SplitStepTests.model(.llama, cfg), whole = try SplitStepTests.model(.llama, cfg)
        let ranks = [try SplitStepTests.model(.llama, cfg), try SplitStepTests.model(.llama, cfg)]
        let T = 12, ids: [Int32] = (0..<(5 * 12)).map { Int32(($0 * 13 + 2) % 37) }
        var tc = TrainConfig(); tc.learningRate = 1e-2; tc.maxGradNorm = 0.5
        var mb = tc; mb.microBatchSize = 3
        for _ in 0..<3 {
            let r = try one.trainStep(inputIDs: ids, batch: 5, seqLen: T, config: mb)
            _ = try whole.trainStep(inputIDs: ids, batch: 5, seqLen: T, config: tc)
            var grads: [[Float]] = []
            for (k, rows) in [0..<2, 2..<5].enumerated() {
                let part = Array(ids[(rows.lowerBound * T)..<(rows.upperBound * T)])
                _ = try part.withUnsafeBufferPointer {
                    try ranks[k].computeGradients(inputIDs: $0, batch: rows.count, seqLen: T, config: tc, lossDivisor: r.tokens)
                }
                grads.append(try ranks[k].withGradients { Array($0) })
            }
            let sum = zip(grads[0], grads[1]).map { $0 + $1 }
            for m in ranks {
                try m.withGradients { g in for i in g.indices { g[i] = sum[i] } }
                _ = try m.applyGradients(config: tc)
            }
            #expect(try SplitStepTests.params(one) == SplitStepTests.params(ranks[0]), "bit-identical to the ranks")
            #expect(try SplitStepTests.params(ranks[1]) == SplitStepTests.params(ranks[0]))
        }
        let w = try whole.withTrainableParameters { Array($0) }, p = try one.withTrainableParameters { Array($0) }
        let maxDiff = zip(w, p).map { abs($0 - $1) }.max() ?? 0, maxRef = w.map { abs($0) }.max() ?? 1
        #expect(maxDiff <= 1e-5 * maxRef, "max |diff| \(maxDiff) of max |w| \(maxRef)")
    }

    @Test func applyWithoutGradientsOrAfterAChangeIsRefused() throws {
        let m = try SplitStepTests.model(.gpt2, .lora(LoRAConfig()))
        let tc = TrainConfig()
        #expect(throws: PEFTKitError.self) { try m.applyGradients(config: tc) }
        let ids: [Int32] = Array(0..<16)
        _ = try ids.withUnsafeBufferPointer { try m.computeGradients(inputIDs: $0, batch: 2, seqLen: 8, config: tc) }
        _ = try m.applyGradients(config: tc)
        #expect(throws: PEFTKitError.self) { try m.applyGradients(config: tc) }  // used up
        _ = try ids.withUnsafeBufferPointer { try m.computeGradients(inputIDs: $0, batch: 2, seqLen: 8, config: tc) }
        try m.attachAdapter(name: "b", config: LoRAConfig())
        try m.setActiveAdapter("b")
        #expect(throws: PEFTKitError.self) { try m.applyGradients(config: tc) }  // another adapter's gradients
        // A host that writes NaN into the buffer gets a refusal and unchanged weights.
        try m.setActiveAdapter("a")
        let before = try SplitStepTests.params(m)
        _ = try ids.withUnsafeBufferPointer { try m.computeGradients(inputIDs: $0, batch: 2, seqLen: 8, config: tc) }
        try m.withGradients { $0[0] = .nan }
        #expect(throws: PEFTKitError.self) { try m.applyGradients(config: tc) }
        #expect(try SplitStepTests.params(m) == before)
    }
}
