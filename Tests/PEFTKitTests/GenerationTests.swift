import Testing
@testable import PEFTKit

#if canImport(Glibc)
import Glibc
#endif

// Sampling options, finish reasons, stop strings, mixed-adapter generation and UTF-8 streaming. Expectations are
// computed independently of the code under test: greedy tokens from full forward passes (no KV cache) with the
// penalty applied by hand, stop-string cuts from a byte search over the unstopped output.

private let tinyTokenizerPath = TS.fixtures + "/tokenizer/tiny/tokenizer.json"

/// SmolLM2's real byte-level BPE tokenizer (49152 tokens), read from the GGUF; nil (skipped) when not installed.
private func smolTokenizer() throws -> Tokenizer? {
    guard let path = smolPath() else { return nil }
    return try Tokenizer(gguf: try GGUFFile(path: path))
}

/// Last-position logits of a full forward pass over `seq` (no KV cache).
private func lastLogits(_ model: Model, _ seq: [Int32]) throws -> [Float] {
    let V = model.config.vocabSize
    let lg = try model.forward(inputIDs: seq, batch: 1, seqLen: seq.count).logits
    return Array(lg[(seq.count - 1) * V..<seq.count * V])
}

/// Start of the first occurrence of `needle` in `hay`, or nil.
private func firstIndex(of needle: [UInt8], in hay: [UInt8]) -> Int? {
    guard needle.count <= hay.count else { return nil }
    for s in 0...(hay.count - needle.count) where Array(hay[s..<(s + needle.count)]) == needle { return s }
    return nil
}

@Suite struct GenerationOptionTests {
    @Test(arguments: [Architecture.gpt2, .llama])
    func repetitionPenaltySteersGreedyAsDefined(_ arch: Architecture) throws {
        let cfg = TS.tinyConfig(arch)
        let model = try Model.create(config: cfg, seed: 5, initStd: 0.5)
        let prompt = TS.ids(4, vocab: cfg.vocabSize, seed: 9)
        var g = GenerateConfig(); g.maxNewTokens = 10; g.repetitionPenalty = 1.8
        let out = try model.generateResult(prompt: prompt, config: g)
        #expect(out.tokens.count == 10 && out.finishReason == .length)
        // Reference: penalise every distinct token of prompt + output so far, then argmax.
        var seq = prompt
        for tok in out.tokens {
            var lg = try lastLogits(model, seq)
            for t in Set(seq) { lg[Int(t)] = lg[Int(t)] > 0 ? lg[Int(t)] / 1.8 : lg[Int(t)] * 1.8 }
            let want = lg.withUnsafeBufferPointer { Sampler.argmax($0.baseAddress!, cfg.vocabSize) }
            #expect(tok == want)
            seq.append(tok)
        }
        // The penalty changes the output of this model (otherwise the test above would prove nothing).
        g.repetitionPenalty = 1
        #expect(try model.generate(prompt: prompt, config: g) != out.tokens)
    }

    @Test func minPKeepsOnlyTokensNearTheTop() throws {
        // Probabilities at temperature 1: logits 2, 1.8, 1, 0, -1 -> p / p_max = 1, 0.82, 0.37, 0.14, 0.05.
        let logits: [Float] = [1, 2, -1, 1.8, 0]
        var g = GenerateConfig(); g.temperature = 1; g.minP = 0.3
        var seen = Set<Int32>()
        for seed in 0..<300 {
            g.seed = UInt64(seed)
            var s = Sampler(config: g, vocab: logits.count)
            seen.insert(logits.withUnsafeBufferPointer { s.sample($0.baseAddress!) })
        }
        #expect(seen == [1, 3, 0], "min-p 0.3 keeps the tokens with p >= 0.3 p_max: \(seen)")
        g.minP = 0.9
        seen = []
        for seed in 0..<50 {
            g.seed = UInt64(seed)
            var s = Sampler(config: g, vocab: logits.count)
            seen.insert(logits.withUnsafeBufferPointer { s.sample($0.baseAddress!) })
        }
        #expect(seen == [1])
        g.minP = 0
        seen = []
        for seed in 0..<600 {
            g.seed = UInt64(seed)
            var s = Sampler(config: g, vocab: logits.count)
            seen.insert(logits.withUnsafeBufferPointer { s.sample($0.baseAddress!) })
        }
        #expect(seen.count == 5, "without min-p every token can be drawn")
    }

    /// Top-k, top-p, min-p and plain temperature draw from exactly the distribution of the full-sort definition
    /// (transformers' warpers): the support matches exactly, the frequencies of 40000 draws within 0.015.
    @Test(arguments: [(0, Float(1), Float(0)), (3, 1, 0), (0, 0.8, 0), (4, 0.7, 0), (0, 1, 0.2), (5, 0.9, 0.3), (0, 0.5, 0.1)])
    func samplingMatchesTheWarperDefinition(_ args: (Int, Float, Float)) {
        let (topK, topP, minP) = args
        // Ties (0.5 twice, 1.25 twice) check the order by index.
        let logits: [Float] = [0.5, 2.0, -1.0, 1.25, 0.5, 3.0, -0.25, 1.25, 0.0, 2.5, -2.0, 1.0]
        let n = logits.count, temperature: Float = 1.3
        // Reference: sort all, cut by k, by p (mass of the sorted prefix), by min-p, renormalise.
        let order = (0..<n).sorted { logits[$0] != logits[$1] ? logits[$0] > logits[$1] : $0 < $1 }
        let mx = Double(logits.max()! / temperature)
        var w = order.map { exp(Double(logits[$0] / temperature) - mx) }
        if topK > 0 { w = Array(w.prefix(topK)) }
        if topP < 1 {
            let total = w.reduce(0, +)
            var cum = 0.0, k = 0
            while k < w.count { cum += w[k] / total; k += 1; if cum >= Double(topP) { break } }
            w = Array(w.prefix(max(1, k)))
        }
        if minP > 0 { w = w.filter { $0 >= Double(minP) * w[0] } }
        var want = [Double](repeating: 0, count: n)
        let total = w.reduce(0, +)
        for (j, x) in w.enumerated() { want[order[j]] = x / total }

        var g = GenerateConfig(); g.temperature = temperature; g.topK = topK; g.topP = topP; g.minP = minP; g.seed = 9
        var s = Sampler(config: g, vocab: n)
        let draws = 40000
        var got = [Double](repeating: 0, count: n)
        logits.withUnsafeBufferPointer { p in for _ in 0..<draws { got[Int(s.sample(p.baseAddress!))] += 1 } }
        for i in 0..<n {
            got[i] /= Double(draws)
            #expect((want[i] == 0) == (got[i] == 0), "token \(i): want \(want[i]), drawn \(got[i])")
            #expect(abs(got[i] - want[i]) < 0.015, "token \(i): want \(want[i]), drawn \(got[i])")
        }
    }

    @Test func badOptionsThrow() throws {
        let model = try Model.create(config: TS.tinyConfig(.gpt2), seed: 1)
        for bad in [Float(0), -1, .nan, .infinity] {
            var g = GenerateConfig(); g.repetitionPenalty = bad
            #expect(throws: PEFTKitError.self) { try model.generateResult(prompt: [1], config: g) }
        }
        for bad in [Float(-0.1), 1.5, .nan] {
            var g = GenerateConfig(); g.minP = bad
            #expect(throws: PEFTKitError.self) { try model.generateResult(prompt: [1], config: g) }
        }
        var g = GenerateConfig(); g.stopStrings = ["x"]
        // No tokenizer: stop strings cannot be matched.
        #expect(throws: PEFTKitError.state("stop strings need the model's tokenizer, and this model has none")) {
            try model.generateResult(prompt: [1], config: g)
        }
        g.stopStrings = [""]
        #expect(throws: PEFTKitError.self) { try model.generateResult(prompt: [1], config: g) }
    }
}

@Suite struct FinishReasonTests {
    @Test func everyReason() throws {
        let cfg = TS.tinyConfig(.llama)  // maxPositions 32
        let model = try Model.create(config: cfg, seed: 3, initStd: 0.5)
        let prompt: [Int32] = [1, 2, 3]
        var g = GenerateConfig(); g.maxNewTokens = 8
        let full = try model.generateResult(prompt: prompt, config: g)
        #expect(full.finishReason == .length && full.tokens.count == 8 && full.stopIndex == nil && full.text == nil)

        // Stop token: the first occurrence of out[4] ends generation, with the token.
        g.stopTokens = [36, full.tokens[4]]
        let st = try model.generateResult(prompt: prompt, config: g)
        let at = full.tokens.firstIndex(of: full.tokens[4])!
        #expect(st.finishReason == .stopToken && st.stopIndex == 1 && st.tokens == Array(full.tokens[...at]))
        g.stopTokens = []

        // Cancelled by the callback: the token it was given is kept.
        var n = 0
        let c = try model.generateResult(prompt: prompt, config: g) { _ in n += 1; return n < 3 }
        #expect(c.finishReason == .cancelled && c.tokens == Array(full.tokens[..<3]))
        // A callback that stops at the last token: cancelled wins over length.
        n = 0
        let c8 = try model.generateResult(prompt: prompt, config: g) { _ in n += 1; return n < 8 }
        #expect(c8.finishReason == .cancelled && c8.tokens == full.tokens)

        // Context full: max_positions is reached before max_new_tokens.
        g.maxNewTokens = 100
        let cf = try model.generateResult(prompt: prompt, config: g)
        #expect(cf.finishReason == .contextFull && cf.tokens.count == cfg.maxPositions - prompt.count)
        #expect(Array(cf.tokens[..<8]) == full.tokens)
        // Exactly the room left: that is length, not context full.
        g.maxNewTokens = cfg.maxPositions - prompt.count
        #expect(try model.generateResult(prompt: prompt, config: g).finishReason == .length)
        // A prompt that fills the context: nothing generated, context full.
        let long = TS.ids(cfg.maxPositions, vocab: cfg.vocabSize, seed: 4)
        let none = try model.generateResult(prompt: long, config: g)
        #expect(none.finishReason == .contextFull && none.tokens.isEmpty)
        // max_new_tokens 0 is length.
        g.maxNewTokens = 0
        let zero = try model.generateResult(prompt: prompt, config: g)
        #expect(zero.finishReason == .length && zero.tokens.isEmpty)
    }

    @Test func prefixPositionsCountTowardsContextFull() throws {
        let cfg = TS.tinyConfig(.gpt2)
        let model = try Model.create(config: cfg, seed: 3)
        try model.attachAdapter(name: "p", configJSON: #"{"peft_type": "PREFIX_TUNING", "num_virtual_tokens": 5}"#)
        try model.setActiveAdapter("p")
        var g = GenerateConfig(); g.maxNewTokens = 100
        let r = try model.generateResult(prompt: [1, 2, 3], config: g)
        #expect(r.finishReason == .contextFull && r.tokens.count == cfg.maxPositions - 3 - 5)
    }
}

@Suite struct StopStringTests {
    /// Generates without stops, then with `stops`, and checks the cut against a byte search of the unstopped text.
    private func check(_ model: Model, _ tok: Tokenizer, prompt: [Int32], stops: [String], maxNew: Int) throws
        -> GenerateResult {
        var g = GenerateConfig(); g.maxNewTokens = maxNew
        let plain = try model.generateResult(prompt: prompt, config: g).tokens
        var ends: [Int] = [], bytes: [UInt8] = []
        for t in plain { bytes += try tok.bytes(of: t); ends.append(bytes.count) }
        // The token at which each stop string is first complete; the earliest such token ends generation.
        var best: (token: Int, start: Int, index: Int)? = nil
        for (i, s) in stops.enumerated() {
            guard let start = firstIndex(of: Array(s.utf8), in: bytes) else { continue }
            let endTok = ends.firstIndex { $0 >= start + s.utf8.count }!
            if best == nil || endTok < best!.token || (endTok == best!.token && start < best!.start) {
                best = (endTok, start, i)
            }
        }
        g.stopStrings = stops
        var seen: [Int32] = []
        let r = try model.generateResult(prompt: prompt, config: g) { seen.append($0); return true }
        guard let best else {
            #expect(r.finishReason == .length && r.tokens == plain && r.droppedTokens.isEmpty)
            #expect(r.text == String(decoding: bytes, as: UTF8.self))
            return r
        }
        let kept = ends.prefix { $0 <= best.start }.count
        #expect(r.finishReason == .stopString && r.stopIndex == best.index)
        #expect(r.tokens == Array(plain[..<kept]))
        #expect(r.tokens + r.droppedTokens == Array(plain[...best.token]))
        #expect(seen == Array(plain[...best.token]), "the callback sees every sampled token")
        #expect(r.stopByteOffset == best.start)
        #expect(r.text == String(decoding: bytes[..<best.start], as: UTF8.self))
        #expect(try model.generate(prompt: prompt, config: g) == r.tokens)
        return r
    }

    @Test func tinyTokenizerOneCharacterPerToken() throws {
        let tok = try Tokenizer(tokenizerJSON: tinyTokenizerPath)
        let model = try Model.create(config: ModelConfig(architecture: .gpt2, vocabSize: 97, hiddenSize: 16,
                                                         numLayers: 2, numHeads: 2, maxPositions: 64), seed: 7, initStd: 0.6)
        try model.setTokenizer(tok, chatTemplate: nil)
        let prompt = tok.encode("Hi")
        var g = GenerateConfig(); g.maxNewTokens = 24
        let text = try tok.decode(try model.generate(prompt: prompt, config: g))
        let b = Array(text.utf8)
        // Two characters from the middle, a later pair, and a string that never occurs.
        let s1 = String(decoding: b[6..<8], as: UTF8.self), s2 = String(decoding: b[14..<17], as: UTF8.self)
        let r = try check(model, tok, prompt: prompt, stops: ["never~~", s2, s1], maxNew: 24)
        #expect(r.finishReason == .stopString)
        _ = try check(model, tok, prompt: prompt, stops: ["never~~"], maxNew: 24)
        _ = try check(model, tok, prompt: prompt, stops: [String(decoding: b[0..<1], as: UTF8.self)], maxNew: 24)
    }

    @Test func realTokenizerStopInsideAToken() throws {
        guard let tok = try smolTokenizer() else { return }
        let model = try Model.create(config: ModelConfig(architecture: .llama, vocabSize: tok.vocabSize, hiddenSize: 16,
                                                         numLayers: 1, numHeads: 2, numKVHeads: 1, intermediateSize: 16,
                                                         maxPositions: 64), seed: 11, initStd: 1)
        try model.setTokenizer(tok, chatTemplate: nil)
        let prompt = tok.encode("Once upon a time")
        var g = GenerateConfig(); g.maxNewTokens = 16
        let plain = try model.generate(prompt: prompt, config: g)
        // A stop string that starts inside a multi-byte token and runs into the next one (valid UTF-8).
        var stopText: String? = nil
        for i in 1..<(plain.count - 1) {
            let bi = try tok.bytes(of: plain[i]), bn = try tok.bytes(of: plain[i + 1])
            guard bi.count >= 3, let first = bn.first else { continue }
            if let t = String(validating: Array(bi[1...]) + [first], as: UTF8.self) { stopText = t; break }
        }
        let s = try #require(stopText, "no token of \(plain) starts a usable stop string")
        let r = try check(model, tok, prompt: prompt, stops: [s], maxNew: 16)
        #expect(r.finishReason == .stopString)
        // The dropped token's head is in the text, not in the tokens.
        #expect(try tok.decode(r.tokens).utf8.count < r.text!.utf8.count)
    }
}

@Suite struct MixedGenerationTests {
    @Test(arguments: [Architecture.gpt2, .llama])
    func mixedEqualsOneRowAtATime(_ arch: Architecture) throws {
        let cfg = TS.tinyConfig(arch)
        let model = try Model.create(config: cfg, seed: 8, initStd: 0.4)
        try model.attachAdapter(name: "lora", configJSON: #"{"peft_type": "LORA", "r": 4, "init_lora_weights": false}"#)
        try model.attachAdapter(name: "bn", config: BottleneckConfig(preset: .houlsby, reductionFactor: 4))
        try model.attachAdapter(name: "prefix", configJSON: #"{"peft_type": "PREFIX_TUNING", "num_virtual_tokens": 3}"#)
        try model.setActiveAdapter("bn")
        try model.attachAdapter(name: "prompt", configJSON: #"{"peft_type": "PROMPT_TUNING", "num_virtual_tokens": 2}"#)
        // Rows with the same adapter and prompt length decode as one batch: (lora, 3) x3, (prefix, 4) x2,
        // (nil, 7) x2, (bn, 26) x2 (they run out of positions), (prompt, 5) x2; (nil, 2) runs alone.
        let spec: [(String?, Int)] = [("lora", 3), (nil, 7), ("prefix", 4), ("lora", 3), ("bn", 26), ("prefix", 4),
                                      (nil, 2), ("lora", 3), ("bn", 26), (nil, 7), ("prompt", 5), ("prompt", 5)]
        let prompts = spec.enumerated().map { TS.ids($0.element.1, vocab: cfg.vocabSize, seed: UInt64($0.offset + 1)) }
        let names = spec.map(\.0)
        for temperature: Float in [0, 0.9] {
            var g = GenerateConfig(); g.maxNewTokens = 9; g.repetitionPenalty = 1.2; g.temperature = temperature
            g.seed = 5; g.topK = 20
            g.stopTokens = [5, 17]
            let mixed = try model.generateResults(prompts: prompts, adapters: names, config: g)
            #expect(model.activeAdapter == "bn")
            #expect(mixed.count == spec.count)
            var reasons = Set<String>()
            for (b, (p, n)) in zip(prompts, names).enumerated() {
                try model.setActiveAdapter(n)
                let one = try model.generateResult(prompt: p, config: g)
                #expect(mixed[b] == one, "row \(b) (\(n ?? "base"), \(p.count) tokens), temperature \(temperature)")
                reasons.insert("\(one.finishReason)")
            }
            try model.setActiveAdapter("bn")
            // The batches hold rows that finish for different reasons at different steps.
            #expect(reasons.count >= 2, "\(reasons)")
            #expect(mixed[4].finishReason != .length && mixed[8].finishReason != .length)
        }
        let g = GenerateConfig()
        #expect(throws: PEFTKitError.self) { try model.generateResults(prompts: prompts, adapters: ["nope"] + names.dropFirst(), config: g) }
        #expect(throws: PEFTKitError.self) { try model.generateResults(prompts: prompts, adapters: [nil], config: g) }
        #expect(throws: PEFTKitError.self) { try model.generateResults(prompts: [[1], []], adapters: [nil, nil], config: g) }
    }
}

@Suite struct StreamingTextTests {
    @Test func splitCharactersNeverBecomeReplacementCharacters() throws {
        guard let tok = try smolTokenizer() else { return }
        let text = "Caf\u{E9} \u{1F917} \u{65E5}\u{672C}\u{8A9E} na\u{EF}ve \u{1F680}!"
        let ids = tok.encode(text)
        // The test needs a character split over tokens: some token's bytes alone are not valid UTF-8.
        let split = try ids.filter { String(validating: try tok.bytes(of: $0), as: UTF8.self) == nil }
        #expect(!split.isEmpty, "no token of \(ids) splits a character")
        var stream = tok.streamingDecoder()
        var joined = "", bytes: [UInt8] = []
        for id in ids {
            let piece = try stream.push(id)
            #expect(!piece.unicodeScalars.contains("\u{FFFD}"), "chunk \(piece.debugDescription) has U+FFFD")
            joined += piece
            bytes += try tok.bytes(of: id)
        }
        joined += stream.finish()
        #expect(joined == text)
        #expect(bytes == Array(text.utf8), "token bytes concatenate to the text")

        // GenerationTextStream: the same, also while holding back a possible stop string.
        for stops in [[], ["\u{65E5}\u{672C}X"], ["\u{1F917}"]] {
            var ts = GenerationTextStream(tokenizer: tok, stopStrings: stops)
            var chunks = ids.map { ts.push($0) }
            chunks.append(ts.finish())
            #expect(chunks.allSatisfy { !$0.unicodeScalars.contains("\u{FFFD}") })
            #expect(chunks.joined() == text, "stops \(stops)")
        }
    }

    @Test func textStreamEndsBeforeTheStopString() throws {
        let tok = try Tokenizer(tokenizerJSON: tinyTokenizerPath)
        let model = try Model.create(config: ModelConfig(architecture: .gpt2, vocabSize: 97, hiddenSize: 16,
                                                         numLayers: 2, numHeads: 2, maxPositions: 64), seed: 7, initStd: 0.6)
        try model.setTokenizer(tok, chatTemplate: nil)
        var g = GenerateConfig(); g.maxNewTokens = 30
        let text = try tok.decode(try model.generate(prompt: tok.encode("Hi"), config: g))
        let b = Array(text.utf8)
        g.stopStrings = [String(decoding: b[9..<12], as: UTF8.self)]
        var ts = GenerationTextStream(tokenizer: tok, stopStrings: g.stopStrings)
        var chunks: [String] = []
        let r = try model.generateResult(prompt: tok.encode("Hi"), config: g) { chunks.append(ts.push($0)); return true }
        chunks.append(ts.finish(r))
        #expect(r.finishReason == .stopString)
        #expect(chunks.joined() == r.text)
        #expect(!chunks.contains { $0.contains(g.stopStrings[0]) })
    }
}
