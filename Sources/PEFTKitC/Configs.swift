// The four config structs of peftkit.h: their *_init functions and their translation to and from the
// Swift configuration types. Defaults come from the Swift types wherever the Swift API has one.

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
public func peftkit_model_config_init(_ config: UnsafeMutablePointer<peftkit_model_config>?) {
    guard let config else { return }
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
    config.pointee = c
}

func architecture(from v: Int32) throws -> Architecture {
    switch v {
    case PEFTKIT_ARCH_GPT2: return .gpt2
    case PEFTKIT_ARCH_LLAMA: return .llama
    default: throw ShimError.invalid("architecture \(v) is not a PEFTKIT_ARCH_* value")
    }
}

func archCode(_ a: Architecture) -> Int32 {
    switch a {
    case .gpt2: return PEFTKIT_ARCH_GPT2
    case .llama: return PEFTKIT_ARCH_LLAMA
    }
}

/// Reads a C model config into a Swift one (not yet validated: Model.create validates).
func modelConfig(from p: UnsafePointer<peftkit_model_config>?) throws -> ModelConfig {
    let c = try checkStructSize(p, "config").pointee
    let arch = try architecture(from: c.architecture)
    func derived(_ v: Int32, _ what: String) throws -> Int? {
        guard v >= 0 else { throw ShimError.invalid("\(what) must be >= 0 (0 = derived), got \(v)") }
        return v == 0 ? nil : Int(v)
    }
    guard !(c.norm_eps < 0) else { throw ShimError.invalid("norm_eps must be >= 0 (0 = default), got \(c.norm_eps)") }
    return ModelConfig(
        architecture: arch,
        vocabSize: Int(c.vocab_size),
        hiddenSize: Int(c.hidden_size),
        numLayers: Int(c.num_layers),
        numHeads: Int(c.num_heads),
        numKVHeads: try derived(c.num_kv_heads, "num_kv_heads"),
        headDim: try derived(c.head_dim, "head_dim"),
        intermediateSize: try derived(c.intermediate_size, "intermediate_size"),
        maxPositions: Int(c.max_positions),
        normEps: c.norm_eps == 0 ? nil : c.norm_eps,
        ropeTheta: c.rope_theta,
        tieWordEmbeddings: try readBool(c.tie_word_embeddings, "tie_word_embeddings"),
        qkvBias: try readTriState(c.qkv_bias, "qkv_bias"),
        outputBias: try readTriState(c.output_bias, "output_bias"),
        mlpBias: try readTriState(c.mlp_bias, "mlp_bias"))
}

/// Writes a Swift model config with concrete values into a C struct whose struct_size was checked.
func store(_ s: ModelConfig, into out: UnsafeMutablePointer<peftkit_model_config>) {
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
    out.pointee = c
}

// MARK: - Adapter config

@c @implementation
public func peftkit_adapter_config_init(_ config: UnsafeMutablePointer<peftkit_adapter_config>?) {
    guard let config else { return }
    let swift = BottleneckConfig()
    var c = peftkit_adapter_config()
    c.struct_size = UInt32(MemoryLayout<peftkit_adapter_config>.size)
    c.method = PEFTKIT_METHOD_BOTTLENECK
    c.preset = PEFTKIT_PRESET_PFEIFFER  // BottleneckConfig's default preset
    c.reduction_factor = swift.reductionFactor
    c.bottleneck_size = Int32(bounded: swift.bottleneckSize)
    c.non_linearity = PEFTKIT_ACTIVATION_DEFAULT
    c.init_weights = initCode(swift.initWeights)
    c.scaling = swift.scaling
    c.ln_before = swift.lnBefore ? 1 : 0
    c.ln_after = swift.lnAfter ? 1 : 0
    c.layers = nil
    c.n_layers = 0
    c.seed = swift.seed
    let lora = LoRAConfig()
    c.lora_rank = Int32(lora.rank)
    c.lora_alpha = lora.alpha
    c.lora_dropout = lora.dropout
    c.use_rslora = 0
    c.target_modules = nil
    c.feedforward_modules = nil
    c.num_virtual_tokens = Int32(PromptConfig().virtualTokens)
    c.prefix_projection = 0
    c.projection_hidden = 0
    c.init_tokens = nil
    c.n_init_tokens = 0
    config.pointee = c
}

func methodCode(_ m: AdapterMethod) -> Int32 {
    switch m {
    case .bottleneck: return PEFTKIT_METHOD_BOTTLENECK
    case .lora: return PEFTKIT_METHOD_LORA
    case .ia3: return PEFTKIT_METHOD_IA3
    case .prefix: return PEFTKIT_METHOD_PREFIX
    case .prompt: return PEFTKIT_METHOD_PROMPT
    }
}

/// A comma-separated module list; nil or "" gives [] (the method's default).
func readModuleList(_ p: UnsafePointer<CChar>?, _ what: String) throws -> [String] {
    guard let p else { return [] }
    let n = strnlen(p, 4097)
    guard n <= 4096 else { throw ShimError.invalid("\(what) is longer than 4096 bytes") }
    guard let s = String(validating: UnsafeBufferPointer(start: UnsafeRawPointer(p).assumingMemoryBound(to: UInt8.self), count: n), as: UTF8.self) else {
        throw ShimError.invalid("\(what) is not valid UTF-8")
    }
    return s.split(separator: ",").map { String($0).trimmingWhitespace() }.filter { !$0.isEmpty }
}

extension String {
    func trimmingWhitespace() -> String {
        var s = Substring(self)
        while let f = s.first, f == " " || f == "\t" { s.removeFirst() }
        while let l = s.last, l == " " || l == "\t" { s.removeLast() }
        return String(s)
    }
}

/// The config's layer list (nil = every layer), its length and pointer checked.
private func layerList(_ c: peftkit_adapter_config, model: ModelConfig) throws -> [Int]? {
    guard c.n_layers >= 0 else { throw ShimError.invalid("n_layers must be >= 0, got \(c.n_layers)") }
    guard c.n_layers > 0 else { return nil }
    guard let lp = c.layers else { throw ShimError.invalid("layers is NULL but n_layers is \(c.n_layers)") }
    guard Int(c.n_layers) <= model.numLayers else {
        throw ShimError.invalid("n_layers \(c.n_layers) exceeds the model's \(model.numLayers) layers")
    }
    return UnsafeBufferPointer(start: lp, count: Int(c.n_layers)).map { Int($0) }
}

/// Reads and validates a C adapter config of any method.
func adapterConfig(from p: UnsafePointer<peftkit_adapter_config>?, model: ModelConfig) throws -> AdapterConfig {
    let c = try checkStructSize(p, "config").pointee
    let layers = try layerList(c, model: model)
    switch c.method {
    case PEFTKIT_METHOD_BOTTLENECK:
        return .bottleneck(try bottleneckConfig(from: p, model: model))
    case PEFTKIT_METHOD_LORA:
        var l = LoRAConfig()
        l.rank = Int(c.lora_rank); l.alpha = c.lora_alpha; l.dropout = c.lora_dropout
        l.useRSLoRA = try readBool(c.use_rslora, "use_rslora")
        l.targets = try readModuleList(c.target_modules, "target_modules")
        l.layers = layers; l.seed = c.seed
        return .lora(l)
    case PEFTKIT_METHOD_IA3:
        var i = IA3Config()
        i.targets = try readModuleList(c.target_modules, "target_modules")
        let ff = try readModuleList(c.feedforward_modules, "feedforward_modules")
        i.feedforward = ff.isEmpty ? nil : ff
        i.layers = layers
        return .ia3(i)
    case PEFTKIT_METHOD_PREFIX:
        var x = PrefixConfig()
        x.virtualTokens = Int(c.num_virtual_tokens)
        x.projection = try readBool(c.prefix_projection, "prefix_projection")
        x.projectionHidden = Int(c.projection_hidden)
        x.seed = c.seed
        return .prefix(x)
    case PEFTKIT_METHOD_PROMPT:
        var x = PromptConfig()
        x.virtualTokens = Int(c.num_virtual_tokens)
        if c.n_init_tokens < 0 { throw ShimError.invalid("n_init_tokens must be >= 0, got \(c.n_init_tokens)") }
        if c.n_init_tokens > 0 {
            guard let tp = c.init_tokens else { throw ShimError.invalid("init_tokens is NULL but n_init_tokens is \(c.n_init_tokens)") }
            guard c.n_init_tokens <= 1 << 20 else { throw ShimError.invalid("n_init_tokens is too large") }
            x.initTokens = Array(UnsafeBufferPointer(start: tp, count: Int(c.n_init_tokens)))
        }
        x.seed = c.seed
        return .prompt(x)
    default:
        throw ShimError.invalid("method \(c.method) is not a PEFTKIT_METHOD_* value")
    }
}

func initCode(_ i: AdapterInit) -> Int32 {
    switch i {
    case .bert: return PEFTKIT_INIT_BERT
    case .houlsby: return PEFTKIT_INIT_HOULSBY
    case .zeroUp: return PEFTKIT_INIT_ZERO_UP
    }
}

/// Reads and validates a C adapter config for a model of the given shape.
func bottleneckConfig(from p: UnsafePointer<peftkit_adapter_config>?, model: ModelConfig) throws -> BottleneckConfig {
    let c = try checkStructSize(p, "config").pointee
    guard c.method == PEFTKIT_METHOD_BOTTLENECK else {
        throw ShimError.invalid("method \(c.method) is not a PEFTKIT_METHOD_* value")
    }
    let preset: BottleneckConfig.Preset
    switch c.preset {
    case PEFTKIT_PRESET_HOULSBY: preset = .houlsby
    case PEFTKIT_PRESET_PFEIFFER: preset = .pfeiffer
    default: throw ShimError.invalid("preset \(c.preset) is not a PEFTKIT_PRESET_* value")
    }
    let act: Activation?
    switch c.non_linearity {
    case PEFTKIT_ACTIVATION_DEFAULT: act = nil
    case PEFTKIT_ACTIVATION_RELU: act = .relu
    case PEFTKIT_ACTIVATION_GELU: act = .gelu
    case PEFTKIT_ACTIVATION_GELU_TANH: act = .geluTanh
    case PEFTKIT_ACTIVATION_SWISH: act = .swish
    default: throw ShimError.invalid("non_linearity \(c.non_linearity) is not a PEFTKIT_ACTIVATION_* value")
    }
    let initWeights: AdapterInit
    switch c.init_weights {
    case PEFTKIT_INIT_BERT: initWeights = .bert
    case PEFTKIT_INIT_HOULSBY: initWeights = .houlsby
    case PEFTKIT_INIT_ZERO_UP: initWeights = .zeroUp
    default: throw ShimError.invalid("init_weights \(c.init_weights) is not a PEFTKIT_INIT_* value")
    }
    let layers = try layerList(c, model: model)
    let bc = BottleneckConfig(
        preset: preset,
        reductionFactor: c.reduction_factor,
        bottleneckSize: Int(c.bottleneck_size),
        nonLinearity: act,
        layers: layers,
        initWeights: initWeights,
        scaling: c.scaling,
        lnBefore: try readBool(c.ln_before, "ln_before"),
        lnAfter: try readBool(c.ln_after, "ln_after"),
        seed: c.seed)
    try bc.validate(numLayers: model.numLayers, hidden: model.hiddenSize)
    return bc
}

// MARK: - Train config

@c @implementation
public func peftkit_train_config_init(_ config: UnsafeMutablePointer<peftkit_train_config>?) {
    guard let config else { return }
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
    config.pointee = c
}

func scheduleCode(_ s: LRSchedule) -> Int32 {
    switch s {
    case .constant: return PEFTKIT_SCHEDULE_CONSTANT
    case .linear: return PEFTKIT_SCHEDULE_LINEAR
    case .cosine: return PEFTKIT_SCHEDULE_COSINE
    }
}

/// Reads and validates a C train config.
func trainConfig(from p: UnsafePointer<peftkit_train_config>?) throws -> TrainConfig {
    let c = try checkStructSize(p, "config").pointee
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
    try t.validate()
    return t
}

// MARK: - Generate config

@c @implementation
public func peftkit_generate_config_init(_ config: UnsafeMutablePointer<peftkit_generate_config>?) {
    guard let config else { return }
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
    config.pointee = c
}

/// Reads and validates a C generate config for a model with `vocab` tokens.
func generateConfig(from p: UnsafePointer<peftkit_generate_config>?, vocab: Int) throws -> GenerateConfig {
    let c = try checkStructSize(p, "config").pointee
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
        try checkTokenIDs(sp, Int(c.n_stop_tokens), vocab: vocab, "stop_tokens")
        g.stopTokens = Array(UnsafeBufferPointer(start: sp, count: Int(c.n_stop_tokens)))
    }
    try g.validate()
    return g
}
