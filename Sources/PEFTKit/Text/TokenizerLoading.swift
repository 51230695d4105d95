// Loading a byte-level BPE tokenizer from Hugging Face `tokenizer.json`, from GPT-2's original
// `encoder.json` + `vocab.bpe`, or from GGUF metadata (`tokenizer.ggml.*`). Each loader reads and checks
// its input and builds a `TokenizerSpec`; `Tokenizer.init(spec:)` then checks the vocabulary as a whole.
// Settings PEFTKit does not implement are refused with `unsupported` rather than ignored.

/// GPT-2's pre-tokenizer regex, as Hugging Face writes it in tokenizer.json.
let gpt2RegexPattern = #"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"#
/// The Llama-3 pre-tokenizer regex.
let llama3RegexPattern = #"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"#
/// The Qwen2 pre-tokenizer regex (single digits).
let qwen2RegexPattern = #"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"#

/// Largest tokenizer file read (Gemma-sized tokenizer.json files are ~35 MB).
private let maxTokenizerFileBytes = 256 << 20

// MARK: tokenizer.json

private struct TJFile: Decodable {
    var addedTokens: [TJAddedToken]?
    var normalizer: TJComponent?
    var preTokenizer: TJComponent?
    var postProcessor: TJComponent?
    var decoder: TJComponent?
    var model: TJModel?

    enum CodingKeys: String, CodingKey {
        case addedTokens = "added_tokens", normalizer, preTokenizer = "pre_tokenizer"
        case postProcessor = "post_processor", decoder, model
    }
}

private struct TJAddedToken: Decodable {
    var id: Int
    var content: String
    var singleWord: Bool?
    var lstrip: Bool?
    var rstrip: Bool?
    var special: Bool?

    enum CodingKeys: String, CodingKey {
        case id, content, singleWord = "single_word", lstrip, rstrip, special
    }
}

/// A merge written as `"a b"` or as `["a", "b"]`.
private struct TJMerge: Decodable {
    var left: String
    var right: String

    init(from decoder: any Decoder) throws {
        let c = try decoder.singleValueContainer()
        if let s = try? c.decode(String.self) {
            let parts = s.split(separator: " ", omittingEmptySubsequences: false)
            guard parts.count == 2, !parts[0].isEmpty, !parts[1].isEmpty else {
                throw DecodingError.dataCorruptedError(in: c, debugDescription: "merge '\(s)' is not two tokens separated by one space")
            }
            left = String(parts[0])
            right = String(parts[1])
        } else {
            let pair = try c.decode([String].self)
            guard pair.count == 2 else {
                throw DecodingError.dataCorruptedError(in: c, debugDescription: "merge has \(pair.count) parts instead of 2")
            }
            left = pair[0]
            right = pair[1]
        }
    }
}

private struct TJModel: Decodable {
    var type: String?
    var vocab: [String: Int]?
    var merges: [TJMerge]?
    var dropout: Double?
    var continuingSubwordPrefix: String?
    var endOfWordSuffix: String?
    var ignoreMerges: Bool?
    var unkToken: String?
    var fuseUnk: Bool?
    var byteFallback: Bool?

    enum CodingKeys: String, CodingKey {
        case type, vocab, merges, dropout, continuingSubwordPrefix = "continuing_subword_prefix"
        case endOfWordSuffix = "end_of_word_suffix", ignoreMerges = "ignore_merges", unkToken = "unk_token"
        case fuseUnk = "fuse_unk", byteFallback = "byte_fallback"
    }
}

private struct TJPattern: Decodable {
    var regex: String?
    var string: String?
    enum CodingKeys: String, CodingKey { case regex = "Regex", string = "String" }
}

private struct TJTemplateItem: Decodable {
    struct Piece: Decodable { var id: String }
    var specialToken: Piece?
    var sequence: Piece?
    enum CodingKeys: String, CodingKey { case specialToken = "SpecialToken", sequence = "Sequence" }
}

private struct TJSpecialTokens: Decodable {
    var ids: [Int]
}

/// Any normalizer, pre-tokenizer, post-processor or decoder: its type and the fields PEFTKit reads.
private struct TJComponent: Decodable {
    var type: String
    var addPrefixSpace: Bool?
    var useRegex: Bool?
    var individualDigits: Bool?
    var pattern: TJPattern?
    var content: String?
    var behavior: String?
    var invert: Bool?
    var children: [TJComponent]?
    var single: [TJTemplateItem]?
    var specialTokens: [String: TJSpecialTokens]?

    enum CodingKeys: String, CodingKey {
        case type, addPrefixSpace = "add_prefix_space", useRegex = "use_regex", individualDigits = "individual_digits"
        case pattern, content, behavior, invert, single, specialTokens = "special_tokens"
        case pretokenizers, normalizers, processors, decoders
    }

    init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        type = try c.decode(String.self, forKey: .type)
        addPrefixSpace = try c.decodeIfPresent(Bool.self, forKey: .addPrefixSpace)
        useRegex = try c.decodeIfPresent(Bool.self, forKey: .useRegex)
        individualDigits = try c.decodeIfPresent(Bool.self, forKey: .individualDigits)
        pattern = try c.decodeIfPresent(TJPattern.self, forKey: .pattern)
        content = try c.decodeIfPresent(String.self, forKey: .content)
        behavior = try c.decodeIfPresent(String.self, forKey: .behavior)
        invert = try c.decodeIfPresent(Bool.self, forKey: .invert)
        single = try c.decodeIfPresent([TJTemplateItem].self, forKey: .single)
        specialTokens = try c.decodeIfPresent([String: TJSpecialTokens].self, forKey: .specialTokens)
        for key in [CodingKeys.pretokenizers, .normalizers, .processors, .decoders] {
            if let list = try c.decodeIfPresent([TJComponent].self, forKey: key) { children = list }
        }
    }
}

/// `bos_token` / `eos_token` in tokenizer_config.json: a string or an object with `content`.
private struct TJConfigToken: Decodable {
    var content: String?
    init(from decoder: any Decoder) throws {
        let c = try decoder.singleValueContainer()
        if c.decodeNil() { content = nil; return }
        if let s = try? c.decode(String.self) { content = s; return }
        struct Object: Decodable { var content: String }
        content = try c.decode(Object.self).content
    }
}

private struct TJConfig: Decodable {
    var bosToken: TJConfigToken?
    var eosToken: TJConfigToken?
    enum CodingKeys: String, CodingKey { case bosToken = "bos_token", eosToken = "eos_token" }
}

private func readPreTokenizerSteps(_ c: TJComponent?, _ src: String) throws -> [PreTokenizeStep] {
    guard let c else {
        throw PEFTKitError.unsupported("\(src): no pre_tokenizer; PEFTKit needs a ByteLevel pre-tokenizer (byte-level BPE)")
    }
    var steps: [PreTokenizeStep] = []
    var byteLevelCount = 0
    var endsWithByteLevel = false
    func visit(_ c: TJComponent) throws {
        endsWithByteLevel = false
        switch c.type {
        case "Sequence":
            for child in c.children ?? [] { try visit(child) }
        case "ByteLevel":
            if c.addPrefixSpace ?? true { steps.append(.prefixSpace) }
            if c.useRegex ?? true { steps.append(.gpt2Regex) }
            byteLevelCount += 1
            endsWithByteLevel = true
        case "Digits":
            steps.append(.digits(individual: c.individualDigits ?? false))
        case "Split":
            guard let regex = c.pattern?.regex else {
                throw PEFTKitError.unsupported("\(src): Split pre-tokenizer with a string pattern is not supported")
            }
            guard (c.behavior ?? "Isolated") == "Isolated", !(c.invert ?? false) else {
                throw PEFTKitError.unsupported("\(src): Split pre-tokenizer with behavior '\(c.behavior ?? "")' / invert \(c.invert ?? false) is not supported (only Isolated)")
            }
            switch regex {
            case gpt2RegexPattern: steps.append(.gpt2Regex)
            case llama3RegexPattern: steps.append(.llama3Regex(maxDigits: 3))
            case qwen2RegexPattern: steps.append(.llama3Regex(maxDigits: 1))
            default:
                throw PEFTKitError.unsupported("\(src): Split pre-tokenizer regex \(jsonQuoted(regex)) is not one PEFTKit implements (GPT-2, Llama-3, Qwen2)")
            }
        default:
            throw PEFTKitError.unsupported("\(src): pre-tokenizer '\(c.type)' is not supported (ByteLevel, Split, Digits, Sequence)")
        }
    }
    try visit(c)
    guard byteLevelCount == 1, endsWithByteLevel else {
        throw PEFTKitError.unsupported("\(src): the pre-tokenizer must end with exactly one ByteLevel step (byte-level BPE)")
    }
    return steps
}

private func checkNormalizer(_ c: TJComponent?, _ src: String) throws {
    guard let c else { return }
    if c.type == "Sequence" && (c.children ?? []).isEmpty { return }
    throw PEFTKitError.unsupported("\(src): normalizer '\(c.type)' is not supported")
}

private func checkDecoder(_ c: TJComponent?, _ src: String) throws {
    guard let c else { throw PEFTKitError.unsupported("\(src): no decoder; PEFTKit needs a ByteLevel decoder") }
    let parts = c.type == "Sequence" ? (c.children ?? []) : [c]
    var byteLevel = 0
    for p in parts {
        switch p.type {
        case "ByteLevel": byteLevel += 1
        // No-ops on a byte-level vocabulary (transformers writes them when converting GGUF vocabularies).
        case "ByteFallback", "Fuse": break
        case "Replace" where p.pattern?.string == "\u{2581}" && p.content == " ": break
        default: throw PEFTKitError.unsupported("\(src): decoder '\(p.type)' is not supported (ByteLevel)")
        }
    }
    guard byteLevel == 1 else { throw PEFTKitError.unsupported("\(src): the decoder must be ByteLevel") }
}

/// Ids put before and after the text by the post-processor's single-sequence template.
private func postProcessorIDs(_ c: TJComponent?, _ src: String) throws -> (prefix: [Int32], suffix: [Int32]) {
    guard let c else { return ([], []) }
    switch c.type {
    case "ByteLevel":
        return ([], [])
    case "Sequence":
        var result: (prefix: [Int32], suffix: [Int32]) = ([], [])
        for child in c.children ?? [] {
            let r = try postProcessorIDs(child, src)
            result.prefix += r.prefix
            result.suffix = r.suffix + result.suffix
        }
        return result
    case "TemplateProcessing":
        guard let single = c.single else { throw PEFTKitError.format("\(src): TemplateProcessing has no 'single' template") }
        var prefix: [Int32] = [], suffix: [Int32] = []
        var seenSequence = false
        for item in single {
            if item.sequence != nil {
                guard !seenSequence else { throw PEFTKitError.format("\(src): TemplateProcessing 'single' has two sequences") }
                seenSequence = true
            } else if let name = item.specialToken?.id {
                guard let entry = c.specialTokens?[name] else {
                    throw PEFTKitError.format("\(src): TemplateProcessing uses special token '\(name)' that it does not define")
                }
                let ids = try entry.ids.map { id -> Int32 in
                    guard id >= 0, id < Int(Int32.max) else { throw PEFTKitError.format("\(src): special token id \(id) is out of range") }
                    return Int32(id)
                }
                if seenSequence { suffix += ids } else { prefix += ids }
            } else {
                throw PEFTKitError.format("\(src): TemplateProcessing item is neither SpecialToken nor Sequence")
            }
        }
        return (prefix, suffix)
    default:
        throw PEFTKitError.unsupported("\(src): post-processor '\(c.type)' is not supported (ByteLevel, TemplateProcessing)")
    }
}

private func tokenID(_ value: Int, _ what: String, _ src: String) throws -> Int32 {
    guard value >= 0, value < (1 << 24) else {
        throw PEFTKitError.format("\(src): \(what) has id \(value), outside 0..<\(1 << 24)")
    }
    return Int32(value)
}

/// Directory part of a path ("." if none).
private func directoryOf(_ path: String) -> String {
    guard let slash = path.lastIndex(of: "/") else { return "." }
    let dir = String(path[..<slash])
    return dir.isEmpty ? "/" : dir
}

extension Tokenizer {
    /// Loads a Hugging Face `tokenizer.json` with a byte-level BPE model (GPT-2, SmolLM2, Llama-3, Qwen2 style).
    ///
    /// BOS/EOS come from a `tokenizer_config.json` next to the file when there is one; otherwise BOS is the
    /// first token the post-processor puts in front of a text and EOS is `<|endoftext|>`, `<|end_of_text|>`
    /// or `</s>` if such a special token exists.
    ///
    /// Malformed files throw `format`; components PEFTKit does not implement throw `unsupported`.
    public convenience init(tokenizerJSON path: String) throws {
        let src = "'\(path)'"
        let bytes = try readWholeFile(path: path, maxBytes: maxTokenizerFileBytes)
        let file = try decodeJSON(TJFile.self, from: bytes, source: src)
        guard let model = file.model else { throw PEFTKitError.format("\(src) has no 'model'") }
        guard let type = model.type else { throw PEFTKitError.format("\(src): 'model' has no 'type'") }
        guard type == "BPE" else {
            throw PEFTKitError.unsupported("\(src): model type '\(type)' is not supported (byte-level BPE only)")
        }
        guard let vocabDict = model.vocab else { throw PEFTKitError.format("\(src): 'model' has no 'vocab'") }
        guard let mergeList = model.merges else { throw PEFTKitError.format("\(src): 'model' has no 'merges'") }
        if let d = model.dropout, d != 0 { throw PEFTKitError.unsupported("\(src): BPE dropout \(d) is not supported") }
        if let p = model.continuingSubwordPrefix, !p.isEmpty {
            throw PEFTKitError.unsupported("\(src): continuing_subword_prefix is not supported")
        }
        if let s = model.endOfWordSuffix, !s.isEmpty {
            throw PEFTKitError.unsupported("\(src): end_of_word_suffix is not supported")
        }
        try checkNormalizer(file.normalizer, src)
        try checkDecoder(file.decoder, src)
        let steps = try readPreTokenizerSteps(file.preTokenizer, src)
        let (prefix, suffix) = try postProcessorIDs(file.postProcessor, src)

        var vocab: [(String, Int32)] = []
        vocab.reserveCapacity(vocabDict.count)
        for (token, id) in vocabDict { vocab.append((token, try tokenID(id, "token '\(token)'", src))) }
        var added: [AddedTokenEntry] = []
        for a in file.addedTokens ?? [] {
            if a.singleWord ?? false {
                throw PEFTKitError.unsupported("\(src): added token '\(a.content)' has single_word = true, which is not supported")
            }
            added.append(AddedTokenEntry(content: a.content, bytes: Array(a.content.utf8),
                                         id: try tokenID(a.id, "added token '\(a.content)'", src),
                                         special: a.special ?? false, lstrip: a.lstrip ?? false, rstrip: a.rstrip ?? false))
        }

        // BOS / EOS.
        var lookup: [String: Int32] = [:]
        for (t, id) in vocab { lookup[t] = id }
        for a in added { lookup[a.content] = a.id }
        var bos: Int32? = prefix.first
        var eos: Int32? = nil
        for name in ["<|endoftext|>", "<|end_of_text|>", "</s>"] {
            if let a = added.first(where: { $0.content == name && $0.special }) { eos = a.id; break }
        }
        let configPath = directoryOf(path) + "/tokenizer_config.json"
        if pathKind(configPath) == .file {
            let configBytes = try readWholeFile(path: configPath, maxBytes: maxTokenizerFileBytes)
            let config = try decodeJSON(TJConfig.self, from: configBytes, source: "'\(configPath)'")
            if let name = config.bosToken?.content {
                guard let id = lookup[name] else { throw PEFTKitError.format("'\(configPath)': bos_token '\(name)' is not in the vocabulary") }
                bos = id
            }
            if let name = config.eosToken?.content {
                guard let id = lookup[name] else { throw PEFTKitError.format("'\(configPath)': eos_token '\(name)' is not in the vocabulary") }
                eos = id
            }
        }

        try self.init(spec: TokenizerSpec(
            source: src, vocab: vocab, merges: mergeList.map { ($0.left, $0.right) }, added: added, steps: steps,
            ignoreMerges: model.ignoreMerges ?? false, unkToken: model.unkToken, fuseUnk: model.fuseUnk ?? false,
            byteFallback: model.byteFallback ?? false, bosID: bos, eosID: eos, prefixIDs: prefix, suffixIDs: suffix))
    }

    /// Loads GPT-2's original files: `encoder.json` (token -> id) and `vocab.bpe` (merges, one `a b` per line
    /// after a `#version` line). `<|endoftext|>` is the special token and both BOS and EOS.
    public convenience init(gpt2EncoderJSON: String, vocabBPE: String) throws {
        let src = "'\(gpt2EncoderJSON)'"
        let encoder = try decodeJSON([String: Int].self,
                                     from: try readWholeFile(path: gpt2EncoderJSON, maxBytes: maxTokenizerFileBytes),
                                     source: src)
        let mergeBytes = try readWholeFile(path: vocabBPE, maxBytes: maxTokenizerFileBytes)
        guard let mergeText = String(validating: mergeBytes, as: UTF8.self) else {
            throw PEFTKitError.format("'\(vocabBPE)' is not valid UTF-8")
        }
        var merges: [(String, String)] = []
        for (lineNo, line) in mergeText.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let l = line.hasSuffix("\r") ? line.dropLast() : line
            if l.isEmpty || l.hasPrefix("#version") { continue }
            let parts = l.split(separator: " ", omittingEmptySubsequences: false)
            guard parts.count == 2, !parts[0].isEmpty, !parts[1].isEmpty else {
                throw PEFTKitError.format("'\(vocabBPE)' line \(lineNo + 1): expected two tokens separated by one space")
            }
            merges.append((String(parts[0]), String(parts[1])))
        }
        var vocab: [(String, Int32)] = []
        vocab.reserveCapacity(encoder.count)
        for (token, id) in encoder { vocab.append((token, try tokenID(id, "token '\(token)'", src))) }
        guard let eot = encoder["<|endoftext|>"] else {
            throw PEFTKitError.format("\(src) has no '<|endoftext|>' token")
        }
        let eotID = try tokenID(eot, "<|endoftext|>", src)
        let added = [AddedTokenEntry(content: "<|endoftext|>", bytes: Array("<|endoftext|>".utf8), id: eotID,
                                     special: true, lstrip: false, rstrip: false)]
        try self.init(spec: TokenizerSpec(
            source: src, vocab: vocab, merges: merges, added: added, steps: [.gpt2Regex], ignoreMerges: false,
            bosID: eotID, eosID: eotID, prefixIDs: [], suffixIDs: []))
    }

    /// Builds a tokenizer from GGUF metadata of a byte-level BPE model (`tokenizer.ggml.model` = "gpt2").
    ///
    /// - Parameters:
    ///   - ggufTokens: `tokenizer.ggml.tokens` (byte-level spelling; the index is the id).
    ///   - merges: `tokenizer.ggml.merges`, each `"a b"`.
    ///   - tokenTypes: `tokenizer.ggml.token_type`: 3 (control) and 2 (unknown) become special tokens matched
    ///     in text, 4 (user-defined) non-special added tokens; nil means all normal.
    ///   - bosID, eosID: `tokenizer.ggml.bos_token_id` / `eos_token_id`.
    ///   - preTokenizer: `tokenizer.ggml.pre`, which selects the pre-tokenizer regex the way llama.cpp does:
    ///     "gpt-2" family: GPT-2's regex; "smollm", "starcoder", "refact", "command-r", "codeshell",
    ///     "exaone", "minerva-7b": single digits, then GPT-2's regex; "llama-bpe" / "llama3" / "llama-v3" /
    ///     "falcon3" / "pixtral": the Llama-3 regex with whole-word vocabulary lookup (ignore_merges);
    ///     "dbrx", "smaug-bpe": the Llama-3 regex; "qwen2", "deepseek-r1-qwen", "megrez", "stablelm2":
    ///     the Qwen2 regex.
    ///   - addBOS: `tokenizer.ggml.add_bos_token`; nil takes the default of the pre-tokenizer family
    ///     (true for the Llama-3 family, false otherwise). `encode(addSpecial: true)` then puts BOS first.
    ///   - addEOS: `tokenizer.ggml.add_eos_token`; when true `encode(addSpecial: true)` puts EOS last.
    public convenience init(ggufTokens: [String], merges: [String], tokenTypes: [Int32]?, bosID: Int32?, eosID: Int32?,
                            preTokenizer: String?, addBOS: Bool? = nil, addEOS: Bool = false) throws {
        let src = "GGUF tokenizer metadata"
        guard ggufTokens.count <= Tokenizer.maxEntries, merges.count <= Tokenizer.maxEntries else {
            throw PEFTKitError.format("\(src): \(ggufTokens.count) tokens / \(merges.count) merges is more than the limit of \(Tokenizer.maxEntries)")
        }
        if let types = tokenTypes, types.count != ggufTokens.count {
            throw PEFTKitError.format("\(src): tokenizer.ggml.token_type has \(types.count) entries for \(ggufTokens.count) tokens")
        }
        guard let pre = preTokenizer, !pre.isEmpty else {
            throw PEFTKitError.unsupported("\(src): tokenizer.ggml.pre is missing; the pre-tokenizer cannot be chosen")
        }
        let steps: [PreTokenizeStep]
        var ignoreMerges = false
        var defaultAddBOS = false
        switch pre {
        case "gpt-2", "phi-2", "mpt", "olmo", "jais":
            steps = [.gpt2Regex]
        case "smollm", "starcoder", "refact", "command-r", "codeshell", "exaone", "minerva-7b":
            steps = [.digits(individual: true), .gpt2Regex]
        case "llama3", "llama-v3", "llama-bpe", "falcon3", "pixtral":
            steps = [.llama3Regex(maxDigits: 3)]
            ignoreMerges = true
            defaultAddBOS = true
        case "dbrx", "smaug-bpe":
            steps = [.llama3Regex(maxDigits: 3)]
        case "qwen2", "deepseek-r1-qwen", "megrez", "stablelm2":
            steps = [.llama3Regex(maxDigits: 1)]
        default:
            throw PEFTKitError.unsupported("\(src): pre-tokenizer '\(pre)' (tokenizer.ggml.pre) is not supported")
        }
        for id in [bosID, eosID].compactMap({ $0 }) where id < 0 || Int(id) >= ggufTokens.count {
            throw PEFTKitError.format("\(src): special token id \(id) is outside the \(ggufTokens.count) tokens")
        }

        var vocab: [(String, Int32)] = []
        vocab.reserveCapacity(ggufTokens.count)
        var added: [AddedTokenEntry] = []
        for (i, token) in ggufTokens.enumerated() {
            let id = Int32(i)
            let type = tokenTypes?[i] ?? 1
            switch type {
            case 0, 1, 5, 6:
                vocab.append((token, id))
            case 2, 3, 4:
                vocab.append((token, id))
                guard !token.isEmpty else { throw PEFTKitError.format("\(src): token \(i) of type \(type) is empty") }
                added.append(AddedTokenEntry(content: token, bytes: Array(token.utf8), id: id, special: type != 4,
                                             lstrip: false, rstrip: false))
            default:
                throw PEFTKitError.format("\(src): token \(i) has unknown token type \(type)")
            }
        }
        var pairs: [(String, String)] = []
        pairs.reserveCapacity(merges.count)
        for (rank, m) in merges.enumerated() {
            // Split at the first space after the first character, as llama.cpp does.
            let scalars = m.unicodeScalars
            guard !scalars.isEmpty, let space = scalars[scalars.index(after: scalars.startIndex)...].firstIndex(of: " ") else {
                throw PEFTKitError.format("\(src): merge \(rank) '\(m)' is not two tokens separated by a space")
            }
            let left = String(m.unicodeScalars[..<space])
            let right = String(m.unicodeScalars[m.unicodeScalars.index(after: space)...])
            guard !right.isEmpty else { throw PEFTKitError.format("\(src): merge \(rank) '\(m)' has an empty second token") }
            pairs.append((left, right))
        }
        let bos = (addBOS ?? defaultAddBOS) ? bosID : nil
        if (addBOS ?? defaultAddBOS) && bosID == nil {
            throw PEFTKitError.format("\(src): add_bos_token is set but there is no bos_token_id")
        }
        if addEOS && eosID == nil {
            throw PEFTKitError.format("\(src): add_eos_token is set but there is no eos_token_id")
        }
        try self.init(spec: TokenizerSpec(
            source: src, vocab: vocab, merges: pairs, added: added, steps: steps, ignoreMerges: ignoreMerges,
            bosID: bosID, eosID: eosID, prefixIDs: bos.map { [$0] } ?? [], suffixIDs: addEOS ? eosID.map { [$0] } ?? [] : []))
    }

    /// Builds the tokenizer described by a GGUF file's `tokenizer.ggml.*` metadata: `tokens`, `merges`,
    /// `token_type`, `bos_token_id`, `eos_token_id`, `pre`, `add_bos_token`, `add_eos_token` (see
    /// `init(ggufTokens:merges:tokenTypes:bosID:eosID:preTokenizer:addBOS:addEOS:)`).
    ///
    /// Throws `notFound` when the file has no tokenizer, `unsupported` when `tokenizer.ggml.model` is not
    /// "gpt2" (byte-level BPE; SentencePiece "llama" vocabularies are not implemented), `format` for
    /// malformed values.
    ///
    /// ```swift
    /// let tok = try Tokenizer(gguf: GGUFFile(path: "SmolLM2-135M-Instruct.Q4_1.gguf"))
    /// ```
    public convenience init(gguf file: GGUFFile) throws {
        let src = "GGUF file '\(file.path)'"
        guard let model = try file.string("tokenizer.ggml.model") else {
            throw PEFTKitError.notFound("\(src) has no tokenizer (no 'tokenizer.ggml.model')")
        }
        guard model == "gpt2" else {
            throw PEFTKitError.unsupported("\(src): tokenizer model '\(model)' is not supported (only 'gpt2', byte-level BPE)")
        }
        func strings(_ key: String) throws -> [String]? {
            guard let a = try file.array(key) else { return nil }
            guard let s = a.strings else { throw PEFTKitError.format("\(src): '\(key)' is not an array of strings") }
            return s
        }
        func id(_ key: String) throws -> Int32? {
            guard let v = try file.int(key) else { return nil }
            guard v >= 0, v < 1 << 24 else { throw PEFTKitError.format("\(src): '\(key)' = \(v) is not a token id") }
            return Int32(v)
        }
        guard let tokens = try strings("tokenizer.ggml.tokens") else {
            throw PEFTKitError.format("\(src) has no 'tokenizer.ggml.tokens'")
        }
        var types: [Int32]? = nil
        if let a = try file.array("tokenizer.ggml.token_type") {
            guard let ints = a.ints, ints.allSatisfy({ $0 >= Int(Int32.min) && $0 <= Int(Int32.max) }) else {
                throw PEFTKitError.format("\(src): 'tokenizer.ggml.token_type' is not an array of 32-bit integers")
            }
            types = ints.map { Int32($0) }
        }
        try self.init(ggufTokens: tokens, merges: try strings("tokenizer.ggml.merges") ?? [], tokenTypes: types,
                      bosID: try id("tokenizer.ggml.bos_token_id"), eosID: try id("tokenizer.ggml.eos_token_id"),
                      preTokenizer: try file.string("tokenizer.ggml.pre"), addBOS: try file.bool("tokenizer.ggml.add_bos_token"),
                      addEOS: try file.bool("tokenizer.ggml.add_eos_token") ?? false)
    }
}
