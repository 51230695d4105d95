// Llama (transformers `LlamaForCausalLM`), with the layouts of Qwen2 and Mistral: RMSNorm, rotary positions,
// separate q/k/v/o projections ([out, in] weights) with grouped-query attention, SwiGLU MLP. Biases are
// per family: `qkvBias` (Qwen2, Llama `attention_bias`), `outputBias` (Llama `attention_bias`), `mlpBias`
// (Llama `mlp_bias`). The LM head is tied or separate.

/// One Llama block's weights, as views into tensors owned by `LlamaWeights.named`.
struct LlamaLayer {
    var inputNorm: UnsafeMutablePointer<Float>
    /// [H·D, C], [KVH·D, C], [KVH·D, C], [C, H·D].
    var q, k, v, o: FrozenLinear
    var postAttentionNorm: UnsafeMutablePointer<Float>
    /// [I, C], [I, C], [C, I].
    var gate, up, down: FrozenLinear
}

struct LlamaWeights: ModelWeights {
    let config: ModelConfig
    /// fp32 token embedding; unused (a placeholder) when the table is kept in blocks (`embedQuantized`).
    var embedTokens: UnsafeMutablePointer<Float>
    /// The token embedding kept in GGUF blocks [V, C]: rows are dequantised as they are read, and the tied
    /// LM head is a quantized product over the same table.
    var embedQuantized: QuantizedMatrix?
    /// Every matrix kept in blocks, by Hugging Face name.
    var quantizedNamed: [(name: String, matrix: QuantizedMatrix)] = []
    var layers: [LlamaLayer]
    var norm: UnsafeMutablePointer<Float>
    var lmHead: FrozenLinear
    /// cos/sin of every position, shared by all layers.
    let rotary: RopeTable
    var named: [(name: String, tensor: Tensor)] = []

    // MARK: names

    /// Tensors outside the blocks, without `.weight` / `.bias`: (Hugging Face name, GGUF name).
    static let globalNames: [(hf: String, gguf: String)] = [
        ("model.embed_tokens", "token_embd"), ("model.norm", "output_norm"), ("lm_head", "output"),
    ]
    /// Tensors of block l, after `model.layers.<l>.` (HF) and `blk.<l>.` (GGUF).
    static let layerNames: [(hf: String, gguf: String)] = [
        ("input_layernorm", "attn_norm"), ("self_attn.q_proj", "attn_q"), ("self_attn.k_proj", "attn_k"),
        ("self_attn.v_proj", "attn_v"), ("self_attn.o_proj", "attn_output"), ("post_attention_layernorm", "ffn_norm"),
        ("mlp.gate_proj", "ffn_gate"), ("mlp.up_proj", "ffn_up"), ("mlp.down_proj", "ffn_down"),
    ]

    static func tensors(_ c: ModelConfig) -> [TensorSpec] {
        let C = c.hiddenSize, I = c.intermediateSize, V = c.vocabSize
        let q = c.numHeads * c.headDim, kv = c.numKVHeads * c.headDim
        func global(_ i: Int, _ shape: [Int]) -> TensorSpec {
            TensorSpec(name: globalNames[i].hf + ".weight", gguf: globalNames[i].gguf + ".weight", shape: shape)
        }
        var m = [global(0, [V, C])]
        // Per layer: (weight shape, bias present).
        let rows: [([Int], Bool)] = [([C], false), ([q, C], c.qkvBias), ([kv, C], c.qkvBias), ([kv, C], c.qkvBias),
                                     ([C, q], c.outputBias), ([C], false), ([I, C], c.mlpBias), ([I, C], c.mlpBias),
                                     ([C, I], c.mlpBias)]
        for l in 0..<c.numLayers {
            for (n, (shape, bias)) in zip(layerNames, rows) {
                m.append(TensorSpec(name: "model.layers.\(l).\(n.hf).weight", gguf: "blk.\(l).\(n.gguf).weight", shape: shape))
                if bias {
                    m.append(TensorSpec(name: "model.layers.\(l).\(n.hf).bias", gguf: "blk.\(l).\(n.gguf).bias", shape: [shape[0]]))
                }
            }
        }
        m.append(global(1, [C]))
        if !c.tieWordEmbeddings { m.append(global(2, [V, C])) }
        return m
    }

    /// The number of heads whose rows GGUF stores in its interleaved RoPE order in tensor `name` (the query
    /// and key projections, weight and bias), nil for every other tensor. See `unpermuteRoPERows`.
    static func ggufRoPEHeads(_ name: String, _ c: ModelConfig) -> Int? {
        if name.contains(".self_attn.q_proj.") { return c.numHeads }
        if name.contains(".self_attn.k_proj.") { return c.numKVHeads }
        return nil
    }

    static func randomInit(_ name: String, shape: [Int]) -> RandomInit {
        if name.hasSuffix(".bias") { return .zeros }
        if shape.count == 1 { return .ones }
        if name.hasSuffix("o_proj.weight") || name.hasSuffix("down_proj.weight") { return .residual }
        return .normal
    }

    static let sites: [LinearSite] = [.q, .k, .v, .o, .gate, .up, .down]

    static func layerPrefix(_ l: Int) -> String { "model.layers.\(l)." }

    static func module(_ site: LinearSite, layer l: Int) -> String? {
        shortName(site).map { "\(layerPrefix(l))\(site == .gate || site == .up || site == .down ? "mlp" : "self_attn").\($0)" }
    }

    static func shortName(_ site: LinearSite) -> String? {
        switch site {
        case .q: return "q_proj"
        case .k: return "k_proj"
        case .v: return "v_proj"
        case .o: return "o_proj"
        case .gate: return "gate_proj"
        case .up: return "up_proj"
        case .down: return "down_proj"
        default: return nil
        }
    }

    static let gatedMLP = true
    static let recomputesAttention = true
    static let recomputesUp = true

    // MARK: weights

    init(config c: ModelConfig, tensors t: [String: Tensor]) throws {
        try self.init(config: c, tensors: t, quantized: [:])
    }

    init(config c: ModelConfig, tensors t: [String: Tensor], quantized qt: [String: QuantizedMatrix]) throws {
        config = c
        let C = c.hiddenSize, I = c.intermediateSize
        let q = c.numHeads * c.headDim, kv = c.numKVHeads * c.headDim
        let workspace = try QuantWorkspace(for: Array(qt.values))
        quantizedNamed = qt.sorted { $0.key < $1.key }.map { ($0.key, $0.value) }
        func p(_ n: String) throws -> UnsafeMutablePointer<Float> { try tensorData(t, n) }
        func linear(_ name: String, bias: UnsafeMutablePointer<Float>?, _ i: Int, _ o: Int) throws -> FrozenLinear {
            if let m = qt[name] { return FrozenLinear(quantized: m, bias: bias, workspace: workspace) }
            return FrozenLinear(weight: try p(name), bias: bias, inFeatures: i, outFeatures: o, transposed: false)
        }
        layers = try (0..<c.numLayers).map { l in
            let pre = "model.layers.\(l)."
            func lin(_ n: String, _ i: Int, _ o: Int) throws -> FrozenLinear {
                try linear(pre + n + ".weight", bias: t[pre + n + ".bias"]?.data, i, o)
            }
            return LlamaLayer(inputNorm: try p(pre + "input_layernorm.weight"),
                              q: try lin("self_attn.q_proj", C, q), k: try lin("self_attn.k_proj", C, kv),
                              v: try lin("self_attn.v_proj", C, kv), o: try lin("self_attn.o_proj", q, C),
                              postAttentionNorm: try p(pre + "post_attention_layernorm.weight"),
                              gate: try lin("mlp.gate_proj", C, I), up: try lin("mlp.up_proj", C, I),
                              down: try lin("mlp.down_proj", I, C))
        }
        let embedName = "model.embed_tokens.weight"
        embedQuantized = qt[embedName]
        embedTokens = embedQuantized == nil ? try p(embedName) : workspace.panel
        norm = try p("model.norm.weight")
        lmHead = try linear(c.tieWordEmbeddings ? embedName : "lm_head.weight", bias: nil, C, c.vocabSize)
        rotary = try RopeTable(theta: c.ropeTheta, headDim: c.headDim, maxPositions: c.maxPositions)
    }

    var tokenEmbedding: UnsafeMutablePointer<Float> {
        guard embedQuantized == nil else { preconditionFailure("the fp32 view of a quantized embedding was asked for") }
        return embedTokens
    }
    var quantized: [(name: String, matrix: QuantizedMatrix)] { quantizedNamed }

    func embeddingRow(_ id: Int, into out: UnsafeMutablePointer<Float>) {
        let C = config.hiddenSize
        if let q = embedQuantized { q.dequantizeRows(id, 1, into: out) } else { out.update(from: embedTokens + id * C, count: C) }
    }
    var rope: RopeTable? { rotary }

    func linear(_ l: Int, _ site: LinearSite) -> FrozenLinear? {
        let w = layers[l]
        switch site {
        case .q: return w.q
        case .k: return w.k
        case .v: return w.v
        case .o: return w.o
        case .gate: return w.gate
        case .up: return w.up
        case .down: return w.down
        default: return nil
        }
    }

    mutating func setLinear(_ l: Int, _ site: LinearSite, _ lin: FrozenLinear) {
        switch site {
        case .q: layers[l].q = lin
        case .k: layers[l].k = lin
        case .v: layers[l].v = lin
        case .o: layers[l].o = lin
        case .gate: layers[l].gate = lin
        case .up: layers[l].up = lin
        case .down: layers[l].down = lin
        default: break
        }
    }

    // MARK: forward and backward

    func embed(_ out: UnsafeMutablePointer<Float>, ids: UnsafePointer<Int32>, rows N: Int, seqLen T: Int, pastLen: Int) {
        guard let q = embedQuantized else {
            embeddingForward(out, ids, embedTokens, nil, N, T, config.hiddenSize, pastLen)
            return
        }
        // Rows read from the table in its blocks (ids were checked against the vocabulary by the stack).
        let C = config.hiddenSize
        nonisolated(unsafe) let (o, id) = (out, ids)
        parallelFor(N, grain: 16) { a, b in
            for r in a..<b {
                quantDequantizeRows(q.type, q.data + Int(id[r]) * q.rowBytes, rowBytes: q.rowBytes, rows: 1, n: C,
                                    o + r * C, ldd: C)
            }
        }
    }

    func embedBackward(into grads: any ModelWeights, _ d: UnsafePointer<Float>, ids: UnsafePointer<Int32>, rows N: Int,
                       seqLen T: Int) {
        guard let g = grads as? LlamaWeights else { return }
        embeddingBackward(g.embedTokens, nil, d, ids, N, T, config.hiddenSize, 0)
    }

    func finalNorm(out: UnsafeMutablePointer<Float>, mean: UnsafeMutablePointer<Float>, rstd: UnsafeMutablePointer<Float>,
                   inp: UnsafeMutablePointer<Float>, rows N: Int) {
        rmsNormForward(out, rstd, inp, norm, N, config.hiddenSize, config.normEps)
    }

    func finalNormBackward(dinp: UnsafeMutablePointer<Float>, grads: (any ModelWeights)?, dout: UnsafeMutablePointer<Float>,
                           inp: UnsafeMutablePointer<Float>, mean: UnsafeMutablePointer<Float>, rstd: UnsafeMutablePointer<Float>,
                           rows N: Int) {
        rmsNormBackward(dinp, (grads as? LlamaWeights)?.norm, dout, inp, norm, rstd, N, config.hiddenSize)
    }

    func forwardLayer(_ l: Int, _ ctx: LayerContext, x: UnsafeMutablePointer<Float>, out: UnsafeMutablePointer<Float>,
                      a: inout LayerActs) {
        let w = layers[l], c = config
        let N = ctx.rows, C = c.hiddenSize, I = c.intermediateSize, eps = c.normEps
        attentionBlock(l, ctx, x: x, a: &a)
        rmsNormForward(a.ln2, a.ln2Rstd, a.x1, w.postAttentionNorm, N, C, eps)
        ctx.linearsSharingInput(l, [.gate, .up], [w.gate, w.up], outs: [a.fcPre, a.fcUp], inp: a.ln2, rows: N)
        swigluForward(a.act, a.fcPre, a.fcUp, N * I)
        if ctx.skipsOutputProjection(l, .down) { return }
        ctx.linear(l, .down, w.down, out: a.h2, inp: a.act, rows: N)
        ctx.residualForward(l, .output, out: out, x: a.x1, h: a.h2)
    }

    /// The attention block of the forward, x → x1: input norm, q/k/v projections, rotary positions, attention,
    /// output projection, residual. Also the backward's recomputation under `ActivationMemory.recomputeAttention`.
    private func attentionBlock(_ l: Int, _ ctx: LayerContext, x: UnsafeMutablePointer<Float>, a: inout LayerActs) {
        let w = layers[l], c = config
        let N = ctx.rows, C = c.hiddenSize, eps = c.normEps
        let H = c.numHeads, KVH = c.numKVHeads, D = c.headDim
        let hd = H * D, kvd = KVH * D, ld = c.qkvWidth
        rmsNormForward(a.ln1, a.ln1Rstd, x, w.inputNorm, N, C, eps)
        ctx.linearsSharingInput(l, [.q, .k, .v], [w.q, w.k, w.v], outs: [a.qkv, a.qkv + hd, a.qkv + hd + kvd],
                                inp: a.ln1, rows: N, ldo: ld)
        if let pos = ctx.positions {
            ropeForward(a.qkv, rotary, rows: N, positions: pos, numHeads: H, headDim: D, rowStride: ld)
            ropeForward(a.qkv + hd, rotary, rows: N, positions: pos, numHeads: KVH, headDim: D, rowStride: ld)
        } else {
            ropeForward(a.qkv, rotary, rows: N, seqLen: ctx.seqLen, posOffset: ctx.pastLen, numHeads: H, headDim: D,
                        rowStride: ld)
            ropeForward(a.qkv + hd, rotary, rows: N, seqLen: ctx.seqLen, posOffset: ctx.pastLen, numHeads: KVH, headDim: D,
                        rowStride: ld)
        }
        ctx.selfAttention(l, &a)
        ctx.linear(l, .o, w.o, out: a.h1, inp: a.attn, rows: N)
        ctx.residualForward(l, .attention, out: a.x1, x: x, h: a.h1)
    }

    func backwardLayer(_ l: Int, _ ctx: LayerContext, x: UnsafeMutablePointer<Float>, a: LayerActs, s: BackwardScratch,
                       grads: (any ModelWeights)?) {
        let w = layers[l], gw = (grads as? LlamaWeights)?.layers[l], c = config
        let N = ctx.rows, C = c.hiddenSize, I = c.intermediateSize
        let H = c.numHeads, KVH = c.numKVHeads, D = c.headDim
        let hd = H * D, kvd = KVH * D, ld = c.qkvWidth
        let d = s.d
        if a.needsRecompute(l) { recomputeForBackward(l, ctx, x: x, a: a, weights: gw != nil) }
        // Feed-forward block: out = x1 + h2 (+ A(z))
        ctx.residualBackward(l, .output, s)
        ctx.linearBack(l, .down, w.down, dinp: s.dact, dout: s.dh, inp: a.act, rows: N, accumulate: false, wgrad: gw?.down)
        // The SwiGLU output is read for the last time above: a shared one takes the up gradient.
        let dfcUp = a.recomputed ? a.act : s.dfcUp
        s.dfcPre.update(repeating: 0, count: N * I)
        dfcUp.update(repeating: 0, count: N * I)
        swigluBackward(s.dfcPre, dfcUp, s.dact, a.fcPre, a.fcUp, N * I)
        ctx.linearBack(l, .gate, w.gate, dinp: s.dln, dout: s.dfcPre, inp: a.ln2, rows: N, accumulate: false, wgrad: gw?.gate)
        ctx.linearBack(l, .up, w.up, dinp: s.dln, dout: dfcUp, inp: a.ln2, rows: N, accumulate: true, wgrad: gw?.up)
        rmsNormBackward(d, gw?.postAttentionNorm, s.dln, a.x1, w.postAttentionNorm, a.ln2Rstd, N, C)
        // Attention block: x1 = x + h1 (+ A(z))
        ctx.residualBackward(l, .attention, s)
        ctx.linearBack(l, .o, w.o, dinp: s.dattn, dout: s.dh, inp: a.attn, rows: N, accumulate: false, wgrad: gw?.o)
        ctx.selfAttentionBackward(l, a, s)
        if let pos = ctx.positions {
            ropeBackward(s.dqkv, rotary, rows: N, positions: pos, numHeads: H, headDim: D, rowStride: ld)
            ropeBackward(s.dqkv + hd, rotary, rows: N, positions: pos, numHeads: KVH, headDim: D, rowStride: ld)
        } else {
            ropeBackward(s.dqkv, rotary, rows: N, seqLen: ctx.seqLen, posOffset: ctx.pastLen, numHeads: H, headDim: D,
                         rowStride: ld)
            ropeBackward(s.dqkv + hd, rotary, rows: N, seqLen: ctx.seqLen, posOffset: ctx.pastLen, numHeads: KVH, headDim: D,
                         rowStride: ld)
        }
        ctx.linearBack(l, .q, w.q, dinp: s.dln, dout: s.dqkv, inp: a.ln1, rows: N, accumulate: false, lddo: ld, wgrad: gw?.q)
        ctx.linearBack(l, .k, w.k, dinp: s.dln, dout: s.dqkv + hd, inp: a.ln1, rows: N, accumulate: true, lddo: ld,
                       wgrad: gw?.k)
        ctx.linearBack(l, .v, w.v, dinp: s.dln, dout: s.dqkv + hd + kvd, inp: a.ln1, rows: N, accumulate: true, lddo: ld,
                       wgrad: gw?.v)
        rmsNormBackward(d, gw?.inputNorm, s.dln, x, w.inputNorm, a.ln1Rstd, N, C)
    }

    /// Refills the activations training does not keep per layer (`RecomputedActs`) with the forward's kernels:
    /// the attention probabilities (and output), and those of the two norm outputs and the SwiGLU output that the
    /// backward reads (a projection's input is read only when it is hooked or its weights train). Under
    /// `recomputeAttention`, the whole attention block (q|k|v and x1 with it).
    private func recomputeForBackward(_ l: Int, _ ctx: LayerContext, x: UnsafeMutablePointer<Float>, a: LayerActs,
                                      weights: Bool) {
        let w = layers[l], c = config, N = ctx.rows, C = c.hiddenSize
        func reads(_ sites: LinearSite...) -> Bool { sites.contains { ctx.readsInput(l, $0, weights: weights) } }
        var a = a
        if a.recomputesAttention {
            attentionBlock(l, ctx, x: x, a: &a)
        } else {
            if reads(.q, .k, .v) { rmsNormForward(a.ln1, a.ln1Rstd, x, w.inputNorm, N, C, c.normEps) }
            ctx.selfAttention(l, &a, output: ctx.readsInput(l, .o, weights: weights))
        }
        if a.recomputesUp {
            // The gate is not hooked in such a layer (`TrainBuffers`), so the up projection's hook draws the
            // forward's dropout mask next, as it did in the forward.
            rmsNormForward(a.ln2, a.ln2Rstd, a.x1, w.postAttentionNorm, N, C, c.normEps)
            ctx.linear(l, .up, w.up, out: a.fcUp, inp: a.ln2, rows: N)
        } else if reads(.gate, .up) { rmsNormForward(a.ln2, a.ln2Rstd, a.x1, w.postAttentionNorm, N, C, c.normEps) }
        if reads(.down) { swigluForward(a.act, a.fcPre, a.fcUp, N * c.intermediateSize) }
    }
}
