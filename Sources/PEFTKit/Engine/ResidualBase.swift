// Adapters that run over a rewritten base (LoRA's PiSSA and OLoRA inits, Adapters/LoRA/LoRAInit.swift): their
// residual weights replace the base linears while they are attached. Like a merge, the edits go to copies (the
// original tensors, possibly memory-mapped, are never written) and removing the adapter puts the originals back
// bit for bit. While attached, every forward pass runs on the residual, whichever adapter is active or none: what
// PEFT does (its disabled PiSSA adapter gives the residual model).

extension Engine {
    /// Attaches `slot`, first rewriting the base linears its adapter runs over (if any).
    func appendSlot(_ slot: AdapterSlot) throws {
        // A LoRA adapter of the standard init rewrites nothing: no edits.
        if let edits = (slot.adapter as? BaseRewritingAdapter)?.baseEdits(), !edits.isEmpty {
            let what = "adapter '\(slot.name)' replaces base weights by a residual"
            guard merges.isEmpty else {
                throw PEFTKitError.state("\(what): unmerge the merged adapters (\(merges.map { $0.name })) before attaching it")
            }
            guard full == nil else { throw PEFTKitError.state("\(what): disable full fine-tuning before attaching it") }
            for other in adapters {
                guard let rec = other.rewrite else { continue }
                for e in edits where rec.replaced.contains(where: { $0.layer == e.layer && $0.site == e.site }) {
                    throw PEFTKitError.state("\(what), but adapter '\(other.name)' already replaced layer \(e.layer) \(e.site) by "
                        + "its own residual: remove it first (or save it converted to a plain LoRA)")
                }
            }
            var rec = MergeRecord(name: slot.name)
            for e in edits {
                guard var lin = weights.linear(e.layer, e.site), lin.f32Weight != nil else {
                    throw PEFTKitError.unsupported("\(what): layer \(e.layer) \(e.site) has no fp32 weight")
                }
                let wn = lin.inFeatures * lin.outFeatures
                let ws = try Storage.allocate(floats: wn)
                ws.floats.update(from: lin.weight, count: wn)
                e.apply(ws.floats, nil, lin.transposed, lin.inFeatures, lin.outFeatures)
                rec.replaced.append((e.layer, e.site, lin.weight, lin.bias))
                rec.storages.append(ws)
                lin.weight = ws.floats
                setLinear(e.layer, e.site, lin)
            }
            slot.rewrite = rec
            buffers.invalidate()
        }
        adapters.append(slot)
    }

    /// Checks that `slot`'s residual weights can be taken back (nothing built on them since).
    func checkRestorableBase(_ slot: AdapterSlot) throws {
        guard slot.rewrite != nil else { return }
        guard merges.isEmpty else {
            throw PEFTKitError.state("adapter '\(slot.name)' replaced base weights by a residual and adapters are merged into them: "
                + "unmerge \(merges.map { $0.name }) first")
        }
        guard full == nil else {
            throw PEFTKitError.state("adapter '\(slot.name)' replaced base weights by a residual: disable full fine-tuning first")
        }
    }

    /// Puts back the base weights `slot`'s adapter replaced (after `checkRestorableBase`).
    func restoreBase(_ slot: AdapterSlot) {
        guard let rec = slot.rewrite else { return }
        for r in rec.replaced.reversed() {
            guard var lin = weights.linear(r.layer, r.site) else { continue }
            lin.weight = r.weight
            setLinear(r.layer, r.site, lin)
        }
        slot.rewrite = nil
        buffers.invalidate()
    }
}
