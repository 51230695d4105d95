extension Engine {
    /// One optimiser step of the active adapter, or of every base weight under full fine-tuning; see
    /// `Model.trainStep`.
    func trainStep(inputIDs: UnsafeBufferPointer<Int32>, labels: UnsafeBufferPointer<Int32>?, batch B: Int, seqLen T: Int,
                   config tc: TrainConfig) throws -> TrainStepResult {
        try tc.validate()
        let slot: AdapterSlot?
        if full != nil {
            if let n = activeName, (try? adapter(named: n))?.merged == false {
                throw PEFTKitError.state("full fine-tuning is enabled: deactivate adapter '\(n)' (or disable full fine-tuning) to train")
            }
            slot = nil
        } else {
            guard let s = active else {
                if let n = activeName, (try? adapter(named: n))?.merged == true {
                    throw PEFTKitError.state("adapter '\(n)' is merged into the base weights: unmerge it to train it")
                }
                throw PEFTKitError.state("no active adapter: attach one and make it active before training")
            }
            slot = s
        }
        let ad = slot?.adapter
        let Vt = ad?.virtualTokens ?? 0
        try checkShape(batch: B, seqLen: T, extra: Vt + (ad?.prefixLength ?? 0))
        let N = B * T
        try checkTokens(inputIDs, count: N, what: "input_ids")
        if let labels { try checkLabels(labels, count: N) }
        let lab = labels ?? inputIDs
        let mb = tc.microBatchSize == 0 ? B : min(tc.microBatchSize, B)
        try require(B % mb == 0, "batch \(B) is not a multiple of the micro-batch size \(mb)")

        // Count the tokens of the whole batch first: the gradient is that of the mean over all of them.
        // With virtual tokens the last one predicts the first real token, as in PEFT.
        var total = 0
        for b in 0..<B {
            for t in (Vt > 0 ? 0 : 1)..<T where lab[b * T + t] != -100 { total += 1 }
        }
        try require(total > 0, "no label counts towards the loss (all positions are -100 or sequences have length 1)")

        // The trainable vector: the adapter's parameters, or the whole base-weight block.
        let params, grads, mom1, mom2: UnsafeMutablePointer<Float>
        let P: Int, step: Int
        if let slot {
            params = slot.adapter.params.floats; grads = slot.grads.floats; mom1 = slot.m.floats; mom2 = slot.v.floats
            P = slot.parameterCount; step = slot.step
        } else {
            let ft = full!
            params = ft.params.floats; grads = ft.grads.floats; mom1 = ft.m.floats; mom2 = ft.v.floats
            P = ft.count; step = ft.step
        }
        grads.update(repeating: 0, count: P)
        // A refused step must leave the training random state (LoRA dropout) as it was, too, so that retrying
        // the step (or resuming from a checkpoint) draws the same masks.
        let randomState = (ad as? TrainingRandomState).map { ($0, $0.trainingRng) }
        var stepped = false
        defer { if !stepped, let (r, rng) = randomState { r.trainingRng = rng } }
        ad?.beginPass(training: true)
        var lossSum = 0.0
        var r = 0
        while r < B {
            lossSum += try forwardBackward(adapter: ad, grads: grads, fullGrads: slot == nil ? full!.gradWeights : nil,
                                           ids: inputIDs.baseAddress! + r * T, labels: lab, rowStart: r, rows: mb,
                                           seqLen: T, gradScale: 1 / Float(total))
            r += mb
        }
        ad?.endBackward(grads: grads)
        let loss = Float(lossSum / Double(total))
        let sq = sumOfSquares(grads, P)
        let norm = Float(sq.squareRoot())
        guard loss.isFinite, norm.isFinite else {
            grads.update(repeating: 0, count: P)
            throw PEFTKitError.numerical("non-finite \(loss.isFinite ? "gradient" : "loss") (loss \(loss), grad norm \(norm)); the step was skipped and no weight changed")
        }
        if tc.maxGradNorm > 0 {
            let coef = tc.maxGradNorm / (norm + 1e-6)
            if coef < 1 { scaleInPlace(grads, P, coef) }
        }
        let lr = tc.learningRate(atStep: step)
        guard adamwUpdateStaysFinite(params, grads, mom1, mom2, P, lr: decimalDouble(lr),
                                     beta1: decimalDouble(tc.beta1), beta2: decimalDouble(tc.beta2), eps: decimalDouble(tc.eps),
                                     weightDecay: decimalDouble(tc.weightDecay), step: step + 1) else {
            grads.update(repeating: 0, count: P)
            throw PEFTKitError.numerical("the update would make a weight non-finite (learning rate \(lr)); the step was skipped and no weight changed")
        }
        adamwUpdate(params, grads, mom1, mom2, P, lr: decimalDouble(lr),
                    beta1: decimalDouble(tc.beta1), beta2: decimalDouble(tc.beta2), eps: decimalDouble(tc.eps),
                    weightDecay: decimalDouble(tc.weightDecay), step: step + 1)
        stepped = true
        let newStep: Int
        if let slot {
            slot.step += 1
            newStep = slot.step
            slot.adapter.parametersChanged()
        } else {
            full!.step += 1
            newStep = full!.step
        }
        return TrainStepResult(loss: loss, gradNorm: norm, learningRate: lr, step: newStep, tokens: total)
    }

    /// Forward and backward of rows [rowStart, rowStart + rows); returns the summed loss of those rows.
    /// Adapter gradients accumulate into `grads`; with `fullGrads` (full fine-tuning, no adapter) every base
    /// weight's gradient accumulates into its view there.
    func forwardBackward(adapter: Adapter?, grads: UnsafeMutablePointer<Float>, fullGrads: (any ModelWeights)?,
                         ids: UnsafePointer<Int32>, labels: UnsafeBufferPointer<Int32>, rowStart: Int, rows B: Int,
                         seqLen T: Int, gradScale: Float) throws -> Double {
        let c = config, w = weights
        let Vt = adapter?.virtualTokens ?? 0, P = adapter?.prefixLength ?? 0
        let Tp = T + Vt
        let N = B * Tp, C = c.hiddenSize, V = c.vocabSize, L = c.numLayers
        let buf = try buffers.training(engine: self, batch: B, seqLen: Tp, adapter: adapter)
        let lo = buf.lowest
        let top = runStack(ids: ids, batch: B, seqLen: T, virtual: true, adapter: adapter, buffers: .train(buf))
        _ = fillTargets(buf.targets, labels: labels, rowStart: rowStart, rows: B, seqLen: T, virtual: Vt)

        // LM head + loss in row chunks; the logits' gradient goes straight into dlnf.
        var lossSum = 0.0
        var r0 = 0
        while r0 < N {
            let rows = min(TrainBuffers.trainHeadChunk, N - r0)
            w.lmHead.forward(out: buf.logits, inp: buf.lnf + r0 * C, rows: rows)
            let (s, _) = crossEntropyForwardBackward(logits: buf.logits, losses: nil, targets: buf.targets + r0, N: rows, V: V,
                                                     gradScale: gradScale, computeGrad: true)
            lossSum += s
            w.lmHead.backwardInput(dinp: buf.dlnf + r0 * C, dout: buf.logits, rows: rows, accumulate: false)
            if let head = fullGrads?.lmHead {
                head.backwardWeights(dweight: head.weight, dbias: nil, dout: buf.logits, inp: buf.lnf + r0 * C, rows: rows)
            }
            r0 += rows
        }
        // Final norm backward (frozen: input gradient only).
        let d = buf.scratch.d
        d.update(repeating: 0, count: N * C)
        w.finalNormBackward(dinp: d, grads: fullGrads, dout: buf.dlnf, inp: top, mean: buf.lnfMean, rstd: buf.lnfRstd, rows: N)
        // Down to the lowest adapted layer, and no further.
        for l in stride(from: L - 1, through: lo, by: -1) {
            let ctx = LayerContext(config: c, adapter: adapter, grads: grads, pass: PassInfo(rows: N, slot: l, training: true),
                                   batch: B, seqLen: Tp, pastLen: P, cache: nil)
            w.backwardLayer(l, ctx, x: buf.streams[l - lo], a: buf.acts[l - lo], s: buf.scratch, grads: fullGrads)
        }
        if let gw = fullGrads {
            // d now holds dL/d(embeddings).
            w.embedBackward(into: gw, d, ids: ids, rows: N, seqLen: T)
        }
        if Vt > 0, let adapter {
            // d now holds dL/d(embeddings): the virtual tokens' rows are the prompt's gradient.
            let g = adapter.promptGrad(grads: grads)
            for b in 0..<B { addInPlace(g, d + b * Tp * C, Vt * C) }
        }
        return lossSum
    }
}
