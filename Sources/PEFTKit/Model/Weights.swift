/// One decoder layer's frozen weights, as views into tensors owned by `BaseWeights`.
struct LayerWeights {
    var norm1W: UnsafeMutablePointer<Float>
    var norm1B: UnsafeMutablePointer<Float>?
    /// GPT-2's fused c_attn (Conv1D [C, 3C]).
    var qkv: Linear?
    /// Llama's separate projections ([out, in]).
    var q: Linear?
    var k: Linear?
    var v: Linear?
    var o: Linear
    var norm2W: UnsafeMutablePointer<Float>
    var norm2B: UnsafeMutablePointer<Float>?
    /// GPT-2 MLP: c_fc, c_proj.
    var fc: Linear?
    var proj: Linear?
    /// Llama MLP: gate, up, down.
    var gate: Linear?
    var up: Linear?
    var down: Linear?
}

/// All base-model weights. Tensors are either memory-mapped from the model file (read-only) or allocated.
/// PEFTKit never writes them after construction.
struct BaseWeights {
    var wte: UnsafeMutablePointer<Float>
    var wpe: UnsafeMutablePointer<Float>?
    var layers: [LayerWeights]
    var normFW: UnsafeMutablePointer<Float>
    var normFB: UnsafeMutablePointer<Float>?
    var lmHead: Linear
    /// Every tensor by its Hugging Face name (keeps the storage alive; used by tests and inspection).
    var named: [(name: String, tensor: Tensor)]

    /// The tensors a model of `config` needs, with their shapes, in a fixed order (HF names).
    static func manifest(_ c: ModelConfig) -> [(name: String, shape: [Int])] {
        var m: [(String, [Int])] = []
        let C = c.hiddenSize, I = c.intermediateSize, V = c.vocabSize
        switch c.architecture {
        case .gpt2:
            m.append(("transformer.wte.weight", [V, C]))
            m.append(("transformer.wpe.weight", [c.maxPositions, C]))
            for l in 0..<c.numLayers {
                let p = "transformer.h.\(l)."
                m += [(p + "ln_1.weight", [C]), (p + "ln_1.bias", [C]),
                      (p + "attn.c_attn.weight", [C, 3 * C]), (p + "attn.c_attn.bias", [3 * C]),
                      (p + "attn.c_proj.weight", [C, C]), (p + "attn.c_proj.bias", [C]),
                      (p + "ln_2.weight", [C]), (p + "ln_2.bias", [C]),
                      (p + "mlp.c_fc.weight", [C, I]), (p + "mlp.c_fc.bias", [I]),
                      (p + "mlp.c_proj.weight", [I, C]), (p + "mlp.c_proj.bias", [C])]
            }
            m += [("transformer.ln_f.weight", [C]), ("transformer.ln_f.bias", [C])]
        case .llama:
            let q = c.numHeads * c.headDim, kv = c.numKVHeads * c.headDim
            m.append(("model.embed_tokens.weight", [V, C]))
            for l in 0..<c.numLayers {
                let p = "model.layers.\(l)."
                m.append((p + "input_layernorm.weight", [C]))
                m.append((p + "self_attn.q_proj.weight", [q, C]))
                if c.qkvBias { m.append((p + "self_attn.q_proj.bias", [q])) }
                m.append((p + "self_attn.k_proj.weight", [kv, C]))
                if c.qkvBias { m.append((p + "self_attn.k_proj.bias", [kv])) }
                m.append((p + "self_attn.v_proj.weight", [kv, C]))
                if c.qkvBias { m.append((p + "self_attn.v_proj.bias", [kv])) }
                m.append((p + "self_attn.o_proj.weight", [C, q]))
                if c.outputBias { m.append((p + "self_attn.o_proj.bias", [C])) }
                m.append((p + "post_attention_layernorm.weight", [C]))
                m.append((p + "mlp.gate_proj.weight", [I, C]))
                if c.mlpBias { m.append((p + "mlp.gate_proj.bias", [I])) }
                m.append((p + "mlp.up_proj.weight", [I, C]))
                if c.mlpBias { m.append((p + "mlp.up_proj.bias", [I])) }
                m.append((p + "mlp.down_proj.weight", [C, I]))
                if c.mlpBias { m.append((p + "mlp.down_proj.bias", [C])) }
            }
            m.append(("model.norm.weight", [C]))
            if !c.tieWordEmbeddings { m.append(("lm_head.weight", [V, C])) }
        }
        return m
    }

    /// Builds the weights from tensors given by `lookup(name, shape)`, which must return a tensor of exactly
    /// that shape or throw.
    init(config c: ModelConfig, lookup: (String, [Int]) throws -> Tensor) throws {
        var named: [(String, Tensor)] = []
        var byName: [String: Tensor] = [:]
        for (name, shape) in BaseWeights.manifest(c) {
            let t = try lookup(name, shape)
            guard t.shape == shape else {
                throw PEFTKitError.format("tensor '\(name)' has shape \(t.shape), expected \(shape)")
            }
            named.append((name, t))
            byName[name] = t
        }
        func p(_ n: String) -> UnsafeMutablePointer<Float> { byName[n]!.data }
        func po(_ n: String) -> UnsafeMutablePointer<Float>? { byName[n]?.data }
        let C = c.hiddenSize, I = c.intermediateSize
        var layers: [LayerWeights] = []
        switch c.architecture {
        case .gpt2:
            for l in 0..<c.numLayers {
                let pre = "transformer.h.\(l)."
                layers.append(LayerWeights(
                    norm1W: p(pre + "ln_1.weight"), norm1B: p(pre + "ln_1.bias"),
                    qkv: Linear(weight: p(pre + "attn.c_attn.weight"), bias: p(pre + "attn.c_attn.bias"),
                                inFeatures: C, outFeatures: 3 * C, transposed: true),
                    q: nil, k: nil, v: nil,
                    o: Linear(weight: p(pre + "attn.c_proj.weight"), bias: p(pre + "attn.c_proj.bias"),
                              inFeatures: C, outFeatures: C, transposed: true),
                    norm2W: p(pre + "ln_2.weight"), norm2B: p(pre + "ln_2.bias"),
                    fc: Linear(weight: p(pre + "mlp.c_fc.weight"), bias: p(pre + "mlp.c_fc.bias"),
                               inFeatures: C, outFeatures: I, transposed: true),
                    proj: Linear(weight: p(pre + "mlp.c_proj.weight"), bias: p(pre + "mlp.c_proj.bias"),
                                 inFeatures: I, outFeatures: C, transposed: true),
                    gate: nil, up: nil, down: nil))
            }
            wte = p("transformer.wte.weight")
            wpe = p("transformer.wpe.weight")
            normFW = p("transformer.ln_f.weight")
            normFB = p("transformer.ln_f.bias")
        case .llama:
            let q = c.numHeads * c.headDim, kv = c.numKVHeads * c.headDim
            for l in 0..<c.numLayers {
                let pre = "model.layers.\(l)."
                func lin(_ n: String, _ i: Int, _ o: Int) -> Linear {
                    Linear(weight: p(pre + n + ".weight"), bias: po(pre + n + ".bias"), inFeatures: i, outFeatures: o,
                           transposed: false)
                }
                layers.append(LayerWeights(
                    norm1W: p(pre + "input_layernorm.weight"), norm1B: nil,
                    qkv: nil,
                    q: lin("self_attn.q_proj", C, q), k: lin("self_attn.k_proj", C, kv), v: lin("self_attn.v_proj", C, kv),
                    o: lin("self_attn.o_proj", q, C),
                    norm2W: p(pre + "post_attention_layernorm.weight"), norm2B: nil,
                    fc: nil, proj: nil,
                    gate: lin("mlp.gate_proj", C, I), up: lin("mlp.up_proj", C, I), down: lin("mlp.down_proj", I, C)))
            }
            wte = p("model.embed_tokens.weight")
            wpe = nil
            normFW = p("model.norm.weight")
            normFB = nil
        }
        self.layers = layers
        let headW = c.tieWordEmbeddings ? wte : p("lm_head.weight")
        lmHead = Linear(weight: headW, bias: nil, inFeatures: C, outFeatures: c.vocabSize, transposed: false)
        self.named = named
    }

    /// Random weights, GPT-2 style: N(0, std) for matrices and embeddings, residual output projections
    /// N(0, std/√(2L)), biases 0, norm weights 1.
    static func random(config c: ModelConfig, seed: UInt64, std: Float = 0.02) throws -> BaseWeights {
        var rng = Rng(seed: seed)
        let residualStd = std / Float(2 * c.numLayers).squareRoot()
        return try BaseWeights(config: c) { name, shape in
            let t = try Tensor(zeros: shape)
            let n = t.count
            if name.hasSuffix(".bias") {
                // zeros
            } else if shape.count == 1 {
                t.data.update(repeating: 1, count: n)
            } else if name.hasSuffix("attn.c_proj.weight") || name.hasSuffix("mlp.c_proj.weight")
                        || name.hasSuffix("o_proj.weight") || name.hasSuffix("down_proj.weight") {
                fillNormal(t.data, n, std: residualStd, rng: &rng)
            } else {
                fillNormal(t.data, n, std: std, rng: &rng)
            }
            return t
        }
    }
}

extension LinearSite {
    /// The frozen linear of layer weights `w` at this site.
    func linear(_ w: LayerWeights) -> Linear? {
        switch self {
        case .qkv: return w.qkv
        case .q: return w.q
        case .k: return w.k
        case .v: return w.v
        case .o: return w.o
        case .fc: return w.fc
        case .proj: return w.proj
        case .gate: return w.gate
        case .up: return w.up
        case .down: return w.down
        }
    }
}
