/// Architectures PEFTKit runs: decoders (GPT-2, Llama) and the BERT encoder.
public enum Architecture: String, Sendable, Codable, CaseIterable {
    /// GPT-2 family: LayerNorm with bias, learned positions, GELU (tanh), fused qkv (`Conv1D`), tied head.
    case gpt2
    /// Llama family: RMSNorm, RoPE, SwiGLU MLP, grouped-query attention; also Qwen2/Mistral-style layouts.
    case llama
    /// BERT encoder: post-LayerNorm, learned absolute positions, token-type embeddings, GELU (erf),
    /// bidirectional attention with a padding mask, optional pooler (dense + tanh on [CLS]).
    case bert
}

/// What only an encoder (BERT) has. Absent (nil) for decoders, so configs written before it still read.
public struct EncoderSettings: Sendable, Equatable, Codable {
    /// Rows of the token-type embedding (`type_vocab_size`, 2 for BERT).
    public var typeVocabSize: Int
    /// Whether the model has the pooler (`pooler.dense`, tanh over the [CLS] row).
    public var pooler: Bool

    public init(typeVocabSize: Int = 2, pooler: Bool = true) {
        self.typeVocabSize = typeVocabSize
        self.pooler = pooler
    }
}

/// The shape and hyper-parameters of a decoder. Field names follow Hugging Face `config.json` meanings.
public struct ModelConfig: Sendable, Equatable, Codable {
    public var architecture: Architecture
    public var vocabSize: Int
    public var hiddenSize: Int
    public var numLayers: Int
    public var numHeads: Int
    /// Key/value heads (grouped-query attention). Equal to `numHeads` for GPT-2.
    public var numKVHeads: Int
    /// Per-head dimension; `hiddenSize / numHeads` unless a config says otherwise.
    public var headDim: Int
    /// MLP inner size (GPT-2: `n_inner` or 4·hidden).
    public var intermediateSize: Int
    /// Longest sequence (GPT-2: learned position table size; Llama: `max_position_embeddings`).
    public var maxPositions: Int
    /// LayerNorm / RMSNorm epsilon.
    public var normEps: Float
    /// RoPE base (Llama only).
    public var ropeTheta: Float
    /// Whether the LM head shares the token embedding matrix.
    public var tieWordEmbeddings: Bool
    /// Bias on q, k, v projections (Llama `attention_bias`, Qwen2 always).
    public var qkvBias: Bool
    /// Bias on the attention output projection (Llama `attention_bias`).
    public var outputBias: Bool
    /// Bias on MLP projections (Llama `mlp_bias`).
    public var mlpBias: Bool
    /// Encoder-only settings (BERT); nil for decoders.
    public var encoder: EncoderSettings?

    public init(architecture: Architecture, vocabSize: Int, hiddenSize: Int, numLayers: Int, numHeads: Int,
                numKVHeads: Int? = nil, headDim: Int? = nil, intermediateSize: Int? = nil, maxPositions: Int = 1024,
                normEps: Float? = nil, ropeTheta: Float = 10000, tieWordEmbeddings: Bool = true,
                qkvBias: Bool? = nil, outputBias: Bool? = nil, mlpBias: Bool? = nil, encoder: EncoderSettings? = nil) {
        self.architecture = architecture
        self.vocabSize = vocabSize
        self.hiddenSize = hiddenSize
        self.numLayers = numLayers
        self.numHeads = numHeads
        self.numKVHeads = numKVHeads ?? numHeads
        self.headDim = headDim ?? (numHeads > 0 ? hiddenSize / numHeads : 0)
        let gpt2 = architecture == .gpt2, bert = architecture == .bert
        self.intermediateSize = intermediateSize ?? (gpt2 ? 4 * hiddenSize : 4 * hiddenSize)
        self.maxPositions = maxPositions
        self.normEps = normEps ?? (gpt2 ? 1e-5 : bert ? 1e-12 : 1e-6)
        self.ropeTheta = ropeTheta
        self.tieWordEmbeddings = gpt2 || bert ? true : tieWordEmbeddings
        self.qkvBias = bert ? true : qkvBias ?? gpt2
        self.outputBias = bert ? true : outputBias ?? gpt2
        self.mlpBias = bert ? true : mlpBias ?? gpt2
        self.encoder = bert ? (encoder ?? EncoderSettings()) : nil
    }

    /// GPT-2 124M shape (vocab 50257, 12 layers, d=768, 12 heads, 1024 positions).
    public static let gpt2Small = ModelConfig(architecture: .gpt2, vocabSize: 50257, hiddenSize: 768, numLayers: 12,
                                              numHeads: 12, maxPositions: 1024)

    /// Checks every field for consistency; throws `invalidArgument` with the first problem found.
    public func validate() throws {
        try require(vocabSize > 0 && vocabSize <= 1 << 24, "vocab_size must be in 1...16777216, got \(vocabSize)")
        try require(hiddenSize > 0 && hiddenSize <= 1 << 16, "hidden_size must be in 1...65536, got \(hiddenSize)")
        try require(numLayers > 0 && numLayers <= 1024, "num_layers must be in 1...1024, got \(numLayers)")
        try require(numHeads > 0 && numHeads <= 1024, "num_heads must be in 1...1024, got \(numHeads)")
        try require(numKVHeads > 0 && numHeads % numKVHeads == 0,
                    "num_key_value_heads (\(numKVHeads)) must divide num_heads (\(numHeads))")
        try require(headDim > 0 && headDim <= 1024, "head_dim must be in 1...1024, got \(headDim)")
        try require(intermediateSize > 0 && intermediateSize <= 1 << 18,
                    "intermediate_size must be in 1...262144, got \(intermediateSize)")
        try require(maxPositions > 0 && maxPositions <= 1 << 20, "max_positions must be in 1...1048576, got \(maxPositions)")
        try require(normEps.isFinite && normEps > 0, "norm epsilon must be positive and finite, got \(normEps)")
        switch architecture {
        case .gpt2:
            try require(numKVHeads == numHeads, "GPT-2 has no grouped-query attention (kv heads must equal heads)")
            try require(headDim * numHeads == hiddenSize, "GPT-2 needs hidden_size = heads × head_dim")
        case .llama:
            try require(ropeTheta.isFinite && ropeTheta > 0, "rope_theta must be positive, got \(ropeTheta)")
            try require(headDim % 2 == 0, "RoPE needs an even head_dim, got \(headDim)")
        case .bert:
            try require(numKVHeads == numHeads, "BERT has no grouped-query attention (kv heads must equal heads)")
            try require(headDim * numHeads == hiddenSize, "BERT needs hidden_size = heads × head_dim")
            let types = encoder?.typeVocabSize ?? 0
            try require(types > 0 && types <= 1 << 16, "type_vocab_size must be in 1...65536, got \(types)")
        }
    }

    /// Number of base-model parameters (tied head counted once).
    public var parameterCount: Int {
        let c = hiddenSize, i = intermediateSize, d = headDim
        switch architecture {
        case .gpt2:
            let perLayer = 2 * c + (c * 3 * c + 3 * c) + (c * c + c) + 2 * c + (c * i + i) + (i * c + c)
            return vocabSize * c + maxPositions * c + numLayers * perLayer + 2 * c
        case .llama:
            let q = numHeads * d, kv = numKVHeads * d
            var perLayer = c + c * q + 2 * c * kv + q * c + c + 3 * c * i
            if qkvBias { perLayer += q + 2 * kv }
            if outputBias { perLayer += c }
            if mlpBias { perLayer += 2 * i + c }
            return vocabSize * c + numLayers * perLayer + c + (tieWordEmbeddings ? 0 : vocabSize * c)
        case .bert:
            let perLayer = 4 * (c * c + c) + 2 * c + (c * i + i) + (i * c + c) + 2 * c
            let types = encoder?.typeVocabSize ?? 0
            return (vocabSize + maxPositions + types) * c + 2 * c + numLayers * perLayer
                + ((encoder?.pooler ?? false) ? c * c + c : 0)
        }
    }
}
