import FoundationEssentials

/// AdapterHub's `adapter_config.json` for bottleneck adapters (`BnConfig`), with the keys AdapterHub writes.
struct AdapterHubFile: Codable {
    var config: AdapterHubBnConfig
    var hidden_size: Int?
    var model_class: String?
    var model_name: String?
    var model_type: String?
    var name: String?
    var version: String?
}

/// A JSON value that is either a number or something else (AdapterHub allows per-layer dicts and strings
/// in a few numeric fields).
enum NumberOrOther: Codable, Equatable {
    case number(Double)
    case other
    init(from decoder: Decoder) throws {
        let c = try decoder.singleValueContainer()
        if let d = try? c.decode(Double.self) { self = .number(d) } else { self = .other }
    }
    func encode(to encoder: Encoder) throws {
        var c = encoder.singleValueContainer()
        switch self {
        case .number(let d): try c.encode(d)
        case .other: try c.encodeNil()
        }
    }
}

/// `residual_before_ln` is a bool or the string "post_add".
enum BoolOrString: Codable, Equatable {
    case bool(Bool)
    case string(String)
    init(from decoder: Decoder) throws {
        let c = try decoder.singleValueContainer()
        if let b = try? c.decode(Bool.self) { self = .bool(b) } else { self = .string(try c.decode(String.self)) }
    }
    func encode(to encoder: Encoder) throws {
        var c = encoder.singleValueContainer()
        switch self {
        case .bool(let b): try c.encode(b)
        case .string(let s): try c.encode(s)
        }
    }
}

struct AdapterHubBnConfig: Codable {
    var architecture: String?
    var mh_adapter: Bool
    var output_adapter: Bool
    var reduction_factor: NumberOrOther
    var non_linearity: String
    var original_ln_before: Bool
    var original_ln_after: Bool
    var residual_before_ln: BoolOrString
    var adapter_residual_before_ln: Bool
    var ln_before: Bool
    var ln_after: Bool
    var init_weights: String
    var is_parallel: Bool
    var scaling: NumberOrOther
    var use_gating: Bool
    var dropout: Double?
    var leave_out: [Int]?
    var phm_layer: Bool?
    var inv_adapter: String?
    var inv_adapter_reduction_factor: Double?
    var cross_adapter: Bool?
    var stochastic_depth: Double?
    // PHM fields, written with AdapterHub's defaults so the file loads there unchanged.
    var phm_dim: Int?
    var factorized_phm_W: Bool?
    var shared_W_phm: Bool?
    var shared_phm_rule: Bool?
    var factorized_phm_rule: Bool?
    var phm_c_init: String?
    var phm_init_range: Double?
    var learn_phm: Bool?
    var hypercomplex_nonlinearity: String?
    var phm_rank: Int?
    var phm_bias: Bool?
}

extension BottleneckAdapter {
    /// AdapterHub's module path prefix of layer `l` for a model type.
    static func layerPrefix(_ arch: Architecture, _ l: Int) -> String {
        switch arch {
        case .gpt2: return "transformer.h.\(l)."
        case .llama: return "model.layers.\(l)."
        }
    }

    /// Tensor names and shapes of every parameter, in AdapterHub's naming, with their offsets.
    func namedParameters(adapterName: String, arch: Architecture) -> [(name: String, shape: [Int], offset: Int)] {
        var out: [(String, [Int], Int)] = []
        let C = hidden, r = bottleneck
        for u in units {
            let site = u.site == .attention ? "attention_adapters" : "output_adapters"
            let p = BottleneckAdapter.layerPrefix(arch, u.layer) + "\(site).adapters.\(adapterName)."
            // With ln_before the adapter_down Sequential is [LayerNorm, Linear, act].
            let lin = u.lnBeforeW >= 0 ? "adapter_down.1" : "adapter_down.0"
            if u.lnBeforeW >= 0 {
                out.append((p + "adapter_down.0.weight", [C], u.lnBeforeW))
                out.append((p + "adapter_down.0.bias", [C], u.lnBeforeB))
            }
            out.append((p + "\(lin).weight", [r, C], u.downW))
            out.append((p + "\(lin).bias", [r], u.downB))
            out.append((p + "adapter_up.weight", [C, r], u.upW))
            out.append((p + "adapter_up.bias", [C], u.upB))
            if u.lnAfterW >= 0 {
                out.append((p + "adapter_norm_after.weight", [C], u.lnAfterW))
                out.append((p + "adapter_norm_after.bias", [C], u.lnAfterB))
            }
        }
        return out
    }

    /// Aliases AdapterHub may also write for the same tensor (a module registered under two names).
    static func aliases(_ name: String, lnBefore: Bool) -> [String] {
        if lnBefore, name.hasSuffix("adapter_down.0.weight") || name.hasSuffix("adapter_down.0.bias") {
            return [name.replacing("adapter_down.0.", with: "adapter_norm_before.")]
        }
        return []
    }
}

extension Engine {
    static let adapterConfigFile = "adapter_config.json"
    static let adapterWeightsFile = "adapter.safetensors"

    func saveAdapter(name: String, directory: String) throws {
        let slot = try adapter(named: name)
        guard let a = slot.adapter as? BottleneckAdapter else {
            return try savePEFTAdapter(slot: slot, directory: directory)
        }
        let c = a.config
        let allLayers = Set(0..<config.numLayers)
        let kept = Set(a.units.map { $0.layer })
        // AdapterHub derives the width as hidden // reduction_factor; write a factor that gives ours back.
        var rf = Double(config.hiddenSize) / Double(a.bottleneck)
        if Int((Double(config.hiddenSize) / rf).rounded(.down)) != a.bottleneck { rf = Double(config.hiddenSize) / (Double(a.bottleneck) + 0.5) }
        let bn: [String: JSONValue] = [
            "adapter_residual_before_ln": .bool(false), "cross_adapter": .bool(false), "dropout": .double(0),
            "factorized_phm_W": .bool(true), "factorized_phm_rule": .bool(false),
            "hypercomplex_nonlinearity": .string("glorot-uniform"), "init_weights": .string(c.initWeights.rawValue),
            "init_weights_seed": .null, "inv_adapter": .null, "inv_adapter_reduction_factor": .null,
            "is_parallel": .bool(false), "learn_phm": .bool(true),
            "leave_out": .array(allLayers.subtracting(kept).sorted().map { .int($0) }),
            "ln_after": .bool(c.lnAfter), "ln_before": .bool(c.lnBefore), "mh_adapter": .bool(c.mhAdapter),
            "non_linearity": .string(c.nonLinearity.rawValue), "original_ln_after": .bool(true),
            "original_ln_before": .bool(c.originalLnBefore), "output_adapter": .bool(c.outputAdapter),
            "phm_bias": .bool(true), "phm_c_init": .string("normal"), "phm_dim": .int(4), "phm_init_range": .double(0.0001),
            "phm_layer": .bool(false), "phm_rank": .int(1),
            "reduction_factor": rf == rf.rounded() ? .int(Int(rf)) : .double(rf),
            "residual_before_ln": .bool(true), "scaling": .double(decimalDouble(c.scaling)), "shared_W_phm": .bool(false),
            "shared_phm_rule": .bool(true), "stochastic_depth": .double(0), "use_gating": .bool(false),
        ]
        let file: JSONValue = .object([
            "config": .object(bn), "hidden_size": .int(config.hiddenSize),
            "model_class": .string(config.architecture == .gpt2 ? "GPT2LMHeadModel" : "LlamaForCausalLM"),
            "model_name": .string(""), "model_type": .string(config.architecture == .gpt2 ? "gpt2" : "llama"),
            "name": .string(name), "version": .string("adapters.1.3.0"),
        ])
        let json = Array(file.serialized().utf8)
        let params = a.params.floats
        var tensors: [(name: String, shape: [Int], data: [Float])] = []
        for (n, shape, off) in a.namedParameters(adapterName: name, arch: config.architecture) {
            let data = Array(UnsafeBufferPointer(start: params + off, count: shape.reduce(1, *)))
            tensors.append((n, shape, data))
            // AdapterHub registers ln_before twice (adapter_down.0 and adapter_norm_before) and expects both.
            for alias in BottleneckAdapter.aliases(n, lnBefore: c.lnBefore) { tensors.append((alias, shape, data)) }
        }
        let entries = tensors.map { SafeTensorsWriter.Entry(name: $0.name, shape: $0.shape, payload: .f32($0.data)) }
        let weights = try SafeTensorsWriter.writer(entries: entries, metadata: ["format": "pt"],
                                                   path: directory + "/" + Engine.adapterWeightsFile)
        try replaceFilesTogether(directory: directory, files: [
            (Engine.adapterWeightsFile, weights), (Engine.adapterConfigFile, { fd in try writeAll(fd, json) }),
        ])
    }

    func loadAdapter(directory: String, name: String?) throws -> String {
        if pathKind(directory + "/" + Engine.peftWeightsFile) == .file {
            return try loadPEFTAdapter(directory: directory, name: name)
        }
        let cfgPath = directory + "/" + Engine.adapterConfigFile
        let bytes = try readWholeFile(path: cfgPath, maxBytes: 1 << 20)
        let file: AdapterHubFile
        do {
            file = try JSONDecoder().decode(AdapterHubFile.self, from: Data(bytes))
        } catch {
            throw PEFTKitError.format("'\(cfgPath)' is not an AdapterHub bottleneck adapter config: \(error)")
        }
        let bn = file.config
        func unsupported(_ what: String) -> PEFTKitError { .unsupported("'\(cfgPath)': \(what) is not supported") }
        if let arch = bn.architecture, arch != "bottleneck" { throw unsupported("adapter architecture '\(arch)'") }
        guard !bn.is_parallel else { throw unsupported("is_parallel = true") }
        guard !bn.use_gating else { throw unsupported("use_gating = true") }
        guard bn.phm_layer != true else { throw unsupported("phm_layer = true") }
        guard bn.inv_adapter == nil else { throw unsupported("inv_adapter") }
        guard bn.original_ln_after else { throw unsupported("original_ln_after = false") }
        if bn.original_ln_before && bn.residual_before_ln != .bool(true) { throw unsupported("residual_before_ln other than true") }
        if bn.ln_after && bn.adapter_residual_before_ln { throw unsupported("adapter_residual_before_ln with ln_after") }
        if let h = file.hidden_size, h != config.hiddenSize {
            throw PEFTKitError.format("adapter in '\(directory)' was made for hidden size \(h), this model has \(config.hiddenSize)")
        }
        guard case .number(let rf) = bn.reduction_factor, rf.isFinite, rf > 0 else { throw unsupported("a non-numeric reduction_factor") }
        guard case .number(let sc) = bn.scaling, sc.isFinite else { throw unsupported("a non-numeric scaling") }
        let act: Activation
        switch bn.non_linearity.lowercased() {
        case "relu": act = .relu
        case "gelu": act = .gelu
        case "gelu_new", "gelu_pytorch_tanh": act = .geluTanh
        case "swish", "silu": act = .swish
        default: throw unsupported("non_linearity '\(bn.non_linearity)'")
        }
        var c = BottleneckConfig()
        c.mhAdapter = bn.mh_adapter
        c.outputAdapter = bn.output_adapter
        c.originalLnBefore = bn.original_ln_before
        // A tiny factor must fail here, not trap converting a huge width to Int.
        let width = (Double(config.hiddenSize) / rf).rounded(.down)
        guard width <= Double(1 << 16) else {
            throw PEFTKitError.format("'\(cfgPath)': reduction_factor \(rf) gives a bottleneck of \(width) for hidden size \(config.hiddenSize), more than 65536")
        }
        c.bottleneckSize = max(1, Int(width))
        c.reductionFactor = Float(rf)
        c.nonLinearity = act
        c.scaling = Float(sc)
        c.lnBefore = bn.ln_before
        c.lnAfter = bn.ln_after
        c.initWeights = AdapterInit(rawValue: bn.init_weights) ?? .bert
        let leave = Set(bn.leave_out ?? [])
        for l in leave { try require(l >= 0, "'\(cfgPath)': negative layer in leave_out") }
        let layers = (0..<config.numLayers).filter { !leave.contains($0) }
        guard !layers.isEmpty else { throw PEFTKitError.format("'\(cfgPath)': leave_out removes every layer") }
        c.layers = layers
        let fileName = file.name ?? "adapter"
        let newName = name ?? fileName
        try Engine.validateName(newName)
        guard !adapters.contains(where: { $0.name == newName }) else {
            throw PEFTKitError.state("an adapter named '\(newName)' is already attached")
        }
        // The config alone must not make us allocate: the weights file has to be large enough for it first.
        let st = try SafeTensorsFile(path: directory + "/" + Engine.adapterWeightsFile)
        let (r, C) = (c.bottleneckSize, config.hiddenSize)
        let unitFloats = 2 * r * C + r + C + (c.lnBefore ? 2 * C : 0) + (c.lnAfter ? 2 * C : 0)
        let units = layers.count * ((c.mhAdapter ? 1 : 0) + (c.outputAdapter ? 1 : 0))
        guard units * unitFloats * 2 <= st.storage.byteCount else {  // 2 bytes: the smallest float dtype
            throw PEFTKitError.format("'\(directory)/\(Engine.adapterWeightsFile)' (\(st.storage.byteCount) bytes) is too small "
                + "for the \(units * unitFloats) parameters '\(cfgPath)' describes")
        }
        let ad = try BottleneckAdapter(config: c, model: config)
        var used = Set<String>()
        let p = ad.params.floats
        for (n, shape, off) in ad.namedParameters(adapterName: fileName, arch: config.architecture) {
            var key = n
            if st.info(key) == nil, let alt = BottleneckAdapter.aliases(n, lnBefore: c.lnBefore).first(where: { st.info($0) != nil }) { key = alt }
            guard let info = st.info(key) else {
                throw PEFTKitError.format("'\(directory)/\(Engine.adapterWeightsFile)' lacks tensor '\(n)'")
            }
            guard info.shape == shape else {
                throw PEFTKitError.format("tensor '\(key)' has shape \(info.shape), expected \(shape) for this model")
            }
            let t = try st.tensor(key)
            (p + off).update(from: t.data, count: t.count)
            used.insert(key)
            for a in BottleneckAdapter.aliases(n, lnBefore: c.lnBefore) { used.insert(a) }
        }
        return try attachLoaded(ad, name: newName, file: st, used: used, path: directory + "/" + Engine.adapterWeightsFile)
    }
}
