import Testing
@testable import PEFTKit

// JSONL records, loss masks through a chat template, batches and a short training run (Training/Dataset.swift),
// with the 97-token tokenizer of Tests/Fixtures/tokenizer/tiny and the llama fixture model.

private let tinyDir = TS.fixtures + "/tokenizer/tiny"

private func tinyTokenizer() throws -> Tokenizer { try Tokenizer(tokenizerJSON: tinyDir + "/tokenizer.json") }
private func tinyTemplate() throws -> ChatTemplate { try ChatTemplate(tokenizerConfig: tinyDir + "/tokenizer_config.json") }

/// The message of the format error `body` throws, or nil when it throws nothing or something else.
private func formatError(_ body: () throws -> Void) -> String? {
    do { try body() } catch PEFTKitError.format(let m) { return m } catch { return "unexpected error \(error)" }
    return nil
}

/// The text of the trained tokens (labels other than -100), in order.
private func trainedText(_ e: DatasetExample, _ tok: Tokenizer) throws -> String {
    try tok.decode(e.labels.filter { $0 != -100 })
}

@Suite("Dataset")
struct DatasetTests {
    @Test func parsesEveryRecordFormat() throws {
        let text = """
            {"prompt": "Hi", "response": "Hello"}

            {"prompt": "Hi", "completion": "Hey", "system": "Be brief."}\r
            {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}
            {"text": "plain text", "meta": 3}
            """
        let r = try JSONLDataset.parse(text, source: "t.jsonl")
        #expect(r == [
            .promptResponse(system: nil, prompt: "Hi", response: "Hello"),
            .promptResponse(system: "Be brief.", prompt: "Hi", response: "Hey"),
            .chat([ChatMessage(role: "user", content: "a"), ChatMessage(role: "assistant", content: "b")]),
            .text("plain text"),
        ])
    }

    @Test func badRecordsNameTheirLine() throws {
        let good = #"{"text": "ok"}"#
        let cases: [(String, String)] = [
            (good + "\n\n" + #"{"prompt": "x""#, "line 3"),                                   // invalid JSON
            (good + "\n" + #"{"prompt": "x"}"#, "line 2: missing \"response\""),
            (#"{"response": "x"}"#, "line 1: missing \"prompt\""),
            (good + "\n" + #"{"text": "a", "prompt": "b", "response": "c"}"#, "line 2: mixes record formats"),
            (#"{"messages": [{"role": "user", "content": "a"}]}"#, "line 1: \"messages\" has no assistant message"),
            (#"{"messages": []}"#, "line 1: \"messages\" is empty"),
            (#"{"text": 5}"#, "line 1"),                                                       // wrong type
            (#"["a"]"#, "line 1"),                                                             // not an object
            (#"{"other": "x"}"#, "line 1: expected"),
            (good + "\n" + #"{"prompt": "x", "response": ""}"#, "line 2: \"response\" is empty"),
        ]
        for (text, want) in cases {
            let m = formatError { _ = try JSONLDataset.parse(text, source: "d.jsonl") }
            #expect(m?.contains("d.jsonl " + want) == true, "\(text): got \(m ?? "no error")")
        }
        #expect(formatError { _ = try JSONLDataset.parse("\n  \n", source: "e.jsonl") }?.contains("no records") == true)
        // A missing file is an IO error naming the path.
        #expect(throws: PEFTKitError.self) { _ = try JSONLDataset.read(path: TS.tempDir() + "/missing.jsonl") }
    }

    @Test func promptResponseTrainsOnlyTheResponse() throws {
        let tok = try tinyTokenizer()
        let chat = try tinyTemplate()
        let enc = DatasetEncoder(tokenizer: tok, chatTemplate: chat)
        let e = try enc.encode(.promptResponse(system: nil, prompt: "2+3?", response: "5"))
        let messages = [ChatMessage(role: "user", content: "2+3?"), ChatMessage(role: "assistant", content: "5")]
        // The ids are the whole rendered conversation; the labels keep only the reply and its end-of-turn token.
        #expect(e.inputIDs == enc.prefixIDs + tok.encode(chat.applyChatTemplate(messages, addGenerationPrompt: false)))
        #expect(e.labels.count == e.inputIDs.count)
        #expect(try trainedText(e, tok) == "5<|im_end|>")
        let trained = e.labels.indices.filter { e.labels[$0] != -100 }
        #expect(trained.count == 2)
        for i in trained { #expect(e.labels[i] == e.inputIDs[i]) }
        // Everything before the reply is the generation prompt, and the newline after <|im_end|> is untrained.
        let prompt = enc.promptIDs(messages: [messages[0]])
        #expect(Array(e.inputIDs[..<trained[0]]) == prompt)
        #expect(trained.last! == e.inputIDs.count - 2 && e.labels.last == -100)

        let withSystem = try enc.encode(.promptResponse(system: "Be brief.", prompt: "2+3?", response: "5"))
        #expect(try trainedText(withSystem, tok) == "5<|im_end|>")
        #expect(try tok.decode(withSystem.inputIDs).hasPrefix("<|im_start|>system\nBe brief.<|im_end|>"))
    }

    @Test func messagesTrainEveryAssistantTurn() throws {
        let tok = try tinyTokenizer()
        let enc = DatasetEncoder(tokenizer: tok, chatTemplate: try tinyTemplate())
        let e = try enc.encode(.chat([
            ChatMessage(role: "system", content: "S"), ChatMessage(role: "user", content: "u1"),
            ChatMessage(role: "assistant", content: "a1"), ChatMessage(role: "user", content: "u2"),
            ChatMessage(role: "assistant", content: "a2"),
        ]))
        #expect(try trainedText(e, tok) == "a1<|im_end|>a2<|im_end|>")
        // Untrained tokens include every system and user turn.
        let untrained = try tok.decode(e.inputIDs.indices.filter { e.labels[$0] == -100 }.map { e.inputIDs[$0] })
        #expect(untrained.contains("system\nS") && untrained.contains("user\nu1") && untrained.contains("user\nu2"))
        #expect(!untrained.contains("a1") && !untrained.contains("a2"))
    }

    @Test func textAndTemplateFreeRecords() throws {
        let tok = try tinyTokenizer()
        let eos = try #require(tok.eosID)
        let plain = DatasetEncoder(tokenizer: tok, chatTemplate: nil)
        let t = try plain.encode(.text("abc"))
        #expect(t.inputIDs == tok.encode("abc") + [eos] && t.labels == t.inputIDs)
        let pr = try plain.encode(.promptResponse(system: nil, prompt: "Q:", response: "A"))
        #expect(pr.inputIDs == tok.encode("Q:") + tok.encode("A") + [eos])
        #expect(pr.labels == [-100, -100] + tok.encode("A") + [eos])
        #expect(throws: PEFTKitError.self) { _ = try plain.encode(.chat([ChatMessage(role: "assistant", content: "x")])) }
    }

    @Test func batchesPadAndCut() throws {
        let a = DatasetExample(inputIDs: [1, 2, 3], labels: [-100, 2, 3])
        let b = DatasetExample(inputIDs: [4, 5, 6, 7, 8, 9], labels: [-100, -100, 6, 7, 8, 9])
        let batch = try TokenBatch([a, b], seqLen: 4, padID: 0)
        #expect(batch.batch == 2 && batch.seqLen == 4)
        #expect(batch.inputIDs == [1, 2, 3, 0, 4, 5, 6, 7])
        #expect(batch.labels == [-100, 2, 3, -100, -100, -100, 6, 7])
        #expect(batch.trainedTokens == 4)
        #expect(throws: PEFTKitError.self) { _ = try TokenBatch([DatasetExample](), seqLen: 4, padID: 0) }
        #expect(throws: PEFTKitError.self) { _ = try TokenBatch([DatasetExample(inputIDs: [1], labels: [])], seqLen: 4, padID: 0) }
    }

    @Test func batchOrderIsSeededAndCoversEachEpoch() throws {
        var o1 = try BatchOrder(count: 10, batch: 4, seed: 7)
        var o2 = try BatchOrder(count: 10, batch: 4, seed: 7)
        var seen: [Int] = []
        for _ in 0..<5 {
            let b = o1.nextBatch()
            #expect(b == o2.nextBatch())
            seen += b
        }
        #expect(Set(seen[..<10]).count == 10 && Set(seen[10..<20]).count == 10)
        #expect(o1.epoch == 1)
        #expect(BatchOrder.steps(count: 10, batch: 4, epochs: 2) == 5)
        #expect(throws: PEFTKitError.self) { _ = try BatchOrder(count: 0, batch: 4, seed: 0) }
    }

    /// With SmolLM2's own tokenizer and template (default system message included), the demo's records
    /// train exactly the reply and `<|im_end|>`, and the untrained part is the generation prompt.
    @Test func smolLM2TemplateMasksThePrompt() throws {
        guard let path = smolPath() else { return }
        let file = try GGUFFile(path: path)
        let tok = try Tokenizer(gguf: file)
        let chat = try ChatTemplate(jinja: try #require(try file.string("tokenizer.chat_template")))
        let enc = DatasetEncoder(tokenizer: tok, chatTemplate: chat)
        let records = try JSONLDataset.read(path: TS.fixtures + "/../../data/demo/train.jsonl")
        #expect(records.count == 64)
        for r in records.prefix(8) {
            guard case .promptResponse(_, let prompt, let response) = r else { Issue.record("not prompt/response"); continue }
            let e = try enc.encode(r)
            #expect(try trainedText(e, tok) == response + "<|im_end|>")
            let firstTrained = try #require(e.labels.firstIndex { $0 != -100 })
            #expect(Array(e.inputIDs[..<firstTrained]) == enc.promptIDs(messages: [ChatMessage(role: "user", content: prompt)]))
            #expect(try tok.decode(e.inputIDs).hasPrefix("<|im_start|>system\nYou are a helpful AI assistant named SmolLM"))
        }
    }

    /// A few LoRA steps on chat records lower the masked loss of the llama fixture model.
    @Test func shortTrainingRunLowersTheLoss() throws {
        let model = try Model.load(path: TS.fixtures + "/llama/model")
        let tok = try tinyTokenizer()
        try model.setTokenizer(tok, chatTemplate: try tinyTemplate())
        let enc = DatasetEncoder(tokenizer: try #require(model.tokenizer), chatTemplate: model.chatTemplate)
        let records = try JSONLDataset.parse("""
            {"prompt": "1+1", "response": "two"}
            {"prompt": "2+2", "response": "four"}
            {"messages": [{"role": "user", "content": "3+3"}, {"role": "assistant", "content": "six"}]}
            {"prompt": "4+4", "response": "eight"}
            """)
        let examples = try records.map { try enc.encode($0) }
        let T = examples.map(\.inputIDs.count).max()!
        #expect(T <= model.config.maxPositions)
        let batch = try TokenBatch(examples, seqLen: T, padID: tok.eosID ?? 0)
        func loss() throws -> Float { try model.forward(inputIDs: batch.inputIDs, labels: batch.labels, batch: 4, seqLen: T).result.loss }
        var lc = LoRAConfig()
        lc.rank = 4; lc.targets = ["q_proj", "v_proj", "down_proj"]
        try model.attachAdapter(name: "t", config: .lora(lc))
        try model.setActiveAdapter("t")
        let before = try loss()
        var tc = TrainConfig()
        tc.learningRate = 2e-2
        for _ in 0..<20 {
            let r = try model.trainStep(inputIDs: batch.inputIDs, labels: batch.labels, batch: 4, seqLen: T, config: tc)
            #expect(r.tokens == batch.trainedTokens)
        }
        let after = try loss()
        #expect(after < 0.7 * before, "loss \(before) -> \(after)")
    }
}
