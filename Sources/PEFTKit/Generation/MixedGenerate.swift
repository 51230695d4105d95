// Generation for several prompts with an adapter each: rows that can share forward passes decode as one batch.

extension Engine {
    /// Generation for several prompts, prompt b with adapter `names[b]` (nil = base model); see
    /// `Model.generateResults`. Every row is checked before any runs. Rows with the same adapter and the same
    /// prompt length decode together (`generateBatch`: one forward pass per step for all of them); a row that
    /// shares neither runs alone. The active adapter is restored afterwards.
    func generateMixed(prompts: [[Int32]], adapters names: [String?], config g: GenerateConfig,
                       tokenizer: Tokenizer?) throws -> [GenerateResult] {
        try require(prompts.count == names.count, "\(names.count) adapter choices for \(prompts.count) prompts")
        try require(!prompts.isEmpty, "no prompts to generate for")
        for n in names { if let n { _ = try adapter(named: n) } }
        let saved = activeName
        defer { activeName = saved }
        for (b, (p, n)) in zip(prompts, names).enumerated() {
            activeName = n
            do {
                try checkGenerate(prompt: p, config: g, tokenizer: tokenizer)
            } catch PEFTKitError.invalidArgument(let m) {
                throw PEFTKitError.invalidArgument("prompt \(b): \(m)")
            }
        }
        // Groups of rows that can share every forward pass, in order of their first row.
        struct Key: Hashable { let adapter: String?; let length: Int }
        var groups: [Key: [Int]] = [:]
        var order: [Key] = []
        for (b, (p, n)) in zip(prompts, names).enumerated() {
            let k = Key(adapter: n, length: p.count)
            if groups[k] == nil { order.append(k) }
            groups[k, default: []].append(b)
        }
        var out = [GenerateResult?](repeating: nil, count: prompts.count)
        for k in order {
            let rows = groups[k]!
            activeName = k.adapter
            if rows.count == 1 {
                out[rows[0]] = try generate(prompt: prompts[rows[0]], config: g, tokenizer: tokenizer, onToken: nil)
            } else {
                let rs = try generateBatch(prompts: rows.map { prompts[$0] }, config: g, tokenizer: tokenizer)
                for (i, b) in rows.enumerated() { out[b] = rs[i] }
            }
        }
        return out.map { $0! }
    }

    /// Generation for `B` prompts of one length with the active adapter, decoded together: one prefill of
    /// [B, T] and then one forward pass of B rows per step over a batched KV cache, each row with its own
    /// sampler (seeded from `config.seed`, as if alone), penalty window and stops. A finished row keeps its
    /// place in the batch (its next inputs are ignored) so that every row's cache positions stay aligned; the
    /// loop ends when every row has finished. Row b's tokens equal `generate` for prompt b alone (the batched
    /// products may differ from one-row products in the last bits of the logits).
    func generateBatch(prompts: [[Int32]], config g: GenerateConfig, tokenizer: Tokenizer?) throws -> [GenerateResult] {
        let B = prompts.count, T = prompts[0].count
        let adapter = active?.adapter
        let Vt = adapter?.virtualTokens ?? 0, P = adapter?.prefixLength ?? 0
        let limit = config.maxPositions - T - Vt - P
        var rows = try prompts.map {
            try GenerationRow(prompt: $0, config: g, positionsLeft: limit, vocab: config.vocabSize, tokenizer: tokenizer)
        }
        let maxNew = rows[0].maxNew
        if maxNew <= 0 { return rows.map { $0.result() } }
        let total = Vt + P + T + maxNew
        try rope?.reserve(total)
        adapter?.beginPass(training: false)
        let cache = try KVCache(config: config, batch: B, maxLen: total)
        if P > 0, let ad = adapter {
            for l in 0..<config.numLayers {
                guard let (pk, pv) = ad.prefixKV(l) else { continue }
                let kr = cache.kRows(l), vr = cache.vRows(l)
                for b in 0..<B {
                    (kr.ptr + b * kr.batchStride).update(from: pk, count: P * cache.width)
                    (vr.ptr + b * vr.batchStride).update(from: pv, count: P * cache.width)
                }
            }
            cache.length = P
        }
        let V = config.vocabSize, C = config.hiddenSize
        let Tp = Vt + T
        let buf = try buffers.generation(engine: self, batch: B, tq: Tp, tk: total, adapter: adapter)
        let logits = try Storage.allocate(floats: B * V)
        var ids = prompts.flatMap { $0 }
        ids.withUnsafeBufferPointer { p in
            // No gradients: the prompts' products may take 8-bit activations (`FrozenLinear.int8Prefill`).
            FrozenLinear.withInt8Prefill {
                runStack(ids: p.baseAddress!, batch: B, seqLen: T, virtual: true, adapter: adapter, buffers: .infer(buf),
                         cache: cache)
            }
        }
        for b in 0..<B {
            weights.lmHead.forward(out: logits.floats + b * V, inp: buf.lnf + (b * Tp + Tp - 1) * C, rows: 1)
        }
        ids = [Int32](repeating: 0, count: B)
        while true {
            var live = false
            for b in 0..<B where !rows[b].isFinished {
                if let t = try rows[b].next(logits: logits.floats + b * V, onToken: nil) {
                    ids[b] = t
                    live = true
                }
            }
            if !live { break }
            ids.withUnsafeBufferPointer {
                runStack(ids: $0.baseAddress!, batch: B, seqLen: 1, virtual: false, adapter: adapter, buffers: .infer(buf),
                         cache: cache)
            }
            weights.lmHead.forward(out: logits.floats, inp: buf.lnf, rows: B)
        }
        return rows.map { $0.result() }
    }
}
