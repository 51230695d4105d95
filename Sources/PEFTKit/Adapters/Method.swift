// What a method folder provides besides its hooks. Each method under Adapters/<Method>/ owns
//   - its configuration, read from the ecosystem's own `adapter_config.json` schema (PEFT's for LoRA, IA3,
//     prefix and prompt tuning; AdapterHub's for bottleneck adapters) by a `AdapterConfigSchema`;
//   - its tensors and their names in the saved file, its merge into a frozen linear, its parameter count;
//   - any extra training state a checkpoint must keep (`TrainingRandomState`).
// `Registry.swift` lists the methods; nothing outside Adapters/ names a concrete method type.

/// The two adapter folder formats: Hugging Face PEFT's and AdapterHub's.
enum AdapterFileFormat: Sendable {
    /// `adapter_config.json` + `adapter_model.safetensors`.
    case peft
    /// `adapter_config.json` + `adapter.safetensors`.
    case adapterHub

    static let configFile = "adapter_config.json"

    var weightsFile: String {
        switch self {
        case .peft: return "adapter_model.safetensors"
        case .adapterHub: return "adapter.safetensors"
        }
    }
}

/// A tensor as a method saves it. `data` points into the adapter and is valid while the adapter lives.
struct SavedTensor {
    let name: String
    let shape: [Int]
    let data: UnsafeBufferPointer<Float>
}

/// Where a saved tensor lives in the adapter's flat parameter block.
struct FileTensorSlot {
    let name: String
    let shape: [Int]
    let offset: Int
}

/// One edit of a frozen linear's weight (and bias) by a merge: applied to copies, never to the originals.
struct MergeEdit {
    let layer: Int
    let site: LinearSite
    /// Edits `weight` ([out, in], or [in, out] when `transposed`) and `bias` ([out]) in place, with `sign` +1 to
    /// merge. Methods whose merge is not additive are never unmerged through this: the originals are restored.
    let apply: (_ weight: UnsafeMutablePointer<Float>, _ bias: UnsafeMutablePointer<Float>?, _ transposed: Bool,
                _ inFeatures: Int, _ outFeatures: Int) -> Void
}

/// An adapter with a folder format. The method's file (`<Method>File.swift`) conforms its adapter class.
protocol SavableAdapter: Adapter {
    /// The folder format the method saves in.
    var fileFormat: AdapterFileFormat { get }
    /// The `adapter_config.json` object of this adapter saved under `name`.
    func fileConfig(name: String) -> [String: JSONValue]
    /// Where each saved tensor lives in `params` (for a file that is a plain view of the parameters).
    func fileTensorSlots(name: String) -> [FileTensorSlot]
    /// The tensors a save writes (default: the slots).
    func fileTensors(name: String) -> [SavedTensor]
    /// Fills `params` from a saved file's tensors; returns the names it read (default: the slots).
    func readFileTensors(_ st: SafeTensorsFile, name: String, path: String) throws -> Set<String>
    /// Tensors of other adapters that a multi-adapter file may hold next to this one's (ignored on load).
    func isForeignFileTensor(_ key: String) -> Bool
}

extension SavableAdapter {
    func fileTensors(name: String) -> [SavedTensor] {
        fileTensorSlots(name: name).map {
            SavedTensor(name: $0.name, shape: $0.shape, data: UnsafeBufferPointer(start: params.floats + $0.offset, count: $0.shape.reduce(1, *)))
        }
    }

    func readFileTensors(_ st: SafeTensorsFile, name: String, path: String) throws -> Set<String> {
        var used = Set<String>()
        for s in fileTensorSlots(name: name) {
            try copyFileTensor(st, key: s.name, shape: s.shape, into: params.floats + s.offset, path: path)
            used.insert(s.name)
        }
        return used
    }

    func isForeignFileTensor(_ key: String) -> Bool { false }
}

/// An adapter that runs over a rewritten base weight (LoRA's PiSSA and OLoRA inits): the engine applies its edits to
/// copies of the base linears when it is attached and restores the originals when it is removed.
protocol BaseRewritingAdapter: Adapter {
    /// Edits turning each original weight into the residual the adapter runs over (biases are not touched).
    func baseEdits() -> [MergeEdit]
    /// The adapter's file config and tensors rewritten for the original base weights (PEFT's conversion), nil when
    /// this adapter did not rewrite the base.
    func convertedFile(name: String) throws -> (config: [String: JSONValue], tensors: [SavedTensor])?
}

/// An adapter that can be folded into the frozen linears it touches.
protocol MergeableAdapter: Adapter {
    func mergeEdits() -> [MergeEdit]
}

/// Adapters that draw random numbers while training (dropout) expose the generator, so that checkpoints keep
/// it and a refused step can rewind it.
protocol TrainingRandomState: AnyObject {
    var trainingRng: Rng { get set }
}

/// What a method's configuration needs from the base model besides its shape.
struct AdapterContext {
    /// Copies the input embedding of token `id` ([hidden] floats) into `out` (prompt tuning's token init).
    var embeddingRow: ((Int32, UnsafeMutablePointer<Float>) -> Void)?
    /// The model's tokenizer, for configs that name a text (PEFT's `prompt_tuning_init_text`).
    var tokenize: ((String) throws -> [Int32])?
    /// The base model's frozen linear at (layer, site), as the model holds it unmerged (DoRA's norms,
    /// PiSSA/OLoRA's decompositions). Adapters read it and never write it.
    var frozenLinear: ((Int, LinearSite) -> FrozenLinear?)?

    init(embeddingRow: ((Int32, UnsafeMutablePointer<Float>) -> Void)? = nil, tokenize: ((String) throws -> [Int32])? = nil,
         frozenLinear: ((Int, LinearSite) -> FrozenLinear?)? = nil) {
        self.embeddingRow = embeddingRow
        self.tokenize = tokenize
        self.frozenLinear = frozenLinear
    }
}

/// A method's reader of `adapter_config.json`.
protocol AdapterConfigSchema {
    /// Whether `object` (a whole adapter_config.json, or the dict of a config class) describes this method.
    static func claims(_ object: [String: JSONValue]) -> Bool
    /// The configuration `object` describes, for a model of shape `model`. Throws `unsupported` naming a key
    /// PEFTKit does not implement, `format` for a value that cannot be right.
    static func parse(_ object: [String: JSONValue], model: ModelConfig, context: AdapterContext, source: String) throws -> AdapterConfig
    /// The configuration of the adapter that holds what a saved folder of `config` holds (a projected prefix
    /// saves only its output, so its folder loads as a plain prefix).
    static func configForSavedWeights(_ config: AdapterConfig) -> AdapterConfig
}

extension AdapterConfigSchema {
    static func configForSavedWeights(_ config: AdapterConfig) -> AdapterConfig { config }
}

// MARK: - Reading config objects

/// Checks the keys of a config object: `known` keys are read by the method; keys every config may carry
/// without changing the math are accepted; any other key is accepted only with a neutral value (null, false,
/// 0, empty), as newer PEFT versions add fields whose defaults change nothing. Otherwise `unsupported` names it.
func checkConfigKeys(_ object: [String: JSONValue], known: Set<String>, source: String) throws {
    for (key, value) in object.sorted(by: { $0.key < $1.key }) {
        if known.contains(key) || inertConfigKeys.contains(key) || value.isNeutral { continue }
        throw PEFTKitError.unsupported("\(source): key '\(key)' (= \(value.serialized())) is not supported by PEFTKit")
    }
}

/// Keys of PEFT's and AdapterHub's configs that describe the file, not the computation.
private let inertConfigKeys: Set<String> = [
    "base_model_name_or_path", "revision", "task_type", "inference_mode", "auto_mapping", "peft_version",
    "peft_type", "architecture", "version", "model_name", "model_class", "model_type", "name", "hidden_size",
    "fan_in_fan_out", "init_lora_weights", "init_ia3_weights", "init_weights_seed", "seed",
    "layers_pattern", "tokenizer_name_or_path", "tokenizer_kwargs", "num_transformer_submodules",
]

/// Typed access to a config object's fields, with messages that name the source and the key.
struct ConfigFields {
    let object: [String: JSONValue]
    let source: String

    func has(_ key: String) -> Bool {
        if let v = object[key], v != .null { return true }
        return false
    }

    func int(_ key: String) throws -> Int? {
        switch object[key] {
        case nil, .null?: return nil
        case .int(let i)?: return i
        case .double(let d)? where d == d.rounded() && abs(d) < 1e15: return Int(d)
        default: throw PEFTKitError.format("\(source): '\(key)' must be an integer")
        }
    }

    func double(_ key: String) throws -> Double? {
        switch object[key] {
        case nil, .null?: return nil
        case .int(let i)?: return Double(i)
        case .double(let d)?: return d
        default: throw PEFTKitError.format("\(source): '\(key)' must be a number")
        }
    }

    func bool(_ key: String) throws -> Bool? {
        switch object[key] {
        case nil, .null?: return nil
        case .bool(let b)?: return b
        default: throw PEFTKitError.format("\(source): '\(key)' must be true or false")
        }
    }

    func string(_ key: String) throws -> String? {
        switch object[key] {
        case nil, .null?: return nil
        case .string(let s)?: return s
        default: throw PEFTKitError.format("\(source): '\(key)' must be a string")
        }
    }

    /// A list of strings, or one string (a pattern).
    func moduleSpec(_ key: String) throws -> ModuleSpec? {
        switch object[key] {
        case nil, .null?: return nil
        case .string(let s)?: return .pattern(s)
        case .array(let a)?:
            return .names(try a.map {
                guard case .string(let s) = $0 else { throw PEFTKitError.format("\(source): '\(key)' must list strings") }
                return s
            })
        default: throw PEFTKitError.format("\(source): '\(key)' must be a list of module names or a pattern")
        }
    }

    /// An integer or a list of integers (PEFT's `layers_to_transform`).
    func intList(_ key: String) throws -> [Int]? {
        switch object[key] {
        case nil, .null?: return nil
        case .int(let i)?: return [i]
        case .array(let a)?:
            return try a.map {
                guard case .int(let i) = $0 else { throw PEFTKitError.format("\(source): '\(key)' must list integers") }
                return i
            }
        default: throw PEFTKitError.format("\(source): '\(key)' must be an integer or a list of integers")
        }
    }

    func refuse(_ what: String) -> PEFTKitError { .unsupported("\(source): \(what) is not supported") }
    func bad(_ what: String) -> PEFTKitError { .format("\(source): \(what)") }
}

/// `target_modules` / `feedforward_modules`: names (suffix match on dotted module paths) or one regular
/// expression (whole-name match), as PEFT reads them.
public enum ModuleSpec: Sendable, Equatable {
    case names([String])
    case pattern(String)
}
