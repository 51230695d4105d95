import Testing
@testable import PEFTKit
#if canImport(Glibc)
import Glibc
#endif

// Files that lie about their contents must fail with a typed error, and must fail before PEFTKit allocates
// what they claim. The inputs the fuzzers (fuzz/) found crashing live here as regression tests too.

/// Peak resident memory of this process so far, in bytes.
private func peakRSS() -> Int {
    var u = rusage()
    getrusage(RUSAGE_SELF.rawValue, &u)
    return u.ru_maxrss * 1024
}

private func safetensors(header: String, data: [UInt8] = [], declaredLength: UInt64? = nil) -> [UInt8] {
    let h = Array(header.utf8)
    var len = (declaredLength ?? UInt64(h.count)).littleEndian
    return withUnsafeBytes(of: &len) { Array($0) } + h + data
}

private func isFormat(_ e: any Error) -> Bool {
    if case PEFTKitError.format = e { return true }
    return false
}

@Suite struct HostileFileTests {
    /// A header claiming a 100 GB tensor is refused from the header alone: nothing near that size is allocated.
    @Test func safetensorsClaiming100GBFailsBeforeAllocating() throws {
        let dir = TS.tempDir()
        let before = peakRSS()
        let claims = [
            // Offsets that agree with the shape, but run past the end of a 4-byte data section.
            #"{"big":{"dtype":"F32","shape":[25000000000],"data_offsets":[0,100000000000]}}"#,
            // Offsets that fit the file, with a shape of 100 GB.
            #"{"big":{"dtype":"F32","shape":[5000000000,5],"data_offsets":[0,4]}}"#,
            // A shape whose byte size overflows Int.
            #"{"big":{"dtype":"F64","shape":[4611686018427387904,4],"data_offsets":[0,4]}}"#,
        ]
        for (i, header) in claims.enumerated() {
            let path = dir + "/big\(i).safetensors"
            try writeFileAtomically(path: path, bytes: safetensors(header: header, data: [0, 0, 0, 0]))
            #expect(throws: PEFTKitError.self) { try SafeTensorsFile(path: path) }
            do { _ = try SafeTensorsFile(path: path) } catch { #expect(isFormat(error), "\(error)") }
        }
        // A 2^62-byte JSON header is refused before it is read.
        let path = dir + "/header.safetensors"
        try writeFileAtomically(path: path, bytes: safetensors(header: "{}", declaredLength: 1 << 62))
        #expect(throws: PEFTKitError.self) { try SafeTensorsFile(path: path) }
        #expect(peakRSS() - before < 1 << 30, "peak RSS grew by \(peakRSS() - before) bytes")
    }

    /// The same claim inside a model folder and an adapter folder.
    @Test func foldersClaiming100GBFailBeforeAllocating() throws {
        let before = peakRSS()
        // A model folder whose config.json is small but whose weights file claims a 100 GB embedding.
        let model = TS.tempDir()
        let cfg = ModelConfig(architecture: .gpt2, vocabSize: 8, hiddenSize: 4, numLayers: 1, numHeads: 1, maxPositions: 4)
        try writeFileAtomically(path: model + "/config.json", bytes: try configJSON(for: cfg))
        try writeFileAtomically(path: model + "/model.safetensors", bytes: safetensors(
            header: #"{"transformer.wte.weight":{"dtype":"F32","shape":[25000000000],"data_offsets":[0,100000000000]}}"#))
        #expect(throws: PEFTKitError.self) { try Model.load(path: model) }

        // An adapter folder whose config asks for a 65536-wide bottleneck on every layer (GBs for a real model),
        // next to a weights file of a few bytes.
        let m = try Model.create(config: TS.tinyConfig(.gpt2), seed: 1)
        try m.attachAdapter(name: "a", config: BottleneckConfig(reductionFactor: 4))
        let dir = TS.tempDir()
        try m.saveAdapter(name: "a", to: dir)
        let config = String(decoding: try readWholeFile(path: dir + "/adapter_config.json"), as: UTF8.self)
        try writeFileAtomically(path: dir + "/adapter_config.json",
                                bytes: Array(config.replacing(#""reduction_factor": 4"#, with: #""reduction_factor": 0.000244140625"#).utf8))
        try writeFileAtomically(path: dir + "/adapter.safetensors", bytes: safetensors(header: "{}"))
        do {
            _ = try m.loadAdapter(from: dir, name: "big")
            Issue.record("a 65536-wide adapter loaded from an empty weights file")
        } catch {
            // Refused by the size check that runs before the adapter is allocated, not by a later shape check.
            #expect(isFormat(error) && "\(error)".contains("too small"), "\(error)")
        }
        // Other tests run in parallel and share the process: a generous bound, far below the 100 GB claimed.
        #expect(peakRSS() - before < 1 << 30, "peak RSS grew by \(peakRSS() - before) bytes")
    }

    /// fuzz/corpus/adapter_config/regression-reduction-factor-1e-300: a tiny reduction_factor made the loader
    /// trap converting hidden / factor to Int (a crash of the host process).
    @Test func adapterConfigWithTinyReductionFactorIsAFormatError() throws {
        let m = try Model.create(config: TS.tinyConfig(.gpt2), seed: 1)
        try m.attachAdapter(name: "a", config: BottleneckConfig(reductionFactor: 4))
        let dir = TS.tempDir()
        try m.saveAdapter(name: "a", to: dir)
        let config = String(decoding: try readWholeFile(path: dir + "/adapter_config.json"), as: UTF8.self)
        for rf in ["1e-300", "5e-324", "1e-20"] {
            try writeFileAtomically(path: dir + "/adapter_config.json",
                                    bytes: Array(config.replacing(#""reduction_factor": 4"#, with: #""reduction_factor": "# + rf).utf8))
            do {
                _ = try m.loadAdapter(from: dir, name: "b")
                Issue.record("reduction_factor \(rf) loaded")
            } catch {
                #expect(isFormat(error), "\(rf): \(error)")
            }
        }
        #expect(m.adapterNames == ["a"])
    }

    /// fuzz/corpus/chat_template/deep-parens: 3000 nested parentheses in a chat template overflowed the stack of a
    /// worker thread (each level recursed through the whole expression grammar), killing the process. Nesting
    /// and expression length are bounded now; templates as deep as real ones still parse.
    @Test func deeplyNestedChatTemplatesAreRefused() throws {
        let m = "<|im_start|><|im_end|>"
        let hostile = [
            m + "{{ " + String(repeating: "(", count: 3000) + "1" + String(repeating: ")", count: 3000) + " }}",
            m + "{% if " + String(repeating: "not ", count: 3000) + "add_generation_prompt %}x{% endif %}",
            m + String(repeating: "{% if add_generation_prompt %}", count: 200) + String(repeating: "{% endif %}", count: 200),
            m + "{{ " + Array(repeating: "'a'", count: 2000).joined(separator: " + ") + " }}",
        ]
        for t in hostile {
            #expect(throws: PEFTKitError.self) { try ChatTemplate(jinja: t) }
        }
        let fine = m + String(repeating: "{% if add_generation_prompt %}", count: 8) + "{{ " + String(repeating: "(", count: 20)
            + "'ok'" + String(repeating: ")", count: 20) + " }}" + String(repeating: "{% endif %}", count: 8)
        #expect(try ChatTemplate(jinja: fine).applyChatTemplate([], addGenerationPrompt: true) == "<|im_start|><|im_end|>ok")
    }

    /// fuzz/corpus/adapter_json/nested-regex: a target_modules regular expression of a few hundred nested `[`
    /// overflowed the stack inside the regular-expression parser. Nesting is bounded now (32 levels); the
    /// patterns PEFT files use still select their modules.
    @Test func deeplyNestedTargetPatternsAreRefused() throws {
        let m = try Model.create(config: TS.tinyConfig(.llama), seed: 1)
        for p in [String(repeating: "[", count: 400), String(repeating: "(", count: 400) + "q_proj" + String(repeating: ")", count: 400)] {
            do {
                try m.attachAdapter(name: "x", configJSON: #"{"peft_type": "LORA", "r": 2, "target_modules": ".*\\.(q_proj)"# + p + #""}"#)
                Issue.record("a pattern nested \(p.count) deep attached")
            } catch {
                #expect(isFormat(error) && "\(error)".contains("deep"), "\(error)")
            }
        }
        try m.attachAdapter(name: "ok", configJSON: #"{"peft_type": "LORA", "r": 2, "target_modules": ".*\\.(q_proj|v_proj)"}"#)
        #expect(m.adapterNames == ["ok"])
    }

    /// Every seed and regression input of the fuzz corpora, run through the same entry points as the fuzz
    /// targets (without the fuzzing): none may trap.
    @Test func fuzzCorporaDoNotTrap() throws {
        let corpus = TS.fixtures.replacing("/Tests/Fixtures", with: "/fuzz/corpus")
        var files = 0
        for entry in listDirectory(corpus + "/safetensors") {
            let bytes = try readWholeFile(path: corpus + "/safetensors/" + entry)
            let s = try Storage.allocate(bytes: bytes.count)
            bytes.withUnsafeBytes { if let b = $0.baseAddress { s.base.copyMemory(from: b, byteCount: bytes.count) } }
            if let f = try? SafeTensorsFile(storage: s, path: entry) {
                for n in f.names { _ = try? f.tensor(n); _ = try? f.int32Tensor(n) }
            }
            files += 1
        }
        for entry in listDirectory(corpus + "/config_json") {
            _ = try? modelConfig(fromJSON: try readWholeFile(path: corpus + "/config_json/" + entry))
            files += 1
        }
        let m = try Model.create(config: ModelConfig(architecture: .gpt2, vocabSize: 32, hiddenSize: 16, numLayers: 2,
                                                     numHeads: 2, maxPositions: 16), seed: 1)
        try m.attachAdapter(name: "a", config: BottleneckConfig(preset: .pfeiffer, reductionFactor: 4))
        let dir = TS.tempDir()
        try m.saveAdapter(name: "a", to: dir)
        try m.removeAdapter(name: "a")
        for entry in listDirectory(corpus + "/adapter_config") {
            try writeFileAtomically(path: dir + "/adapter_config.json", bytes: try readWholeFile(path: corpus + "/adapter_config/" + entry))
            if let n = try? m.loadAdapter(from: dir) { try m.removeAdapter(name: n) }
            files += 1
        }
        // PEFT configs next to a valid LoRA file (as fuzz/targets/peft_config.swift).
        var lora = LoRAConfig()
        lora.rank = 2
        lora.targets = ["c_attn", "mlp.c_proj"]
        try m.attachAdapter(name: "p", config: .lora(lora))
        let peftDir = TS.tempDir()
        try m.saveAdapter(name: "p", to: peftDir)
        try m.removeAdapter(name: "p")
        var peftLoaded = 0
        for entry in listDirectory(corpus + "/peft_config") {
            try writeFileAtomically(path: peftDir + "/adapter_config.json", bytes: try readWholeFile(path: corpus + "/peft_config/" + entry))
            if let n = try? m.loadAdapter(from: peftDir) { try m.removeAdapter(name: n); peftLoaded += 1 }
            files += 1
        }
        #expect(peftLoaded == 2, "the two valid PEFT seeds (list and regular expression) load, no other (\(peftLoaded))")
        for entry in listDirectory(corpus + "/gguf") {
            let bytes = try readWholeFile(path: corpus + "/gguf/" + entry)
            let s = try Storage.allocate(bytes: bytes.count)
            bytes.withUnsafeBytes { if let b = $0.baseAddress { s.base.copyMemory(from: b, byteCount: bytes.count) } }
            let f = try? GGUFFile(storage: s, path: entry)
            if entry.hasPrefix("tiny-") || entry.hasPrefix("q4_0") {
                #expect(f != nil, "the valid GGUF seed \(entry) opens")
            }
            if let f { for t in f.tensorInfos { _ = try? f.tensor(t.name) } }
            if entry.hasPrefix("tiny-"), let f {
                // The valid seed gets the fuzzer past the header: a model config and a tokenizer come out of it.
                #expect(try modelConfig(fromGGUF: f).vocabSize == 261)
                guard case .string(let tokens)? = try f.array("tokenizer.ggml.tokens"),
                      case .string(let merges)? = try f.array("tokenizer.ggml.merges") else {
                    Issue.record("tokenizer metadata missing"); continue
                }
                let tok = try Tokenizer(ggufTokens: tokens, merges: merges, tokenTypes: nil, bosID: nil, eosID: 260,
                                        preTokenizer: try f.string("tokenizer.ggml.pre"))
                #expect(tok.encode("Hello") == [259])
            }
            files += 1
        }
        for entry in listDirectory(corpus + "/tokenizer_json") {
            try writeFileAtomically(path: dir + "/tokenizer.json", bytes: try readWholeFile(path: corpus + "/tokenizer_json/" + entry))
            if entry.hasPrefix("gpt2-") {
                let tok = try Tokenizer(tokenizerJSON: dir + "/tokenizer.json")  // the valid seeds load
                #expect(tok.encode("Hello") == [259], "\(entry): merges applied")
            } else {
                _ = try? Tokenizer(tokenizerJSON: dir + "/tokenizer.json")
            }
            files += 1
        }
        for entry in listDirectory(corpus + "/chat_template") {
            let text = String(decoding: try readWholeFile(path: corpus + "/chat_template/" + entry), as: UTF8.self)
            if let t = try? ChatTemplate(jinja: text) { _ = t.applyChatTemplate([ChatMessage(role: "user", content: "x")], addGenerationPrompt: true) }
            files += 1
        }
        #expect(files > 40)
    }
}
