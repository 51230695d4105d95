import Testing
@testable import PEFTKit

/// What a training step keeps per layer: the activations the backward recomputes (`RecomputedActs`) are one
/// set shared by every trained layer, everything else is each layer's own, and the LM head's logits live in the
/// backward scratch. That the recomputation changes no value is `LoRAVariants`/`sameGradientsBitForBit`'s
/// business (gradient checkpointing keeps every buffer of its one set per layer), with the parity and
/// finite-difference suites.
@Suite struct ActivationMemory {
    @Test(arguments: [Architecture.gpt2, .llama, .bert])
    func trainedLayersShareOnlyWhatTheBackwardRecomputes(_ arch: Architecture) throws {
        let cfg = TS.tinyConfig(arch)
        let m = try Model.create(config: cfg, seed: 1, initStd: 0.1)
        var lc = LoRAConfig(); lc.rank = 2
        lc.targets = LinearSite.sites(arch).map { $0.shortName(arch) }
        try m.attachAdapter(name: "a", config: .lora(lc))
        let ad = try m.engine.adapter(named: "a").adapter
        let b = try TrainBuffers(engine: m.engine, batch: 2, seqLen: 5, adapter: ad)
        try #require(cfg.numLayers >= 2 && b.acts.count == cfg.numLayers)
        let a0 = b.acts[0], a1 = b.acts[1]
        #expect(a0.recomputed && a1.recomputed)
        #expect(a0.ln1 == a1.ln1 && a0.probs == a1.probs && a0.attn == a1.attn && a0.act == a1.act)
        // BERT's ln2 is the sum before its second LayerNorm: kept per layer.
        #expect((a0.ln2 == a1.ln2) == !arch.weights.keepsLn2)
        #expect(a0.qkv != a1.qkv && a0.x1 != a1.x1 && a0.fcPre != a1.fcPre && a0.ln1Rstd != a1.ln1Rstd
                && a0.ln2Rstd != a1.ln2Rstd)
        #expect(b.logits == b.scratch.region)
        // Checkpointing recomputes whole layers into one set that nothing shares.
        let ck = try TrainBuffers(engine: m.engine, batch: 2, seqLen: 5, adapter: ad, checkpointed: true)
        #expect(ck.acts.count == 1 && !ck.acts[0].recomputed)
    }

    /// The attention backward without a [B, H, tq, tk] gradient buffer (each task in one block of its own) gives
    /// the gradients of the one with it, bit for bit, and the probabilities-only forward the full one's
    /// probabilities: causal with grouped heads, bidirectional with padding, and packed rows.
    @Test(arguments: ["causal", "padded", "packed"])
    func attentionBackwardWithoutProbabilityGradientBuffer(_ kind: String) throws {
        let B = 2, T = 7, D = 4, H = 4, KVH = kind == "padded" ? 4 : 2
        var mask = [Int32](repeating: 1, count: B * T), starts = [Int32](repeating: 0, count: B * T)
        mask[T - 1] = 0; mask[T - 2] = 0
        for t in 3..<T { starts[T + t] = 3 }
        let ld = (H + 2 * KVH) * D, hd = H * D
        let qkv = try Tensor(zeros: [B * T, ld]), out = try Tensor(zeros: [B * T, hd]), r = try Tensor(zeros: [B * T, hd])
        let probs = try Tensor(zeros: [B, H, T, T]), dprobs = try Tensor(zeros: [B, H, T, T])
        let g1 = try Tensor(zeros: [B * T, ld]), g2 = try Tensor(zeros: [B * T, ld])
        var rng = Rng(seed: 11)
        fillNormal(qkv.data, qkv.count, std: 1, rng: &rng)
        fillNormal(r.data, r.count, std: 1, rng: &rng)
        try mask.withUnsafeBufferPointer { m in
            try starts.withUnsafeBufferPointer { st in
                let s = AttentionShape(batch: B, tq: T, tk: T, pastLen: 0, heads: H, kvHeads: KVH, headDim: D,
                                       causal: kind != "padded", keyMask: kind == "padded" ? m.baseAddress : nil,
                                       segmentStarts: kind == "packed" ? st.baseAddress : nil)
                func rows(_ p: UnsafeMutablePointer<Float>) -> StridedRows { StridedRows(ptr: p, ld: ld, batchStride: T * ld) }
                let dout = StridedRows(ptr: r.data, ld: hd, batchStride: T * hd)
                attentionForward(out: StridedRows(ptr: out.data, ld: hd, batchStride: T * hd), probs: probs.data,
                                 q: rows(qkv.data), k: rows(qkv.data + hd), v: rows(qkv.data + hd + KVH * D), s)
                // The probabilities-only forward (a backward refilling them) writes the full call's values.
                attentionForward(out: nil, probs: dprobs.data, q: rows(qkv.data), k: rows(qkv.data + hd),
                                 v: rows(qkv.data + hd + KVH * D), s)
                for i in 0..<probs.count where kind != "packed" || dprobs.data[i] != 0 {
                    #expect(probs.data[i].bitPattern == dprobs.data[i].bitPattern, "probability \(i)")
                }
                for (g, scratch) in [(g1, Optional(dprobs.data)), (g2, nil)] {
                    attentionBackward(dq: rows(g.data), dk: rows(g.data + hd), dv: rows(g.data + hd + KVH * D),
                                      dprobs: scratch, dout: dout, probs: probs.data, q: rows(qkv.data),
                                      k: rows(qkv.data + hd), v: rows(qkv.data + hd + KVH * D), s)
                }
            }
        }
        let a = UnsafeBufferPointer(start: g1.data, count: g1.count), b = UnsafeBufferPointer(start: g2.data, count: g2.count)
        try #require(a.contains { $0 != 0 })
        #expect(a.map(\.bitPattern) == b.map(\.bitPattern))
    }

    /// Large pool buffers are anonymous mappings: zeroed, writable, and of the size asked for.
    @Test func mappedBuffersAreZeroedAndWritable() throws {
        let pool = BufferPool()
        let n = BufferPool.mappedFloats * 3 + 5
        let p = try pool.take(n)
        #expect(pool.storages.last?.isMapped == true)
        #expect(UnsafeBufferPointer(start: p, count: n).allSatisfy { $0 == 0 })
        p[n - 1] = 2
        #expect(p[n - 1] == 2)
        _ = try pool.take(8)
        #expect(pool.storages.last?.isMapped == false)
    }
}
