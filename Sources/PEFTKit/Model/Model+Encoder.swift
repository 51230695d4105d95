// The encoder face of `Model` (BERT): hidden states of a padded batch, sentence embeddings and the pooler.

extension Model {
    /// Runs an encoder (BERT) over `batch` rows of `seqLen` ids and calls `body` with the hidden states of every
    /// row of the pass ([batch, V + seqLen, hidden]: prompt tuning's V virtual rows first; valid only inside
    /// `body`) and the rows' layout (the mask extended over the virtual rows).
    private func withHiddenStates<R>(inputIDs: [Int32], attentionMask: [Int32]?, tokenTypeIDs: [Int32]?, batch: Int,
                                     seqLen: Int, _ body: (UnsafeMutablePointer<Float>, EncoderRows) throws -> R) throws -> R {
        try exclusive {
            try inputIDs.withUnsafeBufferPointer { ids in
                try withOptionalBuffer(tokenTypeIDs) { types in
                    try withOptionalBuffer(attentionMask) { mask in
                        try engine.validateEncoderBatch(inputIDs: ids, typeIDs: types, mask: mask, batch: batch, seqLen: seqLen,
                                                        adapter: engine.active?.adapter)
                        let inputs = EncoderInputs(typeIDs: types?.baseAddress, mask: mask?.baseAddress)
                        let (h, rows) = try engine.encode(inputIDs: ids.baseAddress!, inputs: inputs, batch: batch, seqLen: seqLen)
                        return try body(h.floats, rows)
                    }
                }
            }
        }
    }

    /// Hidden states of the last layer of an encoder (BERT), `[batch, seqLen, hidden]` row-major, with the active
    /// adapter. `attentionMask` ([batch·seqLen], 1 = token, 0 = padding; nil = no padding) keeps padding out of
    /// every other position's attention, so a padded row's real positions equal the unpadded row's.
    /// `tokenTypeIDs` default to 0. With prompt tuning, the rows are the real positions (the virtual tokens'
    /// own hidden states are left out).
    ///
    /// ```swift
    /// let model = try Model.load(path: "all-MiniLM-L6-v2")
    /// let h = try model.hiddenStates(inputIDs: ids, attentionMask: mask, batch: 2, seqLen: 16)
    /// ```
    public func hiddenStates(inputIDs: [Int32], attentionMask: [Int32]? = nil, tokenTypeIDs: [Int32]? = nil, batch: Int,
                             seqLen: Int) throws -> [Float] {
        try withHiddenStates(inputIDs: inputIDs, attentionMask: attentionMask, tokenTypeIDs: tokenTypeIDs, batch: batch,
                             seqLen: seqLen) { h, rows in
            var out = [Float](repeating: 0, count: batch * seqLen * config.hiddenSize)
            out.withUnsafeMutableBufferPointer { rows.gatherReal($0.baseAddress!, h, config.hiddenSize) }
            return out
        }
    }

    /// Sentence embeddings `[batch, hidden]`: the mean of the hidden states over the unmasked positions, L2
    /// normalised when `normalize` (what sentence-transformers computes for all-MiniLM-L6-v2). With prompt tuning
    /// the mean covers the virtual tokens too (PEFT's extended attention mask).
    public func embed(inputIDs: [Int32], attentionMask: [Int32]? = nil, tokenTypeIDs: [Int32]? = nil, batch: Int,
                      seqLen: Int, normalize: Bool = true) throws -> [Float] {
        try withHiddenStates(inputIDs: inputIDs, attentionMask: attentionMask, tokenTypeIDs: tokenTypeIDs, batch: batch,
                             seqLen: seqLen) { h, rows in
            let C = config.hiddenSize
            var out = [Float](repeating: 0, count: batch * C)
            out.withUnsafeMutableBufferPointer { o in
                meanPoolForward(o.baseAddress!, h, mask: rows.mask, batch, rows.width, C)
                if normalize { l2NormalizeRows(o.baseAddress!, batch, C) }
            }
            return out
        }
    }

    /// BERT's pooled output `[batch, hidden]`: tanh(W·h[CLS] + b), as `BertModel`'s `pooler_output` (with prompt
    /// tuning the first row is the first virtual token's, as under PEFT). Throws
    /// `unsupported` when the model has no pooler.
    public func pooledOutput(inputIDs: [Int32], attentionMask: [Int32]? = nil, tokenTypeIDs: [Int32]? = nil, batch: Int,
                             seqLen: Int) throws -> [Float] {
        guard let pooler = (engine.weights as? BERTWeights)?.pooler else {
            throw PEFTKitError.unsupported("this model has no pooler (pooler.dense)")
        }
        return try withHiddenStates(inputIDs: inputIDs, attentionMask: attentionMask, tokenTypeIDs: tokenTypeIDs,
                                    batch: batch, seqLen: seqLen) { h, rows in
            let C = config.hiddenSize
            var out = [Float](repeating: 0, count: batch * C)
            out.withUnsafeMutableBufferPointer { poolerForward($0.baseAddress!, h, pooler: pooler, batch, rows.width, C) }
            return out
        }
    }
}

/// Calls `body` with the array's buffer, or nil.
func withOptionalBuffer<R>(_ a: [Int32]?, _ body: (UnsafeBufferPointer<Int32>?) throws -> R) rethrows -> R {
    guard let a else { return try body(nil) }
    return try a.withUnsafeBufferPointer { try body($0) }
}

extension Model {
    /// Gives the active adapter a task head of `kind` with `outputs` outputs (classes, or values for regression)
    /// on an encoder (BERT), replacing any head it had. The head belongs to that adapter, as PEFT's
    /// `modules_to_save`: it trains with it in one optimiser state (`headTrainStep`) and is saved with it. A
    /// sequence head reads the pooler's output (as `BertForSequenceClassification`), or the mean over the mask
    /// when the model has no pooler; a token head reads every position's hidden state
    /// (`BertForTokenClassification`). Weights N(0, 0.02), bias 0.
    ///
    /// ```swift
    /// try model.attachHead(.classification, outputs: 3)
    /// let r = try model.headTrainStep(inputIDs: ids, attentionMask: mask, labels: [2, 0], batch: 2, seqLen: 16,
    ///                                 config: TrainConfig())
    /// ```
    public func attachHead(_ kind: HeadKind, outputs: Int, seed: UInt64 = 0) throws {
        try exclusive {
            guard config.encoder != nil, config.architecture.weights.bidirectional else {
                throw PEFTKitError.unsupported("a task head needs an encoder (BERT) model, not \(config.architecture)")
            }
            try require(outputs > 0 && outputs <= 1 << 16, "outputs must be in 1...65536, got \(outputs)")
            guard let slot = engine.active else {
                throw PEFTKitError.state("no active adapter: a task head belongs to the active adapter")
            }
            try slot.attachHead(try TaskHead(kind: kind, outputs: outputs, features: config.hiddenSize, seed: seed))
        }
    }

    /// The active adapter's head: its kind and number of outputs, or nil.
    public func headInfo() throws -> (kind: HeadKind, outputs: Int)? {
        try exclusive { engine.active?.head.map { ($0.kind, $0.outputs) } }
    }

    /// The active adapter's head outputs: `[batch, outputs]` (classification logits, regression values) or
    /// `[batch, seqLen, outputs]` (token logits). With `labels` (classification: [batch]; tokens:
    /// [batch·seqLen]; -100 ignored) or `targets` (regression: [batch·outputs]) also the mean loss (cross-entropy
    /// or squared error), as the train step computes it.
    public func headOutputs(inputIDs: [Int32], attentionMask: [Int32]? = nil, tokenTypeIDs: [Int32]? = nil,
                            labels: [Int32]? = nil, targets: [Float]? = nil, batch: Int,
                            seqLen: Int) throws -> (outputs: [Float], loss: Float?) {
        try withHiddenStates(inputIDs: inputIDs, attentionMask: attentionMask, tokenTypeIDs: tokenTypeIDs, batch: batch,
                             seqLen: seqLen) { h, rows in
            let (_, head) = try engine.activeHead()
            return try withOptionalBuffer(labels) { lab in
                try withOptionalFloats(targets) { tg in
                    let t = (lab == nil && tg == nil) ? nil : HeadTargets(labels: lab, values: tg)
                    if let t { try engine.validateHeadTargets(head, t, batch: batch, seqLen: seqLen) }
                    return try engine.headOutputs(head, hidden: h, rows: rows, targets: t)
                }
            }
        }
    }

    /// One training step of the active adapter and its head on `labels` (classification: [batch]; tokens:
    /// [batch·seqLen]; -100 ignored) or `targets` (regression: [batch·outputs]): mean cross-entropy or squared
    /// error, one gradient clip and one AdamW update over both. `tokens` of the result counts the labels (or
    /// rows) that counted.
    public func headTrainStep(inputIDs: [Int32], attentionMask: [Int32]? = nil, tokenTypeIDs: [Int32]? = nil,
                              labels: [Int32]? = nil, targets: [Float]? = nil, batch: Int, seqLen: Int,
                              config tc: TrainConfig) throws -> TrainStepResult {
        try exclusive {
            try inputIDs.withUnsafeBufferPointer { ids in
                try withOptionalBuffer(tokenTypeIDs) { types in
                    try withOptionalBuffer(attentionMask) { mask in
                        try withOptionalBuffer(labels) { lab in
                            try withOptionalFloats(targets) { tg in
                                try engine.headTrainStep(inputIDs: ids, typeIDs: types, mask: mask,
                                                         targets: HeadTargets(labels: lab, values: tg), batch: batch,
                                                         seqLen: seqLen, config: tc)
                            }
                        }
                    }
                }
            }
        }
    }

    /// `attachHead(.classification, outputs: classes, seed:)`.
    public func attachClassifier(classes: Int, seed: UInt64 = 0) throws {
        try attachHead(.classification, outputs: classes, seed: seed)
    }

    /// The active adapter's head outputs (`headOutputs` without a loss): logits `[batch, classes]` for a
    /// classifier.
    public func classify(inputIDs: [Int32], attentionMask: [Int32]? = nil, tokenTypeIDs: [Int32]? = nil, batch: Int,
                         seqLen: Int) throws -> [Float] {
        try headOutputs(inputIDs: inputIDs, attentionMask: attentionMask, tokenTypeIDs: tokenTypeIDs, batch: batch,
                        seqLen: seqLen).outputs
    }

    /// `headTrainStep` with class labels.
    public func classifierTrainStep(inputIDs: [Int32], attentionMask: [Int32]? = nil, tokenTypeIDs: [Int32]? = nil,
                                    labels: [Int32], batch: Int, seqLen: Int, config tc: TrainConfig) throws -> TrainStepResult {
        try headTrainStep(inputIDs: inputIDs, attentionMask: attentionMask, tokenTypeIDs: tokenTypeIDs, labels: labels,
                          batch: batch, seqLen: seqLen, config: tc)
    }
}

/// Calls `body` with the array's buffer, or nil.
func withOptionalFloats<R>(_ a: [Float]?, _ body: (UnsafeBufferPointer<Float>?) throws -> R) rethrows -> R {
    guard let a else { return try body(nil) }
    return try a.withUnsafeBufferPointer { try body($0) }
}
