// The training step's choice of what each trained layer keeps for its backward (TrainConfig.activationMemory),
// read by the layers' buffers (Engine/BufferCache.swift) and by the architectures' backward passes.

/// What a trained layer keeps for its backward pass (without gradient checkpointing, which keeps less still).
/// Every policy gives the same gradients, bit for bit: a recomputation runs the forward's own kernels on the same
/// inputs, with the adapter's dropout masks redrawn from the same generator state.
public enum ActivationMemory: String, Sendable, CaseIterable {
    /// Each layer keeps its q|k|v projections and its attention block's output stream x1 (the fastest backward).
    case keep
    /// Each layer keeps neither: its backward first recomputes the attention block from the layer's input (the
    /// input norm, the q/k/v and output projections, attention, the residual). One more q/k/v and output
    /// projection per layer and step; (qkvWidth + hidden) floats less per row and layer (Llama and GPT-2; BERT
    /// always keeps them).
    case recomputeAttention = "recompute-attention"
    /// `recomputeAttention`, and a gated MLP's up projection too (Llama: the layer keeps the gate's output but
    /// not the up projection's, except in layers whose gate projection the adapter hooks): one more up
    /// projection per layer and step; intermediate-size floats less per row and layer.
    case recomputeAttentionAndUp = "recompute-attention-up"
    /// Over a base whose attention projections are kept in quantized blocks (there the activations dominate a
    /// step's memory): `recomputeAttention`, and the up projection too in the top sixth of the trained layers
    /// (`automaticUpEvery`; the top layer's costs nothing: its forward values are still there). `keep` otherwise.
    case automatic

    /// `automatic` over a quantized base recomputes the up projection in one trained layer of this many (rounded
    /// up, the top ones). Each such layer keeps intermediate-size floats per row less for one more up projection
    /// in the step: on SmolLM2-135M (B 4 x T 256, 2 cores) 6 MiB for about 0.25 % of the step's time.
    static let automaticUpEvery = 6
}
