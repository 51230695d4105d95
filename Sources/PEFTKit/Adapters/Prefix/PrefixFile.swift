// Prefix tuning in HF PEFT's files: `peft_type` "PREFIX_TUNING"; one tensor `prompt_embeddings`
// [virtual tokens, layers · 2 · kv width]. PEFT stores keys and values per kv head (it rewrites `token_dim`
// under grouped-query attention), and a projected prefix saves only the MLP's output: its folder loads as a
// plain prefix with the same outputs.

enum PrefixSchema: AdapterConfigSchema {
    static let known: Set<String> = ["num_virtual_tokens", "token_dim", "num_attention_heads", "num_layers",
                                     "encoder_hidden_size", "prefix_projection", "num_transformer_submodules",
                                     "modules_to_save"]

    static func claims(_ o: [String: JSONValue]) -> Bool { o["peft_type"] == .string("PREFIX_TUNING") }

    static func parse(_ o: [String: JSONValue], model: ModelConfig, context: AdapterContext, source: String) throws -> AdapterConfig {
        let f = ConfigFields(object: o, source: source)
        try checkPEFTCommon(f, model)
        try checkConfigKeys(o, known: known, source: source)
        let kvd = model.numKVHeads * model.headDim
        let nv = try checkVirtualTokenFields(f, model: model, tokenDim: kvd, heads: model.numKVHeads)
        var c = PrefixConfig()
        c.virtualTokens = nv
        c.projection = try f.bool("prefix_projection") ?? false
        if c.projection, let h = try f.int("encoder_hidden_size") {
            try require(h > 0 && h <= 1 << 16, "\(source): encoder_hidden_size \(h) is out of range 1...65536")
            c.projectionHidden = h == kvd ? 0 : h
        }
        if let seed = try f.int("seed") { c.seed = UInt64(truncatingIfNeeded: seed) }
        return .prefix(c)
    }

    static func configForSavedWeights(_ config: AdapterConfig) -> AdapterConfig {
        guard case .prefix(var c) = config else { return config }
        c.projection = false
        c.projectionHidden = 0
        return .prefix(c)
    }

    static func parameterCount(_ c: PrefixConfig, model: ModelConfig) -> Int {
        let kvd = model.numKVHeads * model.headDim, width = model.numLayers * 2 * kvd
        guard c.projection else { return c.virtualTokens * width }
        let h = c.projectionHidden > 0 ? c.projectionHidden : kvd
        return c.virtualTokens * kvd + h * kvd + h + width * h + width
    }
}

/// The fields prompt and prefix tuning share; returns `num_virtual_tokens`.
func checkVirtualTokenFields(_ f: ConfigFields, model: ModelConfig, tokenDim dim: Int, heads: Int) throws -> Int {
    guard let nv = try f.int("num_virtual_tokens") else { throw f.bad("no 'num_virtual_tokens'") }
    guard nv > 0 && nv < model.maxPositions else {
        throw f.bad("num_virtual_tokens \(nv) is out of range 1..<\(model.maxPositions) for this model")
    }
    if let s = try f.int("num_transformer_submodules"), s != 1 { throw f.refuse("num_transformer_submodules \(s) (encoder-decoder models)") }
    if let l = try f.int("num_layers"), l != model.numLayers { throw f.bad("made for \(l) layers, this model has \(model.numLayers)") }
    if let d = try f.int("token_dim"), d != dim { throw f.bad("token_dim \(d) does not fit this model (expected \(dim))") }
    if let h = try f.int("num_attention_heads"), h != heads { throw f.bad("num_attention_heads \(h) does not fit this model (expected \(heads))") }
    return nv
}

extension PrefixAdapter: SavableAdapter {
    var fileFormat: AdapterFileFormat { .peft }

    func fileConfig(name: String) -> [String: JSONValue] {
        var o = peftCommonFields(model)
        o.merge([
            "peft_type": .string("PREFIX_TUNING"), "num_virtual_tokens": .int(P), "token_dim": .int(kvd),
            "num_attention_heads": .int(model.numKVHeads), "num_layers": .int(model.numLayers),
            "num_transformer_submodules": .int(1), "encoder_hidden_size": .int(hidden),
            "prefix_projection": .bool(config.projection),
        ]) { $1 }
        return o
    }

    /// The rows the model reads; for a projected prefix that is the MLP's output, which is all PEFT keeps.
    func fileTensors(name: String) -> [SavedTensor] {
        beginPass(training: false)
        return [SavedTensor(name: peftEmbeddingsKey, shape: [P, width], data: UnsafeBufferPointer(start: flatPrefix, count: P * width))]
    }

    func fileTensorSlots(name: String) -> [FileTensorSlot] {
        config.projection ? [] : [FileTensorSlot(name: peftEmbeddingsKey, shape: [P, width], offset: 0)]
    }
}
