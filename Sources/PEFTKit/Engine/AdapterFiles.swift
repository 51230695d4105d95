#if canImport(Glibc)
import Glibc
#endif

// The engine's side of adapter files and JSON configs: which adapter, under which name. The formats
// themselves belong to the methods (Adapters/).

extension Engine {
    /// What adapters may read of the base model: token embeddings (prompt tuning's token init).
    func adapterContext(tokenize: ((String) throws -> [Int32])? = nil) -> AdapterContext {
        // The linears as they are before any merge: a merge replaces them with copies and records the originals.
        var originals: [Int: FrozenLinear] = [:]
        for rec in merges {
            for r in rec.replaced where originals[r.layer * LinearSite.count + r.site.rawValue] == nil {
                if var lin = weights.linear(r.layer, r.site) {
                    lin.weight = r.weight
                    lin.bias = r.bias
                    originals[r.layer * LinearSite.count + r.site.rawValue] = lin
                }
            }
        }
        let w = weights
        return AdapterContext(embeddingRow: { id, out in w.embeddingRow(Int(id), into: out) }, tokenize: tokenize,
                              frozenLinear: { l, s in originals[l * LinearSite.count + s.rawValue] ?? w.linear(l, s) })
    }

    /// Attaches an adapter from the JSON text of an `adapter_config.json` (see `AdapterConfig(json:model:)`).
    func attachAdapter(name: String, json: [UInt8], tokenize: ((String) throws -> [Int32])?) throws {
        try Engine.validateName(name)
        guard !adapters.contains(where: { $0.name == name }) else {
            throw PEFTKitError.state("an adapter named '\(name)' is already attached")
        }
        let context = adapterContext(tokenize: tokenize)
        let config = try AdapterConfig.parse(json: json, model: config, context: context, source: "adapter config JSON")
        try appendSlot(try AdapterSlot(name: name, adapter: try AdapterRegistry.make(config, model: self.config, context: context)))
    }

    func saveAdapter(name: String, directory: String, format: AdapterFormat = .native) throws {
        let slot = try adapter(named: name), ad = slot.adapter
        switch format {
        case .native, .convertedLoRA:
            try saveAdapterFolder(ad, name: name, directory: directory, extra: try headFileExtra(slot),
                                  converted: format == .convertedLoRA)
            if slot.head == nil, (ad as? SavableAdapter)?.fileFormat == .adapterHub {
                // Head files an earlier save left would be read back as this adapter's head.
                for f in [adapterHubHeadConfigFile, adapterHubHeadWeightsFile] where pathKind(directory + "/" + f) == .file {
                    unlink(directory + "/" + f)
                }
            }
        case .gguf:
            let bytes = try ggufAdapterBytes(ad, name: name, baseTensorName: ggufName(ofHuggingFaceTensor:))
            try writeFileAtomically(path: directory, bytes: bytes)
        }
    }

    /// Reads an adapter folder, or a llama.cpp GGUF LoRA adapter when `directory` is a file ending in ".gguf".
    func loadAdapter(directory: String, name: String?) throws -> String {
        let (ad, nameInFile): (Adapter, String)
        var head: TaskHead? = nil
        if directory.hasSuffix(".gguf"), pathKind(directory) == .file {
            ad = try readGGUFAdapter(try GGUFFile(path: directory), model: config, baseTensorName: ggufName(ofHuggingFaceTensor:))
            nameInFile = "default"
        } else {
            (ad, nameInFile) = try readAdapterFolder(directory, model: config, context: adapterContext())
            head = try readHeadFile(directory)
        }
        let newName = name ?? nameInFile
        try Engine.validateName(newName)
        guard !adapters.contains(where: { $0.name == newName }) else {
            throw PEFTKitError.state("an adapter named '\(newName)' is already attached")
        }
        let slot = try AdapterSlot(name: newName, adapter: ad)
        if let head { try slot.attachHead(head) }
        try appendSlot(slot)
        return newName
    }
}
