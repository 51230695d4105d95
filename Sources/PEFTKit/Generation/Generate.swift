extension Engine {
    /// Prefill + KV-cached decode with the active adapter; see `Model.generate`.
    func generate(prompt: [Int32], config g: GenerateConfig, onToken: ((Int32) -> Bool)?) throws -> [Int32] {
        try g.validate()
        try require(!prompt.isEmpty, "the prompt is empty")
        try require(prompt.count <= config.maxPositions,
                    "prompt length \(prompt.count) exceeds the model's maximum \(config.maxPositions)")
        try prompt.withUnsafeBufferPointer { try checkTokens($0, count: prompt.count, what: "prompt") }
        for s in g.stopTokens {
            try require(s >= 0 && Int(s) < config.vocabSize, "stop token \(s) is outside the vocabulary")
        }
        let maxNew = min(g.maxNewTokens, config.maxPositions - prompt.count)
        if maxNew <= 0 { return [] }
        let total = prompt.count + maxNew
        let adapter = active?.adapter
        let cache = try KVCache(config: config, batch: 1, maxLen: total)
        let V = config.vocabSize, C = config.hiddenSize
        // Buffers sized for the prompt; decode steps reuse them with tq = 1.
        let buf = try InferBuffers(engine: self, batch: 1, tq: prompt.count, tk: total, adapter: adapter)
        let logits = try Storage.allocate(floats: V)
        var sampler = Sampler(config: g, vocab: V)
        var out: [Int32] = []
        out.reserveCapacity(maxNew)

        func step(_ ids: UnsafePointer<Int32>, _ T: Int) {
            let past = cache.length
            embed(buf.streams[0], ids: ids, rows: T, seqLen: T, pastLen: past)
            var cur = 0
            for l in 0..<config.numLayers {
                forwardLayer(l, x: buf.streams[cur], out: buf.streams[1 - cur], a: &buf.acts, batch: 1, seqLen: T,
                             pastLen: past, cache: cache, adapter: adapter)
                cur = 1 - cur
            }
            cache.length += T
            let last = buf.streams[cur] + (T - 1) * C
            finalNorm(out: buf.lnf, mean: buf.lnfMean, rstd: buf.lnfRstd, inp: last, rows: 1)
            weights.lmHead.forward(out: logits.floats, inp: buf.lnf, rows: 1)
        }

        prompt.withUnsafeBufferPointer { step($0.baseAddress!, prompt.count) }
        while out.count < maxNew {
            let tok = sampler.sample(logits.floats)
            out.append(tok)
            if let cb = onToken, !cb(tok) { break }
            if g.stopTokens.contains(tok) || out.count == maxNew { break }
            var t = tok
            step(&t, 1)
        }
        return out
    }
}
