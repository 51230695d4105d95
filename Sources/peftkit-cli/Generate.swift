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
        g.maxNewTokens = min(maxTokens, lm.model.config.maxPositions - ids.count)
        g.temperature = temperature; g.topK = topK; g.topP = topP; g.seed = seed; g.stopTokens = lm.stopIDs
        let runs: [String?] = names.isEmpty ? [nil] : (base ? [nil] : []) + names.map { Optional($0) }
        for which in runs {
            if runs.count > 1 { writeStdout("[\(which ?? "base model")]\n") }
            try lm.model.setActiveAdapter(which)
            let (_, secs, n) = try streamGenerate(lm, prompt: ids, config: g, echo: true)
            writeStdout("\n")
            writeStderr("(\(n) tokens, \(fmt(Double(n) / max(secs, 1e-9), 1)) tok/s)\n")
        }
    }
}

/// Generates with the active adapter, writing text to stdout as tokens arrive when `echo`; stop tokens are
/// not printed. Returns the text, the seconds taken and the tokens generated.
func streamGenerate(_ lm: LoadedModel, prompt: [Int32], config: GenerateConfig, echo: Bool) throws -> (String, Double, Int) {
    var decoder = lm.tokenizer.streamingDecoder(skipSpecial: true)
    var text = ""
    var decodeError: Error? = nil
    let clock = ContinuousClock()
    let t0 = clock.now
    let out = try lm.model.generate(prompt: prompt, config: config) { id in
        if config.stopTokens.contains(id) { return true }
        do {
            let piece = try decoder.push(id)
            text += piece
            if echo { writeStdout(piece) }
        } catch {
            decodeError = error
            return false
        }
        return true
    }
    if let decodeError { throw decodeError }
    let tail = decoder.finish()
    text += tail
    if echo { writeStdout(tail) }
    return (text, (clock.now - t0).seconds, out.count)
}
