// GPT-2 (transformers `GPT2LMHeadModel`): learned positions, pre-LayerNorm with bias, fused q|k|v as a
// `Conv1D` ([in, out] weights), GELU (tanh) MLP, LM head tied to the token embedding.

/// One GPT-2 block's weights, as views into tensors owned by `GPT2Weights.named`.
struct GPT2Layer {
    var ln1W, ln1B: UnsafeMutablePointer<Float>
    /// `attn.c_attn`: [C, 3C].
    var qkv: FrozenLinear
    /// `attn.c_proj`: [C, C].
    var o: FrozenLinear
    var ln2W, ln2B: UnsafeMutablePointer<Float>
    /// `mlp.c_fc`: [C, I].
    var fc: FrozenLinear
    /// `mlp.c_proj`: [I, C].
    var proj: FrozenLinear
}

struct GPT2Weights: ModelWeights {
    let config: ModelConfig
    /// Token embedding [V, C] and position embedding [maxPositions, C].
    var wte, wpe: UnsafeMutablePointer<Float>
    var layers: [GPT2Layer]
    var lnfW, lnfB: UnsafeMutablePointer<Float>
    var lmHead: FrozenLinear
    var named: [(name: String, tensor: Tensor)] = []

    // MARK: names

    /// Tensors outside the blocks: (Hugging Face name, GGUF name).
    static let globalNames: [(hf: String, gguf: String)] = [
        ("transformer.wte", "token_embd"), ("transformer.wpe", "position_embd"), ("transformer.ln_f", "output_norm"),
    ]
    /// Tensors of block l, after `transformer.h.<l>.` (HF) and `blk.<l>.` (GGUF).
    static let layerNames: [(hf: String, gguf: String)] = [
        ("ln_1", "attn_norm"), ("attn.c_attn", "attn_qkv"), ("attn.c_proj", "attn_output"),
        ("ln_2", "ffn_norm"), ("mlp.c_fc", "ffn_up"), ("mlp.c_proj", "ffn_down"),
    ]

    static func tensors(_ c: ModelConfig) -> [TensorSpec] {
        let C = c.hiddenSize, I = c.intermediateSize, V = c.vocabSize
        func global(_ i: Int, _ shape: [Int]) -> TensorSpec {
            TensorSpec(name: globalNames[i].hf + ".weight", gguf: globalNames[i].gguf + ".weight", shape: shape)
        }
        var m = [global(0, [V, C]), global(1, [c.maxPositions, C])]
        // Per layer: (table row, weight shape, bias shape).
        let shapes: [[Int]] = [[C], [C, 3 * C], [C, C], [C], [C, I], [I, C]]
        let biases: [[Int]] = [[C], [3 * C], [C], [C], [I], [C]]
        for l in 0..<c.numLayers {
            for (i, n) in layerNames.enumerated() {
                m.append(TensorSpec(name: "transformer.h.\(l).\(n.hf).weight", gguf: "blk.\(l).\(n.gguf).weight", shape: shapes[i]))
                m.append(TensorSpec(name: "transformer.h.\(l).\(n.hf).bias", gguf: "blk.\(l).\(n.gguf).bias", shape: biases[i]))
            }
        }
        m.append(global(2, [C]))
        m.append(TensorSpec(name: globalNames[2].hf + ".bias", gguf: globalNames[2].gguf + ".bias", shape: [C]))
        return m
    }

    static func randomInit(_ name: String, shape: [Int]) -> RandomInit {
        if name.hasSuffix(".bias") { return .zeros }
        if shape.count == 1 { return .ones }
        if name.hasSuffix("attn.c_proj.weight") || name.hasSuffix("mlp.c_proj.weight") { return .residual }
        return .normal
    }

    static let sites: [LinearSite] = [.qkv, .o, .fc, .proj]

    static func layerPrefix(_ l: Int) -> String { "transformer.h.\(l)." }

    static func module(_ site: LinearSite, layer l: Int) -> String? {
        let p = layerPrefix(l)
        switch site {
        case .qkv: return p + "attn.c_attn"
        case .o: return p + "attn.c_proj"
        case .fc: return p + "mlp.c_fc"
        case .proj: return p + "mlp.c_proj"
        default: return nil
        }
    }

    static func shortName(_ site: LinearSite) -> String? {
        switch site {
        case .qkv: return "c_attn"
        case .o: return "attn.c_proj"
        case .fc: return "c_fc"
        case .proj: return "mlp.c_proj"
        default: return nil
        }
    }

    static let gatedMLP = false
    static let recomputesAttention = true

    // MARK: weights

    init(config c: ModelConfig, tensors t: [String: Tensor]) throws {
        config = c
        let C = c.hiddenSize, I = c.intermediateSize
        func p(_ n: String) throws -> UnsafeMutablePointer<Float> { try tensorData(t, n) }
        func conv1D(_ n: String, _ i: Int, _ o: Int) throws -> FrozenLinear {
            FrozenLinear(weight: try p(n + ".weight"), bias: try p(n + ".bias"), inFeatures: i, outFeatures: o, transposed: true)
        }
        layers = try (0..<c.numLayers).map { l in
            let pre = "transformer.h.\(l)."
            return GPT2Layer(ln1W: try p(pre + "ln_1.weight"), ln1B: try p(pre + "ln_1.bias"),
                             qkv: try conv1D(pre + "attn.c_attn", C, 3 * C), o: try conv1D(pre + "attn.c_proj", C, C),
                             ln2W: try p(pre + "ln_2.weight"), ln2B: try p(pre + "ln_2.bias"),
                             fc: try conv1D(pre + "mlp.c_fc", C, I), proj: try conv1D(pre + "mlp.c_proj", I, C))
        }
        wte = try p("transformer.wte.weight")
        wpe = try p("transformer.wpe.weight")
        lnfW = try p("transformer.ln_f.weight")
        lnfB = try p("transformer.ln_f.bias")
        lmHead = FrozenLinear(weight: wte, bias: nil, inFeatures: C, outFeatures: c.vocabSize, transposed: false)
    }

    var tokenEmbedding: UnsafeMutablePointer<Float> { wte }

    func linear(_ l: Int, _ site: LinearSite) -> FrozenLinear? {
        switch site {
        case .qkv: return layers[l].qkv
        case .o: return layers[l].o
        case .fc: return layers[l].fc
        case .proj: return layers[l].proj
        default: return nil
        }
    }

    mutating func setLinear(_ l: Int, _ site: LinearSite, _ lin: FrozenLinear) {
        switch site {
        case .qkv: layers[l].qkv = lin
        case .o: layers[l].o = lin
        case .fc: layers[l].fc = lin
        case .proj: layers[l].proj = lin
        default: break
        }
    }

    // MARK: forward and backward

    func embed(_ out: UnsafeMutablePointer<Float>, ids: UnsafePointer<Int32>, rows N: Int, seqLen T: Int, pastLen: Int) {
        embeddingForward(out, ids, wte, wpe, N, T, config.hiddenSize, pastLen)
    }

    func embed(_ out: UnsafeMutablePointer<Float>, ids: UnsafePointer<Int32>, rows N: Int, positions: UnsafePointer<Int32>) {
        embeddingForward(out, ids, wte, wpe, N, N, config.hiddenSize, 0, positions: positions)
    }

    func embedBackward(into grads: any ModelWeights, _ d: UnsafePointer<Float>, ids: UnsafePointer<Int32>, rows N: Int,
                       positions: UnsafePointer<Int32>) {
        guard let g = grads as? GPT2Weights else { return }
        embeddingBackward(g.wte, g.wpe, d, ids, N, N, config.hiddenSize, 0, positions: positions)
    }

    func addPositions(_ x: UnsafeMutablePointer<Float>, first: Int, count: Int) {
        let C = config.hiddenSize
        for t in 0..<count { addInPlace(x + t * C, wpe + (first + t) * C, C) }
    }

    func embedBackward(into grads: any ModelWeights, _ d: UnsafePointer<Float>, ids: UnsafePointer<Int32>, rows N: Int,
                       seqLen T: Int) {
        guard let g = grads as? GPT2Weights else { return }
        embeddingBackward(g.wte, g.wpe, d, ids, N, T, config.hiddenSize, 0)
    }

    func finalNorm(out: UnsafeMutablePointer<Float>, mean: UnsafeMutablePointer<Float>, rstd: UnsafeMutablePointer<Float>,
                   inp: UnsafeMutablePointer<Float>, rows N: Int) {
        layerNormForward(out, mean, rstd, inp, lnfW, lnfB, N, config.hiddenSize, config.normEps)
    }

    func finalNormBackward(dinp: UnsafeMutablePointer<Float>, grads: (any ModelWeights)?, dout: UnsafeMutablePointer<Float>,
                           inp: UnsafeMutablePointer<Float>, mean: UnsafeMutablePointer<Float>, rstd: UnsafeMutablePointer<Float>,
                           rows N: Int) {
        let g = grads as? GPT2Weights
        layerNormBackward(dinp, g?.lnfW, g?.lnfB, dout, inp, lnfW, mean, rstd, N, config.hiddenSize)
    }

    func forwardLayer(_ l: Int, _ ctx: LayerContext, x: UnsafeMutablePointer<Float>, out: UnsafeMutablePointer<Float>,
                      a: inout LayerActs) {
        let w = layers[l], c = config
        let N = ctx.rows, C = c.hiddenSize, I = c.intermediateSize, eps = c.normEps
        attentionBlock(l, ctx, x: x, a: &a)
        layerNormForward(a.ln2, a.ln2Mean, a.ln2Rstd, a.x1, w.ln2W, w.ln2B, N, C, eps)
        ctx.linear(l, .fc, w.fc, out: a.fcPre, inp: a.ln2, rows: N)
        activationForward(.geluTanh, a.act, a.fcPre, N * I)
        if ctx.skipsOutputProjection(l, .proj) { return }
        ctx.linear(l, .proj, w.proj, out: a.h2, inp: a.act, rows: N)
        ctx.residualForward(l, .output, out: out, x: a.x1, h: a.h2)
    }

    /// The attention block of the forward, x → x1: ln_1, c_attn, attention, c_proj, residual. Also the
    /// backward's recomputation under `ActivationMemory.recomputeAttention`.
    private func attentionBlock(_ l: Int, _ ctx: LayerContext, x: UnsafeMutablePointer<Float>, a: inout LayerActs) {
        let w = layers[l], N = ctx.rows
        layerNormForward(a.ln1, a.ln1Mean, a.ln1Rstd, x, w.ln1W, w.ln1B, N, config.hiddenSize, config.normEps)
        ctx.linear(l, .qkv, w.qkv, out: a.qkv, inp: a.ln1, rows: N)
        ctx.selfAttention(l, &a)
        ctx.linear(l, .o, w.o, out: a.h1, inp: a.attn, rows: N)
        ctx.residualForward(l, .attention, out: a.x1, x: x, h: a.h1)
    }

    func backwardLayer(_ l: Int, _ ctx: LayerContext, x: UnsafeMutablePointer<Float>, a: LayerActs, s: BackwardScratch,
                       grads: (any ModelWeights)?) {
        let w = layers[l], gw = (grads as? GPT2Weights)?.layers[l]
        let N = ctx.rows, C = config.hiddenSize, I = config.intermediateSize
        let d = s.d
        if a.needsRecompute(l) { recomputeForBackward(l, ctx, x: x, a: a, weights: gw != nil) }
        // Feed-forward block: out = x1 + h2 (+ A(z))
        ctx.residualBackward(l, .output, s)
        ctx.linearBack(l, .proj, w.proj, dinp: s.dact, dout: s.dh, inp: a.act, rows: N, accumulate: false, wgrad: gw?.proj)
        // The activation output is read for the last time above: a shared one takes the fc gradient.
        let dfcPre = a.recomputed ? a.act : s.dfcPre
        dfcPre.update(repeating: 0, count: N * I)
        activationBackward(.geluTanh, dfcPre, a.fcPre, s.dact, N * I)
        ctx.linearBack(l, .fc, w.fc, dinp: s.dln, dout: dfcPre, inp: a.ln2, rows: N, accumulate: false, wgrad: gw?.fc)
        layerNormBackward(d, gw?.ln2W, gw?.ln2B, s.dln, a.x1, w.ln2W, a.ln2Mean, a.ln2Rstd, N, C)
        // Attention block: x1 = x + h1 (+ A(z))
        ctx.residualBackward(l, .attention, s)
        ctx.linearBack(l, .o, w.o, dinp: s.dattn, dout: s.dh, inp: a.attn, rows: N, accumulate: false, wgrad: gw?.o)
        ctx.selfAttentionBackward(l, a, s)
        ctx.linearBack(l, .qkv, w.qkv, dinp: s.dln, dout: s.dqkv, inp: a.ln1, rows: N, accumulate: false, wgrad: gw?.qkv)
        layerNormBackward(d, gw?.ln1W, gw?.ln1B, s.dln, x, w.ln1W, a.ln1Mean, a.ln1Rstd, N, C)
    }

    /// Refills the activations training does not keep per layer (`RecomputedActs`) with the forward's kernels:
    /// the attention probabilities (and output), and those of the two norm outputs and the GELU output that the
    /// backward reads (a projection's input is read only when it is hooked or its weights train). Under
    /// `recomputeAttention`, the whole attention block (q|k|v and x1 with it).
    private func recomputeForBackward(_ l: Int, _ ctx: LayerContext, x: UnsafeMutablePointer<Float>, a: LayerActs,
                                      weights: Bool) {
        let w = layers[l], c = config, N = ctx.rows, C = c.hiddenSize
        var a = a
        if a.recomputesAttention {
            attentionBlock(l, ctx, x: x, a: &a)
        } else {
            if ctx.readsInput(l, .qkv, weights: weights) {
                layerNormForward(a.ln1, a.ln1Mean, a.ln1Rstd, x, w.ln1W, w.ln1B, N, C, c.normEps)
            }
            ctx.selfAttention(l, &a, output: ctx.readsInput(l, .o, weights: weights))
        }
        if ctx.readsInput(l, .fc, weights: weights) {
            layerNormForward(a.ln2, a.ln2Mean, a.ln2Rstd, a.x1, w.ln2W, w.ln2B, N, C, c.normEps)
        }
        if ctx.readsInput(l, .proj, weights: weights) { activationForward(.geluTanh, a.act, a.fcPre, N * c.intermediateSize) }
    }
}
