// Tokenizer(tokenizerJSON:): a Hugging Face tokenizer.json (byte-level BPE), then encoding and decoding a text
// with special tokens, and streaming decode.

@testable import PEFTKit

enum Target {
    nonisolated(unsafe) static var dir = ""

    static func setUp() throws { dir = Fuzz.tempDir() }

    static func run(_ input: [UInt8]) {
        Fuzz.write(dir + "/tokenizer.json", input)
        guard let tok = try? Tokenizer(tokenizerJSON: dir + "/tokenizer.json") else { return }
        let ids = tok.encode("Hello, world!  123 <|endoftext|> \u{00e9}\u{1F600}\n\tx", addSpecial: true)
        _ = try? tok.decode(ids)
        _ = try? tok.decode(ids, skipSpecial: true)
        var stream = tok.streamingDecoder()
        for id in ids { _ = try? stream.push(id) }
        _ = stream.finish()
        for id: Int32 in [-1, 0, Int32.max] { _ = tok.token(of: id); _ = try? tok.bytes(of: id) }
    }

    static func seeds() throws -> [String: [UInt8]] {
        // A GPT-2-shaped file: the 256 byte-level base tokens (GPT-2's byte-to-character table), a few merges.
        var byteChars: [String] = []
        var extra = 0
        for b in 0..<256 {
            let printable = (33...126).contains(b) || (161...172).contains(b) || (174...255).contains(b)
            byteChars.append(String(UnicodeScalar(UInt32(printable ? b : 256 + extra))!))
            if !printable { extra += 1 }
        }
        var vocab: [(String, Int)] = byteChars.enumerated().map { ($0.element, $0.offset) }
        vocab += [("He", 256), ("ll", 257), ("Hell", 258), ("Hello", 259), ("<|endoftext|>", 260)]
        let vocabJSON = vocab.map { "\(jsonQuoted($0.0)): \($0.1)" }.joined(separator: ", ")
        func file(pre: String, merges: String, extra: String = "") -> [UInt8] {
            Array(("""
            {"version": "1.0", "added_tokens": [{"id": 260, "content": "<|endoftext|>", "special": true, "normalized": false,
              "single_word": false, "lstrip": false, "rstrip": false}],
             "normalizer": null, "pre_tokenizer": \(pre),
             "post_processor": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": false, "use_regex": true},
             "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
             "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": "",
               "end_of_word_suffix": "", "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
               "vocab": {\(vocabJSON)}, "merges": \(merges)}\(extra)}
            """).utf8)
        }
        let byteLevel = #"{"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true}"#
        let split = #"{"type": "Sequence", "pretokenizers": [{"type": "Split", "pattern": {"Regex": "\\p{N}"}, "behavior": "Isolated", "invert": false}, "# + byteLevel + "]}"
        return [
            "gpt2-merges-strings": file(pre: byteLevel, merges: #"["H e", "l l", "He ll", "Hell o"]"#),
            "gpt2-merges-pairs": file(pre: byteLevel, merges: #"[["H", "e"], ["l", "l"], ["He", "ll"], ["Hell", "o"]]"#),
            "digits-split": file(pre: split, merges: #"["H e"]"#),
            "merge-of-unknown-tokens": file(pre: byteLevel, merges: #"["x y", "He zz"]"#),
            "wordpiece": Array(#"{"model": {"type": "WordPiece", "vocab": {"a": 0}}}"#.utf8),
            "id-out-of-range": Array(#"{"model": {"type": "BPE", "vocab": {"a": 9223372036854775807}, "merges": []}}"#.utf8),
            "empty": [],
        ]
    }
}
