import ArgumentParser
import PEFTKit

/// `peftkit generate`: stream a completion, with the base model or with adapters.
struct Generate: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Generate text, streamed to stdout as it is produced.",
        discussion: "With several --adapter options the prompt is answered once per adapter (and once by the base model with --base).")

    @OptionGroup var modelOptions: ModelOptions
    @Option(name: .shortAndLong, help: "Adapter folder to apply (repeatable).") var adapter: [String] = []
    @Flag(help: "Also answer with the base model when adapters are given.") var base = false
    @Option(name: .shortAndLong, help: "The prompt.") var prompt: String
    @Flag(help: "Send the prompt as a user message through the model's chat template.") var chat = false
    @Option(help: "System message (with --chat).") var system: String?
    @Option(help: "Tokens to generate at most.") var maxTokens = 128
    @Option(help: "Sampling temperature (0 = greedy).") var temperature: Float = 0
    @Option(help: "Top-k sampling (0 = off).") var topK = 0
    @Option(help: "Top-p (nucleus) sampling (1 = off).") var topP: Float = 1
    @Option(help: "Sampling seed.") var seed: UInt64 = 0
    @Option(help: "Repetition penalty over the prompt and the output (1 = off).") var repetitionPenalty: Float = 1
    @Option(help: "Min-p sampling: drop tokens less likely than min-p times the most likely one (0 = off).")
    var minP: Float = 0
    @Option(name: .customLong("stop"), help: "Stop when the text contains this string (repeatable); it is not printed.")
    var stopStrings: [String] = []
    @Flag(name: .shortAndLong, help: "Also print why generation stopped.") var verbose = false

    func run() throws {
        let lm = try LoadedModel.load(modelOptions)
        let names = try lm.loadAdapters(adapter)
        var ids: [Int32]
        if chat {
            guard lm.chatTemplate != nil else { throw CLIError("'\(lm.path)' has no chat template; drop --chat") }
            var messages = system.map { [ChatMessage(role: "system", content: $0)] } ?? []
            messages.append(ChatMessage(role: "user", content: prompt))
            ids = lm.encoder.promptIDs(messages: messages)
        } else {
            ids = lm.encoder.promptIDs(text: prompt)
        }
        guard ids.count < lm.model.config.maxPositions else {
            throw CLIError("the prompt is \(ids.count) tokens; the model takes at most \(lm.model.config.maxPositions)")
        }
        var g = GenerateConfig()
        g.maxNewTokens = maxTokens  // the core stops at the model's maximum length (finish reason: context full)
        g.temperature = temperature; g.topK = topK; g.topP = topP; g.seed = seed; g.stopTokens = lm.stopIDs
        g.repetitionPenalty = repetitionPenalty; g.minP = minP; g.stopStrings = stopStrings
        let runs: [String?] = names.isEmpty ? [nil] : (base ? [nil] : []) + names.map { Optional($0) }
        for which in runs {
            if runs.count > 1 { writeStdout("[\(which ?? "base model")]\n") }
            try lm.model.setActiveAdapter(which)
            let (_, secs, r) = try streamGenerateResult(lm, prompt: ids, config: g, echo: true)
            writeStdout("\n")
            let n = r.tokens.count + r.droppedTokens.count
            writeStderr("(\(n) tokens, \(fmt(Double(n) / max(secs, 1e-9), 1)) tok/s)\n")
            if verbose { writeStderr("finish reason: \(describe(r))\n") }
        }
    }
}

/// Generates with the active adapter, writing text to stdout as tokens arrive when `echo`; special tokens
/// (stop tokens among them) and stop strings are not printed. Returns the text, the seconds taken and the
/// tokens generated.
func streamGenerate(_ lm: LoadedModel, prompt: [Int32], config: GenerateConfig, echo: Bool) throws -> (String, Double, Int) {
    let (text, secs, r) = try streamGenerateResult(lm, prompt: prompt, config: config, echo: echo)
    return (text, secs, r.tokens.count)
}

/// `streamGenerate` that returns the whole result (tokens and finish reason).
func streamGenerateResult(_ lm: LoadedModel, prompt: [Int32], config: GenerateConfig,
                          echo: Bool) throws -> (String, Double, GenerateResult) {
    var stream = GenerationTextStream(tokenizer: lm.tokenizer, stopStrings: config.stopStrings, skipSpecial: true)
    var text = ""
    let clock = ContinuousClock()
    let t0 = clock.now
    let r = try lm.model.generateResult(prompt: prompt, config: config) { id in
        let piece = stream.push(id)
        text += piece
        if echo { writeStdout(piece) }
        return true
    }
    let tail = stream.finish(r)
    text += tail
    if echo { writeStdout(tail) }
    return (text, (clock.now - t0).seconds, r)
}

/// The finish reason as `--verbose` prints it.
func describe(_ r: GenerateResult) -> String {
    switch r.finishReason {
    case .stopToken: return "stop token" + (r.stopIndex.map { " (#\($0))" } ?? "")
    case .stopString: return "stop string" + (r.stopIndex.map { " (#\($0))" } ?? "")
    case .length: return "length (max tokens)"
    case .contextFull: return "context full (the model's maximum positions)"
    case .cancelled: return "cancelled"
    }
}
