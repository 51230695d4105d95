// The encoder face of `Model` (BERT): hidden states of a padded batch, sentence embeddings and the pooler.

extension Model {
    /// Runs an encoder (BERT) over `batch` rows of `seqLen` ids and calls `body` with the hidden states
    /// ([batch, seqLen, hidden], valid only inside `body`).
    private func withHiddenStates<R>(inputIDs: [Int32], attentionMask: [Int32]?, tokenTypeIDs: [Int32]?, batch: Int,
                                     seqLen: Int, _ body: (UnsafeMutablePointer<Float>, EncoderInputs) throws -> R) throws -> R {
        try exclusive {
            try inputIDs.withUnsafeBufferPointer { ids in
                try withOptionalBuffer(tokenTypeIDs) { types in
                    try withOptionalBuffer(attentionMask) { mask in
                        try engine.validateEncoderBatch(inputIDs: ids, typeIDs: types, mask: mask, batch: batch, seqLen: seqLen,
                                                        adapter: engine.active?.adapter)
                        let inputs = EncoderInputs(typeIDs: types?.baseAddress, mask: mask?.baseAddress)
                        let n = batch * seqLen * config.hiddenSize
                        let h = try Storage.allocate(floats: n)
                        try engine.encode(inputIDs: ids.baseAddress!, inputs: inputs, batch: batch, seqLen: seqLen, into: h.floats)
                        return try body(h.floats, inputs)
                    }
                }
            }
        }
    }

    /// Hidden states of the last layer of an encoder (BERT), `[batch, seqLen, hidden]` row-major, with the active
    /// adapter. `attentionMask` ([batch·seqLen], 1 = token, 0 = padding; nil = no padding) keeps padding out of
    /// every other position's attention, so a padded row's real positions equal the unpadded row's.
    /// `tokenTypeIDs` default to 0.
    ///
    /// ```swift
    /// let model = try Model.load(path: "all-MiniLM-L6-v2")
    /// let h = try model.hiddenStates(inputIDs: ids, attentionMask: mask, batch: 2, seqLen: 16)
    /// ```
    public func hiddenStates(inputIDs: [Int32], attentionMask: [Int32]? = nil, tokenTypeIDs: [Int32]? = nil, batch: Int,
                             seqLen: Int) throws -> [Float] {
        try withHiddenStates(inputIDs: inputIDs, attentionMask: attentionMask, tokenTypeIDs: tokenTypeIDs, batch: batch,
                             seqLen: seqLen) { h, _ in
            Array(UnsafeBufferPointer(start: h, count: batch * seqLen * config.hiddenSize))
        }
    }

    /// Sentence embeddings `[batch, hidden]`: the mean of the hidden states over the unmasked positions, L2
    /// normalised when `normalize` (what sentence-transformers computes for all-MiniLM-L6-v2).
    public func embed(inputIDs: [Int32], attentionMask: [Int32]? = nil, tokenTypeIDs: [Int32]? = nil, batch: Int,
                      seqLen: Int, normalize: Bool = true) throws -> [Float] {
        try withHiddenStates(inputIDs: inputIDs, attentionMask: attentionMask, tokenTypeIDs: tokenTypeIDs, batch: batch,
                             seqLen: seqLen) { h, inputs in
            let C = config.hiddenSize
            var out = [Float](repeating: 0, count: batch * C)
            out.withUnsafeMutableBufferPointer { o in
                meanPoolForward(o.baseAddress!, h, mask: inputs.mask, batch, seqLen, C)
                if normalize { l2NormalizeRows(o.baseAddress!, batch, C) }
            }
            return out
        }
    }

    /// BERT's pooled output `[batch, hidden]`: tanh(W·h[CLS] + b), as `BertModel`'s `pooler_output`. Throws
    /// `unsupported` when the model has no pooler.
    public func pooledOutput(inputIDs: [Int32], attentionMask: [Int32]? = nil, tokenTypeIDs: [Int32]? = nil, batch: Int,
                             seqLen: Int) throws -> [Float] {
        guard let pooler = (engine.weights as? BERTWeights)?.pooler else {
            throw PEFTKitError.unsupported("this model has no pooler (pooler.dense)")
        }
        return try withHiddenStates(inputIDs: inputIDs, attentionMask: attentionMask, tokenTypeIDs: tokenTypeIDs,
                                    batch: batch, seqLen: seqLen) { h, _ in
            let C = config.hiddenSize
            var out = [Float](repeating: 0, count: batch * C)
            out.withUnsafeMutableBufferPointer { poolerForward($0.baseAddress!, h, pooler: pooler, batch, seqLen, C) }
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
    /// Attaches a sequence-classification head of `classes` outputs to an encoder (BERT): the model's pooler
    /// (frozen) then a linear classifier (N(0, 0.02) weight, zero bias), as `BertForSequenceClassification`;
    /// over mean pooling when the model has no pooler. It trains with the active adapter in
    /// `classifierTrainStep` (replacing any head attached before).
    ///
    /// ```swift
    /// try model.attachClassifier(classes: 3)
    /// let r = try model.classifierTrainStep(inputIDs: ids, attentionMask: mask, labels: [2, 0], batch: 2, seqLen: 16,
    ///                                       config: TrainConfig())
    /// ```
    public func attachClassifier(classes: Int, seed: UInt64 = 0) throws {
        try exclusive {
            try require(config.encoder != nil, "a classifier head needs an encoder (BERT) model")
            try require(classes > 0 && classes <= 1 << 16, "classes must be in 1...65536, got \(classes)")
            engine.classifier = try SequenceClassifier(classes: classes, features: config.hiddenSize, seed: seed)
        }
    }

    /// The classifier head's logits `[batch, classes]` with the active adapter.
    public func classify(inputIDs: [Int32], attentionMask: [Int32]? = nil, tokenTypeIDs: [Int32]? = nil, batch: Int,
                         seqLen: Int) throws -> [Float] {
        guard let head = engine.classifier else { throw PEFTKitError.state("no classifier head: call attachClassifier first") }
        return try withHiddenStates(inputIDs: inputIDs, attentionMask: attentionMask, tokenTypeIDs: tokenTypeIDs, batch: batch,
                                    seqLen: seqLen) { h, inputs in
            let C = config.hiddenSize, K = head.head.classes
            let pooled = try Storage.allocate(floats: batch * C)
            engine.classifierFeatures(pooled.floats, hidden: h, mask: inputs.mask, batch: batch, seqLen: seqLen)
            var out = [Float](repeating: 0, count: batch * K)
            out.withUnsafeMutableBufferPointer { head.head.forward($0.baseAddress!, pooled.floats, params: head.params, batch) }
            return out
        }
    }

    /// One training step of the active adapter and the classifier head on `labels` ([batch], -100 = ignored):
    /// mean cross-entropy, one gradient clip over both, AdamW on both.
    public func classifierTrainStep(inputIDs: [Int32], attentionMask: [Int32]? = nil, tokenTypeIDs: [Int32]? = nil,
                                    labels: [Int32], batch: Int, seqLen: Int, config tc: TrainConfig) throws -> TrainStepResult {
        try exclusive {
            try inputIDs.withUnsafeBufferPointer { ids in
                try withOptionalBuffer(tokenTypeIDs) { types in
                    try withOptionalBuffer(attentionMask) { mask in
                        try labels.withUnsafeBufferPointer { lab in
                            try engine.classifierTrainStep(inputIDs: ids, typeIDs: types, mask: mask, labels: lab, batch: batch,
                                                           seqLen: seqLen, config: tc)
                        }
                    }
                }
            }
        }
    }
}
