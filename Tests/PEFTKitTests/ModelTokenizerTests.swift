#if canImport(Glibc)
import Glibc
#endif
import Testing
@testable import PEFTKit

// The tokenizer and chat template `Model.load` attaches (Model+Tokenizer.swift). The SmolLM2 test reads the
// real GGUF (skipped without it, failing under CI); the others use the llama fixture folder (vocabulary 97)
// and the 97-token tokenizer in Tests/Fixtures/tokenizer/tiny.

private let tinyDir = TS.fixtures + "/tokenizer/tiny"

/// A copy of the llama fixture model folder with `extra` files (name -> contents) added.
private func llamaFolder(with extra: [String: [UInt8]]) throws -> String {
    let dir = TS.tempDir()
    for name in ["config.json", "model.safetensors"] {
        try writeFileAtomically(path: dir + "/" + name, bytes: try readWholeFile(path: TS.fixtures + "/llama/model/" + name))
    }
    for (name, bytes) in extra { try writeFileAtomically(path: dir + "/" + name, bytes: bytes) }
    return dir
}

private func tinyFile(_ name: String) throws -> [UInt8] { try readWholeFile(path: tinyDir + "/" + name) }

private func removeFolder(_ dir: String) {
    for name in ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "vocab.json",
                 "merges.txt", "chat_template.jinja"] {
        unlink(dir + "/" + name)
    }
    rmdir(dir)
}

@Suite("ModelTokenizer")
struct ModelTokenizerTests {
    @Test func smolLM2GGUFCarriesTokenizerAndTemplate() throws {
        guard let path = smolPath() else { return }
        let model = try Model.load(path: path)
        let tok = try #require(model.tokenizer, "\(model.tokenizerIssue ?? "")")
        #expect(model.tokenizerIssue == nil)
        #expect(tok.vocabSize == 49152 && tok.vocabSize == model.config.vocabSize)
        #expect(tok.bosID == fixtures.smollm2Gguf.bosTokenID && tok.eosID == fixtures.smollm2Gguf.eosTokenID)
        #expect(tok.addsBOS == fixtures.smollm2Gguf.addBOSToken)
        #expect(tok.preTokenizerSteps == ["digits(individual)", "gpt2-regex"])
        try checkCases(tok, "smollm2", label: "Model.load(SmolLM2 GGUF).tokenizer")

        let chat = try #require(model.chatTemplate)
        for c in fixtures.chat {
            let messages = c.messages.map { ChatMessage(role: $0.role, content: $0.content) }
            let text = chat.applyChatTemplate(messages, addGenerationPrompt: c.addGenerationPrompt)
            #expect(text == c.text)
            #expect(tok.encode(text) == c.ids)
        }
        let imEnd = try #require(tok.id(of: "<|im_end|>"))
        #expect(tok.endOfTurnID == imEnd && model.endOfTurnID == imEnd)
        var stops: [Int32] = []
        for id in [tok.eosID, imEnd].compactMap({ $0 }) where !stops.contains(id) { stops.append(id) }
        #expect(model.stopTokenIDs == stops)
    }

    @Test func folderWithTokenizerJSON() throws {
        let dir = try llamaFolder(with: ["tokenizer.json": try tinyFile("tokenizer.json"),
                                         "tokenizer_config.json": try tinyFile("tokenizer_config.json")])
        defer { removeFolder(dir) }
        let model = try Model.load(path: dir)
        #expect(model.tokenizerIssue == nil)
        let tok = try #require(model.tokenizer)
        #expect(tok.vocabSize == 97)
        #expect(tok.bosID == nil && !tok.addsBOS)
        #expect(tok.eosID == 96 && tok.endOfTurnID == 96 && model.endOfTurnID == 96 && model.stopTokenIDs == [96])
        // "!" is id 0, "H" is 0x48 - 0x21, " " is 94, "\n" 95.
        let ids = tok.encode("Hi there!\n<|im_end|>")
        let expected: [Int32] = Array("Hi".utf8).map { Int32($0) - 0x21 } + [94] + Array("there".utf8).map { Int32($0) - 0x21 } + [0, 95, 96]
        #expect(ids == expected)
        #expect(try tok.decode(ids) == "Hi there!\n<|im_end|>")
        #expect(try tok.decode(ids, skipSpecial: true) == "Hi there!\n")
        let chat = try #require(model.chatTemplate)
        #expect(chat.applyChatTemplate([ChatMessage(role: "user", content: "hi")], addGenerationPrompt: true)
                == ChatTemplate.chatML.applyChatTemplate([ChatMessage(role: "user", content: "hi")], addGenerationPrompt: true))
    }

    @Test func folderWithGPT2Files() throws {
        // encoder.json-style vocab.json: the tiny vocabulary with <|endoftext|> in place of <|im_end|>.
        var entries: [String] = (0x21..<0x7F).map { jsonQuoted(String(UnicodeScalar(UInt8($0)))) + ":\($0 - 0x21)" }
        entries += ["\"\u{0120}\":94", "\"\u{010A}\":95", "\"<|endoftext|>\":96"]
        let dir = try llamaFolder(with: ["vocab.json": Array(("{" + entries.joined(separator: ",") + "}").utf8),
                                         "merges.txt": Array("#version: 0.2\n".utf8)])
        defer { removeFolder(dir) }
        let model = try Model.load(path: dir)
        let tok = try #require(model.tokenizer, "\(model.tokenizerIssue ?? "")")
        #expect(tok.eosID == 96 && tok.bosID == 96 && tok.endOfTurnID == nil)
        #expect(model.chatTemplate == nil && model.endOfTurnID == nil && model.stopTokenIDs == [96])
        #expect(tok.encode("a b") == [0x61 - 0x21, 94, 0x62 - 0x21])
    }

    @Test func unreadableTokenizerDoesNotFailTheLoad() throws {
        let dir = try llamaFolder(with: ["tokenizer.json": Array("{\"model\": {\"type\": \"WordPiece\"}}".utf8),
                                         "chat_template.jinja": Array("{{ messages }}".utf8)])
        defer { removeFolder(dir) }
        let model = try Model.load(path: dir)
        #expect(model.tokenizer == nil && model.chatTemplate == nil)
        let issue = try #require(model.tokenizerIssue)
        #expect(issue.contains("WordPiece") && issue.contains("ChatML"))

        // A folder without tokenizer files: nil and no issue.
        let plain = try Model.load(path: TS.fixtures + "/llama/model")
        #expect(plain.tokenizer == nil && plain.chatTemplate == nil && plain.tokenizerIssue == nil)
        #expect(plain.stopTokenIDs.isEmpty)
    }

    @Test func randomModelHasNoneUntilAttached() throws {
        let model = try Model.create(config: ModelConfig(architecture: .gpt2, vocabSize: 100, hiddenSize: 16,
                                                         numLayers: 1, numHeads: 2), seed: 1)
        #expect(model.tokenizer == nil && model.chatTemplate == nil && model.endOfTurnID == nil)
        let tok = try Tokenizer(tokenizerJSON: tinyDir + "/tokenizer.json")
        try model.setTokenizer(tok, chatTemplate: .chatML)
        #expect(model.tokenizer === tok && model.chatTemplate != nil && model.endOfTurnID == 96)
        try model.setTokenizer(nil, chatTemplate: nil)
        #expect(model.tokenizer == nil && model.chatTemplate == nil)

        try model.loadTokenizer(path: tinyDir + "/tokenizer.json")
        #expect(model.tokenizer?.vocabSize == 97 && model.chatTemplate != nil)
        #expect(throws: PEFTKitError.self) { try model.loadTokenizer(path: TS.fixtures + "/llama/model") }
        #expect(model.tokenizer?.vocabSize == 97, "a failed loadTokenizer keeps the old tokenizer")

        // The tokenizer can be read from inside a generation callback (it is not behind the call lock).
        let m97 = try Model.create(config: ModelConfig(architecture: .gpt2, vocabSize: 97, hiddenSize: 16,
                                                       numLayers: 1, numHeads: 2), seed: 2)
        try m97.setTokenizer(tok, chatTemplate: nil)
        var gc = GenerateConfig()
        gc.maxNewTokens = 5
        var streamed = ""
        let out = try m97.generate(prompt: tok.encode("Hi"), config: gc) { id in
            streamed += (try? m97.tokenizer?.decode([id])) ?? "<no tokenizer>"
            return true
        }
        #expect(streamed == (try tok.decode(out)))

        let small = try Model.create(config: ModelConfig(architecture: .gpt2, vocabSize: 64, hiddenSize: 16,
                                                         numLayers: 1, numHeads: 2), seed: 1)
        #expect(throws: PEFTKitError.self) { try small.setTokenizer(tok, chatTemplate: nil) }
        #expect(throws: PEFTKitError.self) { try small.loadTokenizer(path: tinyDir) }
        #expect(small.tokenizer == nil)
    }
}
