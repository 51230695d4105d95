#if canImport(Glibc)
import Glibc
#endif

// BERT (transformers `BertModel`; `BertForSequenceClassification` / `BertForTokenClassification` weights under
// `bert.`): embeddings = LayerNorm(word + position + token type), then post-LayerNorm layers
//   y = LN1(x + attention(x)),  out = LN2(y + W2·gelu(W1·y)),
// bidirectional attention over the unpadded keys (`LayerContext.keyMask`), exact (erf) GELU, and an optional
// pooler (tanh(W·h[CLS] + b)). The engine's "final norm" is the identity: the last layer's output is the
// hidden state. A bottleneck unit sits where AdapterHub puts it for BERT: its output is added to the residual
// sum before the sub-layer's LayerNorm: `LN(x + h + A(h))` (Houlsby, double_seq_bn) or, with
// `original_ln_before` (Pfeiffer, seq_bn), `LN(x + h + A(LN(x + h)))`: the layer's own LayerNorm runs twice.

/// One BERT layer's weights, as views into tensors owned by `BERTWeights.named`.
struct BERTLayer {
    /// `attention.self.query|key|value`: [C, C] each.
    var q, k, v: FrozenLinear
    /// `attention.output.dense`: [C, C].
    var o: FrozenLinear
    /// `attention.output.LayerNorm`.
    var ln1W, ln1B: UnsafeMutablePointer<Float>
    /// `intermediate.dense`: [I, C].
    var fc: FrozenLinear
    /// `output.dense`: [C, I].
    var proj: FrozenLinear
    /// `output.LayerNorm`.
    var ln2W, ln2B: UnsafeMutablePointer<Float>
}

struct BERTWeights: ModelWeights {
    let config: ModelConfig
    /// Word [V, C], position [maxPositions, C] and token-type [types, C] embeddings.
    var word, position, tokenType: UnsafeMutablePointer<Float>
    /// `embeddings.LayerNorm`.
    var embLnW, embLnB: UnsafeMutablePointer<Float>
    var layers: [BERTLayer]
    /// `pooler.dense` ([C, C]) when the model has a pooler.
    var pooler: FrozenLinear?
    /// The word embedding as an output projection (BERT has no LM head of its own; kept so that the shared
    /// decoder paths stay defined).
    var lmHead: FrozenLinear
    var named: [(name: String, tensor: Tensor)] = []

    // MARK: names

    /// Tensors outside the layers: (Hugging Face name without `bert.`, GGUF name).
    static let globalNames: [(hf: String, gguf: String)] = [
        ("embeddings.word_embeddings", "token_embd"), ("embeddings.position_embeddings", "position_embd"),
        ("embeddings.token_type_embeddings", "token_types"), ("embeddings.LayerNorm", "token_embd_norm"),
    ]
    /// Tensors of layer l, after `encoder.layer.<l>.` (HF) and `blk.<l>.` (GGUF).
    static let layerNames: [(hf: String, gguf: String)] = [
        ("attention.self.query", "attn_q"), ("attention.self.key", "attn_k"), ("attention.self.value", "attn_v"),
        ("attention.output.dense", "attn_output"), ("attention.output.LayerNorm", "attn_output_norm"),
        ("intermediate.dense", "ffn_up"), ("output.dense", "ffn_down"), ("output.LayerNorm", "layer_output_norm"),
    ]

    static func tensors(_ c: ModelConfig) -> [TensorSpec] {
        let C = c.hiddenSize, I = c.intermediateSize
        let types = c.encoder?.typeVocabSize ?? 2
        var m: [TensorSpec] = []
        for (i, rows) in [c.vocabSize, c.maxPositions, types].enumerated() {
            m.append(TensorSpec(name: globalNames[i].hf + ".weight", gguf: globalNames[i].gguf + ".weight", shape: [rows, C]))
        }
        m.append(TensorSpec(name: globalNames[3].hf + ".weight", gguf: globalNames[3].gguf + ".weight", shape: [C]))
        m.append(TensorSpec(name: globalNames[3].hf + ".bias", gguf: globalNames[3].gguf + ".bias", shape: [C]))
        let shapes: [[Int]] = [[C, C], [C, C], [C, C], [C, C], [C], [I, C], [C, I], [C]]
        let biases: [[Int]] = [[C], [C], [C], [C], [C], [I], [C], [C]]
        for l in 0..<c.numLayers {
            for (i, n) in layerNames.enumerated() {
                m.append(TensorSpec(name: "encoder.layer.\(l).\(n.hf).weight", gguf: "blk.\(l).\(n.gguf).weight", shape: shapes[i]))
                m.append(TensorSpec(name: "encoder.layer.\(l).\(n.hf).bias", gguf: "blk.\(l).\(n.gguf).bias", shape: biases[i]))
            }
        }
        if c.encoder?.pooler ?? false {
            m.append(TensorSpec(name: "pooler.dense.weight", gguf: nil, shape: [C, C]))
            m.append(TensorSpec(name: "pooler.dense.bias", gguf: nil, shape: [C]))
        }
        return m
    }

    static func randomInit(_ name: String, shape: [Int]) -> RandomInit {
        if name.hasSuffix(".bias") { return .zeros }
        if shape.count == 1 { return .ones }
        return .normal
    }

    static let sites: [LinearSite] = [.q, .k, .v, .o, .fc, .proj]

    static func layerPrefix(_ l: Int) -> String { "encoder.layer.\(l)." }

    static func module(_ site: LinearSite, layer l: Int) -> String? {
        let p = layerPrefix(l)
        switch site {
        case .q: return p + "attention.self.query"
        case .k: return p + "attention.self.key"
        case .v: return p + "attention.self.value"
        case .o: return p + "attention.output.dense"
        case .fc: return p + "intermediate.dense"
        case .proj: return p + "output.dense"
        default: return nil
        }
    }

    static func shortName(_ site: LinearSite) -> String? {
        switch site {
        case .q: return "query"
        case .k: return "key"
        case .v: return "value"
        case .o: return "attention.output.dense"
        case .fc: return "intermediate.dense"
        case .proj: return "output.dense"
        default: return nil
        }
    }

    static let gatedMLP = false
    static let bidirectional = true
    static let keepsLn2 = true

    // MARK: weights

    init(config c: ModelConfig, tensors t: [String: Tensor]) throws {
        config = c
        let C = c.hiddenSize, I = c.intermediateSize
        func p(_ n: String) throws -> UnsafeMutablePointer<Float> { try tensorData(t, n) }
        func linear(_ n: String, _ i: Int, _ o: Int) throws -> FrozenLinear {
            FrozenLinear(weight: try p(n + ".weight"), bias: try p(n + ".bias"), inFeatures: i, outFeatures: o, transposed: false)
        }
        layers = try (0..<c.numLayers).map { l in
            let pre = "encoder.layer.\(l)."
            return BERTLayer(q: try linear(pre + "attention.self.query", C, C), k: try linear(pre + "attention.self.key", C, C),
                             v: try linear(pre + "attention.self.value", C, C), o: try linear(pre + "attention.output.dense", C, C),
                             ln1W: try p(pre + "attention.output.LayerNorm.weight"),
                             ln1B: try p(pre + "attention.output.LayerNorm.bias"),
                             fc: try linear(pre + "intermediate.dense", C, I), proj: try linear(pre + "output.dense", I, C),
                             ln2W: try p(pre + "output.LayerNorm.weight"), ln2B: try p(pre + "output.LayerNorm.bias"))
        }
        word = try p("embeddings.word_embeddings.weight")
        position = try p("embeddings.position_embeddings.weight")
        tokenType = try p("embeddings.token_type_embeddings.weight")
        embLnW = try p("embeddings.LayerNorm.weight")
        embLnB = try p("embeddings.LayerNorm.bias")
        pooler = (c.encoder?.pooler ?? false) ? try linear("pooler.dense", C, C) : nil
        lmHead = FrozenLinear(weight: word, bias: nil, inFeatures: C, outFeatures: c.vocabSize, transposed: false)
    }

    var tokenEmbedding: UnsafeMutablePointer<Float> { word }

    func linear(_ l: Int, _ site: LinearSite) -> FrozenLinear? {
        switch site {
        case .q: return layers[l].q
        case .k: return layers[l].k
        case .v: return layers[l].v
        case .o: return layers[l].o
        case .fc: return layers[l].fc
        case .proj: return layers[l].proj
        default: return nil
        }
    }

    mutating func setLinear(_ l: Int, _ site: LinearSite, _ lin: FrozenLinear) {
        switch site {
        case .q: layers[l].q = lin
        case .k: layers[l].k = lin
        case .v: layers[l].v = lin
        case .o: layers[l].o = lin
        case .fc: layers[l].fc = lin
        case .proj: layers[l].proj = lin
        default: break
        }
    }

    // MARK: embeddings

    func embed(_ out: UnsafeMutablePointer<Float>, ids: UnsafePointer<Int32>, rows N: Int, seqLen T: Int, pastLen: Int) {
        embed(out, ids: ids, typeIDs: nil, rows: N, seqLen: T, pastLen: pastLen)
    }

    /// out = LN(word[id] + position[pastLen + t] + tokenType[type]) ([N, C]; types nil = 0, as transformers'
    /// default `token_type_ids`).
    func embed(_ out: UnsafeMutablePointer<Float>, ids: UnsafePointer<Int32>, typeIDs: UnsafePointer<Int32>?, rows N: Int,
               seqLen T: Int, pastLen: Int) {
        embedSum(out, ids: ids, typeIDs: typeIDs, rows: N, seqLen: T, pastLen: pastLen)
        let C = config.hiddenSize
        withUnsafeTemporaryAllocation(of: Float.self, capacity: 2 * max(N, 1)) { stats in
            let s = stats.baseAddress!
            layerNormForward(out, s, s + N, out, embLnW, embLnB, N, C, config.normEps)
        }
    }

    /// The embedding LayerNorm's input: word + position + token type.
    private func embedSum(_ out: UnsafeMutablePointer<Float>, ids: UnsafePointer<Int32>, typeIDs: UnsafePointer<Int32>?,
                          rows N: Int, seqLen T: Int, pastLen: Int) {
        let C = config.hiddenSize
        embeddingForward(out, ids, word, position, N, T, C, pastLen)
        for r in 0..<N {
            addInPlace(out + r * C, tokenType + Int(typeIDs?[r] ?? 0) * C, C)
        }
    }

    /// Virtual tokens (prompt tuning) go through the embeddings as words do under PEFT, which hands BERT
    /// `inputs_embeds = [prompt; words]`: x = LN(prompt + position[first + t] + tokenType[0]), in place.
    func addPositions(_ x: UnsafeMutablePointer<Float>, first: Int, count: Int) {
        let C = config.hiddenSize
        virtualSum(x, first: first, count: count)
        withUnsafeTemporaryAllocation(of: Float.self, capacity: 2 * max(count, 1)) { stats in
            let s = stats.baseAddress!
            layerNormForward(x, s, s + count, x, embLnW, embLnB, count, C, config.normEps)
        }
    }

    /// x += position[first + t] + tokenType[0] for `count` rows.
    private func virtualSum(_ x: UnsafeMutablePointer<Float>, first: Int, count: Int) {
        let C = config.hiddenSize
        for t in 0..<count {
            addInPlace(x + t * C, position + (first + t) * C, C)
            addInPlace(x + t * C, tokenType, C)
        }
    }

    /// Backward of `addPositions` over `prompt` ([count, C]): accumulates into `dprompt` the gradient from `d`
    /// (dL/d(its output rows)), through the embedding LayerNorm (statistics recomputed; the norm is frozen).
    func virtualTokensBackward(_ dprompt: UnsafeMutablePointer<Float>, _ d: UnsafePointer<Float>, prompt: UnsafePointer<Float>,
                               first: Int, count: Int) {
        let C = config.hiddenSize
        withUnsafeTemporaryAllocation(of: Float.self, capacity: 2 * count * C + 2 * count) { buf in
            let x = buf.baseAddress!, y = x + count * C, mean = y + count * C, rstd = mean + count
            x.update(from: prompt, count: count * C)
            virtualSum(x, first: first, count: count)
            layerNormForward(y, mean, rstd, x, embLnW, embLnB, count, C, config.normEps)
            layerNormBackward(dprompt, nil, nil, d, x, embLnW, mean, rstd, count, C)
        }
    }

    /// Full fine-tuning: back through the embedding LayerNorm (its statistics recomputed) into the word,
    /// position and token-type (type 0: the training path passes no types) tables and the norm's weights.
    func embedBackward(into grads: any ModelWeights, _ d: UnsafePointer<Float>, ids: UnsafePointer<Int32>, rows N: Int,
                       seqLen T: Int) {
        guard let g = grads as? BERTWeights else { return }
        let C = config.hiddenSize
        withUnsafeTemporaryAllocation(of: Float.self, capacity: 2 * N * C + 2 * N) { buf in
            let x = buf.baseAddress!, y = x + N * C, mean = y + N * C, rstd = mean + N
            embedSum(x, ids: ids, typeIDs: nil, rows: N, seqLen: T, pastLen: 0)
            layerNormForward(y, mean, rstd, x, embLnW, embLnB, N, C, config.normEps)
            y.update(repeating: 0, count: N * C)
            layerNormBackward(y, g.embLnW, g.embLnB, d, x, embLnW, mean, rstd, N, C)
            embeddingBackward(g.word, g.position, y, ids, N, T, C, 0)
            for r in 0..<N { addInPlace(g.tokenType, y + r * C, C) }
        }
    }

    // MARK: the identity "final norm"

    func finalNorm(out: UnsafeMutablePointer<Float>, mean: UnsafeMutablePointer<Float>, rstd: UnsafeMutablePointer<Float>,
                   inp: UnsafeMutablePointer<Float>, rows N: Int) {
        out.update(from: inp, count: N * config.hiddenSize)
    }

    func finalNormBackward(dinp: UnsafeMutablePointer<Float>, grads: (any ModelWeights)?, dout: UnsafeMutablePointer<Float>,
                           inp: UnsafeMutablePointer<Float>, mean: UnsafeMutablePointer<Float>, rstd: UnsafeMutablePointer<Float>,
                           rows N: Int) {
        addInPlace(dinp, dout, N * config.hiddenSize)
    }

    // MARK: layers

    /// Activations: a.x1 = x + h1 (+ unit), a.ln1 = LN1(a.x1) (= y), a.ln2 = y + h2 (+ unit), out = LN2(a.ln2).
    func forwardLayer(_ l: Int, _ ctx: LayerContext, x: UnsafeMutablePointer<Float>, out: UnsafeMutablePointer<Float>,
                      a: inout LayerActs) {
        let w = layers[l], c = config
        let N = ctx.rows, C = c.hiddenSize, I = c.intermediateSize, eps = c.normEps, ld = c.qkvWidth
        ctx.linear(l, .q, w.q, out: a.qkv, inp: x, rows: N, ldo: ld)
        ctx.linear(l, .k, w.k, out: a.qkv + C, inp: x, rows: N, ldo: ld)
        ctx.linear(l, .v, w.v, out: a.qkv + 2 * C, inp: x, rows: N, ldo: ld)
        ctx.selfAttention(l, &a)
        ctx.linear(l, .o, w.o, out: a.h1, inp: a.attn, rows: N)
        ctx.residualForward(l, .attention, out: a.x1, x: x, h: a.h1, norm: SubLayerNorm(weight: w.ln1W, bias: w.ln1B, eps: eps))
        layerNormForward(a.ln1, a.ln1Mean, a.ln1Rstd, a.x1, w.ln1W, w.ln1B, N, C, eps)
        ctx.linear(l, .fc, w.fc, out: a.fcPre, inp: a.ln1, rows: N)
        activationForward(.gelu, a.act, a.fcPre, N * I)
        ctx.linear(l, .proj, w.proj, out: a.h2, inp: a.act, rows: N)
        ctx.residualForward(l, .output, out: a.ln2, x: a.ln1, h: a.h2, norm: SubLayerNorm(weight: w.ln2W, bias: w.ln2B, eps: eps))
        layerNormForward(out, a.ln2Mean, a.ln2Rstd, a.ln2, w.ln2W, w.ln2B, N, C, eps)
    }

    func backwardLayer(_ l: Int, _ ctx: LayerContext, x: UnsafeMutablePointer<Float>, a: LayerActs, s: BackwardScratch,
                       grads: (any ModelWeights)?) {
        let w = layers[l], gw = (grads as? BERTWeights)?.layers[l], c = config
        let N = ctx.rows, C = c.hiddenSize, I = c.intermediateSize, ld = c.qkvWidth
        let d = s.d
        if a.needsRecompute(l) { recomputeForBackward(l, ctx, a: a, weights: gw != nil) }
        // out = LN2(y + h2 (+ A)): d becomes dL/d(the sum).
        s.dln.update(repeating: 0, count: N * C)
        layerNormBackward(s.dln, gw?.ln2W, gw?.ln2B, d, a.ln2, w.ln2W, a.ln2Mean, a.ln2Rstd, N, C)
        d.update(from: s.dln, count: N * C)
        ctx.residualBackward(l, .output, s, norm: SubLayerNorm(weight: w.ln2W, bias: w.ln2B, eps: c.normEps))
        ctx.linearBack(l, .proj, w.proj, dinp: s.dact, dout: s.dh, inp: a.act, rows: N, accumulate: false, wgrad: gw?.proj)
        // The activation output is read for the last time above: a shared one takes the fc gradient.
        let dfcPre = a.recomputed ? a.act : s.dfcPre
        activationBackward(.gelu, dfcPre, a.fcPre, s.dact, N * I, accumulate: false)
        ctx.linearBack(l, .fc, w.fc, dinp: s.dln, dout: dfcPre, inp: a.ln1, rows: N, accumulate: false, wgrad: gw?.fc)
        addInPlace(d, s.dln, N * C)
        // y = LN1(x + h1 (+ A)): d becomes dL/d(that sum).
        s.dln.update(repeating: 0, count: N * C)
        layerNormBackward(s.dln, gw?.ln1W, gw?.ln1B, d, a.x1, w.ln1W, a.ln1Mean, a.ln1Rstd, N, C)
        d.update(from: s.dln, count: N * C)
        ctx.residualBackward(l, .attention, s, norm: SubLayerNorm(weight: w.ln1W, bias: w.ln1B, eps: c.normEps))
        ctx.linearBack(l, .o, w.o, dinp: s.dattn, dout: s.dh, inp: a.attn, rows: N, accumulate: false, wgrad: gw?.o)
        ctx.selfAttentionBackward(l, a, s)
        if !Self.needsInputGradient(l, ctx, weights: gw != nil) {
            // The first layer's input gradient has no reader: only the q/k/v linears whose backward does more
            // than that (hooked by the adapter) run, each into the scratch row block, which is then dropped.
            let sites: [(LinearSite, FrozenLinear, Int)] = [(.q, w.q, 0), (.k, w.k, C), (.v, w.v, 2 * C)]
            for (site, lin, off) in sites where ctx.adapter?.hooks(l, site) == true {
                ctx.linearBack(l, site, lin, dinp: s.dln, dout: s.dqkv + off, inp: x, rows: N, accumulate: false, lddo: ld)
            }
            return
        }
        ctx.linearBack(l, .q, w.q, dinp: s.dln, dout: s.dqkv, inp: x, rows: N, accumulate: false, lddo: ld, wgrad: gw?.q)
        ctx.linearBack(l, .k, w.k, dinp: s.dln, dout: s.dqkv + C, inp: x, rows: N, accumulate: true, lddo: ld, wgrad: gw?.k)
        ctx.linearBack(l, .v, w.v, dinp: s.dln, dout: s.dqkv + 2 * C, inp: x, rows: N, accumulate: true, lddo: ld,
                       wgrad: gw?.v)
        addInPlace(d, s.dln, N * C)
    }

    /// Whether layer l's backward must leave dL/d(its input) in `d`: always above the first layer; below it only
    /// the embeddings read it, for full fine-tuning (`weights`) or an adapter's virtual tokens.
    static func needsInputGradient(_ l: Int, _ ctx: LayerContext, weights: Bool) -> Bool {
        if l > 0 || weights { return true }
        return ctx.adapter?.readsInputGradient ?? false
    }

    /// Refills the activations training does not keep per layer (`RecomputedActs`; `ln2`, the sum before the
    /// second norm, is kept) with the forward's kernels: the attention probabilities (and output), y = LN1(x1)
    /// (the output unit's residual input as well as fc's), and the GELU output when the backward reads it
    /// (proj hooked or its weights trained).
    private func recomputeForBackward(_ l: Int, _ ctx: LayerContext, a: LayerActs, weights: Bool) {
        let w = layers[l], c = config, N = ctx.rows, C = c.hiddenSize
        var a = a
        ctx.selfAttention(l, &a, output: ctx.readsInput(l, .o, weights: weights))
        layerNormForward(a.ln1, a.ln1Mean, a.ln1Rstd, a.x1, w.ln1W, w.ln1B, N, C, c.normEps)
        if ctx.readsInput(l, .proj, weights: weights) { activationForward(.gelu, a.act, a.fcPre, N * c.intermediateSize) }
    }
}
