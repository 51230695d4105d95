/// Configuration of any adapter method.
public enum AdapterConfig: Sendable, Equatable {
    case bottleneck(BottleneckConfig)
    case lora(LoRAConfig)
    case ia3(IA3Config)
    case prefix(PrefixConfig)
    case prompt(PromptConfig)

    public var method: AdapterMethod {
        switch self {
        case .bottleneck: return .bottleneck
        case .lora: return .lora
        case .ia3: return .ia3
        case .prefix: return .prefix
        case .prompt: return .prompt
        }
    }
}

/// A method's configuration type, usable wherever an `AdapterConfig` is expected.
public protocol AdapterConfigConvertible {
    var adapterConfig: AdapterConfig { get }
}

extension BottleneckConfig: AdapterConfigConvertible { public var adapterConfig: AdapterConfig { .bottleneck(self) } }
extension LoRAConfig: AdapterConfigConvertible { public var adapterConfig: AdapterConfig { .lora(self) } }
extension IA3Config: AdapterConfigConvertible { public var adapterConfig: AdapterConfig { .ia3(self) } }
extension PrefixConfig: AdapterConfigConvertible { public var adapterConfig: AdapterConfig { .prefix(self) } }
extension PromptConfig: AdapterConfigConvertible { public var adapterConfig: AdapterConfig { .prompt(self) } }

// The registry: the one place that names every method. Adding a method = its folder under Adapters/, a case in
// `AdapterConfig` and `AdapterMethod`, and one line in each switch below (plus its enum value in peftkit.h and
// the Python mirror, and a row in the shared method matrix test).
enum AdapterRegistry {
    /// Every method's `adapter_config.json` reader, tried in order.
    static let schemas: [AdapterConfigSchema.Type] = [LoRASchema.self, IA3Schema.self, PrefixSchema.self, PromptSchema.self,
                                                      BottleneckSchema.self]

    static func schema(_ method: AdapterMethod) -> AdapterConfigSchema.Type {
        switch method {
        case .bottleneck: return BottleneckSchema.self
        case .lora: return LoRASchema.self
        case .ia3: return IA3Schema.self
        case .prefix: return PrefixSchema.self
        case .prompt: return PromptSchema.self
        }
    }

    /// A new adapter of `config` for a model of shape `model`, with freshly initialised weights.
    static func make(_ config: AdapterConfig, model: ModelConfig, context: AdapterContext) throws -> Adapter {
        switch config {
        case .bottleneck(let c): return try BottleneckAdapter(config: c, model: model)
        case .lora(let c): return try LoRAAdapter(config: c, model: model, context: context)
        case .ia3(let c): return try IA3Adapter(config: c, model: model)
        case .prefix(let c): return try PrefixAdapter(config: c, model: model)
        case .prompt(let c): return try PromptAdapter(config: c, model: model, context: context)
        }
    }

    /// Trainable parameters `config` gives, computed without allocating them.
    static func parameterCount(_ config: AdapterConfig, model: ModelConfig) throws -> Int {
        switch config {
        case .bottleneck(let c): return BottleneckSchema.parameterCount(c, model: model)
        case .lora(let c): return try LoRASchema.parameterCount(c, model: model)
        case .ia3(let c): return try IA3Schema.parameterCount(c, model: model)
        case .prefix(let c): return PrefixSchema.parameterCount(c, model: model)
        case .prompt(let c): return PromptSchema.parameterCount(c, model: model)
        }
    }

    /// The configuration a JSON object in the ecosystem's schema describes (PEFT's `adapter_config.json` for
    /// LoRA, IA3, prefix and prompt tuning; AdapterHub's for bottleneck adapters).
    static func parse(_ object: [String: JSONValue], model: ModelConfig, context: AdapterContext, source: String) throws -> AdapterConfig {
        guard let schema = schemas.first(where: { $0.claims(object) }) else {
            if case .string(let t)? = object["peft_type"] {
                throw PEFTKitError.unsupported("\(source): PEFT method '\(t)' is not supported (PEFTKit reads LORA, IA3, PREFIX_TUNING and PROMPT_TUNING)")
            }
            throw PEFTKitError.unsupported("\(source): not an adapter config PEFTKit reads (a PEFT config with 'peft_type', or an "
                + "AdapterHub bottleneck config)")
        }
        return try schema.parse(object, model: model, context: context, source: source)
    }
}

extension AdapterConfig {
    /// Reads an adapter configuration from the JSON text of an `adapter_config.json` (PEFT's schema for LoRA, IA3,
    /// prefix and prompt tuning; AdapterHub's for bottleneck adapters), for a model of shape `model`. The text
    /// saving writes reads back as the same adapter. Keys that do not change the computation
    /// (`base_model_name_or_path`, `task_type`, ...) are accepted; a key PEFTKit does not implement throws
    /// `unsupported` naming it.
    ///
    /// ```swift
    /// let lora = try AdapterConfig(json: #"{"peft_type": "LORA", "r": 8, "lora_alpha": 16, "target_modules": ["q_proj", "v_proj"]}"#,
    ///                              model: model.config)
    /// ```
    public init(json: String, model: ModelConfig) throws {
        self = try AdapterConfig.parse(json: Array(json.utf8), model: model, context: AdapterContext(), source: "adapter config JSON")
    }

    static func parse(json: [UInt8], model: ModelConfig, context: AdapterContext, source: String) throws -> AdapterConfig {
        try require(json.count <= 1 << 20, "\(source) is longer than 1 MiB")
        return try AdapterRegistry.parse(try JSONValue.parseObject(json, source: source), model: model, context: context, source: source)
    }
}
