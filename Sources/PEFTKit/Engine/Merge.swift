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
