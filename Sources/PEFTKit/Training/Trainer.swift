extension Engine {
    /// One optimiser step of the active adapter, or of every base weight under full fine-tuning; see
    /// `Model.trainStep`. Exactly `computeGradients` followed by `applyGradients`.
    func trainStep(inputIDs: UnsafeBufferPointer<Int32>, labels: UnsafeBufferPointer<Int32>?, batch B: Int, seqLen T: Int,
                   config tc: TrainConfig, segmentIDs: UnsafeBufferPointer<Int32>? = nil) throws -> TrainStepResult {
        try tc.validate()
        _ = try computeGradients(inputIDs: inputIDs, labels: labels, batch: B, seqLen: T, config: tc, lossDivisor: nil,
                                 segmentIDs: segmentIDs)
        return try applyGradients(config: tc)
    }

    /// The optimiser state `trainStep` updates: the active adapter's, or the base weights' under full fine-tuning.
    func trainable() throws -> (slot: AdapterSlot?, opt: OptimizerState) {
        if let full {
            if let n = activeName, (try? adapter(named: n))?.merged == false {
                throw PEFTKitError.state("full fine-tuning is enabled: deactivate adapter '\(n)' (or disable full fine-tuning) to train")
            }
            return (nil, full.opt)
        }
        guard let s = active else {
            if let n = activeName, (try? adapter(named: n))?.merged == true {
                throw PEFTKitError.state("adapter '\(n)' is merged into the base weights: unmerge it to train it")
            }
            throw PEFTKitError.state("no active adapter: attach one and make it active before training")
        }
        return (s, s.opt)
    }

    /// The first half of a train step: forward, loss and backward over the batch, leaving the gradient of
    /// loss / `lossDivisor` (default: the batch's counted tokens, i.e. the mean loss) in the trainable block's
    /// gradient buffer, which a host may then change (all-reduce) before `applyGradients`. Returns the loss over
    /// this batch divided by the same divisor, and the tokens counted. Non-finite loss or gradient: throws,
    /// gradients zeroed, nothing else changed.
    func computeGradients(inputIDs: UnsafeBufferPointer<Int32>, labels: UnsafeBufferPointer<Int32>?, batch B: Int, seqLen T: Int,
                          config tc: TrainConfig, lossDivisor: Int?,
                          segmentIDs: UnsafeBufferPointer<Int32>? = nil) throws -> (loss: Float, tokens: Int) {
        pending = nil
        let (slot, opt) = try trainable()
        let ad = slot?.adapter
        let Vt = ad?.virtualTokens ?? 0
        try validateBatch(inputIDs: inputIDs, labels: labels, batch: B, seqLen: T, adapter: ad)
        if let segmentIDs { try validatePacking(segmentIDs: segmentIDs, batch: B, seqLen: T, adapter: ad) }
        let seg = segmentIDs?.baseAddress
        let lab = labels ?? inputIDs
        // ceil(B / microBatchSize) near-equal parts, part k the rows [k·B/K, (k+1)·B/K) (smaller parts first):
        // the split MPI ranks use, so K parts in one process sum exactly as K ranks do.
        let parts = tc.microBatchSize == 0 ? 1 : (B + min(tc.microBatchSize, B) - 1) / min(tc.microBatchSize, B)
        if let d = lossDivisor { try require(d > 0, "the loss divisor must be positive, got \(d)") }

        // Count the tokens of the whole batch first: the gradient is that of the mean over all of them.
        // With virtual tokens the last one predicts the first real token, as in PEFT.
        var total = 0
        for b in 0..<B {
            // In packed rows a record's first token is predicted by no position (the previous record's last
            // position predicts nothing).
            for t in (Vt > 0 ? 0 : 1)..<T where lab[b * T + t] != -100 {
                if let seg, t > 0, seg[b * T + t] != seg[b * T + t - 1] { continue }
                total += 1
            }
        }
        try require(total > 0 || lossDivisor != nil,
                    "no label counts towards the loss (all positions are -100 or sequences have length 1)")
        let divisor = lossDivisor ?? total

        let grads = opt.grads.floats, P = opt.count
        grads.update(repeating: 0, count: P)
        // A refused step must leave the training random state (LoRA dropout) as it was, too, so that retrying
        // the step (or resuming from a checkpoint) draws the same masks.
        let randomState = (ad as? TrainingRandomState).map { ($0, $0.trainingRng) }
        var computed = false
        defer { if !computed, let (r, rng) = randomState { r.trainingRng = rng } }
        ad?.beginPass(training: true)
        var lossSum = 0.0
        // Progress: after each micro-batch's forward pass and after the backward pass through each layer. A
        // cancelled step leaves what a refused one leaves: gradients zeroed, random state rewound, nothing pending.
        var counter = ProgressCounter(trainProgress, total: 1, what: "the train step")
        do {
            for k in 0..<parts {
                let r = k * B / parts, rows = (k + 1) * B / parts - r
                let report: ((Int, Int) throws -> Void)? = trainProgress == nil ? nil : { done, per in
                    try counter.reach(k * per + done, total: parts * per)
                }
                lossSum += try forwardBackward(adapter: ad, grads: grads, fullGrads: slot == nil ? full!.gradWeights : nil,
                                               ids: inputIDs.baseAddress! + r * T, labels: lab, rowStart: r, rows: rows,
                                               seqLen: T, gradScale: 1 / Float(divisor), checkpointed: tc.gradientCheckpointing,
                                               memory: tc.activationMemory,
                                               progress: report, segmentIDs: seg.map { $0 + r * T })
            }
        } catch {
            grads.update(repeating: 0, count: P)
            throw error
        }
        ad?.endBackward(grads: grads)
        let loss = Float(lossSum / Double(divisor))
        guard loss.isFinite, isAllFinite(grads, P) else {
            let norm = Float(sumOfSquares(grads, P).squareRoot())
            grads.update(repeating: 0, count: P)
            throw PEFTKitError.numerical("non-finite \(loss.isFinite ? "gradient" : "loss") (loss \(loss), grad norm \(norm)); the step was skipped and no weight changed")
        }
        computed = true
        pending = PendingGradients(opt: opt, step: opt.step, loss: loss, tokens: total, randomState: randomState)
        return (loss, total)
    }

    /// The second half of a train step: clipping, the schedule's learning rate and AdamW on the gradients in the
    /// trainable block's buffer (as `computeGradients` left them, or as the host changed them). A non-finite
    /// gradient or update is refused: no weight, moment or step count changes, and the training random state is
    /// rewound to before `computeGradients`.
    func applyGradients(config tc: TrainConfig) throws -> TrainStepResult {
        try tc.validate()
        let (tslot, opt) = try trainable()
        guard let p = pending, p.opt === opt, p.step == opt.step else {
            throw PEFTKitError.state("no gradients to apply: call computeGradients for the adapter being trained first")
        }
        pending = nil
        var stepped = false
        defer { if !stepped, let (r, rng) = p.randomState { r.trainingRng = rng } }
        let grads = opt.grads.floats, P = opt.count
        let norm = Float(sumOfSquares(grads, P).squareRoot())
        guard norm.isFinite else {
            grads.update(repeating: 0, count: P)
            throw PEFTKitError.numerical("non-finite gradient (grad norm \(norm)); the step was skipped and no weight changed")
        }
        if tc.maxGradNorm > 0 {
            let coef = tc.maxGradNorm / (norm + 1e-6)
            if coef < 1 { scaleInPlace(grads, P, coef) }
        }
        let lr = tc.learningRate(atStep: opt.step)
        guard opt.update(lr: decimalDouble(lr), beta1: decimalDouble(tc.beta1), beta2: decimalDouble(tc.beta2),
                         eps: decimalDouble(tc.eps), weightDecay: decimalDouble(tc.weightDecay),
                         groups: tslot?.adapter.learningRateGroups(loraPlusRatio: decimalDouble(tc.loraPlusRatio))) else {
            grads.update(repeating: 0, count: P)
            throw PEFTKitError.numerical("the update would make a weight non-finite (learning rate \(lr)); the step was skipped and no weight changed")
        }
        stepped = true
        (p.opt === full?.opt ? nil : active?.adapter)?.parametersChanged()
        return TrainStepResult(loss: p.loss, gradNorm: norm, learningRate: lr, step: opt.step, tokens: p.tokens)
    }

    /// Forward and backward of rows [rowStart, rowStart + rows); returns the summed loss of those rows.
    /// Adapter gradients accumulate into `grads`; with `fullGrads` (full fine-tuning, no adapter) every base
    /// weight's gradient accumulates into its view there.
    /// With `weighting` (preference objectives), the per-token cross-entropy of these rows (`[rows · T']`, T' =
    /// T + virtual tokens, 0 where no label counts) is computed first and handed to it; it writes each token's
    /// gradient weight (`[rows · T']`, multiplied into `gradScale`) before any gradient is formed.
    func forwardBackward(adapter: Adapter?, grads: UnsafeMutablePointer<Float>, fullGrads: (any ModelWeights)?,
                         ids: UnsafePointer<Int32>, labels: UnsafeBufferPointer<Int32>, rowStart: Int, rows B: Int,
                         seqLen T: Int, gradScale: Float, checkpointed: Bool = false, memory: ActivationMemory = .keep,
                         weighting: ((UnsafePointer<Float>, UnsafeMutablePointer<Float>) throws -> Void)? = nil,
                         progress: ((_ done: Int, _ perMicroBatch: Int) throws -> Void)? = nil,
                         segmentIDs: UnsafePointer<Int32>? = nil) throws -> Double {
        let c = config, w = weights
        let Vt = adapter?.virtualTokens ?? 0, P = adapter?.prefixLength ?? 0
        let Tp = T + Vt
        let N = B * Tp, C = c.hiddenSize, V = c.vocabSize, L = c.numLayers
        let buf = try buffers.training(engine: self, batch: B, seqLen: Tp, adapter: adapter, checkpointed: checkpointed,
                                       memory: memory)
        let lo = buf.lowest
        // Packed rows (validated by the caller): record starts and positions for this micro-batch.
        let segments = segmentIDs.map {
            PackedSegments.fill(segmentIDs: $0, rows: B, seqLen: T, starts: buf.segmentStarts, positions: buf.positions)
        }
        let top = runStack(ids: ids, batch: B, seqLen: T, virtual: true, adapter: adapter, buffers: .train(buf),
                           segments: segments)
        _ = fillTargets(buf.targets, labels: labels, rowStart: rowStart, rows: B, seqLen: T, virtual: Vt,
                        segmentStarts: segments?.starts)

        // Per-token weights: a first pass over the LM head gives every token's loss.
        var scales: [Float] = []
        if let weighting {
            var tokenLoss = [Float](repeating: 0, count: N)
            scales = [Float](repeating: 0, count: N)
            try tokenLoss.withUnsafeMutableBufferPointer { tl in
                var r0 = 0
                while r0 < N {
                    let rows = min(buf.headRows, N - r0)
                    w.lmHead.forward(out: buf.logits, inp: buf.lnf + r0 * C, rows: rows)
                    _ = crossEntropyForwardBackward(logits: buf.logits, losses: tl.baseAddress! + r0, targets: buf.targets + r0,
                                                    N: rows, V: V, gradScale: 0, computeGrad: false)
                    r0 += rows
                }
                try scales.withUnsafeMutableBufferPointer { try weighting(UnsafePointer(tl.baseAddress!), $0.baseAddress!) }
            }
        }
        // LM head + loss in row chunks; the logits' gradient goes straight into dlnf.
        var lossSum = 0.0
        var r0 = 0
        while r0 < N {
            let rows = min(buf.headRows, N - r0)
            w.lmHead.forward(out: buf.logits, inp: buf.lnf + r0 * C, rows: rows)
            let (s, _) = scales.withUnsafeBufferPointer { sc in
                crossEntropyForwardBackward(logits: buf.logits, losses: nil, targets: buf.targets + r0, N: rows, V: V,
                                            gradScale: gradScale, computeGrad: true,
                                            tokenScales: sc.isEmpty ? nil : sc.baseAddress! + r0)
            }
            lossSum += s
            w.lmHead.backwardInput(dinp: buf.dlnf + r0 * C, dout: buf.logits, rows: rows, accumulate: false)
            if let head = fullGrads?.lmHead {
                head.backwardWeights(dweight: head.weight, dbias: nil, dout: buf.logits, inp: buf.lnf + r0 * C, rows: rows)
            }
            r0 += rows
        }
        let units = 1 + (L - lo)  // this micro-batch's forward pass, then each layer's backward
        try progress?(1, units)
        // Final norm backward (frozen: input gradient only).
        let d = buf.scratch.d
        d.update(repeating: 0, count: N * C)
        w.finalNormBackward(dinp: d, grads: fullGrads, dout: buf.dlnf, inp: top, mean: buf.lnfMean, rstd: buf.lnfRstd, rows: N)
        // Down to the lowest adapted layer, and no further.
        let random = adapter as? TrainingRandomState
        let rngAfter = random?.trainingRng
        for l in stride(from: L - 1, through: lo, by: -1) {
            // Checkpointing: recompute the layer's activations from its kept input. The top layer's are still in
            // the shared set from the forward; the layer's output is still in its stream (the recomputation may
            // stop before it, `LayerContext.skipsOutputProjection`).
            if buf.checkpointed && l < L - 1 {
                if let r = random, let s = buf.rngBefore[l - lo] { r.trainingRng = s }
                var fctx = LayerContext(config: c, adapter: adapter, grads: nil, pass: PassInfo(rows: N, slot: l, training: true),
                                        batch: B, seqLen: Tp, pastLen: P, cache: nil,
                                        segmentStarts: segments?.starts, positions: segments?.positions)
                fctx.recompute = true
                w.forwardLayer(l, fctx, x: buf.streams[l - lo], out: buf.streams[l - lo + 1], a: &buf.acts[0])
            }
            // Recomputing the attention block: its hooks draw the forward's dropout masks again.
            if buf.recomputesAttention && l < L - 1, let r = random, let s = buf.rngBefore[l - lo] { r.trainingRng = s }
            let ctx = LayerContext(config: c, adapter: adapter, grads: grads, pass: PassInfo(rows: N, slot: l, training: true),
                                   batch: B, seqLen: Tp, pastLen: P, cache: nil,
                                   segmentStarts: segments?.starts, positions: segments?.positions)
            w.backwardLayer(l, ctx, x: buf.streams[l - lo], a: buf.acts[buf.actsIndex(l)], s: buf.scratch, grads: fullGrads)
            try progress?(1 + (L - l), units)
        }
        if buf.checkpointed || buf.recomputesAttention, let r = random, let s = rngAfter { r.trainingRng = s }
        if let gw = fullGrads {
            // d now holds dL/d(embeddings).
            if let segments {
                w.embedBackward(into: gw, d, ids: ids, rows: N, positions: segments.positions)
            } else {
                w.embedBackward(into: gw, d, ids: ids, rows: N, seqLen: T)
            }
        }
        if Vt > 0, let g = adapter?.promptGrad(grads: grads), let prompt = adapter?.promptEmbeddings() {
            // d now holds dL/d(embeddings): the virtual tokens' rows lead back to the prompt.
            for b in 0..<B { w.virtualTokensBackward(g, d + b * Tp * C, prompt: prompt, first: P, count: Vt) }
        }
        return lossSum
    }
}
