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
    /// Repetition penalty (1 = off, > 0): before sampling (greedy included), the logit of every token that
    /// occurs in the window is divided by the penalty when positive and multiplied by it when negative, as
    /// transformers' `RepetitionPenaltyLogitsProcessor`. The window is the whole context: every prompt token
    /// and every token generated so far (each distinct token penalised once; prompt tuning's virtual tokens
    /// are not tokens and do not count).
    public var repetitionPenalty: Float = 1
    /// Min-p sampling (0 = off, in [0, 1]): after temperature, top-k and top-p, tokens whose probability is
    /// below `minP` times the most likely token's probability are dropped (the most likely token always
    /// stays). No effect on greedy decoding.
    public var minP: Float = 0
    /// Generation stops when the text of the new tokens contains one of these strings (non-empty UTF-8,
    /// matched on the tokens' raw bytes, the prompt not included). The result then ends before the match:
    /// `GenerateResult.text` stops at the first byte of the stop string, and `GenerateResult.tokens` keeps
    /// only the tokens that lie wholly before it (the token in which the match starts is dropped with every
    /// later one, so the text may hold the beginning of that dropped token). Needs the model's tokenizer.
    public var stopStrings: [String] = []

    public init() {}

    public func validate() throws {
        try require(maxNewTokens >= 0, "max new tokens must be >= 0, got \(maxNewTokens)")
        try require(temperature.isFinite && temperature >= 0, "temperature must be finite and >= 0, got \(temperature)")
        try require(topK >= 0, "top-k must be >= 0, got \(topK)")
        try require(topP.isFinite && topP > 0 && topP <= 1, "top-p must be in (0, 1], got \(topP)")
        try require(repetitionPenalty.isFinite && repetitionPenalty > 0,
                    "repetition penalty must be finite and > 0 (1 = off), got \(repetitionPenalty)")
        try require(minP.isFinite && minP >= 0 && minP <= 1, "min-p must be in [0, 1] (0 = off), got \(minP)")
        for (i, s) in stopStrings.enumerated() {
            try require(!s.utf8.isEmpty, "stop string \(i) is empty")
        }
    }
}

/// Why generation ended (`GenerateResult.finishReason`).
public enum FinishReason: Sendable, Equatable, CaseIterable {
    /// The last token is one of `GenerateConfig.stopTokens` (it is included in the output).
    case stopToken
    /// The output's text contained one of `GenerateConfig.stopStrings` (the output ends before it).
    case stopString
    /// `maxNewTokens` tokens were produced.
    case length
    /// The model's `maxPositions` was reached before `maxNewTokens` (the context is full).
    case contextFull
    /// The token callback returned false (the token it was given is kept).
    case cancelled

    /// The number of the C ABI (`PEFTKIT_FINISH_*` in include/peftkit.h).
    public var abiCode: Int32 {
        switch self {
        case .stopToken: 1
        case .stopString: 2
        case .length: 3
        case .contextFull: 4
        case .cancelled: 5
        }
    }
}

/// What `Model.generateResult` returns: the new tokens and why generation stopped.
public struct GenerateResult: Sendable, Equatable {
    /// The new tokens (prompt not included).
    public var tokens: [Int32]
    /// Why generation ended.
    public var finishReason: FinishReason
    /// Index of the stop that ended generation in `GenerateConfig.stopTokens` (`.stopToken`) or
    /// `GenerateConfig.stopStrings` (`.stopString`); nil for the other reasons.
    public var stopIndex: Int?
    /// The text of the output, decoded with the model's tokenizer, when stop strings were given (nil
    /// otherwise). With `.stopString` it ends exactly before the stop string.
    public var text: String?
    /// With `.stopString`: the tokens sampled after `tokens` that the stop string removed (the one in which it
    /// starts and any later one); the token callback saw them. Empty otherwise.
    public var droppedTokens: [Int32]
    /// With `.stopString`: where the stop string starts, in bytes, in the raw bytes of `tokens` followed by
    /// `droppedTokens` (so `text` is those bytes up to this offset). nil otherwise.
    public var stopByteOffset: Int?

    public init(tokens: [Int32], finishReason: FinishReason, stopIndex: Int? = nil, text: String? = nil,
                droppedTokens: [Int32] = [], stopByteOffset: Int? = nil) {
        self.tokens = tokens
        self.finishReason = finishReason
        self.stopIndex = stopIndex
        self.text = text
        self.droppedTokens = droppedTokens
        self.stopByteOffset = stopByteOffset
    }
}
