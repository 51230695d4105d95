// WordPieceTokenizer (BERT): the input is one of
//   - a Hugging Face tokenizer.json (starts with '{'),
//   - a text (starts with '#'), encoded and decoded by a fixed small tokenizer: the normalizer on any bytes,
//   - otherwise a vocab.txt, optionally followed by a NUL byte and a tokenizer_config.json.
// Every tokenizer that loads then encodes texts (single, pair, truncated) and decodes the ids.

@testable import PEFTKit

enum Target {
    nonisolated(unsafe) static var dir = ""
    nonisolated(unsafe) static var fixed: WordPieceTokenizer? = nil

    static let texts = [
        "Hello, World! [CLS] caf\u{00E9} na\u{00EF}ve e\u{0301} \u{4E2D}\u{6587} \u{D55C}\u{AD6D} \u{1F600} x\u{0000}y\u{FFFD}\t\n",
        String(repeating: "ab", count: 60) + " ##ab [SEP][MASK] \u{0130}stanbul \u{03A3}\u{1885}\u{111C9}\u{11938}\u{105C9}",
    ]

    static func setUp() throws {
        dir = Fuzz.tempDir()
        Fuzz.write(dir + "/tokenizer.json", Array(tinyJSON.utf8))
        fixed = try WordPieceTokenizer(tokenizerJSON: dir + "/tokenizer.json")
    }

    static func exercise(_ tok: WordPieceTokenizer, _ extra: String? = nil) {
        var all: [[Int32]] = []
        for t in texts + (extra.map { [$0] } ?? []) {
            all.append(tok.encode(t).ids)
            all.append(tok.encode(t, pair: texts[0], maxLength: 9).ids)
            all.append(tok.encode(t, addSpecialTokens: false, maxLength: 1, parseSpecial: false).ids)
            all.append(tok.tokenize(t))
        }
        for ids in all {
            _ = try? tok.decode(ids)
            _ = try? tok.decode(ids, skipSpecial: false)
        }
        _ = try? tok.decode((0..<Int32(min(tok.vocabSize, 300))).map { $0 })
        for id: Int32 in [-1, 0, Int32(tok.vocabSize), Int32.max] { _ = tok.token(of: id) }
    }

    static func run(_ input: [UInt8]) {
        if input.first == UInt8(ascii: "#"), let fixed {
            exercise(fixed, String(decoding: input.dropFirst(), as: UTF8.self))
            return
        }
        if input.first == UInt8(ascii: "{") {
            Fuzz.write(dir + "/tokenizer.json", input)
            guard let tok = try? WordPieceTokenizer(tokenizerJSON: dir + "/tokenizer.json") else { return }
            exercise(tok)
            return
        }
        let cut = input.firstIndex(of: 0) ?? input.count
        Fuzz.write(dir + "/vocab.txt", Array(input[..<cut]))
        var config: String? = nil
        if cut < input.count {
            config = dir + "/config.json"
            Fuzz.write(dir + "/config.json", Array(input[(cut + 1)...]))
        }
        guard let tok = try? WordPieceTokenizer(vocabFile: dir + "/vocab.txt", configFile: config) else { return }
        exercise(tok)
    }

    static let vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "b", "ab", "##a", "##b", "##ab", "hello", ",",
                        "!", "world", "cafe", "caf", "##\u{00E9}", "\u{4E2D}", "##", "#", "e", "\u{0301}"]

    static var tinyJSON: String {
        let v = vocab.enumerated().map { "\(jsonQuoted($0.element)): \($0.offset)" }.joined(separator: ", ")
        let added = (0..<5).map { #"{"id": \#($0), "content": \#(jsonQuoted(vocab[$0])), "special": true, "normalized": false}"# }
        return """
        {"version": "1.0", "truncation": {"max_length": 16}, "added_tokens": [\(added.joined(separator: ", "))],
         "normalizer": {"type": "BertNormalizer", "clean_text": true, "handle_chinese_chars": true, "strip_accents": null, "lowercase": true},
         "pre_tokenizer": {"type": "BertPreTokenizer"},
         "post_processor": {"type": "TemplateProcessing",
           "single": [{"SpecialToken": {"id": "[CLS]", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}, {"SpecialToken": {"id": "[SEP]", "type_id": 0}}],
           "pair": [{"SpecialToken": {"id": "[CLS]", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}, {"SpecialToken": {"id": "[SEP]", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}, {"SpecialToken": {"id": "[SEP]", "type_id": 1}}],
           "special_tokens": {"[CLS]": {"id": "[CLS]", "ids": [2], "tokens": ["[CLS]"]}, "[SEP]": {"id": "[SEP]", "ids": [3], "tokens": ["[SEP]"]}}},
         "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": true},
         "model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##", "max_input_chars_per_word": 100,
           "vocab": {\(v)}}}
        """
    }

    static func seeds() throws -> [String: [UInt8]] {
        let vocabTxt = Array((vocab.joined(separator: "\n") + "\n").utf8)
        let bertProcessing = tinyJSON.replacing(
            #""post_processor": {"type": "TemplateProcessing""#,
            with: #""post_processor": {"type": "BertProcessing", "sep": ["[SEP]", 3], "cls": ["[CLS]", 2], "x""#)
        return [
            "tokenizer-json": Array(tinyJSON.utf8),
            "tokenizer-json-bert-processing": Array(bertProcessing.utf8),
            "vocab-txt": vocabTxt,
            "vocab-txt-config": vocabTxt + [0] + Array(#"{"do_lower_case": false, "strip_accents": true, "tokenize_chinese_chars": false, "unk_token": {"content": "[UNK]"}, "model_max_length": 1e30}"#.utf8),
            "vocab-txt-crlf-dup": Array("[UNK]\r\n[CLS]\r\n[SEP]\r\na\r\na\r\n".utf8),
            "text-mixed": Array(("#" + texts[0] + texts[1]).utf8),
            "text-invalid-utf8": [UInt8(ascii: "#"), 0xC3, 0x28, 0xE2, 0x82, 0xF0, 0x9F, 0x98, 0x80, 0xCC, 0x81, 0xED, 0xA0, 0x80],
            "text-marks": Array(("#" + String(repeating: "a\u{0301}\u{0302}\u{0323}\u{1D165}\u{1D16D}", count: 40)).utf8),
            "wordpiece-minimal": Array(#"{"pre_tokenizer": {"type": "BertPreTokenizer"}, "model": {"type": "WordPiece", "vocab": {"[UNK]": 0}}}"#.utf8),
            "empty": [],
        ]
    }
}
