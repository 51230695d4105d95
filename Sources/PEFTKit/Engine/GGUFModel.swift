#if canImport(Glibc)
import Glibc
#endif

// Llama-architecture models stored as GGUF: the model configuration from the file's metadata, GGUF
// tensor names mapped to the Hugging Face names the weights use (`LlamaWeights`' one table), and the Q/K row
// order restored.
//
// GGUF files converted from Hugging Face checkpoints store the rows of each attention head's query and
// key projections interleaved (pair members adjacent: rows 2j and 2j+1 of a head hold HF rows j and
// j + headDim/2), because ggml's RoPE rotates adjacent pairs. PEFTKit's RoPE rotates element i with
// element i + headDim/2 inside a head, like transformers, so the loader puts the rows back in HF order.
// Both orders give the same attention scores; only the pairing convention differs.

/// Reads a `ModelConfig` from the metadata of a GGUF file of architecture `llama`.
///
/// Keys (prefix `llama.`): `context_length`, `embedding_length`, `block_count`, `feed_forward_length`,
/// `attention.head_count`, `attention.head_count_kv` (default: head_count), `attention.layer_norm_rms_epsilon`,
/// `rope.freq_base` (default 10000), `vocab_size` (default: the length of `tokenizer.ggml.tokens`, then the
/// embedding's row count), `attention.key_length` / `rope.dimension_count` (default: embedding_length /
/// head_count). The head is tied when the file has no `output.weight`; biases are used when present.
/// Missing or out-of-range values throw `format`; other architectures, RoPE scaling, partial rotary and
/// mixture-of-experts throw `unsupported`.
///
/// ```swift
/// let config = try modelConfig(fromGGUF: GGUFFile(path: "model.gguf"))
/// ```
public func modelConfig(fromGGUF file: GGUFFile) throws -> ModelConfig {
    let source = "GGUF file '\(file.path)'"
    guard let arch = try file.string("general.architecture") else {
        throw PEFTKitError.format("\(source) has no 'general.architecture'")
    }
    guard arch == "llama" else {
        throw PEFTKitError.unsupported("\(source) has architecture '\(arch)'; PEFTKit loads GGUF models of architecture 'llama'")
    }
    func key(_ k: String) -> String { "\(arch).\(k)" }
    func positive(_ k: String, default fallback: Int? = nil) throws -> Int {
        guard let v = try file.int(key(k)) ?? fallback else { throw PEFTKitError.format("\(source) is missing '\(key(k))'") }
        guard v > 0, v <= 1 << 30 else {
            throw PEFTKitError.format("\(source): '\(key(k))' must be a positive integer no larger than \(1 << 30), got \(v)")
        }
        return v
    }

    if let experts = try file.int(key("expert_count")), experts > 0 {
        throw PEFTKitError.unsupported("\(source) is a mixture-of-experts model (\(experts) experts), which PEFTKit does not run")
    }
    if let scaling = try file.string(key("rope.scaling.type")), scaling != "none" {
        throw PEFTKitError.unsupported("\(source) uses RoPE scaling '\(scaling)', which PEFTKit does not implement yet")
    }
    if file.has(tensor: "rope_freqs.weight") {
        throw PEFTKitError.unsupported("\(source) has per-frequency RoPE factors (rope_freqs.weight), which PEFTKit does not implement yet")
    }

    let hidden = try positive("embedding_length")
    let heads = try positive("attention.head_count")
    let kvHeads = try positive("attention.head_count_kv", default: heads)
    let valueLength = try file.int(key("attention.value_length"))
    let ropeDims = try file.int(key("rope.dimension_count"))
    let headDim = try positive("attention.key_length", default: ropeDims ?? hidden / heads)
    if let v = valueLength, v != headDim {
        throw PEFTKitError.unsupported("\(source): value head size \(v) differs from key head size \(headDim)")
    }
    if let r = ropeDims, r != headDim {
        throw PEFTKitError.unsupported("\(source): RoPE covers \(r) of \(headDim) head dimensions (partial rotary), "
            + "which PEFTKit does not implement")
    }

    let vocab: Int
    if let v = try file.int(key("vocab_size")) {
        vocab = v
    } else if let tokens = try file.array("tokenizer.ggml.tokens") {
        vocab = tokens.count
    } else if let embed = file.info("token_embd.weight"), embed.dimensions.count == 2 {
        vocab = embed.dimensions[1]
    } else {
        throw PEFTKitError.format("\(source) gives no vocabulary size ('\(key("vocab_size"))' or 'tokenizer.ggml.tokens')")
    }
    guard let eps = try file.float(key("attention.layer_norm_rms_epsilon")) else {
        throw PEFTKitError.format("\(source) is missing '\(key("attention.layer_norm_rms_epsilon"))'")
    }
    let theta = try file.float(key("rope.freq_base")) ?? 10000
    let hasBias = { (suffix: String) in file.has(tensor: "blk.0.\(suffix).bias") }

    let config = ModelConfig(
        architecture: .llama,
        vocabSize: vocab,
        hiddenSize: hidden,
        numLayers: try positive("block_count"),
        numHeads: heads,
        numKVHeads: kvHeads,
        headDim: headDim,
        intermediateSize: try positive("feed_forward_length"),
        maxPositions: try positive("context_length"),
        normEps: Float(eps),
        ropeTheta: Float(theta),
        tieWordEmbeddings: !file.has(tensor: "output.weight"),
        qkvBias: hasBias("attn_q") || hasBias("attn_k") || hasBias("attn_v"),
        outputBias: hasBias("attn_output"),
        mlpBias: hasBias("ffn_gate") || hasBias("ffn_up") || hasBias("ffn_down"))
    do {
        try config.validate()
    } catch PEFTKitError.invalidArgument(let message) {
        throw PEFTKitError.format("\(source): \(message)")
    }
    return config
}

/// GGUF llama tensor names (without `.weight` / `.bias`) and their Hugging Face `LlamaForCausalLM` names, from
/// the architecture's table.
private let ggufGlobalNames = Dictionary(uniqueKeysWithValues: LlamaWeights.globalNames.map { ($0.gguf, $0.hf) })
private let ggufLayerNames = Dictionary(uniqueKeysWithValues: LlamaWeights.layerNames.map { ($0.gguf, $0.hf) })

/// The Hugging Face name of a GGUF llama tensor (`blk.3.attn_q.weight` → `model.layers.3.self_attn.q_proj.weight`),
/// or nil for names PEFTKit does not know.
func huggingFaceName(ofGGUFTensor name: String) -> String? {
    let parts = name.split(separator: ".", omittingEmptySubsequences: false).map(String.init)
    guard let last = parts.last, last == "weight" || last == "bias" else { return nil }
    if parts.count == 2, let g = ggufGlobalNames[parts[0]] {
        return "\(g).\(last)"
    }
    if parts.count == 4, parts[0] == "blk", let layer = Int(parts[1]), layer >= 0, String(layer) == parts[1],
       let p = ggufLayerNames[parts[2]] {
        return "\(LlamaWeights.layerPrefix(layer))\(p).\(last)"
    }
    return nil
}

/// The GGUF name of a Hugging Face llama tensor name (the inverse of `huggingFaceName(ofGGUFTensor:)`).
func ggufName(ofHuggingFaceTensor name: String) -> String? {
    for (g, h) in ggufGlobalNames where name == h + ".weight" || name == h + ".bias" {
        return g + name.dropFirst(h.count)
    }
    let prefix = "model.layers."
    guard name.hasPrefix(prefix) else { return nil }
    let rest = name.dropFirst(prefix.count)
    guard let dot = rest.firstIndex(of: "."), let layer = Int(rest[..<dot]) else { return nil }
    let tail = rest[rest.index(after: dot)...]
    for (g, h) in ggufLayerNames where tail == h + ".weight" || tail == h + ".bias" {
        return "blk.\(layer).\(g)" + tail.dropFirst(h.count)
    }
    return nil
}

/// Reorders, in place, the rows of a query or key projection (weight `[heads·headDim, in]` or bias
/// `[heads·headDim]`) from GGUF's interleaved RoPE order to Hugging Face's half-split order: inside each
/// head, stored row 2j + s becomes row s·headDim/2 + j (s = 0, 1).
func unpermuteRoPERows(_ t: Tensor, heads: Int, headDim: Int) throws {
    let rows = t.shape.first ?? 0
    guard headDim % 2 == 0, heads > 0, rows == heads * headDim else {
        throw PEFTKitError.format("cannot restore the RoPE row order of a tensor of shape \(t.shape) "
            + "with \(heads) heads of \(headDim)")
    }
    let rowLength = rows > 0 ? t.count / rows : 0
    let half = headDim / 2
    let block = headDim * rowLength
    let scratch = try Storage.allocate(floats: block)
    let tmp = scratch.floats
    for h in 0..<heads {
        let head = t.data + h * block
        tmp.update(from: head, count: block)
        for j in 0..<half {
            for s in 0..<2 {
                (head + (s * half + j) * rowLength).update(from: tmp + (2 * j + s) * rowLength, count: rowLength)
            }
        }
    }
}

/// The weight `info` kept in its GGUF blocks as a [out, in] matrix, or nil when it stays fp32: F32 tensors
/// (used in place), 1-D tensors (norms, biases) and types without quantized kernels (widened on load).
/// Query/key rows (`ropeHeads` heads) are put back in Hugging Face order in an owned copy of the blocks (a row
/// is whole blocks, so the copy is as small as the file's tensor).
func quantizedMatrix(_ file: GGUFFile, _ info: GGUFTensorInfo, ropeHeads: Int?, headDim: Int) throws -> QuantizedMatrix? {
    guard info.type != .f32, info.type.hasQuantKernels, info.dimensions.count == 2 else { return nil }
    let (inF, outF) = (info.dimensions[0], info.dimensions[1])
    let name = "GGUF file '\(file.path)': tensor '\(info.name)'"
    let src = UnsafeRawPointer(file.storage.base) + file.dataOffset + info.offset
    var m = try QuantizedMatrix(type: info.type, outFeatures: outF, inFeatures: inF, data: src,
                                byteCount: info.byteCount, name: name, owner: file.storage)
    guard let heads = ropeHeads else { return m }
    guard headDim % 2 == 0, heads > 0, outF == heads * headDim else {
        throw PEFTKitError.format("\(name): cannot restore the RoPE row order of \(outF) rows with \(heads) heads of \(headDim)")
    }
    let copy = try Storage.allocate(floats: (info.byteCount + 3) / 4)
    let rb = m.rowBytes, half = headDim / 2
    for h in 0..<heads {
        for j in 0..<half {
            for s in 0..<2 {
                let dst = h * headDim + s * half + j, from = h * headDim + 2 * j + s
                (copy.base + dst * rb).copyMemory(from: src + from * rb, byteCount: rb)
            }
        }
    }
    m = try QuantizedMatrix(type: info.type, outFeatures: outF, inFeatures: inF, data: UnsafeRawPointer(copy.base),
                            byteCount: info.byteCount, name: name, owner: copy)
    return m
}

extension Engine {
    /// Loads a GGUF model of architecture `llama`: configuration from the metadata (see
    /// `modelConfig(fromGGUF:)`), query/key rows put back in Hugging Face order. Linear weights and the token
    /// embedding stay in their GGUF blocks (memory-mapped; Q8_0 … Q6_K, F16, BF16) unless `widen` asks for
    /// fp32 copies; norms and biases are fp32. Every tensor in the file must be one the model uses.
    convenience init(loadingGGUF path: String, widen: Bool = false) throws {
        try self.init(ggufFile: try GGUFFile(path: path), widen: widen)
    }

    /// As `init(loadingGGUF:widen:)`, from a file already opened.
    convenience init(ggufFile file: GGUFFile, widen: Bool = false, progress: ProgressHandler? = nil) throws {
        let path = file.path
        let cfg = try modelConfig(fromGGUF: file)
        let source = "GGUF file '\(path)'"

        var ggufNames: [String: String] = [:]
        for t in file.tensorInfos {
            guard let hf = huggingFaceName(ofGGUFTensor: t.name) else {
                throw PEFTKitError.unsupported("\(source) has tensor '\(t.name)', which PEFTKit's llama model does not use")
            }
            ggufNames[hf] = t.name
        }
        var used = Set<String>()
        func info(_ name: String, _ shape: [Int]) throws -> GGUFTensorInfo {
            guard let g = ggufNames[name], let info = file.info(g) else {
                throw PEFTKitError.format("\(source) has no tensor '\(ggufName(ofHuggingFaceTensor: name) ?? name)' "
                    + "(Hugging Face '\(name)'), which the model needs")
            }
            guard info.shape == shape else {
                throw PEFTKitError.format("\(source): tensor '\(g)' has dimensions \(info.dimensions) (shape \(info.shape)), "
                    + "expected shape \(shape) for '\(name)'")
            }
            used.insert(g)
            return info
        }
        var counter = ProgressCounter(progress, total: cfg.architecture.weights.tensors(cfg).count, what: "loading '\(path)'")
        var quantized: [String: QuantizedMatrix] = [:]
        if !widen {
            for spec in cfg.architecture.weights.tensors(cfg) where spec.shape.count == 2 {
                let i = try info(spec.name, spec.shape)
                let heads = LlamaWeights.ggufRoPEHeads(spec.name, cfg)
                if let m = try quantizedMatrix(file, i, ropeHeads: heads, headDim: cfg.headDim) {
                    quantized[spec.name] = m
                    try counter.advance()
                }
            }
        }
        let weights = try loadWeights(config: cfg, quantized: quantized) { name, shape in
            let g = try info(name, shape).name
            guard let heads = LlamaWeights.ggufRoPEHeads(name, cfg) else {
                let t = try file.tensor(g)
                try counter.advance()
                return t
            }
            let t = try file.tensor(g, copy: true)
            try unpermuteRoPERows(t, heads: heads, headDim: cfg.headDim)
            try counter.advance()
            return t
        }
        if let extra = file.tensorInfos.first(where: { !used.contains($0.name) }) {
            throw PEFTKitError.unsupported("\(source) has tensor '\(extra.name)', which a llama model of this "
                + "configuration does not use")
        }
        releaseUnreadPages(file, weights)
        try self.init(config: cfg, weights: weights)
    }
}

/// Drops from the process's resident set the file's pages that the loaded weights do not read in place: those
/// of tensors widened to fp32 or copied on load (query/key rows) were read once, and would otherwise stay
/// resident next to their copies for as long as the mapping lives. The mapping is private and read-only, so a
/// dropped page is only the page cache's; touching it again maps it again. Only pages wholly inside such a
/// tensor are dropped, and only from a file mapping (`GGUFFile(path:)`; a file opened over bytes in memory
/// keeps them, which dropping would zero).
private func releaseUnreadPages(_ file: GGUFFile, _ w: any ModelWeights) {
    guard file.storage.isMapped else { return }
    let base = UnsafeRawPointer(file.storage.base)
    var inPlace: [Range<Int>] = []
    for (_, t) in w.named where t.storage === file.storage {
        let o = UnsafeRawPointer(t.data) - base
        inPlace.append(o..<(o + t.count * MemoryLayout<Float>.stride))
    }
    for (_, m) in w.quantized where m.owner === file.storage {
        let o = m.data - base
        inPlace.append(o..<(o + m.byteCount))
    }
    let page = max(4096, Int(sysconf(Int32(_SC_PAGESIZE))))
    for info in file.tensorInfos {
        let begin = file.dataOffset + info.offset, end = begin + info.byteCount
        guard !inPlace.contains(where: { $0.overlaps(begin..<end) }) else { continue }
        let first = (begin + page - 1) / page * page, last = end / page * page
        if last > first { _ = madvise(file.storage.base + first, last - first, MADV_DONTNEED) }
    }
}
