// Preference tuning (DPO, ORPO) of the active adapter; see `Training/Preference.swift`.

extension Model {
    /// One optimiser step of the active adapter on a batch of preference pairs with `objective`: forward passes,
    /// the preference loss, backward (per-token weights on the cross-entropy gradient) and AdamW with `config`'s
    /// learning rate, schedule, clipping and micro-batch size (counted in pairs). DPO runs one more forward with the
    /// adapter turned off for its reference. Non-finite loss, gradient or update: throws, nothing changes.
    ///
    /// ```swift
    /// let enc = DatasetEncoder(tokenizer: tok, chatTemplate: template)
    /// let pairs = try PreferenceDataset.read(path: "prefs.jsonl").map { try enc.encode($0) }
    /// let batch = try PreferenceBatch(pairs[0..<4], seqLen: 256, padID: tok.eosID ?? 0)
    /// let r = try model.preferenceStep(batch, objective: .dpo(beta: 0.1), config: tc)
    /// print(r.stats.loss, r.stats.rewardMargin)
    /// ```
    public func preferenceStep(_ batch: PreferenceBatch, objective: PreferenceObjective, config: TrainConfig) throws -> PreferenceStepResult {
        try exclusive {
            let stats = try engine.computePreferenceGradients(batch, objective: objective, config: config)
            let r = try engine.applyGradients(config: config)
            return PreferenceStepResult(stats: stats, gradNorm: r.gradNorm, learningRate: r.learningRate, step: r.step)
        }
    }

    /// The first half of `preferenceStep`: the loss and its gradient, left in the gradient buffer (`withGradients`)
    /// for `applyGradients`, as `computeGradients` does for the language-model loss.
    public func computePreferenceGradients(_ batch: PreferenceBatch, objective: PreferenceObjective,
                                           config: TrainConfig) throws -> PreferenceStats {
        try exclusive { try engine.computePreferenceGradients(batch, objective: objective, config: config) }
    }
}
