import Testing
@testable import PEFTKit
#if canImport(Glibc)
import Glibc
#endif

// A frozen base kept in GGUF blocks (QLoRA on the CPU): tiny random Llamas written as Q8_0 / Q4_0 GGUF by
// scripts/make_quant_llama_fixtures.py (gguf.quants), loaded quantized (the default) and widened.

private let quantFiles = ["tiny_q8_0.gguf", "tiny_q4_0.gguf"]
private func fixture(_ f: String) -> String { TS.fixtures + "/quant_llama/" + f }

private func relDiff(_ a: [Float], _ b: [Float]) -> Float {
    TS.maxAbsDiff(a, b) / max(1e-30, TS.maxAbs(b))
}

private func fdiff(_ x: UnsafeMutablePointer<Float>, _ i: Int, eps: Float, _ f: () throws -> Double) rethrows -> Double {
    let old = x[i]
    x[i] = old + eps
    let fp = try f()
    x[i] = old - eps
    let fm = try f()
    x[i] = old
    return (fp - fm) / Double(2 * eps)
}

@Suite struct QuantBaseTests {
    /// Linear weights and the embedding stay in blocks; norms and biases are fp32; widening keeps nothing in blocks.
    @Test(arguments: quantFiles)
    func loadKeepsBlocks(_ file: String) throws {
        let q = try Model.load(path: fixture(file))
        let w = try Model.load(path: fixture(file), widen: true)
        let qn = q.engine.weights.quantized
        #expect(w.engine.weights.quantized.isEmpty)
        let cfg = q.config
        // 7 linears per layer + embedding (+ head when untied).
        #expect(qn.count == 7 * cfg.numLayers + 1 + (cfg.tieWordEmbeddings ? 0 : 1))
        #expect(q.engine.weights.named.allSatisfy { $0.tensor.shape.count == 1 })
        let l0 = try #require(q.engine.weights.linear(0, .q))
        #expect(l0.quantized != nil)
        if file == "tiny_q4_0.gguf" {
            #expect(q.engine.weights.linear(1, .v)?.quantized?.type == .f16)
            #expect(q.engine.weights.linear(0, .up)?.quantized?.type == .q4_0)
        }
    }

    /// (a) Prefill (N > 1, fp32 activations: tiles widened into a panel + sgemm) gives the widened model's logits
    /// and loss within 1e-5 relative; decode (one row: 8-bit activations) stays within the 8-bit bound's order.
    @Test(arguments: quantFiles)
    func forwardMatchesWidened(_ file: String) throws {
        let q = try Model.load(path: fixture(file))
        let w = try Model.load(path: fixture(file), widen: true)
        let V = q.config.vocabSize
        let ids = TS.ids(2 * 11, vocab: V, seed: 3)
        let (lq, rq) = try q.forward(inputIDs: ids, batch: 2, seqLen: 11)
        let (lw, rw) = try w.forward(inputIDs: ids, batch: 2, seqLen: 11)
        let rel = relDiff(lq, lw)
        print("\(file): prefill logits max rel diff \(rel), loss \(rq.loss) vs \(rw.loss)")
        #expect(rel <= 1e-5)
        #expect(abs(rq.loss - rw.loss) <= 1e-5 * abs(rw.loss))
        // Decode: one token at a time through the KV cache (matvec with 8-bit activations).
        var gc = GenerateConfig()
        gc.maxNewTokens = 8
        let gq = try q.generate(prompt: [1, 2, 3], config: gc)
        let gw = try w.generate(prompt: [1, 2, 3], config: gc)
        let agree = zip(gq, gw).prefix { $0 == $1 }.count
        print("\(file): greedy decode agrees on \(agree)/\(gw.count) tokens (8-bit activations in decode)")
        #expect(gq.count == gw.count)
    }

    /// (b) LoRA gradients over a quantized base equal central finite differences of the loss (the input
    /// gradients flow through the transposed quantized weights).
    @Test(arguments: quantFiles)
    func loraGradientsMatchFiniteDifferences(_ file: String) throws {
        let model = try Model.load(path: fixture(file))
        var c = LoRAConfig(); c.rank = 4; c.alpha = 8
        c.targets = ["q_proj", "v_proj", "down_proj"]
        c.layers = [0]  // the gradient must cross layer 1's quantized linears on its way down
        try model.attachAdapter(name: "a", config: .lora(c))
        try model.setActiveAdapter("a")
        let slot = try model.engine.adapter(named: "a")
        var rng = Rng(seed: 3)
        let p = slot.adapter.params.floats
        for i in 0..<slot.parameterCount { p[i] += 0.1 * rng.normal() }
        let B = 2, T = 6
        let ids = TS.ids(B * T, vocab: model.config.vocabSize, seed: 1)
        var tc = TrainConfig(); tc.learningRate = 0; tc.weightDecay = 0
        _ = try model.trainStep(inputIDs: ids, batch: B, seqLen: T, config: tc)
        let g = slot.opt.grads.floats
        func loss() throws -> Double { Double(try model.forward(inputIDs: ids, batch: B, seqLen: T).result.loss) }
        var maxErr = 0.0, maxG = 0.0
        for _ in 0..<60 {
            let i = Int(rng.nextUInt64() % UInt64(slot.parameterCount))
            let num = try fdiff(p, i, eps: 2e-3, loss)
            maxErr = max(maxErr, abs(num - Double(g[i])))
            maxG = max(maxG, abs(num))
        }
        print("\(file): LoRA fd check max |fd - analytic| = \(maxErr), max |grad| = \(maxG)")
        #expect(maxG > 1e-4)
        #expect(maxErr < 2e-3 * max(0.1, maxG))
    }

    /// (c) Every adapter method of the shared matrix trains over a quantized base: the loss falls, the base is
    /// untouched, and the first step's loss equals the widened model's.
    @Test(arguments: methodCases.filter { $0.arch == .llama })
    func everyMethodTrainsOverQuantizedBase(_ mc: MethodCase) throws {
        let q = try Model.load(path: fixture("tiny_q4_0.gguf"))
        let w = try Model.load(path: fixture("tiny_q4_0.gguf"), widen: true)
        let ids = TS.ids(2 * 7, vocab: q.config.vocabSize, seed: 6)
        var tc = TrainConfig(); tc.learningRate = 1e-2
        var first: [Float] = []
        for m in [q, w] {
            try m.attachAdapter(name: "a", config: mc.config(.llama))
            try m.setActiveAdapter("a")
            // Same start for both (prompt init from tokens reads embedding rows: dequantised rows are identical).
            let s = try m.engine.adapter(named: "a")
            var rng = Rng(seed: 9)
            for i in 0..<s.parameterCount { s.adapter.params.floats[i] += 0.01 * rng.normal() }
        }
        var losses: [Float] = []
        for _ in 0..<5 { losses.append(try q.trainStep(inputIDs: ids, batch: 2, seqLen: 7, config: tc).loss) }
        first.append(try w.trainStep(inputIDs: ids, batch: 2, seqLen: 7, config: tc).loss)
        print("\(mc) over Q4_0: losses \(losses), widened first \(first[0])")
        #expect(losses.allSatisfy { $0.isFinite })
        #expect(losses.last! < losses.first!)
        #expect(abs(losses[0] - first[0]) <= 1e-5 * abs(first[0]))
    }

    /// Merging into a quantized base and full fine-tuning are refused with `unsupported`, naming the way out.
    @Test func mergeAndFullFineTuningAreRefused() throws {
        let q = try Model.load(path: fixture("tiny_q8_0.gguf"))
        try q.attachAdapter(name: "a", config: .lora(LoRAConfig()))
        let e1 = #expect(throws: PEFTKitError.self) { try q.mergeAdapter(name: "a") }
        let e2 = #expect(throws: PEFTKitError.self) { try q.enableFullFineTuning() }
        for e in [e1, e2] {
            guard case .unsupported(let msg)? = e else { Issue.record("expected unsupported, got \(String(describing: e))"); continue }
            #expect(msg.contains("widen"), "\(msg)")
        }
        #expect(!q.isFullFineTuning)
        // Widened: both work.
        let w = try Model.load(path: fixture("tiny_q8_0.gguf"), widen: true)
        try w.attachAdapter(name: "a", config: .lora(LoRAConfig()))
        try w.mergeAdapter(name: "a")
    }

    /// (e) A quantized tensor whose row is not a whole number of blocks, and one whose bytes run short, are
    /// refused with `format` naming the tensor (never read past the mapping).
    @Test func hostileBlockSizes() throws {
        let good = try readBytes(fixture("tiny_q8_0.gguf"))
        let file = try GGUFFile(path: fixture("tiny_q8_0.gguf"))
        let info = try #require(file.info("blk.0.attn_q.weight"))
        // Find the tensor record: the name, then n_dims (u32), then ne[0] (u64).
        let name = Array("blk.0.attn_q.weight".utf8)
        let at = try #require((0..<(good.count - name.count)).first { good[$0..<($0 + name.count)].elementsEqual(name) })
        let ne0 = at + name.count + 4
        #expect(good[ne0] == UInt8(info.dimensions[0]))
        var bad = good
        bad[ne0] = UInt8(info.dimensions[0] - 8)  // 56 in-features: not whole Q8_0 blocks
        let dir = TS.tempDir()
        try writeBytes(dir + "/bad.gguf", bad)
        let e = #expect(throws: PEFTKitError.self) { try Model.load(path: dir + "/bad.gguf") }
        guard case .format(let msg)? = e else { Issue.record("expected format, got \(String(describing: e))"); return }
        print("hostile: \(msg)")
        #expect(msg.contains("blk.0.attn_q.weight") && msg.contains("block"))
        // Truncated: the last tensor's blocks cut short.
        try writeBytes(dir + "/short.gguf", Array(good.prefix(good.count - 10)))
        let t = #expect(throws: PEFTKitError.self) { try Model.load(path: dir + "/short.gguf") }
        guard case .format? = t else { Issue.record("expected format, got \(String(describing: t))"); return }
        // The matrix type itself refuses a byte count that is not whole rows of blocks.
        let raw = UnsafeMutableRawPointer.allocate(byteCount: 64, alignment: 64)
        defer { raw.deallocate() }
        #expect(throws: PEFTKitError.self) {
            try QuantizedMatrix(type: .q8_0, outFeatures: 2, inFeatures: 32, data: raw, byteCount: 64)
        }
        #expect(throws: PEFTKitError.self) {
            try QuantizedMatrix(type: .q4_K, outFeatures: 1, inFeatures: 32, data: raw, byteCount: 18)
        }
    }
}

private func readBytes(_ path: String) throws -> [UInt8] {
    guard let f = fopen(path, "rb") else { throw PEFTKitError.io("cannot open \(path)") }
    defer { fclose(f) }
    var out: [UInt8] = []
    var buf = [UInt8](repeating: 0, count: 65536)
    while true {
        let n = fread(&buf, 1, buf.count, f)
        if n == 0 { break }
        out.append(contentsOf: buf[0..<n])
    }
    return out
}

private func writeBytes(_ path: String, _ bytes: [UInt8]) throws {
    guard let f = fopen(path, "wb") else { throw PEFTKitError.io("cannot write \(path)") }
    defer { fclose(f) }
    _ = bytes.withUnsafeBufferPointer { fwrite($0.baseAddress, 1, $0.count, f) }
}
