// Preference tuning (DPO, ORPO): translation of peftkit_train_preference_step to Model.preferenceStep.

import CPEFTKit
import PEFTKit

@c @implementation
public func peftkit_train_preference_step(_ model: OpaquePointer?, _ objective: Int32, _ beta: Float,
                                          _ chosenIDs: UnsafePointer<Int32>?, _ chosenMask: UnsafePointer<Int32>?,
                                          _ rejectedIDs: UnsafePointer<Int32>?, _ rejectedMask: UnsafePointer<Int32>?,
                                          _ pairs: Int32, _ seqLen: Int32, _ config: UnsafePointer<peftkit_train_config>?,
                                          _ out: UnsafeMutablePointer<peftkit_train_result>?,
                                          _ stats: UnsafeMutablePointer<Float>?, _ statsCapacity: Int32) -> peftkit_status {
    entry("peftkit_train_preference_step") {
        let h = try ModelHandle.from(model)
        guard let chosenIDs else { throw ShimError.invalid("chosen_ids is NULL") }
        guard let chosenMask else { throw ShimError.invalid("chosen_mask is NULL") }
        guard let rejectedIDs else { throw ShimError.invalid("rejected_ids is NULL") }
        guard let rejectedMask else { throw ShimError.invalid("rejected_mask is NULL") }
        guard statsCapacity >= 0 else { throw ShimError.invalid("stats_capacity must be >= 0, got \(statsCapacity)") }
        let obj: PreferenceObjective
        switch objective {
        case PEFTKIT_OBJECTIVE_DPO: obj = .dpo(beta: beta)
        case PEFTKIT_OBJECTIVE_ORPO: obj = .orpo(lambda: beta)
        default: throw ShimError.invalid("objective \(objective) is not PEFTKIT_OBJECTIVE_DPO (1) or PEFTKIT_OBJECTIVE_ORPO (2)")
        }
        let tc = try trainConfig(from: config)
        let outSize = try outputStructSize(out, "out")
        // The arrays are copied: bound the row length first so that a wrong length cannot read far past them.
        try checkPromptLength(seqLen, "seq_len", model: h.model)
        let n = tokenCount(batch: pairs, seqLen: seqLen)
        func copy(_ p: UnsafePointer<Int32>) -> [Int32] { Array(UnsafeBufferPointer(start: p, count: n)) }
        let batch = PreferenceBatch(chosen: copy(chosenIDs), chosenMask: copy(chosenMask), rejected: copy(rejectedIDs),
                                    rejectedMask: copy(rejectedMask), pairs: Int(pairs), seqLen: Int(seqLen))
        let r = try h.model.preferenceStep(batch, objective: obj, config: tc)
        if let out, let outSize {
            var o = peftkit_train_result()
            o.struct_size = UInt32(MemoryLayout<peftkit_train_result>.size)
            o.loss = r.stats.loss
            o.grad_norm = r.gradNorm
            o.learning_rate = r.learningRate
            o.step = Int64(r.step)
            o.tokens = Int64(r.stats.tokens)
            writeStruct(o, to: out, size: outSize)
        }
        if let stats {
            let s = r.stats
            let values = [s.loss, s.chosenReward, s.rejectedReward, s.rewardMargin, s.accuracy, s.chosenLogProb,
                          s.rejectedLogProb, s.nll, s.logOddsRatio]
            for i in 0..<min(Int(statsCapacity), values.count) { stats[i] = values[i] }
        }
    }
}
