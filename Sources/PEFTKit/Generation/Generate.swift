extension Engine {
    /// Prefill + KV-cached decode with the active adapter; see `Model.generate`.
    func generate(prompt: [Int32], config g: GenerateConfig, onToken: ((Int32) -> Bool)?) throws -> [Int32] {
        try g.validate()
        try require(!prompt.isEmpty, "the prompt is empty")
        let adapter = active?.adapter
        let Vt = adapter?.virtualTokens ?? 0, P = adapter?.prefixLength ?? 0
        let extra = Vt + P
        try require(prompt.count + extra <= config.maxPositions,
                    "prompt length \(prompt.count)\(extra > 0 ? " plus \(extra) virtual/prefix positions" : "") exceeds the model's maximum \(config.maxPositions)")
        try prompt.withUnsafeBufferPointer { try checkTokens($0, count: prompt.count, what: "prompt") }
        for s in g.stopTokens {
            try require(s >= 0 && Int(s) < config.vocabSize, "stop token \(s) is outside the vocabulary")
        }
        let maxNew = min(g.maxNewTokens, config.maxPositions - prompt.count - extra)
        if maxNew <= 0 { return [] }
        let total = extra + prompt.count + maxNew
        try rope?.reserve(total)
        adapter?.beginPass(training: false)
        let cache = try KVCache(config: config, batch: 1, maxLen: total)
        if P > 0, let ad = adapter {
            // The prefix occupies the first P cache positions of every layer.
            for l in 0..<config.numLayers {
                guard let (pk, pv) = ad.prefixKV(l) else { continue }
                cache.kRows(l).ptr.update(from: pk, count: P * cache.width)
                cache.vRows(l).ptr.update(from: pv, count: P * cache.width)
            }
            cache.length = P
        }
        let V = config.vocabSize
        let Tp = Vt + prompt.count
        // Buffers sized for the prompt; decode steps reuse them with tq = 1.
        let buf = try buffers.generation(engine: self, tq: Tp, tk: total, adapter: adapter)
        let logits = try Storage.allocate(floats: V)
        var sampler = Sampler(config: g, vocab: V)
        var out: [Int32] = []
        out.reserveCapacity(maxNew)

        func step(_ ids: UnsafePointer<Int32>, _ T: Int, first: Bool) {
            runStack(ids: ids, batch: 1, seqLen: T, virtual: first, adapter: adapter, buffers: .infer(buf), cache: cache,
                     lastRowOnly: true)
            weights.lmHead.forward(out: logits.floats, inp: buf.lnf, rows: 1)
        }

        prompt.withUnsafeBufferPointer { step($0.baseAddress!, prompt.count, first: true) }
        while out.count < maxNew {
            // NaN or infinity (e.g. from a damaged adapter) would otherwise be sampled into arbitrary tokens.
            guard isAllFinite(logits.floats, V) else {
                throw PEFTKitError.numerical("the logits for new token \(out.count) contain NaN or infinity; generation stopped")
            }
            let tok = sampler.sample(logits.floats)
            out.append(tok)
            if let cb = onToken, !cb(tok) { break }
            if g.stopTokens.contains(tok) || out.count == maxNew { break }
            var t = tok
            step(&t, 1, first: false)
        }
        return out
    }
}
