import ArgumentParser
import PEFTKit

enum MethodOption: String, ExpressibleByArgument, CaseIterable {
    case lora, bottleneck, ia3, prefix, prompt
}

/// `--lora-init`: PEFT's `init_lora_weights`.
enum LoRAInitOption: String, ExpressibleByArgument, CaseIterable {
    case `default`, pissa, olora
}

/// `--method` and the options of each method, or `--adapter-config FILE`. Either way the adapter is described by
/// the JSON text of an `adapter_config.json` in the ecosystem's schema (PEFT's for LoRA, IA3, prefix and prompt
/// tuning; AdapterHub's for bottleneck adapters), the text `Model.attachAdapter(name:configJSON:)` reads.
struct AdapterOptions: ParsableArguments {
    @Option(help: "An adapter_config.json (e.g. written by PEFT or AdapterHub) describing the adapter, instead of the flags below.")
    var adapterConfig: String?
    @Option(help: "Adapter method: \(MethodOption.allCases.map(\.rawValue).joined(separator: ", ")) (default lora).")
    var method: MethodOption?
    @Option(help: "LoRA rank.") var rank = 8
    @Option(help: "LoRA alpha (scale = alpha / rank).") var alpha: Float = 16
    @Option(help: "LoRA dropout.") var dropout: Float = 0
    @Flag(help: "rsLoRA: scale by alpha / sqrt(rank).") var rslora = false
    @Flag(help: "DoRA: LoRA with a learned magnitude per output row (PEFT's use_dora).") var dora = false
    @Option(help: "LoRA+: train B at this multiple of the learning rate (saved as loraplus_lr_ratio).") var loraplusRatio: Float?
    @Option(help: "LoRA init (PEFT's init_lora_weights): default, pissa (SVD of each base weight) or olora (QR); pissa and olora run over the residual base weight while attached.")
    var loraInit: LoRAInitOption = .default
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

    func validate() throws {
        if adapterConfig != nil && method != nil {
            throw ValidationError("--adapter-config describes the adapter: leave out --method and its options")
        }
    }

    /// The adapter_config.json text of the adapter: the file of --adapter-config, or one built from the flags.
    func configJSON(model: ModelConfig, seed: UInt64) throws -> String {
        if let path = adapterConfig {
            let bytes = try readWholeFile(path: path, maxBytes: 1 << 20)
            guard let text = String(validating: bytes, as: UTF8.self) else { throw CLIError("--adapter-config \(path) is not UTF-8 text") }
            return text
        }
        let layerList = try layers.map { try parseLayers($0, numLayers: model.numLayers) }
        func names(_ s: String?) -> [String]? {
            let list = (s ?? "").split(separator: ",").map { String($0).trimmingSpaces() }.filter { !$0.isEmpty }
            return list.isEmpty ? nil : list
        }
        var o: [(String, JSONText)] = []
        switch method ?? .lora {
        case .lora:
            o = [("peft_type", "LORA"), ("task_type", "CAUSAL_LM"), ("r", .int(rank)), ("lora_alpha", .number(Double(alpha))),
                 ("lora_dropout", .number(Double(dropout))), ("use_rslora", .bool(rslora)), ("use_dora", .bool(dora))]
            if let r = loraplusRatio { o.append(("loraplus_lr_ratio", .number(Double(r)))) }
            if loraInit != .default { o.append(("init_lora_weights", .string(loraInit.rawValue))) }
            // Without --targets the library applies PEFT's default for the architecture.
            if let t = names(targets) { o.append(("target_modules", .strings(t))) }
        case .ia3:
            o = [("peft_type", "IA3"), ("task_type", "CAUSAL_LM")]
            if let t = names(targets) { o.append(("target_modules", .strings(t))) }
            if let ff = names(feedforward) { o.append(("feedforward_modules", .strings(ff))) }
        case .bottleneck:
            // AdapterHub's SeqBnConfig (pfeiffer) or DoubleSeqBnConfig (houlsby).
            let houlsby = preset == .houlsby
            o = [("architecture", "bottleneck"), ("mh_adapter", .bool(houlsby)), ("output_adapter", .bool(true)),
                 ("original_ln_before", .bool(!houlsby)), ("non_linearity", .string(houlsby ? "swish" : "relu")),
                 ("reduction_factor", .number(Double(reductionFactor)))]
            if let l = layerList { o.append(("leave_out", .ints((0..<model.numLayers).filter { !l.contains($0) }))) }
        case .prefix:
            o = [("peft_type", "PREFIX_TUNING"), ("task_type", "CAUSAL_LM"), ("num_virtual_tokens", .int(virtualTokens)),
                 ("prefix_projection", .bool(prefixProjection))]
            if projectionHidden > 0 { o.append(("encoder_hidden_size", .int(projectionHidden))) }
        case .prompt:
            o = [("peft_type", "PROMPT_TUNING"), ("task_type", "CAUSAL_LM"), ("num_virtual_tokens", .int(virtualTokens))]
            if let text = initText {
                o += [("prompt_tuning_init", "TEXT"), ("prompt_tuning_init_text", .string(text))]
            }
        }
        if let l = layerList, [.lora, .ia3].contains(method ?? .lora) { o.append(("layers_to_transform", .ints(l))) }
        if method != .ia3 { o.append(("seed", .int(Int(truncatingIfNeeded: seed)))) }
        return "{" + o.map { "\(JSONText.string($0.0).text): \($0.1.text)" }.joined(separator: ", ") + "}"
    }
}

/// A JSON value written as text (only what adapter configs need).
enum JSONText: ExpressibleByStringLiteral {
    case string(String), int(Int), number(Double), bool(Bool), strings([String]), ints([Int])

    init(stringLiteral s: String) { self = .string(s) }

    var text: String {
        switch self {
        case .string(let s):
            var out = "\""
            for u in s.unicodeScalars {
                switch u {
                case "\"": out += "\\\""
                case "\\": out += "\\\\"
                case "\n": out += "\\n"
                case "\r": out += "\\r"
                case "\t": out += "\\t"
                default:
                    if u.value < 0x20 {
                        let hex = String(u.value, radix: 16)
                        out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
                    } else {
                        out.unicodeScalars.append(u)
                    }
                }
            }
            return out + "\""
        case .int(let i): return "\(i)"
        case .number(let d): return d.isFinite ? "\(d)" : "null"
        case .bool(let b): return b ? "true" : "false"
        case .strings(let l): return "[" + l.map { JSONText.string($0).text }.joined(separator: ", ") + "]"
        case .ints(let l): return "[" + l.map { "\($0)" }.joined(separator: ", ") + "]"
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
