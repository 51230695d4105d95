import ArgumentParser
import FoundationEssentials
import PEFTKit

/// `peftkit inspect`: what a model file or an adapter folder holds.
struct Inspect: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Describe a model (.gguf file or Hugging Face folder) or a saved adapter folder.")

    @Argument(help: "Model or adapter path. Default: the SmolLM2 model.") var path: String?
    @Option(help: "Threads (0 = all cores).") var threads = 0
    @Flag(help: "Widen GGUF weights to fp32 on load, as --widen does for the other commands.") var widen = false
    @Flag(help: "List every base tensor with its format and resident size.") var tensors = false

    func run() throws {
        let p = try path ?? defaultModelPath()
        if isDirectory(p) && isFile(p + "/adapter_config.json") {
            try inspectAdapter(p)
        } else {
            try inspectModel(p)
        }
    }

    func inspectModel(_ p: String) throws {
        setNumThreads(threads)
        let m = try Model.load(path: p, widen: widen)
        let c = m.config
        let tok = m.tokenizer
        let template = m.chatTemplate
        print("model          \(p)")
        print("format         \(isDirectory(p) ? "Hugging Face folder" : "GGUF"), \(byteString(diskBytes(p))) on disk")
        print("architecture   \(c.architecture.rawValue)")
        print("parameters     \(countString(c.parameterCount)) (\(c.parameterCount)), \(byteString(c.parameterCount * 4)) as fp32 in memory")
        print("layers         \(c.numLayers)")
        print("hidden size    \(c.hiddenSize) (MLP \(c.intermediateSize))")
        print("heads          \(c.numHeads) query, \(c.numKVHeads) key/value, head dim \(c.headDim)")
        print("vocabulary     \(c.vocabSize)")
        print("positions      \(c.maxPositions)" + (c.architecture == .llama ? " (RoPE theta \(c.ropeTheta))" : ""))
        print("tied head      \(c.tieWordEmbeddings ? "yes" : "no")")
        if let tok {
            func name(_ id: Int32?) -> String { id.map { "\($0) \(tok.token(of: $0) ?? "?")" } ?? "none" }
            print("tokenizer      yes: \(tok.vocabSize) tokens, BOS \(name(tok.bosID))\(tok.addsBOS ? " (added)" : " (not added)"), "
                  + "EOS \(name(tok.eosID)), end of turn \(name(m.endOfTurnID))")
        } else {
            print("tokenizer      no" + (m.tokenizerIssue.map { " (\($0))" } ?? ""))
        }
        print("chat template  \(template == nil ? "no" : "yes")")
        let base = m.baseTensors
        let resident = base.reduce(0) { $0 + $1.bytes }, widened = base.reduce(0) { $0 + $1.widenedBytes }
        var byFormat: [String: (count: Int, bytes: Int)] = [:]
        for t in base { byFormat[t.format, default: (0, 0)].count += 1; byFormat[t.format, default: (0, 0)].bytes += t.bytes }
        let formats = byFormat.sorted { $0.value.bytes > $1.value.bytes }
            .map { "\($0.key) \($0.value.count) (\(byteString($0.value.bytes)))" }.joined(separator: ", ")
        print("weights        \(formats)")
        print("resident       \(byteString(resident)) as loaded\(widen ? " (widened)" : ""); \(byteString(widened)) widened to fp32 "
              + "(\(widened > 0 ? String(Double(Int(1000 * Double(resident) / Double(widened))) / 10) : "-")%)")
        if tensors {
            for t in base {
                let shape = t.shape.map(String.init).joined(separator: "x")
                print("  \(t.name.padded(52)) \(t.format.padded(5)) \(shape.padded(10)) \(byteString(t.bytes))")
            }
        }
    }

    func inspectAdapter(_ p: String) throws {
        let configBytes = try readWholeFile(path: p + "/adapter_config.json")
        let json: JSONValue
        do { json = try JSONDecoder().decode(JSONValue.self, from: Data(configBytes)) } catch {
            throw CLIError("'\(p)/adapter_config.json' is not valid JSON")
        }
        let weights = ["adapter_model.safetensors", "adapter.safetensors"].map { p + "/" + $0 }.first(where: isFile)
        let method: String
        var shown: [(String, JSONValue)] = []
        if case .string(let t)? = json["peft_type"] {
            method = "\(t.lowercased()) (Hugging Face PEFT format)"
            if case .object(let o) = json { shown = o }
        } else if case .object(let inner)? = json["config"] {
            let arch: String
            if case .string(let a)? = json["config"]?["architecture"] { arch = a } else { arch = "bottleneck" }
            method = "\(arch) (AdapterHub format)"
            shown = inner
            if case .string(let n)? = json["name"] { shown.insert(("name", .string(n)), at: 0) }
        } else {
            method = "unknown"
            if case .object(let o) = json { shown = o }
        }
        print("adapter        \(p)")
        print("method         \(method)")
        if let w = weights {
            let st = try SafeTensorsFile(path: w)
            var params = 0
            for n in st.names { params += st.info(n)?.shape.reduce(1, *) ?? 0 }
            print("parameters     \(countString(params)) (\(params)) in \(st.names.count) tensors")
        } else {
            print("parameters     no weights file (adapter_model.safetensors / adapter.safetensors)")
        }
        print("size on disk   \(byteString(diskBytes(p)))")
        print("config:")
        for (k, v) in shown.sorted(by: { $0.0 < $1.0 }) where v.isInteresting {
            print("  \(k): \(v.text)")
        }
    }
}

/// Any JSON value.
enum JSONValue: Decodable {
    case null, bool(Bool), number(Double), string(String), array([JSONValue]), object([(String, JSONValue)])

    struct Key: CodingKey {
        var stringValue: String
        var intValue: Int? { nil }
        init(stringValue: String) { self.stringValue = stringValue }
        init?(intValue: Int) { nil }
    }

    init(from decoder: Decoder) throws {
        if let o = try? decoder.container(keyedBy: Key.self) {
            var pairs: [(String, JSONValue)] = []
            for k in o.allKeys { pairs.append((k.stringValue, try o.decode(JSONValue.self, forKey: k))) }
            self = .object(pairs)
            return
        }
        if var a = try? decoder.unkeyedContainer() {
            var items: [JSONValue] = []
            while !a.isAtEnd { items.append(try a.decode(JSONValue.self)) }
            self = .array(items)
            return
        }
        let c = try decoder.singleValueContainer()
        if c.decodeNil() { self = .null }
        else if let b = try? c.decode(Bool.self) { self = .bool(b) }
        else if let d = try? c.decode(Double.self) { self = .number(d) }
        else { self = .string(try c.decode(String.self)) }
    }

    subscript(key: String) -> JSONValue? {
        if case .object(let o) = self { return o.first(where: { $0.0 == key })?.1 }
        return nil
    }

    /// Worth a line in a summary: not null, not an empty list or object.
    var isInteresting: Bool {
        switch self {
        case .null: return false
        case .array(let a): return !a.isEmpty
        case .object(let o): return !o.isEmpty
        default: return true
        }
    }

    var text: String {
        switch self {
        case .null: return "null"
        case .bool(let b): return b ? "true" : "false"
        case .number(let d): return d == d.rounded() && abs(d) < 1e15 ? "\(Int(d))" : "\(d)"
        case .string(let s): return s
        case .array(let a): return "[" + a.map(\.text).joined(separator: ", ") + "]"
        case .object(let o): return "{" + o.map { "\($0.0): \($0.1.text)" }.joined(separator: ", ") + "}"
        }
    }
}
