// IA3 in HF PEFT's files: `peft_type` "IA3"; tensors `base_model.model.<module>.ia3_l`, [out, 1], or [1, in]
// for feed-forward modules (scaled on the input).

enum IA3Schema: AdapterConfigSchema {
    static let known: Set<String> = ["target_modules", "feedforward_modules", "layers_to_transform", "modules_to_save",
                                     "exclude_modules"]

    static func claims(_ o: [String: JSONValue]) -> Bool { o["peft_type"] == .string("IA3") }

    static func parse(_ o: [String: JSONValue], model: ModelConfig, context: AdapterContext, source: String) throws -> AdapterConfig {
        let f = ConfigFields(object: o, source: source)
        try checkPEFTCommon(f, model)
        if !(o["exclude_modules"]?.isNeutral ?? true) { throw f.refuse("exclude_modules") }
        try checkConfigKeys(o, known: known, source: source)
        // No target_modules / feedforward_modules: PEFT's defaults for the architecture.
        let defaults = try IA3Adapter.resolve(IA3Config(), model)
        let arch = model.architecture
        let targets = try f.moduleSpec("target_modules") ?? .names(defaults.sites.map { $0.shortName(arch) })
        let (sites, layers) = try resolveModuleSpec(targets, layers: try f.intList("layers_to_transform"), model: model, source: source)
        let ffSpec = try f.moduleSpec("feedforward_modules") ?? .names(defaults.feedforward.filter { sites.contains($0) }.map { $0.shortName(arch) })
        let ff = try resolveFeedForward(ffSpec, among: sites, model: model, source: source)
        var c = IA3Config()
        c.targets = sites.map { $0.shortName(arch) }
        c.feedforward = ff.map { $0.shortName(arch) }
        c.layers = layers.count == model.numLayers ? nil : layers
        return .ia3(c)
    }

    static func parameterCount(_ c: IA3Config, model: ModelConfig) throws -> Int {
        let (sites, ff) = try IA3Adapter.resolve(c, model)
        let layers = c.layers?.count ?? model.numLayers
        return sites.reduce(0) { n, s in let (i, o) = s.shape(model); return n + layers * (ff.contains(s) ? i : o) }
    }
}

extension IA3Adapter: SavableAdapter, MergeableAdapter {
    var fileFormat: AdapterFileFormat { .peft }

    func fileConfig(name: String) -> [String: JSONValue] {
        let arch = model.architecture
        var sites: [LinearSite] = [], ff: [LinearSite] = []
        for u in units where !sites.contains(u.site) {
            sites.append(u.site)
            if u.onInput { ff.append(u.site) }
        }
        var o = peftCommonFields(model)
        o.merge([
            "peft_type": .string("IA3"), "target_modules": .array(sites.map { .string($0.shortName(arch)) }),
            "feedforward_modules": .array(ff.map { .string($0.shortName(arch)) }),
            "fan_in_fan_out": .bool(arch == .gpt2), "init_ia3_weights": .bool(true), "exclude_modules": .null,
        ]) { $1 }
        // PEFT's IA3 has no layer selection: a subset is written as a list it does not read (PEFTKit does).
        if Set(units.map { $0.layer }).count != model.numLayers {
            o["layers_to_transform"] = peftLayerList(units.map { $0.layer }, model)
        }
        return o
    }

    func fileTensorSlots(name: String) -> [FileTensorSlot] {
        units.map { u in
            FileTensorSlot(name: peftModuleKey(u.layer, u.site, model) + ".ia3_l", shape: u.onInput ? [1, u.width] : [u.width, 1],
                           offset: u.offset)
        }
    }

    func isForeignFileTensor(_ key: String) -> Bool {
        let parts = key.split(separator: ".")
        return parts.count >= 2 && parts[parts.count - 2] == "ia3_l"
    }

    func mergeEdits() -> [MergeEdit] {
        units.map { u in
            let v = params.floats + u.offset
            return MergeEdit(layer: u.layer, site: u.site) { w, b, transposed, I, O in
                // Input scaling scales column i of [out, in] (row i of [in, out]); output scaling row o and the bias.
                for o in 0..<O {
                    for i in 0..<I {
                        let s = u.onInput ? v[i] : v[o]
                        if transposed { w[i * O + o] *= s } else { w[o * I + i] *= s }
                    }
                }
                if !u.onInput, let b { for o in 0..<O { b[o] *= v[o] } }
            }
        }
    }
}
