// Adapter folders, whatever the method: the config object and tensors come from the method (Method.swift);
// this file writes them together and reads them back, checking everything before anything is attached.

/// The file format an adapter is saved in.
public enum AdapterFormat: String, Sendable, CaseIterable {
    /// The method's ecosystem format, a folder: Hugging Face PEFT's (LoRA, IA3, prefix, prompt) or AdapterHub's
    /// (bottleneck).
    case native
    /// llama.cpp's GGUF LoRA adapter, one file (LoRA on Llama models): what `llama-cli --lora` loads.
    case gguf
    /// A PiSSA or OLoRA adapter converted to a plain LoRA of rank 2r over the ORIGINAL base weights, in PEFT's
    /// format (what PEFT's `save_pretrained(path_initial_model_for_weight_conversion=...)` writes); any other
    /// adapter as `.native`.
    case convertedLoRA = "converted-lora"
}

/// Copies tensor `key` of `st` (any float dtype, widened) into `out`, after checking its shape.
func copyFileTensor(_ st: SafeTensorsFile, key: String, shape: [Int], into out: UnsafeMutablePointer<Float>, path: String) throws {
    guard let info = st.info(key) else { throw PEFTKitError.format("'\(path)' lacks tensor '\(key)'") }
    guard info.shape == shape else {
        throw PEFTKitError.format("tensor '\(key)' in '\(path)' has shape \(info.shape), expected \(shape) for this model")
    }
    let t = try st.tensor(key)
    out.update(from: t.data, count: t.count)
}

/// Writes `adapter` under `name` into `directory` in its method's format; the config and weights files are
/// replaced together (never a mix of an old and a new save).
/// What a save adds for the model around the adapter (an encoder's task head): tensors and config fields in the
/// adapter's own files (PEFT's `modules_to_save`), `rename` of the adapter's tensor names (the `bert.` of a head
/// model), and files of their own (AdapterHub's head files), all written together with the adapter's.
struct AdapterFileExtra {
    var tensors: [SavedTensor] = []
    var config: [String: JSONValue] = [:]
    var rename: (String) -> String = { $0 }
    var files: [(name: String, write: (Int32) throws -> Void)] = []
}

/// Writes the adapter's folder in its method's format (`extra`: see `AdapterFileExtra`).
/// `converted`: a PiSSA / OLoRA adapter as PEFT's conversion to a plain LoRA of the original base (LoRAInit.swift).
func saveAdapterFolder(_ adapter: Adapter, name: String, directory: String, extra: AdapterFileExtra? = nil,
                       converted: Bool = false) throws {
    guard let adapter = adapter as? SavableAdapter else {
        throw PEFTKitError.unsupported("\(adapter.method.rawValue) adapters have no file format")
    }
    let format = adapter.fileFormat
    let conversion = converted ? try (adapter as? BaseRewritingAdapter)?.convertedFile(name: name) : nil
    var tensors = conversion?.tensors ?? adapter.fileTensors(name: name)
    if let extra {
        tensors = tensors.map { SavedTensor(name: extra.rename($0.name), shape: $0.shape, data: $0.data) } + extra.tensors
    }
    if format == .peft { tensors.sort { $0.name < $1.name } }
    let entries = tensors.map { SafeTensorsWriter.Entry(name: $0.name, shape: $0.shape, payload: .f32Buffer($0.data)) }
    let weights = try SafeTensorsWriter.writer(entries: entries, metadata: ["format": "pt"],
                                               path: directory + "/" + format.weightsFile)
    var config = conversion?.config ?? adapter.fileConfig(name: name)
    if let extra { config.merge(extra.config) { $1 } }
    let json = Array(JSONValue.object(config).serialized().utf8)
    try replaceFilesTogether(directory: directory, files: [
        (format.weightsFile, weights), (AdapterFileFormat.configFile, { fd in try writeAll(fd, json) }),
    ] + (extra?.files ?? []))
}

/// Where a PEFT file of an encoder's head model keeps the encoder's tensors.
let encoderHeadModelPrefix = "base_model.model.bert."

/// Reads an adapter folder (PEFT or AdapterHub, told apart by its weights file) for a model of shape `model`.
/// Returns the adapter and the name the folder gives it (AdapterHub's `name`; PEFT folders have none).
func readAdapterFolder(_ directory: String, model: ModelConfig, context: AdapterContext) throws -> (adapter: Adapter, name: String) {
    let format: AdapterFileFormat = pathKind(directory + "/" + AdapterFileFormat.peft.weightsFile) == .file ? .peft : .adapterHub
    let cfgPath = directory + "/" + AdapterFileFormat.configFile
    let weightsPath = directory + "/" + format.weightsFile
    let object = try JSONValue.parseObject(try readWholeFile(path: cfgPath, maxBytes: 1 << 20), source: "'\(cfgPath)'")
    let config = try AdapterRegistry.parse(object, model: model, context: context, source: "'\(cfgPath)'")
    guard config.method != .bottleneck || format == .adapterHub else {
        throw PEFTKitError.format("'\(cfgPath)' describes a bottleneck adapter but the folder holds \(format.weightsFile)")
    }
    let stored = AdapterRegistry.schema(config.method).configForSavedWeights(config)
    let nameInFile: String
    if case .string(let n)? = object["name"], format == .adapterHub { nameInFile = n } else { nameInFile = format == .peft ? "default" : "adapter" }

    var st = try SafeTensorsFile(path: weightsPath)
    // An encoder's head model (BertForSequenceClassification, ...) keeps the encoder under `bert.`: PEFT saves
    // `base_model.model.bert.encoder...`, read as the encoder's own names; its task head is the engine's.
    var headTensor: (String) -> Bool = { _ in false }
    if model.encoder != nil, format == .peft {
        st = try st.renamed { $0.hasPrefix(encoderHeadModelPrefix) ? "base_model.model." + $0.dropFirst(encoderHeadModelPrefix.count) : $0 }
        if case .array(let a)? = object["modules_to_save"], !a.isEmpty {
            // Tuner methods keep the head model under base_model.model., prompt learning under base_model.
            headTensor = { n in
                encoderHeadModules.contains { n.hasPrefix("base_model.model.\($0).") || n.hasPrefix("base_model.\($0).") }
            }
        }
    }
    // The config alone must not make us allocate: the weights file has to be large enough for it first.
    let n = try AdapterRegistry.parameterCount(stored, model: model)
    guard n <= st.storage.byteCount / 2 else {  // 2 bytes: the smallest float dtype
        throw PEFTKitError.format("'\(weightsPath)' (\(st.storage.byteCount) bytes) is too small for the \(n) parameters '\(cfgPath)' describes")
    }
    guard let adapter = try AdapterRegistry.make(stored, model: model, context: context) as? SavableAdapter else {
        throw PEFTKitError.unsupported("\(cfgPath): \(stored.method.rawValue) adapters have no file format")
    }
    let used = try adapter.readFileTensors(st, name: nameInFile, path: weightsPath)
    let extra = st.names.filter { !used.contains($0) && !adapter.isForeignFileTensor($0) && !headTensor($0) }
    guard extra.isEmpty else {
        throw PEFTKitError.format("'\(weightsPath)' has tensors this adapter does not use: \(extra.prefix(3))")
    }
    guard isAllFinite(adapter.params.floats, adapter.parameterCount) else {
        throw PEFTKitError.numerical("adapter file '\(weightsPath)' holds a non-finite weight")
    }
    adapter.parametersChanged()
    return (adapter, nameInFile)
}
