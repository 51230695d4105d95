import ArgumentParser
import PEFTKit

enum MethodOption: String, ExpressibleByArgument, CaseIterable {
    case lora, bottleneck, ia3, prefix, prompt
}

/// `--method` and the options of each method.
struct AdapterOptions: ParsableArguments {
    @Option(help: "Adapter method: \(MethodOption.allCases.map(\.rawValue).joined(separator: ", ")).")
    var method: MethodOption = .lora
    @Option(help: "LoRA rank.") var rank = 8
    @Option(help: "LoRA alpha (scale = alpha / rank).") var alpha: Float = 16
    @Option(help: "LoRA dropout.") var dropout: Float = 0
    @Flag(help: "rsLoRA: scale by alpha / sqrt(rank).") var rslora = false
    @Option(help: "Comma-separated module names (LoRA, IA3), e.g. q_proj,v_proj or c_attn. Default: the method's PEFT default.")
    var targets: String?
    @Option(help: "IA3: comma-separated targets scaled on their input (feed-forward). Default: PEFT's (mlp.c_proj / down_proj).")
    var feedforward: String?
    @Option(help: "Layers to adapt: comma-separated indices or ranges, e.g. 0,1,20-29. Default: all.")
    var layers: String?
    @Option(help: "Bottleneck preset: houlsby, pfeiffer.") var preset: PresetOption = .pfeiffer
    @Option(help: "Bottleneck reduction factor (hidden / bottleneck width).") var reductionFactor: Float = 16
    @Option(help: "Virtual tokens (prefix and prompt tuning).") var virtualTokens = 20
    @Flag(help: "Prefix tuning: reparameterise the prefix through an MLP while training.") var prefixProjection = false
    @Option(help: "Prefix tuning: width of that MLP (default: the key/value width, as PEFT).") var projectionHidden = 0
    @Option(help: "Prompt tuning: start from the embeddings of this text's tokens (PEFT's TEXT init); default random.")
    var initText: String?

    func config(model: ModelConfig, seed: UInt64, tokenizer: Tokenizer? = nil) throws -> AdapterConfig {
        let layerList = try layers.map { try parseLayers($0, numLayers: model.numLayers) }
        let targetList = (targets ?? "").split(separator: ",").map { String($0).trimmingSpaces() }.filter { !$0.isEmpty }
        switch method {
        case .lora:
            var c = LoRAConfig()
            c.rank = rank; c.alpha = alpha; c.dropout = dropout; c.useRSLoRA = rslora; c.targets = targetList; c.layers = layerList
            c.seed = seed
            return .lora(c)
        case .ia3:
            var c = IA3Config()
            c.targets = targetList; c.layers = layerList
            let ff = (feedforward ?? "").split(separator: ",").map { String($0).trimmingSpaces() }.filter { !$0.isEmpty }
            c.feedforward = ff.isEmpty ? nil : ff
            return .ia3(c)
        case .bottleneck:
            return .bottleneck(BottleneckConfig(preset: preset.preset, reductionFactor: reductionFactor, layers: layerList, seed: seed))
        case .prefix:
            var c = PrefixConfig()
            c.virtualTokens = virtualTokens; c.projection = prefixProjection; c.projectionHidden = projectionHidden; c.seed = seed
            return .prefix(c)
        case .prompt:
            var c = PromptConfig()
            c.virtualTokens = virtualTokens; c.seed = seed
            if let text = initText {
                guard let tok = tokenizer else { throw CLIError("--init-text needs a model with a tokenizer") }
                // As PEFT: the text's ids (with the tokenizer's special tokens), cycled over the virtual tokens.
                let ids = tok.encode(text, addSpecial: true)
                guard !ids.isEmpty else { throw CLIError("--init-text tokenizes to nothing") }
                c.initTokens = ids
            }
            return .prompt(c)
        }
    }
}

/// "0,1,20-29" -> [0, 1, 20, ..., 29]; negative indices count from the end ("-1" is not a range).
func parseLayers(_ s: String, numLayers: Int) throws -> [Int] {
    var out: [Int] = []
    for part in s.split(separator: ",").map({ String($0).trimmingSpaces() }) where !part.isEmpty {
        let bounds = part.dropFirst().split(separator: "-", maxSplits: 1)
        if bounds.count == 2, let a = Int(String(part.first!) + bounds[0]), let b = Int(bounds[1]) {
            guard a >= 0, b < numLayers else { throw CLIError("--layers: range \(part) is outside 0..<\(numLayers)") }
            guard a <= b else { throw CLIError("--layers: range \(part) is empty") }
            out += Array(a...b)
        } else if let v = Int(part) {
            out.append(v < 0 ? numLayers + v : v)
        } else {
            throw CLIError("--layers: '\(part)' is not a layer index or a range like 20-29")
        }
    }
    guard !out.isEmpty else { throw CLIError("--layers is empty") }
    for l in out where l < 0 || l >= numLayers { throw CLIError("--layers: layer \(l) is outside 0..<\(numLayers)") }
    return out
}
