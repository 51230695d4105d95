// LoRA adapters in llama.cpp's GGUF adapter format (what `convert_lora_to_gguf.py` writes and `llama-cli --lora`,
// Ollama and LM Studio load): metadata `general.architecture` (the base's), `general.type` "adapter",
// `adapter.type` "lora", `adapter.lora.alpha`; per adapted linear two tensors named after the base model's GGUF
// tensor, `<base>.lora_a` with ne [in, r] (PEFT's A [r, in]) and `<base>.lora_b` with ne [r, out] (PEFT's B
// [out, r]). llama.cpp scales by alpha / r, so rsLoRA (alpha / √r) is written as the equivalent alpha·√r. Llama's
// query and key weights are stored in GGUF with their rows in interleaved RoPE order (convert_hf_to_gguf.py's
// `permute`); the converter applies the same permutation to B's rows, and so does this file (inverse on load).

extension LoRAAdapter {
    /// GGUF row `h·d + 2j + s` holds Hugging Face row `h·d + s·d/2 + j` (d = head size): llama.cpp's
    /// `permute(weights, n_head, n_head_kv)` on the rows of B [out, r]. `inverse` undoes it.
    static func permuteRoPERows(_ b: [Float], heads: Int, headDim: Int, rowLength: Int, inverse: Bool) -> [Float] {
        var out = b
        let half = headDim / 2
        for h in 0..<heads {
            for j in 0..<half {
                for s in 0..<2 {
                    let gguf = h * headDim + 2 * j + s, hf = h * headDim + s * half + j
                    let (dst, src) = inverse ? (hf, gguf) : (gguf, hf)
                    for c in 0..<rowLength { out[dst * rowLength + c] = b[src * rowLength + c] }
                }
            }
        }
        return out
    }

    /// Heads whose rows GGUF permutes at a site (Llama query and key), nil elsewhere.
    static func ropeHeads(_ site: LinearSite, _ m: ModelConfig) -> Int? {
        switch site {
        case .q: return m.numHeads
        case .k: return m.numKVHeads
        default: return nil
        }
    }

    /// The adapter as a llama.cpp GGUF LoRA file. `baseTensorName` maps a Hugging Face tensor name of the base model to
    /// its GGUF name (the engine's table).
    func ggufFile(baseTensorName: (String) -> String?) throws -> GGUFWriter {
        let m = model, c = config, r = c.rank
        guard m.architecture == .llama else {
            throw PEFTKitError.unsupported("GGUF LoRA adapters are written for Llama models only (this is \(m.architecture))")
        }
        guard initialWeights == nil else {
            throw PEFTKitError.unsupported("a \(c.initLoRAWeights.displayName) adapter runs over a residual base, which llama.cpp does not have: "
                + "save it as converted-lora (a plain LoRA of the original base) instead")
        }
        // llama.cpp reads alpha 0 as "no scaling" (scale 1): a zero scale cannot be written.
        let alpha = c.useRSLoRA ? c.alpha * Float(r).squareRoot() : c.alpha
        guard alpha != 0 else {
            throw PEFTKitError.unsupported("a LoRA adapter with lora_alpha 0 cannot be written as GGUF (llama.cpp reads 0 as scale 1)")
        }
        var w = GGUFWriter()
        w.metadata = [("general.architecture", .string("llama")), ("general.type", .string("adapter")),
                      ("adapter.type", .string("lora")), ("adapter.lora.alpha", .float32(alpha))]
        let p = params.floats
        for u in units {
            let hf = u.site.module(m.architecture, layer: u.layer) + ".weight"
            guard let base = baseTensorName(hf) else { throw PEFTKitError.unsupported("tensor '\(hf)' has no GGUF name") }
            let a = Array(UnsafeBufferPointer(start: p + u.a, count: r * u.inF))
            var b = Array(UnsafeBufferPointer(start: p + u.b, count: u.outF * r))
            if let heads = LoRAAdapter.ropeHeads(u.site, m) {
                b = LoRAAdapter.permuteRoPERows(b, heads: heads, headDim: m.headDim, rowLength: r, inverse: false)
            }
            w.tensors.append(.init(name: base + ".lora_a", dimensions: [u.inF, r], data: a))
            w.tensors.append(.init(name: base + ".lora_b", dimensions: [r, u.outF], data: b))
        }
        return w
    }

    /// Reads a llama.cpp GGUF LoRA adapter for a model of shape `m`: the adapted sites and layers from the tensor
    /// names, r from their shapes, alpha from `adapter.lora.alpha` (absent or 0: scale 1, as llama.cpp).
    static func fromGGUF(_ file: GGUFFile, model m: ModelConfig, baseTensorName: (String) -> String?) throws -> LoRAAdapter {
        let src = "GGUF adapter '\(file.path)'"
        guard m.architecture == .llama else {
            throw PEFTKitError.unsupported("GGUF LoRA adapters are read for Llama models only (this is \(m.architecture))")
        }
        guard try file.string("general.type") == "adapter", try file.string("adapter.type") == "lora" else {
            throw PEFTKitError.format("\(src) is not a LoRA adapter (general.type \"adapter\", adapter.type \"lora\")")
        }
        if let arch = try file.string("general.architecture"), arch != "llama" {
            throw PEFTKitError.format("\(src) is an adapter for architecture '\(arch)', the model is llama")
        }
        // Every linear a Llama LoRA can adapt, by its GGUF base name.
        var sitesByBase: [String: (layer: Int, site: LinearSite)] = [:]
        for l in 0..<m.numLayers {
            for s in LinearSite.sites(.llama) {
                if let g = baseTensorName(s.module(.llama, layer: l) + ".weight") { sitesByBase[g] = (l, s) }
            }
        }
        var found: [String: (layer: Int, site: LinearSite)] = [:]
        var rank: Int?
        for t in file.tensorInfos {
            let base: String
            if t.name.hasSuffix(".lora_a") { base = String(t.name.dropLast(7)) }
            else if t.name.hasSuffix(".lora_b") { base = String(t.name.dropLast(7)) }
            else { throw PEFTKitError.format("\(src) has tensor '\(t.name)', which is not a LoRA tensor (.lora_a / .lora_b)") }
            guard let ls = sitesByBase[base] else {
                throw PEFTKitError.unsupported("\(src) adapts '\(base)', which PEFTKit's LoRA cannot adapt on this model")
            }
            found[base] = ls
            if t.name.hasSuffix(".lora_a"), t.dimensions.count == 2 {
                guard rank == nil || rank == t.dimensions[1] else {
                    throw PEFTKitError.unsupported("\(src) has tensors of different ranks (\(rank ?? 0) and \(t.dimensions[1]))")
                }
                rank = t.dimensions[1]
            }
        }
        guard let r = rank, !found.isEmpty else { throw PEFTKitError.format("\(src) has no LoRA tensors") }
        let layers = Set(found.values.map { $0.layer }).sorted()
        let sites = Set(found.values.map { $0.site }).sorted { $0.rawValue < $1.rawValue }
        guard found.count == layers.count * sites.count else {
            throw PEFTKitError.unsupported("\(src) adapts different linears in different layers; PEFTKit's LoRA adapts "
                + "the same ones in every chosen layer")
        }
        var c = LoRAConfig()
        c.rank = r
        let alpha = try file.float("adapter.lora.alpha") ?? 0
        c.alpha = alpha == 0 ? Float(r) : Float(alpha)
        c.targets = sites.map { $0.shortName(.llama) }
        c.layers = layers.count == m.numLayers ? nil : layers
        let adapter = try LoRAAdapter(config: c, model: m)
        let p = adapter.params.floats
        for u in adapter.units {
            guard let base = baseTensorName(u.site.module(.llama, layer: u.layer) + ".weight"),
                  let ia = file.info(base + ".lora_a"), let ib = file.info(base + ".lora_b") else {
                throw PEFTKitError.format("\(src) lacks the A or B tensor of layer \(u.layer) \(u.site.shortName(.llama))")
            }
            guard ia.dimensions == [u.inF, r], ib.dimensions == [r, u.outF] else {
                throw PEFTKitError.format("\(src): '\(ia.name)' / '\(ib.name)' have dimensions \(ia.dimensions) / "
                    + "\(ib.dimensions), expected [\(u.inF), \(r)] / [\(r), \(u.outF)]")
            }
            let a = try file.tensor(ia.name), b = try file.tensor(ib.name)
            (p + u.a).update(from: a.data, count: r * u.inF)
            var bv = Array(UnsafeBufferPointer(start: b.data, count: u.outF * r))
            if let heads = LoRAAdapter.ropeHeads(u.site, m) {
                bv = LoRAAdapter.permuteRoPERows(bv, heads: heads, headDim: m.headDim, rowLength: r, inverse: true)
            }
            for (i, v) in bv.enumerated() { p[u.b + i] = v }
        }
        guard isAllFinite(adapter.params.floats, adapter.parameterCount) else {
            throw PEFTKitError.numerical("\(src) holds a non-finite weight")
        }
        adapter.parametersChanged()
        return adapter
    }
}

/// The bytes of `adapter` as a llama.cpp GGUF adapter file (only LoRA has that format).
func ggufAdapterBytes(_ adapter: Adapter, name: String, baseTensorName: (String) -> String?) throws -> [UInt8] {
    guard let lora = adapter as? LoRAAdapter else {
        throw PEFTKitError.unsupported("only LoRA adapters have a GGUF format ('\(name)' is \(adapter.method.rawValue))")
    }
    return try lora.ggufFile(baseTensorName: baseTensorName).bytes()
}

/// The adapter a llama.cpp GGUF adapter file holds.
func readGGUFAdapter(_ file: GGUFFile, model: ModelConfig, baseTensorName: (String) -> String?) throws -> Adapter {
    try LoRAAdapter.fromGGUF(file, model: model, baseTensorName: baseTensorName)
}
