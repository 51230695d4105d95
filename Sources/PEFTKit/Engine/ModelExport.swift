// Saving the whole base model as it computes now: merged adapters and fully fine-tuned weights included, weights
// kept in GGUF blocks widened to fp32 while they are written. Two formats:
//
// - A Hugging Face folder: `config.json` (`configJSON(for:)`) and `model.safetensors`, F32, under the names and in
//   the layouts transformers uses for the architecture (GPT-2's `Conv1D` weights stay [in, out], as PEFTKit holds
//   them; a tied LM head is not written, as `save_pretrained` does not), plus the files the caller passes along
//   (tokenizer files copied from the folder the model came from).
// - A GGUF file of architecture `llama` for llama.cpp: the metadata keys its loader reads, the tokenizer metadata
//   the caller passes along (carried over from the GGUF file the tokenizer came from), matrices in F32 or F16
//   (norms and biases stay F32, as llama.cpp's converter keeps them), the rows of every query and key projection
//   in GGUF's interleaved RoPE order (row h·d + 2j + s holds Hugging Face row h·d + s·d/2 + j; the inverse of what
//   `GGUFModel.swift` undoes on load).
//
// Both are written all or nothing: the folder through a staging folder swapped into place, the GGUF file through a
// temporary file renamed over the path.

/// The file format `Model.saveModel(to:format:)` writes.
public enum ModelFormat: Sendable, Equatable {
    /// A Hugging Face model folder (`config.json` + `model.safetensors`, F32) that transformers and `Model.load` read.
    case huggingFace
    /// One GGUF file (architecture `llama`) that llama.cpp and `Model.load` read, matrices in the given precision.
    case gguf(GGUFPrecision)
}

/// The number format of the matrices of a saved GGUF model (1-D tensors are always F32).
public enum GGUFPrecision: String, Sendable, CaseIterable {
    case f32, f16
}

/// What a saved model carries besides its weights, gathered by `Model` from where its tokenizer came from.
struct ModelSaveExtras {
    /// GGUF `tokenizer.*` metadata (with the chat template) to write into a GGUF file.
    var ggufTokenizer: [(String, GGUFValue)]? = nil
    /// Where a tokenizer that has no GGUF form came from (a Hugging Face folder), for the refusal message.
    var tokenizerWithoutGGUFForm: String? = nil
    /// Files placed beside the weights of a Hugging Face folder (tokenizer files, chat template).
    var folderFiles: [(name: String, bytes: [UInt8])] = []
}

/// One base tensor as the model computes with it now, readable a block of rows at a time in fp32.
struct ExportTensor {
    enum Source {
        case f32(UnsafePointer<Float>)
        /// [out, in] in Hugging Face row order (the loader already restored it).
        case quantized(QuantizedMatrix)
    }

    let spec: TensorSpec
    let source: Source

    /// Rows of the row-major tensor (a 1-D tensor is one row).
    var rows: Int { spec.shape.count == 1 ? 1 : spec.shape[0] }
    var rowLength: Int { spec.shape.count == 1 ? spec.shape[0] : spec.shape.dropFirst().reduce(1, *) }
    var count: Int { spec.shape.reduce(1, *) }

    /// Copies `n` rows from row `first` into `out`, in fp32.
    func read(_ first: Int, _ n: Int, into out: UnsafeMutablePointer<Float>) {
        switch source {
        case .f32(let p): out.update(from: p + first * rowLength, count: n * rowLength)
        case .quantized(let q): q.dequantizeRows(first, n, into: out)
        }
    }
}

extension Engine {
    /// Every base tensor of the architecture's table, in its order, pointing at what the model uses now: a merged
    /// copy where an adapter is merged, the trained block under full fine-tuning, the GGUF blocks where a weight is
    /// kept quantized.
    func exportTensors() throws -> [ExportTensor] {
        let W = config.architecture.weights
        var f32: [String: UnsafePointer<Float>] = [:]
        for (name, t) in weights.named { f32[name] = UnsafePointer(t.data) }
        var quantized: [String: QuantizedMatrix] = [:]
        for (name, m) in weights.quantized { quantized[name] = m }
        for l in 0..<config.numLayers {
            for site in W.sites {
                guard let lin = weights.linear(l, site), let module = W.module(site, layer: l) else { continue }
                if let w = lin.f32Weight {
                    f32[module + ".weight"] = UnsafePointer(w)
                    quantized[module + ".weight"] = nil
                }
                if let b = lin.bias { f32[module + ".bias"] = UnsafePointer(b) }
            }
        }
        return try W.tensors(config).map { spec in
            if let q = quantized[spec.name] { return ExportTensor(spec: spec, source: .quantized(q)) }
            guard let p = f32[spec.name] else { throw PEFTKitError.state("base tensor '\(spec.name)' is missing") }
            return ExportTensor(spec: spec, source: .f32(p))
        }
    }

    /// Writes the base model to `path` in `format` (see `Model.saveModel(to:format:)`).
    func saveModel(to path: String, format: ModelFormat, extras: ModelSaveExtras) throws {
        guard !path.isEmpty else { throw PEFTKitError.invalidArgument("empty path") }
        if let a = activeName, let slot = adapters.first(where: { $0.name == a }), !slot.merged {
            throw PEFTKitError.state("adapter '\(a)' is active but not merged, and a saved model holds only the base "
                + "weights: merge it first (LoRA, IA3) or deactivate it to save the base alone")
        }
        let tensors = try exportTensors()
        switch format {
        case .huggingFace:
            try saveHuggingFaceFolder(tensors, directory: path, extras: extras)
        case .gguf(let precision):
            let writer = try ggufModelWriter(tensors, precision: precision, extras: extras)
            if pathKind(path) == .directory {
                throw PEFTKitError.io("cannot write the GGUF file '\(path)': it is a directory")
            }
            try writeFileAtomically(path: path) { fd in try writer.write(to: fd) }
        }
    }

    // MARK: Hugging Face

    private func saveHuggingFaceFolder(_ tensors: [ExportTensor], directory: String, extras: ModelSaveExtras) throws {
        let config = try configJSON(for: self.config)
        let header = try safeTensorsHeader(tensors)
        var files: [(name: String, write: (Int32) throws -> Void)] = []
        for f in extras.folderFiles where f.name != "config.json" && f.name != WeightSet.singleFileName {
            let bytes = f.bytes
            files.append((f.name, { fd in try writeAll(fd, bytes) }))
        }
        files.append((WeightSet.singleFileName, { fd in
            let out = BufferedFileWriter(fd: fd)
            try out.append(header)
            try Self.writeRows(tensors, out)
            try out.flush()
        }))
        files.append(("config.json", { fd in try writeAll(fd, config) }))  // names the model: last
        try replaceFilesTogether(directory: directory, files: files)
    }

    /// The safetensors header (8-byte length + JSON padded with spaces to a multiple of 8) for F32 `tensors` in order.
    private func safeTensorsHeader(_ tensors: [ExportTensor]) throws -> [UInt8] {
        var json = "{\"__metadata__\":{\"format\":\"pt\"}"
        var offset = 0
        for t in tensors {
            let end = offset + 4 * t.count
            json += "," + jsonQuoted(t.spec.name) + ":{\"dtype\":\"F32\",\"shape\":["
                + t.spec.shape.map(String.init).joined(separator: ",") + "],\"data_offsets\":[\(offset),\(end)]}"
            offset = end
        }
        json += "}"
        var header = Array(json.utf8)
        header += [UInt8](repeating: 0x20, count: (header.count + 7) / 8 * 8 - header.count)
        var out: [UInt8] = []
        withUnsafeBytes(of: UInt64(header.count).littleEndian) { out += $0 }
        return out + header
    }

    /// The tensors' fp32 values in order, little-endian: fp32 memory as it is, blocks widened a few rows at a time.
    private static func writeRows(_ tensors: [ExportTensor], _ out: BufferedFileWriter) throws {
        for t in tensors {
            switch t.source {
            case .f32(let p):
                try out.append(UnsafeRawBufferPointer(start: p, count: 4 * t.count))
            case .quantized:
                let block = max(1, min(t.rows, (1 << 16) / max(1, t.rowLength)))
                let scratch = try Storage.allocate(floats: block * t.rowLength)
                var r = 0
                while r < t.rows {
                    let n = min(block, t.rows - r)
                    t.read(r, n, into: scratch.floats)
                    try out.append(UnsafeRawBufferPointer(start: scratch.base, count: 4 * n * t.rowLength))
                    r += n
                }
            }
        }
    }

    // MARK: GGUF

    private func ggufModelWriter(_ tensors: [ExportTensor], precision: GGUFPrecision,
                                 extras: ModelSaveExtras) throws -> GGUFStreamWriter {
        let c = config
        guard c.architecture == .llama else {
            throw PEFTKitError.unsupported("GGUF models are written for the Llama architecture only (this is \(c.architecture)): "
                + "save it as a Hugging Face folder")
        }
        if extras.ggufTokenizer == nil, let origin = extras.tokenizerWithoutGGUFForm {
            throw PEFTKitError.unsupported("the model's tokenizer was read from \(origin), and PEFTKit writes GGUF tokenizer "
                + "metadata only by carrying over a GGUF file's: attach the tokenizer of the same model's GGUF file "
                + "(Model.loadTokenizer(path:)), remove the tokenizer to write weights only, or save a Hugging Face folder "
                + "and convert it with llama.cpp's convert_hf_to_gguf.py")
        }
        func u32(_ v: Int) -> GGUFValue { .uint32(UInt32(v)) }
        var w = GGUFStreamWriter()
        w.metadata = [
            ("general.architecture", .string("llama")),
            ("general.file_type", u32(precision == .f32 ? 0 : 1)),  // llama_ftype ALL_F32 / MOSTLY_F16
            ("llama.vocab_size", u32(c.vocabSize)),
            ("llama.context_length", u32(c.maxPositions)),
            ("llama.embedding_length", u32(c.hiddenSize)),
            ("llama.block_count", u32(c.numLayers)),
            ("llama.feed_forward_length", u32(c.intermediateSize)),
            ("llama.attention.head_count", u32(c.numHeads)),
            ("llama.attention.head_count_kv", u32(c.numKVHeads)),
            ("llama.attention.key_length", u32(c.headDim)),
            ("llama.attention.value_length", u32(c.headDim)),
            ("llama.rope.dimension_count", u32(c.headDim)),
            ("llama.attention.layer_norm_rms_epsilon", .float32(c.normEps)),
            ("llama.rope.freq_base", .float32(c.ropeTheta)),
        ]
        w.metadata += extras.ggufTokenizer ?? []
        for t in tensors {
            guard let name = t.spec.gguf else { throw PEFTKitError.unsupported("tensor '\(t.spec.name)' has no GGUF name") }
            let format: GGUFTensorFormat = t.spec.shape.count == 2 && precision == .f16 ? .f16 : .f32
            let heads = LlamaWeights.ggufRoPEHeads(t.spec.name, c)
            let hd = c.headDim, half = hd / 2
            let rows: (Int, Int, UnsafeMutablePointer<Float>) throws -> Void
            if let heads, t.spec.shape.count == 2 {
                guard t.rows == heads * hd else { throw PEFTKitError.state("tensor '\(t.spec.name)' has \(t.rows) rows, not \(heads)×\(hd)") }
                rows = { first, n, out in
                    for i in 0..<n {  // GGUF row h·d + 2j + s ← Hugging Face row h·d + s·d/2 + j
                        let r = first + i, h = r / hd, j = (r % hd) / 2, s = r % 2
                        t.read(h * hd + s * half + j, 1, into: out + i * t.rowLength)
                    }
                }
            } else if heads != nil {  // a query/key bias: the same order over its elements
                rows = { _, _, out in
                    let src = try Storage.allocate(floats: t.count)
                    t.read(0, 1, into: src.floats)
                    for r in 0..<t.count {
                        let h = r / hd, j = (r % hd) / 2, s = r % 2
                        out[r] = src.floats[h * hd + s * half + j]
                    }
                }
            } else {
                rows = { first, n, out in t.read(first, n, into: out) }
            }
            let dims: [Int] = t.spec.shape.count == 1 ? [t.count] : [t.rowLength, t.rows]
            w.tensors.append(.init(name: name, dimensions: dims, format: format, rows: rows))
        }
        return w
    }
}
