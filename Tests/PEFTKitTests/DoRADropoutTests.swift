import Testing
@testable import PEFTKit

/// DoRA with lora_dropout: in training PEFT 0.18.1 drops the input of the DoRA term and recomputes the base
/// product on it, y = x·Wᵀ + b + (m/n − 1)·(x̃·Wᵀ) + (m/n)·s·x̃·Aᵀ·Bᵀ (DoRA.swift); evaluation has no dropout.
@Suite struct DoRADropout {
    static func config(_ arch: Architecture, dropout: Float) -> LoRAConfig {
        var c = LoRAConfig(); c.rank = 4; c.alpha = 8; c.useDoRA = true; c.dropout = dropout
        c.targets = LinearSite.sites(arch).map { $0.shortName(arch) }
        return c
    }

    /// The analytic gradient against central differences of the training loss, with the dropout masks fixed
    /// (the generator restored before every pass) and the detached norms held.
    @Test(arguments: Architecture.allCases)
    func gradientsMatchFiniteDifferences(_ arch: Architecture) throws {
        let cfg = TS.tinyConfig(arch)
        let model = try Model.create(config: cfg, seed: 11, initStd: 0.1)
        try model.attachAdapter(name: "a", config: .lora(DoRADropout.config(arch, dropout: 0.3)))
        try model.setActiveAdapter("a")
        let slot = try model.engine.adapter(named: "a")
        let lora = try #require(slot.adapter as? LoRAAdapter)
        let p = slot.adapter.params.floats
        var rng = Rng(seed: 3)
        for i in 0..<slot.parameterCount { p[i] += 0.3 * rng.normal() }
        let B = 2, T = 6
        let ids = TS.ids(B * T, vocab: cfg.vocabSize, seed: 1)
        var labels = ids
        labels[0] = -100; labels[8] = -100
        var tc = TrainConfig(); tc.learningRate = 0; tc.weightDecay = 0
        let rng0 = lora.dropRng
        let l0 = try model.trainStep(inputIDs: ids, labels: labels, batch: B, seqLen: T, config: tc).loss
        let g = Array(UnsafeBufferPointer(start: slot.opt.grads.floats, count: slot.parameterCount))
        lora.dora?.holdNorms = true
        func loss() throws -> Double {
            lora.dropRng = rng0
            return Double(try model.trainStep(inputIDs: ids, labels: labels, batch: B, seqLen: T, config: tc).loss)
        }
        // The restored generator redraws the same masks: the same loss (held norms: to rounding), every time.
        let l1 = try loss()
        let l2 = try loss()
        #expect(abs(l1 - Double(l0)) <= 1e-6 * abs(Double(l0)) && l2 == l1)
        // The masks matter: another draw gives another loss; evaluation (no dropout) another again.
        let other = Double(try model.trainStep(inputIDs: ids, labels: labels, batch: B, seqLen: T, config: tc).loss)
        #expect(other != Double(l0))
        #expect(Double(try model.forward(inputIDs: ids, labels: labels, batch: B, seqLen: T).result.loss) != Double(l0))
        var maxErr = 0.0, maxG = 0.0
        var pick = Rng(seed: 5)
        // Every unit's A, B and magnitude (the lowest layer's A and B only see their input through the layers
        // above: the dropped-input gradient of the recomputed base product).
        var idx: [Int] = []
        for u in lora.units {
            for range in [u.a..<u.b, u.b..<u.m, u.m..<(u.m + u.outF)] {
                for _ in 0..<3 { idx.append(range.lowerBound + Int(pick.nextUInt64() % UInt64(range.count))) }
            }
        }
        for i in idx {
            let old = p[i]
            p[i] = old + 2e-3
            let fp = try loss()
            p[i] = old - 2e-3
            let fm = try loss()
            p[i] = old
            let num = (fp - fm) / 4e-3
            maxErr = max(maxErr, abs(num - Double(g[i])))
            maxG = max(maxG, abs(num))
        }
        print("\(arch) DoRA+dropout: max |fd - analytic| = \(maxErr), max |grad| = \(maxG), \(idx.count) checked")
        #expect(maxG > 1e-4)
        #expect(maxErr < 2e-3 * max(0.1, maxG))
    }

    /// A training step after an evaluation pass keeps DoRA's training buffers (the evaluation's preparation
    /// used to drop them, and the next step read past an empty array), with or without dropout.
    @Test(arguments: [Float(0), 0.2])
    func trainAfterEvaluation(_ dropout: Float) throws {
        let cfg = TS.tinyConfig(.llama)
        let m = try Model.create(config: cfg, seed: 5, initStd: 0.1)
        try m.attachAdapter(name: "a", config: .lora(DoRADropout.config(.llama, dropout: dropout)))
        try m.setActiveAdapter("a")
        let ids = TS.ids(2 * 4, vocab: cfg.vocabSize, seed: 4)
        var tc = TrainConfig(); tc.learningRate = 1e-2
        var losses: [Float] = []
        for _ in 0..<2 {
            losses.append(try m.trainStep(inputIDs: ids, batch: 2, seqLen: 4, config: tc).loss)
            _ = try m.forward(inputIDs: ids, batch: 2, seqLen: 4)
        }
        #expect(losses.allSatisfy { $0.isFinite })
    }

    /// Evaluation ignores the dropout: the same logits, bit for bit, as DoRA without it; the merge too.
    @Test(arguments: Architecture.allCases)
    func evaluationAndMergeAsWithoutDropout(_ arch: Architecture) throws {
        let cfg = TS.tinyConfig(arch)
        let ids = TS.ids(2 * 5, vocab: cfg.vocabSize, seed: 2)
        func run(_ dropout: Float) throws -> ([Float], [Float]) {
            let m = try Model.create(config: cfg, seed: 7, initStd: 0.1)
            try m.attachAdapter(name: "a", config: .lora(DoRADropout.config(arch, dropout: dropout)))
            try m.setActiveAdapter("a")
            let slot = try m.engine.adapter(named: "a")
            TS.perturb(slot, seed: 9)
            let logits = try m.forward(inputIDs: ids, batch: 2, seqLen: 5).logits
            try m.mergeAdapter(name: "a")
            try m.setActiveAdapter(nil)
            return (logits, try m.forward(inputIDs: ids, batch: 2, seqLen: 5).logits)
        }
        let (l0, m0) = try run(0), (l1, m1) = try run(0.25)
        #expect(l0.map(\.bitPattern) == l1.map(\.bitPattern))
        #expect(m0.map(\.bitPattern) == m1.map(\.bitPattern))
        #expect(TS.maxAbsDiff(l0, m0) < 1e-4)
    }

    /// PEFT's folder (lora_dropout 0.3) and PEFT's keep masks: the evaluation logits, the training loss and
    /// gradients with the masks, and three AdamW steps (the same masks each step) match
    /// scripts/make_method_fixtures.py's `dora_dropout_case`.
    @Test(arguments: ["gpt2", "llama"])
    func matchesPEFT(_ arch: String) throws {
        let r = try Parity.ref("peft/\(arch)/dora_dropout/reference.safetensors")
        let ids = try r.i("input_ids"), labels = try r.i("labels")
        let B = 2, T = ids.count / 2
        let dir = PEFTParity.dir(arch, "dora_dropout") + "/adapter"
        let maskKeys = r.file.names.filter { $0.hasPrefix("mask.") }
        func load() throws -> (Model, AdapterSlot, LoRAAdapter) {
            let m = try Model.load(path: TS.fixtures + "/\(arch)/model")
            let name = try m.loadAdapter(from: dir, name: "d")
            try m.setActiveAdapter(name)
            let slot = try m.engine.adapter(named: name)
            let lora = try #require(slot.adapter as? LoRAAdapter)
            #expect(lora.config.dropout == 0.3 && lora.config.useDoRA)
            let a = m.engine.config.architecture
            for u in lora.units { lora.fixedDropoutKeep[u.id] = try r.f("mask." + u.site.module(a, layer: u.layer)) }
            #expect(lora.fixedDropoutKeep.count == maskKeys.count)
            return (m, slot, lora)
        }
        let (m, slot, _) = try load()
        let layout = try #require(slot.adapter as? SavableAdapter).fileTensorSlots(name: "d")
        for e in layout {
            #expect(PEFTParity.slice(slot, slot.adapter.params.floats, e) == (try r.f("init." + PEFTParity.paramName(e.name, kind: "dora"))), "\(e.name)")
        }
        let logits = try m.forward(inputIDs: ids, labels: labels, batch: B, seqLen: T).logits
        #expect(Parity.close("\(arch) DoRA+dropout eval logits", logits, try r.f("eval_logits"), rel: 1e-5))
        var probe = TrainConfig(); probe.learningRate = 0; probe.weightDecay = 0
        let loss = try m.trainStep(inputIDs: ids, labels: labels, batch: B, seqLen: T, config: probe).loss
        #expect(Parity.close("\(arch) DoRA+dropout training loss", [loss], try r.f("loss"), rel: 1e-5))
        for e in layout {
            let want = try r.f("grad." + PEFTParity.paramName(e.name, kind: "dora"))
            #expect(Parity.close("grad \(e.name)", PEFTParity.slice(slot, slot.opt.grads.floats, e), want, rel: 1e-4))
        }
        let (m2, _, _) = try load()
        var tc = TrainConfig()
        tc.learningRate = 1e-2; tc.beta1 = 0.9; tc.beta2 = 0.999; tc.eps = 1e-8; tc.weightDecay = 0.01
        var losses: [Float] = []
        for _ in 0..<3 { losses.append(try m2.trainStep(inputIDs: ids, labels: labels, batch: B, seqLen: T, config: tc).loss) }
        #expect(Parity.close("\(arch) DoRA+dropout 3 AdamW losses", losses, try r.f("adam_losses"), rel: 1e-5))
    }
}
