extension Model {
    /// Makes every base weight trainable: embeddings, norms, linear weights and biases (tied embeddings are
    /// one tensor). The weights are first copied into memory owned by the model (a memory-mapped file is
    /// never written), and room for their gradients and AdamW moments is allocated: about 4× the model's fp32
    /// size in total. While enabled, `trainStep` updates the base weights, and no adapter may be active.
    /// Calling it again does nothing. Throws `state` while an adapter is merged, `outOfMemory` when the
    /// copies do not fit.
    ///
    /// ```swift
    /// let model = try Model.load(path: "smollm2-folder")
    /// try model.enableFullFineTuning()
    /// let r = try model.trainStep(inputIDs: ids, batch: 4, seqLen: 256, config: TrainConfig())
    /// ```
    public func enableFullFineTuning() throws {
        try exclusive { try engine.enableFullFineTuning() }
    }

    /// Ends full fine-tuning: frees the gradients and optimiser moments. The trained weights stay.
    public func disableFullFineTuning() throws {
        try exclusive { engine.disableFullFineTuning() }
    }

    /// Whether `trainStep` trains every base weight (see `enableFullFineTuning`).
    public var isFullFineTuning: Bool { (try? exclusive { engine.full != nil }) ?? false }

    /// Number of base-model parameters (what full fine-tuning trains).
    public var baseParameterCount: Int { FullTuning.parameterCount(config) }
}
