import Testing
@testable import PEFTKit

/// What a training step keeps per layer: the activations the backward recomputes (`RecomputedActs`) are one
/// set shared by every trained layer, everything else is each layer's own, and the LM head's logits live in the
/// backward scratch. That the recomputation changes no value is `GradientCheckpointing`/`sameGradientsBitForBit`'s
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

    /// Floats a training step keeps per trained layer under each policy, measured as the growth of the
    /// activation pool from L to L + 1 layers: the input stream, the norms' statistics and the MLP's
    /// pre-activations always; q|k|v and x1 unless the attention block is recomputed (BERT keeps them, and its
    /// ln2, always).
    @Test(arguments: [Architecture.gpt2, .llama, .bert])
    func floatsKeptPerLayerUnderEachPolicy(_ arch: Architecture) throws {
        let B = 2, T = 5, N = B * T
        func poolFloats(layers: Int, _ memory: PEFTKit.ActivationMemory) throws -> (Int, TrainBuffers) {
            var cfg = TS.tinyConfig(arch)
            cfg.numLayers = layers
            let m = try Model.create(config: cfg, seed: 1, initStd: 0.1)
            var lc = LoRAConfig(); lc.rank = 2
            lc.targets = LinearSite.sites(arch).map { $0.shortName(arch) }
            try m.attachAdapter(name: "a", config: .lora(lc))
            let ad = try m.engine.adapter(named: "a").adapter
            let b = try m.engine.buffers.training(engine: m.engine, batch: B, seqLen: T, adapter: ad, memory: memory)
            return (b.pool.floats, b)
        }
        let c = TS.tinyConfig(arch), C = c.hiddenSize, I = c.intermediateSize
        let always = N * C + 4 * N + N * I + (arch.weights.gatedMLP ? N * I : 1) + (arch.weights.keepsLn2 ? N * C : 0)
        let attention = N * c.qkvWidth + N * C
        for memory in PEFTKit.ActivationMemory.allCases {
            let (f2, b) = try poolFloats(layers: 2, memory)
            let (f3, _) = try poolFloats(layers: 3, memory)
            // Random fp32 weights: `automatic` keeps.
            let recomputes = (memory == .recomputeAttention || memory == .recomputeAttentionAndUp) && arch != .bert
            // LoRA hooks every linear here, the gate included: the up projection stays kept.
            #expect(b.recomputesAttention == recomputes && b.recomputesUp == (memory == .recomputeAttentionAndUp && arch == .llama),
                    "\(arch) \(memory)")
            #expect(f3 - f2 == always + (recomputes ? 0 : attention), "\(arch) \(memory): \(f3 - f2) floats per layer")
            let a0 = b.acts[0], a1 = b.acts[1]
            #expect((a0.qkv == a1.qkv) == recomputes && (a0.x1 == a1.x1) == recomputes && a0.recomputesAttention == recomputes)
            #expect(a0.fcUp != a1.fcUp && !a0.recomputesUp)
        }
        // Without a hook on the gate, the up projection's output is shared too: I floats less per row and layer.
        if arch == .llama {
            var cfg = TS.tinyConfig(arch)
            var sizes: [Int] = []
            for layers in [2, 3] {
                cfg.numLayers = layers
                let m = try Model.create(config: cfg, seed: 1, initStd: 0.1)
                var lc = LoRAConfig(); lc.rank = 2; lc.targets = ["q_proj", "v_proj", "up_proj"]
                try m.attachAdapter(name: "a", config: .lora(lc))
                let ad = try m.engine.adapter(named: "a").adapter
                let b = try m.engine.buffers.training(engine: m.engine, batch: B, seqLen: T, adapter: ad,
                                                      memory: .recomputeAttentionAndUp)
                #expect(b.acts[0].recomputesUp && b.acts[1].recomputesUp && b.acts[0].fcUp == b.acts[1].fcUp)
                sizes.append(b.pool.floats)
            }
            #expect(sizes[1] - sizes[0] == always - N * I, "\(sizes[1] - sizes[0]) floats per layer")
        }
    }

    /// `automatic` recomputes the attention block over a base whose attention projections are in blocks, and
    /// keeps it over fp32 weights (the same file widened); checkpointing overrides every policy.
    @Test func automaticFollowsTheBase() throws {
        let path = TS.fixtures + "/quant_llama/tiny_q4_0.gguf"
        let q = try Model.load(path: path), w = try Model.load(path: path, widen: true)
        func r(_ m: Model, _ memory: PEFTKit.ActivationMemory, checkpointed: Bool = false, trained: Int? = nil) -> [Int] {
            let x = TrainBuffers.recomputation(engine: m.engine, checkpointed: checkpointed, memory: memory,
                                               trainedLayers: trained)
            return [x.attention ? 1 : 0, x.upLayers]
        }
        let L = q.config.numLayers
        // Over quantized blocks: the attention block everywhere, the up projection in the top sixth (rounded up).
        #expect(r(q, .automatic) == [1, (L + 5) / 6])
        #expect(r(q, .automatic, trained: 7) == [1, 2])
        #expect(r(q, .automatic, trained: 6) == [1, 1])
        #expect(r(w, .automatic) == [0, 0])
        #expect(r(w, .recomputeAttention) == [1, 0])
        #expect(r(w, .recomputeAttentionAndUp) == [1, L])
        #expect(r(q, .keep) == [0, 0])
        #expect(r(q, .recomputeAttentionAndUp, checkpointed: true) == [0, 0])
    }

    /// Recomputing the attention block gives the gradients and losses of keeping it, bit for bit, over three
    /// steps: every method of the matrix (dropout on q/k/v redrawn from the saved generator state, prefix keys,
    /// bottleneck units on the attention residual), packed rows and micro-batches, and a quantized base.
    @Test(arguments: GradientCheckpointing.cases.filter { $0.arch != Architecture.bert })
    func recomputedAttentionGivesTheSameGradients(_ mc: MethodCase) throws {
        let cfg = TS.tinyConfig(mc.arch)
        try expectSameGradients("\(mc)", vocab: cfg.vocabSize, packed: mc.label == "lora-default") {
            let m = try Model.create(config: cfg, seed: 8, initStd: 0.1)
            try m.attachAdapter(name: "a", config: mc.config(mc.arch))
            return m
        }
    }

    @Test func recomputedAttentionOverAQuantizedBase() throws {
        let path = TS.fixtures + "/quant_llama/tiny_q4_0.gguf"
        var lc = LoRAConfig(); lc.rank = 4; lc.dropout = 0.1; lc.targets = ["q_proj", "v_proj", "o_proj", "up_proj"]
        try expectSameGradients("Q4_0 LoRA", vocab: try Model.load(path: path).config.vocabSize, packed: false) {
            let m = try Model.load(path: path)
            try m.attachAdapter(name: "a", config: .lora(lc))
            return m
        }
        // `automatic` over the blocks: the attention block in every layer, the up projection in the top one.
        var ld = lc; ld.targets = ["q_proj", "v_proj"]
        try expectSameGradients("Q4_0 LoRA q,v", vocab: try Model.load(path: path).config.vocabSize, packed: false,
                                policies: [.automatic]) {
            let m = try Model.load(path: path)
            try m.attachAdapter(name: "a", config: .lora(ld))
            let buf = try m.engine.buffers.training(engine: m.engine, batch: 3, seqLen: 6,
                                                    adapter: try m.engine.adapter(named: "a").adapter, memory: .automatic)
            let L = m.config.numLayers, up = (L + 5) / 6
            #expect(buf.recomputesAttention && buf.upLayers == up)
            #expect(buf.acts.map { $0.recomputesUp } == (0..<L).map { $0 >= L - up })
            return m
        }
    }

    /// `automatic` over a base whose layer-0 projections are kept in blocks (here an F32 block matrix over the
    /// model's own weight, so the arithmetic is the fp32 model's): eight trained layers, the up projection
    /// recomputed in the top two (the second one paid for, the top one read from the forward), the same
    /// gradients as keeping everything.
    @Test func automaticRecomputesTheUpProjectionInTheTopLayers() throws {
        var cfg = TS.tinyConfig(.llama)
        cfg.numLayers = 8
        var lc = LoRAConfig(); lc.rank = 4; lc.dropout = 0.1; lc.targets = ["q_proj", "v_proj"]
        try expectSameGradients("8 layers, block q", vocab: cfg.vocabSize, packed: true, policies: [.automatic]) {
            let m = try Model.create(config: cfg, seed: 8, initStd: 0.1)
            let q = try #require(m.engine.weights.linear(0, .q))
            let block = try QuantizedMatrix(type: .f32, outFeatures: q.outFeatures, inFeatures: q.inFeatures,
                                            data: UnsafeRawPointer(q.weight), byteCount: 4 * q.outFeatures * q.inFeatures,
                                            owner: m.engine)
            m.engine.setLinear(0, .q, FrozenLinear(quantized: block, bias: q.bias, workspace: try QuantWorkspace(for: [block])))
            try m.attachAdapter(name: "a", config: .lora(lc))
            let buf = try m.engine.buffers.training(engine: m.engine, batch: 3, seqLen: 6,
                                                    adapter: try m.engine.adapter(named: "a").adapter, memory: .automatic)
            #expect(buf.recomputesAttention && buf.upLayers == 2)
            #expect(buf.acts.map { $0.recomputesUp } == [false, false, false, false, false, false, true, true])
            #expect(buf.acts.allSatisfy { $0.recomputesAttention })
            return m
        }
    }

    private func expectSameGradients(_ what: String, vocab: Int, packed: Bool,
                                     policies: [PEFTKit.ActivationMemory] = [.recomputeAttention, .recomputeAttentionAndUp],
                                     _ make: () throws -> Model) throws {
        let B = 3, T = 6
        let ids = TS.ids(B * T, vocab: vocab, seed: 3)
        let seg: [Int32] = (0..<(B * T)).map { Int32($0 % T < 2 ? 0 : 1) }
        func run(_ memory: PEFTKit.ActivationMemory) throws -> ([[Float]], [Float], Bool) {
            let m = try make()
            try m.setActiveAdapter("a")
            let slot = try m.engine.adapter(named: "a")
            TS.perturb(slot, seed: 4)
            var tc = TrainConfig(); tc.learningRate = 1e-2; tc.activationMemory = memory
            var grads: [[Float]] = [], losses: [Float] = []
            for step in 0..<3 {
                tc.microBatchSize = step == 1 ? 2 : 0
                let r = packed
                    ? try m.trainStep(inputIDs: ids, segmentIDs: seg, batch: B, seqLen: T, config: tc)
                    : try m.trainStep(inputIDs: ids, batch: B, seqLen: T, config: tc)
                losses.append(r.loss)
                grads.append(Array(UnsafeBufferPointer(start: slot.opt.grads.floats, count: slot.parameterCount)))
            }
            let used = try m.engine.buffers.training(engine: m.engine, batch: B, seqLen: T, adapter: slot.adapter,
                                                     memory: memory).recomputesAttention
            return (grads, losses, used)
        }
        let (g0, l0, u0) = try run(.keep)
        try #require(g0.contains { $0.contains { $0 != 0 } }, "\(what)")
        #expect(!u0, "\(what)")
        for memory in policies {
            let (g1, l1, u1) = try run(memory)
            #expect(u1, "\(what) \(memory)")
            #expect(l0.map(\.bitPattern) == l1.map(\.bitPattern), "\(what) \(memory)")
            for (a, b) in zip(g0, g1) { #expect(a.map(\.bitPattern) == b.map(\.bitPattern), "\(what) \(memory)") }
        }
    }

    /// The LM head's chunk in training is as many rows as the common pieces of the backward scratch hold logits for
    /// (between `headChunk` and `trainHeadChunk`), so the logits add nothing to the region unless even
    /// `headChunk` rows do not fit.
    @Test func headChunkFitsTheScratchRegion() throws {
        var cfg = TS.tinyConfig(.llama)
        cfg.vocabSize = 4096
        let m = try Model.create(config: cfg, seed: 1, initStd: 0.1)
        for (B, T) in [(2, 5), (4, 256), (64, 64)] {
            let N = B * T
            let b = try TrainBuffers(engine: m.engine, batch: B, seqLen: T, adapter: nil)
            let region = BackwardScratch.commonFloats(config: cfg, rows: N, batch: B, seqLen: T, keys: T)
            #expect(region < BackwardScratch.floats(config: cfg, rows: N, batch: B, seqLen: T, keys: T))
            #expect(b.headRows == min(N, max(TrainBuffers.headChunk, min(TrainBuffers.trainHeadChunk, region / cfg.vocabSize))))
            #expect(b.headRows * cfg.vocabSize <= max(region, min(N, TrainBuffers.headChunk) * cfg.vocabSize), "\(B)x\(T)")
            #expect(b.headRows >= min(N, TrainBuffers.headChunk))
        }
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
