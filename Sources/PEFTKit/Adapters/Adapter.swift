/// Base of every adapter method. The engine calls the hooks at fixed points of each layer; a method
/// overrides the ones it needs. All trainable parameters live in one flat block (`params`), so gradients and
/// AdamW moments share its layout and "trainable = this block" holds by construction.
class Adapter: LayerHooks {
    let model: ModelConfig
    /// The configuration the adapter was made from.
    let adapterConfig: AdapterConfig
    let parameterCount: Int
    let params: Storage

    init(model: ModelConfig, config: AdapterConfig, parameterCount: Int) throws {
        self.model = model
        self.adapterConfig = config
        self.parameterCount = parameterCount
        params = try Storage.allocate(floats: parameterCount)
    }

    /// Method name as used in files and the C ABI.
    var method: AdapterMethod { adapterConfig.method }

    /// Parameter ranges with their own learning-rate factor (nil: one group). `loraPlusRatio` is the train
    /// config's LoRA+ ratio (0 = not set there).
    func learningRateGroups(loraPlusRatio: Double) -> [LearningRateGroup]? { nil }

    /// The lowest layer whose computation depends on a trainable parameter: the backward pass stops there.
    /// -1 means the embeddings (the backward pass runs through every layer).
    var lowestLayer: Int { 0 }

    /// Prepares activation storage for `rows` rows: `slots` sets (one per layer when training, one otherwise).
    func prepare(rows: Int, batch: Int, seqLen: Int, slots: Int, training: Bool) throws {}

    // MARK: linear hooks

    /// Called before the frozen linear at `site` of layer `l`; may return a replacement input.
    func linearInput(_ l: Int, _ site: LinearSite, _ inp: UnsafeMutablePointer<Float>, ldi: Int,
                     _ p: PassInfo) -> UnsafeMutablePointer<Float> { inp }
    /// Called after the frozen linear wrote `out` from input `inp`.
    func linearOutput(_ l: Int, _ site: LinearSite, out: UnsafeMutablePointer<Float>, ldo: Int,
                      inp: UnsafeMutablePointer<Float>, ldi: Int, _ p: PassInfo) {}
    /// Backward of `linearOutput`: may return a replacement output gradient for the frozen linear's backward
    /// and accumulates parameter gradients into `grads`.
    func linearOutputBackward(_ l: Int, _ site: LinearSite, dout: UnsafeMutablePointer<Float>, lddo: Int,
                              inp: UnsafeMutablePointer<Float>, ldi: Int, dinp: UnsafeMutablePointer<Float>, lddi: Int,
                              grads: UnsafeMutablePointer<Float>, _ p: PassInfo) -> UnsafeMutablePointer<Float> { dout }
    /// Backward of `linearInput`, after the frozen linear's input gradient was written into `dinp`.
    func linearInputBackward(_ l: Int, _ site: LinearSite, dinp: UnsafeMutablePointer<Float>, lddi: Int,
                             inp: UnsafeMutablePointer<Float>, ldi: Int, grads: UnsafeMutablePointer<Float>, _ p: PassInfo) {}
    /// Whether this adapter touches `site` of layer `l` (lets the engine skip work and keep inputs).
    func hooks(_ l: Int, _ site: LinearSite) -> Bool { false }

    // MARK: sub-layer output hook (bottleneck adapters)

    /// Whether a unit sits after sub-layer `site` of layer `l`.
    func hasUnit(_ l: Int, _ site: BottleneckSite) -> Bool { false }
    /// out = x + h + A(z); `norm`: the sub-layer's LayerNorm of a post-LN layer, nil in pre-norm decoders.
    func unitForward(_ l: Int, _ site: BottleneckSite, out: UnsafeMutablePointer<Float>, x: UnsafeMutablePointer<Float>,
                     h: UnsafeMutablePointer<Float>, norm: SubLayerNorm?, _ p: PassInfo) {}
    /// Writes dz, accumulates parameter gradients; returns whether dz also flows to x.
    func unitBackward(_ l: Int, _ site: BottleneckSite, dz: UnsafeMutablePointer<Float>, dout: UnsafeMutablePointer<Float>,
                      grads: UnsafeMutablePointer<Float>, scratchC: UnsafeMutablePointer<Float>, norm: SubLayerNorm?,
                      _ p: PassInfo) -> Bool { false }

    // MARK: sequence hooks (prompt and prefix tuning)

    /// Virtual tokens prepended to the input embeddings (prompt tuning).
    var virtualTokens: Int { 0 }
    /// Virtual tokens read the gradient of the embeddings they sit among.
    var readsInputGradient: Bool { virtualTokens > 0 }
    /// Key/value positions that precede every sequence (prefix tuning).
    var prefixLength: Int { 0 }
    /// Layer `l`'s prefix keys and values, [prefixLength, KVH·D] each (valid after `beginPass`).
    func prefixKV(_ l: Int) -> (UnsafeMutablePointer<Float>, UnsafeMutablePointer<Float>)? { nil }
    /// Where layer `l`'s prefix key/value gradients accumulate (flushed to `grads` by `endBackward`).
    func prefixKVGrad(_ l: Int, grads: UnsafeMutablePointer<Float>) -> (UnsafeMutablePointer<Float>, UnsafeMutablePointer<Float>)? {
        nil
    }
    /// Virtual-token embeddings, [virtualTokens, C].
    func promptEmbeddings() -> UnsafeMutablePointer<Float>? { nil }
    /// Accumulates the gradient of the virtual-token embeddings, [virtualTokens, C].
    func promptGrad(grads: UnsafeMutablePointer<Float>) -> UnsafeMutablePointer<Float>? { nil }

    /// Called once before a forward pass (e.g. to compute a reparameterised prefix).
    func beginPass(training: Bool) {}
    /// Called after the optimiser changed `params` (e.g. to drop a cached reparameterisation).
    func parametersChanged() {}
    /// Called once after a backward pass (e.g. to push prefix gradients through the reparameterisation).
    func endBackward(grads: UnsafeMutablePointer<Float>) {}
}

/// The adapter methods PEFTKit implements.
public enum AdapterMethod: String, Sendable, CaseIterable {
    case bottleneck
    case lora
    case ia3
    case prefix
    case prompt

    /// The method's number in the C ABI (`PEFTKIT_METHOD_*` in peftkit.h): only ever added, never renumbered.
    public var abiCode: Int32 {
        switch self {
        case .bottleneck: return 0
        case .lora: return 1
        case .ia3: return 2
        case .prefix: return 3
        case .prompt: return 4
        }
    }
}
