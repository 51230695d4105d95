// GGUFFile: header, metadata of every type (nested arrays, strings), tensor records, alignment, and reading
// every tensor (dequantising); then the model config and, when the metadata has one, the byte-level BPE
// tokenizer and chat template built from it (both through the raw constructor and the way Model.load does).

@testable import PEFTKit

enum Target {
    static func setUp() throws {}

    static func run(_ input: [UInt8]) {
        guard let s = try? Storage.allocate(bytes: input.count) else { return }
        input.withUnsafeBytes { if let b = $0.baseAddress { s.base.copyMemory(from: b, byteCount: input.count) } }
        guard let f = try? GGUFFile(storage: s, path: "fuzz-input.gguf") else { return }
        for k in f.metadataKeys {
            _ = try? f.string(k); _ = try? f.int(k); _ = try? f.float(k); _ = try? f.bool(k); _ = try? f.array(k)
        }
        for t in f.tensorInfos { _ = try? f.tensor(t.name) }
        _ = try? modelConfig(fromGGUF: f)
        if case .string(let tokens)? = try? f.array("tokenizer.ggml.tokens") {
            var merges: [String] = []
            if case .string(let m)? = try? f.array("tokenizer.ggml.merges") { merges = m }
            var types: [Int32]? = nil
            if case .int32(let t)? = try? f.array("tokenizer.ggml.token_type") { types = t }
            let bos = (try? f.int("tokenizer.ggml.bos_token_id")).flatMap { $0 }.flatMap { Int32(exactly: $0) }
            let eos = (try? f.int("tokenizer.ggml.eos_token_id")).flatMap { $0 }.flatMap { Int32(exactly: $0) }
            if let tok = try? Tokenizer(ggufTokens: tokens, merges: merges, tokenTypes: types, bosID: bos, eosID: eos,
                                        preTokenizer: (try? f.string("tokenizer.ggml.pre")) ?? nil) {
                let ids = tok.encode("Hello, world! 123 <|endoftext|>\u{00e9}", addSpecial: true)
                _ = try? tok.decode(ids)
            }
        }
        let text = TextSupport(gguf: f, vocabSize: 1 << 24)
        if let tok = text.tokenizer {
            _ = try? tok.decode(tok.encode("<|im_start|>user\nHi 42<|im_end|>", addSpecial: true), skipSpecial: true)
        }
        _ = text.chatTemplate?.applyChatTemplate([ChatMessage(role: "user", content: "Hi")], addGenerationPrompt: true)
    }

    // MARK: seeds: a little GGUF writer

    static func le<T: FixedWidthInteger>(_ v: T) -> [UInt8] { withUnsafeBytes(of: v.littleEndian) { Array($0) } }
    static func str(_ s: String) -> [UInt8] { le(UInt64(s.utf8.count)) + Array(s.utf8) }
    static func kv(_ key: String, _ type: GGUFValueType, _ body: [UInt8]) -> [UInt8] { str(key) + le(type.rawValue) + body }
    static func strings(_ key: String, _ items: [String]) -> [UInt8] {
        kv(key, .array, le(GGUFValueType.string.rawValue) + le(UInt64(items.count)) + items.flatMap(str))
    }

    /// A GGUF v3 file: `kvs` already encoded; F32 tensors laid out at 32-byte alignment.
    static func file(_ kvs: [[UInt8]], tensors: [(String, [UInt64], [Float])], tensorCount: UInt64? = nil) -> [UInt8] {
        var out = Array("GGUF".utf8) + le(UInt32(3)) + le(tensorCount ?? UInt64(tensors.count)) + le(UInt64(kvs.count))
        out += kvs.flatMap { $0 }
        var offset: UInt64 = 0
        var data: [UInt8] = []
        for (name, dims, values) in tensors {
            out += str(name) + le(UInt32(dims.count)) + dims.flatMap { le($0) } + le(GGMLType.f32.rawValue) + le(offset)
            var bytes = values.flatMap { le($0.bitPattern) }
            while bytes.count % 32 != 0 { bytes.append(0) }
            data += bytes
            offset += UInt64(bytes.count)
        }
        while out.count % 32 != 0 { out.append(0) }
        return out + data
    }

    /// GPT-2's byte-level spelling of the 256 bytes: the base tokens of every byte-level BPE vocabulary.
    static var byteTokens: [String] {
        var out: [String] = []
        var extra = 0
        for b in 0..<256 {
            let printable = (33...126).contains(b) || (161...172).contains(b) || (174...255).contains(b)
            out.append(String(UnicodeScalar(UInt32(printable ? b : 256 + extra))!))
            if !printable { extra += 1 }
        }
        return out
    }

    static func seeds() throws -> [String: [UInt8]] {
        let tokens = byteTokens + ["He", "ll", "Hell", "Hello", "<|endoftext|>"]
        let arch = kv("general.architecture", .string, str("llama"))
        let model: [[UInt8]] = [
            arch,
            kv("llama.embedding_length", .uint32, le(UInt32(8))), kv("llama.block_count", .uint32, le(UInt32(1))),
            kv("llama.attention.head_count", .uint32, le(UInt32(2))), kv("llama.feed_forward_length", .uint32, le(UInt32(16))),
            kv("llama.context_length", .uint32, le(UInt32(32))),
            kv("llama.attention.layer_norm_rms_epsilon", .float32, le(Float(1e-5).bitPattern)),
            kv("tokenizer.ggml.model", .string, str("gpt2")), kv("tokenizer.ggml.pre", .string, str("smollm")),
            strings("tokenizer.ggml.tokens", tokens),
            strings("tokenizer.ggml.merges", ["H e", "l l", "He ll", "Hell o"]),
            kv("tokenizer.ggml.token_type", .array, le(GGUFValueType.int32.rawValue) + le(UInt64(tokens.count))
                + (0..<tokens.count).flatMap { le(Int32($0 == tokens.count - 1 ? 3 : 1)) }),
            kv("tokenizer.ggml.eos_token_id", .uint32, le(UInt32(tokens.count - 1))),
            kv("tokenizer.chat_template", .string, str("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n'}}{% endfor %}{% if add_generation_prompt %}{{'<|im_start|>assistant\\n'}}{% endif %}")),
        ]
        let tensors: [(String, [UInt64], [Float])] = [
            ("token_embd.weight", [8, UInt64(tokens.count)], (0..<(8 * tokens.count)).map { Float($0 % 97) / 100 }),
                                                      ("output_norm.weight", [8], [Float](repeating: 1, count: 8))]
        // One Q4_0 tensor of 64 elements: two 18-byte blocks.
        var q4 = Array("GGUF".utf8) + le(UInt32(3)) + le(UInt64(1)) + le(UInt64(0))
            + str("q") + le(UInt32(1)) + le(UInt64(64)) + le(GGMLType.q4_0.rawValue) + le(UInt64(0))
        while q4.count % 32 != 0 { q4.append(0) }
        q4 += [UInt8](repeating: 0x11, count: 36)
        return [
            "tiny-llama-with-tokenizer": file(model, tensors: tensors),
            "q4_0-tensor": q4,
            "claims-2^40-tensors": file([arch], tensors: [], tensorCount: 1 << 40),
            "huge-string-length": Array("GGUF".utf8) + le(UInt32(3)) + le(UInt64(0)) + le(UInt64(1)) + le(UInt64.max) + Array("k".utf8),
            "huge-array": Array("GGUF".utf8) + le(UInt32(3)) + le(UInt64(0)) + le(UInt64(1)) + str("a")
                + le(GGUFValueType.array.rawValue) + le(GGUFValueType.uint64.rawValue) + le(UInt64(1) << 60),
            "nested-arrays": Array("GGUF".utf8) + le(UInt32(3)) + le(UInt64(0)) + le(UInt64(1)) + str("n")
                + le(GGUFValueType.array.rawValue) + [UInt8]((0..<20).flatMap { _ in le(GGUFValueType.array.rawValue) + le(UInt64(1)) }),
            "huge-dims": file([arch], tensors: [("t", [1 << 40, 1 << 40], [0])]),
            "version-1": Array("GGUF".utf8) + le(UInt32(1)) + le(UInt64(0)) + le(UInt64(0)),
            "bad-magic": Array("GGML".utf8) + le(UInt32(3)) + le(UInt64(0)) + le(UInt64(0)),
        ]
    }
}
