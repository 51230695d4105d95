import Testing
@testable import PEFTKit
#if canImport(Glibc)
import Glibc
#endif

// Saving whole models (Model.saveModel): merged LoRA and full fine-tuning on the GPT-2 and Llama fixtures (written by
// transformers), saved as a Hugging Face folder and as GGUF, read back by PEFTKit with the same logits. Whether
// transformers and llama.cpp read the files the same way is checked by scripts/check_model_export.py (developer-run).

private func catching(_ body: () throws -> Void) -> PEFTKitError? {
    do { try body(); return nil } catch let e as PEFTKitError { return e } catch { return .state("\(error)") }
}

/// Removes a test folder and everything in it (one level of subfolders).
private func removeTree(_ dir: String) {
    for (name, kind) in directoryEntries(dir) ?? [] {
        if kind == .directory { removeTree(dir + "/" + name) } else { unlink(dir + "/" + name) }
    }
    rmdir(dir)
}

private func logits(_ m: Model, _ ids: [Int32], batch: Int = 2) throws -> [Float] {
    try m.forward(inputIDs: ids, batch: batch, seqLen: ids.count / batch).logits
}

/// Attaches a LoRA adapter on every linear, trains it two steps (so B is not zero) and merges it.
private func mergeTrainedLoRA(_ m: Model, targets: [String]) throws {
    let t = targets.map { "\"\($0)\"" }.joined(separator: ", ")
    try m.attachAdapter(name: "task", configJSON: #"{"peft_type": "LORA", "r": 4, "lora_alpha": 8, "target_modules": [\#(t)]}"#)
    try m.setActiveAdapter("task")
    var tc = TrainConfig()
    tc.learningRate = 0.05
    let ids = TS.ids(2 * 12, vocab: m.config.vocabSize, seed: 7)
    for _ in 0..<2 { _ = try m.trainStep(inputIDs: ids, batch: 2, seqLen: 12, config: tc) }
    try m.mergeAdapter(name: "task")
}

private func fullTune(_ m: Model) throws {
    try m.enableFullFineTuning()
    var tc = TrainConfig()
    tc.learningRate = 0.01
    let ids = TS.ids(2 * 12, vocab: m.config.vocabSize, seed: 8)
    for _ in 0..<2 { _ = try m.trainStep(inputIDs: ids, batch: 2, seqLen: 12, config: tc) }
}

@Suite struct ModelExportTests {
    /// GPT-2 with a merged LoRA: the saved folder holds the fixture's tensor names and shapes (transformers'
    /// `Conv1D` [in, out] layout), a config that reads back equal, and gives bit-identical logits.
    @Test func gpt2MergedLoRAHuggingFaceRoundTrip() throws {
        let src = TS.fixtures + "/gpt2/model"
        let m = try Model.load(path: src)
        let ids = TS.ids(2 * 10, vocab: m.config.vocabSize, seed: 3)
        let before = try logits(m, ids)
        try mergeTrainedLoRA(m, targets: ["c_attn", "attn.c_proj", "c_fc", "mlp.c_proj"])
        let merged = try logits(m, ids)
        #expect(TS.maxAbsDiff(merged, before) > 1e-4, "the merged LoRA changes the model")

        let dir = TS.tempDir()
        defer { removeTree(dir) }
        let out = dir + "/gpt2-merged"
        try m.saveModel(to: out, format: .huggingFace)
        let saved = try SafeTensorsFile(path: out + "/model.safetensors")
        let original = try SafeTensorsFile(path: src + "/model.safetensors")
        #expect(Set(saved.names) == Set(original.names.filter { !$0.hasSuffix(".attn.bias") && !$0.hasSuffix(".attn.masked_bias") }))
        for n in saved.names { #expect(saved.info(n)?.shape == original.info(n)?.shape, "\(n)") }
        // The fused q|k|v Conv1D weight holds the merged values in [in, out] order.
        let qkv = try saved.floatArray("transformer.h.0.attn.c_attn.weight")
        let lin = try #require(m.engine.weights.linear(0, .qkv))
        #expect(lin.transposed && qkv == Array(UnsafeBufferPointer(start: lin.weight, count: qkv.count)))

        let back = try Model.load(path: out)
        #expect(back.config == m.config)
        #expect(try logits(back, ids) == merged)
        #expect(pathKind(out + "/generation_config.json") == .file)  // copied from the source folder
    }

    /// Llama after full fine-tuning: Hugging Face folder and GGUF F32 read back with bit-identical logits; GGUF F16
    /// reads back as exactly the model with every matrix rounded to F16 (norms stay F32).
    @Test func llamaFullFineTuningRoundTrips() throws {
        let m = try Model.load(path: TS.fixtures + "/llama/model")
        try fullTune(m)
        let ids = TS.ids(2 * 9, vocab: m.config.vocabSize, seed: 4)
        let want = try logits(m, ids)
        let dir = TS.tempDir()
        defer { removeTree(dir) }

        try m.saveModel(to: dir + "/hf", format: .huggingFace)
        let hf = try Model.load(path: dir + "/hf")
        #expect(hf.config == m.config)
        #expect(try logits(hf, ids) == want)

        try m.saveModel(to: dir + "/m32.gguf", format: .gguf(.f32))
        let g32 = try Model.load(path: dir + "/m32.gguf")
        #expect(g32.config == m.config)
        #expect(try logits(g32, ids) == want)
        let file = try GGUFFile(path: dir + "/m32.gguf")
        #expect(try file.string("general.architecture") == "llama")
        #expect(file.info("blk.0.attn_q.weight")?.type == .f32)

        try m.saveModel(to: dir + "/m16.gguf", format: .gguf(.f16))
        let f16 = try GGUFFile(path: dir + "/m16.gguf")
        #expect(f16.info("blk.1.ffn_down.weight")?.type == .f16)
        #expect(f16.info("output.weight")?.type == .f16)
        #expect(f16.info("blk.1.ffn_norm.weight")?.type == .f32)
        let g16 = try Model.load(path: dir + "/m16.gguf")
        let got16 = try logits(g16, ids)
        // F16 keeps 11 significant bits: a relative error of at most 2^-11 per weight; logits move by about that
        // much of their size. The exact claim: the file holds the round-to-nearest F16 of every matrix.
        let rel = TS.maxAbsDiff(got16, want) / TS.maxAbs(want)
        print("llama F16 GGUF: logits max rel diff \(rel) against fp32")
        #expect(rel > 0 && rel < 1e-2)
        for (name, t) in m.engine.weights.named where t.shape.count == 2 {
            for i in 0..<t.count { t.data[i] = Float(Float16(t.data[i])) }  // the trained block is owned: round it in place
            _ = name
        }
        #expect(try logits(m, ids) == got16)
    }

    /// A merged LoRA on q and k (the rows GGUF permutes) and a Qwen2-style q/k/v bias: GGUF F32 gives bit-identical
    /// logits; the q/k rows are stored in GGUF's interleaved order.
    @Test func llamaMergedLoRAGGUFRoundTrip() throws {
        var cfg = TS.tinyConfig(.llama)
        cfg.qkvBias = true
        let m = try Model.create(config: cfg, seed: 5, initStd: 0.3)
        for (name, t) in m.engine.weights.named where name.hasSuffix(".bias") {
            for i in 0..<t.count { t.data[i] = Float(i % 7) * 0.05 - 0.1 }
        }
        try mergeTrainedLoRA(m, targets: ["q_proj", "k_proj", "v_proj", "o_proj"])
        let ids = TS.ids(2 * 8, vocab: cfg.vocabSize, seed: 6)
        let want = try logits(m, ids)
        let dir = TS.tempDir()
        defer { removeTree(dir) }
        let path = dir + "/merged.gguf"
        try m.saveModel(to: path, format: .gguf(.f32))
        let back = try Model.load(path: path)
        #expect(back.config == m.config)
        #expect(try logits(back, ids) == want)
        // Head 0 of the merged q weight: GGUF row 1 is Hugging Face row headDim/2.
        let file = try GGUFFile(path: path)
        let q = try file.tensor("blk.0.attn_q.weight")
        let lin = try #require(m.engine.weights.linear(0, .q))
        let C = cfg.hiddenSize, half = cfg.headDim / 2
        #expect(Array(q.buffer[C..<(2 * C)]) == Array(UnsafeBufferPointer(start: lin.weight + half * C, count: C)))
        let qb = try file.tensor("blk.0.attn_q.bias")
        #expect(qb.data[1] == lin.bias![half])
    }

    /// BERT (a `BertForSequenceClassification` checkpoint, `bert.` prefix) saves as `BertModel` (no prefix, pooler kept)
    /// with identical hidden states and pooled output.
    @Test func bertHuggingFaceRoundTrip() throws {
        let m = try Model.load(path: TS.fixtures + "/bert/a/model")
        let ids = TS.ids(2 * 6, vocab: m.config.vocabSize, seed: 12)
        let want = try m.hiddenStates(inputIDs: ids, batch: 2, seqLen: 6)
        let dir = TS.tempDir()
        defer { removeTree(dir) }
        try m.saveModel(to: dir + "/bert", format: .huggingFace)
        let saved = try SafeTensorsFile(path: dir + "/bert/model.safetensors")
        #expect(saved.has("embeddings.word_embeddings.weight") && saved.has("pooler.dense.weight"))
        let back = try Model.load(path: dir + "/bert")
        #expect(back.config == m.config)
        #expect(try back.hiddenStates(inputIDs: ids, batch: 2, seqLen: 6) == want)
    }

    /// A GGUF base kept in blocks is widened while it is written: both formats read back as the widened model.
    @Test(arguments: ["tiny_q4_0.gguf", "tiny_q8_0.gguf"])
    func quantizedBaseIsWidenedWhileWriting(_ file: String) throws {
        let path = TS.fixtures + "/quant_llama/" + file
        let q = try Model.load(path: path)
        #expect(!q.engine.weights.quantized.isEmpty)
        let wide = try Model.load(path: path, widen: true)
        let ids = TS.ids(2 * 7, vocab: q.config.vocabSize, seed: 9)
        let want = try logits(wide, ids)
        let dir = TS.tempDir()
        defer { removeTree(dir) }
        try q.saveModel(to: dir + "/hf", format: .huggingFace)
        #expect(try logits(Model.load(path: dir + "/hf"), ids) == want)
        try q.saveModel(to: dir + "/w.gguf", format: .gguf(.f32))
        let g = try Model.load(path: dir + "/w.gguf")
        #expect(g.engine.weights.quantized.isEmpty)
        #expect(try logits(g, ids) == want)
    }

    /// The GGUF tokenizer metadata a model was loaded with is written back as it was (arrays included), and a
    /// model loaded from GGUF gets its chat template in a saved folder.
    @Test func ggufTokenizerIsCarriedOver() throws {
        let m = try Model.create(config: TS.tinyConfig(.llama), seed: 2)
        let keys: [(String, GGUFValue)] = [
            ("tokenizer.ggml.model", .string("gpt2")), ("tokenizer.ggml.pre", .string("smollm")),
            ("tokenizer.ggml.tokens", .array(.string((0..<37).map { "t\($0)" }))),
            ("tokenizer.ggml.token_type", .array(.int32((0..<37).map { $0 < 2 ? 3 : 1 }))),
            ("tokenizer.ggml.scores", .array(.float32((0..<37).map { Float($0) / 4 }))),
            ("tokenizer.ggml.eos_token_id", .uint32(1)), ("tokenizer.ggml.add_bos_token", .bool(false)),
            ("tokenizer.chat_template", .string("{% for m in messages %}{{ m.content }}{% endfor %}")),
        ]
        m.text.withLock { $0.origin = .gguf(keys) }
        let dir = TS.tempDir()
        defer { removeTree(dir) }
        try m.saveModel(to: dir + "/t.gguf", format: .gguf(.f32))
        let f = try GGUFFile(path: dir + "/t.gguf")
        for (k, v) in keys { #expect(f.metadata[k] == v, "\(k)") }
        try m.saveModel(to: dir + "/hf", format: .huggingFace)
        let template = try readWholeFile(path: dir + "/hf/chat_template.jinja")
        #expect(String(decoding: template, as: UTF8.self) == "{% for m in messages %}{{ m.content }}{% endfor %}")
    }

    /// Refusals: an active unmerged adapter, GGUF for GPT-2, a tokenizer without GGUF form, a directory or an
    /// unwritable path, an F16 overflow. None leaves a file behind.
    @Test func refusalsLeaveNothing() throws {
        let dir = TS.tempDir()
        defer { removeTree(dir) }
        let m = try Model.create(config: TS.tinyConfig(.llama), seed: 3)
        try m.attachAdapter(name: "p", configJSON: #"{"peft_type": "PROMPT_TUNING", "num_virtual_tokens": 2}"#)
        try m.setActiveAdapter("p")
        let e1 = catching { try m.saveModel(to: dir + "/a", format: .huggingFace) }
        guard case .state(let msg)? = e1 else { Issue.record("expected state, got \(String(describing: e1))"); return }
        #expect(msg.contains("not merged"))
        #expect(catching { try m.mergeAdapter(name: "p") }.map { if case .unsupported = $0 { true } else { false } } == true)
        try m.setActiveAdapter(nil)

        let g = try Model.create(config: TS.tinyConfig(.gpt2), seed: 3)
        guard case .unsupported? = catching({ try g.saveModel(to: dir + "/g.gguf", format: .gguf(.f32)) }) else {
            Issue.record("GPT-2 GGUF should be unsupported"); return
        }
        let tok = try Model.load(path: TS.fixtures + "/llama/model")
        try tok.loadTokenizer(path: TS.fixtures + "/tokenizer/tiny/tokenizer.json")
        let e3 = catching { try tok.saveModel(to: dir + "/t.gguf", format: .gguf(.f16)) }
        guard case .unsupported(let m3)? = e3 else { Issue.record("expected unsupported, got \(String(describing: e3))"); return }
        #expect(m3.contains("loadTokenizer"))

        guard case .io? = catching({ try m.saveModel(to: dir, format: .gguf(.f32)) }) else { Issue.record("directory"); return }
        guard case .io? = catching({ try m.saveModel(to: dir + "/missing/sub/x.gguf", format: .gguf(.f32)) }) else {
            Issue.record("missing parent"); return
        }
        try writeFileAtomically(path: dir + "/file", bytes: [1])
        guard case .io? = catching({ try m.saveModel(to: dir + "/file", format: .huggingFace) }) else {
            Issue.record("a file in the folder's place"); return
        }
        #expect(catching { try m.saveModel(to: "", format: .huggingFace) } == .invalidArgument("empty path"))

        let big = try Model.create(config: TS.tinyConfig(.llama), seed: 4)
        let w = try #require(big.engine.weights.linear(1, .down))
        w.weight[3] = 1e6
        let e6 = catching { try big.saveModel(to: dir + "/big.gguf", format: .gguf(.f16)) }
        guard case .invalidArgument(let m6)? = e6 else { Issue.record("expected invalidArgument, got \(String(describing: e6))"); return }
        #expect(m6.contains("F16"))
        try big.saveModel(to: dir + "/big.gguf", format: .gguf(.f32))  // F32 holds it
        #expect(Set((directoryEntries(dir) ?? []).map(\.name)) == ["file", "big.gguf"])
    }
}
