import Testing
@testable import PEFTKit
#if canImport(Glibc)
import Glibc
#endif

/// The rest of the adapter methods on BERT against their references (Tests/Fixtures/bert/<shape>/methods.safetensors,
/// written by scripts/make_bert_fixtures.py): AdapterHub's Pfeiffer (seq_bn), and PEFT's prefix and prompt
/// tuning with SEQ_CLS / FEATURE_EXTRACTION files; finite differences of each new backward.
@Suite struct BERTMethodTests {
    static func methods(_ shape: String) throws -> Parity.Ref { try Parity.ref("bert/\(shape)/methods.safetensors") }

    /// Hidden states of the batch and the adapter gradients of sum(hidden · probe) (probe over the real
    /// positions).
    static func gradients(_ m: Model, _ b: BERTTests.Batch, types: Bool, probe: [Float]) throws {
        try b.ids.withUnsafeBufferPointer { ids in
            try withOptionalBuffer(types ? b.types : nil) { t in
                try b.mask.withUnsafeBufferPointer { mask in
                    try m.engine.encoderGradients(inputIDs: ids, typeIDs: t, mask: mask, batch: b.B, seqLen: b.T, probe: probe)
                }
            }
        }
    }

    // MARK: Pfeiffer (seq_bn)

    static func pfName(_ n: String) -> String { BERTTests.adapterHubName(n) }

    /// AdapterHub's SeqBnConfig on a BertModel: the unit reads LN2(y + h) through the layer's own LayerNorm and
    /// the layer outputs LN2(y + h + A(LN2(y + h))).
    @Test(arguments: BERTTests.shapes)
    func pfeifferHiddenAndGradients(_ shape: String) throws {
        let ref = try Parity.ref("bert/\(shape)/reference.safetensors")
        let r = try BERTMethodTests.methods(shape)
        let b = try BERTTests.batch(ref)
        let m = try BERTTests.model(shape)
        try m.attachAdapter(name: "pf", config: .bottleneck(BottleneckConfig(preset: .pfeiffer, reductionFactor: 8)))
        try m.setActiveAdapter("pf")
        let slot = try m.engine.adapter(named: "pf")
        try BERTTests.set(slot, r, prefix: "pf_init.", name: "pf", rename: BERTMethodTests.pfName)
        let h = try m.hiddenStates(inputIDs: b.ids, attentionMask: b.mask, tokenTypeIDs: b.types, batch: b.B, seqLen: b.T)
        #expect(Parity.close("bert/\(shape) Pfeiffer hidden", h, try r.f("pf_hidden"), rel: 1e-5))
        // The unit changes the output (the fixture's weights are far from zero).
        #expect(TS.maxAbsDiff(h, try ref.f("hidden")) > 1e-2)
        try BERTMethodTests.gradients(m, b, types: true, probe: try ref.f("probe"))
        try BERTTests.grads(slot, r, prefix: "pf_grad.", name: "pf", rename: BERTMethodTests.pfName, what: "bert/\(shape) Pfeiffer")
    }

    /// AdapterHub's own save (`save_adapter(..., use_safetensors=True)` from a BertModel: names without `bert.`)
    /// loads with its outputs; PEFTKit's save of it loads back the same, written as AdapterHub writes it.
    @Test func pfeifferAdapterHubFolderBothWays() throws {
        let ref = try Parity.ref("bert/a/reference.safetensors")
        let r = try BERTMethodTests.methods("a")
        let b = try BERTTests.batch(ref)
        let m = try BERTTests.model("a")
        let name = try m.loadAdapter(from: TS.fixtures + "/bert/a/adapterhub_seq_bn")
        #expect(name == "pf")
        try m.setActiveAdapter(name)
        let h = try m.hiddenStates(inputIDs: b.ids, attentionMask: b.mask, tokenTypeIDs: b.types, batch: b.B, seqLen: b.T)
        #expect(Parity.close("bert/a AdapterHub seq_bn folder", h, try r.f("pf_hidden"), rel: 1e-5))
        let dir = TS.tempDir()
        try m.saveAdapter(name: name, to: dir + "/pf")
        let cfg = try JSONValue.parseObject(try readWholeFile(path: dir + "/pf/adapter_config.json", maxBytes: 1 << 20), source: "test")
        #expect(cfg["model_class"] == .string("BertModel") && cfg["model_type"] == .string("bert"))
        guard case .object(let bn)? = cfg["config"] else { Issue.record("no config object"); return }
        #expect(bn["original_ln_before"] == .bool(true) && bn["mh_adapter"] == .bool(false) && bn["output_adapter"] == .bool(true))
        #expect(bn["reduction_factor"] == .int(8) && bn["non_linearity"] == .string("relu"))
        let saved = try SafeTensorsFile(path: dir + "/pf/adapter.safetensors")
        let theirs = try SafeTensorsFile(path: TS.fixtures + "/bert/a/adapterhub_seq_bn/adapter.safetensors")
        #expect(Set(saved.names) == Set(theirs.names.map { "bert." + $0 }))
        let m2 = try BERTTests.model("a")
        try m2.setActiveAdapter(try m2.loadAdapter(from: dir + "/pf"))
        let again = try m2.hiddenStates(inputIDs: b.ids, attentionMask: b.mask, tokenTypeIDs: b.types, batch: b.B, seqLen: b.T)
        #expect(again == h)
    }

    /// Finite differences of sum(hidden · probe) for Pfeiffer units (with and without the adapter's own
    /// ln_before, and with a unit after attention too): the backward through the layer's LayerNorm applied twice.
    @Test(arguments: [false, true])
    func pfeifferFiniteDifferences(_ lnBefore: Bool) throws {
        var c = TS.tinyConfig(.bert)
        c.encoder = EncoderSettings(typeVocabSize: 2, pooler: false)
        let m = try Model.create(config: c, seed: 7, initStd: 0.3)
        var bc = BottleneckConfig(preset: .pfeiffer, reductionFactor: 4, lnBefore: lnBefore)
        bc.mhAdapter = true
        try m.attachAdapter(name: "t", config: .bottleneck(bc))
        try m.setActiveAdapter("t")
        let slot = try m.engine.adapter(named: "t")
        let P = slot.parameterCount
        var rng = Rng(seed: 13)
        let p = slot.adapter.params.floats
        for i in 0..<P { p[i] = 0.3 * rng.normal() }
        slot.adapter.parametersChanged()
        let B = 2, T = 5
        let ids = TS.ids(B * T, vocab: c.vocabSize, seed: 3)
        let types: [Int32] = [0, 1, 1, 1, 0, 0, 1, 1, 0, 0]
        let mask: [Int32] = [1, 1, 1, 1, 1, 1, 1, 1, 0, 0]
        let probe = (0..<(B * T * c.hiddenSize)).map { _ in rng.normal() }
        let batch = BERTTests.Batch(ids: ids, types: types, mask: mask, B: B, T: T)
        try BERTMethodTests.gradients(m, batch, types: true, probe: probe)
        let worst = try BERTMethodTests.finiteDifferenceError(slot, gradient: slot.opt.grads.floats) {
            let h = try m.hiddenStates(inputIDs: ids, attentionMask: mask, tokenTypeIDs: types, batch: B, seqLen: T)
            return zip(h, probe).reduce(0.0) { $0 + Double($1.0) * Double($1.1) }
        }
        print("bert FD Pfeiffer (ln_before \(lnBefore)): worst relative error \(worst)")
        #expect(worst < 2e-2)
    }

    /// Central differences (step 1e-2) of `loss` against `gradient` over up to ~50 of the adapter's parameters;
    /// the worst error relative to max(1, |fd|).
    static func finiteDifferenceError(_ slot: AdapterSlot, gradient: UnsafeMutablePointer<Float>,
                                      loss: () throws -> Double) throws -> Float {
        let P = slot.adapter.parameterCount, p = slot.adapter.params.floats
        let g = Array(UnsafeBufferPointer(start: gradient, count: P))
        #expect(g.contains { $0 != 0 })
        var worst: Float = 0
        let eps: Float = 1e-2
        for i in stride(from: 0, to: P, by: max(1, P / 50)) {
            let keep = p[i]
            p[i] = keep + eps; slot.adapter.parametersChanged()
            let up = try loss()
            p[i] = keep - eps; slot.adapter.parametersChanged()
            let down = try loss()
            p[i] = keep; slot.adapter.parametersChanged()
            let fd = Float((up - down) / (2 * Double(eps)))
            worst = max(worst, abs(fd - g[i]) / max(1, abs(fd)))
        }
        return worst
    }
}

// MARK: prefix and prompt tuning

extension BERTMethodTests {
    static func promptLearningJSON(_ tag: String, task: String, extra: String = "") -> String {
        #"{"peft_type": "\#(tag == "prefix" ? "PREFIX_TUNING" : "PROMPT_TUNING")", "num_virtual_tokens": 3, "task_type": "\#(task)"\#(extra)}"#
    }

    /// PEFT FEATURE_EXTRACTION on a BertModel with padding (PEFT drops token types there): a prefix's keys are
    /// always attended and the tokens' positions start after it; a prompt's virtual tokens come first, through
    /// the embedding LayerNorm, with the mask extended over them. Hidden states (the prompt's virtual rows too)
    /// and the gradient of sum(hidden[:, V:] · probe).
    @Test(arguments: BERTTests.shapes, ["prefix", "prompt"])
    func promptLearningHiddenAndGradients(_ shape: String, _ tag: String) throws {
        let ref = try Parity.ref("bert/\(shape)/reference.safetensors")
        let r = try BERTMethodTests.methods(shape)
        let b = try BERTTests.batch(ref)
        let m = try BERTTests.model(shape)
        try m.attachAdapter(name: "default", configJSON: BERTMethodTests.promptLearningJSON(tag, task: "FEATURE_EXTRACTION"))
        try m.setActiveAdapter("default")
        let slot = try m.engine.adapter(named: "default")
        try BERTTests.set(slot, r, prefix: tag + "_init.", name: "default") { $0 }
        let C = m.config.hiddenSize, V = tag == "prompt" ? 3 : 0, W = V + b.T
        let want = try r.f(tag + "_hidden")
        #expect(want.count == b.B * W * C)
        let h = try m.hiddenStates(inputIDs: b.ids, attentionMask: b.mask, batch: b.B, seqLen: b.T)
        var wantReal: [Float] = []
        for row in 0..<b.B {
            let lo: Int = (row * W + V) * C, hi: Int = (row + 1) * W * C
            wantReal += want[lo..<hi]
        }
        #expect(Parity.close("bert/\(shape) \(tag) hidden", h, wantReal, rel: 1e-5))
        if V > 0 {
            // Every row of the pass, the virtual ones included.
            let full = try b.ids.withUnsafeBufferPointer { ids in
                try b.mask.withUnsafeBufferPointer { mask in
                    let (s, rows) = try m.engine.encode(inputIDs: ids.baseAddress!, inputs: EncoderInputs(typeIDs: nil, mask: mask.baseAddress),
                                                        batch: b.B, seqLen: b.T)
                    #expect(rows.width == W)
                    return Array(UnsafeBufferPointer(start: s.floats, count: b.B * W * C))
                }
            }
            #expect(Parity.close("bert/\(shape) prompt hidden with virtual rows", full, want, rel: 1e-5))
        }
        try BERTMethodTests.gradients(m, b, types: false, probe: try ref.f("probe"))
        try BERTTests.grads(slot, r, prefix: tag + "_grad.", name: "default", rename: { $0 }, what: "bert/\(shape) \(tag)")
    }

    /// PEFT SEQ_CLS on BertForSequenceClassification (token types given; the prompt's are type 0): the pooler
    /// reads the first row of the pass (the first virtual token under prompt tuning); logits, loss and the
    /// gradients of the prompt and the classifier.
    @Test(arguments: ["prefix", "prompt"])
    func promptLearningSequenceClassification(_ tag: String) throws {
        let ref = try Parity.ref("bert/a/reference.safetensors")
        let r = try BERTMethodTests.methods("a")
        let b = try BERTTests.batch(ref)
        let m = try BERTTests.model("a")
        try m.attachAdapter(name: "default", configJSON: BERTMethodTests.promptLearningJSON(tag, task: "SEQ_CLS"))
        try m.setActiveAdapter("default")
        let slot = try m.engine.adapter(named: "default")
        try BERTTests.set(slot, r, prefix: tag + "_init.", name: "default") { $0 }
        try m.attachHead(.classification, outputs: 3)
        let head = try #require(slot.head)
        let w = try ref.f("classifier.weight"), bias = try ref.f("classifier.bias")
        head.params.update(from: w, count: w.count)
        (head.params + w.count).update(from: bias, count: bias.count)
        let labels = try ref.i("cls_labels")
        let eval = try m.headOutputs(inputIDs: b.ids, attentionMask: b.mask, tokenTypeIDs: b.types, labels: labels,
                                     batch: b.B, seqLen: b.T)
        #expect(Parity.close("bert/a \(tag) SEQ_CLS eval logits", eval.outputs, try r.f(tag + "_cls_logits"), rel: 1e-5))
        let (loss, logits) = try BERTTests.headGradients(m, b, labels: labels, targets: nil)
        #expect(Parity.close("bert/a \(tag) SEQ_CLS logits", logits, try r.f(tag + "_cls_logits"), rel: 1e-5))
        #expect(Parity.close("bert/a \(tag) SEQ_CLS loss", [loss], try r.f(tag + "_cls_loss"), rel: 1e-5))
        try BERTTests.grads(slot, r, prefix: tag + "_cls_grad.", name: "default", rename: { $0 }, what: "bert/a \(tag) SEQ_CLS")
        let hg = slot.opt.grads.floats + slot.adapter.parameterCount
        #expect(Parity.close("bert/a \(tag) grad classifier.weight", Array(UnsafeBufferPointer(start: hg, count: w.count)),
                             try r.f(tag + "_cls_grad.classifier.weight"), rel: 1e-5))
        #expect(Parity.close("bert/a \(tag) grad classifier.bias", Array(UnsafeBufferPointer(start: hg + w.count, count: bias.count)),
                             try r.f(tag + "_cls_grad.classifier.bias"), rel: 1e-5))
    }

    /// PEFT's own folders load with their outputs: SEQ_CLS prefix and prompt (classifier saved as
    /// `base_model.classifier.*`, prompt learning's form) and a FEATURE_EXTRACTION prefix. PEFTKit's saves of
    /// them hold PEFT's names, task type and config keys, and load back with the same outputs.
    @Test(arguments: ["peft_prefix_seqcls", "peft_prompt_seqcls", "peft_prefix_fe"])
    func promptLearningFoldersBothWays(_ folder: String) throws {
        let ref = try Parity.ref("bert/a/reference.safetensors")
        let r = try BERTMethodTests.methods("a")
        let b = try BERTTests.batch(ref)
        let m = try BERTTests.model("a")
        let path = TS.fixtures + "/bert/a/" + folder
        try m.setActiveAdapter(try m.loadAdapter(from: path, name: "theirs"))
        let seqcls = folder.hasSuffix("seqcls"), tag = folder.contains("prefix") ? "prefix" : "prompt"
        func outputs(_ m: Model) throws -> [Float] {
            seqcls ? try m.classify(inputIDs: b.ids, attentionMask: b.mask, tokenTypeIDs: b.types, batch: b.B, seqLen: b.T)
                : try m.hiddenStates(inputIDs: b.ids, attentionMask: b.mask, batch: b.B, seqLen: b.T)
        }
        let got = try outputs(m)
        #expect(Parity.close("bert/a \(folder)", got, try r.f(seqcls ? tag + "_cls_logits" : tag + "_hidden"), rel: 1e-5))
        #expect(try m.headInfo()?.kind == (seqcls ? .classification : nil))
        let dir = TS.tempDir() + "/" + folder
        try m.saveAdapter(name: "theirs", to: dir)
        let mine = try JSONValue.parseObject(try readWholeFile(path: dir + "/adapter_config.json", maxBytes: 1 << 20), source: "mine")
        let theirs = try JSONValue.parseObject(try readWholeFile(path: path + "/adapter_config.json", maxBytes: 1 << 20), source: "theirs")
        #expect(mine["task_type"] == theirs["task_type"])
        #expect(Set(theirs.keys).subtracting(mine.keys).subtracting(["peft_version"]).isEmpty,
                "missing keys \(Set(theirs.keys).subtracting(mine.keys))")
        for k in ["num_virtual_tokens", "token_dim", "num_attention_heads", "num_layers", "peft_type"] { #expect(mine[k] == theirs[k], "\(k)") }
        let st = try SafeTensorsFile(path: dir + "/adapter_model.safetensors")
        let their = try SafeTensorsFile(path: path + "/adapter_model.safetensors")
        #expect(Set(st.names) == Set(their.names))
        let m2 = try BERTTests.model("a")
        try m2.setActiveAdapter(try m2.loadAdapter(from: dir, name: "again"))
        #expect(try outputs(m2) == got)
    }

    /// Finite differences of each head's loss with respect to every parameter of the one block (prompt or prefix,
    /// then the head), with padding and token types: the backward into the virtual tokens through the embedding
    /// LayerNorm, the extended mask, the pooler on a virtual row, mean pooling over virtual rows, token heads on
    /// the real rows, a projected prefix.
    @Test(arguments: [("prompt", "classification", true), ("prompt", "classification", false), ("prompt", "tokens", true),
                      ("prompt", "regression", false), ("prefix", "classification", true), ("prefix", "tokens", false),
                      ("prefix+projection", "classification", false)])
    func promptLearningFiniteDifferences(_ method: String, _ kind: String, _ pooler: Bool) throws {
        var c = TS.tinyConfig(.bert)
        c.encoder = EncoderSettings(typeVocabSize: 2, pooler: pooler)
        let m = try Model.create(config: c, seed: 9, initStd: 0.3)
        let json = method == "prompt" ? BERTMethodTests.promptLearningJSON("prompt", task: "SEQ_CLS")
            : BERTMethodTests.promptLearningJSON("prefix", task: "SEQ_CLS",
                                                 extra: method.hasSuffix("projection") ? #", "prefix_projection": true, "encoder_hidden_size": 6"# : "")
        try m.attachAdapter(name: "t", configJSON: json)
        try m.setActiveAdapter("t")
        let hk = try #require(HeadKind(rawValue: kind))
        try m.attachHead(hk, outputs: hk == .regression ? 2 : 3, seed: 4)
        let slot = try m.engine.adapter(named: "t")
        let head = try #require(slot.head)
        var rng = Rng(seed: 12)
        let P = slot.adapter.parameterCount, H = head.parameterCount
        for i in 0..<P { slot.adapter.params.floats[i] = 0.5 * rng.normal() }
        for i in 0..<H { head.params[i] = 0.5 * rng.normal() }
        slot.adapter.parametersChanged()
        let B = 2, T = 4
        let ids = TS.ids(B * T, vocab: c.vocabSize, seed: 5)
        let types: [Int32] = [0, 1, 1, 0, 0, 0, 1, 0]
        let mask: [Int32] = [1, 1, 1, 1, 1, 1, 0, 0]
        let batch = BERTTests.Batch(ids: ids, types: types, mask: mask, B: B, T: T)
        let labels: [Int32]? = switch hk {
        case .classification: [2, 0]
        case .tokens: [1, 0, 2, -100, 2, 1, -100, -100]
        case .regression: nil
        }
        let targets: [Float]? = hk == .regression ? [0.5, -1, 2, 0.25] : nil
        _ = try BERTTests.headGradients(m, batch, labels: labels, targets: targets)
        #expect(slot.opt.count == P + H)
        let g = Array(UnsafeBufferPointer(start: slot.opt.grads.floats, count: P + H))
        #expect(g[0..<P].contains { $0 != 0 })
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
        print("bert FD \(method) \(kind) pooler \(pooler): worst relative error \(worst)")
        #expect(worst < 2e-2)
    }

    /// A padded row's real positions under prompt tuning equal the unpadded row's: the extended mask keeps the
    /// padding out and the virtual tokens in.
    @Test func promptPaddingDoesNotChangeRealPositions() throws {
        let ref = try Parity.ref("bert/a/reference.safetensors")
        let b = try BERTTests.batch(ref)
        let m = try BERTTests.model("a")
        try m.attachAdapter(name: "p", configJSON: BERTMethodTests.promptLearningJSON("prompt", task: "FEATURE_EXTRACTION"))
        try m.setActiveAdapter("p")
        let C = m.config.hiddenSize
        let all = try m.hiddenStates(inputIDs: b.ids, attentionMask: b.mask, tokenTypeIDs: b.types, batch: b.B, seqLen: b.T)
        for row in 0..<b.B {
            let n = Int(b.mask[row * b.T..<(row + 1) * b.T].reduce(0, +))
            let alone = try m.hiddenStates(inputIDs: Array(b.ids[row * b.T..<row * b.T + n]),
                                           tokenTypeIDs: Array(b.types[row * b.T..<row * b.T + n]), batch: 1, seqLen: n)
            #expect(TS.maxAbsDiff(alone, Array(all[row * b.T * C..<(row * b.T + n) * C])) <= 1e-5 * max(1, TS.maxAbs(alone)))
        }
        // Too long once the virtual tokens are counted.
        let T = m.config.maxPositions - 2
        #expect(throws: PEFTKitError.self) { try m.hiddenStates(inputIDs: [Int32](repeating: 1, count: T), batch: 1, seqLen: T).count }
    }
}

// MARK: token classification data and the CLI's tag task

extension BERTMethodTests {
    static func tinyTokenizer() throws -> WordPieceTokenizer {
        try WordPieceTokenizer(tokenizerJSON: TS.fixtures + "/wordpiece/tiny/uncased.tokenizer.json")
    }

    /// Tags on the first WordPiece of each word, -100 on the other pieces and on [CLS]/[SEP]; truncation keeps a
    /// cut word's first piece.
    @Test func taggedRecordsAlignOnFirstPieces() throws {
        let tok = try BERTMethodTests.tinyTokenizer()
        let recs = try TaggedDataset.parse(Array(#"""
            {"tokens": ["Hello", "running", "world"], "tags": ["GREET", "O", 2]}

            {"text": "run  a\tcafe", "tags": [0, 0, 1]}
            """#.utf8))
        #expect(recs.count == 2 && recs[1].words == ["run", "a", "cafe"])
        #expect(recs[0].tags == [.name("GREET"), .name("O"), .index(2)])
        let running = tok.encode("running", addSpecialTokens: false).ids
        #expect(running.count > 1)
        let a = TaggedDataset.align(words: recs[0].words, tags: [5, 6, 7], tokenizer: tok, maxLength: 64)
        #expect(a.ids.first == tok.clsID && a.ids.last == tok.sepID && a.counted == 3)
        #expect(a.labels == [-100, 5, 6] + [Int32](repeating: -100, count: running.count - 1) + [7, -100])
        #expect(Array(a.ids[2..<(2 + running.count)]) == running)
        let cut = TaggedDataset.align(words: recs[0].words, tags: [5, 6, 7], tokenizer: tok, maxLength: 4)
        #expect(cut.ids.count == 4 && cut.labels == [-100, 5, 6, -100] && cut.counted == 2)
        for bad in [#"{"tokens": ["a", "b"], "tags": ["X"]}"#, #"{"tokens": ["a"], "text": "a", "tags": ["X"]}"#,
                    #"{"text": "a b"}"#, #"{"tokens": [], "tags": []}"#, #"{"tokens": ["a"], "tags": [1.5]}"#, #"{"tokens": [""], "tags": [0]}"#, ""] {
            #expect(throws: PEFTKitError.self) { try TaggedDataset.parse(Array(bad.utf8)) }
        }
    }

    /// `train --task tag` → `eval --task tag` (per-word accuracy and macro-F1) → `classify` (word/TAG) through
    /// the CLI, on fixture shape b with the tiny WordPiece vocabulary, records in both JSONL forms.
    @Test func cliTagTask() throws {
        let exe = Preference.cliPath()
        guard access(exe, X_OK) == 0 else {
            Issue.record("peftkit-cli not found next to the test bundle (\(exe)): build it with `swift build`")
            return
        }
        let dir = TS.tempDir()
        mkdir(dir + "/model", 0o755)
        for (src, name) in [("/bert/b/model/config.json", "config.json"), ("/bert/b/model/model.safetensors", "model.safetensors"),
                            ("/wordpiece/tiny/uncased.tokenizer.json", "tokenizer.json")] {
            symlink(TS.fixtures + src, dir + "/model/" + name)
        }
        // GREET on hello, PLACE on world and cafe, O elsewhere.
        let sentences = ["hello world", "run a cafe", "hello cafe", "a world", "running to world", "hello a b",
                         "naive cafe", "b hello", "world a hello", "cafe run"]
        let lines = sentences.enumerated().map { i, s -> String in
            let words = s.split(separator: " ").map(String.init)
            let tags = words.map { w in w == "hello" ? "\"GREET\"" : (w == "world" || w == "cafe" ? "\"PLACE\"" : "\"O\"") }
            return i % 2 == 0
                ? #"{"tokens": [\#(words.map { "\"\($0)\"" }.joined(separator: ", "))], "tags": [\#(tags.joined(separator: ", "))]}"#
                : #"{"text": "\#(s)", "tags": [\#(tags.joined(separator: ", "))]}"#
        }
        try writeFileAtomically(path: dir + "/tags.jsonl", bytes: Array(lines.joined(separator: "\n").utf8))
        let train = try Preference.run(exe, ["train", "--model", dir + "/model", "--task", "tag", "--data", dir + "/tags.jsonl",
                                             "--out", dir + "/out", "--steps", "40", "--batch", "5", "--lr", "0.01",
                                             "--schedule", "constant", "--method", "lora", "--rank", "4"])
        print(train)
        #expect(train.contains("3 tags [\"GREET\", \"O\", \"PLACE\"]"), "\(train)")
        let cfg = try JSONValue.parseObject(try readWholeFile(path: dir + "/out/adapter_config.json", maxBytes: 1 << 20), source: "out")
        #expect(cfg["task_type"] == .string("TOKEN_CLS"))
        let eval = try Preference.run(exe, ["eval", "--model", dir + "/model", "--task", "tag", "--data", dir + "/tags.jsonl",
                                            "--adapter", dir + "/out"])
        print(eval)
        let words = eval.split(separator: " ").map(String.init)
        let acc = words.firstIndex(of: "accuracy").flatMap { Double(words[$0 + 1].dropLast(2)) }
        let f1 = words.firstIndex(of: "macro-F1").flatMap { Double(words[$0 + 1].filter { $0 != "," }) }
        #expect(eval.contains("over 24 words of 10 records"), "\(eval)")
        #expect((acc ?? 0) >= 90, "\(eval)")
        #expect((f1 ?? 0) >= 0.8, "\(eval)")
        let tagged = try Preference.run(exe, ["classify", "--model", dir + "/model", "--adapter", dir + "/out",
                                              "--text", "hello world"])
        #expect(tagged.contains("hello/GREET world/PLACE"), "\(tagged)")
        // The wrong kind of head is refused with a message.
        #expect(throws: PEFTKitError.self) {
            try Preference.run(exe, ["eval", "--model", dir + "/model", "--task", "classify", "--data", dir + "/tags.jsonl",
                                     "--adapter", dir + "/out"])
        }
    }
}

// MARK: heads in checkpoints

extension BERTMethodTests {
    /// A checkpoint keeps the task head with its moments: training resumed from it is bit-identical to training
    /// on without a stop, for a PEFT method (prompt) and a bottleneck (whose portable copy needs AdapterHub's head files).
    @Test(arguments: ["prompt", "houlsby"])
    func checkpointKeepsHead(_ method: String) throws {
        let json = method == "prompt" ? BERTMethodTests.promptLearningJSON("prompt", task: "SEQ_CLS") : #"{"config": "double_seq_bn"}"#
        func fresh() throws -> Model { try BERTTests.model("a") }
        let ids: [Int32] = [2, 5, 7, 9, 0, 3, 4, 1, 0, 0], mask: [Int32] = [1, 1, 1, 1, 0, 1, 1, 1, 0, 0]
        var tc = TrainConfig(); tc.learningRate = 1e-2
        func step(_ m: Model) throws {
            _ = try m.headTrainStep(inputIDs: ids, attentionMask: mask, labels: [1, 2], batch: 2, seqLen: 5, config: tc)
        }
        let m = try fresh()
        try m.attachAdapter(name: "t", configJSON: json)
        try m.setActiveAdapter("t")
        try m.attachHead(.classification, outputs: 3, seed: 2)
        try step(m); try step(m)
        let dir = TS.tempDir() + "/ckpt"
        try m.saveCheckpoint(name: "t", to: dir)
        try step(m); try step(m)
        let want = try m.classify(inputIDs: ids, attentionMask: mask, batch: 2, seqLen: 5)

        let r = try fresh()
        let name = try r.loadCheckpoint(from: dir)
        try r.setActiveAdapter(name)
        #expect(try r.headInfo()?.kind == .classification && r.headInfo()?.outputs == 3)
        try step(r); try step(r)
        #expect(try r.classify(inputIDs: ids, attentionMask: mask, batch: 2, seqLen: 5) == want)
        let a = try m.engine.adapter(named: "t"), b = try r.engine.adapter(named: name)
        #expect(a.opt.step == b.opt.step && a.opt.count == b.opt.count)
        #expect(Array(UnsafeBufferPointer(start: a.opt.v.floats, count: a.opt.count)) == Array(UnsafeBufferPointer(start: b.opt.v.floats, count: b.opt.count)))
        // The manifest names the head; the portable copy holds it too.
        let manifest = String(decoding: try readWholeFile(path: dir + "/checkpoint.json", maxBytes: 1 << 20), as: UTF8.self)
        #expect(manifest.contains("\"kind\" : \"classification\""), "\(manifest)")
    }
}

// MARK: AdapterHub head files

extension BERTMethodTests {
    /// AdapterHub seq_bn on BertForSequenceClassification with the classifier trained too: logits, loss and the
    /// gradients of the units and the classifier.
    @Test func pfeifferSequenceClassificationGradients() throws {
        let ref = try Parity.ref("bert/a/reference.safetensors")
        let r = try BERTMethodTests.methods("a")
        let b = try BERTTests.batch(ref)
        let m = try BERTTests.model("a")
        try m.attachAdapter(name: "pf", config: .bottleneck(BottleneckConfig(preset: .pfeiffer, reductionFactor: 8)))
        try m.setActiveAdapter("pf")
        let slot = try m.engine.adapter(named: "pf")
        try BERTTests.set(slot, r, prefix: "pf_init.", name: "pf", rename: BERTMethodTests.pfName)
        try m.attachHead(.classification, outputs: 3)
        let head = try #require(slot.head)
        let w = try ref.f("classifier.weight"), bias = try ref.f("classifier.bias")
        head.params.update(from: w, count: w.count)
        (head.params + w.count).update(from: bias, count: bias.count)
        let (loss, logits) = try BERTTests.headGradients(m, b, labels: try ref.i("cls_labels"), targets: nil)
        #expect(Parity.close("bert/a seq_bn SEQ_CLS logits", logits, try r.f("pf_cls_logits"), rel: 1e-5))
        #expect(Parity.close("bert/a seq_bn SEQ_CLS loss", [loss], try r.f("pf_cls_loss"), rel: 1e-5))
        try BERTTests.grads(slot, r, prefix: "pf_cls_grad.", name: "pf", rename: { $0 }, what: "bert/a seq_bn SEQ_CLS")
        let hg = slot.opt.grads.floats + slot.adapter.parameterCount
        #expect(Parity.close("bert/a seq_bn grad classifier.weight", Array(UnsafeBufferPointer(start: hg, count: w.count)),
                             try r.f("pf_cls_grad.classifier.weight"), rel: 1e-5))
        #expect(Parity.close("bert/a seq_bn grad classifier.bias", Array(UnsafeBufferPointer(start: hg + w.count, count: bias.count)),
                             try r.f("pf_cls_grad.classifier.bias"), rel: 1e-5))
    }

    /// AdapterHub's `save_adapter(..., with_head=True)` of a static head (head_config.json + model_head.safetensors)
    /// loads with its logits; PEFTKit writes the same files (names, config keys) and reads them back; a save
    /// without the head removes stale head files.
    @Test func adapterHubHeadFilesBothWays() throws {
        let ref = try Parity.ref("bert/a/reference.safetensors")
        let r = try BERTMethodTests.methods("a")
        let b = try BERTTests.batch(ref)
        let m = try BERTTests.model("a")
        let path = TS.fixtures + "/bert/a/adapterhub_seq_bn_head"
        let name = try m.loadAdapter(from: path)
        try m.setActiveAdapter(name)
        #expect(try m.headInfo()?.kind == .classification && m.headInfo()?.outputs == 3)
        let logits = try m.classify(inputIDs: b.ids, attentionMask: b.mask, tokenTypeIDs: b.types, batch: b.B, seqLen: b.T)
        #expect(Parity.close("bert/a AdapterHub head folder logits", logits, try r.f("pf_cls_logits"), rel: 1e-5))
        let dir = TS.tempDir() + "/pf"
        try m.saveAdapter(name: name, to: dir)
        let mine = try JSONValue.parseObject(try readWholeFile(path: dir + "/head_config.json", maxBytes: 1 << 20), source: "mine")
        let theirs = try JSONValue.parseObject(try readWholeFile(path: path + "/head_config.json", maxBytes: 1 << 20), source: "theirs")
        #expect(Set(mine.keys) == Set(theirs.keys))
        for k in ["config", "model_class", "num_labels", "hidden_size", "label2id", "model_type"] { #expect(mine[k] == theirs[k], "\(k)") }
        #expect(Set(try SafeTensorsFile(path: dir + "/model_head.safetensors").names)
                == Set(try SafeTensorsFile(path: path + "/model_head.safetensors").names))
        let m2 = try BERTTests.model("a")
        try m2.setActiveAdapter(try m2.loadAdapter(from: dir))
        #expect(try m2.classify(inputIDs: b.ids, attentionMask: b.mask, tokenTypeIDs: b.types, batch: b.B, seqLen: b.T) == logits)
        // A token head is a BertForTokenClassification head.
        try m2.attachHead(.tokens, outputs: 4)
        try m2.saveAdapter(name: "pf", to: dir)
        let tok = try JSONValue.parseObject(try readWholeFile(path: dir + "/head_config.json", maxBytes: 1 << 20), source: "tok")
        #expect(tok["model_class"] == .string("BertForTokenClassification") && tok["num_labels"] == .int(4))
        // Saved without a head, the folder loads without one.
        let m3 = try BERTTests.model("a")
        try m3.attachAdapter(name: "pf", config: .bottleneck(BottleneckConfig(preset: .pfeiffer, reductionFactor: 8)))
        try m3.saveAdapter(name: "pf", to: dir)
        #expect(pathKind(dir + "/head_config.json") == .missing)
        try m3.setActiveAdapter(try m3.loadAdapter(from: dir, name: "again"))
        #expect(try m3.headInfo() == nil)
        // A flex head (AdapterModel) is refused with a message.
        var flex = theirs
        flex["config"] = .object(["head_type": .string("classification"), "layers": .int(2)])
        try writeFileAtomically(path: dir + "/model_head.safetensors", bytes: try readWholeFile(path: path + "/model_head.safetensors", maxBytes: 1 << 20))
        try writeFileAtomically(path: dir + "/head_config.json", bytes: Array(JSONValue.object(flex).serialized().utf8))
        #expect(throws: PEFTKitError.self) { try m3.loadAdapter(from: dir, name: "flex") }
    }
}

// MARK: folders for the outside check

extension BERTMethodTests {
    /// With PEFTKIT_BERT_SAVES=<dir>: writes PEFTKit's saves of trained prefix / prompt (SEQ_CLS), prefix
    /// (FEATURE_EXTRACTION) and seq_bn + head (AdapterHub) adapters on fixture shape a, with PEFTKit's outputs
    /// (outputs.safetensors), for scripts/check_bert_saves.py to load with peft / adapters and compare. Does
    /// nothing otherwise.
    @Test func writeSavesForOutsideCheck() throws {
        guard let root = getenv("PEFTKIT_BERT_SAVES").map({ String(cString: $0) }) else { return }
        let ref = try Parity.ref("bert/a/reference.safetensors")
        let b = try BERTTests.batch(ref)
        var outputs: [SafeTensorsWriter.Entry] = []
        var tc = TrainConfig(); tc.learningRate = 5e-2
        let labels = try ref.i("cls_labels")
        for (folder, json) in [("prefix_seqcls", BERTMethodTests.promptLearningJSON("prefix", task: "SEQ_CLS")),
                               ("prompt_seqcls", BERTMethodTests.promptLearningJSON("prompt", task: "SEQ_CLS")),
                               ("prefix_fe", BERTMethodTests.promptLearningJSON("prefix", task: "FEATURE_EXTRACTION")),
                               ("seq_bn_head", #"{"config": "seq_bn", "seed": 3}"#),
                               ("double_seq_bn_tokens", #"{"config": "double_seq_bn", "seed": 4}"#)] {
            let m = try BERTTests.model("a")
            try m.attachAdapter(name: "t", configJSON: json)
            try m.setActiveAdapter("t")
            let out: [Float]
            if folder == "prefix_fe" {
                // No head: move the prefix off its init with a few steps of a throwaway head, then drop it by
                // saving into a fresh model.
                try m.attachHead(.classification, outputs: 3, seed: 1)
                for _ in 0..<3 { _ = try m.headTrainStep(inputIDs: b.ids, attentionMask: b.mask, labels: labels, batch: b.B, seqLen: b.T, config: tc) }
                let tmp = TS.tempDir() + "/p"
                try m.saveAdapter(name: "t", to: tmp)
                let m2 = try BERTTests.model("a")
                try m2.attachAdapter(name: "t", configJSON: json)
                let st = try SafeTensorsFile(path: tmp + "/adapter_model.safetensors")
                let slot = try m2.engine.adapter(named: "t")
                try copyFileTensor(st, key: "prompt_embeddings", shape: [3, slot.parameterCount / 3], into: slot.adapter.params.floats, path: tmp)
                slot.adapter.parametersChanged()
                try m2.setActiveAdapter("t")
                try m2.saveAdapter(name: "t", to: root + "/" + folder)
                out = try m2.hiddenStates(inputIDs: b.ids, attentionMask: b.mask, batch: b.B, seqLen: b.T)
            } else {
                let tokens = folder.hasSuffix("tokens")
                try m.attachHead(tokens ? .tokens : .classification, outputs: tokens ? 4 : 3, seed: 1)
                let lab = tokens ? (0..<(b.B * b.T)).map { b.mask[$0] == 0 ? Int32(-100) : Int32($0 % 4) } : labels
                for _ in 0..<3 {
                    _ = try m.headTrainStep(inputIDs: b.ids, attentionMask: b.mask, tokenTypeIDs: b.types, labels: lab,
                                            batch: b.B, seqLen: b.T, config: tc)
                }
                try m.saveAdapter(name: "t", to: root + "/" + folder)
                out = try m.classify(inputIDs: b.ids, attentionMask: b.mask, tokenTypeIDs: b.types, batch: b.B, seqLen: b.T)
            }
            outputs.append(.init(name: folder, shape: [out.count], payload: .f32(out)))
        }
        outputs += [.init(name: "input_ids", shape: [b.B, b.T], payload: .i32(b.ids)),
                    .init(name: "attention_mask", shape: [b.B, b.T], payload: .i32(b.mask)),
                    .init(name: "token_type_ids", shape: [b.B, b.T], payload: .i32(b.types))]
        try SafeTensorsWriter.write(path: root + "/outputs.safetensors", entries: outputs, metadata: nil)
        print("wrote PEFTKit's saves and outputs into \(root)")
    }
}
