// The config structs of peftkit.h: their *_init functions and their translation to and from the Swift
// configuration types. Defaults come from the Swift types wherever the Swift API has one. Translation only:
// the core validates every value (Model.create, trainStep, generate), with one message per failure.

import CPEFTKit
import PEFTKit
#if canImport(Glibc)
import Glibc
#endif

// MARK: - Model config

/// The tiny GPT-2 that peftkit_model_config_init describes (documented in peftkit.h).
private let defaultVocab: Int32 = 256
private let defaultHidden: Int32 = 64
private let defaultLayers: Int32 = 2
private let defaultHeads: Int32 = 4

@c @implementation
public func peftkit_model_config_init_sized(_ config: UnsafeMutablePointer<peftkit_model_config>?, _ size: Int) -> peftkit_status {
    entry("peftkit_model_config_init_sized") { try initStruct(config, size: size, defaults: defaultModelConfig()) }
}

/// The defaults of peftkit_model_config_init (documented in peftkit.h), struct_size = this library's size.
func defaultModelConfig() -> peftkit_model_config {
    // The optional Swift initialiser arguments left at their defaults, read back from a Swift config.
    let swift = ModelConfig(architecture: .gpt2, vocabSize: Int(defaultVocab), hiddenSize: Int(defaultHidden),
                            numLayers: Int(defaultLayers), numHeads: Int(defaultHeads))
    var c = peftkit_model_config()
    c.struct_size = UInt32(MemoryLayout<peftkit_model_config>.size)
    c.architecture = PEFTKIT_ARCH_GPT2
    c.vocab_size = defaultVocab
    c.hidden_size = defaultHidden
    c.num_layers = defaultLayers
    c.num_heads = defaultHeads
    c.num_kv_heads = 0
    c.head_dim = 0
    c.intermediate_size = 0
    c.max_positions = Int32(bounded: swift.maxPositions)
    c.norm_eps = 0
    c.rope_theta = swift.ropeTheta
    c.tie_word_embeddings = swift.tieWordEmbeddings ? 1 : 0
    c.qkv_bias = -1
    c.output_bias = -1
    c.mlp_bias = -1
    return c
}

func architecture(from v: Int32) throws -> Architecture {
    switch v {
    case PEFTKIT_ARCH_GPT2: return .gpt2
    case PEFTKIT_ARCH_LLAMA: return .llama
    case PEFTKIT_ARCH_BERT: return .bert
    default: throw ShimError.invalid("architecture \(v) is not a PEFTKIT_ARCH_* value")
    }
}

func archCode(_ a: Architecture) -> Int32 {
    switch a {
    case .gpt2: return PEFTKIT_ARCH_GPT2
    case .llama: return PEFTKIT_ARCH_LLAMA
    case .bert: return PEFTKIT_ARCH_BERT
    }
}

/// Reads a C model config into a Swift one (not yet validated: Model.create validates). 0 in a derived field
/// means "derived" (nil); any other value goes to the core as it is.
func modelConfig(from p: UnsafePointer<peftkit_model_config>?) throws -> ModelConfig {
    let c = try readStruct(p, "config", defaults: defaultModelConfig())
    let arch = try architecture(from: c.architecture)
    func derived(_ v: Int32) -> Int? { v == 0 ? nil : Int(v) }
    return ModelConfig(
        architecture: arch,
        vocabSize: Int(c.vocab_size),
        hiddenSize: Int(c.hidden_size),
        numLayers: Int(c.num_layers),
        numHeads: Int(c.num_heads),
        numKVHeads: derived(c.num_kv_heads),
        headDim: derived(c.head_dim),
        intermediateSize: derived(c.intermediate_size),
        maxPositions: Int(c.max_positions),
        normEps: c.norm_eps == 0 ? nil : c.norm_eps,
        ropeTheta: c.rope_theta,
        tieWordEmbeddings: try readBool(c.tie_word_embeddings, "tie_word_embeddings"),
        qkvBias: try readTriState(c.qkv_bias, "qkv_bias"),
        outputBias: try readTriState(c.output_bias, "output_bias"),
        mlpBias: try readTriState(c.mlp_bias, "mlp_bias"))
}

/// Writes a Swift model config with concrete values into a C struct of `size` bytes (from outputStructSize).
func store(_ s: ModelConfig, into out: UnsafeMutablePointer<peftkit_model_config>, size: Int) {
    var c = peftkit_model_config()
    c.struct_size = UInt32(MemoryLayout<peftkit_model_config>.size)
    c.architecture = archCode(s.architecture)
    c.vocab_size = Int32(bounded: s.vocabSize)
    c.hidden_size = Int32(bounded: s.hiddenSize)
    c.num_layers = Int32(bounded: s.numLayers)
    c.num_heads = Int32(bounded: s.numHeads)
    c.num_kv_heads = Int32(bounded: s.numKVHeads)
    c.head_dim = Int32(bounded: s.headDim)
    c.intermediate_size = Int32(bounded: s.intermediateSize)
    c.max_positions = Int32(bounded: s.maxPositions)
    c.norm_eps = s.normEps
    c.rope_theta = s.ropeTheta
    c.tie_word_embeddings = s.tieWordEmbeddings ? 1 : 0
    c.qkv_bias = s.qkvBias ? 1 : 0
    c.output_bias = s.outputBias ? 1 : 0
    c.mlp_bias = s.mlpBias ? 1 : 0
    writeStruct(c, to: out, size: size)
}

// MARK: - Adapter method

/// The header's PEFTKIT_METHOD_* value (the core owns the numbers; test_abi checks they equal the header's).
func methodCode(_ m: AdapterMethod) -> Int32 { m.abiCode }

// MARK: - Train config

@c @implementation
public func peftkit_train_config_init_sized(_ config: UnsafeMutablePointer<peftkit_train_config>?, _ size: Int) -> peftkit_status {
    entry("peftkit_train_config_init_sized") { try initStruct(config, size: size, defaults: defaultTrainConfig()) }
}

/// The defaults of peftkit_train_config_init (documented in peftkit.h), struct_size = this library's size.
func defaultTrainConfig() -> peftkit_train_config {
    let swift = TrainConfig()
    var c = peftkit_train_config()
    c.struct_size = UInt32(MemoryLayout<peftkit_train_config>.size)
    c.learning_rate = swift.learningRate
    c.beta1 = swift.beta1
    c.beta2 = swift.beta2
    c.eps = swift.eps
    c.weight_decay = swift.weightDecay
    c.schedule = scheduleCode(swift.schedule)
    c.warmup_steps = Int32(bounded: swift.warmupSteps)
    c.total_steps = Int32(bounded: swift.totalSteps)
    c.max_grad_norm = swift.maxGradNorm
    c.micro_batch_size = Int32(bounded: swift.microBatchSize)
    c.lora_plus_ratio = swift.loraPlusRatio
    c.gradient_checkpointing = swift.gradientCheckpointing ? 1 : 0
    c.activation_memory = activationMemoryCode(swift.activationMemory)
    return c
}

func activationMemoryCode(_ m: ActivationMemory) -> Int32 {
    switch m {
    case .automatic: return PEFTKIT_ACTIVATIONS_AUTO
    case .keep: return PEFTKIT_ACTIVATIONS_KEEP
    case .recomputeAttention: return PEFTKIT_ACTIVATIONS_RECOMPUTE_ATTENTION
    case .recomputeAttentionAndUp: return PEFTKIT_ACTIVATIONS_RECOMPUTE_ATTENTION_UP
    }
}

func scheduleCode(_ s: LRSchedule) -> Int32 {
    switch s {
    case .constant: return PEFTKIT_SCHEDULE_CONSTANT
    case .linear: return PEFTKIT_SCHEDULE_LINEAR
    case .cosine: return PEFTKIT_SCHEDULE_COSINE
    }
}

/// Reads a C train config (the core validates it in trainStep).
func trainConfig(from p: UnsafePointer<peftkit_train_config>?) throws -> TrainConfig {
    let c = try readStruct(p, "config", defaults: defaultTrainConfig())
    var t = TrainConfig()
    t.learningRate = c.learning_rate
    t.beta1 = c.beta1
    t.beta2 = c.beta2
    t.eps = c.eps
    t.weightDecay = c.weight_decay
    switch c.schedule {
    case PEFTKIT_SCHEDULE_CONSTANT: t.schedule = .constant
    case PEFTKIT_SCHEDULE_LINEAR: t.schedule = .linear
    case PEFTKIT_SCHEDULE_COSINE: t.schedule = .cosine
    default: throw ShimError.invalid("schedule \(c.schedule) is not a PEFTKIT_SCHEDULE_* value")
    }
    t.warmupSteps = Int(c.warmup_steps)
    t.totalSteps = Int(c.total_steps)
    t.maxGradNorm = c.max_grad_norm
    t.microBatchSize = Int(c.micro_batch_size)
    t.loraPlusRatio = c.lora_plus_ratio
    switch c.gradient_checkpointing {
    case 0: t.gradientCheckpointing = false
    case 1: t.gradientCheckpointing = true
    default: throw ShimError.invalid("gradient_checkpointing must be 0 or 1, got \(c.gradient_checkpointing)")
    }
    switch c.activation_memory {
    case PEFTKIT_ACTIVATIONS_AUTO: t.activationMemory = .automatic
    case PEFTKIT_ACTIVATIONS_KEEP: t.activationMemory = .keep
    case PEFTKIT_ACTIVATIONS_RECOMPUTE_ATTENTION: t.activationMemory = .recomputeAttention
    case PEFTKIT_ACTIVATIONS_RECOMPUTE_ATTENTION_UP: t.activationMemory = .recomputeAttentionAndUp
    default: throw ShimError.invalid("activation_memory \(c.activation_memory) is not a PEFTKIT_ACTIVATIONS_* value")
    }
    return t
}

// MARK: - Generate config

@c @implementation
public func peftkit_generate_config_init_sized(_ config: UnsafeMutablePointer<peftkit_generate_config>?, _ size: Int) -> peftkit_status {
    entry("peftkit_generate_config_init_sized") { try initStruct(config, size: size, defaults: defaultGenerateConfig()) }
}

/// The defaults of peftkit_generate_config_init (documented in peftkit.h), struct_size = this library's size.
func defaultGenerateConfig() -> peftkit_generate_config {
    let swift = GenerateConfig()
    var c = peftkit_generate_config()
    c.struct_size = UInt32(MemoryLayout<peftkit_generate_config>.size)
    c.max_new_tokens = Int32(bounded: swift.maxNewTokens)
    c.temperature = swift.temperature
    c.top_k = Int32(bounded: swift.topK)
    c.top_p = swift.topP
    c.n_stop_tokens = 0
    c.seed = swift.seed
    c.stop_tokens = nil
    c.repetition_penalty = swift.repetitionPenalty
    c.min_p = swift.minP
    c.n_stop_strings = 0
    c.reserved0 = 0
    c.stop_strings = nil
    return c
}

/// Reads a C generate config (the core validates it, stop tokens included, in generate).
func generateConfig(from p: UnsafePointer<peftkit_generate_config>?) throws -> GenerateConfig {
    let c = try readStruct(p, "config", defaults: defaultGenerateConfig())
    var g = GenerateConfig()
    g.maxNewTokens = Int(c.max_new_tokens)
    g.temperature = c.temperature
    g.topK = Int(c.top_k)
    g.topP = c.top_p
    g.seed = c.seed
    if c.n_stop_tokens < 0 {
        throw ShimError.invalid("n_stop_tokens must be >= 0, got \(c.n_stop_tokens)")
    } else if c.n_stop_tokens > 0 {
        guard let sp = c.stop_tokens else {
            throw ShimError.invalid("stop_tokens is NULL but n_stop_tokens is \(c.n_stop_tokens)")
        }
        g.stopTokens = Array(UnsafeBufferPointer(start: sp, count: Int(c.n_stop_tokens)))
    }
    // 0 is "off" as well as 1, so that a zeroed field means what it meant before the field existed.
    g.repetitionPenalty = c.repetition_penalty == 0 ? 1 : c.repetition_penalty
    g.minP = c.min_p
    guard c.reserved0 == 0 else { throw ShimError.invalid("reserved0 must be 0, got \(c.reserved0)") }
    guard c.n_stop_strings >= 0, c.n_stop_strings <= maxStopStrings else {
        throw ShimError.invalid("n_stop_strings must be in 0...\(maxStopStrings), got \(c.n_stop_strings)")
    }
    if c.n_stop_strings > 0 {
        guard let ss = c.stop_strings else {
            throw ShimError.invalid("stop_strings is NULL but n_stop_strings is \(c.n_stop_strings)")
        }
        g.stopStrings = try (0..<Int(c.n_stop_strings)).map {
            try readString(ss[$0], "stop_strings[\($0)]", maxBytes: maxStopStringBytes)
        }
    }
    return g
}

/// Limits on peftkit_generate_config's stop strings (documented in peftkit.h).
let maxStopStrings: Int32 = 1024
let maxStopStringBytes = 4096
