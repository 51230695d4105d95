import ArgumentParser
import PEFTKit
#if canImport(Glibc)
import Glibc
#endif

/// `peftkit demo`: the base model, a few-shot prompt and a LoRA adapter on the same held-out prompts.
struct Demo: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Tune a LoRA adapter on SmolLM2 for a fixed answer format; compare base, few-shot and adapter on held-out prompts.",
        discussion: """
            Uses data/demo/train.jsonl and data/demo/test.jsonl (written by scripts/make_demo_data.py): pull the \
            person, city and year out of a sentence into one JSON line. Held-out records have names, cities \
            and two sentence shapes that training never shows. Deterministic: greedy decoding, fixed seeds. \
            `demo bert`: an encoder (all-MiniLM-L6-v2) with a classification head instead.
            """,
        subcommands: [BertDemo.self])

    @OptionGroup var modelOptions: ModelOptions
    @Option(help: "Folder with train.jsonl and test.jsonl. Default: the repository's data/demo.") var data: String?
    @Option(help: "Where to save the adapter (and loss.svg).") var out = "/tmp/peftkit-demo/adapter"
    @Option(help: "Training steps.") var steps = 12
    @Option(help: "Rows per step.") var batch = 8
    @Option(help: "Peak learning rate (cosine schedule).") var lr: Float = 1.5e-3
    @Option(help: "LoRA rank.") var rank = 8
    @Option(help: "In-context examples in the few-shot prompt.") var shots = 3
    @Option(help: "Tokens generated per answer at most.") var maxTokens = 28
    @Option(help: "Seed (data order, adapter initialisation).") var seed: UInt64 = 0
    @Flag(help: .hidden) var adapterOnly = false

    func validate() throws {
        guard steps > 0, batch > 0, rank > 0, shots >= 0, maxTokens > 0 else {
            throw ValidationError("--steps, --batch, --rank and --max-tokens must be positive, --shots not negative")
        }
    }

    @Flag(help: "Keep a GGUF model's weights in their quantized blocks (the demo widens them to fp32 by default: faster training).")
    var keepQuantized = false

    func run() throws {
        let clock = ContinuousClock()
        let t0 = clock.now
        let dir = try data ?? findDemoData()
        // Training over weights kept in quantized blocks runs at about half the fp32 speed today (BENCHMARKS.md):
        // the demo widens them unless asked to keep them.
        var options = modelOptions
        options.widen = modelOptions.widen || !keepQuantized
        let lm = try LoadedModel.load(options)
        let m = lm.model
        guard lm.chatTemplate != nil else { throw CLIError("the demo needs a chat model; '\(lm.path)' has no chat template") }
        let trainRecords = try JSONLDataset.read(path: dir + "/train.jsonl")
        let testRecords = try JSONLDataset.read(path: dir + "/test.jsonl")
        var tests: [(prompt: String, answer: String)] = []
        for r in testRecords {
            guard case .promptResponse(_, let p, let a) = r else { throw CLIError("\(dir)/test.jsonl: the demo expects prompt/response records") }
            tests.append((p, a))
        }
        var shotTurns: [ChatMessage] = []
        for r in trainRecords.prefix(shots) {
            guard case .promptResponse(_, let p, let a) = r else { continue }
            shotTurns += [ChatMessage(role: "user", content: p), ChatMessage(role: "assistant", content: a)]
        }

        print("PEFTKit demo: teach \(modelName(lm.path)) an answer format with a LoRA adapter\n")
        print("model    \(lm.path)")
        print("         \(byteString(diskBytes(lm.path))) on disk; \(m.config.architecture.rawValue), \(m.config.numLayers) layers, "
              + "d=\(m.config.hiddenSize), \(countString(m.config.parameterCount)) parameters held as fp32; loaded in \(fmt(lm.loadSeconds, 1)) s")
        if let first = tests.first {
            print("task     \(first.prompt)")
            print("         -> \(first.answer)")
        }
        print("data     \(trainRecords.count) training records, \(tests.count) held-out records (\(dir)); score = exact match of the JSON line, and fields right\n")

        var g = GenerateConfig()
        g.maxNewTokens = maxTokens
        g.stopTokens = lm.stopIDs

        // Base logits on a probe, to show afterwards that training left the base model untouched.
        let probe = lm.encoder.promptIDs(messages: [ChatMessage(role: "user", content: tests[0].prompt)])
        let before = try m.forward(inputIDs: probe, batch: 1, seqLen: probe.count).logits

        var base = Score(), fewShot = Score()
        if !adapterOnly {
            print("1) base model, prompt as is")
            base = try answerAll(lm, tests, prefix: [], config: g)
            print("2) base model, \(shotTurns.count / 2)-shot prompt (\(shotTurns.count / 2) solved training records as earlier chat turns)")
            fewShot = try answerAll(lm, tests, prefix: shotTurns, config: g)
        }

        print("3) LoRA adapter: rank \(rank) on every attention and MLP projection of all \(m.config.numLayers) layers")
        var lc = LoRAConfig()
        lc.rank = rank; lc.alpha = Float(2 * rank); lc.seed = seed
        lc.targets = m.config.architecture == .llama ? ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
                                                      : ["c_attn", "c_proj", "c_fc"]
        try m.attachAdapter(name: "demo", config: .lora(lc))
        try m.setActiveAdapter("demo")
        let params = try m.adapterParameterCount(name: "demo")
        var tc = TrainConfig()
        tc.learningRate = lr; tc.schedule = .cosine; tc.warmupSteps = max(1, steps / 10); tc.totalSteps = steps
        tc.weightDecay = 0; tc.maxGradNorm = 1
        let examples = try trainRecords.map { try lm.encoder.encode($0) }
        let run = try trainAdapter(lm, examples: examples, steps: steps, batch: batch, seqLen: 256, config: tc, seed: seed)
        let tuned = try answerAll(lm, tests, prefix: [], config: g)

        try m.setActiveAdapter(nil)
        let after = try m.forward(inputIDs: probe, batch: 1, seqLen: probe.count).logits
        let identical = before.count == after.count && zip(before, after).allSatisfy { $0.bitPattern == $1.bitPattern }
        print("base weights: base-model logits on a \(probe.count)-token probe, fingerprint before training \(fingerprint(before)), "
              + "after \(fingerprint(after)): \(identical ? "bit-identical" : "DIFFERENT")")
        guard identical else { throw CLIError("the base model's logits changed during training") }

        try m.saveAdapter(name: "demo", to: out)
        try writeFileAtomically(path: out + "/loss.svg",
                                bytes: Array(lossPlotSVG(run.losses, title: "LoRA rank \(rank) on data/demo: loss per step").utf8))
        let onDisk = diskBytes(out + "/adapter_model.safetensors")
        print("adapter: \(countString(params)) trainable parameters = \(fmt(100 * Double(params) / Double(m.config.parameterCount), 2))% of "
              + "the model's \(countString(m.config.parameterCount)); \(byteString(onDisk)) on disk vs \(byteString(diskBytes(lm.path))) "
              + "for the GGUF model; saved to \(out) (with loss.svg)\n")

        print("held-out scores (\(tests.count) prompts; a field is right when its \"key\": value appears verbatim)")
        print("   base model       \(base.text)")
        print("   \(shotTurns.count / 2)-shot prompt    \(fewShot.text)")
        print("   LoRA adapter     \(tuned.text)")
        print("total time \(fmt((clock.now - t0).seconds, 1)) s")
        print("\nNext: .build/release/peftkit-cli generate --adapter \(out) --chat --prompt \"\(tests[0].prompt)\"")
    }

    /// Generates an answer per held-out prompt (after `prefix` turns), prints a line each, returns the score.
    func answerAll(_ lm: LoadedModel, _ tests: [(prompt: String, answer: String)], prefix: [ChatMessage],
                   config: GenerateConfig) throws -> Score {
        var score = Score()
        let clock = ContinuousClock()
        let t0 = clock.now
        var tokens = 0
        for t in tests {
            let ids = lm.encoder.promptIDs(messages: prefix + [ChatMessage(role: "user", content: t.prompt)])
            let (text, _, n) = try streamGenerate(lm, prompt: ids, config: config, echo: false)
            tokens += n
            let answer = text.trimmingSpaces()
            let ok = answer == t.answer
            if ok { score.exact += 1 }
            let fields = expectedFields(t.answer)
            score.fields += fields.filter { answer.contains($0) }.count
            score.totalFields += fields.count
            score.total += 1
            let sentence = t.prompt.split(separator: ":", maxSplits: 1).last.map { String($0).trimmingSpaces() } ?? t.prompt
            print("   \(ok ? "✓" : "✗") \(clip(sentence, 46).padded(46))  -> \(clip(oneLine(answer), 64))")
        }
        let secs = (clock.now - t0).seconds
        print("   exact \(score.exact)/\(score.total), fields \(score.fields)/\(score.totalFields)   (\(tokens) tokens in \(fmt(secs, 1)) s)\n")
        return score
    }

    struct Score {
        var exact = 0, total = 0, fields = 0, totalFields = 0
        var text: String { "\(exact)/\(total) exact, \(fields)/\(totalFields) fields" }
    }

    /// The `"key": value` pieces of a one-line JSON object answer (a field counts as right when the
    /// generated text contains it verbatim).
    func expectedFields(_ answer: String) -> [String] {
        var body = Substring(answer)
        if body.first == "{" { body = body.dropFirst() }
        if body.last == "}" { body = body.dropLast() }
        return body.split(separator: ",").map { String($0).trimmingSpaces() }.filter { !$0.isEmpty }
    }
}

/// data/demo next to the current directory, or in the repository the executable was built in.
func findDemoData() throws -> String {
    var candidates = ["data/demo"]
    var buf = [CChar](repeating: 0, count: 4096)
    let n = readlink("/proc/self/exe", &buf, buf.count - 1)
    if n > 0 {
        var dir = String(decoding: buf[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
        for _ in 0..<5 {
            guard let slash = dir.lastIndex(of: "/") else { break }
            dir = String(dir[..<slash])
            candidates.append(dir + "/data/demo")
        }
    }
    for c in candidates where isFile(c + "/train.jsonl") && isFile(c + "/test.jsonl") { return c }
    throw CLIError("cannot find data/demo (train.jsonl, test.jsonl); run from the repository root or pass --data DIR")
}

func modelName(_ path: String) -> String {
    var name = adapterNameHint(path)
    if let dot = name.firstIndex(of: ".") { name = String(name[..<dot]) }
    return name
}

/// FNV-1a over the float bit patterns, as 16 hex digits.
func fingerprint(_ xs: [Float]) -> String {
    var h: UInt64 = 0xcbf2_9ce4_8422_2325
    for x in xs {
        var b = x.bitPattern
        for _ in 0..<4 {
            h ^= UInt64(b & 0xFF)
            h = h &* 0x0000_0100_0000_01B3
            b >>= 8
        }
    }
    let hex = String(h, radix: 16)
    return String(repeating: "0", count: 16 - hex.count) + hex
}

func clip(_ s: String, _ n: Int) -> String { s.count <= n ? s : String(s.prefix(n - 1)) + "…" }
func oneLine(_ s: String) -> String { s.split(whereSeparator: { $0 == "\n" }).joined(separator: " ⏎ ") }

extension String {
    func padded(_ n: Int) -> String { count >= n ? self : self + String(repeating: " ", count: n - count) }
}
