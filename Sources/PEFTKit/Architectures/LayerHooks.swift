// What a layer calls on the adapter that runs with it. Architectures compose their layers from kernels and call
// these hooks at fixed points: around each frozen linear, on the residual after each sub-layer, and on the
// attention's keys and values (a prefix). `Adapters/Adapter.swift` implements them (doing nothing by default);
// each method overrides the ones it needs.

/// What the engine tells an adapter about the current pass.
struct PassInfo {
    /// Rows of the batch (batch × sequence).
    var rows: Int
    /// Activation slot: the layer index when training (each layer keeps its own), 0 for inference.
    var slot: Int
    var training: Bool
}

/// Where a bottleneck unit sits in a layer.
enum ResidualSite: Int, CaseIterable {
    /// After the attention sub-layer (AdapterHub `attention_adapters`, config key `mh_adapter`).
    case attention = 0
    /// After the feed-forward sub-layer (AdapterHub `output_adapters`, config key `output_adapter`).
    case output = 1
}

/// The sub-layer's own LayerNorm in a post-LayerNorm layer (BERT), handed to a unit on its residual: a unit that
/// reads x + h (AdapterHub's `original_ln_before`) normalises it with these weights first, as AdapterHub does
/// there. Pre-norm decoders pass none.
struct SubLayerNorm {
    let weight: UnsafeMutablePointer<Float>
    let bias: UnsafeMutablePointer<Float>
    let eps: Float
}

/// The hooks a layer calls. Class-bound: adapters are objects whose state the hooks update.
protocol LayerHooks: AnyObject {
    /// Whether the linear at `site` of layer `l` is hooked (lets the layer skip work and keep inputs).
    func hooks(_ l: Int, _ site: LinearSite) -> Bool
    /// Whether the hooks read dL/d(the first layer's input), as virtual-token embeddings do; without a reader (and
    /// without trained base weights) the first layer's backward may skip computing it.
    var readsInputGradient: Bool { get }
    /// Before the frozen linear at `site`; may return a replacement input.
    func linearInput(_ l: Int, _ site: LinearSite, _ inp: UnsafeMutablePointer<Float>, ldi: Int,
                     _ p: PassInfo) -> UnsafeMutablePointer<Float>
    /// After the frozen linear wrote `out` from input `inp`.
    func linearOutput(_ l: Int, _ site: LinearSite, out: UnsafeMutablePointer<Float>, ldo: Int,
                      inp: UnsafeMutablePointer<Float>, ldi: Int, _ p: PassInfo)
    /// Backward of `linearOutput`: may return a replacement output gradient for the frozen linear's backward and
    /// accumulates parameter gradients into `grads`.
    func linearOutputBackward(_ l: Int, _ site: LinearSite, dout: UnsafeMutablePointer<Float>, lddo: Int,
                              inp: UnsafeMutablePointer<Float>, ldi: Int, dinp: UnsafeMutablePointer<Float>, lddi: Int,
                              grads: UnsafeMutablePointer<Float>, _ p: PassInfo) -> UnsafeMutablePointer<Float>
    /// Backward of `linearInput`, after the frozen linear's input gradient was written into `dinp`.
    func linearInputBackward(_ l: Int, _ site: LinearSite, dinp: UnsafeMutablePointer<Float>, lddi: Int,
                             inp: UnsafeMutablePointer<Float>, ldi: Int, grads: UnsafeMutablePointer<Float>, _ p: PassInfo)
    /// Whether a unit sits on the residual after sub-layer `site` of layer `l`.
    func hasUnit(_ l: Int, _ site: ResidualSite) -> Bool
    /// out = x + h + A(z); `norm` is the sub-layer's LayerNorm of a post-LN layer (nil in pre-norm decoders).
    func unitForward(_ l: Int, _ site: ResidualSite, out: UnsafeMutablePointer<Float>, x: UnsafeMutablePointer<Float>,
                     h: UnsafeMutablePointer<Float>, norm: SubLayerNorm?, _ p: PassInfo)
    /// Writes dz (the gradient of the unit's input x + h, or h), accumulates parameter gradients; returns whether
    /// dz also flows to x.
    func unitBackward(_ l: Int, _ site: ResidualSite, dz: UnsafeMutablePointer<Float>, dout: UnsafeMutablePointer<Float>,
                      grads: UnsafeMutablePointer<Float>, scratchC: UnsafeMutablePointer<Float>, norm: SubLayerNorm?,
                      _ p: PassInfo) -> Bool
    /// Layer `l`'s prefix keys and values, [prefix, KVH·D] each; nil without a prefix.
    func prefixKV(_ l: Int) -> (UnsafeMutablePointer<Float>, UnsafeMutablePointer<Float>)?
    /// Where layer `l`'s prefix key/value gradients accumulate; nil without a prefix.
    func prefixKVGrad(_ l: Int, grads: UnsafeMutablePointer<Float>) -> (UnsafeMutablePointer<Float>, UnsafeMutablePointer<Float>)?
}
