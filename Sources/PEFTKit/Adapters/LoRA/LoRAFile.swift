// LoRA in HF PEFT's files: `adapter_config.json` with `peft_type` "LORA", and tensors
// `base_model.model.<module>.lora_A.weight` [r, in] / `….lora_B.weight` [out, r] for every layout (GPT-2's
// Conv1D included: the config then says `fan_in_fan_out`).

enum LoRASchema: AdapterConfigSchema {
    static let known: Set<String> = [
        "r", "lora_alpha", "lora_dropout", "use_rslora", "target_modules", "layers_to_transform", "bias",
        "use_dora", "lora_bias", "rank_pattern", "alpha_pattern", "modules_to_save", "exclude_modules",
        "layer_replication", "target_parameters", "trainable_token_indices",
        // Inert unless their switch is on: Megatron's module path, QA-LoRA's group size (use_qalora).
        "megatron_core", "qalora_group_size",
        // PEFTKit's own: LoRA+'s ratio (PEFT takes it as an argument of create_loraplus_optimizer).
        "loraplus_lr_ratio",
    ]

    static func claims(_ o: [String: JSONValue]) -> Bool { o["peft_type"] == .string("LORA") }

    static func parse(_ o: [String: JSONValue], model: ModelConfig, context: AdapterContext, source: String) throws -> AdapterConfig {
        let f = ConfigFields(object: o, source: source)
        try checkPEFTCommon(f, model)
        if try f.bool("lora_bias") == true { throw f.refuse("lora_bias") }
        if let b = try f.string("bias"), b != "none" { throw f.refuse("bias '\(b)'") }
        for key in ["rank_pattern", "alpha_pattern", "layer_replication", "target_parameters", "exclude_modules"]
        where !(o[key]?.isNeutral ?? true) {
            throw f.refuse(key)
        }
        var initWeights = LoRAInit.standard
        if case .bool(false)? = o["init_lora_weights"] {
            initWeights = .random
        } else if case .string(let s)? = o["init_lora_weights"] {
            // PEFT's own tests: "pissa..." by prefix, "olora" in any case.
            if s == "pissa" {
                initWeights = .pissa
            } else if s.lowercased() == "olora" {
                initWeights = .olora
            } else if s.hasPrefix("pissa_niter_") {
                throw f.refuse("init_lora_weights '\(s)' (PiSSA from a randomized SVD; PEFTKit computes the exact SVD: use 'pissa')")
            } else {
                throw f.refuse("init_lora_weights '\(s)' (PEFTKit initialises LoRA as PEFT's default, true, or as 'pissa' or 'olora')")
            }
        }
        guard let r = try f.int("r") else { throw f.bad("LoRA config has no 'r'") }
        // No target_modules: PEFT's default for the architecture.
        let targets = try f.moduleSpec("target_modules") ?? .names(LoRAConfig.defaultTargets(model.architecture))
        try checkConfigKeys(o, known: known, source: source)
        let (sites, layers) = try resolveModuleSpec(targets, layers: try f.intList("layers_to_transform"), model: model, source: source)
        var c = LoRAConfig()
        c.rank = r
        c.alpha = Float(try f.double("lora_alpha") ?? 8)
        c.dropout = Float(try f.double("lora_dropout") ?? 0)
        c.useRSLoRA = try f.bool("use_rslora") ?? false
        c.useDoRA = try f.bool("use_dora") ?? false
        c.initLoRAWeights = initWeights
        c.loraPlusRatio = try f.double("loraplus_lr_ratio").map { Float($0) }
        c.targets = sites.map { $0.shortName(model.architecture) }
        c.layers = layers.count == model.numLayers ? nil : layers
        if let seed = try f.int("seed") { c.seed = UInt64(truncatingIfNeeded: seed) }
        try c.validate(model)
        return .lora(c)
    }

    static func parameterCount(_ c: LoRAConfig, model: ModelConfig) throws -> Int {
        let names = c.targets.isEmpty ? LoRAConfig.defaultTargets(model.architecture) : c.targets
        let sites = try resolveTargets(names, arch: model.architecture, what: "LoRA")
        let layers = c.layers?.count ?? model.numLayers
        return sites.reduce(0) { n, s in
            let (i, o) = s.shape(model)
            return n + layers * (c.rank * (i + o) + (c.useDoRA ? o : 0))
        }
    }
}

extension LoRAAdapter: SavableAdapter, MergeableAdapter {
    var fileFormat: AdapterFileFormat { .peft }

    func fileConfig(name: String) -> [String: JSONValue] {
        let arch = model.architecture, c = config
        var o = peftCommonFields(model)
        o.merge([
            "peft_type": .string("LORA"), "r": .int(c.rank), "lora_alpha": pythonNumber(c.alpha),
            "lora_dropout": .double(decimalDouble(c.dropout)), "use_rslora": .bool(c.useRSLoRA),
            "target_modules": .array(sites.map { .string($0.shortName(arch)) }),
            "layers_to_transform": peftLayerList(units.map { $0.layer }, model), "layers_pattern": .null,
            "fan_in_fan_out": .bool(arch == .gpt2), "bias": .string("none"), "init_lora_weights": c.initLoRAWeights.peftValue,
            "use_dora": .bool(c.useDoRA), "lora_bias": .bool(false), "rank_pattern": .object([:]),
            "alpha_pattern": .object([:]), "exclude_modules": .null, "layer_replication": .null,
        ]) { $1 }
        if let r = c.loraPlusRatio { o["loraplus_lr_ratio"] = pythonNumber(r) }
        return o
    }

    func fileTensorSlots(name: String) -> [FileTensorSlot] {
        let r = config.rank
        return units.flatMap { u in
            let key = peftModuleKey(u.layer, u.site, model)
            var s = [FileTensorSlot(name: key + ".lora_A.weight", shape: [r, u.inF], offset: u.a),
                     FileTensorSlot(name: key + ".lora_B.weight", shape: [u.outF, r], offset: u.b)]
            // PEFT saves DoRA's magnitude without the ".weight" of its parameter name.
            if u.m >= 0 { s.append(FileTensorSlot(name: key + ".lora_magnitude_vector", shape: [u.outF], offset: u.m)) }
            return s
        }
    }

    /// Keys of another adapter that PEFT writes into the same file (`….lora_A.<name>.weight`).
    func isForeignFileTensor(_ key: String) -> Bool {
        let parts = key.split(separator: ".")
        if parts.count >= 2 && parts[parts.count - 2] == "lora_magnitude_vector" { return true }
        return parts.count >= 3 && ["lora_A", "lora_B"].contains(parts[parts.count - 3]) && parts.last == "weight"
    }

    func mergeEdits() -> [MergeEdit] {
        units.map { u in
            MergeEdit(layer: u.layer, site: u.site) { w, _, transposed, _, _ in
                self.delta(u, transposed: transposed, into: w, sign: 1)
                // DoRA: each output row rescaled to its magnitude (the bias is not scaled, as in PEFT).
                if let d = self.dora { d.rescaleMerged(u, m: self.params.floats + u.m, weight: w, transposed: transposed) }
            }
        }
    }
}

extension LoRAAdapter: TrainingRandomState {
    var trainingRng: Rng {
        get { dropRng }
        set { dropRng = newValue }
    }
}
