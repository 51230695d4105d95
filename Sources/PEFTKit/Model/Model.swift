import Synchronization

/// A decoder-only transformer with frozen base weights and any number of named adapters, one active.
///
/// ```swift
/// let model = try Model.create(config: ModelConfig(architecture: .gpt2, vocabSize: 100, hiddenSize: 64,
///                                                  numLayers: 2, numHeads: 4), seed: 1)
/// try model.attachAdapter(name: "task", config: BottleneckConfig(preset: .pfeiffer))
/// var tc = TrainConfig(); tc.learningRate = 1e-3
/// let r = try model.trainStep(inputIDs: ids, batch: 2, seqLen: 16, config: tc)
/// let out = try model.generate(prompt: [1, 2, 3], config: GenerateConfig())
/// ```
///
/// A `Model` is not meant to be used from several threads at once: a call made while another is running
/// on the same model throws `PEFTKitError.busy` instead of corrupting it. Different models are independent.
public final class Model: @unchecked Sendable {
    public let config: ModelConfig
    let engine: Engine
    private let busy = Mutex<Bool>(false)
    /// The active adapter and the adapter names, refreshed by every call that changes them, so reading them
    /// never waits for (or fails because of) a running call.
    private let names = Mutex<(active: String?, all: [String])>((nil, []))
    /// The attached tokenizer and chat template. Behind its own lock, not `exclusive`, so that they can be
    /// read while another call runs (e.g. to decode tokens inside a generation callback).
    let text: Mutex<TextSupport>

    init(engine: Engine, text: TextSupport = TextSupport()) {
        self.engine = engine
        self.config = engine.config
        self.text = Mutex(text)
    }

    /// A model with random weights (GPT-2-style init: N(0, `initStd`) for matrices and embeddings, residual
    /// projections scaled by 1/√(2L), biases 0, norm weights 1).
    public static func create(config: ModelConfig, seed: UInt64 = 0, initStd: Float = 0.02) throws -> Model {
        try config.validate()
        try require(initStd.isFinite && initStd >= 0 && initStd <= 10, "init std must be in [0, 10], got \(initStd)")
        return Model(engine: try Engine(randomConfig: config, seed: seed, initStd: initStd))
    }

    /// Loads a Hugging Face model folder (`config.json` + `model.safetensors` or a sharded index), or a
    /// GGUF file of architecture `llama` when `path` ends in `.gguf` and is not a directory.
    ///
    /// The model's tokenizer and chat template are loaded too when the files carry them (see `tokenizer`
    /// and `chatTemplate`); a tokenizer or template PEFTKit cannot read leaves them nil, with the reason in
    /// `tokenizerIssue`, and never fails the load.
    ///
    /// A GGUF file's linear weights and token embedding stay in their blocks (Q8_0, Q4_0, Q4_1, Q5_0, Q5_1,
    /// Q4_K, Q5_K, Q6_K, F16, BF16; memory-mapped) unless `widen` is true: adapters train and generate over
    /// them, but merging an adapter and full fine-tuning need `widen: true` (fp32 copies, about 4 bytes per
    /// parameter). `widen` does nothing for Hugging Face folders (always fp32).
    ///
    /// ```swift
    /// let model = try Model.load(path: "SmolLM2-135M-Instruct.Q4_1.gguf")              // QLoRA-style base
    /// let wide = try Model.load(path: "SmolLM2-135M-Instruct.Q4_1.gguf", widen: true)  // fp32, mergeable
    /// ```
    ///
    /// `progress` (optional) is called on the calling thread after each weight tensor is read (`done` / `total` in
    /// tensors); returning false cancels the load, which then throws `PEFTKitError.cancelled` and keeps nothing.
    public static func load(path: String, widen: Bool = false, progress: ProgressHandler? = nil) throws -> Model {
        if path.hasSuffix(".gguf") && pathKind(path) != .directory {
            let file = try GGUFFile(path: path)
            let engine = try Engine(ggufFile: file, widen: widen, progress: progress)
            return Model(engine: engine, text: TextSupport(gguf: file, vocabSize: engine.config.vocabSize))
        }
        let engine = try Engine(loadingFolder: path, progress: progress)
        return Model(engine: engine, text: TextSupport(folder: path, vocabSize: engine.config.vocabSize))
    }

    /// One base tensor as held in memory: its Hugging Face name, number format (`F32`, or the GGUF block type
    /// it is kept in: `Q4_1`, `Q8_0`, `F16`, ...), shape and the bytes it occupies in that format.
    public struct BaseTensor: Sendable {
        public let name: String
        public let format: String
        public let shape: [Int]
        public let bytes: Int
        /// Bytes the tensor would take widened to fp32.
        public var widenedBytes: Int { 4 * shape.reduce(1, *) }
    }

    /// Every base tensor with its storage format and size (the tied head is the embedding, listed once).
    public var baseTensors: [BaseTensor] {
        (try? exclusive {
            let w = engine.weights
            var out = w.named.map { BaseTensor(name: $0.name, format: "F32", shape: $0.tensor.shape, bytes: 4 * $0.tensor.count) }
            out += w.quantized.map { BaseTensor(name: $0.name, format: $0.matrix.type.description,
                                                shape: [$0.matrix.outFeatures, $0.matrix.inFeatures], bytes: $0.matrix.byteCount) }
            let order = Dictionary(uniqueKeysWithValues: config.architecture.weights.tensors(config).enumerated().map { ($1.name, $0) })
            return out.sorted { (order[$0.name] ?? 0) < (order[$1.name] ?? 0) }
        }) ?? []
    }

    func exclusive<R>(_ body: () throws -> R) throws -> R {
        let ok = busy.withLock { b -> Bool in
            if b { return false }
            b = true
            return true
        }
        guard ok else { throw PEFTKitError.busy("the model is in use by another call (calls on one model must not overlap)") }
        defer { busy.withLock { $0 = false } }
        return try body()
    }

    /// `exclusive` for calls that attach, remove or activate adapters: refreshes the names afterwards.
    func exclusiveChangingAdapters<R>(_ body: () throws -> R) throws -> R {
        try exclusive {
            defer { names.withLock { $0 = (engine.activeName, engine.adapters.map { $0.name }) } }
            return try body()
        }
    }

    // MARK: adapters

    /// Attaches a new adapter of any method named `name` (not made active).
    public func attachAdapter(name: String, config: AdapterConfig) throws {
        try exclusiveChangingAdapters { try engine.attachAdapter(name: name, config: config) }
    }

    /// Attaches a new adapter named `name` (not made active) from the JSON text of an `adapter_config.json`: PEFT's
    /// schema for LoRA, IA3, prefix and prompt tuning (`peft_type` and PEFT's field names, so
    /// `LoraConfig(...).to_dict()` works), AdapterHub's for bottleneck adapters (a `BnConfig` dict, or a preset name
    /// such as `{"config": "seq_bn"}`). The same text that `saveAdapter` writes and `loadAdapter` reads. A
    /// `prompt_tuning_init` of "TEXT" is tokenized with the model's tokenizer. PEFTKit's own key `seed` sets the
    /// initialisation seed. A key PEFTKit does not implement throws `unsupported` naming it.
    ///
    /// ```swift
    /// try model.attachAdapter(name: "task", configJSON: #"{"peft_type": "LORA", "r": 8, "lora_alpha": 16, "target_modules": ["q_proj", "v_proj"]}"#)
    /// ```
    public func attachAdapter(name: String, configJSON: String) throws {
        let tok = text.withLock { $0.tokenizer }
        let tokenize: (String) throws -> [Int32] = { s in
            guard let t = tok else {
                throw PEFTKitError.state("this model has no tokenizer to encode the prompt init text with")
            }
            return t.encode(s, addSpecial: true, parseSpecial: true)  // as PEFT calls tokenizer(text)
        }
        try exclusiveChangingAdapters { try engine.attachAdapter(name: name, json: Array(configJSON.utf8), tokenize: tokenize) }
    }

    /// Attaches a new adapter named `name` (not made active) from any method's configuration type
    /// (`LoRAConfig()`, `BottleneckConfig(preset: .houlsby)`, ...).
    public func attachAdapter(name: String, config: some AdapterConfigConvertible) throws {
        try attachAdapter(name: name, config: config.adapterConfig)
    }

    /// The method of adapter `name`.
    public func adapterMethod(name: String) throws -> AdapterMethod {
        try exclusive { try engine.adapter(named: name).adapter.method }
    }

    /// Removes an adapter; if it was active, no adapter is active afterwards.
    public func removeAdapter(name: String) throws {
        try exclusiveChangingAdapters { try engine.removeAdapter(name: name) }
    }

    /// Makes `name` the active adapter, or the bare base model when `nil`.
    public func setActiveAdapter(_ name: String?) throws {
        try exclusiveChangingAdapters { try engine.setActive(name) }
    }

    /// The active adapter's name, or nil for the base model. Safe to read while another call runs.
    public var activeAdapter: String? { names.withLock { $0.active } }

    /// Names of the attached adapters, in attach order. Safe to read while another call runs.
    public var adapterNames: [String] { names.withLock { $0.all } }

    /// Trainable parameters of adapter `name`.
    public func adapterParameterCount(name: String) throws -> Int {
        try exclusive { try engine.adapter(named: name).parameterCount }
    }

    /// Writes adapter `name` into `directory` (created if missing): bottleneck adapters in AdapterHub's
    /// format (`adapter_config.json` + `adapter.safetensors`), the other methods in HF PEFT's
    /// (`adapter_config.json` + `adapter_model.safetensors`). Files are replaced atomically.
    public func saveAdapter(name: String, to directory: String) throws {
        try exclusive { try engine.saveAdapter(name: name, directory: directory) }
    }

    /// Writes adapter `name` in `format`: `.native` as `saveAdapter(name:to:)`; `.gguf` as one llama.cpp GGUF LoRA
    /// file at `path` (LoRA on Llama models), which `llama-cli --lora` and `loadAdapter(from:)` read.
    public func saveAdapter(name: String, to path: String, format: AdapterFormat) throws {
        try exclusive { try engine.saveAdapter(name: name, directory: path, format: format) }
    }

    /// Reads an adapter folder (AdapterHub or HF PEFT format, told apart by its files) and attaches it under
    /// `name` (default: the name in the file, or "default"). Returns the name used. Not made active.
    @discardableResult
    public func loadAdapter(from directory: String, name: String? = nil) throws -> String {
        try exclusiveChangingAdapters { try engine.loadAdapter(directory: directory, name: name) }
    }

    /// Folds LoRA or IA3 adapter `name` into the base weights (copies of the touched tensors; the originals
    /// stay untouched). Afterwards the base model (no adapter active) computes what the adapter did.
    public func mergeAdapter(name: String) throws {
        try exclusive { try engine.merge(name: name) }
    }

    /// Undoes `mergeAdapter`, restoring the original base weights bit for bit. Merges undo in reverse order.
    public func unmergeAdapter(name: String) throws {
        try exclusive { try engine.unmerge(name: name) }
    }

    /// Whether adapter `name` is currently merged.
    public func isMerged(name: String) throws -> Bool {
        try exclusive { try engine.adapter(named: name).merged }
    }

    // MARK: compute

    /// Forward pass where row b of the batch uses adapter `adapters[b]` (nil = base model): one batch serves
    /// several tasks. Writes logits `[batch, seqLen, vocab]` when given; returns the loss over all rows.
    public func forward(inputIDs: UnsafeBufferPointer<Int32>, labels: UnsafeBufferPointer<Int32>? = nil, adapters: [String?],
                        batch: Int, seqLen: Int, logits: UnsafeMutableBufferPointer<Float>? = nil) throws -> EvalResult {
        try exclusive {
            try engine.evaluateMixed(inputIDs: inputIDs, labels: labels, adapters: adapters, batch: batch, seqLen: seqLen,
                                     logits: logits)
        }
    }

    /// Generates for several prompts, each with its own adapter (nil = base model). Returns the new tokens of
    /// each prompt; equal to calling `generate` per prompt with that adapter active. See `generateResults`.
    public func generate(prompts: [[Int32]], adapters: [String?], config: GenerateConfig) throws -> [[Int32]] {
        try generateResults(prompts: prompts, adapters: adapters, config: config).map(\.tokens)
    }

    /// One optimiser step of the active adapter on a batch of `batch` rows of `seqLen` token ids.
    /// `labels` default to `inputIDs`; `-100` marks positions that do not count. Labels are shifted inside
    /// (position t predicts label t+1), as transformers does.
    ///
    /// Packed rows: `segmentIDs` ([batch·seqLen]) mark the records a row holds (a record starts at position 0 and
    /// wherever the id differs from the previous position's). Each record attends only to itself, its positions
    /// start at 0, and no position predicts across a record boundary: the loss and gradients equal those of the
    /// records run one by one. Not with prompt or prefix tuning, nor encoders.
    public func trainStep(inputIDs: UnsafeBufferPointer<Int32>, labels: UnsafeBufferPointer<Int32>? = nil,
                          segmentIDs: UnsafeBufferPointer<Int32>? = nil,
                          batch: Int, seqLen: Int, config: TrainConfig) throws -> TrainStepResult {
        try exclusive {
            try engine.trainStep(inputIDs: inputIDs, labels: labels, batch: batch, seqLen: seqLen, config: config,
                                 segmentIDs: segmentIDs)
        }
    }

    public func trainStep(inputIDs: [Int32], labels: [Int32]? = nil, segmentIDs: [Int32]? = nil, batch: Int, seqLen: Int,
                          config: TrainConfig) throws -> TrainStepResult {
        try withOptionalBuffer(labels) { lb in
            try withOptionalBuffer(segmentIDs) { sg in
                try inputIDs.withUnsafeBufferPointer { ids in
                    try trainStep(inputIDs: ids, labels: lb, segmentIDs: sg, batch: batch, seqLen: seqLen, config: config)
                }
            }
        }
    }

    /// Sets (or, with nil, removes) the handler told the progress of `trainStep` and `computeGradients`: called on
    /// the calling thread after each micro-batch's forward pass and after the backward pass through each layer
    /// (`done` / `total` in those units over the whole call). Returning false cancels the call: it throws
    /// `PEFTKitError.cancelled` with the weights, optimiser moments, step count and random state unchanged and the
    /// gradient buffer zeroed. The model is in use while the handler runs: calling it from there throws `busy`.
    public func setProgressHandler(_ handler: ProgressHandler?) throws {
        try exclusive { engine.trainProgress = handler }
    }

    /// The first half of `trainStep`, for hosts that combine gradients across processes (data parallelism):
    /// forward, loss and backward, leaving the gradient of Σ loss / `lossDivisor` in the flat gradient buffer
    /// (`withGradients`). `lossDivisor` defaults to this batch's counted tokens (the mean loss); data-parallel
    /// ranks pass the global token count so that summing their gradients gives the global mean's. Returns this
    /// batch's loss divided by the same divisor and the tokens it counted. Then `applyGradients`.
    ///
    /// ```swift
    /// let (_, tokens) = try model.computeGradients(inputIDs: ids, batch: 4, seqLen: 256, config: tc, lossDivisor: globalTokens)
    /// try model.withGradients { g in allReduceSum(g) }     // the host's communicator
    /// let r = try model.applyGradients(config: tc)
    /// ```
    public func computeGradients(inputIDs: UnsafeBufferPointer<Int32>, labels: UnsafeBufferPointer<Int32>? = nil, batch: Int,
                                 seqLen: Int, config: TrainConfig, lossDivisor: Int? = nil,
                                 segmentIDs: UnsafeBufferPointer<Int32>? = nil) throws -> (loss: Float, tokens: Int) {
        try exclusive {
            try config.validate()
            return try engine.computeGradients(inputIDs: inputIDs, labels: labels, batch: batch, seqLen: seqLen, config: config,
                                               lossDivisor: lossDivisor, segmentIDs: segmentIDs)
        }
    }

    /// The second half of `trainStep`: clipping, learning-rate schedule and AdamW on the gradient buffer, with the
    /// same refusal of non-finite updates (nothing changes). `trainStep` is exactly `computeGradients` then this.
    public func applyGradients(config: TrainConfig) throws -> TrainStepResult {
        try exclusive { try engine.applyGradients(config: config) }
    }

    /// Calls `body` with the flat fp32 gradient buffer of what `trainStep` trains (the active adapter's
    /// parameters in their saved order, or every base weight under full fine-tuning), to read or change in place
    /// between `computeGradients` and `applyGradients`. The buffer is valid only inside `body`.
    public func withGradients<R>(_ body: (UnsafeMutableBufferPointer<Float>) throws -> R) throws -> R {
        try exclusive {
            let (_, opt) = try engine.trainable()
            return try body(UnsafeMutableBufferPointer(start: opt.grads.floats, count: opt.count))
        }
    }

    /// The flat fp32 gradient buffer that `withGradients` lends, for hosts that hold on to it (the C ABI). It stays
    /// valid until the adapter being trained is removed or given a task head (`attachHead`), full fine-tuning is turned
    /// on or off, or the model is freed;
    /// read or write it only between `computeGradients` and `applyGradients`, never during another call.
    public func gradientBuffer() throws -> UnsafeMutableBufferPointer<Float> {
        try exclusive {
            let (_, opt) = try engine.trainable()
            return UnsafeMutableBufferPointer(start: opt.grads.floats, count: opt.count)
        }
    }

    /// Calls `body` with the flat fp32 parameters that `trainStep` trains (read-only use: to check that data-parallel
    /// ranks agree, or to hash them).
    public func withTrainableParameters<R>(_ body: (UnsafeBufferPointer<Float>) throws -> R) throws -> R {
        try exclusive {
            let (_, opt) = try engine.trainable()
            return try opt.withFlatParameters(body)
        }
    }

    /// Forward pass without an update: writes logits `[batch, seqLen, vocab]` into `logits` when given and
    /// returns the loss against `labels` (default: the inputs). `segmentIDs`: packed rows, as in `trainStep`.
    public func forward(inputIDs: UnsafeBufferPointer<Int32>, labels: UnsafeBufferPointer<Int32>? = nil,
                        segmentIDs: UnsafeBufferPointer<Int32>? = nil,
                        batch: Int, seqLen: Int, logits: UnsafeMutableBufferPointer<Float>? = nil) throws -> EvalResult {
        try exclusive {
            try engine.evaluate(inputIDs: inputIDs, labels: labels, batch: batch, seqLen: seqLen, logits: logits,
                                segmentIDs: segmentIDs)
        }
    }

    /// Convenience: returns the logits as an array along with the loss.
    public func forward(inputIDs: [Int32], labels: [Int32]? = nil, segmentIDs: [Int32]? = nil, batch: Int,
                        seqLen: Int) throws -> (logits: [Float], result: EvalResult) {
        let (n, o) = (batch * seqLen).multipliedReportingOverflow(by: config.vocabSize)
        guard !o, batch > 0, seqLen > 0 else { throw PEFTKitError.invalidArgument("bad batch/seqLen \(batch)x\(seqLen)") }
        var out = [Float](repeating: 0, count: n)
        let r: EvalResult = try withOptionalBuffer(labels) { lb in
            try withOptionalBuffer(segmentIDs) { sg in
                try inputIDs.withUnsafeBufferPointer { ids in
                    try out.withUnsafeMutableBufferPointer { lg in
                        try forward(inputIDs: ids, labels: lb, segmentIDs: sg, batch: batch, seqLen: seqLen, logits: lg)
                    }
                }
            }
        }
        return (out, r)
    }

    /// Generates up to `config.maxNewTokens` tokens after `prompt` with the active adapter, calling `onToken`
    /// for each new token (return false to stop). Returns the new tokens; `generateResult` also says why
    /// generation stopped.
    public func generate(prompt: [Int32], config: GenerateConfig,
                         onToken: ((Int32) -> Bool)? = nil) throws -> [Int32] {
        try generateResult(prompt: prompt, config: config, onToken: onToken).tokens
    }
}

