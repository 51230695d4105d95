// The engine's side of adapter files and JSON configs: which adapter, under which name. The formats
// themselves belong to the methods (Adapters/).

extension Engine {
    /// What adapters may read of the base model: token embeddings (prompt tuning's token init).
    func adapterContext(tokenize: ((String) throws -> [Int32])? = nil) -> AdapterContext {
        let w = weights
        return AdapterContext(embeddingRow: { id, out in w.embeddingRow(Int(id), into: out) }, tokenize: tokenize)
    }

    /// Attaches an adapter from the JSON text of an `adapter_config.json` (see `AdapterConfig(json:model:)`).
    func attachAdapter(name: String, json: [UInt8], tokenize: ((String) throws -> [Int32])?) throws {
        try Engine.validateName(name)
        guard !adapters.contains(where: { $0.name == name }) else {
            throw PEFTKitError.state("an adapter named '\(name)' is already attached")
        }
        let context = adapterContext(tokenize: tokenize)
        let config = try AdapterConfig.parse(json: json, model: config, context: context, source: "adapter config JSON")
        adapters.append(try AdapterSlot(name: name, adapter: try AdapterRegistry.make(config, model: self.config, context: context)))
    }

    func saveAdapter(name: String, directory: String) throws {
        try saveAdapterFolder(try adapter(named: name).adapter, name: name, directory: directory)
    }

    func loadAdapter(directory: String, name: String?) throws -> String {
        let (ad, nameInFile) = try readAdapterFolder(directory, model: config, context: adapterContext())
        let newName = name ?? nameInFile
        try Engine.validateName(newName)
        guard !adapters.contains(where: { $0.name == newName }) else {
            throw PEFTKitError.state("an adapter named '\(newName)' is already attached")
        }
        adapters.append(try AdapterSlot(name: newName, adapter: ad))
        return newName
    }
}
