// Training an encoder's classifier head (`Engine/Heads.swift`) together with the active adapter.

extension Engine {
    /// One optimiser step of the active adapter and the classifier head together: gradients as
    /// `classifierGradients`, one gradient-norm clip over both blocks (as torch's `clip_grad_norm_` over every
    /// trainable parameter), then AdamW on each block at the schedule's learning rate.
    func classifierTrainStep(inputIDs: UnsafeBufferPointer<Int32>, typeIDs: UnsafeBufferPointer<Int32>?,
                             mask: UnsafeBufferPointer<Int32>?, labels: UnsafeBufferPointer<Int32>, batch B: Int, seqLen T: Int,
                             config tc: TrainConfig) throws -> TrainStepResult {
        try tc.validate()
        guard let head = classifier else { throw PEFTKitError.state("no classifier head: attach one first") }
        let (_, opt) = try trainable()
        let (loss, _) = try classifierGradients(head, inputIDs: inputIDs, typeIDs: typeIDs, mask: mask, labels: labels,
                                                batch: B, seqLen: T)
        let ga = opt.grads.floats, gh = head.opt.grads.floats
        let norm = Float((sumOfSquares(ga, opt.count) + sumOfSquares(gh, head.opt.count)).squareRoot())
        guard loss.isFinite, norm.isFinite else {
            ga.update(repeating: 0, count: opt.count)
            gh.update(repeating: 0, count: head.opt.count)
            throw PEFTKitError.numerical("non-finite loss or gradient (loss \(loss), grad norm \(norm)); the step was skipped and no weight changed")
        }
        if tc.maxGradNorm > 0 {
            let coef = tc.maxGradNorm / (norm + 1e-6)
            if coef < 1 {
                scaleInPlace(ga, opt.count, coef)
                scaleInPlace(gh, head.opt.count, coef)
            }
        }
        let lr = tc.learningRate(atStep: opt.step)
        let (b1, b2, eps, wd) = (decimalDouble(tc.beta1), decimalDouble(tc.beta2), decimalDouble(tc.eps), decimalDouble(tc.weightDecay))
        guard opt.update(lr: decimalDouble(lr), beta1: b1, beta2: b2, eps: eps, weightDecay: wd) else {
            throw PEFTKitError.numerical("the update would make an adapter weight non-finite (learning rate \(lr)); the step was skipped")
        }
        active?.adapter.parametersChanged()
        guard head.opt.update(lr: decimalDouble(lr), beta1: b1, beta2: b2, eps: eps, weightDecay: wd) else {
            throw PEFTKitError.numerical("the update would make a classifier weight non-finite (learning rate \(lr))")
        }
        return TrainStepResult(loss: loss, gradNorm: norm, learningRate: lr, step: opt.step, tokens: B)
    }
}
