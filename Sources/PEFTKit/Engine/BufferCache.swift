/// The engine's activation and workspace buffers, kept between calls of the same shape and adapter. This object
/// owns them and the one way to drop them: whatever changes what they were sized or prepared for (an adapter
/// removed, weights merged or unmerged, full fine-tuning switched) calls `invalidate()`. Lookups are keyed by
/// shape and adapter identity, so a call with another shape or adapter makes new buffers by itself.
final class BufferCache {
    private var train: TrainBuffers?
    private var infer: InferBuffers?

    /// Drops every cached buffer; the next call allocates afresh.
    func invalidate() {
        train = nil
        infer = nil
    }

    /// Training buffers for `batch` rows of `seqLen` positions (virtual tokens included) with `adapter` (nil =
    /// full fine-tuning). New ones re-size the adapter's state, so the inference buffers go too.
    func training(engine: Engine, batch: Int, seqLen: Int, adapter: Adapter?, checkpointed: Bool = false,
                  memory: ActivationMemory = .keep) throws -> TrainBuffers {
        let r = TrainBuffers.recomputation(engine: engine, checkpointed: checkpointed, memory: memory,
                                           trainedLayers: engine.config.numLayers - max(0, adapter?.lowestLayer ?? 0))
        if let b = train, b.batch == batch, b.seqLen == seqLen, b.adapterID == adapter.map({ ObjectIdentifier($0) }),
           b.checkpointed == checkpointed, b.recomputesAttention == r.attention, b.upLayers == r.upLayers {
            return b
        }
        invalidate()
        let b = try TrainBuffers(engine: engine, batch: batch, seqLen: seqLen, adapter: adapter, checkpointed: checkpointed,
                                 recomputeAttention: r.attention, recomputeUpLayers: r.upLayers)
        train = b
        return b
    }

    /// Inference buffers for `batch` rows of `tq` queries over `tk` keys (no KV cache).
    func inference(engine: Engine, batch: Int, tq: Int, tk: Int, adapter: Adapter?) throws -> InferBuffers {
        if let b = infer, b.batch == batch, b.tq == tq, b.tk == tk, b.adapterID == adapter.map({ ObjectIdentifier($0) }) {
            return b
        }
        infer = nil
        let b = try InferBuffers(engine: engine, batch: batch, tq: tq, tk: tk, adapter: adapter, cached: false)
        infer = b
        return b
    }

    /// Buffers for one generation (prefill capacity `tq`, cache capacity `tk`), not kept. Making them re-sizes
    /// the adapter's inference state, so the cached inference buffers (sized for another shape) go.
    func generation(engine: Engine, batch: Int = 1, tq: Int, tk: Int, adapter: Adapter?) throws -> InferBuffers {
        infer = nil
        return try InferBuffers(engine: engine, batch: batch, tq: tq, tk: tk, adapter: adapter, cached: true)
    }
}

/// Buffers for one (batch, seqLen, adapter) training shape. `seqLen` counts virtual tokens; keys per row are
/// `prefix + seqLen`.
final class TrainBuffers {
    let batch: Int, seqLen: Int, prefix: Int, lowest: Int
    let adapterID: ObjectIdentifier?
    let pool = BufferPool()
    /// streams[i] is the input of layer lowest + i; the last is the final stream.
    var streams: [UnsafeMutablePointer<Float>] = []
    var low: [UnsafeMutablePointer<Float>] = []
    var lowActs: LayerActs
    /// One set per trained layer, or one set shared by every layer under gradient checkpointing.
    var acts: [LayerActs] = []
    /// Gradient checkpointing: each layer's activations are recomputed before its backward.
    let checkpointed: Bool
    /// `ActivationMemory.recomputeAttention` in effect: each layer's backward first reruns its attention block.
    let recomputesAttention: Bool
    /// How many of the top trained layers recompute the up projection's output too (those whose gate projection
    /// is not hooked; `ActivationMemory.recomputeAttentionAndUp`: all, `automatic` over a quantized base: some).
    let upLayers: Int
    /// Whether any layer recomputes the up projection.
    var recomputesUp: Bool { upLayers > 0 }
    /// Under checkpointing or `recomputesAttention`, the adapter's training random state before each trained
    /// layer's forward, so that the recomputation draws the same dropout masks.
    var rngBefore: [Rng?] = []
    var lnf, lnfMean, lnfRstd, dlnf: UnsafeMutablePointer<Float>
    /// The LM head's logits for one chunk of rows, in the backward scratch's buffer (`BackwardScratch.region`):
    /// valid from a chunk's head forward to its head backward, and never while a layer's backward runs.
    var logits: UnsafeMutablePointer<Float>
    var targets: UnsafeMutablePointer<Int32>
    /// Packed rows: each position's record start and position within its record ([N] each, `fillSegments`).
    var segmentStarts, positions: UnsafeMutablePointer<Int32>
    private let targetStorage: Storage
    var scratch: BackwardScratch
    /// Rows per LM-head chunk in evaluation and generation (logits buffer: headChunk × vocab floats).
    static let headChunk = 128
    /// At most this many rows per LM-head chunk in training. OpenBLAS re-packs the whole [vocab, C] head weight
    /// for every chunk; 512 rows pay that four times less often than 128.
    static let trainHeadChunk = 512
    /// Rows per LM-head chunk of this shape's training: as many as the pieces of the backward scratch region
    /// that every layer's backward writes hold logits for (`BackwardScratch.commonFloats`; between `headChunk`
    /// and `trainHeadChunk`), so the logits add no resident memory to the region's own unless a chunk of
    /// `headChunk` rows does not fit.
    let headRows: Int

    /// What a step with these settings recomputes (`ActivationMemory`): whether the trained layers rerun their
    /// attention block, and in how many of the top ones the up projection too. Nothing under checkpointing (which
    /// recomputes everything) nor for an architecture that cannot (BERT); the up projection only where the
    /// architecture has one; `automatic` decides on the base's layer-0 q/k/v projections (quantized blocks or not).
    /// `trainedLayers`: the layers from the lowest adapted one up (nil: all).
    static func recomputation(engine e: Engine, checkpointed: Bool, memory: ActivationMemory,
                              trainedLayers: Int? = nil) -> (attention: Bool, upLayers: Int) {
        let arch = e.config.architecture.weights, trainedLayers = trainedLayers ?? e.config.numLayers
        guard !checkpointed, arch.recomputesAttention, trainedLayers > 0 else { return (false, 0) }
        let up = arch.recomputesUp ? trainedLayers : 0
        switch memory {
        case .keep: return (false, 0)
        case .recomputeAttention: return (true, 0)
        case .recomputeAttentionAndUp: return (true, up)
        case .automatic:
            let w = e.weights
            guard [LinearSite.q, .k, .v, .qkv].contains(where: { w.linear(0, $0)?.quantized != nil }) else { return (false, 0) }
            return (true, (up + ActivationMemory.automaticUpEvery - 1) / ActivationMemory.automaticUpEvery)
        }
    }

    /// `adapter` nil = full fine-tuning (every layer trained, no hooks).
    init(engine e: Engine, batch: Int, seqLen: Int, adapter: Adapter?, checkpointed: Bool = false,
         recomputeAttention: Bool = false, recomputeUpLayers: Int = 0) throws {
        let c = e.config
        self.checkpointed = checkpointed
        recomputesAttention = recomputeAttention && !checkpointed
        upLayers = recomputesAttention ? max(0, recomputeUpLayers) : 0
        self.batch = batch; self.seqLen = seqLen
        prefix = adapter?.prefixLength ?? 0
        lowest = max(0, adapter?.lowestLayer ?? 0)
        adapterID = adapter.map { ObjectIdentifier($0) }
        let N = batch * seqLen, C = c.hiddenSize, tk = prefix + seqLen
        for _ in lowest...c.numLayers { streams.append(try pool.take(N * C)) }
        if lowest > 0 {
            low = [try pool.take(N * C), try pool.take(N * C)]
        }
        lowActs = try LayerActs(pool: pool, config: c, rows: N, batch: batch, tq: seqLen, tk: tk, prefix: prefix)
        // The logits share the backward scratch's buffer (see `BackwardScratch.region`).
        let fit = BackwardScratch.commonFloats(config: c, rows: N, batch: batch, seqLen: seqLen, keys: tk) / max(c.vocabSize, 1)
        headRows = min(N, max(TrainBuffers.headChunk, min(TrainBuffers.trainHeadChunk, fit)))
        scratch = try BackwardScratch(pool: pool, config: c, rows: N, batch: batch, seqLen: seqLen, keys: tk,
                                      regionAtLeast: headRows * c.vocabSize)
        logits = scratch.region
        if !checkpointed {
            // The attention and MLP outputs h1 and h2 live from their projection to the residual add that
            // follows it, in the forward and in a recomputed attention block, when the backward's `dh` is free: one
            // buffer, that one, serves both in every layer without a unit at the site.
            let sharedH1 = scratch.dh, sharedH2 = scratch.dh
            let shared = try RecomputedActs(pool: pool, config: c, rows: N, batch: batch, tq: seqLen, tk: tk,
                                            attention: recomputesAttention, up: upLayers > 0)
            for l in lowest..<c.numLayers {
                acts.append(try LayerActs(pool: pool, config: c, rows: N, batch: batch, tq: seqLen, tk: tk, prefix: prefix,
                                          sharedH1: adapter?.hasUnit(l, .attention) == true ? nil : sharedH1,
                                          sharedH2: adapter?.hasUnit(l, .output) == true ? nil : sharedH2,
                                          shared: shared,
                                          sharedUp: l >= c.numLayers - upLayers && adapter?.hooks(l, .gate) != true))
            }
            if recomputesAttention { rngBefore = [Rng?](repeating: nil, count: c.numLayers - lowest) }
        } else {
            acts = [try LayerActs(pool: pool, config: c, rows: N, batch: batch, tq: seqLen, tk: tk, prefix: prefix)]
            rngBefore = [Rng?](repeating: nil, count: c.numLayers - lowest)
        }
        lnf = try pool.take(N * C); lnfMean = try pool.take(N); lnfRstd = try pool.take(N); dlnf = try pool.take(N * C)
        targetStorage = try Storage.allocate(bytes: 3 * N * 4)
        targets = targetStorage.base.assumingMemoryBound(to: Int32.self)
        segmentStarts = targets + N
        positions = targets + 2 * N
        try adapter?.prepare(rows: N, batch: batch, seqLen: seqLen, slots: c.numLayers, training: true)
    }
}

extension TrainBuffers {
    /// The activation set of trained layer `l`.
    @inline(__always) func actsIndex(_ l: Int) -> Int { checkpointed ? 0 : l - lowest }
}

/// Buffers for inference at a given (rows, tq, tk) capacity.
final class InferBuffers {
    let batch: Int, tq: Int, tk: Int
    let pool = BufferPool()
    var streams: [UnsafeMutablePointer<Float>]
    var acts: LayerActs
    var lnf, lnfMean, lnfRstd: UnsafeMutablePointer<Float>
    var logits: UnsafeMutablePointer<Float>
    var targets: UnsafeMutablePointer<Int32>
    /// Packed rows: each position's record start and position within its record ([N] each, `fillSegments`).
    var segmentStarts, positions: UnsafeMutablePointer<Int32>
    private let targetStorage: Storage
    let adapterID: ObjectIdentifier?

    init(engine e: Engine, batch: Int, tq: Int, tk: Int, adapter: Adapter?, cached: Bool) throws {
        let c = e.config
        self.batch = batch; self.tq = tq; self.tk = tk
        adapterID = adapter.map { ObjectIdentifier($0) }
        let N = batch * tq, C = c.hiddenSize
        streams = [try pool.take(N * C), try pool.take(N * C)]
        acts = try LayerActs(pool: pool, config: c, rows: N, batch: batch, tq: tq, tk: tk,
                             prefix: cached ? 0 : (adapter?.prefixLength ?? 0))
        lnf = try pool.take(N * C); lnfMean = try pool.take(N); lnfRstd = try pool.take(N)
        logits = try pool.take(min(N, TrainBuffers.headChunk) * c.vocabSize)
        targetStorage = try Storage.allocate(bytes: 3 * N * 4)
        targets = targetStorage.base.assumingMemoryBound(to: Int32.self)
        segmentStarts = targets + N
        positions = targets + 2 * N
        try adapter?.prepare(rows: N, batch: batch, seqLen: tq, slots: 1, training: false)
    }
}
