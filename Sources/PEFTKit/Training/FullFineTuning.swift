// Full fine-tuning: every base weight (embeddings, norms, linears, biases) trained with AdamW. It is the
// baseline adapter methods are measured against, and what pre-training a small model needs.
//
// Layout (llm.c style): the base weights are copied into one owned block, in the order of
// the architecture's tensor table (`ModelWeights.tensors`); gradients and both AdamW moments are blocks of the same size and layout, so the
// optimiser is one flat loop and `gradWeights` (weights of the same architecture whose pointers lie in the gradient block) gives
// each backward kernel the gradient of exactly the tensor it reads. A memory-mapped base is copied, never
// written: the file stays untouched.

/// Trainable base weights with their gradients and AdamW moments.
final class FullTuning {
    /// The owned weight block.
    let params: Storage
    /// Its gradients, moments and step count.
    let opt: OptimizerState
    /// Views of the gradient block with the layout of the engine's weights (tied LM head = the embedding's gradient).
    let gradWeights: any ModelWeights

    /// Copies `weights` into an owned block and returns the new weights (pointing into it) with the state.
    static func make(config c: ModelConfig, weights: any ModelWeights) throws -> (FullTuning, any ModelWeights) {
        var offsets: [String: Int] = [:]
        var total = 0
        for spec in c.architecture.weights.tensors(c) {
            offsets[spec.name] = total
            let n = spec.shape.reduce(1, *)
            total += (n + 15) / 16 * 16  // every tensor starts 64-byte aligned
        }
        let params = try Storage.allocate(floats: total)
        let opt = try OptimizerState(params: params.floats, count: total)
        let grads = opt.grads
        var source: [String: Tensor] = [:]
        for (name, t) in weights.named { source[name] = t }
        let owned = try loadWeights(config: c) { name, shape in
            guard let src = source[name], let off = offsets[name] else {
                throw PEFTKitError.state("base tensor '\(name)' is missing")
            }
            let t = Tensor(shape: shape, data: params.floats + off, storage: params)
            t.data.update(from: src.data, count: t.count)
            return t
        }
        let gw = try loadWeights(config: c) { name, shape in
            guard let off = offsets[name] else { throw PEFTKitError.state("base tensor '\(name)' is missing") }
            return Tensor(shape: shape, data: grads.floats + off, storage: grads)
        }
        return (FullTuning(params: params, opt: opt, gradWeights: gw), owned)
    }

    private init(params: Storage, opt: OptimizerState, gradWeights: any ModelWeights) {
        self.params = params; self.opt = opt; self.gradWeights = gradWeights
    }

    /// Trainable parameters (the padding between tensors is not counted).
    static func parameterCount(_ c: ModelConfig) -> Int {
        c.architecture.weights.tensors(c).reduce(0) { $0 + $1.shape.reduce(1, *) }
    }
}

extension Engine {
    func enableFullFineTuning() throws {
        guard full == nil else { return }
        guard merges.isEmpty else {
            throw PEFTKitError.state("adapters are merged into the base weights: unmerge them before full fine-tuning")
        }
        let (ft, owned) = try FullTuning.make(config: config, weights: weights)
        weights = owned
        full = ft
        buffers.invalidate()
    }

    func disableFullFineTuning() {
        full = nil
        buffers.invalidate()
    }
}

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
