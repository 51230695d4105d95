// The one forward over the stack of layers: embed (+ prompt tuning's virtual tokens, + a prefix's positions)
// → every layer → final norm. Evaluation, training and cached decoding all run through `runStack`; each caller
// keeps its own LM head (chunked differently for loss, for gradients and for one decode row).

/// Result of an evaluation forward pass.
public struct EvalResult: Sendable, Equatable {
    /// Mean cross-entropy over counted tokens (0 when no token counted).
    public var loss: Float
    /// Number of (shifted) label positions that counted, i.e. not `-100`.
    public var tokens: Int
}

/// The buffers a stack pass runs in, which also says what the pass keeps.
enum StackBuffers {
    /// Inference: two streams ping-pong and one activation set serves every layer.
    case infer(InferBuffers)
    /// Training: every layer from the lowest adapted one up keeps its input stream and activations for the
    /// backward pass; the layers below run as inference does.
    case train(TrainBuffers)
}

extension Engine {
    /// Runs `batch` rows of `seqLen` ids through the model into the buffers' `lnf` (final norm output).
    ///
    /// With `virtual`, each row is preceded by the adapter's virtual tokens (prompt tuning). Queries sit after
    /// `pastLen` positions: the cache's length when decoding (the cache then grows by the rows run), otherwise
    /// the prefix adapter's length. With `lastRowOnly` (decoding, batch 1) only the last row is normed.
    /// Returns the top stream (the final norm's input), which the backward pass of training reads.
    /// Encoders take token types (`typeIDs`, [B·T], nil = type 0) and a padding mask (`keyMask`, [B·T], 0 = padding).
    @discardableResult
    func runStack(ids: UnsafePointer<Int32>, batch B: Int, seqLen T: Int, virtual: Bool, adapter: Adapter?,
                  buffers: StackBuffers, cache: KVCache? = nil, lastRowOnly: Bool = false,
                  typeIDs: UnsafePointer<Int32>? = nil, keyMask: UnsafePointer<Int32>? = nil,
                  segments: PackedSegments? = nil) -> UnsafeMutablePointer<Float> {
        let w = weights, c = config, L = c.numLayers, C = c.hiddenSize
        let pastLen = cache?.length ?? (adapter?.prefixLength ?? 0)
        let Tp = virtual ? T + (adapter?.virtualTokens ?? 0) : T
        let N = B * Tp
        func context(_ slot: Int, training: Bool) -> LayerContext {
            LayerContext(config: c, adapter: adapter, grads: nil, pass: PassInfo(rows: N, slot: slot, training: training),
                         batch: B, seqLen: Tp, pastLen: pastLen, cache: cache, keyMask: keyMask,
                         segmentStarts: segments?.starts, positions: segments?.positions)
        }
        let top: UnsafeMutablePointer<Float>
        switch buffers {
        case .infer(let b):
            embedSequence(b.streams[0], ids: ids, batch: B, seqLen: T, pastLen: pastLen, adapter: virtual ? adapter : nil,
                          typeIDs: typeIDs, segments: segments)
            let ctx = context(0, training: false)
            var cur = 0
            for l in 0..<L {
                w.forwardLayer(l, ctx, x: b.streams[cur], out: b.streams[1 - cur], a: &b.acts)
                cur = 1 - cur
            }
            cache?.length += Tp
            top = b.streams[cur]
            if lastRowOnly {
                w.finalNorm(out: b.lnf, mean: b.lnfMean, rstd: b.lnfRstd, inp: top + (N - 1) * C, rows: 1)
            } else {
                w.finalNorm(out: b.lnf, mean: b.lnfMean, rstd: b.lnfRstd, inp: top, rows: N)
            }
        case .train(let b):
            let lo = b.lowest
            // Layers below the lowest adapted one: forward only, shared scratch.
            let first = lo == 0 ? b.streams[0] : b.low[0]
            embedSequence(first, ids: ids, batch: B, seqLen: T, pastLen: pastLen, adapter: virtual ? adapter : nil,
                          typeIDs: typeIDs, segments: segments)
            var cur = first
            for l in 0..<lo {
                let out = l == lo - 1 ? b.streams[0] : (cur == b.low[0] ? b.low[1] : b.low[0])
                w.forwardLayer(l, context(l, training: false), x: cur, out: out, a: &b.lowActs)
                cur = out
            }
            for l in lo..<L {
                if b.checkpointed || b.recomputesAttention { b.rngBefore[l - lo] = (adapter as? TrainingRandomState)?.trainingRng }
                w.forwardLayer(l, context(l, training: true), x: b.streams[l - lo], out: b.streams[l - lo + 1],
                               a: &b.acts[b.actsIndex(l)])
                b.acts[b.actsIndex(l)].shared?.holder.layer = l
            }
            top = b.streams[L - lo]
            w.finalNorm(out: b.lnf, mean: b.lnfMean, rstd: b.lnfRstd, inp: top, rows: N)
        }
        return top
    }

    /// Embeds `B` rows of `T` ids behind the `V` virtual tokens of `adapter` (prompt tuning; none when nil or
    /// without them): row b of the output holds [prompt; embed(ids)] at positions pastLen..<pastLen+V+T,
    /// [B·(V+T), C].
    func embedSequence(_ out: UnsafeMutablePointer<Float>, ids: UnsafePointer<Int32>, batch B: Int, seqLen T: Int,
                       pastLen: Int, adapter: Adapter?, typeIDs: UnsafePointer<Int32>? = nil,
                       segments: PackedSegments? = nil) {
        if let segments {
            // Packed rows (no virtual tokens, no past: `validatePacking`): positions restart at each record.
            weights.embed(out, ids: ids, rows: B * T, positions: segments.positions)
            return
        }
        let V = adapter?.virtualTokens ?? 0
        guard V > 0, let prompt = adapter?.promptEmbeddings() else {
            weights.embed(out, ids: ids, typeIDs: typeIDs, rows: B * T, seqLen: T, pastLen: pastLen)
            return
        }
        let C = config.hiddenSize, Tp = V + T
        for b in 0..<B {
            let row = out + b * Tp * C
            row.update(from: prompt, count: V * C)
            weights.addPositions(row, first: pastLen, count: V)
            weights.embed(row + V * C, ids: ids + b * T, typeIDs: typeIDs.map { $0 + b * T }, rows: T, seqLen: T,
                          pastLen: pastLen + V)
        }
    }

    /// The check of packed rows' segment ids ([B·T], a record starts where the id differs from the previous
    /// position's): only decoders, and not with an adapter that adds positions before the sequence (prompt
    /// tuning's virtual tokens and a prefix's keys belong to one sequence, and a packed row holds several).
    func validatePacking(segmentIDs: UnsafeBufferPointer<Int32>, batch B: Int, seqLen T: Int, adapter: Adapter?) throws {
        try require(segmentIDs.count == B * T, "segment_ids holds \(segmentIDs.count) values, needs batch × seq_len = \(B * T)")
        try require(segmentIDs.baseAddress != nil, "segment_ids is empty")
        if config.architecture.weights.bidirectional {
            throw PEFTKitError.unsupported("packed rows (segment ids) are for decoders; \(config.architecture) is an encoder")
        }
        if let ad = adapter, ad.virtualTokens > 0 || ad.prefixLength > 0 {
            throw PEFTKitError.unsupported("packed rows (segment ids) cannot be used with \(ad.method): its virtual tokens "
                + "or prefix belong to one sequence and a packed row holds several; train it without packing")
        }
    }

    /// The one check of a batch before any pass: shape (with the adapter's virtual and prefix positions), ids,
    /// labels. Each failure has one message.
    func validateBatch(inputIDs: UnsafeBufferPointer<Int32>, labels: UnsafeBufferPointer<Int32>?, batch B: Int,
                       seqLen T: Int, adapter: Adapter?) throws {
        try checkShape(batch: B, seqLen: T, extra: (adapter?.virtualTokens ?? 0) + (adapter?.prefixLength ?? 0))
        try checkTokens(inputIDs, count: B * T, what: "input_ids")
        if let labels { try checkLabels(labels, count: B * T) }
    }
}

/// Packed rows as the kernels read them ([B·T] each): where each position's record starts in its row, and its
/// position within the record.
struct PackedSegments {
    var starts: UnsafePointer<Int32>
    var positions: UnsafePointer<Int32>

    /// Fills `starts` and `positions` from segment ids (`rows` rows of `seqLen`): a record starts at position 0
    /// and wherever the id differs from the previous position's.
    static func fill(segmentIDs ids: UnsafePointer<Int32>, rows: Int, seqLen T: Int, starts: UnsafeMutablePointer<Int32>,
                     positions: UnsafeMutablePointer<Int32>) -> PackedSegments {
        for r in 0..<rows {
            var s = 0
            for t in 0..<T {
                let i = r * T + t
                if t > 0 && ids[i] != ids[i - 1] { s = t }
                starts[i] = Int32(s)
                positions[i] = Int32(t - s)
            }
        }
        return PackedSegments(starts: starts, positions: positions)
    }
}
