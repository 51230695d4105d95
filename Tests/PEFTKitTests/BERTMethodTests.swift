import Testing
@testable import PEFTKit

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
