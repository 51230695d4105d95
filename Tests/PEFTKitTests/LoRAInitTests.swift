import Testing
@testable import PEFTKit

/// LoRA's PiSSA and OLoRA initialisation (LoRAInit.swift) against PEFT 0.18.1, from the fixtures
/// scripts/make_pissa_fixtures.py wrote (Tests/Fixtures/pissa/). Singular vectors (and Q's columns) are unique up to
/// sign, and another LAPACK may flip column q of B₀ with row q of A₀: A, B, their gradients and AdamW steps are
/// compared after aligning each rank-1 component's sign with PEFT's; B·A and the residual weights, which no sign
/// changes, are compared as they are.
@Suite struct LoRAInitTests {
    struct Case: CustomStringConvertible, Sendable {
        let name: String, arch: String, targets: [String], r: Int, alpha: Float, rslora: Bool, initName: String
        var description: String { name }
        var json: String {
            #"{"peft_type": "LORA", "r": \#(r), "lora_alpha": \#(alpha), "use_rslora": \#(rslora), "#
                + #""target_modules": [\#(targets.map { "\"\($0)\"" }.joined(separator: ", "))], "init_lora_weights": "\#(initName)"}"#
        }
    }
    static let cases = [
        Case(name: "gpt2_pissa", arch: "gpt2", targets: ["c_attn", "attn.c_proj", "mlp.c_fc"], r: 4, alpha: 8, rslora: false, initName: "pissa"),
        Case(name: "llama_pissa", arch: "llama", targets: ["q_proj", "v_proj", "down_proj"], r: 4, alpha: 16, rslora: true, initName: "pissa"),
        Case(name: "llama_olora", arch: "llama", targets: ["q_proj", "o_proj", "gate_proj"], r: 4, alpha: 8, rslora: false, initName: "olora"),
    ]

    static func dir(_ c: Case) -> String { TS.fixtures + "/pissa/" + c.name }

    /// max |got − want| ≤ tol · max |want| (relative to the tensor's own size, not to 1).
    static func closeRel(_ what: String, _ got: [Float], _ want: [Float], _ tol: Float) -> Bool {
        guard got.count == want.count else { print("\(what): size \(got.count) vs \(want.count)"); return false }
        let d = TS.maxAbsDiff(got, want), s = TS.maxAbs(want)
        print("\(what): max |diff| = \(d), relative \(d / max(s, 1e-30))")
        return d <= tol * s
    }

    static func tensor(_ slot: AdapterSlot, _ base: UnsafeMutablePointer<Float>, offset: Int, count: Int) -> [Float] {
        Array(UnsafeBufferPointer(start: base + offset, count: count))
    }

    /// Per unit, the sign (±1) of each rank-1 component relative to PEFT's A₀ / B₀.
    static func signs(_ lora: LoRAAdapter, _ r: Parity.Ref) throws -> [[Float]] {
        let p = lora.params.floats, R = lora.config.rank
        return try lora.units.map { u in
            let key = peftModuleKey(u.layer, u.site, lora.model)
            let a = try r.f("init." + key + ".lora_A.default.weight"), b = try r.f("init." + key + ".lora_B.default.weight")
            return (0..<R).map { q in
                var dot = 0.0
                for j in 0..<u.inF { dot += Double(p[u.a + q * u.inF + j]) * Double(a[q * u.inF + j]) }
                for i in 0..<u.outF { dot += Double(p[u.b + i * R + q]) * Double(b[i * R + q]) }
                return dot < 0 ? -1 : 1
            }
        }
    }

    /// A [r, in] and B [out, r] of unit `u` from `base` (parameters, gradients), each component times its sign.
    static func aligned(_ u: LoRAAdapter.Unit, _ base: UnsafeMutablePointer<Float>, rank R: Int, _ s: [Float]) -> (a: [Float], b: [Float]) {
        var a = Array(UnsafeBufferPointer(start: base + u.a, count: R * u.inF))
        var b = Array(UnsafeBufferPointer(start: base + u.b, count: u.outF * R))
        for q in 0..<R {
            for j in 0..<u.inF { a[q * u.inF + j] *= s[q] }
            for i in 0..<u.outF { b[i * R + q] *= s[q] }
        }
        return (a, b)
    }

    /// B·A [out, in].
    static func product(_ a: [Float], _ b: [Float], rank R: Int, inF: Int, outF: Int) -> [Float] {
        var w = [Float](repeating: 0, count: outF * inF)
        for i in 0..<outF { for j in 0..<inF {
            var acc = 0.0
            for q in 0..<R { acc += Double(b[i * R + q]) * Double(a[q * inF + j]) }
            w[i * inF + j] = Float(acc)
        } }
        return w
    }

    @Test(arguments: cases)
    func parityWithPEFT(_ c: Case) throws {
        let r = try Parity.ref("pissa/\(c.name)/reference.safetensors")
        let base = try Parity.ref("\(c.arch)/base/reference.safetensors")
        let ids = try r.i("input_ids"), labels = try r.i("labels")
        let B = 2, T = ids.count / 2, path = TS.fixtures + "/\(c.arch)/model"
        let m = try Model.load(path: path)
        let originals = m.engine.adapterContext()
        try m.attachAdapter(name: "p", configJSON: c.json)
        try m.setActiveAdapter("p")
        let slot = try m.engine.adapter(named: "p")
        let lora = try #require(slot.adapter as? LoRAAdapter)
        let R = c.r, p = lora.params.floats
        let sg = try LoRAInitTests.signs(lora, r)

        // A₀, B₀ (sign-aligned), B₀·A₀ and the residual (sign-free).
        for (k, u) in lora.units.enumerated() {
            let key = peftModuleKey(u.layer, u.site, lora.model)
            let wantA = try r.f("init." + key + ".lora_A.default.weight"), wantB = try r.f("init." + key + ".lora_B.default.weight")
            let (a, b) = LoRAInitTests.aligned(u, p, rank: R, sg[k])
            // PEFT decomposes in fp32, up to 2e-5 (relative) from the float64 result (the script prints it); PEFTKit in
            // Double: within 1e-5 of the float64 reference, within 5e-5 of PEFT's.
            let exactA = try r.f("exact." + key + ".lora_A.default.weight"), exactB = try r.f("exact." + key + ".lora_B.default.weight")
            #expect(LoRAInitTests.closeRel("\(c) \(key) A0 vs float64", a, exactA, 1e-5))
            #expect(LoRAInitTests.closeRel("\(c) \(key) B0 vs float64", b, exactB, 1e-5))
            #expect(LoRAInitTests.closeRel("\(c) \(key) A0 vs PEFT", a, wantA, 5e-5))
            #expect(LoRAInitTests.closeRel("\(c) \(key) B0 vs PEFT", b, wantB, 5e-5))
            #expect(LoRAInitTests.closeRel("\(c) \(key) B0·A0", LoRAInitTests.product(a, b, rank: R, inF: u.inF, outF: u.outF),
                                           LoRAInitTests.product(exactA, exactB, rank: R, inF: u.inF, outF: u.outF), 1e-5))
            let lin = try #require(m.engine.weights.linear(u.layer, u.site))
            let res = Array(UnsafeBufferPointer(start: lin.weight, count: u.inF * u.outF))
            let hf = u.site.module(lora.model.architecture, layer: u.layer) + ".weight"
            #expect(LoRAInitTests.closeRel("\(c) residual \(hf) vs float64", res, try r.f("exact_residual." + hf), 1e-5))
            #expect(LoRAInitTests.closeRel("\(c) residual \(hf) vs PEFT", res, try r.f("residual." + hf), 5e-5))
            // The original weight is untouched and is not what the model now runs on.
            let orig = try #require(originals.frozenLinear?(u.layer, u.site))
            #expect(orig.weight != lin.weight)
        }

        // At init the adapted model is the base model (to rounding), and PEFT's.
        let (logits0, res0) = try m.forward(inputIDs: ids, labels: labels, batch: B, seqLen: T)
        #expect(Parity.close("\(c) logits at init vs base", logits0, try base.f("logits"), rel: 1e-4))
        #expect(Parity.close("\(c) logits at init vs PEFT", logits0, try r.f("logits_init"), rel: 1e-5))
        #expect(Parity.close("\(c) loss at init", [res0.loss], try r.f("loss_init"), rel: 1e-5))

        // Gradients at init.
        var probe = TrainConfig(); probe.learningRate = 0; probe.weightDecay = 0
        _ = try m.trainStep(inputIDs: ids, labels: labels, batch: B, seqLen: T, config: probe)
        for (k, u) in lora.units.enumerated() {
            let key = peftModuleKey(u.layer, u.site, lora.model)
            let (ga, gb) = LoRAInitTests.aligned(u, slot.opt.grads.floats, rank: R, sg[k])
            #expect(Parity.close("\(c) grad \(key) A", ga, try r.f("grad." + key + ".lora_A.default.weight"), rel: 1e-4))
            #expect(Parity.close("\(c) grad \(key) B", gb, try r.f("grad." + key + ".lora_B.default.weight"), rel: 1e-4))
        }

        // One AdamW step on a fresh attach, as PEFT's reference took it.
        let m2 = try Model.load(path: path)
        try m2.attachAdapter(name: "t", configJSON: c.json)
        try m2.setActiveAdapter("t")
        var tc = TrainConfig()
        tc.learningRate = 1e-2; tc.beta1 = 0.9; tc.beta2 = 0.999; tc.eps = 1e-3; tc.weightDecay = 0.01
        _ = try m2.trainStep(inputIDs: ids, labels: labels, batch: B, seqLen: T, config: tc)
        let s2 = try m2.engine.adapter(named: "t")
        let l2 = s2.adapter as! LoRAAdapter
        for (k, u) in l2.units.enumerated() {
            let key = peftModuleKey(u.layer, u.site, l2.model)
            let (a, b) = LoRAInitTests.aligned(u, l2.params.floats, rank: R, sg[k])
            #expect(Parity.close("\(c) final \(key) A", a, try r.f("final." + key + ".lora_A.default.weight"), rel: 1e-4))
            #expect(Parity.close("\(c) final \(key) B", b, try r.f("final." + key + ".lora_B.default.weight"), rel: 1e-4))
        }
        let (trained, resT) = try m2.forward(inputIDs: ids, labels: labels, batch: B, seqLen: T)
        // PEFT's fp32 A₀/B₀ are up to 2e-5 from exact, which shows in B·A − B₀·A₀ once trained: 5e-5 against PEFT here;
        // PEFT's own folders on PEFTKit (below) reproduce PEFT's trained logits to 1e-5.
        #expect(Parity.close("\(c) trained logits", trained, try r.f("final_logits"), rel: 5e-5))
        #expect(Parity.close("\(c) trained loss", [resT.loss], try r.f("final_loss"), rel: 1e-5))

        // PEFTKit's conversion: a rank-2r LoRA that, on the ORIGINAL base, is the trained model; its tensors are PEFT's.
        let tmp = TS.tempDir()
        try m2.saveAdapter(name: "t", to: tmp + "/converted", format: .convertedLoRA)
        let convCfg = try JSONValue.parseObject(try readWholeFile(path: tmp + "/converted/adapter_config.json", maxBytes: 1 << 20), source: "test")
        #expect(convCfg["r"] == .int(2 * R))
        #expect(convCfg["init_lora_weights"] == .bool(true))
        let peftConv = try SafeTensorsFile(path: TestsPaths.converted(c))
        let ours = try SafeTensorsFile(path: tmp + "/converted/adapter_model.safetensors")
        #expect(ours.names.sorted() == peftConv.names.sorted())
        for (k, u) in l2.units.enumerated() {
            let key = peftModuleKey(u.layer, u.site, l2.model)
            // Both halves of a component flip together: row q and r+q of A', column q and r+q of B'.
            let s2 = sg[k] + sg[k]
            var a = try ours.floatArray(key + ".lora_A.weight"), b = try ours.floatArray(key + ".lora_B.weight")
            for q in 0..<(2 * R) {
                for j in 0..<u.inF { a[q * u.inF + j] *= s2[q] }
                for i in 0..<u.outF { b[i * 2 * R + q] *= s2[q] }
            }
            #expect(Parity.close("\(c) converted \(key) A", a, try peftConv.floatArray(key + ".lora_A.weight"), rel: 1e-4))
            #expect(Parity.close("\(c) converted \(key) B", b, try peftConv.floatArray(key + ".lora_B.weight"), rel: 1e-4))
        }
        for (what, folder, ours) in [("PEFTKit converted", tmp + "/converted", true), ("PEFT converted", LoRAInitTests.dir(c) + "/converted", false),
                                     ("PEFT plain (residual re-derived)", LoRAInitTests.dir(c) + "/adapter", false)] {
            let fresh = try Model.load(path: path)
            let n = try fresh.loadAdapter(from: folder)
            try fresh.setActiveAdapter(n)
            let got = try fresh.forward(inputIDs: ids, labels: labels, batch: B, seqLen: T).logits
            if ours { #expect(Parity.close("\(c) \(what) on the original base", got, trained, rel: 1e-5)) }
            #expect(Parity.close("\(c) \(what) vs PEFT's trained logits", got, try r.f("final_logits"), rel: ours ? 5e-5 : 1e-5))
        }

        // The plain save keeps init_lora_weights, so it too describes an adapter of the original base.
        try m2.saveAdapter(name: "t", to: tmp + "/plain")
        let plainCfg = try JSONValue.parseObject(try readWholeFile(path: tmp + "/plain/adapter_config.json", maxBytes: 1 << 20), source: "test")
        #expect(plainCfg["init_lora_weights"] == .string(c.initName))
        #expect(plainCfg["r"] == .int(R))
        let fresh = try Model.load(path: path)
        try fresh.loadAdapter(from: tmp + "/plain", name: "again")
        try fresh.setActiveAdapter("again")
        #expect(Parity.close("\(c) PEFTKit plain save reloaded", try fresh.forward(inputIDs: ids, labels: labels, batch: B, seqLen: T).logits,
                             trained, rel: 1e-5))

        // Merged into the residual, the base alone is the trained model; unmerged, the residual again.
        try m2.mergeAdapter(name: "t")
        try m2.setActiveAdapter(nil)
        #expect(Parity.close("\(c) merged", try m2.forward(inputIDs: ids, labels: labels, batch: B, seqLen: T).logits, trained, rel: 1e-5))
        try m2.unmergeAdapter(name: "t")

        // Removing the adapter puts the original weights back, bit for bit.
        try m.removeAdapter(name: "p")
        for u in lora.units {
            let now = try #require(m.engine.weights.linear(u.layer, u.site)), orig = try #require(originals.frozenLinear?(u.layer, u.site))
            #expect(now.weight == orig.weight)
        }
        let back = try m.forward(inputIDs: ids, labels: labels, batch: B, seqLen: T).logits
        let fresh0 = try Model.load(path: path).forward(inputIDs: ids, labels: labels, batch: B, seqLen: T).logits
        #expect(back == fresh0)
    }

    /// The backward is LoRA's; checked here over a PiSSA-initialised adapter on its residual base (random model,
    /// perturbed B so that every path carries signal).
    @Test(arguments: [Architecture.gpt2, .llama])
    func finiteDifferences(_ arch: Architecture) throws {
        let cfg = TS.tinyConfig(arch)
        let model = try Model.create(config: cfg, seed: 11, initStd: 0.3)
        var lc = LoRAConfig()
        lc.rank = 3; lc.alpha = 6; lc.initLoRAWeights = .pissa
        lc.targets = arch == .gpt2 ? ["c_attn", "mlp.c_proj"] : ["q_proj", "v_proj", "down_proj"]
        try model.attachAdapter(name: "a", config: lc)
        try model.setActiveAdapter("a")
        let slot = try model.engine.adapter(named: "a")
        let p = slot.adapter.params.floats
        var rng = Rng(seed: 99)
        for i in 0..<slot.parameterCount { p[i] += 0.1 * rng.normal() }
        let B = 2, T = 6
        let ids = TS.ids(B * T, vocab: cfg.vocabSize, seed: 1)
        var tc = TrainConfig(); tc.learningRate = 0; tc.weightDecay = 0
        _ = try model.trainStep(inputIDs: ids, labels: ids, batch: B, seqLen: T, config: tc)
        let g = slot.opt.grads.floats
        func loss() throws -> Double { Double(try model.forward(inputIDs: ids, labels: ids, batch: B, seqLen: T).result.loss) }
        var r2 = Rng(seed: 5), maxErr = 0.0, maxG = 0.0
        for _ in 0..<60 {
            let i = Int(r2.nextUInt64() % UInt64(slot.parameterCount))
            let old = p[i]
            p[i] = old + 5e-3; let fp = try loss()
            p[i] = old - 5e-3; let fm = try loss()
            p[i] = old
            let num = (fp - fm) / 1e-2
            maxErr = max(maxErr, abs(num - Double(g[i])))
            maxG = max(maxG, abs(num))
        }
        print("\(arch) PiSSA: max |fd - analytic| = \(maxErr), max |grad| = \(maxG)")
        #expect(maxG > 1e-3)
        #expect(maxErr < 2e-3 * max(1, maxG))
    }

    /// `init_lora_weights: false`: A as PEFT's default draws it (same seed, same values), B random too, inside
    /// nn.Linear's bound 1/√r; the value is written back as `false` and read again as such; DoRA refuses it.
    @Test func initFalseDrawsB() throws {
        let m = try Model.load(path: TS.fixtures + "/llama/model")
        let head = #"{"peft_type": "LORA", "r": 4, "target_modules": ["q_proj", "v_proj"], "seed": 7, "#
        try m.attachAdapter(name: "std", configJSON: head + #""init_lora_weights": true}"#)
        try m.attachAdapter(name: "rnd", configJSON: head + #""init_lora_weights": false}"#)
        let std = try #require(m.engine.adapter(named: "std").adapter as? LoRAAdapter)
        let rnd = try #require(m.engine.adapter(named: "rnd").adapter as? LoRAAdapter)
        #expect(rnd.config.initLoRAWeights == .random && std.config.initLoRAWeights == .standard)
        #expect(rnd.units.count == std.units.count && !rnd.units.isEmpty)
        let bound = 1 / Float(4).squareRoot()
        for (u, v) in zip(rnd.units, std.units) {
            let a1 = Array(UnsafeBufferPointer(start: rnd.params.floats + u.a, count: 4 * u.inF))
            let a0 = Array(UnsafeBufferPointer(start: std.params.floats + v.a, count: 4 * v.inF))
            #expect(a1 == a0)
            let b1 = Array(UnsafeBufferPointer(start: rnd.params.floats + u.b, count: 4 * u.outF))
            let b0 = Array(UnsafeBufferPointer(start: std.params.floats + v.b, count: 4 * v.outF))
            #expect(b0.allSatisfy { $0 == 0 })
            #expect(b1.allSatisfy { abs($0) <= bound } && TS.maxAbs(b1) > bound / 2)
        }
        let dir = TS.tempDir() + "/rnd"
        try m.saveAdapter(name: "rnd", to: dir)
        let text = try String(contentsOfFile: dir + "/adapter_config.json", encoding: .utf8)
        #expect(text.contains(#""init_lora_weights": false"#) || text.contains(#""init_lora_weights":false"#))
        let m2 = try Model.load(path: TS.fixtures + "/llama/model")
        try m2.loadAdapter(from: dir, name: "back")
        let back = try #require(m2.engine.adapter(named: "back").adapter as? LoRAAdapter)
        #expect(back.config.initLoRAWeights == .random)
        #expect(Array(UnsafeBufferPointer(start: back.params.floats, count: back.parameterCount))
            == Array(UnsafeBufferPointer(start: rnd.params.floats, count: rnd.parameterCount)))
        #expect(throws: PEFTKitError.self) { try m.attachAdapter(name: "d", configJSON: head + #""init_lora_weights": false, "use_dora": true}"#) }
    }

    /// What cannot be done is refused with a clear error, and nothing is attached or changed.
    @Test func refusals() throws {
        let gpt2 = TS.fixtures + "/gpt2/model", llama = TS.fixtures + "/llama/model"
        let m = try Model.load(path: llama)
        func attach(_ json: String) throws { try m.attachAdapter(name: "x", configJSON: json) }
        let head = #"{"peft_type": "LORA", "r": 4, "target_modules": ["q_proj"], "#
        #expect(throws: PEFTKitError.self) { try attach(head + #""init_lora_weights": "pissa_niter_4"}"#) }
        #expect(throws: PEFTKitError.self) { try attach(head + #""init_lora_weights": "corda"}"#) }
        #expect(throws: PEFTKitError.self) { try attach(head + #""init_lora_weights": "pissa", "use_dora": true}"#) }
        #expect(throws: PEFTKitError.self) {
            try attach(#"{"peft_type": "LORA", "r": 33, "target_modules": ["q_proj"], "init_lora_weights": "pissa"}"#)
        }
        #expect(m.adapterNames.isEmpty)
        // GPT-2's Conv1D: PEFT's OLoRA decomposes the stored transpose, so PEFTKit refuses it.
        let g = try Model.load(path: gpt2)
        do {
            try g.attachAdapter(name: "o", configJSON: #"{"peft_type": "LORA", "r": 4, "target_modules": ["c_attn"], "init_lora_weights": "olora"}"#)
            Issue.record("OLoRA on GPT-2 was accepted")
        } catch PEFTKitError.unsupported(let msg) { #expect(msg.contains("Conv1D")) }
        // Quantized base weights are not rewritten.
        let q = try Model.load(path: TS.fixtures + "/quant_llama/tiny_q4_0.gguf")
        do {
            try q.attachAdapter(name: "p", configJSON: #"{"peft_type": "LORA", "r": 2, "target_modules": ["q_proj"], "init_lora_weights": "pissa"}"#)
            Issue.record("PiSSA on a quantized base was accepted")
        } catch PEFTKitError.unsupported(let msg) { #expect(msg.contains("widen")) }

        // One residual per linear; merges and full fine-tuning cannot be built over or under a residual.
        try m.attachAdapter(name: "p", configJSON: head + #""init_lora_weights": "pissa"}"#)
        #expect(throws: PEFTKitError.self) { try m.attachAdapter(name: "p2", configJSON: head + #""init_lora_weights": "olora"}"#) }
        #expect(throws: PEFTKitError.self) { try m.enableFullFineTuning() }
        #expect(throws: PEFTKitError.self) { try m.saveAdapter(name: "p", to: TS.tempDir() + "/a.gguf", format: .gguf) }
        try m.attachAdapter(name: "plain", configJSON: head + #""init_lora_weights": true}"#)
        try m.mergeAdapter(name: "plain")
        #expect(throws: PEFTKitError.self) { try m.removeAdapter(name: "p") }
        #expect(throws: PEFTKitError.self) {
            try m.attachAdapter(name: "v", configJSON: #"{"peft_type": "LORA", "r": 4, "target_modules": ["v_proj"], "init_lora_weights": "pissa"}"#)
        }
        // A standard LoRA rewrites nothing: it attaches over a merge and leaves full fine-tuning possible.
        try m.attachAdapter(name: "std", configJSON: #"{"peft_type": "LORA", "r": 2, "target_modules": ["v_proj"]}"#)
        #expect(try m.engine.adapter(named: "std").rewrite == nil)
        try m.removeAdapter(name: "std")
        try m.unmergeAdapter(name: "plain")
        try m.removeAdapter(name: "p")
        #expect(m.adapterNames == ["plain"])
    }
}

private enum TestsPaths {
    static func converted(_ c: LoRAInitTests.Case) -> String { LoRAInitTests.dir(c) + "/converted/adapter_model.safetensors" }
}
