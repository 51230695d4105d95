import ArgumentParser
import PEFTKit
#if canImport(Glibc)
import Glibc
#endif

/// `peftkit eval`: loss and perplexity on a JSONL file.
struct Eval: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Loss and perplexity of the model (and adapters) on a JSONL file, counting the tokens train would train on.")

    @OptionGroup var modelOptions: ModelOptions
    @Option(name: .shortAndLong, help: "Adapter folder to evaluate (repeatable; the base model is evaluated too).") var adapter: [String] = []
    @Option(help: "Data (JSONL, same formats as train).") var data: String
    @Option(help: "Rows per forward pass.") var batch = 8
    @Option(help: "Tokens per row (longer records are cut).") var seqLen = 256
    @Option(help: "Score adapters' task heads on an encoder (BERT): classify (accuracy, macro-F1), regress (MSE) or tag (per-word accuracy, macro-F1 over the tags), on labelled or tagged JSONL.")
    var task: TaskOption?

    func validate() throws {
        guard batch > 0 else { throw ValidationError("--batch must be positive") }
        guard seqLen > 1 else { throw ValidationError("--seq-len must be at least 2") }
    }

    func run() throws {
        if let task { return try evalEncoderHead(self, task) }
        let dist = try Distributed.start()
        try dist.run { try run(dist) }
    }

    private func run(_ dist: Distributed) throws {
        let lm = try LoadedModel.load(dist.modelOptions(modelOptions))
        let names = try lm.loadAdapters(adapter)
        let examples = try loadExamples(data, lm.encoder)
        print("\(examples.count) records of \(data)")
        for which in [nil] + names.map({ Optional($0) }) {
            try lm.model.setActiveAdapter(which)
            let (loss, tokens) = try evaluateLossDataParallel(lm, examples: examples, batch: batch, seqLen: seqLen, dist: dist)
            print("\(which ?? "base model"): loss \(fmt(loss, 4)), perplexity \(fmt(exp(loss), 3)) over \(tokens) tokens")
        }
    }
}
