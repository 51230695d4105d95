import ArgumentParser
import PEFTKit

extension Train {
    /// `train --objective dpo|orpo`: preference tuning of the adapter on {"prompt", "chosen", "rejected"} records, one
    /// progress line per step with the loss, the reward margin and the accuracy.
    func trainPreference(_ lm: LoadedModel) throws {
        let m = lm.model
        let records = try PreferenceDataset.read(path: data)
        var pairs: [PreferenceExample] = []
        for (i, r) in records.enumerated() {
            do { pairs.append(try lm.encoder.encode(r)) } catch let e as PEFTKitError {
                throw CLIError("'\(data)' record \(i + 1): \(e.message)")
            }
        }
        let longest = pairs.map { max($0.chosen.inputIDs.count, $0.rejected.inputIDs.count) }.max() ?? seqLen
        let T = max(2, min(seqLen, m.config.maxPositions, longest))
        let n = steps ?? BatchOrder.steps(count: pairs.count, batch: batch, epochs: epochs)
        guard n > 0 else { throw CLIError("--steps/--epochs give no steps") }
        try checkpoints.attachOrResume(m, name: name, configJSON: try adapter.configJSON(model: m.config, seed: seed))
        try m.setActiveAdapter(name)
        let method = try m.adapterMethod(name: name)
        let obj: PreferenceObjective = objective == .dpo ? .dpo(beta: beta) : .orpo(lambda: beta)
        print("adapter '\(name)' (\(method.rawValue)): \(countString(try m.adapterParameterCount(name: name))) trainable parameters")
        print("data: \(pairs.count) pairs, \(n) steps of \(batch) pairs × \(T) tokens, \(objective.rawValue) "
              + (objective == .dpo ? "beta" : "lambda") + " \(beta)")
        var tc = TrainConfig()
        tc.learningRate = lr; tc.schedule = schedule; tc.warmupSteps = warmup; tc.totalSteps = n
        tc.weightDecay = weightDecay; tc.maxGradNorm = clip; tc.microBatchSize = microBatch
        tc.gradientCheckpointing = gradCheckpoint
        tc.activationMemory = activationMemory
        var order = try BatchOrder(count: pairs.count, batch: batch, seed: seed)
        let pad = lm.tokenizer.eosID ?? 0
        var losses: [Float] = []
        let clock = ContinuousClock(), start = clock.now
        for s in 1...n {
            let b = try PreferenceBatch(order.nextBatch().map { pairs[$0] }, seqLen: T, padID: pad)
            let r = try m.preferenceStep(b, objective: obj, config: tc)
            losses.append(r.stats.loss)
            let st = r.stats
            print("step \(s)/\(n): loss \(fmt(Double(st.loss), 4)), rewards chosen \(fmt(Double(st.chosenReward), 4)) "
                  + "rejected \(fmt(Double(st.rejectedReward), 4)), margin \(fmt(Double(st.rewardMargin), 4)), "
                  + "accuracy \(fmt(Double(st.accuracy), 2)), lr \(fmt(Double(r.learningRate), 6))")
        }
        print("trained \(n) steps in \(fmt((clock.now - start).seconds, 1)) s")
        try m.saveAdapter(name: name, to: out)
        let plot = out + "/loss.svg"
        try writeFileAtomically(path: plot, bytes: Array(lossPlotSVG(losses, title: "\(method.rawValue) \(objective.rawValue): loss per step").utf8))
        print("saved \(out) (\(byteString(diskBytes(out)))), loss plot \(plot)")
    }
}
