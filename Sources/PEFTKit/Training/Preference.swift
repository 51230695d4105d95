#if canImport(Glibc)
import Glibc
#endif

// Preference tuning: DPO and ORPO on pairs of responses (chosen, rejected) to the same prompt, for any adapter
// method. Both objectives are functions of per-sequence log-probabilities, so their gradient with respect to a
// token's logits is that token's cross-entropy gradient times one number per sequence (−d loss / d log π(y)):
// the train step's backward runs unchanged with per-token loss weights (`Engine.forwardBackward(weighting:)`).

/// The objective of `Model.preferenceStep`.
public enum PreferenceObjective: Sendable, Equatable {
    /// Direct Preference Optimization (Rafailov et al. 2023): per pair,
    /// loss = −log σ(β · [(log π(c) − log π_ref(c)) − (log π(r) − log π_ref(r))]), log π(y) the summed log-probability
    /// of the response tokens. The reference π_ref is the same model with the adapter turned off (one more forward
    /// pass, no second copy of the weights). Reported rewards are β · (log π − log π_ref).
    case dpo(beta: Float)
    /// Odds Ratio Preference Optimization (Hong et al. 2024), in TRL's convention: loss = NLL(chosen) −
    /// λ · mean log σ(log odds(c) − log odds(r)), odds(y) = p / (1 − p) with p = exp(mean log-probability of y's
    /// tokens), NLL the mean cross-entropy over all chosen response tokens of the batch. λ is the paper's λ (TRL's
    /// `beta`, default 0.1). Reported rewards are λ · mean log-probability, as TRL reports them. No reference pass.
    case orpo(lambda: Float)

    func validate() throws {
        switch self {
        case .dpo(let beta):
            try require(beta.isFinite && beta > 0, "DPO beta must be positive and finite, got \(beta)")
        case .orpo(let lambda):
            try require(lambda.isFinite && lambda >= 0, "ORPO lambda must be non-negative and finite, got \(lambda)")
        }
    }
}

/// A batch of preference pairs: `pairs` rows of `seqLen` token ids each for the chosen and the rejected response
/// (prompt then response, padded on the right), and masks of the same shape with 1 on response tokens (the ones
/// whose log-probability counts) and 0 elsewhere (prompt, padding). Position 0 never counts: nothing predicts it.
public struct PreferenceBatch: Sendable, Equatable {
    public var chosen: [Int32]
    public var chosenMask: [Int32]
    public var rejected: [Int32]
    public var rejectedMask: [Int32]
    public let pairs: Int
    public let seqLen: Int

    public init(chosen: [Int32], chosenMask: [Int32], rejected: [Int32], rejectedMask: [Int32], pairs: Int, seqLen: Int) {
        self.chosen = chosen
        self.chosenMask = chosenMask
        self.rejected = rejected
        self.rejectedMask = rejectedMask
        self.pairs = pairs
        self.seqLen = seqLen
    }
}

/// What one preference step computed (means over the batch's pairs), before the update.
public struct PreferenceStats: Sendable, Equatable {
    /// The objective's loss.
    public var loss: Float
    /// DPO: β · (log π(c) − log π_ref(c)); ORPO: λ · mean log π(c).
    public var chosenReward: Float
    public var rejectedReward: Float
    /// chosenReward − rejectedReward.
    public var rewardMargin: Float
    /// Share of pairs whose chosen reward is above the rejected one.
    public var accuracy: Float
    /// Summed log-probability of the chosen / rejected response tokens under the policy (with the adapter).
    public var chosenLogProb: Float
    public var rejectedLogProb: Float
    /// ORPO: the NLL term and mean log σ(log odds ratio); DPO: 0.
    public var nll: Float
    public var logOddsRatio: Float
    /// Response tokens counted (chosen + rejected).
    public var tokens: Int
}

/// One preference optimiser step: the statistics and the update's figures.
public struct PreferenceStepResult: Sendable, Equatable {
    public var stats: PreferenceStats
    public var gradNorm: Float
    public var learningRate: Float
    public var step: Int
}

extension Engine {
    /// Forward, preference loss and backward over a batch of pairs, leaving the loss's gradient in the trainable
    /// block's gradient buffer for `applyGradients` (as `computeGradients` does). Chosen and rejected rows run
    /// interleaved in one batch of 2·pairs rows; with a micro-batch size m, the pairs run in ceil(pairs / m)
    /// near-equal micro-batches.
    /// Non-finite loss or gradient: throws, gradients zeroed, nothing else changed.
    func computePreferenceGradients(_ pb: PreferenceBatch, objective: PreferenceObjective, config tc: TrainConfig) throws -> PreferenceStats {
        pending = nil
        try tc.validate()
        try objective.validate()
        let (slot, opt) = try trainable()
        let ad = slot?.adapter
        if case .dpo = objective, slot == nil {
            throw PEFTKitError.state("DPO needs an adapter: its reference is the model with the adapter turned off")
        }
        let B = pb.pairs, T = pb.seqLen
        try require(B > 0, "a preference batch needs at least one pair, got \(B)")
        let Vt = ad?.virtualTokens ?? 0
        let (n, o) = B.multipliedReportingOverflow(by: T)
        try require(!o, "batch \(B) × \(T) overflows")
        try require(pb.chosenMask.count == n && pb.rejectedMask.count == n,
                    "masks hold \(pb.chosenMask.count) and \(pb.rejectedMask.count) entries, expected \(B) × \(T) = \(n)")
        try pb.chosen.withUnsafeBufferPointer { try validateBatch(inputIDs: $0, labels: nil, batch: B, seqLen: T, adapter: ad) }
        try pb.rejected.withUnsafeBufferPointer { try checkTokens($0, count: n, what: "rejected") }
        // Micro-batches of pairs as the train step splits rows: ceil(B / m) near-equal parts.
        let parts = tc.microBatchSize == 0 ? 1 : (B + min(tc.microBatchSize, B) - 1) / min(tc.microBatchSize, B)
        let spans = (0..<parts).map { k in (2 * (k * B / parts), 2 * ((k + 1) * B / parts - k * B / parts)) }

        // Interleave: row 2i is pair i's chosen response, row 2i + 1 its rejected one. Labels are the ids where
        // the mask is 1, -100 elsewhere (shifted inside, as for every train step).
        let R = 2 * B
        var ids = [Int32](repeating: 0, count: R * T), labels = [Int32](repeating: ignoreIndex, count: R * T)
        var counted = [Int](repeating: 0, count: R)
        for i in 0..<B {
            for (k, (rowIDs, mask)) in [(pb.chosen, pb.chosenMask), (pb.rejected, pb.rejectedMask)].enumerated() {
                let dst = (2 * i + k) * T
                for t in 0..<T {
                    let m = mask[i * T + t]
                    try require(m == 0 || m == 1, "\(k == 0 ? "chosen" : "rejected") mask[\(i * T + t)] = \(m); masks hold 0 or 1")
                    ids[dst + t] = rowIDs[i * T + t]
                    if m == 1 {
                        labels[dst + t] = rowIDs[i * T + t]
                        if t > 0 || Vt > 0 { counted[2 * i + k] += 1 }
                    }
                }
                try require(counted[2 * i + k] > 0,
                            "\(k == 0 ? "chosen" : "rejected") row \(i) has no response token (its mask is 0 after position 0)")
            }
        }
        let chosenTokens = stride(from: 0, to: R, by: 2).reduce(0) { $0 + counted[$1] }

        // The reference's log-probabilities: the same rows with the adapter turned off.
        var refLogP = [Double](repeating: 0, count: R)
        if case .dpo = objective {
            for (r, rows) in spans {
                let lp = try ids.withUnsafeBufferPointer { ip in
                    try labels.withUnsafeBufferPointer { lb in
                        try sequenceLogProbs(ids: ip.baseAddress! + r * T, labels: lb, rowStart: r, rows: rows, seqLen: T)
                    }
                }
                for j in 0..<rows { refLogP[r + j] = lp[j] }
            }
        }

        let grads = opt.grads.floats, P = opt.count
        grads.update(repeating: 0, count: P)
        let randomState = (ad as? TrainingRandomState).map { ($0, $0.trainingRng) }
        var computed = false
        defer {
            if !computed {
                grads.update(repeating: 0, count: P)
                if let (rs, rng) = randomState { rs.trainingRng = rng }
            }
        }
        // Per pair: policy log-probabilities and the loss's terms, filled by the weighting of each micro-batch.
        var policy = [Double](repeating: 0, count: R)
        var pairLoss = [Double](repeating: 0, count: B), ratio = [Double](repeating: 0, count: B)
        var rewards = [(Double, Double)](repeating: (0, 0), count: B)
        ad?.beginPass(training: true)
        for (start, rows) in spans {
            let Tp = T + Vt
            _ = try ids.withUnsafeBufferPointer { ip in
                try labels.withUnsafeBufferPointer { lb in
                    try forwardBackward(adapter: ad, grads: grads, fullGrads: slot == nil ? full!.gradWeights : nil,
                                        ids: ip.baseAddress! + start * T, labels: lb, rowStart: start, rows: rows, seqLen: T,
                                        gradScale: 1, checkpointed: tc.gradientCheckpointing,
                                        memory: tc.activationMemory, weighting: { losses, weights in
                        for j in 0..<rows {
                            var s = 0.0
                            for t in 0..<Tp { s += Double(losses[j * Tp + t]) }
                            policy[start + j] = -s
                        }
                        for q in 0..<(rows / 2) {
                            let i = start / 2 + q, c = start + 2 * q, rj = c + 1
                            let (wc, wr) = preferenceTerms(objective, pair: i, pairs: B, policyC: policy[c], policyR: policy[rj],
                                                           refC: refLogP[c], refR: refLogP[rj], countC: counted[c],
                                                           countR: counted[rj], chosenTokens: chosenTokens,
                                                           loss: &pairLoss[i], ratio: &ratio[i], rewards: &rewards[i])
                            // The token weight is −d loss / d log π(y): the cross-entropy gradient is −d log π / d logits.
                            (weights + 2 * q * Tp).update(repeating: Float(-wc), count: Tp)
                            (weights + (2 * q + 1) * Tp).update(repeating: Float(-wr), count: Tp)
                        }
                    })
                }
            }
        }
        ad?.endBackward(grads: grads)

        let inv = 1 / Double(B)
        var nll = 0.0
        if case .orpo = objective {
            nll = -stride(from: 0, to: R, by: 2).reduce(0.0) { $0 + policy[$1] } / Double(chosenTokens)
        }
        let loss = Float(pairLoss.reduce(0, +) * inv + nll)
        let rc = rewards.reduce(0.0) { $0 + $1.0 } * inv, rr = rewards.reduce(0.0) { $0 + $1.1 } * inv
        let acc = Double(rewards.filter { $0.0 > $0.1 }.count) * inv
        guard loss.isFinite, isAllFinite(grads, P) else {
            let norm = Float(sumOfSquares(grads, P).squareRoot())
            throw PEFTKitError.numerical("non-finite preference \(loss.isFinite ? "gradient" : "loss") (loss \(loss), grad norm \(norm)); the step was skipped and no weight changed")
        }
        computed = true
        pending = PendingGradients(opt: opt, step: opt.step, loss: loss, tokens: counted.reduce(0, +), randomState: randomState)
        return PreferenceStats(loss: loss, chosenReward: Float(rc), rejectedReward: Float(rr), rewardMargin: Float(rc - rr),
                               accuracy: Float(acc),
                               chosenLogProb: Float(stride(from: 0, to: R, by: 2).reduce(0.0) { $0 + policy[$1] } * inv),
                               rejectedLogProb: Float(stride(from: 1, to: R, by: 2).reduce(0.0) { $0 + policy[$1] } * inv),
                               nll: Float(nll), logOddsRatio: Float(ratio.reduce(0, +) * inv), tokens: counted.reduce(0, +))
    }

    /// Summed log-probability of each row's counted labels with no adapter (the DPO reference), rows
    /// [rowStart, rowStart + rows) of `labels` ([·, T], unshifted).
    func sequenceLogProbs(ids: UnsafePointer<Int32>, labels: UnsafeBufferPointer<Int32>, rowStart: Int, rows B: Int,
                          seqLen T: Int) throws -> [Double] {
        let V = config.vocabSize, C = config.hiddenSize
        let buf = try buffers.inference(engine: self, batch: B, tq: T, tk: T, adapter: nil)
        runStack(ids: ids, batch: B, seqLen: T, virtual: false, adapter: nil, buffers: .infer(buf))
        _ = fillTargets(buf.targets, labels: labels, rowStart: rowStart, rows: B, seqLen: T, virtual: 0)
        var out = [Double](repeating: 0, count: B)
        var losses = [Float](repeating: 0, count: TrainBuffers.headChunk)
        for b in 0..<B {
            var r0 = 0
            while r0 < T {
                let rows = min(TrainBuffers.headChunk, T - r0)
                weights.lmHead.forward(out: buf.logits, inp: buf.lnf + (b * T + r0) * C, rows: rows)
                let s = losses.withUnsafeMutableBufferPointer { lp in
                    crossEntropyForwardBackward(logits: buf.logits, losses: lp.baseAddress!, targets: buf.targets + b * T + r0,
                                                N: rows, V: V, gradScale: 0, computeGrad: false).lossSum
                }
                out[b] -= s
                r0 += rows
            }
        }
        return out
    }
}

/// One pair's loss terms (written into `loss`, `ratio`, `rewards`) and the derivatives of the batch loss with
/// respect to the policy's summed log-probabilities of its chosen and rejected responses.
func preferenceTerms(_ objective: PreferenceObjective, pair: Int, pairs B: Int, policyC: Double, policyR: Double,
                     refC: Double, refR: Double, countC: Int, countR: Int, chosenTokens: Int,
                     loss: inout Double, ratio: inout Double, rewards: inout (Double, Double)) -> (Double, Double) {
    let inv = 1 / Double(B)
    switch objective {
    case .dpo(let betaF):
        let beta = Double(betaF)
        let z = beta * ((policyC - refC) - (policyR - refR))
        loss = logOnePlusExp(-z)                 // −log σ(z)
        let g = -beta * sigmoid(-z) * inv       // d loss / d log π(c); the opposite for r
        rewards = (beta * (policyC - refC), beta * (policyR - refR))
        return (g, -g)
    case .orpo(let lambdaF):
        let lambda = Double(lambdaF)
        let ac = policyC / Double(countC), ar = policyR / Double(countR)
        // log odds(a) = a − log(1 − e^a); its derivative is 1 / (1 − e^a).
        let u = (ac - log1p(-exp(ac))) - (ar - log1p(-exp(ar)))
        ratio = -logOnePlusExp(-u)               // log σ(u)
        loss = -lambda * ratio
        let gu = -lambda * sigmoid(-u) * inv     // d loss / d u
        rewards = (lambda * ac, lambda * ar)
        let gc = gu / (-expm1(ac)) / Double(countC) - 1 / Double(chosenTokens)
        let gr = -gu / (-expm1(ar)) / Double(countR)
        return (gc, gr)
    }
}

/// log(1 + e^x) without overflow.
func logOnePlusExp(_ x: Double) -> Double { x > 0 ? x + log1p(exp(-x)) : log1p(exp(x)) }

/// 1 / (1 + e^−x) without overflow.
func sigmoid(_ x: Double) -> Double { x >= 0 ? 1 / (1 + exp(-x)) : exp(x) / (1 + exp(x)) }
