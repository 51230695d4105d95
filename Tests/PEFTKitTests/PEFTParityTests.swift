import Testing
@testable import PEFTKit

/// Parity with PyTorch + transformers + HF `peft` 0.18.1 for LoRA, rsLoRA, IA3, prefix and prompt tuning,
/// from the fixtures scripts/make_peft_fixtures.py wrote (Tests/Fixtures/peft/README.md describes every
/// key). PEFT's own adapter folders load here; PEFTKit's saves hold the same tensors under the same names.
@Suite struct PEFTParity {
    static let cases = ["gpt2", "llama"].flatMap { a in ["lora", "rslora", "ia3", "prefix", "prompt", "dora"].map { (a, $0) } }

    static func dir(_ arch: String, _ kind: String) -> String { TS.fixtures + "/peft/\(arch)/\(kind)" }

    /// PEFT's parameter name of a saved key (`….lora_A.weight` ↔ `….lora_A.default.weight`).
    static func paramName(_ key: String, kind: String) -> String {
        if key == peftEmbeddingsKey { return "prompt_encoder.default.embedding.weight" }
        if key.hasSuffix(".ia3_l") { return key + ".default" }
        if key.hasSuffix(".lora_magnitude_vector") { return key + ".default.weight" }
        return key.replacing(".lora_A.", with: ".lora_A.default.").replacing(".lora_B.", with: ".lora_B.default.")
    }

    /// Reference logits of the real tokens (prompt tuning's reference also has the virtual positions).
    static func realLogits(_ r: Parity.Ref, key: String = "logits", virtual: Int) throws -> [Float] {
        let all = try r.f(key)
        guard virtual > 0 else { return all }
        let B = 2, V = 97, Tp = all.count / (B * V), T = Tp - virtual
        var out: [Float] = []
        for b in 0..<B { out += all[(b * Tp + virtual) * V..<(b * Tp + Tp) * V] }
        #expect(out.count == B * T * V)
        return out
    }

    static func slice(_ slot: AdapterSlot, _ base: UnsafeMutablePointer<Float>, _ e: FileTensorSlot) -> [Float] {
        Array(UnsafeBufferPointer(start: base + e.offset, count: e.shape.reduce(1, *)))
    }

    @Test(arguments: cases)
    func logitsGradientsAndTraining(_ arch: String, _ kind: String) throws {
        let r = try Parity.ref("peft/\(arch)/\(kind)/reference.safetensors")
        let ids = try r.i("input_ids"), labels = try r.i("labels")
        let B = 2, T = ids.count / 2
        let m = try Model.load(path: TS.fixtures + "/\(arch)/model")
        let name = try m.loadAdapter(from: PEFTParity.dir(arch, kind) + "/adapter")
        #expect(name == "default")
        try m.setActiveAdapter(name)
        let slot = try m.engine.adapter(named: name)
        let layout = try #require(slot.adapter as? SavableAdapter).fileTensorSlots(name: name)
        // The folder holds the reference's initial tensors, every one placed.
        #expect(layout.count == (try r.file.names.filter { $0.hasPrefix("init.") }.count))
        for e in layout {
            #expect(PEFTParity.slice(slot, slot.adapter.params.floats, e) == (try r.f("init." + PEFTParity.paramName(e.name, kind: kind))), "\(e.name)")
        }
        let virtual = kind == "prompt" ? 5 : 0
        let (logits, res) = try m.forward(inputIDs: ids, labels: labels, batch: B, seqLen: T)
        #expect(Parity.close("\(arch)/\(kind) logits", logits, try PEFTParity.realLogits(r, virtual: virtual), rel: 1e-5))
        #expect(Parity.close("\(arch)/\(kind) loss", [res.loss], try r.f("loss"), rel: 1e-5))

        var probe = TrainConfig(); probe.learningRate = 0; probe.weightDecay = 0
        _ = try m.trainStep(inputIDs: ids, labels: labels, batch: B, seqLen: T, config: probe)
        for e in layout {
            let want = try r.f("grad." + PEFTParity.paramName(e.name, kind: kind))
            #expect(Parity.close("grad \(e.name)", PEFTParity.slice(slot, slot.opt.grads.floats, e), want, rel: 1e-4))
        }

        let m2 = try Model.load(path: TS.fixtures + "/\(arch)/model")
        try m2.loadAdapter(from: PEFTParity.dir(arch, kind) + "/adapter", name: "t")
        try m2.setActiveAdapter("t")
        var tc = TrainConfig()
        tc.learningRate = 1e-2; tc.beta1 = 0.9; tc.beta2 = 0.999; tc.eps = 1e-8; tc.weightDecay = 0.01
        var losses: [Float] = []
        for _ in 0..<10 { losses.append(try m2.trainStep(inputIDs: ids, labels: labels, batch: B, seqLen: T, config: tc).loss) }
        #expect(Parity.close("\(arch)/\(kind) 10 AdamW losses", losses, try r.f("adam_losses"), rel: 1e-5))
        let s2 = try m2.engine.adapter(named: "t")
        for e in layout {
            let want = try r.f("final." + PEFTParity.paramName(e.name, kind: kind))
            #expect(Parity.close("final \(e.name)", PEFTParity.slice(s2, s2.adapter.params.floats, e), want, rel: 1e-4))
        }
        let fl = try m2.forward(inputIDs: ids, labels: labels, batch: B, seqLen: T).result.loss
        #expect(Parity.close("\(arch)/\(kind) loss after 10 steps", [fl], try r.f("final_loss"), rel: 1e-5))

        if kind == "lora" || kind == "ia3" || kind == "dora" {
            try m.mergeAdapter(name: name)
            try m.setActiveAdapter(nil)
            let merged = try m.forward(inputIDs: ids, labels: labels, batch: B, seqLen: T).logits
            #expect(Parity.close("\(arch)/\(kind) merged logits", merged, try r.f("merged_logits"), rel: 1e-5))
        }
    }

    /// A projected prefix trains through its MLP exactly as PEFT's; its save holds only the MLP's output
    /// (as PEFT's does), which loads as a plain prefix with the same logits.
    @Test(arguments: ["gpt2", "llama"])
    func projectedPrefix(_ arch: String) throws {
        let r = try Parity.ref("peft/\(arch)/prefix_proj/reference.safetensors")
        let ids = try r.i("input_ids"), labels = try r.i("labels")
        let B = 2, T = ids.count / 2
        let m = try Model.load(path: TS.fixtures + "/\(arch)/model")
        var pc = PrefixConfig(); pc.virtualTokens = 5; pc.projection = true; pc.projectionHidden = 16
        try m.attachAdapter(name: "p", config: .prefix(pc))
        try m.setActiveAdapter("p")
        let slot = try m.engine.adapter(named: "p")
        let a = slot.adapter as! PrefixAdapter
        let enc = "prompt_encoder.default."
        let kvd = a.kvd, H = a.hidden, W = a.width
        let parts: [(String, [Int], Int)] = [
            (enc + "embedding.weight", [5, kvd], a.emb), (enc + "transform.0.weight", [H, kvd], a.w1),
            (enc + "transform.0.bias", [H], a.b1), (enc + "transform.2.weight", [W, H], a.w2), (enc + "transform.2.bias", [W], a.b2),
        ]
        #expect(parts.map { $0.1.reduce(1, *) }.reduce(0, +) == slot.parameterCount)
        for (n, shape, off) in parts {
            let v = try r.f("init." + n)
            #expect(v.count == shape.reduce(1, *), "\(n)")
            (slot.adapter.params.floats + off).update(from: v, count: v.count)
        }
        let (logits, res) = try m.forward(inputIDs: ids, labels: labels, batch: B, seqLen: T)
        #expect(Parity.close("\(arch)/prefix_proj logits", logits, try r.f("logits"), rel: 1e-5))
        #expect(Parity.close("\(arch)/prefix_proj loss", [res.loss], try r.f("loss"), rel: 1e-5))

        let dir = TS.tempDir() + "/init"
        try m.saveAdapter(name: "p", to: dir)
        let saved = try SafeTensorsFile(path: dir + "/adapter_model.safetensors")
        #expect(saved.names == ["prompt_embeddings"])
        #expect(Parity.close("\(arch) saved projected prefix", try saved.floatArray("prompt_embeddings"), try r.f("prefix_projected"), rel: 1e-5))
        let back = try m.loadAdapter(from: dir, name: "plain")
        try m.setActiveAdapter(back)
        #expect(Parity.close("\(arch) reloaded projected prefix logits", try m.forward(inputIDs: ids, batch: B, seqLen: T).logits,
                             logits, rel: 1e-6))
        try m.removeAdapter(name: back)
        try m.setActiveAdapter("p")

        var probe = TrainConfig(); probe.learningRate = 0; probe.weightDecay = 0
        _ = try m.trainStep(inputIDs: ids, labels: labels, batch: B, seqLen: T, config: probe)
        for (n, shape, off) in parts {
            let got = Array(UnsafeBufferPointer(start: slot.opt.grads.floats + off, count: shape.reduce(1, *)))
            #expect(Parity.close("grad \(n)", got, try r.f("grad." + n), rel: 1e-4))
        }
        // Ten AdamW steps on a fresh copy (moments at zero).
        try m.removeAdapter(name: "p")
        try m.attachAdapter(name: "q", config: .prefix(pc))
        try m.setActiveAdapter("q")
        let s2 = try m.engine.adapter(named: "q")
        for (n, _, off) in parts { let v = try r.f("init." + n); (s2.adapter.params.floats + off).update(from: v, count: v.count) }
        var tc = TrainConfig()
        tc.learningRate = 1e-2; tc.beta1 = 0.9; tc.beta2 = 0.999; tc.eps = 1e-8; tc.weightDecay = 0.01
        var losses: [Float] = []
        for _ in 0..<10 { losses.append(try m.trainStep(inputIDs: ids, labels: labels, batch: B, seqLen: T, config: tc).loss) }
        #expect(Parity.close("\(arch)/prefix_proj 10 AdamW losses", losses, try r.f("adam_losses"), rel: 1e-5))
        for (n, shape, off) in parts {
            let got = Array(UnsafeBufferPointer(start: s2.adapter.params.floats + off, count: shape.reduce(1, *)))
            #expect(Parity.close("final \(n)", got, try r.f("final." + n), rel: 1e-4))
        }
        let after = TS.tempDir() + "/trained"
        try m.saveAdapter(name: "q", to: after)
        #expect(Parity.close("\(arch) saved trained projected prefix",
                             try SafeTensorsFile(path: after + "/adapter_model.safetensors").floatArray("prompt_embeddings"),
                             try r.f("final_prefix_projected"), rel: 1e-4))
        // PEFT's own folder of this case holds the projected rows too, and loads as a plain prefix.
        let m3 = try Model.load(path: TS.fixtures + "/\(arch)/model")
        try m3.setActiveAdapter(try m3.loadAdapter(from: PEFTParity.dir(arch, "prefix_proj") + "/adapter"))
        let l3 = try m3.forward(inputIDs: ids, labels: labels, batch: B, seqLen: T)
        #expect(Parity.close("\(arch) PEFT's prefix_proj folder logits", l3.logits, try r.f("logits"), rel: 1e-5))
    }

    /// Two LoRA adapters from one PEFT model: each alone, both (one merged, the other active: LoRA deltas add),
    /// and disabled. PEFT 0.18's files carry the other adapter's tensors under an extra name component; they
    /// are skipped.
    @Test(arguments: ["gpt2", "llama"])
    func twoLoRAAdapters(_ arch: String) throws {
        let r = try Parity.ref("peft/\(arch)/multi_lora/reference.safetensors")
        let ids = try r.i("input_ids"), labels = try r.i("labels")
        let B = 2, T = ids.count / 2
        let m = try Model.load(path: TS.fixtures + "/\(arch)/model")
        try m.loadAdapter(from: PEFTParity.dir(arch, "multi_lora") + "/adapter/a", name: "a")
        try m.loadAdapter(from: PEFTParity.dir(arch, "multi_lora") + "/adapter/b", name: "b")
        for (n, key) in [("a", "a"), ("b", "b")] {
            try m.setActiveAdapter(n)
            let (lg, res) = try m.forward(inputIDs: ids, labels: labels, batch: B, seqLen: T)
            #expect(Parity.close("\(arch) multi_lora logits_\(key)", lg, try r.f("logits_" + key), rel: 1e-5))
            #expect(Parity.close("\(arch) multi_lora loss_\(key)", [res.loss], try r.f("loss_" + key), rel: 1e-5))
        }
        try m.mergeAdapter(name: "a")
        try m.setActiveAdapter("b")
        let ab = try m.forward(inputIDs: ids, labels: labels, batch: B, seqLen: T)
        #expect(Parity.close("\(arch) multi_lora logits_ab", ab.logits, try r.f("logits_ab"), rel: 1e-5))
        #expect(Parity.close("\(arch) multi_lora loss_ab", [ab.result.loss], try r.f("loss_ab"), rel: 1e-5))
        try m.unmergeAdapter(name: "a")
        try m.setActiveAdapter(nil)
        let off = try m.forward(inputIDs: ids, labels: labels, batch: B, seqLen: T).logits
        #expect(Parity.close("\(arch) multi_lora disabled", off, try r.f("logits_disabled"), rel: 1e-5))
    }

    /// Saving writes PEFT's file: the same tensor names, shapes and values as PEFT's own save of the same
    /// adapter, and a config PEFT's loader reads to the same adapter (scripts/check_peft_interop.py loads
    /// these folders in `peft` itself); reloading is bit-exact.
    @Test(arguments: cases)
    func saveMatchesPEFTsFiles(_ arch: String, _ kind: String) throws {
        let m = try Model.load(path: TS.fixtures + "/\(arch)/model")
        try m.loadAdapter(from: PEFTParity.dir(arch, kind) + "/adapter", name: "x")
        let out = TS.tempDir() + "/saved"
        try m.saveAdapter(name: "x", to: out)
        let theirs = try SafeTensorsFile(path: PEFTParity.dir(arch, kind) + "/adapter/adapter_model.safetensors")
        let mine = try SafeTensorsFile(path: out + "/adapter_model.safetensors")
        #expect(mine.names == theirs.names.sorted())
        for n in theirs.names {
            #expect(mine.info(n)?.shape == theirs.info(n)?.shape, "\(n)")
            #expect(try mine.floatArray(n) == (try theirs.floatArray(n)), "\(n)")
        }
        func cfg(_ d: String) throws -> [String: JSONValue] {
            try JSONValue.parseObject(try readWholeFile(path: d + "/adapter_config.json"), source: d)
        }
        let a = try cfg(PEFTParity.dir(arch, kind) + "/adapter"), b = try cfg(out)
        #expect(a["peft_type"] == b["peft_type"] && b["task_type"] == .string("CAUSAL_LM"))
        func number(_ v: JSONValue?) -> Double? {
            switch v { case .int(let i)?: return Double(i); case .double(let d)?: return d; default: return nil }
        }
        #expect(a["r"] == b["r"] && number(a["lora_alpha"]) == number(b["lora_alpha"]) && a["use_rslora"] == b["use_rslora"])
        func set(_ s: JSONValue?) -> Set<String>? {
            guard case .array(let items)? = s else { return nil }
            return Set(items.compactMap { if case .string(let n) = $0 { n } else { nil } })
        }
        #expect(set(a["target_modules"]) == set(b["target_modules"]))
        #expect(set(a["feedforward_modules"]) == set(b["feedforward_modules"]))
        #expect((a["layers_to_transform"] ?? .null) == (b["layers_to_transform"] ?? .null))
        #expect(a["num_virtual_tokens"] == b["num_virtual_tokens"] && a["token_dim"] == b["token_dim"])
        #expect(a["num_attention_heads"] == b["num_attention_heads"] && a["num_layers"] == b["num_layers"])
        let again = try m.loadAdapter(from: out, name: "y")
        let x = try m.engine.adapter(named: "x"), y = try m.engine.adapter(named: again)
        #expect(Array(UnsafeBufferPointer(start: x.adapter.params.floats, count: x.parameterCount))
                == Array(UnsafeBufferPointer(start: y.adapter.params.floats, count: y.parameterCount)))
    }

    /// Configs PEFTKit cannot honour are refused with a clear error and attach nothing; PEFT's variants of
    /// the target syntax (a regular expression, "all-linear", an int layer) load.
    @Test func configVariantsAndRefusals() throws {
        let src = PEFTParity.dir("llama", "lora") + "/adapter"
        let base = String(decoding: try readWholeFile(path: src + "/adapter_config.json"), as: UTF8.self)
        let weights = try readWholeFile(path: src + "/adapter_model.safetensors")
        let m = try Model.load(path: TS.fixtures + "/llama/model")
        func folder(_ json: String) throws -> String {
            let d = TS.tempDir()
            try writeFileAtomically(path: d + "/adapter_config.json", bytes: Array(json.utf8))
            try writeFileAtomically(path: d + "/adapter_model.safetensors", bytes: weights)
            return d
        }
        let targets = "\"target_modules\": [\n    \"gate_proj\",\n    \"v_proj\",\n    \"o_proj\",\n    \"k_proj\",\n    \"up_proj\",\n    \"down_proj\",\n    \"q_proj\"\n  ]"
        #expect(base.contains(targets))
        let refused: [(String, String)] = [
            ("\"use_dora\": false", "\"use_dora\": true"), ("\"bias\": \"none\"", "\"bias\": \"all\""),
            ("\"modules_to_save\": null", "\"modules_to_save\": [\"lm_head\"]"), ("\"rank_pattern\": {}", "\"rank_pattern\": {\"q_proj\": 2}"),
            ("\"peft_type\": \"LORA\"", "\"peft_type\": \"LOHA\""), ("\"task_type\": \"CAUSAL_LM\"", "\"task_type\": \"SEQ_CLS\""),
            ("\"r\": 4", "\"r\": 5"), (targets, "\"target_modules\": [\"lm_head\"]"),
            (targets, "\"target_modules\": \"model\\\\.layers\\\\.0\\\\.self_attn\\\\.q_proj\""),
            ("\"lora_alpha\": 8", "\"lora_alpha\": \"eight\""), ("{", "["),
        ]
        for (from, to) in refused {
            #expect(base.contains(from), "\(from)")
            let d = try folder(base.replacing(from, with: to))
            #expect(throws: PEFTKitError.self, "\(to)") { try m.loadAdapter(from: d, name: "bad") }
            #expect(m.adapterNames.isEmpty, "nothing attached after \(to)")
        }
        // Equivalent spellings of every-module-in-every-layer.
        for spec in ["\"target_modules\": \"all-linear\"", "\"target_modules\": \".*_proj\"",
                     "\"target_modules\": [\"self_attn.q_proj\", \"k_proj\", \"v_proj\", \"o_proj\", \"mlp.gate_proj\", \"up_proj\", \"down_proj\"]"] {
            let n = try m.loadAdapter(from: try folder(base.replacing(targets, with: spec)), name: "v")
            #expect(try m.adapterParameterCount(name: n) == 3904, "\(spec)")
            try m.removeAdapter(name: n)
        }
        // A layer subset needs exactly those layers' tensors.
        let d = try folder(base.replacing("\"layers_to_transform\": null", with: "\"layers_to_transform\": 1"))
        #expect(throws: PEFTKitError.self) { try m.loadAdapter(from: d, name: "l1") }  // layer-0 tensors are extra
    }
}
