// Training an encoder's task head (`Engine/Heads.swift`) together with the adapter that owns it.

extension Engine {
    /// One optimiser step of the active adapter and its task head: gradients as `headGradients`, one
    /// gradient-norm clip over the one block (as torch's `clip_grad_norm_` over every trainable parameter), then
    /// one AdamW update of the adapter's optimiser state, which holds the head's parameters after the adapter's
    /// (LoRA+'s learning-rate groups apply to the adapter's part; the head trains at the step's rate).
    func headTrainStep(inputIDs: UnsafeBufferPointer<Int32>, typeIDs: UnsafeBufferPointer<Int32>?,
                       mask: UnsafeBufferPointer<Int32>?, targets: HeadTargets, batch B: Int, seqLen T: Int,
                       config tc: TrainConfig) throws -> TrainStepResult {
        try tc.validate()
        let (slot, head) = try activeHead()
        let (loss, _) = try headGradients(inputIDs: inputIDs, typeIDs: typeIDs, mask: mask, targets: targets, batch: B, seqLen: T)
        let opt = slot.opt, g = opt.grads.floats, P = slot.adapter.parameterCount
        let norm = Float(sumOfSquares(g, opt.count).squareRoot())
        guard loss.isFinite, norm.isFinite else {
            g.update(repeating: 0, count: opt.count)
            throw PEFTKitError.numerical("non-finite loss or gradient (loss \(loss), grad norm \(norm)); the step was skipped and no weight changed")
        }
        if tc.maxGradNorm > 0 {
            let coef = tc.maxGradNorm / (norm + 1e-6)
            if coef < 1 { scaleInPlace(g, opt.count, coef) }
        }
        let lr = tc.learningRate(atStep: opt.step)
        var groups = slot.adapter.learningRateGroups(loraPlusRatio: decimalDouble(tc.loraPlusRatio))
        if groups != nil { groups!.append(LearningRateGroup(range: P..<(P + head.parameterCount), scale: 1)) }
        guard opt.update(lr: decimalDouble(lr), beta1: decimalDouble(tc.beta1), beta2: decimalDouble(tc.beta2),
                         eps: decimalDouble(tc.eps), weightDecay: decimalDouble(tc.weightDecay), groups: groups) else {
            g.update(repeating: 0, count: opt.count)
            throw PEFTKitError.numerical("the update would make an adapter or head weight non-finite (learning rate \(lr)); the step was skipped")
        }
        slot.adapter.parametersChanged()
        let counted: Int
        switch head.kind {
        case .regression: counted = B
        case .classification: counted = (0..<B).reduce(0) { $0 + (targets.labels![$1] == -100 ? 0 : 1) }
        case .tokens: counted = (0..<(B * T)).reduce(0) { $0 + (targets.labels![$1] == -100 ? 0 : 1) }
        }
        return TrainStepResult(loss: loss, gradNorm: norm, learningRate: lr, step: opt.step, tokens: counted)
    }
}
