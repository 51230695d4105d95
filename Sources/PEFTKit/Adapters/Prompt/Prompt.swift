/// Prompt tuning (Lester et al. 2021): trainable virtual-token embeddings prepended to the input.
public struct PromptConfig: Sendable, Equatable {
    public var virtualTokens: Int = 20
    /// Initialise from the embeddings of these token ids (cycled to fill every virtual token), as PEFT's
    /// TEXT init does with a tokenized text; nil means random N(0, 1) (PEFT's RANDOM init).
    public var initTokens: [Int32]? = nil
    public var seed: UInt64 = 42

    public init() {}
}

final class PromptAdapter: Adapter {
    let config: PromptConfig

    init(config: PromptConfig, model m: ModelConfig, context: AdapterContext) throws {
        try require(config.virtualTokens > 0 && config.virtualTokens < m.maxPositions,
                    "virtual tokens must be in 1..<\(m.maxPositions), got \(config.virtualTokens)")
        self.config = config
        let C = m.hiddenSize
        try super.init(model: m, config: .prompt(config), parameterCount: config.virtualTokens * C)
        if let ids = config.initTokens {
            try require(!ids.isEmpty, "the init token list is empty")
            for t in ids { try require(t >= 0 && Int(t) < m.vocabSize, "init token \(t) is outside the vocabulary") }
            guard let row = context.embeddingRow else {
                throw PEFTKitError.state("prompt tuning from init tokens needs the model's token embeddings")
            }
            for i in 0..<config.virtualTokens { row(ids[i % ids.count], params.floats + i * C) }
        } else {
            var rng = Rng(seed: config.seed)
            fillNormal(params.floats, parameterCount, std: 1, rng: &rng)
        }
    }

    override var lowestLayer: Int { -1 }
    override var virtualTokens: Int { config.virtualTokens }
    override func promptEmbeddings() -> UnsafeMutablePointer<Float>? { params.floats }
    override func promptGrad(grads: UnsafeMutablePointer<Float>) -> UnsafeMutablePointer<Float>? { grads }
}
