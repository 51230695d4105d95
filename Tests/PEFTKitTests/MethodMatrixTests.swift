import Testing
@testable import PEFTKit

/// One row of the shared method matrix: a method configuration on an architecture.
struct MethodCase: CustomStringConvertible, Sendable {
    var arch: Architecture
    var label: String
    var config: @Sendable (Architecture) -> AdapterConfig
    var description: String { "\(arch)/\(label)" }
}

private func lora(_ f: @escaping @Sendable (inout LoRAConfig, Architecture) -> Void) -> @Sendable (Architecture) -> AdapterConfig {
    { a in var c = LoRAConfig(); c.rank = 4; c.alpha = 8; f(&c, a); return .lora(c) }
}

let methodCases: [MethodCase] = Architecture.allCases.flatMap { arch -> [MethodCase] in [
    MethodCase(arch: arch, label: "bottleneck-houlsby") { _ in .bottleneck(BottleneckConfig(preset: .houlsby, reductionFactor: 4)) },
    MethodCase(arch: arch, label: "lora-default", config: lora { _, _ in }),
    MethodCase(arch: arch, label: "lora-all-rslora-layer1", config: lora { c, a in
        c.targets = LinearSite.sites(a).map { $0.shortName(a) }; c.useRSLoRA = true; c.layers = [1]
    }),
    MethodCase(arch: arch, label: "lora-dora-all", config: lora { c, a in
        c.targets = LinearSite.sites(a).map { $0.shortName(a) }; c.useDoRA = true
    }),
    MethodCase(arch: arch, label: "ia3-default") { _ in .ia3(IA3Config()) },
    MethodCase(arch: arch, label: "prefix") { _ in var c = PrefixConfig(); c.virtualTokens = 3; return .prefix(c) },
    MethodCase(arch: arch, label: "prefix-projection") { _ in
        var c = PrefixConfig(); c.virtualTokens = 3; c.projection = true; c.projectionHidden = 8; return .prefix(c)
    },
    MethodCase(arch: arch, label: "prompt") { _ in var c = PromptConfig(); c.virtualTokens = 3; return .prompt(c) },
    MethodCase(arch: arch, label: "prompt-from-tokens") { _ in
        var c = PromptConfig(); c.virtualTokens = 4; c.initTokens = [5, 6, 7]; return .prompt(c)
    },
] }

private func fd(_ x: UnsafeMutablePointer<Float>, _ i: Int, eps: Float, _ f: () throws -> Double) rethrows -> Double {
    let old = x[i]
    x[i] = old + eps
    let fp = try f()
    x[i] = old - eps
    let fm = try f()
    x[i] = old
    return (fp - fm) / Double(2 * eps)
}

/// Gives every parameter a value away from its initialisation (LoRA's B starts at zero, IA3 at one).
private func perturb(_ slot: AdapterSlot, seed: UInt64) {
    var rng = Rng(seed: seed)
    let p = slot.adapter.params.floats
    for i in 0..<slot.parameterCount { p[i] += 0.3 * rng.normal() }
}

@Suite struct MethodMatrix {
    @Test(arguments: methodCases)
    func gradientsMatchFiniteDifferences(_ mc: MethodCase) throws {
        let cfg = TS.tinyConfig(mc.arch)
        let model = try Model.create(config: cfg, seed: 11, initStd: 0.1)
        try model.attachAdapter(name: "a", config: mc.config(mc.arch))
        try model.setActiveAdapter("a")
        let slot = try model.engine.adapter(named: "a")
        perturb(slot, seed: 3)
        let B = 2, T = 6
        let ids = TS.ids(B * T, vocab: cfg.vocabSize, seed: 1)
        var labels = ids
        labels[0] = -100; labels[8] = -100
        var tc = TrainConfig(); tc.learningRate = 0; tc.weightDecay = 0
        _ = try model.trainStep(inputIDs: ids, labels: labels, batch: B, seqLen: T, config: tc)
        // DoRA's norm is detached (as in PEFT): its gradient is the loss's with the norms held at this pass's.
        (slot.adapter as? LoRAAdapter)?.dora?.holdNorms = true
        let g = slot.opt.grads.floats, p = slot.adapter.params.floats
        func loss() throws -> Double { Double(try model.forward(inputIDs: ids, labels: labels, batch: B, seqLen: T).result.loss) }
        var rng = Rng(seed: 5)
        var maxErr = 0.0, maxG = 0.0
        for _ in 0..<50 {
            let i = Int(rng.nextUInt64() % UInt64(slot.parameterCount))
            let num = try fd(p, i, eps: 2e-3, loss)
            maxErr = max(maxErr, abs(num - Double(g[i])))
            maxG = max(maxG, abs(num))
        }
        print("\(mc): max |fd - analytic| = \(maxErr), max |grad| = \(maxG), params \(slot.parameterCount)")
        #expect(maxG > 1e-4)
        #expect(maxErr < 2e-3 * max(0.1, maxG))
    }

    @Test(arguments: methodCases)
    func trainingTouchesOnlyTheActiveAdapter(_ mc: MethodCase) throws {
        let cfg = TS.tinyConfig(mc.arch)
        let model = try Model.create(config: cfg, seed: 4, initStd: 0.1)
        try model.attachAdapter(name: "a", config: mc.config(mc.arch))
        try model.attachAdapter(name: "other", config: .lora(LoRAConfig()))
        let ids = TS.ids(2 * 7, vocab: cfg.vocabSize, seed: 6)
        let base = try model.forward(inputIDs: ids, batch: 2, seqLen: 7).logits
        let before = model.engine.weights.named.map { $0.tensor.toArray() }
        let other = try model.engine.adapter(named: "other")
        let o0 = Array(UnsafeBufferPointer(start: other.adapter.params.floats, count: other.parameterCount))
        try model.setActiveAdapter("a")
        let slot = try model.engine.adapter(named: "a")
        let p0 = Array(UnsafeBufferPointer(start: slot.adapter.params.floats, count: slot.parameterCount))
        var tc = TrainConfig(); tc.learningRate = 1e-2
        var losses: [Float] = []
        for _ in 0..<8 { losses.append(try model.trainStep(inputIDs: ids, batch: 2, seqLen: 7, config: tc).loss) }
        #expect(losses.last! < losses.first!, "\(mc): \(losses)")
        let after = model.engine.weights.named.map { $0.tensor.toArray() }
        for (a, b) in zip(before, after) { #expect(a.elementsEqual(b) { $0.bitPattern == $1.bitPattern }) }
        let p1 = Array(UnsafeBufferPointer(start: slot.adapter.params.floats, count: slot.parameterCount))
        let moved = zip(p0, p1).filter { $0 != $1 }.count
        #expect(moved == p0.count, "\(mc): \(moved)/\(p0.count) parameters moved")
        let o1 = Array(UnsafeBufferPointer(start: other.adapter.params.floats, count: other.parameterCount))
        #expect(o0 == o1)
        // Disabled = the base model, exactly.
        try model.setActiveAdapter(nil)
        #expect(try model.forward(inputIDs: ids, batch: 2, seqLen: 7).logits == base)
    }

    /// Save and reload give the same adapter: the same weights bit for bit and the same logits (a projected
    /// prefix is saved as its output rows, as PEFT does, so it reloads as a plain prefix with equal logits).
    @Test(arguments: methodCases)
    func saveLoadRoundTripIsExact(_ mc: MethodCase) throws {
        let cfg = TS.tinyConfig(mc.arch)
        let model = try Model.create(config: cfg, seed: 12, initStd: 0.1)
        try model.attachAdapter(name: "a", config: mc.config(mc.arch))
        let slot = try model.engine.adapter(named: "a")
        perturb(slot, seed: 13)
        let dir = TS.tempDir() + "/a"
        try model.saveAdapter(name: "a", to: dir)
        let b = try model.loadAdapter(from: dir, name: "b")
        #expect(try model.adapterMethod(name: b) == model.adapterMethod(name: "a"))
        let ids = TS.ids(2 * 6, vocab: cfg.vocabSize, seed: 14)
        try model.setActiveAdapter("a")
        let la = try model.forward(inputIDs: ids, batch: 2, seqLen: 6).logits
        try model.setActiveAdapter(b)
        let lb = try model.forward(inputIDs: ids, batch: 2, seqLen: 6).logits
        let back = try model.engine.adapter(named: b)
        if mc.label == "prefix-projection" {
            #expect(TS.maxAbsDiff(la, lb) <= 1e-6, "\(mc): \(TS.maxAbsDiff(la, lb))")
        } else {
            #expect(Array(UnsafeBufferPointer(start: slot.adapter.params.floats, count: slot.parameterCount))
                    == Array(UnsafeBufferPointer(start: back.adapter.params.floats, count: back.parameterCount)))
            #expect(la == lb, "\(mc)")
        }
    }

    @Test(arguments: methodCases)
    func cachedGreedyDecodeEqualsFullRecompute(_ mc: MethodCase) throws {
        // Decoding is a decoder's: an encoder's positions all see each other, so a cache cannot replay them.
        guard mc.arch != .bert else { return }
        let cfg = TS.tinyConfig(mc.arch)
        let model = try Model.create(config: cfg, seed: 21, initStd: 0.2)
        try model.attachAdapter(name: "a", config: mc.config(mc.arch))
        try model.setActiveAdapter("a")
        perturb(try model.engine.adapter(named: "a"), seed: 9)
        let prompt = TS.ids(5, vocab: cfg.vocabSize, seed: 3)
        var g = GenerateConfig(); g.maxNewTokens = 8
        let out = try model.generate(prompt: prompt, config: g)
        #expect(out.count == 8)
        var seq = prompt
        for tok in out {
            let lg = try model.forward(inputIDs: seq, batch: 1, seqLen: seq.count).logits
            let last = Array(lg[(seq.count - 1) * cfg.vocabSize..<seq.count * cfg.vocabSize])
            let am = last.withUnsafeBufferPointer { Sampler.argmax($0.baseAddress!, cfg.vocabSize) }
            #expect(am == tok, "\(mc)")
            seq.append(tok)
        }
    }
}

@Suite struct MergeAndMix {
    @Test(arguments: methodCases.filter { $0.label.hasPrefix("lora") || $0.label.hasPrefix("ia3") })
    func mergeEqualsUnmergedAndUnmergeRestoresBits(_ mc: MethodCase) throws {
        let cfg = TS.tinyConfig(mc.arch)
        let model = try Model.create(config: cfg, seed: 5, initStd: 0.1)
        try model.attachAdapter(name: "a", config: mc.config(mc.arch))
        perturb(try model.engine.adapter(named: "a"), seed: 2)
        let ids = TS.ids(2 * 6, vocab: cfg.vocabSize, seed: 8)
        let base = try model.forward(inputIDs: ids, batch: 2, seqLen: 6).logits
        let baseW = (0..<model.engine.config.numLayers).map { l in LinearSite.allCases.compactMap { model.engine.weights.linear(l, $0)?.weight } }
        try model.setActiveAdapter("a")
        let unmerged = try model.forward(inputIDs: ids, batch: 2, seqLen: 6).logits
        try model.mergeAdapter(name: "a")
        #expect(throws: PEFTKitError.self) { try model.trainStep(inputIDs: ids, batch: 2, seqLen: 6, config: TrainConfig()) }
        let merged = try model.forward(inputIDs: ids, batch: 2, seqLen: 6).logits
        try model.setActiveAdapter(nil)
        let mergedBase = try model.forward(inputIDs: ids, batch: 2, seqLen: 6).logits
        #expect(merged == mergedBase)
        let d = TS.maxAbsDiff(merged, unmerged)
        print("\(mc): merged vs unmerged max |diff| \(d) (adapter effect \(TS.maxAbsDiff(unmerged, base)))")
        #expect(d < 1e-5 * max(1, TS.maxAbs(unmerged)))
        #expect(TS.maxAbsDiff(unmerged, base) > 1e-3)
        try model.unmergeAdapter(name: "a")
        #expect(try model.forward(inputIDs: ids, batch: 2, seqLen: 6).logits == base)
        let w2 = (0..<model.engine.config.numLayers).map { l in LinearSite.allCases.compactMap { model.engine.weights.linear(l, $0)?.weight } }
        #expect(baseW == w2)
        for (n, t) in model.engine.weights.named {
            _ = n
            #expect(t.storage.byteCount > 0)
        }
    }

    @Test(arguments: Architecture.allCases)
    func mixedBatchEqualsEachRowAlone(_ arch: Architecture) throws {
        let cfg = TS.tinyConfig(arch)
        let model = try Model.create(config: cfg, seed: 7, initStd: 0.1)
        var names: [String?] = [nil]
        for (i, mc) in methodCases.filter({ $0.arch == arch }).enumerated() {
            try model.attachAdapter(name: "m\(i)", config: mc.config(arch))
            perturb(try model.engine.adapter(named: "m\(i)"), seed: UInt64(i))
            names.append("m\(i)")
        }
        names += [names[2], nil]
        let B = names.count, T = 5
        let ids = TS.ids(B * T, vocab: cfg.vocabSize, seed: 4)
        var all = [Float](repeating: 0, count: B * T * cfg.vocabSize)
        let r = try ids.withUnsafeBufferPointer { ip in
            try all.withUnsafeMutableBufferPointer { try model.forward(inputIDs: ip, adapters: names, batch: B, seqLen: T, logits: $0) }
        }
        var lossSum = 0.0, count = 0
        for b in 0..<B {
            try model.setActiveAdapter(names[b])
            let row = Array(ids[(b * T)..<((b + 1) * T)])
            let (lg, res) = try model.forward(inputIDs: row, batch: 1, seqLen: T)
            let mine = Array(all[(b * T * cfg.vocabSize)..<((b + 1) * T * cfg.vocabSize)])
            #expect(TS.maxAbsDiff(lg, mine) <= 1e-6, "row \(b) adapter \(names[b] ?? "base")")
            lossSum += Double(res.loss) * Double(res.tokens); count += res.tokens
        }
        #expect(abs(Double(r.loss) - lossSum / Double(count)) < 1e-5)
        var g = GenerateConfig(); g.maxNewTokens = 4
        let prompts = (0..<B).map { Array(ids[($0 * T)..<($0 * T + 3)]) }
        let outs = try model.generate(prompts: prompts, adapters: names, config: g)
        for b in 0..<B {
            try model.setActiveAdapter(names[b])
            #expect(outs[b] == (try model.generate(prompt: prompts[b], config: g)))
        }
    }
}
