import Testing
@testable import PEFTKit

/// Central finite differences of `f` with respect to `x[i]`.
private func fd(_ x: UnsafeMutablePointer<Float>, _ i: Int, eps: Float, _ f: () throws -> Double) rethrows -> Double {
    let old = x[i]
    x[i] = old + eps
    let fp = try f()
    x[i] = old - eps
    let fm = try f()
    x[i] = old
    return (fp - fm) / Double(2 * eps)
}

@Suite struct AttentionAndLinearGradients {
    @Test(arguments: [(4, 4), (4, 2), (6, 1)])
    func attentionMatchesFiniteDifferences(heads: Int, kvHeads: Int) throws {
        let B = 2, T = 5, D = 4
        let s = AttentionShape(batch: B, tq: T, tk: T, pastLen: 0, heads: heads, kvHeads: kvHeads, headDim: D)
        let ld = (heads + 2 * kvHeads) * D, hd = heads * D
        let qkv = try Tensor(zeros: [B * T, ld]), out = try Tensor(zeros: [B * T, hd])
        let probs = try Tensor(zeros: [B, heads, T, T]), dprobs = try Tensor(zeros: [B, heads, T, T])
        let dqkv = try Tensor(zeros: [B * T, ld]), r = try Tensor(zeros: [B * T, hd])
        var rng = Rng(seed: 7)
        fillNormal(qkv.data, qkv.count, std: 1, rng: &rng)
        fillNormal(r.data, r.count, std: 1, rng: &rng)
        func rows(_ p: UnsafeMutablePointer<Float>) -> StridedRows { StridedRows(ptr: p, ld: ld, batchStride: T * ld) }
        let o = StridedRows(ptr: out.data, ld: hd, batchStride: T * hd)
        func loss() -> Double {
            attentionForward(out: o, probs: probs.data, q: rows(qkv.data), k: rows(qkv.data + hd), v: rows(qkv.data + hd + kvHeads * D), s)
            var acc = 0.0
            for i in 0..<out.count { acc += Double(out.data[i]) * Double(r.data[i]) }
            return acc
        }
        _ = loss()
        attentionBackward(dq: rows(dqkv.data), dk: rows(dqkv.data + hd), dv: rows(dqkv.data + hd + kvHeads * D),
                          dprobs: dprobs.data, dout: StridedRows(ptr: r.data, ld: hd, batchStride: T * hd), probs: probs.data,
                          q: rows(qkv.data), k: rows(qkv.data + hd), v: rows(qkv.data + hd + kvHeads * D), s)
        var maxErr = 0.0
        for i in 0..<qkv.count {
            let num = fd(qkv.data, i, eps: 1e-2, loss)
            let err = abs(num - Double(dqkv.data[i])) / max(1, abs(num))
            maxErr = max(maxErr, err)
        }
        print("attention H=\(heads) KVH=\(kvHeads): max rel err \(maxErr)")
        #expect(maxErr < 2e-3)
    }

    @Test(arguments: [false, true])
    func linearMatchesFiniteDifferences(transposed: Bool) throws {
        let N = 3, I = 5, O = 4
        let w = try Tensor(zeros: transposed ? [I, O] : [O, I]), b = try Tensor(zeros: [O])
        let x = try Tensor(zeros: [N, I]), y = try Tensor(zeros: [N, O]), r = try Tensor(zeros: [N, O])
        let dw = try Tensor(zeros: w.shape), db = try Tensor(zeros: [O]), dx = try Tensor(zeros: [N, I])
        var rng = Rng(seed: 3)
        for t in [w, b, x, r] { fillNormal(t.data, t.count, std: 1, rng: &rng) }
        let lin = FrozenLinear(weight: w.data, bias: b.data, inFeatures: I, outFeatures: O, transposed: transposed)
        func loss() -> Double {
            lin.forward(out: y.data, inp: x.data, rows: N)
            return (0..<y.count).reduce(0.0) { $0 + Double(y.data[$1]) * Double(r.data[$1]) }
        }
        lin.backwardInput(dinp: dx.data, dout: r.data, rows: N, accumulate: false)
        lin.backwardWeights(dweight: dw.data, dbias: db.data, dout: r.data, inp: x.data, rows: N)
        var maxErr = 0.0
        for (t, g) in [(w, dw), (b, db), (x, dx)] {
            for i in 0..<t.count {
                let num = fd(t.data, i, eps: 1e-2, loss)
                maxErr = max(maxErr, abs(num - Double(g.data[i])) / max(1, abs(num)))
            }
        }
        print("linear transposed=\(transposed): max rel err \(maxErr)")
        #expect(maxErr < 1e-3)
    }
}

/// Options that change the adapter's graph.
struct AdapterCase: CustomStringConvertible, Sendable {
    var arch: Architecture
    var preset: BottleneckConfig.Preset
    var act: Activation
    var lnBefore = false
    var lnAfter = false
    var scaling: Float = 1
    var layers: [Int]? = nil
    var description: String { "\(arch)/\(preset)/\(act) lnb=\(lnBefore) lna=\(lnAfter) s=\(scaling) layers=\(layers ?? [])" }
}

let adapterCases: [AdapterCase] = [
    AdapterCase(arch: .gpt2, preset: .pfeiffer, act: .relu),
    AdapterCase(arch: .gpt2, preset: .houlsby, act: .swish),
    AdapterCase(arch: .gpt2, preset: .houlsby, act: .gelu, lnBefore: true, lnAfter: true, scaling: 0.5),
    AdapterCase(arch: .llama, preset: .pfeiffer, act: .relu),
    AdapterCase(arch: .llama, preset: .houlsby, act: .swish),
    AdapterCase(arch: .llama, preset: .pfeiffer, act: .geluTanh, lnBefore: true, scaling: 2, layers: [1]),
]

@Suite struct ModelGradients {
    /// Every adapter parameter's gradient from the hand-written backward equals finite differences of the loss
    /// computed by the forward pass: this covers the loss, the LM head, the final norm and every frozen layer's
    /// input-gradient path above the adapter, for both architectures.
    @Test(arguments: adapterCases)
    func adapterGradientsMatchFiniteDifferences(_ c: AdapterCase) throws {
        let cfg = TS.tinyConfig(c.arch)
        let model = try Model.create(config: cfg, seed: 11)
        var ac = BottleneckConfig(preset: c.preset, reductionFactor: 4, nonLinearity: c.act, layers: c.layers, scaling: c.scaling,
                                  lnBefore: c.lnBefore, lnAfter: c.lnAfter, seed: 5)
        ac.initWeights = .bert
        try model.attachAdapter(name: "a", config: ac)
        try model.setActiveAdapter("a")
        let slot = try model.engine.adapter(named: "a")
        // Larger adapter weights so every path carries signal.
        var rng = Rng(seed: 99)
        let p = slot.adapter.params.floats
        for i in 0..<slot.parameterCount { p[i] += 0.3 * rng.normal() }
        let B = 2, T = 6
        let ids = TS.ids(B * T, vocab: cfg.vocabSize, seed: 1)
        var labels = ids
        labels[3] = -100; labels[8] = -100
        var tc = TrainConfig(); tc.learningRate = 0; tc.weightDecay = 0
        _ = try model.trainStep(inputIDs: ids, labels: labels, batch: B, seqLen: T, config: tc)
        let g = slot.opt.grads.floats
        func loss() throws -> Double { Double(try model.forward(inputIDs: ids, labels: labels, batch: B, seqLen: T).result.loss) }
        var idx: [Int] = []
        var r2 = Rng(seed: 5)
        for _ in 0..<60 { idx.append(Int(r2.nextUInt64() % UInt64(slot.parameterCount))) }
        var maxErr = 0.0, maxG = 0.0
        for i in idx {
            let num = try fd(p, i, eps: 5e-3, loss)
            maxErr = max(maxErr, abs(num - Double(g[i])))
            maxG = max(maxG, abs(num))
        }
        print("\(c): max |fd - analytic| = \(maxErr), max |grad| = \(maxG)")
        #expect(maxG > 1e-3)
        #expect(maxErr < 2e-3 * max(1, maxG))
    }
}

@Suite struct Training {
    @Test(arguments: [Architecture.gpt2, .llama])
    func baseWeightsStayBitIdenticalAndAdapterMoves(_ arch: Architecture) throws {
        let cfg = TS.tinyConfig(arch)
        let model = try Model.create(config: cfg, seed: 3, initStd: 0.3)
        try model.attachAdapter(name: "t", config: BottleneckConfig(preset: .houlsby, reductionFactor: 4))
        try model.setActiveAdapter("t")
        let before = model.engine.weights.named.map { $0.tensor.toArray() }
        let slot = try model.engine.adapter(named: "t")
        let p0 = Array(UnsafeBufferPointer(start: slot.adapter.params.floats, count: slot.parameterCount))
        var tc = TrainConfig(); tc.learningRate = 1e-2
        let ids = TS.ids(2 * 8, vocab: cfg.vocabSize, seed: 2)
        var losses: [Float] = []
        for _ in 0..<20 { losses.append(try model.trainStep(inputIDs: ids, batch: 2, seqLen: 8, config: tc).loss) }
        let after = model.engine.weights.named.map { $0.tensor.toArray() }
        for (i, (a, b)) in zip(before, after).enumerated() {
            #expect(a.elementsEqual(b) { $0.bitPattern == $1.bitPattern }, "base tensor \(model.engine.weights.named[i].name) changed")
        }
        let p1 = Array(UnsafeBufferPointer(start: slot.adapter.params.floats, count: slot.parameterCount))
        var unchanged = 0
        for i in 0..<p0.count where p0[i] == p1[i] { unchanged += 1 }
        print("\(arch): losses \(losses.first!) -> \(losses.last!), unchanged adapter params \(unchanged)/\(p0.count)")
        #expect(unchanged == 0)
        #expect(losses.last! < 0.7 * losses.first!)
    }

    @Test(arguments: [Architecture.gpt2, .llama])
    func microBatchesGiveTheFullBatchStep(_ arch: Architecture) throws {
        let cfg = TS.tinyConfig(arch)
        let ids = TS.ids(4 * 7, vocab: cfg.vocabSize, seed: 4)
        var labels = ids
        for i in [1, 2, 9, 20] { labels[i] = -100 }
        var results: [(TrainStepResult, [Float])] = []
        for mb in [0, 1, 2, 3] {   // 3: parts of 2 + 2 rows (ceil(4 / 3) = 2 near-equal parts)
            let model = try Model.create(config: cfg, seed: 8)
            try model.attachAdapter(name: "a", config: BottleneckConfig(preset: .pfeiffer, reductionFactor: 4, layers: [1]))
            try model.setActiveAdapter("a")
            var tc = TrainConfig(); tc.microBatchSize = mb; tc.maxGradNorm = 0.5
            let r = try model.trainStep(inputIDs: ids, labels: labels, batch: 4, seqLen: 7, config: tc)
            let s = try model.engine.adapter(named: "a")
            results.append((r, Array(UnsafeBufferPointer(start: s.adapter.params.floats, count: s.parameterCount))))
        }
        for k in 1..<results.count {
            #expect(abs(results[k].0.loss - results[0].0.loss) < 1e-5)
            #expect(abs(results[k].0.gradNorm - results[0].0.gradNorm) < 1e-5 * max(1, results[0].0.gradNorm))
            #expect(TS.maxAbsDiff(results[k].1, results[0].1) < 1e-6)
        }
    }

    @Test func zeroUpInitIsTheIdentity() throws {
        for arch in Architecture.allCases {
            let cfg = TS.tinyConfig(arch)
            let model = try Model.create(config: cfg, seed: 3)
            let ids = TS.ids(10, vocab: cfg.vocabSize, seed: 9)
            let base = try model.forward(inputIDs: ids, batch: 1, seqLen: 10).logits
            // Encoders take only the Houlsby placement (Pfeiffer's is refused there).
            for preset in BottleneckConfig.Preset.allCases where arch != .bert || preset == .houlsby {
                try model.attachAdapter(name: "z\(preset)", config: BottleneckConfig(preset: preset, initWeights: .zeroUp))
                try model.setActiveAdapter("z\(preset)")
                let out = try model.forward(inputIDs: ids, batch: 1, seqLen: 10).logits
                #expect(TS.maxAbsDiff(out, base) < 1e-6, "\(arch) \(preset)")
            }
            try model.attachAdapter(name: "bert", config: BottleneckConfig(preset: .houlsby, initWeights: .bert))
            try model.setActiveAdapter("bert")
            let out = try model.forward(inputIDs: ids, batch: 1, seqLen: 10).logits
            #expect(TS.maxAbsDiff(out, base) > 0)
            try model.setActiveAdapter(nil)
            #expect(try model.forward(inputIDs: ids, batch: 1, seqLen: 10).logits == base)
        }
    }

    @Test func scheduleMatchesTransformersFormulas() {
        var tc = TrainConfig()
        tc.learningRate = 1; tc.warmupSteps = 10; tc.totalSteps = 110
        tc.schedule = .linear
        #expect(tc.learningRate(atStep: 0) == 0)
        #expect(tc.learningRate(atStep: 5) == 0.5)
        #expect(tc.learningRate(atStep: 60) == 0.5)
        #expect(tc.learningRate(atStep: 110) == 0)
        tc.schedule = .cosine
        #expect(abs(tc.learningRate(atStep: 60) - 0.5) < 1e-6)
        #expect(abs(tc.learningRate(atStep: 10) - 1) < 1e-6)
        tc.schedule = .constant
        #expect(tc.learningRate(atStep: 1000) == 1)
    }
}

@Suite struct Generation {
    @Test(arguments: [Architecture.gpt2, .llama])
    func cachedGreedyDecodeEqualsFullRecompute(_ arch: Architecture) throws {
        let cfg = TS.tinyConfig(arch)
        let model = try Model.create(config: cfg, seed: 21)
        try model.attachAdapter(name: "a", config: BottleneckConfig(preset: .houlsby, reductionFactor: 4))
        try model.setActiveAdapter("a")
        let prompt = TS.ids(5, vocab: cfg.vocabSize, seed: 3)
        var g = GenerateConfig(); g.maxNewTokens = 12
        var streamed: [Int32] = []
        let out = try model.generate(prompt: prompt, config: g) { streamed.append($0); return true }
        #expect(out.count == 12)
        #expect(streamed == out)
        var seq = prompt
        for tok in out {
            let lg = try model.forward(inputIDs: seq, batch: 1, seqLen: seq.count).logits
            let last = Array(lg[(seq.count - 1) * cfg.vocabSize..<seq.count * cfg.vocabSize])
            let am = last.withUnsafeBufferPointer { Sampler.argmax($0.baseAddress!, cfg.vocabSize) }
            #expect(am == tok)
            seq.append(tok)
        }
    }

    @Test func samplingIsReproducibleAndStops() throws {
        let cfg = TS.tinyConfig(.gpt2)
        let model = try Model.create(config: cfg, seed: 2)
        var g = GenerateConfig(); g.maxNewTokens = 20; g.temperature = 1.5; g.topK = 10; g.topP = 0.9; g.seed = 42
        let a = try model.generate(prompt: [1, 2, 3], config: g)
        let b = try model.generate(prompt: [1, 2, 3], config: g)
        #expect(a == b)
        g.seed = 43
        let c = try model.generate(prompt: [1, 2, 3], config: g)
        #expect(a != c)
        g.stopTokens = [a[4]]
        let d = try model.generate(prompt: [1, 2, 3], config: { var x = g; x.seed = 42; return x }())
        #expect(d.last == a[4] && d.count <= 5)
        var n = 0
        let e = try model.generate(prompt: [1, 2, 3], config: g) { _ in n += 1; return n < 3 }
        #expect(e.count == 3)
        // Generation stops at the model's maximum length.
        g.maxNewTokens = 1000; g.stopTokens = []
        #expect(try model.generate(prompt: [1, 2, 3], config: g).count == cfg.maxPositions - 3)
    }
}

@Suite struct Misuse {
    @Test func badInputsThrowClearErrors() throws {
        let cfg = TS.tinyConfig(.llama)
        let model = try Model.create(config: cfg, seed: 1)
        var tc = TrainConfig()
        #expect(throws: PEFTKitError.self) { try model.trainStep(inputIDs: [1, 2, 3, 4], batch: 1, seqLen: 4, config: tc) }
        try model.attachAdapter(name: "a", config: BottleneckConfig())
        #expect(throws: PEFTKitError.self) { try model.attachAdapter(name: "a", config: BottleneckConfig()) }
        #expect(throws: PEFTKitError.self) { try model.attachAdapter(name: "bad/name", config: BottleneckConfig()) }
        #expect(throws: PEFTKitError.self) { try model.setActiveAdapter("nope") }
        try model.setActiveAdapter("a")
        #expect(throws: PEFTKitError.self) { try model.trainStep(inputIDs: [1, 2, 99, 4], batch: 1, seqLen: 4, config: tc) }
        #expect(throws: PEFTKitError.self) { try model.trainStep(inputIDs: [1, 2, -1, 4], batch: 1, seqLen: 4, config: tc) }
        #expect(throws: PEFTKitError.self) { try model.trainStep(inputIDs: [1, 2, 3], batch: 1, seqLen: 4, config: tc) }
        #expect(throws: PEFTKitError.self) {
            try model.trainStep(inputIDs: [1, 2, 3, 4], labels: [-100, -100, -100, -100], batch: 1, seqLen: 4, config: tc)
        }
        #expect(throws: PEFTKitError.self) {
            try model.trainStep(inputIDs: [Int32](repeating: 1, count: 33), batch: 1, seqLen: 33, config: tc)
        }
        tc.learningRate = .nan
        #expect(throws: PEFTKitError.self) { try model.trainStep(inputIDs: [1, 2, 3, 4], batch: 1, seqLen: 4, config: tc) }
        var ac = BottleneckConfig(); ac.layers = [5]
        #expect(throws: PEFTKitError.self) { try model.attachAdapter(name: "b", config: ac) }
        ac.layers = nil; ac.reductionFactor = -1
        #expect(throws: PEFTKitError.self) { try model.attachAdapter(name: "b", config: ac) }
        var g = GenerateConfig(); g.topP = 0
        #expect(throws: PEFTKitError.self) { try model.generate(prompt: [1], config: g) }
        #expect(throws: PEFTKitError.self) { try model.generate(prompt: [], config: GenerateConfig()) }
        #expect(throws: PEFTKitError.self) { try model.generate(prompt: [40], config: GenerateConfig()) }
    }

    @Test func nonFiniteStepIsRejectedAndChangesNothing() throws {
        let cfg = TS.tinyConfig(.gpt2)
        let model = try Model.create(config: cfg, seed: 1)
        try model.attachAdapter(name: "a", config: BottleneckConfig())
        try model.setActiveAdapter("a")
        let slot = try model.engine.adapter(named: "a")
        slot.adapter.params.floats[0] = .infinity
        let p0 = Array(UnsafeBufferPointer(start: slot.adapter.params.floats, count: slot.parameterCount))
        #expect(throws: PEFTKitError.self) { try model.trainStep(inputIDs: [1, 2, 3, 4], batch: 1, seqLen: 4, config: TrainConfig()) }
        let p1 = Array(UnsafeBufferPointer(start: slot.adapter.params.floats, count: slot.parameterCount))
        #expect(p0.elementsEqual(p1) { $0.bitPattern == $1.bitPattern })
        #expect(slot.opt.step == 0)
    }
}

@Suite struct FullFineTuning {
    /// Every base tensor's gradient (embeddings, tied LM head, norms, linear weights and biases) from the
    /// hand-written backward equals central finite differences of the forward loss, on both architectures.
    @Test(arguments: [Architecture.gpt2, .llama])
    func everyBaseWeightGradientMatchesFiniteDifferences(_ arch: Architecture) throws {
        let cfg = TS.tinyConfig(arch)
        let model = try Model.create(config: cfg, seed: 21, initStd: 0.3)
        try model.enableFullFineTuning()
        let e = model.engine
        // Non-trivial norm weights and biases so every term carries signal.
        var rng = Rng(seed: 4)
        for (name, t) in e.weights.named where t.shape.count == 1 {
            for i in 0..<t.count { t.data[i] += 0.2 * rng.normal() }
            _ = name
        }
        let B = 2, T = 6
        let ids = TS.ids(B * T, vocab: cfg.vocabSize, seed: 8)
        var labels = ids
        labels[4] = -100
        var tc = TrainConfig(); tc.learningRate = 0; tc.weightDecay = 0
        _ = try model.trainStep(inputIDs: ids, labels: labels, batch: B, seqLen: T, config: tc)
        func loss() throws -> Double { Double(try model.forward(inputIDs: ids, labels: labels, batch: B, seqLen: T).result.loss) }
        let grads = e.full!.gradWeights.named
        var worst = 0.0
        for ((name, t), (_, g)) in zip(e.weights.named, grads) {
            var maxErr = 0.0, maxG = 0.0
            var pick = Rng(seed: 6)
            for _ in 0..<12 {
                let i = Int(pick.nextUInt64() % UInt64(t.count))
                let num = try fd(t.data, i, eps: 2e-3, loss)
                maxErr = max(maxErr, abs(num - Double(g.data[i])))
                maxG = max(maxG, abs(num))
            }
            worst = max(worst, maxErr)
            #expect(maxErr < 2e-3 * max(1, maxG), "\(name): max |fd - analytic| = \(maxErr)")
        }
        print("\(arch) full fine-tuning: worst |fd - analytic| = \(worst)")
    }

    /// Training moves every base tensor, lowers the loss, and leaves the memory-mapped/original block unwritten.
    @Test(arguments: [Architecture.gpt2, .llama])
    func trainsEveryTensorAndRefusesAnActiveAdapter(_ arch: Architecture) throws {
        let cfg = TS.tinyConfig(arch)
        let model = try Model.create(config: cfg, seed: 3, initStd: 0.3)
        let original = model.engine.weights.named.map { $0.tensor }
        let before = original.map { $0.toArray() }
        try model.enableFullFineTuning()
        #expect(model.isFullFineTuning)
        var tc = TrainConfig(); tc.learningRate = 1e-2
        let ids = TS.ids(2 * 8, vocab: cfg.vocabSize, seed: 2)
        var losses: [Float] = []
        for _ in 0..<15 { losses.append(try model.trainStep(inputIDs: ids, batch: 2, seqLen: 8, config: tc).loss) }
        #expect(losses.last! < 0.7 * losses.first!)
        for (i, (name, t)) in model.engine.weights.named.enumerated() {
            #expect(!t.toArray().elementsEqual(before[i]), "\(name) did not move")
            #expect(original[i].toArray().elementsEqual(before[i]), "the original \(name) was written")
        }
        try model.attachAdapter(name: "a", config: BottleneckConfig(preset: .pfeiffer, reductionFactor: 4))
        try model.setActiveAdapter("a")
        #expect(throws: PEFTKitError.self) { try model.trainStep(inputIDs: ids, batch: 2, seqLen: 8, config: tc) }
        try model.disableFullFineTuning()
        _ = try model.trainStep(inputIDs: ids, batch: 2, seqLen: 8, config: tc)
    }
}
