extension Engine {
    /// Prefill + KV-cached decode with the active adapter; see `Model.generateResult`. `tokenizer` is needed
    /// only for stop strings.
    func generate(prompt: [Int32], config g: GenerateConfig, tokenizer: Tokenizer?,
                  onToken: ((Int32) -> Bool)?) throws -> GenerateResult {
        try checkGenerate(prompt: prompt, config: g, tokenizer: tokenizer)
        let adapter = active?.adapter
        let Vt = adapter?.virtualTokens ?? 0, P = adapter?.prefixLength ?? 0
        let extra = Vt + P
        let limit = config.maxPositions - prompt.count - extra
        var row = try GenerationRow(prompt: prompt, config: g, positionsLeft: limit, vocab: config.vocabSize,
                                    tokenizer: tokenizer)
        if row.maxNew <= 0 { return row.result() }
        let total = extra + prompt.count + row.maxNew
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

        func step(_ ids: UnsafePointer<Int32>, _ T: Int, first: Bool) {
            // No gradients: the prompt's products may take 8-bit activations (`FrozenLinear.int8Prefill`).
            FrozenLinear.withInt8Prefill {
                runStack(ids: ids, batch: 1, seqLen: T, virtual: first, adapter: adapter, buffers: .infer(buf),
                         cache: cache, lastRowOnly: true)
            }
            weights.lmHead.forward(out: logits.floats, inp: buf.lnf, rows: 1)
        }

        prompt.withUnsafeBufferPointer { step($0.baseAddress!, prompt.count, first: true) }
        while var t = try row.next(logits: logits.floats, onToken: onToken) {
            step(&t, 1, first: false)
        }
        return row.result()
    }

    /// The checks every generation makes before it runs: config, prompt, stop tokens, and a tokenizer for stop
    /// strings.
    func checkGenerate(prompt: [Int32], config g: GenerateConfig, tokenizer: Tokenizer?) throws {
        try g.validate()
        try require(!prompt.isEmpty, "the prompt is empty")
        let adapter = active?.adapter
        let extra = (adapter?.virtualTokens ?? 0) + (adapter?.prefixLength ?? 0)
        try require(prompt.count + extra <= config.maxPositions,
                    "prompt length \(prompt.count)\(extra > 0 ? " plus \(extra) virtual/prefix positions" : "") exceeds the model's maximum \(config.maxPositions)")
        try prompt.withUnsafeBufferPointer { try checkTokens($0, count: prompt.count, what: "prompt") }
        for s in g.stopTokens {
            try require(s >= 0 && Int(s) < config.vocabSize, "stop token \(s) is outside the vocabulary")
        }
        if !g.stopStrings.isEmpty {
            guard tokenizer != nil else {
                throw PEFTKitError.state("stop strings need the model's tokenizer, and this model has none")
            }
        }
    }
}

/// One generating row's state between forward passes: the sampler, the repetition penalty's window, the stop
/// checks, and the finish reason once the row is done. The forward passes are the caller's: `next` takes the
/// logits of the row's last position and returns the token to feed next, or nil when the row has finished.
struct GenerationRow {
    let config: GenerateConfig
    /// New tokens at most: `maxNewTokens`, or fewer when the context would be full first.
    let maxNew: Int
    private let vocab: Int
    private var sampler: Sampler
    private var penalty: RepetitionPenalty
    private var stops: StopStringMatcher?
    private(set) var out: [Int32] = []
    private(set) var finish: FinishReason?
    private var stopIndex: Int?
    /// Tokens kept and the text before a stop string.
    private var cut: (tokens: Int, text: String, offset: Int)?

    /// `positionsLeft`: the model's positions not taken by the prompt (and virtual/prefix positions).
    init(prompt: [Int32], config g: GenerateConfig, positionsLeft: Int, vocab: Int, tokenizer: Tokenizer?) throws {
        config = g
        self.vocab = vocab
        maxNew = max(0, min(g.maxNewTokens, positionsLeft))
        sampler = Sampler(config: g, vocab: vocab)
        penalty = RepetitionPenalty(penalty: g.repetitionPenalty, vocab: vocab)
        penalty.add(prompt)
        if !g.stopStrings.isEmpty, let tokenizer {
            stops = StopStringMatcher(tokenizer: tokenizer, stops: g.stopStrings)
        }
        out.reserveCapacity(maxNew)
        if maxNew == 0 { finish = g.maxNewTokens == 0 ? .length : .contextFull }
    }

    var isFinished: Bool { finish != nil }

    /// Samples the next token from `logits` (the penalty is applied to them in place), passes it to `onToken`,
    /// checks the stops; returns the token to run next, or nil when the row is done.
    mutating func next(logits: UnsafeMutablePointer<Float>, onToken: ((Int32) -> Bool)?) throws -> Int32? {
        guard finish == nil else { return nil }
        // NaN or infinity (e.g. from a damaged adapter) would otherwise be sampled into arbitrary tokens.
        guard isAllFinite(logits, vocab) else {
            throw PEFTKitError.numerical("the logits for new token \(out.count) contain NaN or infinity; generation stopped")
        }
        penalty.apply(logits)
        let tok = sampler.sample(logits)
        out.append(tok)
        penalty.add(CollectionOfOne(tok))
        let goOn = onToken.map { $0(tok) } ?? true
        let hit = stops?.push(tok) ?? nil
        if let i = config.stopTokens.firstIndex(of: tok) {
            finish = .stopToken; stopIndex = i
        } else if let hit, let m = stops {
            finish = .stopString; stopIndex = hit.index
            cut = (m.tokensBefore(hit.start), m.text(upTo: hit.start), hit.start)
        } else if !goOn {
            finish = .cancelled
        } else if out.count == maxNew {
            finish = maxNew < config.maxNewTokens ? .contextFull : .length
        }
        return finish == nil ? tok : nil
    }

    func result() -> GenerateResult {
        let reason = finish ?? .length
        if let cut {
            return GenerateResult(tokens: Array(out[..<cut.tokens]), finishReason: reason, stopIndex: stopIndex,
                                  text: cut.text, droppedTokens: Array(out[cut.tokens...]), stopByteOffset: cut.offset)
        }
        return GenerateResult(tokens: out, finishReason: reason, stopIndex: stopIndex, text: stops?.text(upTo: nil))
    }
}

/// Finds stop strings in the bytes of the generated tokens as they arrive.
struct StopStringMatcher {
    let tokenizer: Tokenizer
    let stops: [[UInt8]]
    private var bytes: [UInt8] = []
    /// Byte offset where each token's bytes end.
    private var ends: [Int] = []

    init(tokenizer: Tokenizer, stops: [String]) {
        self.tokenizer = tokenizer
        self.stops = stops.map { Array($0.utf8) }
    }

    /// Appends a token's bytes; returns the earliest match that the new bytes complete (lowest start, then
    /// lowest stop index), or nil. Every earlier token was checked already, so a match must end in the new
    /// bytes.
    /// A token the tokenizer does not know (a model vocabulary larger than the tokenizer's) adds no bytes.
    mutating func push(_ id: Int32) -> (index: Int, start: Int)? {
        let old = bytes.count
        try? tokenizer.appendBytes(of: id, to: &bytes)
        ends.append(bytes.count)
        var best: (index: Int, start: Int)? = nil
        for (i, s) in stops.enumerated() where s.count <= bytes.count {
            var start = max(0, old - s.count + 1)
            while start + s.count <= bytes.count {
                if bytes[start] == s[0] && bytes[start..<(start + s.count)].elementsEqual(s) {
                    if best == nil || start < best!.start { best = (i, start) }
                    break
                }
                start += 1
            }
        }
        return best
    }

    /// Number of tokens whose bytes all lie before byte `start`.
    func tokensBefore(_ start: Int) -> Int {
        var n = 0
        while n < ends.count && ends[n] <= start { n += 1 }
        return n
    }

    /// The text of the bytes before `end` (all bytes when nil); invalid UTF-8 becomes U+FFFD.
    func text(upTo end: Int?) -> String {
        String(decoding: bytes[..<(end ?? bytes.count)], as: UTF8.self)
    }
}
