import ArgumentParser
import PEFTKit

/// The formats `merge --format` and `train --model-format` write.
enum ModelFormatOption: String, ExpressibleByArgument, CaseIterable {
    case hf, gguf, ggufF16 = "gguf-f16"

    var format: ModelFormat {
        switch self {
        case .hf: return .huggingFace
        case .gguf: return .gguf(.f32)
        case .ggufF16: return .gguf(.f16)
        }
    }

    /// What to tell the user about the written path.
    func describe(_ out: String) -> String {
        self == .hf ? "Hugging Face folder \(out) (transformers: AutoModelForCausalLM.from_pretrained)"
                    : "GGUF file \(out) (llama.cpp: llama-cli -m \(out))"
    }
}

/// `peftkit merge`: fold adapters into the base and write the whole model.
struct Merge: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Merge LoRA / IA3 adapters into the base model and save the whole model (Hugging Face folder or GGUF).",
        discussion: """
            A GGUF base is widened to fp32 first (merging needs fp32 weights). Prompt, prefix and bottleneck \
            adapters cannot be merged. --format hf writes config.json + model.safetensors (and the tokenizer files \
            of a Hugging Face source folder) into --out; gguf / gguf-f16 write one llama.cpp file (Llama models) \
            with the tokenizer of a GGUF source. Without --adapter the base is converted as it is.
            """)

    @Option(name: .shortAndLong, help: "Base model: a .gguf file or a Hugging Face folder.") var model: String
    @Option(name: .shortAndLong, help: "Adapter to merge: a folder or a llama.cpp .gguf LoRA (repeatable, merged in order).")
    var adapter: [String] = []
    @Option(help: "Where to write: a folder (hf) or a file (gguf, gguf-f16).") var out: String
    @Option(help: "Output format: hf, gguf (F32) or gguf-f16.") var format: ModelFormatOption = .hf
    @Option(help: "Threads (0 = all cores).") var threads = 0

    func run() throws {
        setNumThreads(threads)
        let m = try Model.load(path: model, widen: true)
        print("model \(model): \(m.config.architecture), \(countString(m.config.parameterCount)) parameters")
        for a in adapter {
            let name = try m.loadAdapter(from: a, name: "merge\(m.adapterNames.count)")
            let method = try m.adapterMethod(name: name)
            guard method == .lora || method == .ia3 else {
                throw CLIError("'\(a)' is a \(method.rawValue) adapter, which cannot be merged into the base (only LoRA and IA3)")
            }
            try m.mergeAdapter(name: name)
            print("merged \(a) (\(method.rawValue))")
        }
        try m.saveModel(to: out, format: format.format)
        print("saved \(format.describe(out)) (\(byteString(diskBytes(out))))")
    }
}
