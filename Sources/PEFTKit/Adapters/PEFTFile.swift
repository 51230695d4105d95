import FoundationEssentials

// HF PEFT's adapter folder format for LoRA, IA3, prefix and prompt tuning: `adapter_config.json` (the
// PEFT config, keys sorted, two-space indent) and `adapter_model.safetensors` (F32, metadata
// {"format": "pt"}). Tensor names are PEFT's `named_parameters()` names without the adapter name:
//   LoRA    base_model.model.<module>.lora_A.weight [r, in], ….lora_B.weight [out, r] (every layout,
//           GPT-2's Conv1D included; the config says `fan_in_fan_out`)
//   IA3     base_model.model.<module>.ia3_l  [out, 1], or [1, in] for feed-forward modules
//   prefix  prompt_embeddings [virtual tokens, layers · 2 · kv width] (a projected prefix: its output)
//   prompt  prompt_embeddings [virtual tokens, hidden]
// Tests/Fixtures/peft/README.md records what PEFT itself reads and writes.

/// `target_modules` and `feedforward_modules`: a list of names (suffix match on dotted module paths) or
/// one regular expression (whole-name match).
enum PEFTModuleSpec: Decodable, Equatable {
    case names([String])
    case pattern(String)
    init(from decoder: Decoder) throws {
        let c = try decoder.singleValueContainer()
        if let s = try? c.decode(String.self) { self = .pattern(s) } else { self = .names(try c.decode([String].self)) }
    }
}

/// `layers_to_transform`: an int or a list of ints.
enum PEFTLayers: Decodable, Equatable {
    case one(Int)
    case list([Int])
    init(from decoder: Decoder) throws {
        let c = try decoder.singleValueContainer()
        if let i = try? c.decode(Int.self) { self = .one(i) } else { self = .list(try c.decode([Int].self)) }
    }
    var values: [Int] {
        switch self {
        case .one(let i): return [i]
        case .list(let l): return l
        }
    }
}

/// Whether a field holds a value (of any JSON type) other than null.
struct PEFTSet: Decodable {
    let isSet: Bool
    init(from decoder: Decoder) throws { isSet = !(try decoder.singleValueContainer().decodeNil()) }
}

/// The fields of a PEFT config PEFTKit reads. Unknown fields are ignored, as PEFT's own loader does for
/// fields of newer versions; fields that change the computation and PEFTKit does not implement are refused.
struct PEFTConfigFile: Decodable {
    var peft_type: String
    var task_type: String?
    var target_modules: PEFTModuleSpec?
    var layers_to_transform: PEFTLayers?
    var r: Int?
    var lora_alpha: Double?
    var lora_dropout: Double?
    var use_rslora: Bool?
    var bias: String?
    var use_dora: Bool?
    var lora_bias: Bool?
    var rank_pattern: [String: Double]?
    var alpha_pattern: [String: Double]?
    var modules_to_save: PEFTSet?
    var exclude_modules: PEFTSet?
    var layer_replication: PEFTSet?
    var target_parameters: PEFTSet?
    var trainable_token_indices: PEFTSet?
    var feedforward_modules: PEFTModuleSpec?
    var num_virtual_tokens: Int?
    var token_dim: Int?
    var num_layers: Int?
    var num_attention_heads: Int?
    var num_transformer_submodules: Int?
}

extension Engine {
    static let peftWeightsFile = "adapter_model.safetensors"
    static let peftEmbeddingsKey = "prompt_embeddings"

    /// PEFT's saved tensors of adapter `a` and where each lives in its parameter block (nil for a projected
    /// prefix, whose saved rows are computed, and for methods PEFT does not have).
    func peftLayout(_ a: Adapter) -> [(key: String, shape: [Int], offset: Int)]? {
        let arch = config.architecture
        func key(_ l: Int, _ s: LinearSite) -> String { "base_model.model." + s.module(arch, layer: l) }
        switch a {
        case let a as LoRAAdapter:
            let r = a.config.rank
            return a.units.flatMap { u in
                [(key(u.layer, u.site) + ".lora_A.weight", [r, u.inF], u.a), (key(u.layer, u.site) + ".lora_B.weight", [u.outF, r], u.b)]
            }
        case let a as IA3Adapter:
            return a.units.map { u in (key(u.layer, u.site) + ".ia3_l", u.onInput ? [1, u.width] : [u.width, 1], u.offset) }
        case let a as PrefixAdapter where !a.config.projection:
            return [(Engine.peftEmbeddingsKey, [a.P, a.width], 0)]
        case let a as PromptAdapter:
            return [(Engine.peftEmbeddingsKey, [a.config.virtualTokens, config.hiddenSize], 0)]
        default:
            return nil
        }
    }

    // MARK: saving

    func savePEFTAdapter(slot: AdapterSlot, directory: String) throws {
        let arch = config.architecture
        // What PEFT writes for every method; fields of the method follow.
        var cfg: [String: JSONValue] = [
            "auto_mapping": .null, "base_model_name_or_path": .null, "inference_mode": .bool(true),
            "modules_to_save": .null, "revision": .null, "task_type": .string("CAUSAL_LM"),
        ]
        let p = slot.adapter.params.floats
        var tensors: [(name: String, shape: [Int], data: UnsafeBufferPointer<Float>)] = (peftLayout(slot.adapter) ?? []).map {
            ($0.key, $0.shape, UnsafeBufferPointer(start: p + $0.offset, count: $0.shape.reduce(1, *)))
        }
        func layerList(_ layers: [Int]) -> JSONValue {
            Set(layers).count == config.numLayers ? .null : .array(Set(layers).sorted().map { .int($0) })
        }

        switch slot.adapter {
        case let a as LoRAAdapter:
            let c = a.config
            cfg.merge([
                "peft_type": .string("LORA"), "r": .int(c.rank), "lora_alpha": Engine.pythonNumber(c.alpha),
                "lora_dropout": .double(decimalDouble(c.dropout)), "use_rslora": .bool(c.useRSLoRA),
                "target_modules": .array(a.sites.map { .string($0.shortName(arch)) }),
                "layers_to_transform": layerList(a.units.map { $0.layer }), "layers_pattern": .null,
                "fan_in_fan_out": .bool(arch == .gpt2), "bias": .string("none"), "init_lora_weights": .bool(true),
                "use_dora": .bool(false), "lora_bias": .bool(false), "rank_pattern": .object([:]),
                "alpha_pattern": .object([:]), "exclude_modules": .null, "layer_replication": .null,
            ]) { $1 }
        case let a as IA3Adapter:
            var sites: [LinearSite] = [], ff: [LinearSite] = []
            for u in a.units where !sites.contains(u.site) {
                sites.append(u.site)
                if u.onInput { ff.append(u.site) }
            }
            cfg.merge([
                "peft_type": .string("IA3"), "target_modules": .array(sites.map { .string($0.shortName(arch)) }),
                "feedforward_modules": .array(ff.map { .string($0.shortName(arch)) }),
                "fan_in_fan_out": .bool(arch == .gpt2), "init_ia3_weights": .bool(true), "exclude_modules": .null,
            ]) { $1 }
            // PEFT's IA3 has no layer selection: a subset is written as a list it does not read (PEFTKit does).
            if Set(a.units.map { $0.layer }).count != config.numLayers {
                cfg["layers_to_transform"] = layerList(a.units.map { $0.layer })
            }
        case let a as PrefixAdapter:
            // The rows the model reads; for a projected prefix that is the MLP's output, which is all PEFT keeps.
            a.beginPass(training: false)
            cfg.merge([
                "peft_type": .string("PREFIX_TUNING"), "num_virtual_tokens": .int(a.P), "token_dim": .int(a.kvd),
                "num_attention_heads": .int(config.numKVHeads), "num_layers": .int(config.numLayers),
                "num_transformer_submodules": .int(1), "encoder_hidden_size": .int(a.hidden),
                "prefix_projection": .bool(a.config.projection),
            ]) { $1 }
            if a.config.projection {
                tensors = [(Engine.peftEmbeddingsKey, [a.P, a.width], UnsafeBufferPointer(start: a.flatPrefix, count: a.P * a.width))]
            }
        case let a as PromptAdapter:
            let n = a.config.virtualTokens, C = config.hiddenSize
            cfg.merge([
                "peft_type": .string("PROMPT_TUNING"), "num_virtual_tokens": .int(n), "token_dim": .int(C),
                "num_attention_heads": .int(config.numHeads), "num_layers": .int(config.numLayers),
                "num_transformer_submodules": .int(1), "prompt_tuning_init": .string("RANDOM"),
                "prompt_tuning_init_text": .null, "tokenizer_name_or_path": .null, "tokenizer_kwargs": .null,
            ]) { $1 }
        default:
            throw PEFTKitError.unsupported("HF PEFT has no file format for \(slot.adapter.method.rawValue) adapters")
        }
        tensors.sort { $0.name < $1.name }
        let weights = try SafeTensorsWriter.writer(entries: SafeTensorsWriter.bufferEntries(tensors), metadata: ["format": "pt"],
                                                   path: directory + "/" + Engine.peftWeightsFile)
        let json = Array(JSONValue.object(cfg).serialized().utf8)
        try replaceFilesTogether(directory: directory, files: [
            (Engine.peftWeightsFile, weights), (Engine.adapterConfigFile, { fd in try writeAll(fd, json) }),
        ])
    }

    /// A float setting as Python would write it: an int when integral (PEFT's `lora_alpha` is usually one).
    static func pythonNumber(_ x: Float) -> JSONValue {
        let d = decimalDouble(x)
        return d == d.rounded() && abs(d) < 1e15 ? .int(Int(d)) : .double(d)
    }

    // MARK: loading

    func loadPEFTAdapter(directory: String, name: String?) throws -> String {
        let cfgPath = directory + "/" + Engine.adapterConfigFile
        let weightsPath = directory + "/" + Engine.peftWeightsFile
        let c = try decodeJSON(PEFTConfigFile.self, from: try readWholeFile(path: cfgPath, maxBytes: 1 << 20), source: cfgPath)
        let newName = name ?? "default"
        try Engine.validateName(newName)
        guard !adapters.contains(where: { $0.name == newName }) else {
            throw PEFTKitError.state("an adapter named '\(newName)' is already attached")
        }
        func refuse(_ what: String) -> PEFTKitError { .unsupported("'\(cfgPath)': \(what) is not supported") }
        func bad(_ what: String) -> PEFTKitError { .format("'\(cfgPath)': \(what)") }
        if let t = c.task_type, t != "CAUSAL_LM" { throw refuse("task_type '\(t)' (PEFTKit models are causal LMs)") }
        if c.modules_to_save?.isSet == true { throw refuse("modules_to_save (fully trained extra modules)") }
        if c.exclude_modules?.isSet == true { throw refuse("exclude_modules") }
        if c.trainable_token_indices?.isSet == true { throw refuse("trainable_token_indices") }

        let st = try SafeTensorsFile(path: weightsPath)
        // The config alone must not make us allocate: the weights file has to be large enough first.
        func requireBytes(forFloats n: Int) throws {
            guard n <= st.storage.byteCount / 2 else {  // 2 bytes: the smallest float dtype
                throw PEFTKitError.format("'\(weightsPath)' (\(st.storage.byteCount) bytes) is too small for the \(n) parameters '\(cfgPath)' describes")
            }
        }
        let adapter: Adapter
        /// Keys of another adapter that PEFT 0.18 writes into the same file (`….lora_A.<name>.weight`).
        var foreign: (String) -> Bool = { _ in false }

        switch c.peft_type {
        case "LORA":
            if c.use_dora == true { throw refuse("DoRA (use_dora)") }
            if c.lora_bias == true { throw refuse("lora_bias") }
            if let b = c.bias, b != "none" { throw refuse("bias '\(b)'") }
            if let rp = c.rank_pattern, !rp.isEmpty { throw refuse("rank_pattern") }
            if let ap = c.alpha_pattern, !ap.isEmpty { throw refuse("alpha_pattern") }
            if c.layer_replication?.isSet == true { throw refuse("layer_replication") }
            if c.target_parameters?.isSet == true { throw refuse("target_parameters") }
            guard let r = c.r else { throw bad("LoRA config has no 'r'") }
            guard let targets = c.target_modules else { throw bad("LoRA config has no 'target_modules'") }
            let (sites, layers) = try peftTargets(targets, layers: c.layers_to_transform, source: cfgPath)
            var lc = LoRAConfig()
            lc.rank = r
            lc.alpha = Float(c.lora_alpha ?? 8)
            lc.dropout = Float(c.lora_dropout ?? 0)
            lc.useRSLoRA = c.use_rslora ?? false
            lc.targets = sites.map { $0.shortName(config.architecture) }
            lc.layers = layers.count == config.numLayers ? nil : layers
            try lc.validate(config)
            var n = 0
            for s in sites { let (i, o) = LoRAAdapter.dims(s, config); n += layers.count * r * (i + o) }
            try requireBytes(forFloats: n)
            adapter = try LoRAAdapter(config: lc, model: config)
            foreign = { k in
                let parts = k.split(separator: ".")
                return parts.count >= 3 && ["lora_A", "lora_B"].contains(parts[parts.count - 3]) && parts.last == "weight"
            }
        case "IA3":
            guard let targets = c.target_modules else { throw bad("IA3 config has no 'target_modules'") }
            let (sites, layers) = try peftTargets(targets, layers: c.layers_to_transform, source: cfgPath)
            let ffSites = try peftFeedForward(c.feedforward_modules ?? .names([]), among: sites, source: cfgPath)
            var ic = IA3Config()
            ic.targets = sites.map { $0.shortName(config.architecture) }
            // An empty list would mean "PEFT's default"; a target set without feed-forward modules has none.
            ic.feedforward = ffSites.map { $0.shortName(config.architecture) }
            ic.layers = layers.count == config.numLayers ? nil : layers
            var n = 0
            for s in sites { let (i, o) = LoRAAdapter.dims(s, config); n += layers.count * (ffSites.contains(s) ? i : o) }
            try requireBytes(forFloats: n)
            adapter = try IA3Adapter(config: ic, model: config, noFeedForward: ffSites.isEmpty)
            foreign = { k in
                let parts = k.split(separator: ".")
                return parts.count >= 2 && parts[parts.count - 2] == "ia3_l"
            }
        case "PREFIX_TUNING", "PROMPT_TUNING":
            guard let nv = c.num_virtual_tokens else { throw bad("no 'num_virtual_tokens'") }
            guard nv > 0 && nv < config.maxPositions else {
                throw bad("num_virtual_tokens \(nv) is out of range 1..<\(config.maxPositions) for this model")
            }
            if let s = c.num_transformer_submodules, s != 1 { throw refuse("num_transformer_submodules \(s) (encoder-decoder models)") }
            if let l = c.num_layers, l != config.numLayers { throw bad("made for \(l) layers, this model has \(config.numLayers)") }
            let prefix = c.peft_type == "PREFIX_TUNING"
            // Prefix tuning stores keys and values per kv head (PEFT rewrites token_dim under GQA).
            let dim = prefix ? config.numKVHeads * config.headDim : config.hiddenSize
            if let d = c.token_dim, d != dim { throw bad("token_dim \(d) does not fit this model (expected \(dim))") }
            let heads = prefix ? config.numKVHeads : config.numHeads
            if let h = c.num_attention_heads, h != heads { throw bad("num_attention_heads \(h) does not fit this model (expected \(heads))") }
            let width = prefix ? 2 * config.numLayers * dim : dim
            try requireBytes(forFloats: nv * width)
            if prefix {
                var pc = PrefixConfig()
                pc.virtualTokens = nv
                adapter = try PrefixAdapter(config: pc, model: config)
            } else {
                var pc = PromptConfig()
                pc.virtualTokens = nv
                adapter = try PromptAdapter(config: pc, model: config, embeddings: weights.tokenEmbedding)
            }
        default:
            throw refuse("PEFT method '\(c.peft_type)' (PEFTKit reads LORA, IA3, PREFIX_TUNING and PROMPT_TUNING)")
        }

        let p = adapter.params.floats
        var used = Set<String>()
        for e in peftLayout(adapter) ?? [] {
            guard let info = st.info(e.key) else {
                throw PEFTKitError.format("'\(weightsPath)' lacks tensor '\(e.key)' that '\(cfgPath)' implies")
            }
            guard info.shape == e.shape else {
                throw PEFTKitError.format("tensor '\(e.key)' in '\(weightsPath)' has shape \(info.shape), expected \(e.shape) for this model")
            }
            let t = try st.tensor(e.key)
            (p + e.offset).update(from: t.data, count: t.count)
            used.insert(e.key)
        }
        return try attachLoaded(adapter, name: newName, file: st, used: used.union(st.names.filter(foreign)), path: weightsPath)
    }

    /// The last steps of every adapter loader: the file holds no tensor the adapter left unused (`used`), every
    /// weight is finite, then the adapter is attached under `name`.
    func attachLoaded(_ adapter: Adapter, name: String, file st: SafeTensorsFile, used: Set<String>, path: String) throws -> String {
        let extra = st.names.filter { !used.contains($0) }
        guard extra.isEmpty else {
            throw PEFTKitError.format("'\(path)' has tensors this adapter does not use: \(extra.prefix(3))")
        }
        let p = adapter.params.floats
        for i in 0..<adapter.parameterCount where !p[i].isFinite {
            throw PEFTKitError.numerical("adapter file '\(path)' holds a non-finite weight")
        }
        adapters.append(try AdapterSlot(name: name, adapter: adapter))
        return name
    }

    /// The (site, layer) product a PEFT target spec selects, matched as PEFT matches module names: a list
    /// entry matches a module whose name equals it or ends with "." + entry (then filtered by
    /// `layers_to_transform`); a string is a regular expression over the whole name, or "all-linear".
    func peftTargets(_ spec: PEFTModuleSpec, layers: PEFTLayers?, source: String) throws -> ([LinearSite], [Int]) {
        let arch = config.architecture
        let allowed = layers.map { Set($0.values) }
        var pairs = Set<Int>()  // layer * LinearSite.count + site
        switch spec {
        case .names(let names):
            guard !names.isEmpty else { throw PEFTKitError.format("'\(source)': target_modules is empty") }
            for n in names {
                var found = false
                for l in 0..<config.numLayers {
                    for s in LinearSite.sites(arch) {
                        let full = s.module(arch, layer: l)
                        if full == n { found = true; pairs.insert(l * LinearSite.count + s.rawValue); continue }
                        guard full.hasSuffix("." + n) else { continue }
                        found = true
                        if allowed?.contains(l) ?? true { pairs.insert(l * LinearSite.count + s.rawValue) }
                    }
                }
                guard found else {
                    throw PEFTKitError.unsupported("'\(source)': target module '\(n)' matches no linear PEFTKit adapts in a \(arch) model "
                        + "(choose from \(LinearSite.sites(arch).map { $0.shortName(arch) }))")
                }
            }
        case .pattern(let pattern):
            if pattern == "all-linear" {
                for l in 0..<config.numLayers { for s in LinearSite.sites(arch) { pairs.insert(l * LinearSite.count + s.rawValue) } }
            } else {
                guard pattern.utf8.count <= 4096 else { throw PEFTKitError.format("'\(source)': target_modules pattern is too long") }
                let re: Regex<AnyRegexOutput>
                do { re = try Regex(pattern) } catch {
                    throw PEFTKitError.unsupported("'\(source)': target_modules pattern '\(pattern)' is not a regular expression PEFTKit reads (\(error))")
                }
                for l in 0..<config.numLayers {
                    for s in LinearSite.sites(arch) where (try? re.wholeMatch(in: s.module(arch, layer: l))) != nil {
                        pairs.insert(l * LinearSite.count + s.rawValue)
                    }
                }
            }
        }
        guard !pairs.isEmpty else { throw PEFTKitError.format("'\(source)': the targets select no module of this model") }
        let sites = Set(pairs.map { $0 % LinearSite.count }).sorted().map { LinearSite(rawValue: $0)! }
        let ls = Set(pairs.map { $0 / LinearSite.count }).sorted()
        guard pairs.count == sites.count * ls.count else {
            throw PEFTKitError.unsupported("'\(source)': the targets adapt different modules in different layers; "
                + "PEFTKit adapts the same modules in every chosen layer")
        }
        return (sites, ls)
    }

    /// IA3's feed-forward modules among `sites`: a list entry matches a module whose name ends with it (PEFT's
    /// plain suffix test), a string is a whole-name regular expression. Each must be a target.
    func peftFeedForward(_ spec: PEFTModuleSpec, among sites: [LinearSite], source: String) throws -> [LinearSite] {
        let arch = config.architecture
        var out: [LinearSite] = []
        for s in LinearSite.sites(arch) {
            let full = s.module(arch, layer: 0)
            let hit: Bool
            switch spec {
            case .names(let names): hit = names.contains { full.hasSuffix($0) }
            case .pattern(let p):
                guard let re = try? Regex(p) else { throw PEFTKitError.unsupported("'\(source)': feedforward_modules pattern '\(p)' is not readable") }
                hit = (try? re.wholeMatch(in: full)) != nil
            }
            guard hit else { continue }
            guard sites.contains(s) else {
                throw PEFTKitError.format("'\(source)': feed-forward module '\(s.shortName(arch))' is not a target module")
            }
            out.append(s)
        }
        return out
    }
}
