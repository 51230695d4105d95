/// One merge: the base weight/bias pointers it replaced, and the storage of the merged copies.
struct MergeRecord {
    let name: String
    var replaced: [(layer: Int, site: LinearSite, weight: UnsafeMutablePointer<Float>, bias: UnsafeMutablePointer<Float>?)] = []
    var storages: [Storage] = []
}

extension Engine {
    /// Folds a LoRA or IA3 adapter into copies of the base weights it touches (the original tensors, possibly
    /// memory-mapped, are never written). While merged, the adapter's hooks are off and the base model
    /// includes it. Unmerge restores the original weights bit for bit. Merges nest: unmerge in reverse order.
    func merge(name: String) throws {
        let slot = try adapter(named: name)
        guard !slot.merged else { throw PEFTKitError.state("adapter '\(name)' is already merged") }
        guard full == nil else {
            throw PEFTKitError.state("full fine-tuning is enabled: disable it before merging an adapter")
        }
        guard let mergeable = slot.adapter as? MergeableAdapter else {
            throw PEFTKitError.unsupported("\(slot.adapter.method.rawValue) adapters cannot be merged (only LoRA and IA3)")
        }
        let edits = mergeable.mergeEdits()
        for e in edits {
            if let q = weights.linear(e.layer, e.site)?.quantized {
                throw PEFTKitError.unsupported("cannot merge adapter '\(name)' into layer \(e.layer) \(e.site): the base "
                    + "weight is kept in \(q.type) blocks. \(widenAdvice)")
            }
        }
        var rec = MergeRecord(name: name)
        for e in edits {
            guard var lin = weights.linear(e.layer, e.site) else { continue }
            let wn = lin.inFeatures * lin.outFeatures
            let ws = try Storage.allocate(floats: wn)
            ws.floats.update(from: lin.weight, count: wn)
            var bs: Storage? = nil
            if let b = lin.bias {
                bs = try Storage.allocate(floats: lin.outFeatures)
                bs!.floats.update(from: b, count: lin.outFeatures)
            }
            e.apply(ws.floats, bs?.floats, lin.transposed, lin.inFeatures, lin.outFeatures)
            rec.replaced.append((e.layer, e.site, lin.weight, lin.bias))
            rec.storages.append(ws)
            if let bs { rec.storages.append(bs) }
            lin.weight = ws.floats
            lin.bias = bs?.floats
            setLinear(e.layer, e.site, lin)
        }
        merges.append(rec)
        slot.merged = true
        buffers.invalidate()
    }

    /// Restores the weights replaced by the latest merge, which must be `name`'s.
    func unmerge(name: String) throws {
        let slot = try adapter(named: name)
        guard slot.merged, let last = merges.last else { throw PEFTKitError.state("adapter '\(name)' is not merged") }
        guard last.name == name else {
            throw PEFTKitError.state("adapter '\(last.name)' was merged after '\(name)': unmerge it first")
        }
        for r in last.replaced.reversed() {
            guard var lin = weights.linear(r.layer, r.site) else { continue }
            lin.weight = r.weight
            lin.bias = r.bias
            setLinear(r.layer, r.site, lin)
        }
        merges.removeLast()
        slot.merged = false
        buffers.invalidate()
    }

    func setLinear(_ l: Int, _ site: LinearSite, _ lin: FrozenLinear) {
        weights.setLinear(l, site, lin)
    }

    /// Forward pass where row b uses adapter `adapters[b]` (nil = base model): rows are grouped by adapter and
    /// each group runs with its own adapter, so a row's result is exactly what it gets alone in a batch of its
    /// group. Returns the loss over all counted tokens.
    func evaluateMixed(inputIDs: UnsafeBufferPointer<Int32>, labels: UnsafeBufferPointer<Int32>?, adapters names: [String?],
                       batch B: Int, seqLen T: Int, logits: UnsafeMutableBufferPointer<Float>?) throws -> EvalResult {
        try require(names.count == B, "\(names.count) adapter choices for a batch of \(B) rows")
        try checkShape(batch: B, seqLen: T)
        try require(inputIDs.count >= B * T, "input_ids has \(inputIDs.count) entries, expected \(B * T)")
        if let labels { try require(labels.count >= B * T, "labels has \(labels.count) entries, expected \(B * T)") }
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

/// What to do when an operation needs fp32 base weights.
let widenAdvice = "Load the model widened to fp32 (Swift `Model.load(path:widen: true)`, C `peftkit_model_load_ex` "
    + "with `widen = 1`, Python `Model.load(path, widen=True)`, CLI `--widen`)"

/// Throws `unsupported` when some base weight of `weights` is kept in quantized blocks: `what` (full
/// fine-tuning, a merge) needs fp32 weights.
func requireWidened(_ weights: any ModelWeights, for what: String) throws {
    if let (name, m) = weights.quantized.first {
        throw PEFTKitError.unsupported("\(what) needs fp32 base weights, but '\(name)' (and \(weights.quantized.count - 1) "
            + "more) is kept in \(m.type) blocks. \(widenAdvice)")
    }
}
