import FoundationEssentials

// Hugging Face `config.json` <-> `ModelConfig`. Only what PEFTKit computes is read; any setting that would
// change the math in a way PEFTKit does not implement (RoPE scaling, other activations, GPT-2 attention
// scaling variants) is refused with `unsupported` instead of being silently ignored.

/// The keys PEFTKit reads from a `config.json`. All optional: presence rules depend on `model_type`.
private struct HFConfigFields: Decodable {
    var modelType: String?
    // GPT-2
    var nEmbd: Int?
    var nLayer: Int?
    var nHead: Int?
    var nPositions: Int?
    var nCtx: Int?
    var nInner: Int?
    var layerNormEpsilon: Double?
    var activationFunction: String?
    var scaleAttnWeights: Bool?
    var scaleAttnByInverseLayerIdx: Bool?
    // Shared
    var vocabSize: Int?
    var tieWordEmbeddings: Bool?
    // Llama family
    var hiddenSize: Int?
    var intermediateSize: Int?
    var numHiddenLayers: Int?
    var numAttentionHeads: Int?
    var numKeyValueHeads: Int?
    var headDim: Int?
    var rmsNormEps: Double?
    var ropeTheta: Double?
    var ropeScaling: RopeSettings?
    var ropeParameters: RopeSettings?
    var maxPositionEmbeddings: Int?
    var attentionBias: Bool?
    var mlpBias: Bool?
    var hiddenAct: String?
    var slidingWindow: Int?
    var useSlidingWindow: Bool?
    // BERT
    var typeVocabSize: Int?
    var layerNormEps: Double?
    var positionEmbeddingType: String?
    var isDecoder: Bool?

    enum CodingKeys: String, CodingKey {
        case modelType = "model_type"
        case nEmbd = "n_embd", nLayer = "n_layer", nHead = "n_head", nPositions = "n_positions", nCtx = "n_ctx"
        case nInner = "n_inner", layerNormEpsilon = "layer_norm_epsilon", activationFunction = "activation_function"
        case scaleAttnWeights = "scale_attn_weights", scaleAttnByInverseLayerIdx = "scale_attn_by_inverse_layer_idx"
        case vocabSize = "vocab_size", tieWordEmbeddings = "tie_word_embeddings"
        case hiddenSize = "hidden_size", intermediateSize = "intermediate_size"
        case numHiddenLayers = "num_hidden_layers", numAttentionHeads = "num_attention_heads"
        case numKeyValueHeads = "num_key_value_heads", headDim = "head_dim", rmsNormEps = "rms_norm_eps"
        case ropeTheta = "rope_theta", ropeScaling = "rope_scaling", ropeParameters = "rope_parameters"
        case maxPositionEmbeddings = "max_position_embeddings", attentionBias = "attention_bias", mlpBias = "mlp_bias"
        case hiddenAct = "hidden_act", slidingWindow = "sliding_window", useSlidingWindow = "use_sliding_window"
        case typeVocabSize = "type_vocab_size", layerNormEps = "layer_norm_eps"
        case positionEmbeddingType = "position_embedding_type", isDecoder = "is_decoder"
    }
}

/// `rope_scaling` (transformers 4) or `rope_parameters` (transformers 5): only the plain RoPE is supported.
private struct RopeSettings: Decodable {
    var ropeType: String?
    var type: String?
    var ropeTheta: Double?

    enum CodingKeys: String, CodingKey {
        case ropeType = "rope_type", type, ropeTheta = "rope_theta"
    }

    var kind: String? { ropeType ?? type }
}

/// Largest value accepted for any size field before `ModelConfig.validate()` applies the real limits;
/// keeps the arithmetic done here (e.g. 4·n_embd) far from overflow.
private let sizeLimit = 1 << 30

private func positive(_ value: Int?, _ key: String, _ source: String, default fallback: Int? = nil) throws -> Int {
    guard let v = value ?? fallback else { throw PEFTKitError.format("\(source) is missing '\(key)'") }
    guard v > 0, v <= sizeLimit else {
        throw PEFTKitError.format("\(source): '\(key)' must be a positive integer no larger than \(sizeLimit), got \(v)")
    }
    return v
}

/// Builds a `ModelConfig` from the bytes of a Hugging Face `config.json` and validates it.
///
/// Supports `model_type` `gpt2`, the Llama family (`llama`, `mistral`, `qwen2`) and `bert`. Malformed JSON or
/// out-of-range values throw `format`; settings PEFTKit does not implement throw `unsupported`.
/// `source` names the file in messages.
///
/// ```swift
/// let config = try modelConfig(fromJSON: readWholeFile(path: "model/config.json"))
/// ```
public func modelConfig(fromJSON bytes: [UInt8], source: String = "config.json") throws -> ModelConfig {
    let f = try decodeJSON(HFConfigFields.self, from: bytes, source: source)
    guard let modelType = f.modelType else { throw PEFTKitError.format("\(source) has no 'model_type'") }
    let config: ModelConfig
    switch modelType {
    case "gpt2":
        config = try gpt2Config(f, source)
    case "llama", "mistral", "qwen2":
        config = try llamaFamilyConfig(f, modelType, source)
    case "bert":
        config = try bertConfig(f, source)
    default:
        throw PEFTKitError.unsupported("\(source): model_type '\(modelType)' is not supported (supported: gpt2, llama, mistral, qwen2, bert)")
    }
    do {
        try config.validate()
    } catch PEFTKitError.invalidArgument(let message) {
        throw PEFTKitError.format("\(source): \(message)")
    }
    return config
}

private func gpt2Config(_ f: HFConfigFields, _ source: String) throws -> ModelConfig {
    let activation = f.activationFunction ?? "gelu_new"
    guard activation == "gelu_new" || activation == "gelu_pytorch_tanh" else {
        throw PEFTKitError.unsupported("\(source): GPT-2 activation_function '\(activation)' is not supported (use gelu_new)")
    }
    guard f.scaleAttnWeights ?? true else {
        throw PEFTKitError.unsupported("\(source): scale_attn_weights = false is not supported")
    }
    guard !(f.scaleAttnByInverseLayerIdx ?? false) else {
        throw PEFTKitError.unsupported("\(source): scale_attn_by_inverse_layer_idx = true is not supported")
    }
    guard f.tieWordEmbeddings ?? true else {
        throw PEFTKitError.unsupported("\(source): GPT-2 with an untied LM head (tie_word_embeddings = false) is not supported")
    }
    let hidden = try positive(f.nEmbd, "n_embd", source)
    let heads = try positive(f.nHead, "n_head", source)
    return ModelConfig(
        architecture: .gpt2,
        vocabSize: try positive(f.vocabSize, "vocab_size", source),
        hiddenSize: hidden,
        numLayers: try positive(f.nLayer, "n_layer", source),
        numHeads: heads,
        numKVHeads: heads,
        headDim: hidden / heads,
        intermediateSize: try positive(f.nInner, "n_inner", source, default: 4 * hidden),
        maxPositions: try positive(f.nPositions ?? f.nCtx, "n_positions", source, default: 1024),
        normEps: Float(f.layerNormEpsilon ?? 1e-5),
        tieWordEmbeddings: true,
        qkvBias: true, outputBias: true, mlpBias: true)
}

private func llamaFamilyConfig(_ f: HFConfigFields, _ modelType: String, _ source: String) throws -> ModelConfig {
    let activation = f.hiddenAct ?? "silu"
    guard activation == "silu" || activation == "swish" else {
        throw PEFTKitError.unsupported("\(source): hidden_act '\(activation)' is not supported (use silu)")
    }
    if let scaling = f.ropeScaling, scaling.kind != "default" {
        throw PEFTKitError.unsupported("\(source): rope_scaling (\(scaling.kind ?? "unspecified type")) is not supported yet")
    }
    if let params = f.ropeParameters, let kind = params.kind, kind != "default" {
        throw PEFTKitError.unsupported("\(source): rope_parameters of rope_type '\(kind)' are not supported yet")
    }
    let hidden = try positive(f.hiddenSize, "hidden_size", source)
    let heads = try positive(f.numAttentionHeads, "num_attention_heads", source)
    let defaultPositions: Int
    switch modelType {
    case "mistral": defaultPositions = 4096 * 32
    case "qwen2": defaultPositions = 32768
    default: defaultPositions = 2048
    }
    var positions = try positive(f.maxPositionEmbeddings, "max_position_embeddings", source, default: defaultPositions)
    // Sliding-window attention equals full causal attention while sequences fit in the window, so the
    // window simply caps the usable length.
    let windowed = modelType == "mistral" || (modelType == "qwen2" && (f.useSlidingWindow ?? false))
    if windowed, let w = f.slidingWindow {
        positions = min(positions, try positive(w, "sliding_window", source))
    }
    let attentionBias = f.attentionBias ?? false
    let isQwen2 = modelType == "qwen2"
    return ModelConfig(
        architecture: .llama,
        vocabSize: try positive(f.vocabSize, "vocab_size", source),
        hiddenSize: hidden,
        numLayers: try positive(f.numHiddenLayers, "num_hidden_layers", source),
        numHeads: heads,
        numKVHeads: try positive(f.numKeyValueHeads, "num_key_value_heads", source, default: heads),
        headDim: try positive(f.headDim, "head_dim", source, default: hidden / heads),
        intermediateSize: try positive(f.intermediateSize, "intermediate_size", source),
        maxPositions: positions,
        normEps: Float(f.rmsNormEps ?? 1e-6),
        ropeTheta: Float(f.ropeParameters?.ropeTheta ?? f.ropeTheta ?? 10000),
        tieWordEmbeddings: f.tieWordEmbeddings ?? false,
        qkvBias: isQwen2 ? true : (modelType == "llama" && attentionBias),
        outputBias: isQwen2 ? false : (modelType == "llama" && attentionBias),
        mlpBias: modelType == "llama" && (f.mlpBias ?? false))
}

/// BERT (`BertModel`, `BertForSequenceClassification`, ...): absolute positions and exact GELU only. Whether the
/// pooler is present is decided by the weights (`Engine(loadingFolder:)`), not by `config.json`.
private func bertConfig(_ f: HFConfigFields, _ source: String) throws -> ModelConfig {
    let activation = f.hiddenAct ?? "gelu"
    guard activation == "gelu" else {
        throw PEFTKitError.unsupported("\(source): BERT hidden_act '\(activation)' is not supported (use gelu)")
    }
    if let p = f.positionEmbeddingType, p != "absolute" {
        throw PEFTKitError.unsupported("\(source): position_embedding_type '\(p)' is not supported (use absolute)")
    }
    guard !(f.isDecoder ?? false) else {
        throw PEFTKitError.unsupported("\(source): BERT as a decoder (is_decoder = true) is not supported")
    }
    let hidden = try positive(f.hiddenSize, "hidden_size", source)
    let heads = try positive(f.numAttentionHeads, "num_attention_heads", source)
    return ModelConfig(
        architecture: .bert,
        vocabSize: try positive(f.vocabSize, "vocab_size", source),
        hiddenSize: hidden,
        numLayers: try positive(f.numHiddenLayers, "num_hidden_layers", source),
        numHeads: heads,
        numKVHeads: heads,
        headDim: hidden / heads,
        intermediateSize: try positive(f.intermediateSize, "intermediate_size", source, default: 4 * hidden),
        maxPositions: try positive(f.maxPositionEmbeddings, "max_position_embeddings", source, default: 512),
        normEps: Float(f.layerNormEps ?? 1e-12),
        encoder: EncoderSettings(typeVocabSize: try positive(f.typeVocabSize, "type_vocab_size", source, default: 2),
                                 pooler: true))
}

/// A `config.json` that transformers loads as the same model: `GPT2LMHeadModel` for GPT-2,
/// `LlamaForCausalLM` for the Llama family, or `Qwen2ForCausalLM` when only q, k, v carry a bias.
/// Throws `unsupported` for bias combinations no transformers class has, and `invalidArgument` for a
/// config that does not validate.
public func configJSON(for config: ModelConfig) throws -> [UInt8] {
    try config.validate()
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
    let data: Data
    switch config.architecture {
    case .gpt2:
        guard config.qkvBias, config.outputBias, config.mlpBias, config.tieWordEmbeddings else {
            throw PEFTKitError.unsupported("GPT-2 configs without biases or with an untied head cannot be written as GPT2LMHeadModel")
        }
        data = try encoder.encode(GPT2JSON(config))
    case .llama:
        let json: LlamaJSON
        if config.qkvBias == config.outputBias {
            json = LlamaJSON(config, modelType: "llama", architecture: "LlamaForCausalLM")
        } else if config.qkvBias, !config.outputBias, !config.mlpBias {
            json = LlamaJSON(config, modelType: "qwen2", architecture: "Qwen2ForCausalLM")
        } else {
            throw PEFTKitError.unsupported("no transformers model has qkv bias \(config.qkvBias), output bias "
                + "\(config.outputBias), MLP bias \(config.mlpBias)")
        }
        data = try encoder.encode(json)
    case .bert:
        data = try encoder.encode(BertJSON(config))
    }
    return Array(data) + [0x0a]
}

/// A Float as the Double with the same shortest decimal, so the JSON shows `1e-05`, not `9.99999974e-06`.
private func decimal(_ x: Float) -> Double {
    Double(x.description) ?? Double(x)
}

private struct GPT2JSON: Encodable {
    let architectures = ["GPT2LMHeadModel"]
    let modelType = "gpt2"
    let activationFunction = "gelu_new"
    let vocabSize: Int, nEmbd: Int, nLayer: Int, nHead: Int, nPositions: Int, nCtx: Int, nInner: Int
    let layerNormEpsilon: Double
    let tieWordEmbeddings = true
    let torchDtype = "float32"

    init(_ c: ModelConfig) {
        vocabSize = c.vocabSize; nEmbd = c.hiddenSize; nLayer = c.numLayers; nHead = c.numHeads
        nPositions = c.maxPositions; nCtx = c.maxPositions; nInner = c.intermediateSize
        layerNormEpsilon = decimal(c.normEps)
    }

    enum CodingKeys: String, CodingKey {
        case architectures, modelType = "model_type", activationFunction = "activation_function"
        case vocabSize = "vocab_size", nEmbd = "n_embd", nLayer = "n_layer", nHead = "n_head"
        case nPositions = "n_positions", nCtx = "n_ctx", nInner = "n_inner", layerNormEpsilon = "layer_norm_epsilon"
        case tieWordEmbeddings = "tie_word_embeddings", torchDtype = "torch_dtype"
    }
}

private struct LlamaJSON: Encodable {
    struct Rope: Encodable {
        let ropeType = "default"
        let ropeTheta: Double
        enum CodingKeys: String, CodingKey { case ropeType = "rope_type", ropeTheta = "rope_theta" }
    }
    let architectures: [String]
    let modelType: String
    let hiddenAct = "silu"
    let vocabSize: Int, hiddenSize: Int, intermediateSize: Int, numHiddenLayers: Int
    let numAttentionHeads: Int, numKeyValueHeads: Int, headDim: Int, maxPositionEmbeddings: Int
    let rmsNormEps: Double, ropeTheta: Double
    let ropeParameters: Rope
    let tieWordEmbeddings: Bool
    let attentionBias: Bool?, mlpBias: Bool?
    let torchDtype = "float32"

    init(_ c: ModelConfig, modelType: String, architecture: String) {
        architectures = [architecture]
        self.modelType = modelType
        vocabSize = c.vocabSize; hiddenSize = c.hiddenSize; intermediateSize = c.intermediateSize
        numHiddenLayers = c.numLayers; numAttentionHeads = c.numHeads; numKeyValueHeads = c.numKVHeads
        headDim = c.headDim; maxPositionEmbeddings = c.maxPositions
        rmsNormEps = decimal(c.normEps); ropeTheta = decimal(c.ropeTheta)
        ropeParameters = Rope(ropeTheta: ropeTheta)
        tieWordEmbeddings = c.tieWordEmbeddings
        let llama = modelType == "llama"
        attentionBias = llama ? c.qkvBias : nil
        mlpBias = llama ? c.mlpBias : nil
    }

    enum CodingKeys: String, CodingKey {
        case architectures, modelType = "model_type", hiddenAct = "hidden_act", vocabSize = "vocab_size"
        case hiddenSize = "hidden_size", intermediateSize = "intermediate_size", numHiddenLayers = "num_hidden_layers"
        case numAttentionHeads = "num_attention_heads", numKeyValueHeads = "num_key_value_heads", headDim = "head_dim"
        case maxPositionEmbeddings = "max_position_embeddings", rmsNormEps = "rms_norm_eps", ropeTheta = "rope_theta"
        case ropeParameters = "rope_parameters", tieWordEmbeddings = "tie_word_embeddings"
        case attentionBias = "attention_bias", mlpBias = "mlp_bias", torchDtype = "torch_dtype"
    }
}

private struct BertJSON: Encodable {
    let architectures = ["BertModel"]
    let modelType = "bert"
    let hiddenAct = "gelu"
    let positionEmbeddingType = "absolute"
    let vocabSize: Int, hiddenSize: Int, intermediateSize: Int, numHiddenLayers: Int, numAttentionHeads: Int
    let maxPositionEmbeddings: Int, typeVocabSize: Int
    let layerNormEps: Double
    let torchDtype = "float32"

    init(_ c: ModelConfig) {
        vocabSize = c.vocabSize; hiddenSize = c.hiddenSize; intermediateSize = c.intermediateSize
        numHiddenLayers = c.numLayers; numAttentionHeads = c.numHeads; maxPositionEmbeddings = c.maxPositions
        typeVocabSize = c.encoder?.typeVocabSize ?? 2
        layerNormEps = decimal(c.normEps)
    }

    enum CodingKeys: String, CodingKey {
        case architectures, modelType = "model_type", hiddenAct = "hidden_act"
        case positionEmbeddingType = "position_embedding_type", vocabSize = "vocab_size", hiddenSize = "hidden_size"
        case intermediateSize = "intermediate_size", numHiddenLayers = "num_hidden_layers"
        case numAttentionHeads = "num_attention_heads", maxPositionEmbeddings = "max_position_embeddings"
        case typeVocabSize = "type_vocab_size", layerNormEps = "layer_norm_eps", torchDtype = "torch_dtype"
    }
}

/// Reads a Hugging Face model folder: `config.json` (see `modelConfig(fromJSON:source:)`) and its weights
/// (see `WeightSet`). Errors name the file that caused them.
public func loadHFFolder(path: String) throws -> (ModelConfig, WeightSet) {
    let configPath = joinPath(path, "config.json")
    guard pathKind(configPath) == .file else {
        throw PEFTKitError.io("model folder '\(path)' has no config.json")
    }
    let config = try modelConfig(fromJSON: readWholeFile(path: configPath, maxBytes: maxConfigBytes),
                                 source: "'\(configPath)'")
    return (config, try WeightSet(folder: path))
}
