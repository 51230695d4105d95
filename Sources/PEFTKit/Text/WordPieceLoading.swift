import FoundationEssentials

// Loading a WordPiece tokenizer from Hugging Face `tokenizer.json` (model type "WordPiece", BertNormalizer,
// BertPreTokenizer, TemplateProcessing / BertProcessing, WordPiece decoder) or from BERT's `vocab.txt` with
// its `tokenizer_config.json` (the files transformers' BertTokenizer reads). Components PEFTKit does not
// implement are refused with `unsupported` rather than ignored; malformed files throw `format`.

/// Largest tokenizer file read.
private let maxWordPieceFileBytes = 64 << 20

// MARK: tokenizer.json

private struct WPFile: Decodable {
    var addedTokens: [WPAddedToken]?
    var normalizer: WPComponent?
    var preTokenizer: WPComponent?
    var postProcessor: WPComponent?
    var decoder: WPComponent?
    var truncation: WPTruncation?
    var model: WPModel?

    enum CodingKeys: String, CodingKey {
        case addedTokens = "added_tokens", normalizer, preTokenizer = "pre_tokenizer"
        case postProcessor = "post_processor", decoder, truncation, model
    }
}

private struct WPTruncation: Decodable {
    var maxLength: Int?
    enum CodingKeys: String, CodingKey { case maxLength = "max_length" }
}

private struct WPAddedToken: Decodable {
    var id: Int
    var content: String
    var singleWord: Bool?
    var lstrip: Bool?
    var rstrip: Bool?
    var normalized: Bool?
    var special: Bool?

    enum CodingKeys: String, CodingKey {
        case id, content, singleWord = "single_word", lstrip, rstrip, normalized, special
    }
}

private struct WPModel: Decodable {
    var type: String?
    var vocab: [String: Int]?
    var unkToken: String?
    var continuingSubwordPrefix: String?
    var maxInputCharsPerWord: Int?

    enum CodingKeys: String, CodingKey {
        case type, vocab, unkToken = "unk_token", continuingSubwordPrefix = "continuing_subword_prefix"
        case maxInputCharsPerWord = "max_input_chars_per_word"
    }
}

/// A template piece: `{"SpecialToken": {"id": "[CLS]", "type_id": 0}}` or `{"Sequence": {"id": "A", "type_id": 0}}`.
private struct WPTemplatePiece: Decodable {
    struct Inner: Decodable {
        var id: String
        var typeID: Int?
        enum CodingKeys: String, CodingKey { case id, typeID = "type_id" }
    }
    var specialToken: Inner?
    var sequence: Inner?
    enum CodingKeys: String, CodingKey { case specialToken = "SpecialToken", sequence = "Sequence" }
}

private struct WPSpecialTokens: Decodable {
    var ids: [Int]
}

/// `["[SEP]", 102]` in BertProcessing.
private struct WPTokenAndID: Decodable {
    var token: String
    var id: Int
    init(from decoder: any Decoder) throws {
        var c = try decoder.unkeyedContainer()
        token = try c.decode(String.self)
        id = try c.decode(Int.self)
    }
}

/// Any normalizer, pre-tokenizer, post-processor or decoder: its type and the fields PEFTKit reads.
private struct WPComponent: Decodable {
    var type: String
    // BertNormalizer
    var cleanText: Bool?
    var handleChineseChars: Bool?
    var stripAccents: Bool?
    var lowercase: Bool?
    // TemplateProcessing / BertProcessing
    var single: [WPTemplatePiece]?
    var pair: [WPTemplatePiece]?
    var specialTokens: [String: WPSpecialTokens]?
    var sep: WPTokenAndID?
    var cls: WPTokenAndID?
    // WordPiece decoder
    var prefix: String?
    var cleanup: Bool?

    enum CodingKeys: String, CodingKey {
        case type, cleanText = "clean_text", handleChineseChars = "handle_chinese_chars", stripAccents = "strip_accents"
        case lowercase, single, pair, specialTokens = "special_tokens", sep, cls, prefix, cleanup
    }
}

private func wpID(_ value: Int, _ what: String, _ src: String) throws -> Int32 {
    guard value >= 0, value < WordPieceTokenizer.maxTokens else {
        throw PEFTKitError.format("\(src): \(what) has id \(value), outside 0..<\(WordPieceTokenizer.maxTokens)")
    }
    return Int32(value)
}

private func readNormalizer(_ c: WPComponent?, _ src: String) throws -> BertNormalizerOptions {
    guard let c else {
        return BertNormalizerOptions(cleanText: false, handleChineseChars: false, stripAccents: false, lowercase: false)
    }
    guard c.type == "BertNormalizer" else {
        throw PEFTKitError.unsupported("\(src): normalizer '\(c.type)' is not supported (BertNormalizer)")
    }
    return BertNormalizerOptions(cleanText: c.cleanText ?? true, handleChineseChars: c.handleChineseChars ?? true,
                                 stripAccents: c.stripAccents, lowercase: c.lowercase ?? true)
}

private func readTemplate(_ pieces: [WPTemplatePiece], _ c: WPComponent, _ vocabCount: Int, pair: Bool,
                          _ src: String) throws -> [WordPieceTemplateItem] {
    var items: [WordPieceTemplateItem] = []
    var seen = Set<String>()
    for p in pieces {
        if let s = p.sequence {
            guard s.id == "A" || (pair && s.id == "B") else {
                throw PEFTKitError.format("\(src): TemplateProcessing \(pair ? "pair" : "single") names sequence '\(s.id)'")
            }
            guard seen.insert(s.id).inserted else {
                throw PEFTKitError.format("\(src): TemplateProcessing uses sequence '\(s.id)' twice")
            }
            items.append(.sequence(second: s.id == "B", typeID: try typeID(s.typeID, src)))
        } else if let t = p.specialToken {
            guard let entry = c.specialTokens?[t.id] else {
                throw PEFTKitError.format("\(src): TemplateProcessing uses special token '\(t.id)' that it does not define")
            }
            let ids = try entry.ids.map { try wpID($0, "special token '\(t.id)'", src) }
            for id in ids where Int(id) >= vocabCount {
                throw PEFTKitError.format("\(src): special token '\(t.id)' has id \(id), outside the \(vocabCount) tokens")
            }
            items.append(.special(ids, typeID: try typeID(t.typeID, src)))
        } else {
            throw PEFTKitError.format("\(src): TemplateProcessing item is neither SpecialToken nor Sequence")
        }
    }
    guard seen.contains("A"), !pair || seen.contains("B") else {
        throw PEFTKitError.format("\(src): TemplateProcessing \(pair ? "pair" : "single") lacks a sequence")
    }
    return items
}

private func typeID(_ v: Int?, _ src: String) throws -> Int32 {
    let v = v ?? 0
    guard v >= 0, v < 1 << 16 else { throw PEFTKitError.format("\(src): type_id \(v) is out of range") }
    return Int32(v)
}

/// BERT's templates around [CLS] and [SEP].
private func bertTemplates(cls: Int32, sep: Int32) -> (single: [WordPieceTemplateItem], pair: [WordPieceTemplateItem]) {
    ([.special([cls], typeID: 0), .sequence(second: false, typeID: 0), .special([sep], typeID: 0)],
     [.special([cls], typeID: 0), .sequence(second: false, typeID: 0), .special([sep], typeID: 0),
      .sequence(second: true, typeID: 1), .special([sep], typeID: 1)])
}

private func readPostProcessor(_ c: WPComponent?, _ vocabCount: Int, _ src: String) throws
    -> (single: [WordPieceTemplateItem], pair: [WordPieceTemplateItem]) {
    guard let c else {
        return ([.sequence(second: false, typeID: 0)], [.sequence(second: false, typeID: 0), .sequence(second: true, typeID: 1)])
    }
    switch c.type {
    case "TemplateProcessing":
        guard let single = c.single, let pair = c.pair else {
            throw PEFTKitError.format("\(src): TemplateProcessing needs 'single' and 'pair'")
        }
        return (try readTemplate(single, c, vocabCount, pair: false, src), try readTemplate(pair, c, vocabCount, pair: true, src))
    case "BertProcessing":
        guard let cls = c.cls, let sep = c.sep else { throw PEFTKitError.format("\(src): BertProcessing needs 'cls' and 'sep'") }
        let clsID = try wpID(cls.id, "cls", src), sepID = try wpID(sep.id, "sep", src)
        guard Int(clsID) < vocabCount, Int(sepID) < vocabCount else {
            throw PEFTKitError.format("\(src): BertProcessing ids \(clsID) / \(sepID) are outside the \(vocabCount) tokens")
        }
        return bertTemplates(cls: clsID, sep: sepID)
    default:
        throw PEFTKitError.unsupported("\(src): post-processor '\(c.type)' is not supported (TemplateProcessing, BertProcessing)")
    }
}

/// The vocabulary as an array in id order, refusing gaps and shared ids.
private func denseVocab(_ dict: [String: Int], _ src: String) throws -> [String] {
    guard dict.count <= WordPieceTokenizer.maxTokens else {
        throw PEFTKitError.format("\(src): \(dict.count) tokens is more than the limit of \(WordPieceTokenizer.maxTokens)")
    }
    var vocab = [String?](repeating: nil, count: dict.count)
    for (token, id) in dict {
        guard id >= 0, id < dict.count else {
            throw PEFTKitError.format("\(src): token '\(token)' has id \(id); the \(dict.count) ids must be 0..<\(dict.count)")
        }
        if let other = vocab[id] { throw PEFTKitError.format("\(src): id \(id) is given to both '\(other)' and '\(token)'") }
        vocab[id] = token
    }
    return vocab.map { $0 ?? "" }  // no gaps: count == dict.count and every id was distinct
}

// MARK: tokenizer_config.json

/// `unk_token` etc.: a string or an object with `content`.
private struct WPConfigToken: Decodable {
    var content: String?
    init(from decoder: any Decoder) throws {
        let c = try decoder.singleValueContainer()
        if c.decodeNil() { content = nil; return }
        if let s = try? c.decode(String.self) { content = s; return }
        struct Object: Decodable { var content: String }
        content = try c.decode(Object.self).content
    }
}

private struct WPConfig: Decodable {
    var doLowerCase: Bool?
    var stripAccents: Bool?
    var tokenizeChineseChars: Bool?
    var doBasicTokenize: Bool?
    var unkToken: WPConfigToken?
    var sepToken: WPConfigToken?
    var clsToken: WPConfigToken?
    var padToken: WPConfigToken?
    var maskToken: WPConfigToken?
    var modelMaxLength: Double?

    enum CodingKeys: String, CodingKey {
        case doLowerCase = "do_lower_case", stripAccents = "strip_accents", tokenizeChineseChars = "tokenize_chinese_chars"
        case doBasicTokenize = "do_basic_tokenize", unkToken = "unk_token", sepToken = "sep_token", clsToken = "cls_token"
        case padToken = "pad_token", maskToken = "mask_token", modelMaxLength = "model_max_length"
    }
}

private func wpDirectory(_ path: String) -> String {
    guard let slash = path.lastIndex(of: "/") else { return "." }
    let dir = String(path[..<slash])
    return dir.isEmpty ? "/" : dir
}

/// `model_max_length` when it is a sensible length (transformers writes 1e30 for "none").
private func sensibleLength(_ v: Double?) -> Int? {
    guard let v, v.isFinite, v >= 1, v < Double(1 << 31) else { return nil }
    return Int(v)
}

extension WordPieceTokenizer {
    /// Loads a Hugging Face `tokenizer.json` whose model is WordPiece (BERT and its family).
    ///
    /// Reads `added_tokens` (matched in the raw text; `normalized: true` is not supported), a BertNormalizer
    /// (or none), the BertPreTokenizer, a TemplateProcessing or BertProcessing post-processor (or none) and
    /// a WordPiece decoder. `truncation.max_length`, if present, becomes `modelMaxLength`; `encode` does not
    /// truncate unless asked. [CLS]/[SEP]/[PAD]/[MASK] are looked up by name.
    ///
    /// ```swift
    /// let tok = try WordPieceTokenizer(tokenizerJSON: "all-MiniLM-L6-v2/tokenizer.json")
    /// ```
    public convenience init(tokenizerJSON path: String) throws {
        let src = "'\(path)'"
        let bytes = try readWholeFile(path: path, maxBytes: maxWordPieceFileBytes)
        let file = try decodeJSON(WPFile.self, from: bytes, source: src)
        guard let model = file.model else { throw PEFTKitError.format("\(src) has no 'model'") }
        guard let type = model.type else { throw PEFTKitError.format("\(src): 'model' has no 'type'") }
        guard type == "WordPiece" else {
            throw PEFTKitError.unsupported("\(src): model type '\(type)' is not WordPiece")
        }
        guard let vocabDict = model.vocab else { throw PEFTKitError.format("\(src): 'model' has no 'vocab'") }
        let vocab = try denseVocab(vocabDict, src)
        let normalizer = try readNormalizer(file.normalizer, src)
        guard let pre = file.preTokenizer else {
            throw PEFTKitError.unsupported("\(src): no pre_tokenizer; PEFTKit needs BertPreTokenizer for WordPiece")
        }
        guard pre.type == "BertPreTokenizer" else {
            throw PEFTKitError.unsupported("\(src): pre-tokenizer '\(pre.type)' is not supported (BertPreTokenizer)")
        }
        let prefix = model.continuingSubwordPrefix ?? "##"
        var cleanup = true
        if let d = file.decoder {
            guard d.type == "WordPiece" else {
                throw PEFTKitError.unsupported("\(src): decoder '\(d.type)' is not supported (WordPiece)")
            }
            guard (d.prefix ?? "##") == prefix else {
                throw PEFTKitError.unsupported("\(src): the decoder's prefix '\(d.prefix ?? "")' differs from the model's '\(prefix)'")
            }
            cleanup = d.cleanup ?? true
        }
        let (single, pair) = try readPostProcessor(file.postProcessor, vocab.count, src)
        var added: [(String, Int32, Bool)] = []
        for a in file.addedTokens ?? [] {
            let id = try wpID(a.id, "added token '\(a.content)'", src)
            guard Int(id) < vocab.count, vocab[Int(id)] == a.content else {
                throw PEFTKitError.unsupported("\(src): added token '\(a.content)' (id \(id)) is not the vocabulary's token \(id); tokens beyond the WordPiece vocabulary are not supported")
            }
            if a.normalized ?? false {
                throw PEFTKitError.unsupported("\(src): added token '\(a.content)' has normalized = true, which is not supported")
            }
            if (a.singleWord ?? false) || (a.lstrip ?? false) || (a.rstrip ?? false) {
                throw PEFTKitError.unsupported("\(src): added token '\(a.content)' uses single_word / lstrip / rstrip, which are not supported")
            }
            added.append((a.content, id, a.special ?? false))
        }
        let maxChars = model.maxInputCharsPerWord ?? 100
        var maxLength: Int? = nil
        if let m = file.truncation?.maxLength, m > 0 { maxLength = m }
        try self.init(spec: WordPieceSpec(
            source: src, vocab: vocab, unkToken: model.unkToken ?? "[UNK]", continuingSubwordPrefix: prefix,
            maxInputCharsPerWord: maxChars, normalizer: normalizer, added: added, single: single, pair: pair,
            modelMaxLength: maxLength, decoderCleanup: cleanup))
    }

    /// Loads BERT's `vocab.txt` (one token per line; the line number is the id) with the settings of a
    /// `tokenizer_config.json` (`do_lower_case`, `strip_accents`, `tokenize_chinese_chars`, the special token
    /// names, `model_max_length`), as transformers' BertTokenizerFast builds it. Without a config file
    /// (`configFile` nil and none next to the vocabulary) BERT's defaults apply: uncased, accents stripped.
    public convenience init(vocabFile: String, configFile: String? = nil) throws {
        let src = "'\(vocabFile)'"
        let bytes = try readWholeFile(path: vocabFile, maxBytes: maxWordPieceFileBytes)
        guard let text = String(validating: bytes, as: UTF8.self) else {
            throw PEFTKitError.format("\(src) is not valid UTF-8")
        }
        var vocab: [String] = []
        let lines = text.split(separator: "\n", omittingEmptySubsequences: false)
        for (n, line) in lines.enumerated() {
            // HF reads each line with its trailing white space trimmed.
            let scalars = line.unicodeScalars
            var end = scalars.endIndex
            while end > scalars.startIndex, scalars[scalars.index(before: end)].properties.isWhitespace {
                end = scalars.index(before: end)
            }
            let token = String(scalars[..<end])
            if token.isEmpty {
                if n == lines.count - 1 { break }  // the newline at the end of the file
                throw PEFTKitError.format("\(src) line \(n + 1): empty token")
            }
            vocab.append(token)
        }

        var config = WPConfig()
        var configPath = configFile
        if configPath == nil {
            let p = wpDirectory(vocabFile) + "/tokenizer_config.json"
            if pathKind(p) == .file { configPath = p }
        }
        if let configPath {
            let configBytes = try readWholeFile(path: configPath, maxBytes: maxWordPieceFileBytes)
            config = try decodeJSON(WPConfig.self, from: configBytes, source: "'\(configPath)'")
            if config.doBasicTokenize == false {
                throw PEFTKitError.unsupported("'\(configPath)': do_basic_tokenize = false is not supported")
            }
        }
        let names = (unk: config.unkToken?.content ?? "[UNK]", sep: config.sepToken?.content ?? "[SEP]",
                     cls: config.clsToken?.content ?? "[CLS]", pad: config.padToken?.content ?? "[PAD]",
                     mask: config.maskToken?.content ?? "[MASK]")
        var index: [String: Int32] = [:]
        for (i, t) in vocab.enumerated() where index[t] == nil { index[t] = Int32(i) }
        guard let cls = index[names.cls], let sep = index[names.sep] else {
            throw PEFTKitError.format("\(src): the vocabulary lacks '\(names.cls)' or '\(names.sep)'")
        }
        var added: [(String, Int32, Bool)] = []
        for name in [names.pad, names.unk, names.cls, names.sep, names.mask] {
            if let id = index[name], !added.contains(where: { $0.1 == id }) { added.append((name, id, true)) }
        }
        let (single, pair) = bertTemplates(cls: cls, sep: sep)
        let normalizer = BertNormalizerOptions(cleanText: true, handleChineseChars: config.tokenizeChineseChars ?? true,
                                               stripAccents: config.stripAccents, lowercase: config.doLowerCase ?? true)
        try self.init(spec: WordPieceSpec(
            source: src, vocab: vocab, unkToken: names.unk, normalizer: normalizer, added: added, single: single, pair: pair,
            cls: names.cls, sep: names.sep, pad: names.pad, mask: names.mask,
            modelMaxLength: sensibleLength(config.modelMaxLength)))
    }
}
