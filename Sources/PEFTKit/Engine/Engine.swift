/// An attached adapter with its optimiser state (gradients and AdamW moments share the parameter layout).
final class AdapterSlot {
    let name: String
    let adapter: Adapter
    /// The adapter's parameters, then its task head's when it has one (`attachHead`).
    private(set) var opt: OptimizerState
    /// The task head trained and saved with this adapter (encoders; PEFT's `modules_to_save`).
    private(set) var head: TaskHead?
    /// True while the adapter is merged into the base weights (its hooks are then off).
    var merged = false
    /// The base weights this adapter replaced by its residual while attached (PiSSA, OLoRA; ResidualBase.swift).
    var rewrite: MergeRecord?

    init(name: String, adapter: Adapter) throws {
        self.name = name
        self.adapter = adapter
        opt = try OptimizerState(params: adapter.params.floats, count: adapter.parameterCount)
    }

    var parameterCount: Int { adapter.parameterCount }

    /// Gives the adapter `head` (replacing any other): one optimiser state over the adapter's parameters then the
    /// head's, the adapter's moments and step kept, the head's starting at zero.
    func attachHead(_ head: TaskHead) throws {
        let P = adapter.parameterCount
        let next = try OptimizerState(segments: [(adapter.params.floats, P), (head.params, head.parameterCount)])
        next.m.floats.update(from: opt.m.floats, count: P)
        next.v.floats.update(from: opt.v.floats, count: P)
        next.step = opt.step
        opt = next
        self.head = head
    }
}

/// Internal owner of weights, adapters and buffers. `Model` is its public face.
final class Engine {
    let config: ModelConfig
    /// The base weights, of the architecture's own type (see `Architectures/ArchitectureRegistry.swift`).
    var weights: any ModelWeights
    var adapters: [AdapterSlot] = []
    var activeName: String? = nil
    /// Activation and workspace buffers kept between calls; `buffers.invalidate()` drops them.
    let buffers = BufferCache()
    /// Adapters merged into the base weights, oldest first.
    var merges: [MergeRecord] = []
    /// Set while every base weight is trained (`enableFullFineTuning`).
    var full: FullTuning?
    /// Gradients of a split train step waiting for `applyGradients`.
    var pending: PendingGradients?
    /// Called during train steps (`computeGradients`); see `Model.setProgressHandler`.
    var trainProgress: ProgressHandler?

    init(config: ModelConfig, weights: any ModelWeights) throws {
        self.config = config
        self.weights = weights
    }

    /// The rotary table of architectures with rotary positions.
    var rope: RopeTable? { weights.rope }

    convenience init(randomConfig: ModelConfig, seed: UInt64, initStd: Float = 0.02) throws {
        try randomConfig.validate()
        try self.init(config: randomConfig, weights: try randomWeights(config: randomConfig, seed: seed, std: initStd))
    }

    convenience init(loadingFolder path: String, progress: ProgressHandler? = nil) throws {
        var (cfg, set) = try loadHFFolder(path: path)
        // BERT checkpoints of a task model (`BertForSequenceClassification`, ...) name the encoder `bert.`; the
        // pooler is optional (absent from `add_pooling_layer=False` and token-classification checkpoints).
        let prefix = cfg.architecture == .bert && !set.has("embeddings.word_embeddings.weight")
            && set.has("bert.embeddings.word_embeddings.weight") ? "bert." : ""
        if cfg.architecture == .bert { cfg.encoder?.pooler = set.has(prefix + "pooler.dense.weight") }
        var counter = ProgressCounter(progress, total: cfg.architecture.weights.tensors(cfg).count, what: "loading '\(path)'")
        let w = try loadWeights(config: cfg) { name, shape in
            let t = try set.tensor(prefix + name)
            guard t.shape == shape else {
                throw PEFTKitError.format("tensor '\(name)' in '\(path)' has shape \(t.shape), expected \(shape)")
            }
            try counter.advance()
            return t
        }
        try self.init(config: cfg, weights: w)
    }

    // MARK: adapters

    var active: AdapterSlot? {
        guard let n = activeName else { return nil }
        return adapters.first { $0.name == n && !$0.merged }
    }

    func adapter(named name: String) throws -> AdapterSlot {
        guard let s = adapters.first(where: { $0.name == name }) else {
            throw PEFTKitError.notFound("no adapter named '\(name)' (attached: \(adapters.map { $0.name }))")
        }
        return s
    }

    static func validateName(_ name: String) throws {
        try require(!name.isEmpty && name.utf8.count <= 128, "adapter name must be 1...128 bytes")
        let ok = name.unicodeScalars.allSatisfy { ($0.isASCII && ($0.properties.isAlphabetic || ("0"..."9").contains($0)))
            || $0 == "_" || $0 == "-" }
        try require(ok, "adapter name '\(name)' may only contain ASCII letters, digits, '_' and '-'")
    }

    func attachAdapter(name: String, config: AdapterConfig) throws {
        try Engine.validateName(name)
        guard !adapters.contains(where: { $0.name == name }) else {
            throw PEFTKitError.state("an adapter named '\(name)' is already attached")
        }
        try appendSlot(try AdapterSlot(name: name, adapter: try AdapterRegistry.make(config, model: self.config, context: adapterContext())))
    }

    func removeAdapter(name: String) throws {
        let s = try adapter(named: name)
        guard !s.merged else { throw PEFTKitError.state("adapter '\(name)' is merged: unmerge it before removing it") }
        try checkRestorableBase(s)
        restoreBase(s)
        adapters.removeAll { $0 === s }
        if activeName == name { activeName = nil }
        buffers.invalidate()
    }

    func setActive(_ name: String?) throws {
        if let name { _ = try adapter(named: name) }
        activeName = name
    }

    // MARK: validation

    func checkTokens(_ ids: UnsafeBufferPointer<Int32>, count: Int, what: String) throws {
        guard ids.count >= count, ids.baseAddress != nil || count == 0 else {
            throw PEFTKitError.invalidArgument("\(what) has \(ids.count) entries, expected \(count)")
        }
        let V = Int32(config.vocabSize)
        for i in 0..<count {
            let t = ids[i]
            guard t >= 0 && t < V else {
                throw PEFTKitError.invalidArgument("\(what)[\(i)] = \(t) is outside the vocabulary 0..<\(V)")
            }
        }
    }

    func checkLabels(_ labels: UnsafeBufferPointer<Int32>, count: Int) throws {
        guard labels.count >= count else {
            throw PEFTKitError.invalidArgument("labels has \(labels.count) entries, expected \(count)")
        }
        let V = Int32(config.vocabSize)
        for i in 0..<count {
            let t = labels[i]
            guard t == -100 || (t >= 0 && t < V) else {
                throw PEFTKitError.invalidArgument("labels[\(i)] = \(t) must be -100 or inside 0..<\(V)")
            }
        }
    }

    func checkShape(batch: Int, seqLen: Int, extra: Int = 0) throws {
        try require(batch > 0 && batch <= 1 << 16, "batch must be in 1...65536, got \(batch)")
        try require(seqLen > 0, "sequence length must be positive, got \(seqLen)")
        try require(seqLen + extra <= config.maxPositions,
                    "sequence length \(seqLen)\(extra > 0 ? " plus \(extra) virtual/prefix positions" : "") exceeds the model's maximum \(config.maxPositions)")
        let (_, o) = (batch * seqLen).multipliedReportingOverflow(by: config.vocabSize)
        try require(!o, "batch × sequence × vocabulary overflows")
        try rope?.reserve(seqLen + extra)
    }

    /// Shifted targets over rows of `virtual + T` positions, labels padded with `virtual` leading -100s:
    /// position t predicts label'[t+1]; the last position of each row predicts nothing. In packed rows
    /// (`segmentStarts`, [rows·T]) the last position of each record predicts nothing either.
    func fillTargets(_ out: UnsafeMutablePointer<Int32>, labels: UnsafeBufferPointer<Int32>, rowStart: Int, rows: Int,
                     seqLen T: Int, virtual Vt: Int = 0, segmentStarts: UnsafePointer<Int32>? = nil) -> Int {
        var count = 0
        let Tp = T + Vt
        for r in 0..<rows {
            for t in 0..<Tp {
                let j = t + 1 - Vt  // index into the real labels
                var v: Int32 = (t + 1 < Tp && j >= 0) ? labels[(rowStart + r) * T + j] : -100
                if let st = segmentStarts, t + 1 < Tp, Int(st[r * Tp + t + 1]) == t + 1 { v = -100 }
                out[r * Tp + t] = v
                if v != -100 { count += 1 }
            }
        }
        return count
    }

    // MARK: evaluation

    /// A forward pass without an update. `logits` receives every position's logits ([B, T, V]), or with
    /// `lastLogitsOnly` each row's last position's ([B, V]). `tokenLogprobs` ([B, T]) receives at [b, t] the
    /// log-probability of labels[b, t] (0 where it does not count), `rowLosses` / `rowTokens` ([B]) each row's mean
    /// loss and counted tokens. Without `computeLoss` and any of those, the LM head runs on the last rows only and
    /// the returned loss is 0 (tokens still counted).
    func evaluate(inputIDs: UnsafeBufferPointer<Int32>, labels: UnsafeBufferPointer<Int32>?, batch B: Int, seqLen T: Int,
                  logits: UnsafeMutableBufferPointer<Float>?, lastLogitsOnly: Bool = false, computeLoss: Bool = true,
                  tokenLogprobs: UnsafeMutableBufferPointer<Float>? = nil, rowLosses: UnsafeMutableBufferPointer<Float>? = nil,
                  rowTokens: UnsafeMutableBufferPointer<Int>? = nil,
                  segmentIDs: UnsafeBufferPointer<Int32>? = nil) throws -> EvalResult {
        let adapter = active?.adapter
        let Vt = adapter?.virtualTokens ?? 0, P = adapter?.prefixLength ?? 0
        try validateBatch(inputIDs: inputIDs, labels: labels, batch: B, seqLen: T, adapter: adapter)
        if let segmentIDs { try validatePacking(segmentIDs: segmentIDs, batch: B, seqLen: T, adapter: adapter) }
        let N = B * T, V = config.vocabSize, C = config.hiddenSize
        if let logits {
            let need = lastLogitsOnly ? B * V : N * V
            try require(logits.count >= need, "logits buffer holds \(logits.count) floats, needs \(need)")
        }
        if let tokenLogprobs { try require(tokenLogprobs.count >= N, "token log-probability buffer holds \(tokenLogprobs.count) floats, needs \(N)") }
        if let rowLosses { try require(rowLosses.count >= B, "row loss buffer holds \(rowLosses.count) floats, needs \(B)") }
        if let rowTokens { try require(rowTokens.count >= B, "row token buffer holds \(rowTokens.count) entries, needs \(B)") }
        let needLoss = computeLoss || tokenLogprobs != nil || rowLosses != nil || rowTokens != nil
        adapter?.beginPass(training: false)
        let Tp = T + Vt
        let buf = try buffers.inference(engine: self, batch: B, tq: Tp, tk: Tp + P, adapter: adapter)
        guard let ids = inputIDs.baseAddress else { throw PEFTKitError.invalidArgument("input_ids is empty") }
        let segments = segmentIDs.map {
            PackedSegments.fill(segmentIDs: $0.baseAddress!, rows: B, seqLen: T, starts: buf.segmentStarts,
                                positions: buf.positions)
        }
        runStack(ids: ids, batch: B, seqLen: T, virtual: true, adapter: adapter, buffers: .infer(buf), segments: segments)
        let lab = labels ?? inputIDs
        let count = fillTargets(buf.targets, labels: lab, rowStart: 0, rows: B, seqLen: T, virtual: Vt,
                                segmentStarts: segments?.starts)
        if let tokenLogprobs { tokenLogprobs.baseAddress!.update(repeating: 0, count: N) }
        var lossSum = 0.0
        try withUnsafeTemporaryAllocation(of: Float.self, capacity: TrainBuffers.headChunk) { scratch in
            let perPosition = tokenLogprobs != nil ? scratch.baseAddress : nil
            // LM head per batch row over the real positions (and the last virtual one, which predicts token 0); only
            // the last position when neither the loss nor every position's logits are wanted.
            for b in 0..<B {
                let targets = buf.targets + b * Tp
                let first = needLoss || (logits != nil && !lastLogitsOnly) ? max(0, Vt - 1) : Tp - 1
                var r0 = first
                var rowSum = 0.0
                while r0 < Tp {
                    let rows = min(TrainBuffers.headChunk, Tp - r0)
                    let src = buf.lnf + (b * Tp + r0) * C
                    weights.lmHead.forward(out: buf.logits, inp: src, rows: rows)
                    if needLoss && count > 0 {
                        let (s, _) = crossEntropyForwardBackward(logits: buf.logits, losses: perPosition, targets: targets + r0,
                                                                 N: rows, V: V, gradScale: 0, computeGrad: false)
                        rowSum += s
                        if let tokenLogprobs, let perPosition {
                            for r in 0..<rows {
                                let j = r0 + r + 1 - Vt  // the label position this row scores
                                if j >= 0 && j < T && targets[r0 + r] != -100 { tokenLogprobs[b * T + j] = -perPosition[r] }
                            }
                        }
                    }
                    if let logits {
                        for r in 0..<rows where r0 + r >= Vt {
                            if lastLogitsOnly {
                                if r0 + r == Tp - 1 { (logits.baseAddress! + b * V).update(from: buf.logits + r * V, count: V) }
                            } else {
                                (logits.baseAddress! + (b * T + r0 + r - Vt) * V).update(from: buf.logits + r * V, count: V)
                            }
                        }
                    }
                    r0 += rows
                }
                lossSum += rowSum
                var rowCount = 0
                for t in 0..<Tp where targets[t] != -100 { rowCount += 1 }
                rowLosses?[b] = rowCount > 0 ? Float(rowSum / Double(rowCount)) : 0
                rowTokens?[b] = rowCount
            }
        }
        guard needLoss else { return EvalResult(loss: 0, tokens: count) }
        let loss = count > 0 ? Float(lossSum / Double(count)) : 0
        guard loss.isFinite else { throw PEFTKitError.numerical("the forward pass produced a non-finite loss") }
        return EvalResult(loss: loss, tokens: count)
    }
}
