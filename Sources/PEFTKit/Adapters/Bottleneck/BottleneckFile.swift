// Bottleneck adapters in AdapterHub's files: `adapter_config.json` ({"config": <BnConfig dict>, "name": …,
// "hidden_size": …, …}) and `adapter.safetensors` with AdapterHub's module names, which carry the adapter's
// name. Attaching from JSON takes the same wrapper, a bare BnConfig dict (`SeqBnConfig().to_dict()`), or a
// preset name as AdapterHub spells it ("seq_bn", "double_seq_bn", "pfeiffer", "houlsby").

enum BottleneckSchema: AdapterConfigSchema {
    /// BnConfig's keys (AdapterHub 1.x).
    static let known: Set<String> = [
        "mh_adapter", "output_adapter", "reduction_factor", "non_linearity", "original_ln_before", "original_ln_after",
        "residual_before_ln", "adapter_residual_before_ln", "ln_before", "ln_after", "init_weights", "is_parallel",
        "scaling", "use_gating", "leave_out", "phm_dim", "factorized_phm_W", "shared_W_phm", "shared_phm_rule",
        "factorized_phm_rule", "phm_c_init", "phm_init_range", "learn_phm", "hypercomplex_nonlinearity", "phm_rank",
        "phm_bias", "config",
    ]

    static func claims(_ o: [String: JSONValue]) -> Bool {
        if o["architecture"] == .string("bottleneck") { return true }
        switch o["config"] {
        case .object(let inner)?: return inner["architecture"] == .string("bottleneck") || inner["mh_adapter"] != nil
        case .string(let s)?: return presets[s] != nil
        default: return o["mh_adapter"] != nil && o["peft_type"] == nil
        }
    }

    static let presets: [String: BottleneckConfig.Preset] = [
        "seq_bn": .pfeiffer, "pfeiffer": .pfeiffer, "double_seq_bn": .houlsby, "houlsby": .houlsby,
    ]

    static func parse(_ o: [String: JSONValue], model: ModelConfig, context: AdapterContext, source: String) throws -> AdapterConfig {
        // The file wrapper around the BnConfig dict, or the dict itself.
        var bn = o
        if let h = try ConfigFields(object: o, source: source).int("hidden_size"), h != model.hiddenSize {
            throw PEFTKitError.format("\(source): the adapter was made for hidden size \(h), this model has \(model.hiddenSize)")
        }
        switch o["config"] {
        case .object(let inner)?: bn = inner
        case .string(let name)?:
            guard let preset = presets[name] else { throw PEFTKitError.unsupported("\(source): adapter config '\(name)' is not supported") }
            // Next to a preset name only the file's own fields may stand.
            try checkConfigKeys(o.filter { !["config", "seed"].contains($0.key) }, known: [], source: source)
            var c = BottleneckConfig(preset: preset)
            if let seed = try ConfigFields(object: o, source: source).int("seed") { c.seed = UInt64(truncatingIfNeeded: seed) }
            try c.validate(numLayers: model.numLayers, hidden: model.hiddenSize)
            return .bottleneck(c)
        default: break
        }
        let f = ConfigFields(object: bn, source: source)
        if let arch = try f.string("architecture"), arch != "bottleneck" { throw f.refuse("adapter architecture '\(arch)'") }
        if try f.bool("is_parallel") == true { throw f.refuse("is_parallel = true") }
        if try f.bool("use_gating") == true { throw f.refuse("use_gating = true") }
        if try f.bool("phm_layer") == true { throw f.refuse("phm_layer = true") }
        if f.has("inv_adapter") { throw f.refuse("inv_adapter") }
        if try f.bool("original_ln_after") == false { throw f.refuse("original_ln_after = false") }
        try checkConfigKeys(bn, known: known, source: source)
        guard let mh = try f.bool("mh_adapter"), let out = try f.bool("output_adapter") else {
            throw f.bad("a bottleneck config needs 'mh_adapter' and 'output_adapter'")
        }
        let lnBefore = try f.bool("original_ln_before") ?? false
        if lnBefore {
            switch bn["residual_before_ln"] {
            case nil, .bool(true)?: break
            default: throw f.refuse("residual_before_ln other than true")
            }
        }
        var c = BottleneckConfig()
        c.mhAdapter = mh
        c.outputAdapter = out
        c.originalLnBefore = lnBefore
        c.lnBefore = try f.bool("ln_before") ?? false
        c.lnAfter = try f.bool("ln_after") ?? false
        if c.lnAfter, try f.bool("adapter_residual_before_ln") == true { throw f.refuse("adapter_residual_before_ln with ln_after") }
        guard bn["reduction_factor"] != nil else { throw f.bad("a bottleneck config needs 'reduction_factor'") }
        guard let rf = try? f.double("reduction_factor") else { throw f.refuse("a non-numeric reduction_factor") }
        guard rf.isFinite, rf > 0 else { throw f.bad("reduction_factor must be positive and finite, got \(rf)") }
        let sc: Double
        do { sc = try f.double("scaling") ?? 1 } catch { throw f.refuse("a non-numeric scaling") }
        guard sc.isFinite else { throw f.refuse("a non-finite scaling") }
        // A tiny factor must fail here, not trap converting a huge width to Int.
        let width = (Double(model.hiddenSize) / rf).rounded(.down)
        guard width <= Double(1 << 16) else {
            throw f.bad("reduction_factor \(rf) gives a bottleneck of \(width) for hidden size \(model.hiddenSize), more than 65536")
        }
        c.bottleneckSize = max(1, Int(width))
        c.reductionFactor = Float(rf)
        c.scaling = Float(sc)
        let name = try f.string("non_linearity") ?? "relu"
        switch name.lowercased() {
        case "relu": c.nonLinearity = .relu
        case "gelu": c.nonLinearity = .gelu
        case "gelu_new", "gelu_pytorch_tanh": c.nonLinearity = .geluTanh
        case "swish", "silu": c.nonLinearity = .swish
        default: throw f.refuse("non_linearity '\(name)'")
        }
        let initName = try f.string("init_weights") ?? "bert"
        guard let initWeights = AdapterInit(rawValue: initName) else { throw f.refuse("init_weights '\(initName)'") }
        c.initWeights = initWeights
        let leave = Set(try f.intList("leave_out") ?? [])
        for l in leave { try require(l >= 0, "\(source): negative layer in leave_out") }
        let layers = (0..<model.numLayers).filter { !leave.contains($0) }
        guard !layers.isEmpty else { throw f.bad("leave_out removes every layer") }
        c.layers = layers.count == model.numLayers ? nil : layers
        if let seed = try ConfigFields(object: o, source: source).int("seed") { c.seed = UInt64(truncatingIfNeeded: seed) }
        try c.validate(numLayers: model.numLayers, hidden: model.hiddenSize)
        return .bottleneck(c)
    }

    static func parameterCount(_ c: BottleneckConfig, model: ModelConfig) -> Int {
        let r = c.bottleneck(hidden: model.hiddenSize), C = model.hiddenSize
        let unitFloats = 2 * r * C + r + C + (c.lnBefore ? 2 * C : 0) + (c.lnAfter ? 2 * C : 0)
        return (c.layers?.count ?? model.numLayers) * ((c.mhAdapter ? 1 : 0) + (c.outputAdapter ? 1 : 0)) * unitFloats
    }
}

extension BottleneckAdapter {
    /// AdapterHub's module path prefix of layer `l` for a model type.
    static func layerPrefix(_ arch: Architecture, _ l: Int) -> String {
        switch arch {
        case .gpt2: return "transformer.h.\(l)."
        case .llama: return "model.layers.\(l)."
        case .bert: return "bert.encoder.layer.\(l)."
        }
    }

    /// Tensor names and shapes of every parameter, in AdapterHub's naming, with their offsets.
    func namedParameters(adapterName: String, arch: Architecture) -> [(name: String, shape: [Int], offset: Int)] {
        var out: [(String, [Int], Int)] = []
        let C = hidden, r = bottleneck
        for u in units {
            // BERT's units live in the modules they follow (`attention.output`, `output`), as AdapterHub's
            // BertSelfOutput / BertOutput mixins hold them; decoders use the hooked layer's own dicts.
            let site = arch == .bert ? (u.site == .attention ? "attention.output" : "output")
                : (u.site == .attention ? "attention_adapters" : "output_adapters")
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

extension BottleneckAdapter: SavableAdapter {
    var fileFormat: AdapterFileFormat { .adapterHub }

    func fileConfig(name: String) -> [String: JSONValue] {
        let c = config
        let allLayers = Set(0..<model.numLayers)
        let kept = Set(units.map { $0.layer })
        // AdapterHub derives the width as hidden // reduction_factor; write a factor that gives ours back.
        var rf = Double(model.hiddenSize) / Double(bottleneck)
        if Int((Double(model.hiddenSize) / rf).rounded(.down)) != bottleneck { rf = Double(model.hiddenSize) / (Double(bottleneck) + 0.5) }
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
        let (modelClass, modelType) = switch model.architecture {
        case .gpt2: ("GPT2LMHeadModel", "gpt2")
        case .llama: ("LlamaForCausalLM", "llama")
        case .bert: ("BertModel", "bert")
        }
        return [
            "config": .object(bn), "hidden_size": .int(model.hiddenSize),
            "model_class": .string(modelClass), "model_name": .string(""), "model_type": .string(modelType),
            "name": .string(name), "version": .string("adapters.1.3.0"),
        ]
    }

    func fileTensorSlots(name: String) -> [FileTensorSlot] {
        namedParameters(adapterName: name, arch: model.architecture).map { FileTensorSlot(name: $0.name, shape: $0.shape, offset: $0.offset) }
    }

    /// AdapterHub registers ln_before twice (adapter_down.0 and adapter_norm_before) and expects both.
    func fileTensors(name: String) -> [SavedTensor] {
        fileTensorSlots(name: name).flatMap { s in
            let data = UnsafeBufferPointer(start: params.floats + s.offset, count: s.shape.reduce(1, *))
            return ([s.name] + BottleneckAdapter.aliases(s.name, lnBefore: config.lnBefore)).map {
                SavedTensor(name: $0, shape: s.shape, data: data)
            }
        }
    }

    /// Reads every parameter. A BERT adapter saved from a `BertModel` (no head) has its names without the
    /// `bert.` that head models (and PEFTKit) write; both spellings are read.
    func readFileTensors(_ st: SafeTensorsFile, name: String, path: String) throws -> Set<String> {
        var used = Set<String>()
        for s in fileTensorSlots(name: name) {
            var aliases = BottleneckAdapter.aliases(s.name, lnBefore: config.lnBefore)
            if model.architecture == .bert {
                aliases += ([s.name] + aliases).filter { $0.hasPrefix("bert.") }.map { String($0.dropFirst("bert.".count)) }
            }
            let key = st.info(s.name) != nil ? s.name : (aliases.first { st.info($0) != nil } ?? s.name)
            try copyFileTensor(st, key: key, shape: s.shape, into: params.floats + s.offset, path: path)
            used.insert(key)
            used.formUnion(aliases)
        }
        return used
    }
}
