/// Configuration of any adapter method. Adding a method = a folder under Adapters/, a case here, a line in
/// `Engine.makeAdapter`, and a row in the shared test matrix.
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

extension Engine {
    func makeAdapter(_ c: AdapterConfig) throws -> Adapter {
        switch c {
        case .bottleneck(let b): return try BottleneckAdapter(config: b, model: config)
        case .lora(let l): return try LoRAAdapter(config: l, model: config)
        case .ia3(let i): return try IA3Adapter(config: i, model: config)
        case .prefix(let p): return try PrefixAdapter(config: p, model: config)
        case .prompt(let p): return try PromptAdapter(config: p, model: config, embeddings: weights.tokenEmbedding)
        }
    }
}
