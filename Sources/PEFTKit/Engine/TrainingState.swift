// What the engine keeps for training besides the adapters' own optimiser state: the trainable copy of the base
// weights under full fine-tuning (Training/FullFineTuning.swift turns it on and off), and the gradients of a
// split train step waiting to be applied (Training/Trainer.swift).
//
// Full fine-tuning's layout (llm.c style): the base weights are copied into one owned block, in the order of the
// architecture's tensor table (`ModelWeights.tensors`); gradients and both AdamW moments are blocks of the same
// size and layout (`OptimizerState`), so the optimiser is one flat loop, and `gradWeights` (weights of the same
// architecture whose pointers lie in the gradient block) gives each backward kernel the gradient of exactly the
// tensor it reads. A memory-mapped base is copied, never written: the file stays untouched.

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
        try requireWidened(weights, for: "full fine-tuning")
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

/// Gradients computed by the first half of a train step and not yet applied.
struct PendingGradients {
    let opt: OptimizerState
    /// The step count they were computed at: another update in between makes them stale.
    let step: Int
    let loss: Float
    let tokens: Int
    /// The training random state before the forward pass, restored if the update is refused.
    let randomState: (TrainingRandomState, Rng)?
}
