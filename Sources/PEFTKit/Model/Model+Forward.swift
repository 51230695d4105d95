// Forward passes that return more than the mean loss: per-token log-probabilities of the labels, per-row losses,
// and the logits of every position, of the last one only, or none. For hosts that score candidates (rank answers by
// their log-likelihood) or read the next-token distribution of long rows without [batch, seq, vocab] logits.

/// Which logits a forward pass writes.
public enum LogitsOutput: String, Sendable, CaseIterable {
    /// Every position: [batch, seqLen, vocab].
    case all
    /// The last position of each row: [batch, vocab].
    case last
    /// None.
    case none
}

/// Where a forward pass writes its outputs (each buffer optional).
public struct ForwardOutputs {
    /// Which logits `logits` receives.
    public var logitsMode: LogitsOutput
    /// [batch, seqLen, vocab] floats for `.all`, [batch, vocab] for `.last`; must be nil for `.none`.
    public var logits: UnsafeMutableBufferPointer<Float>?
    /// [batch, seqLen]: at [b, t] the log-probability of `labels[b, t]` given the tokens before t (labels shifted
    /// as for the loss), 0 where the label does not count (-100, and t = 0 unless the adapter adds virtual tokens).
    public var tokenLogprobs: UnsafeMutableBufferPointer<Float>?
    /// [batch]: each row's mean cross-entropy (0 when none of its labels counts).
    public var rowLosses: UnsafeMutableBufferPointer<Float>?
    /// [batch]: each row's counted label positions.
    public var rowTokens: UnsafeMutableBufferPointer<Int>?
    /// Whether the mean loss is wanted. Without it and without the three buffers above, the LM head runs on the last
    /// position of each row only and the result's loss is 0.
    public var computeLoss: Bool

    public init(logitsMode: LogitsOutput = .all, logits: UnsafeMutableBufferPointer<Float>? = nil,
                tokenLogprobs: UnsafeMutableBufferPointer<Float>? = nil, rowLosses: UnsafeMutableBufferPointer<Float>? = nil,
                rowTokens: UnsafeMutableBufferPointer<Int>? = nil, computeLoss: Bool = true) {
        self.logitsMode = logitsMode
        self.logits = logits
        self.tokenLogprobs = tokenLogprobs
        self.rowLosses = rowLosses
        self.rowTokens = rowTokens
        self.computeLoss = computeLoss
    }
}

/// Everything `Model.score` computes, as arrays.
public struct ForwardResult: Sendable {
    /// Mean cross-entropy over every counted label (the token-weighted mean of `rowLosses`).
    public var loss: Float
    /// Counted label positions.
    public var tokens: Int
    /// The logits the call asked for (empty for `.none`).
    public var logits: [Float]
    /// [batch, seqLen] log-probabilities of the labels (see `ForwardOutputs.tokenLogprobs`).
    public var tokenLogprobs: [Float]
    /// [batch] mean loss of each row.
    public var rowLosses: [Float]
    /// [batch] counted labels of each row.
    public var rowTokens: [Int]
}

extension Model {
    /// A forward pass with the active adapter (or the base model), without any update, writing what `outputs` asks
    /// for. Returns the mean loss over the counted labels (`labels` default to the inputs; -100 does not count).
    ///
    /// ```swift
    /// var lp = [Float](repeating: 0, count: 2 * 16)
    /// _ = try lp.withUnsafeMutableBufferPointer { buf in
    ///     try model.forward(inputIDs: ids, labels: nil, batch: 2, seqLen: 16,
    ///                       outputs: ForwardOutputs(logitsMode: .none, tokenLogprobs: buf))
    /// }
    /// ```
    public func forward(inputIDs: UnsafeBufferPointer<Int32>, labels: UnsafeBufferPointer<Int32>? = nil, batch: Int,
                        seqLen: Int, outputs: ForwardOutputs) throws -> EvalResult {
        if outputs.logitsMode == .none && outputs.logits != nil {
            throw PEFTKitError.invalidArgument("logits are given but the logits mode is none")
        }
        return try exclusive {
            try engine.evaluate(inputIDs: inputIDs, labels: labels, batch: batch, seqLen: seqLen,
                                logits: outputs.logitsMode == .none ? nil : outputs.logits,
                                lastLogitsOnly: outputs.logitsMode == .last, computeLoss: outputs.computeLoss,
                                tokenLogprobs: outputs.tokenLogprobs, rowLosses: outputs.rowLosses, rowTokens: outputs.rowTokens)
        }
    }

    /// Convenience: a forward pass returning the loss, the per-token log-probabilities of the labels, the per-row
    /// losses and token counts, and the logits `logits` names, as arrays.
    public func score(inputIDs: [Int32], labels: [Int32]? = nil, batch: Int, seqLen: Int,
                      logits mode: LogitsOutput = .none) throws -> ForwardResult {
        guard batch > 0, seqLen > 0, batch <= 1 << 16 else {
            throw PEFTKitError.invalidArgument("bad batch/seqLen \(batch)x\(seqLen)")
        }
        let (n, o1) = batch.multipliedReportingOverflow(by: seqLen)
        let rowsOfLogits = mode == .all ? n : (mode == .last ? batch : 0)
        let (nl, o2) = rowsOfLogits.multipliedReportingOverflow(by: config.vocabSize)
        guard !o1, !o2 else { throw PEFTKitError.outOfMemory("batch × sequence × vocabulary overflows") }
        guard inputIDs.count == n, labels.map({ $0.count == n }) ?? true else {
            throw PEFTKitError.invalidArgument("input_ids / labels must hold batch × seqLen = \(n) entries")
        }
        var lg = [Float](repeating: 0, count: nl)
        var lp = [Float](repeating: 0, count: n)
        var rl = [Float](repeating: 0, count: batch)
        var rt = [Int](repeating: 0, count: batch)
        let r: EvalResult = try inputIDs.withUnsafeBufferPointer { ids in
            try lg.withUnsafeMutableBufferPointer { lgb in
                try lp.withUnsafeMutableBufferPointer { lpb in
                    try rl.withUnsafeMutableBufferPointer { rlb in
                        try rt.withUnsafeMutableBufferPointer { rtb in
                            let out = ForwardOutputs(logitsMode: mode, logits: mode == .none ? nil : lgb, tokenLogprobs: lpb,
                                                     rowLosses: rlb, rowTokens: rtb)
                            if let labels {
                                return try labels.withUnsafeBufferPointer {
                                    try forward(inputIDs: ids, labels: $0, batch: batch, seqLen: seqLen, outputs: out)
                                }
                            }
                            return try forward(inputIDs: ids, labels: nil, batch: batch, seqLen: seqLen, outputs: out)
                        }
                    }
                }
            }
        }
        return ForwardResult(loss: r.loss, tokens: r.tokens, logits: lg, tokenLogprobs: lp, rowLosses: rl, rowTokens: rt)
    }
}
