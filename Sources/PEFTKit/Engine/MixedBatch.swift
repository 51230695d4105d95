// Mixed-adapter batches: each row of a forward pass runs with its own adapter.

extension Engine {
    /// Forward pass where row b uses adapter `adapters[b]` (nil = base model): rows are grouped by adapter and
    /// each group runs with its own adapter, so a row's result is exactly what it gets alone in a batch of its
    /// group. Returns the loss over all counted tokens.
    func evaluateMixed(inputIDs: UnsafeBufferPointer<Int32>, labels: UnsafeBufferPointer<Int32>?, adapters names: [String?],
                       batch B: Int, seqLen T: Int, logits: UnsafeMutableBufferPointer<Float>?) throws -> EvalResult {
        try require(names.count == B, "\(names.count) adapter choices for a batch of \(B) rows")
        try validateBatch(inputIDs: inputIDs, labels: labels, batch: B, seqLen: T, adapter: nil)
        let V = config.vocabSize
        if let logits { try require(logits.count >= B * T * V, "logits buffer holds \(logits.count) floats, needs \(B * T * V)") }
        for n in names { if let n { _ = try adapter(named: n) } }
        let saved = activeName
        defer { activeName = saved }
        var groups: [String?: [Int]] = [:]
        var order: [String?] = []
        for (b, n) in names.enumerated() {
            if groups[n] == nil { order.append(n) }
            groups[n, default: []].append(b)
        }
        var lossSum = 0.0, count = 0
        for n in order {
            let rows = groups[n]!
            var ids = [Int32](), lab = [Int32]()
            for b in rows {
                ids += inputIDs[(b * T)..<((b + 1) * T)]
                if let labels { lab += labels[(b * T)..<((b + 1) * T)] }
            }
            activeName = n
            var out = [Float](repeating: 0, count: rows.count * T * V)
            let r: EvalResult = try ids.withUnsafeBufferPointer { ip in
                try out.withUnsafeMutableBufferPointer { op in
                    if labels != nil {
                        return try lab.withUnsafeBufferPointer { try evaluate(inputIDs: ip, labels: $0, batch: rows.count, seqLen: T, logits: op) }
                    }
                    return try evaluate(inputIDs: ip, labels: nil, batch: rows.count, seqLen: T, logits: op)
                }
            }
            lossSum += Double(r.loss) * Double(r.tokens)
            count += r.tokens
            if let logits {
                for (i, b) in rows.enumerated() {
                    (logits.baseAddress! + b * T * V).update(from: out.withUnsafeBufferPointer { $0.baseAddress! } + i * T * V, count: T * V)
                }
            }
        }
        return EvalResult(loss: count > 0 ? Float(lossSum / Double(count)) : 0, tokens: count)
    }
}
