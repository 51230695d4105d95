/// Sampling settings for `Model.generate`.
public struct GenerateConfig: Sendable, Equatable {
    /// Tokens to produce at most (the prompt not counted).
    public var maxNewTokens: Int = 32
    /// 0 means greedy (argmax). Otherwise logits are divided by the temperature before sampling.
    public var temperature: Float = 0
    /// Keep only the k most likely tokens (0 = off).
    public var topK: Int = 0
    /// Keep the smallest set of tokens whose probability sum reaches p (1 = off).
    public var topP: Float = 1
    /// Seed of the sampler's random generator: equal seeds give equal outputs.
    public var seed: UInt64 = 0
    /// Generation stops after emitting any of these tokens (the stop token is included in the output).
    public var stopTokens: [Int32] = []

    public init() {}

    public func validate() throws {
        try require(maxNewTokens >= 0, "max new tokens must be >= 0, got \(maxNewTokens)")
        try require(temperature.isFinite && temperature >= 0, "temperature must be finite and >= 0, got \(temperature)")
        try require(topK >= 0, "top-k must be >= 0, got \(topK)")
        try require(topP.isFinite && topP > 0 && topP <= 1, "top-p must be in (0, 1], got \(topP)")
    }
}
