// Full fine-tuning: every base weight (embeddings, norms, linears, biases) trained with AdamW. It is the
// baseline adapter methods are measured against, and what pre-training a small model needs.
// (`Engine/TrainingState.swift` holds the trainable block.)

extension Engine {
    func enableFullFineTuning() throws {
        guard full == nil else { return }
        guard merges.isEmpty else {
            throw PEFTKitError.state("adapters are merged into the base weights: unmerge them before full fine-tuning")
        }
        if let s = adapters.first(where: { $0.rewrite != nil }) {
            throw PEFTKitError.state("adapter '\(s.name)' replaced base weights by a residual (PiSSA/OLoRA): remove it before full fine-tuning")
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
