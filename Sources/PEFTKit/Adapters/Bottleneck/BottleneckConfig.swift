/// How adapter weights start.
public enum AdapterInit: String, Sendable, Codable, CaseIterable {
    /// All linear weights N(0, 0.02), biases 0 (AdapterHub `"bert"`, its default).
    case bert
    /// Truncated N(0, 0.01) in ±0.02 for both projections, biases 0: near-identity (AdapterHub `"houlsby"`).
    case houlsby
    /// Down Kaiming-uniform, up exactly zero: the adapter starts as the identity (AdapterHub `"mam_adapter"`).
    case zeroUp = "mam_adapter"
}

/// A bottleneck adapter (Houlsby et al. 2019): `x + up(act(down(x)))·scaling`, inserted after the attention
/// block (`mhAdapter`) and/or after the feed-forward block (`outputAdapter`) of chosen layers.
///
/// The residual placement equals AdapterHub's `BnConfig`:
/// - `pfeiffer` (`seq_bn`): after the FFN only; the adapter reads the residual stream `y = x + ffn` and
///   outputs `y + A(y)`.
/// - `houlsby` (`double_seq_bn`): after attention and FFN; the adapter reads the sub-layer output `h` and the
///   block outputs `x + h + A(h)`.
public struct BottleneckConfig: Sendable, Equatable {
    public enum Preset: String, Sendable, CaseIterable {
        case houlsby, pfeiffer
    }
    /// Adapter after the multi-head attention sub-layer.
    public var mhAdapter: Bool
    /// Adapter after the feed-forward sub-layer.
    public var outputAdapter: Bool
    /// AdapterHub `original_ln_before`: the adapter reads `x + h` (true, Pfeiffer) or `h` (false, Houlsby).
    public var originalLnBefore: Bool
    /// Bottleneck = hidden / reductionFactor (rounded down, at least 1), unless `bottleneckSize` is set.
    public var reductionFactor: Float
    /// Explicit bottleneck width; 0 means use `reductionFactor`.
    public var bottleneckSize: Int
    public var nonLinearity: Activation
    /// Layers that get adapters; nil means every layer.
    public var layers: [Int]?
    public var initWeights: AdapterInit
    /// Multiplies the up-projection output (AdapterHub `scaling`).
    public var scaling: Float
    /// A trainable LayerNorm on the adapter input (AdapterHub `ln_before`).
    public var lnBefore: Bool
    /// A trainable LayerNorm on the adapter output before its residual (AdapterHub `ln_after`).
    public var lnAfter: Bool
    /// Seed for the initial weights.
    public var seed: UInt64

    public init(preset: Preset = .pfeiffer, reductionFactor: Float = 16, bottleneckSize: Int = 0,
                nonLinearity: Activation? = nil, layers: [Int]? = nil, initWeights: AdapterInit = .bert,
                scaling: Float = 1, lnBefore: Bool = false, lnAfter: Bool = false, seed: UInt64 = 42) {
        switch preset {
        case .houlsby:
            mhAdapter = true; outputAdapter = true; originalLnBefore = false
        case .pfeiffer:
            mhAdapter = false; outputAdapter = true; originalLnBefore = true
        }
        self.reductionFactor = reductionFactor
        self.bottleneckSize = bottleneckSize
        self.nonLinearity = nonLinearity ?? (preset == .houlsby ? .swish : .relu)
        self.layers = layers
        self.initWeights = initWeights
        self.scaling = scaling
        self.lnBefore = lnBefore
        self.lnAfter = lnAfter
        self.seed = seed
    }

    /// The bottleneck width for a model of hidden size `hidden`.
    public func bottleneck(hidden: Int) -> Int {
        if bottleneckSize > 0 { return bottleneckSize }
        guard reductionFactor.isFinite, reductionFactor > 0 else { return 1 }
        return max(1, Int((Float(hidden) / reductionFactor).rounded(.down)))
    }

    public func validate(numLayers: Int, hidden: Int) throws {
        try require(mhAdapter || outputAdapter, "adapter must be placed after attention, after the FFN, or both")
        try require(bottleneckSize >= 0 && bottleneckSize <= 1 << 16, "bottleneck size must be in 0...65536, got \(bottleneckSize)")
        if bottleneckSize == 0 {
            try require(reductionFactor.isFinite && reductionFactor > 0,
                        "reduction factor must be positive and finite, got \(reductionFactor)")
        }
        try require(scaling.isFinite, "scaling must be finite, got \(scaling)")
        try validateLayers(layers, numLayers: numLayers)
    }
}
