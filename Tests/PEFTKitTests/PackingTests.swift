import Testing
@testable import PEFTKit

/// A method (nil = full fine-tuning) on a decoder, for the packed-row parity checks.
struct PackCase: CustomStringConvertible, Sendable {
    var arch: Architecture
    var label: String
    var config: (@Sendable (Architecture) -> AdapterConfig)?
    var description: String { "\(arch)/\(label)" }
}

private let packCases: [PackCase] = [Architecture.gpt2, .llama].flatMap { arch -> [PackCase] in [
    PackCase(arch: arch, label: "lora") { _ in var c = LoRAConfig(); c.rank = 4; c.alpha = 8; return .lora(c) },
    PackCase(arch: arch, label: "lora-dora-all") { a in
        var c = LoRAConfig(); c.rank = 4; c.alpha = 8; c.useDoRA = true
        c.targets = LinearSite.sites(a).map { $0.shortName(a) }
        return .lora(c)
    },
    PackCase(arch: arch, label: "ia3") { _ in .ia3(IA3Config()) },
    PackCase(arch: arch, label: "bottleneck-houlsby") { _ in .bottleneck(BottleneckConfig(preset: .houlsby, reductionFactor: 4)) },
    PackCase(arch: arch, label: "full", config: nil),
] }

/// Two packed rows of 12: records of 3, 5 and 2 tokens plus 2 padding positions; records of 6, 4 and 2.
private let recordLengths: [[Int]] = [[3, 5, 2], [6, 4, 2]]
private let T = 12

private struct Packed {
    var ids: [Int32] = [], labels: [Int32] = [], segments: [Int32] = []
    /// (row, start, ids, labels) of each record.
    var records: [(row: Int, start: Int, ids: [Int32], labels: [Int32])] = []
}

private func makePacked(vocab: Int) -> Packed {
    var p = Packed()
    var seed: UInt64 = 40
    for (row, lens) in recordLengths.enumerated() {
        var t = 0
        for (k, n) in lens.enumerated() {
            seed += 1
            let ids = TS.ids(n, vocab: vocab, seed: seed)
            var labels = ids
            if n > 3 { labels[1] = -100 }  // a masked label inside a record stays masked
            p.records.append((row, t, ids, labels))
            p.ids += ids; p.labels += labels; p.segments += [Int32](repeating: Int32(k), count: n)
            t += n
        }
        // Padding: its own segment, no label.
        p.ids += [Int32](repeating: 0, count: T - t)
        p.labels += [Int32](repeating: -100, count: T - t)
        p.segments += [Int32](repeating: 99, count: T - t)
    }
    return p
}

private func relDiff(_ a: [Float], _ b: [Float]) -> Float {
    TS.maxAbsDiff(a, b) / max(TS.maxAbs(b), 1e-12)
}

private func makeModel(_ pc: PackCase) throws -> Model {
    let cfg = TS.tinyConfig(pc.arch)
    let model = try Model.create(config: cfg, seed: 21, initStd: 0.1)
    if let make = pc.config {
        try model.attachAdapter(name: "a", config: make(pc.arch))
        try model.setActiveAdapter("a")
        // Away from the initialisation (LoRA's B is zero, IA3's scales one).
        let slot = try model.engine.adapter(named: "a")
        TS.perturb(slot, seed: 3, scale: 0.3)
        slot.adapter.parametersChanged()
    } else {
        try model.enableFullFineTuning()
    }
    return model
}

private func gradients(_ model: Model) throws -> [Float] {
    try model.withGradients { Array($0) }
}

@Suite struct Packing {
    /// A packed row's logits, loss and gradients equal the records run one by one (≤ 1e-5 relative).
    @Test(arguments: packCases)
    func packedRowsEqualRecordsOneByOne(_ pc: PackCase) throws {
        let model = try makeModel(pc)
        let V = model.config.vocabSize
        let p = makePacked(vocab: V)
        let B = recordLengths.count

        // Logits and loss.
        let (packedLogits, packedEval) = try model.forward(inputIDs: p.ids, labels: p.labels, segmentIDs: p.segments,
                                                           batch: B, seqLen: T)
        var lossSum = 0.0, tokens = 0
        var worstLogits: Float = 0
        for r in p.records {
            let n = r.ids.count
            let (lg, ev) = try model.forward(inputIDs: r.ids, labels: r.labels, batch: 1, seqLen: n)
            let off = (r.row * T + r.start) * V
            worstLogits = max(worstLogits, relDiff(Array(packedLogits[off..<(off + n * V)]), lg))
            lossSum += Double(ev.loss) * Double(ev.tokens)
            tokens += ev.tokens
        }
        #expect(worstLogits <= 1e-5, "\(pc): logits differ by \(worstLogits) relative")
        #expect(packedEval.tokens == tokens)
        let refLoss = Float(lossSum / Double(tokens))
        #expect(abs(packedEval.loss - refLoss) <= 1e-5 * abs(refLoss), "\(pc): loss \(packedEval.loss) vs \(refLoss)")

        // Gradients of the summed loss over all records (the same divisor on both sides).
        var tc = TrainConfig(); tc.learningRate = 0; tc.weightDecay = 0
        let (_, packedTokens) = try p.ids.withUnsafeBufferPointer { ids in
            try p.labels.withUnsafeBufferPointer { lb in
                try p.segments.withUnsafeBufferPointer { sg in
                    try model.computeGradients(inputIDs: ids, labels: lb, batch: B, seqLen: T, config: tc,
                                               lossDivisor: tokens, segmentIDs: sg)
                }
            }
        }
        #expect(packedTokens == tokens)
        let gPacked = try gradients(model)
        var gRef = [Float](repeating: 0, count: gPacked.count)
        for r in p.records {
            _ = try r.ids.withUnsafeBufferPointer { ids in
                try r.labels.withUnsafeBufferPointer { lb in
                    try model.computeGradients(inputIDs: ids, labels: lb, batch: 1, seqLen: r.ids.count, config: tc,
                                               lossDivisor: tokens)
                }
            }
            let g = try gradients(model)
            for i in 0..<g.count { gRef[i] += g[i] }
        }
        #expect(TS.maxAbs(gRef) > 1e-4)
        let gd = relDiff(gPacked, gRef)
        print("\(pc): packed vs one by one: logits \(worstLogits), grads \(gd) relative")
        #expect(gd <= 1e-5, "\(pc): gradients differ by \(gd) relative")

        // Micro-batches of one row give the same gradient.
        tc.microBatchSize = 1
        _ = try p.ids.withUnsafeBufferPointer { ids in
            try p.labels.withUnsafeBufferPointer { lb in
                try p.segments.withUnsafeBufferPointer { sg in
                    try model.computeGradients(inputIDs: ids, labels: lb, batch: B, seqLen: T, config: tc,
                                               lossDivisor: tokens, segmentIDs: sg)
                }
            }
        }
        #expect(relDiff(try gradients(model), gRef) <= 1e-5)

        // So does gradient checkpointing (the recomputed layers see the same records).
        tc.microBatchSize = 0
        tc.gradientCheckpointing = true
        _ = try p.ids.withUnsafeBufferPointer { ids in
            try p.labels.withUnsafeBufferPointer { lb in
                try p.segments.withUnsafeBufferPointer { sg in
                    try model.computeGradients(inputIDs: ids, labels: lb, batch: B, seqLen: T, config: tc,
                                               lossDivisor: tokens, segmentIDs: sg)
                }
            }
        }
        #expect(relDiff(try gradients(model), gRef) <= 1e-5)
    }

    /// Finite differences of the packed loss against the packed backward.
    @Test(arguments: packCases.filter { $0.label == "lora" || $0.label == "bottleneck-houlsby" })
    func packedGradientsMatchFiniteDifferences(_ pc: PackCase) throws {
        let model = try makeModel(pc)
        let p = makePacked(vocab: model.config.vocabSize)
        let B = recordLengths.count
        var tc = TrainConfig(); tc.learningRate = 0; tc.weightDecay = 0
        _ = try model.trainStep(inputIDs: p.ids, labels: p.labels, segmentIDs: p.segments, batch: B, seqLen: T, config: tc)
        let slot = try model.engine.adapter(named: "a")
        let g = slot.opt.grads.floats, params = slot.adapter.params.floats
        func loss() throws -> Double {
            slot.adapter.parametersChanged()
            return Double(try model.forward(inputIDs: p.ids, labels: p.labels, segmentIDs: p.segments, batch: B, seqLen: T).result.loss)
        }
        var rng = Rng(seed: 9)
        var maxErr = 0.0, maxG = 0.0
        for _ in 0..<40 {
            let i = Int(rng.nextUInt64() % UInt64(slot.parameterCount))
            let old = params[i], eps: Float = 2e-3
            params[i] = old + eps; let fp = try loss()
            params[i] = old - eps; let fm = try loss()
            params[i] = old
            let num = (fp - fm) / Double(2 * eps)
            maxErr = max(maxErr, abs(num - Double(g[i])))
            maxG = max(maxG, abs(num))
        }
        _ = try loss()
        print("\(pc) packed: max |fd - analytic| = \(maxErr), max |grad| = \(maxG)")
        #expect(maxG > 1e-4)
        #expect(maxErr < 2e-3 * max(0.1, maxG))
    }

    /// Prompt and prefix tuning put positions before the sequence that belong to one record: refused, clearly.
    @Test(arguments: [Architecture.gpt2, .llama])
    func virtualTokenMethodsRefusePacking(_ arch: Architecture) throws {
        let cfg = TS.tinyConfig(arch)
        let model = try Model.create(config: cfg, seed: 2, initStd: 0.1)
        var pre = PrefixConfig(); pre.virtualTokens = 2
        var pro = PromptConfig(); pro.virtualTokens = 2
        try model.attachAdapter(name: "prefix", config: .prefix(pre))
        try model.attachAdapter(name: "prompt", config: .prompt(pro))
        let p = makePacked(vocab: cfg.vocabSize)
        for name in ["prefix", "prompt"] {
            try model.setActiveAdapter(name)
            let before = try model.withTrainableParameters { Array($0) }
            do {
                _ = try model.trainStep(inputIDs: p.ids, segmentIDs: p.segments, batch: 2, seqLen: T, config: TrainConfig())
                Issue.record("\(name): packed rows were accepted")
            } catch let e as PEFTKitError {
                guard case .unsupported(let m) = e else { Issue.record("\(name): \(e)"); continue }
                #expect(m.contains("packed"))
            }
            #expect(try model.withTrainableParameters { Array($0) } == before)
            #expect(throws: PEFTKitError.self) {
                try model.forward(inputIDs: p.ids, segmentIDs: p.segments, batch: 2, seqLen: T)
            }
        }
    }

    @Test func encodersRefusePacking() throws {
        let cfg = TS.tinyConfig(.bert)
        let model = try Model.create(config: cfg, seed: 2, initStd: 0.1)
        let ids = TS.ids(2 * 6, vocab: cfg.vocabSize, seed: 1)
        do {
            _ = try model.forward(inputIDs: ids, segmentIDs: [Int32](repeating: 0, count: 12), batch: 2, seqLen: 6)
            Issue.record("an encoder accepted packed rows")
        } catch let e as PEFTKitError {
            guard case .unsupported = e else { Issue.record("\(e)"); return }
        }
    }

    @Test func segmentIDsOfTheWrongLengthAreRefused() throws {
        let cfg = TS.tinyConfig(.gpt2)
        let model = try Model.create(config: cfg, seed: 2, initStd: 0.1)
        try model.attachAdapter(name: "a", config: .lora(LoRAConfig()))
        try model.setActiveAdapter("a")
        let ids = TS.ids(2 * 6, vocab: cfg.vocabSize, seed: 1)
        #expect(throws: PEFTKitError.self) {
            try model.trainStep(inputIDs: ids, segmentIDs: [Int32](repeating: 0, count: 11), batch: 2, seqLen: 6,
                                config: TrainConfig())
        }
    }

    /// One segment per row is the unpacked computation.
    @Test func oneSegmentPerRowEqualsNoSegments() throws {
        let cfg = TS.tinyConfig(.llama)
        let model = try Model.create(config: cfg, seed: 5, initStd: 0.1)
        let ids = TS.ids(2 * 9, vocab: cfg.vocabSize, seed: 3)
        let a = try model.forward(inputIDs: ids, batch: 2, seqLen: 9)
        let b = try model.forward(inputIDs: ids, segmentIDs: [Int32](repeating: 7, count: 18), batch: 2, seqLen: 9)
        #expect(relDiff(b.logits, a.logits) <= 1e-6)
        #expect(a.result.tokens == b.result.tokens)
    }
}

@Suite struct DatasetPacking {
    private func example(_ n: Int, _ tag: Int32) -> DatasetExample {
        let ids = (0..<n).map { tag * 100 + Int32($0) }
        var labels = ids
        labels[0] = -100
        return DatasetExample(inputIDs: ids, labels: labels)
    }

    @Test func firstFitDecreasingKeepsEveryTokenOnce() throws {
        let lens = [5, 9, 3, 12, 2, 7, 4, 4, 1, 15]
        let examples = lens.enumerated().map { example($1, Int32($0)) }
        let rows = try SequencePacking.pack(examples, seqLen: 12)
        // Longest first (cut lengths; ties in input order) into the first row with room: 12 | 15 cut to 12 | 9+3 | 7+5 | 4+4+2+1.
        #expect(rows.map { $0.inputIDs.count } == [12, 12, 12, 12, 11])
        #expect(rows.map { $0.inputIDs[0] } == [300, 900, 100, 500, 600])
        #expect(rows[2].segmentIDs == [Int32](repeating: 0, count: 9) + [1, 1, 1])
        for r in rows {
            #expect(r.inputIDs.count <= 12)
            #expect(r.segmentIDs?.count == r.inputIDs.count)
            #expect(r.labels.count == r.inputIDs.count)
            // Segment ids are 0, 1, ... in row order, each record contiguous.
            var expected: Int32 = 0
            for t in 1..<r.inputIDs.count where r.segmentIDs![t] != r.segmentIDs![t - 1] {
                expected += 1
                #expect(r.segmentIDs![t] == expected)
            }
        }
        // Every record's tokens appear exactly once (cut to 12), in order, with their labels.
        let all = rows.flatMap(\.inputIDs)
        let want = examples.flatMap { $0.inputIDs.prefix(12) }
        #expect(all.sorted() == want.sorted())
        #expect(rows.flatMap(\.labels).filter { $0 == -100 }.count == lens.count)
        // Deterministic.
        #expect(try SequencePacking.pack(examples, seqLen: 12) == rows)
    }

    @Test func batchOfPackedRowsCarriesSegments() throws {
        let rows = try SequencePacking.pack([example(3, 1), example(4, 2), example(2, 3)], seqLen: 8)
        #expect(rows.count == 2)
        let b = try TokenBatch(rows, seqLen: 8, padID: 0)
        // Row 0: records of 4 and 3 + one padding position (own segment); row 1: the record of 2 + 6 padding.
        #expect(b.segmentIDs == [0, 0, 0, 0, 1, 1, 1, 2, 0, 0, 1, 1, 1, 1, 1, 1])
        #expect(b.realTokens == 9)
        // Labels after each record's first position count (3 + 2 in row 0, 1 in row 1); a record start never does.
        #expect(b.trainedTokens == 3 + 2 + 1)
        #expect(try TokenBatch([example(3, 1)], seqLen: 4, padID: 0).segmentIDs == nil)
        #expect(throws: PEFTKitError.self) { try SequencePacking.pack(rows, seqLen: 8) }
        #expect(throws: PEFTKitError.self) { try SequencePacking.pack([example(3, 1)], seqLen: 1) }
    }
}
