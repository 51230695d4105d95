// BERT's WordPiece tokenizer, id for id as Hugging Face `tokenizers` encodes (all-MiniLM-L6-v2,
// bert-base-uncased and the other BERT-family vocabularies).
//
// Encoding: the text is cut at added tokens ([CLS], [SEP], [MASK]... matched literally, leftmost-longest), the
// rest is normalized and cut into words (BertNormalizer.swift), each word becomes the longest vocabulary
// token at its start, then the longest "##"-token at each later position; a word that cannot be covered, or
// that has more than `maxInputCharsPerWord` scalars, becomes [UNK]. The post-processor template then puts
// [CLS] a [SEP] (b [SEP]) around it, with token type 0 for a and 1 for b. Loading from tokenizer.json or
// vocab.txt + tokenizer_config.json is in WordPieceLoading.swift.

/// One step of a post-processor template: a special token's ids, or sequence A / B, with its token type.
enum WordPieceTemplateItem: Sendable, Equatable {
    case special([Int32], typeID: Int32)
    case sequence(second: Bool, typeID: Int32)
}

/// Everything a `WordPieceTokenizer` is built from, after a loader has read its files.
struct WordPieceSpec {
    var source: String
    /// The vocabulary in id order: token i has id i.
    var vocab: [String]
    var unkToken: String
    var continuingSubwordPrefix: String = "##"
    var maxInputCharsPerWord: Int = 100
    var normalizer: BertNormalizerOptions
    /// Tokens matched literally in the raw text (content, id, special).
    var added: [(String, Int32, Bool)]
    var single: [WordPieceTemplateItem]
    var pair: [WordPieceTemplateItem]
    /// Token names for the `clsID`... properties.
    var cls = "[CLS]", sep = "[SEP]", pad = "[PAD]", mask = "[MASK]"
    var modelMaxLength: Int? = nil
    var decoderCleanup = true
}

/// A byte trie over UTF-8 token spellings: longest match from a position, no allocation.
struct TokenTrie: Sendable {
    /// Child of the root for each first byte (-1: none), for the word-start root and the "##" root.
    private var rootChildren: [Int32]
    /// (node << 8 | byte) -> child node, below the first byte.
    private var edges: [UInt64: Int32] = [:]
    /// Token id ending at each node, or -1.
    private var ids: [Int32]

    init() {
        rootChildren = [Int32](repeating: -1, count: 512)
        ids = [-1, -1]  // node 0: word-start root, node 1: continuation root
    }

    mutating func insert(_ bytes: [UInt8], id: Int32, continuation: Bool) {
        guard let first = bytes.first else { return }
        let slot = (continuation ? 256 : 0) + Int(first)
        var node = rootChildren[slot]
        if node < 0 {
            node = Int32(ids.count)
            ids.append(-1)
            rootChildren[slot] = node
        }
        for b in bytes.dropFirst() {
            let key = UInt64(UInt32(node)) << 8 | UInt64(b)
            if let child = edges[key] {
                node = child
            } else {
                let child = Int32(ids.count)
                ids.append(-1)
                edges[key] = child
                node = child
            }
        }
        // A token spelled twice keeps its first id (loaders refuse duplicates anyway).
        if ids[Int(node)] < 0 { ids[Int(node)] = id }
    }

    /// The id and byte length of the longest token that `bytes[start...]` begins with, if any.
    @inline(__always)
    func longestMatch(_ bytes: UnsafeBufferPointer<UInt8>, from start: Int, continuation: Bool) -> (id: Int32, length: Int)? {
        guard start < bytes.count else { return nil }
        var node = rootChildren[(continuation ? 256 : 0) + Int(bytes[start])]
        var best: (Int32, Int)? = nil
        var i = start + 1
        while node >= 0 {
            let id = ids[Int(node)]
            if id >= 0 { best = (id, i - start) }
            guard i < bytes.count else { break }
            node = edges[UInt64(UInt32(node)) << 8 | UInt64(bytes[i])] ?? -1
            i += 1
        }
        return best
    }
}

/// BERT's WordPiece tokenizer (uncased or cased, with or without accent stripping).
///
/// Immutable after initialization and safe to share between threads.
///
/// ```swift
/// let tok = try WordPieceTokenizer(tokenizerJSON: "all-MiniLM-L6-v2/tokenizer.json")
/// let (ids, typeIDs) = tok.encode("How old are you?", pair: "I am six.", maxLength: 128)
/// let text = try tok.decode(ids)   // "how old are you? i am six."
/// ```
public final class WordPieceTokenizer: Sendable {
    /// Number of tokens (ids are 0..<vocabSize).
    public let vocabSize: Int
    public let unkID: Int32
    /// [CLS], [SEP], [PAD], [MASK]: nil when the vocabulary lacks them.
    public let clsID: Int32?
    public let sepID: Int32?
    public let padID: Int32?
    public let maskID: Int32?
    /// The normalizer settings in force.
    public let normalizer: BertNormalizerOptions
    /// Words with more scalars than this become [UNK] (BERT: 100).
    public let maxInputCharsPerWord: Int
    /// The length the files ask to truncate to (tokenizer.json `truncation.max_length`, or
    /// tokenizer_config.json `model_max_length`), if they name one. `encode` truncates only when asked.
    public let modelMaxLength: Int?

    let tokens: [String]
    let tokenToID: [String: Int32]
    let trie: TokenTrie
    let prefix: String
    /// Added tokens by first byte, longest first: (UTF-8, id).
    let added: [[([UInt8], Int32)]]
    let specialIDs: Set<Int32>
    let single: [WordPieceTemplateItem]
    let pair: [WordPieceTemplateItem]
    let decoderCleanup: Bool

    /// Largest accepted vocabulary.
    static let maxTokens = 1 << 22

    init(spec: WordPieceSpec) throws {
        let src = spec.source
        guard !spec.vocab.isEmpty else { throw PEFTKitError.format("\(src): the vocabulary is empty") }
        guard spec.vocab.count <= Self.maxTokens else {
            throw PEFTKitError.format("\(src): \(spec.vocab.count) tokens is more than the limit of \(Self.maxTokens)")
        }
        guard spec.maxInputCharsPerWord > 0 else {
            throw PEFTKitError.format("\(src): max_input_chars_per_word must be positive (is \(spec.maxInputCharsPerWord))")
        }
        var toID: [String: Int32] = [:]
        toID.reserveCapacity(spec.vocab.count)
        var trie = TokenTrie()
        let prefixBytes = Array(spec.continuingSubwordPrefix.utf8)
        for (i, token) in spec.vocab.enumerated() {
            guard !token.isEmpty else { throw PEFTKitError.format("\(src): token \(i) is empty") }
            if let old = toID[token] {
                throw PEFTKitError.format("\(src): token '\(token)' appears twice (ids \(old) and \(i))")
            }
            toID[token] = Int32(i)
            let bytes = Array(token.utf8)
            trie.insert(bytes, id: Int32(i), continuation: false)
            if !prefixBytes.isEmpty, bytes.count > prefixBytes.count, bytes.starts(with: prefixBytes) {
                trie.insert(Array(bytes[prefixBytes.count...]), id: Int32(i), continuation: true)
            }
        }
        guard let unk = toID[spec.unkToken] else {
            throw PEFTKitError.format("\(src): the unknown token '\(spec.unkToken)' is not in the vocabulary")
        }
        var addedTable = [[([UInt8], Int32)]](repeating: [], count: 256)
        var special = Set<Int32>()
        for (content, id, isSpecial) in spec.added {
            guard id >= 0, Int(id) < spec.vocab.count else {
                throw PEFTKitError.format("\(src): added token '\(content)' has id \(id), outside the \(spec.vocab.count) tokens")
            }
            guard spec.vocab[Int(id)] == content else {
                throw PEFTKitError.format("\(src): added token '\(content)' has id \(id), which is '\(spec.vocab[Int(id)])' in the vocabulary")
            }
            let bytes = Array(content.utf8)
            guard let first = bytes.first else { throw PEFTKitError.format("\(src): added token \(id) is empty") }
            addedTable[Int(first)].append((bytes, id))
            if isSpecial { special.insert(id) }
        }
        for i in 0..<256 { addedTable[i].sort { $0.0.count > $1.0.count } }
        for template in [spec.single, spec.pair] {
            for case .special(let ids, _) in template {
                for id in ids where id < 0 || Int(id) >= spec.vocab.count {
                    throw PEFTKitError.format("\(src): the post-processor uses token id \(id), outside the \(spec.vocab.count) tokens")
                }
            }
        }

        vocabSize = spec.vocab.count
        unkID = unk
        clsID = toID[spec.cls]
        sepID = toID[spec.sep]
        padID = toID[spec.pad]
        maskID = toID[spec.mask]
        normalizer = spec.normalizer
        maxInputCharsPerWord = spec.maxInputCharsPerWord
        modelMaxLength = spec.modelMaxLength
        tokens = spec.vocab
        tokenToID = toID
        self.trie = trie
        prefix = spec.continuingSubwordPrefix
        added = addedTable
        specialIDs = special
        single = spec.single
        pair = spec.pair
        decoderCleanup = spec.decoderCleanup
    }

    /// The id of `token` (exact vocabulary spelling, e.g. `"##ing"`), or nil.
    public func id(of token: String) -> Int32? { tokenToID[token] }

    /// The vocabulary spelling of `id`, or nil if no token has that id.
    public func token(of id: Int32) -> String? {
        guard id >= 0, Int(id) < tokens.count else { return nil }
        return tokens[Int(id)]
    }

    /// True for special tokens ([CLS], [SEP], [PAD], [UNK], [MASK]...).
    public func isSpecial(_ id: Int32) -> Bool { specialIDs.contains(id) }

    /// How many tokens `encode(addSpecialTokens: true)` adds around one text (`pair: false`) or two.
    public func specialTokenCount(pair isPair: Bool) -> Int {
        var n = 0
        for case .special(let ids, _) in (isPair ? pair : single) { n += ids.count }
        return n
    }

    // MARK: encoding

    /// WordPiece ids of `text` without special tokens around it (added tokens written in the text are
    /// still matched when `parseSpecial` is true).
    public func tokenize(_ text: String, parseSpecial: Bool = true) -> [Int32] {
        var out: [Int32] = []
        out.reserveCapacity(text.utf8.count / 3 + 4)
        let utf8 = Array(text.utf8)
        var wordBytes: [UInt8] = []
        wordBytes.reserveCapacity(256)
        utf8.withUnsafeBufferPointer { b in
            var segmentStart = 0
            var i = 0
            let n = b.count
            while parseSpecial && i < n {
                var matched: ([UInt8], Int32)? = nil
                for a in added[Int(b[i])] where a.0.count <= n - i {
                    var equal = true
                    for k in 1..<a.0.count where b[i + k] != a.0[k] { equal = false; break }
                    if equal { matched = a; break }
                }
                guard let a = matched else { i += 1; continue }
                encodeText(b, segmentStart..<i, into: &out, &wordBytes)
                out.append(a.1)
                i += a.0.count
                segmentStart = i
            }
            encodeText(b, segmentStart..<n, into: &out, &wordBytes)
        }
        return out
    }

    private func encodeText(_ b: UnsafeBufferPointer<UInt8>, _ range: Range<Int>, into out: inout [Int32],
                            _ wordBytes: inout [UInt8]) {
        guard !range.isEmpty else { return }
        let text = String(decoding: UnsafeBufferPointer(rebasing: b[range]), as: UTF8.self)
        bertNormalizeAndSplit(text[...], normalizer) { word in
            encodeWord(word, into: &out, &wordBytes)
        }
    }

    /// Greedy longest-match-first over one word.
    private func encodeWord(_ word: ArraySlice<Unicode.Scalar>, into out: inout [Int32], _ bytes: inout [UInt8]) {
        guard word.count <= maxInputCharsPerWord else { out.append(unkID); return }
        bytes.removeAll(keepingCapacity: true)
        for u in word { bytes.append(contentsOf: u.utf8) }
        let mark = out.count
        let ok = bytes.withUnsafeBufferPointer { p -> Bool in
            var start = 0
            while start < p.count {
                guard let m = trie.longestMatch(p, from: start, continuation: start > 0) else { return false }
                out.append(m.id)
                start += m.length
            }
            return true
        }
        if !ok {
            out.removeSubrange(mark...)
            out.append(unkID)
        }
    }

    /// Token ids and token type ids of `text` (and `pair`), as Hugging Face's `Tokenizer.encode` gives them.
    ///
    /// - Parameters:
    ///   - pair: a second text ("sentence B"): token type 1 in BERT's template.
    ///   - addSpecialTokens: put the post-processor's tokens around the text(s): `[CLS] a [SEP]` or
    ///     `[CLS] a [SEP] b [SEP]`.
    ///   - maxLength: truncate to this many ids in all, special tokens included, the way HF's
    ///     `longest_first` strategy does (the longer text loses tokens from its end first). A `maxLength`
    ///     smaller than the special tokens leaves only them. nil: no truncation.
    ///   - parseSpecial: match added tokens written in the text ("[SEP]"); when false they are plain text.
    public func encode(_ text: String, pair second: String? = nil, addSpecialTokens: Bool = true, maxLength: Int? = nil,
                       parseSpecial: Bool = true) -> (ids: [Int32], typeIDs: [Int32]) {
        var a = tokenize(text, parseSpecial: parseSpecial)
        var b = second.map { tokenize($0, parseSpecial: parseSpecial) }
        if let maxLength {
            let budget = max(0, maxLength - (addSpecialTokens ? specialTokenCount(pair: b != nil) : 0))
            truncateLongestFirst(&a, &b, budget)
        }
        var ids: [Int32] = []
        var types: [Int32] = []
        ids.reserveCapacity(a.count + (b?.count ?? 0) + 4)
        types.reserveCapacity(ids.capacity)
        for item in (b == nil ? single : pair) {
            switch item {
            case .special(let s, let t):
                guard addSpecialTokens else { continue }
                ids += s
                types += [Int32](repeating: t, count: s.count)
            case .sequence(let isSecond, let t):
                let seq = isSecond ? (b ?? []) : a
                ids += seq
                types += [Int32](repeating: t, count: seq.count)
            }
        }
        return (ids, types)
    }

    /// HF's `TruncationStrategy::LongestFirst` with no stride, truncating at the right.
    private func truncateLongestFirst(_ a: inout [Int32], _ b: inout [Int32]?, _ maxLength: Int) {
        guard var second = b else {
            if a.count > maxLength { a.removeSubrange(maxLength...) }
            return
        }
        defer { b = second }
        guard maxLength > 0 else { a = []; second = []; return }
        guard a.count + second.count > maxLength else { return }
        var n1 = a.count, n2 = second.count
        let swap = n1 > n2
        if swap { Swift.swap(&n1, &n2) }
        n2 = n1 > maxLength ? n1 : max(n1, maxLength - n1)
        if n1 + n2 > maxLength {
            n1 = maxLength / 2
            n2 = n1 + maxLength % 2
        }
        if swap { Swift.swap(&n1, &n2) }
        if a.count > n1 { a.removeSubrange(n1...) }
        if second.count > n2 { second.removeSubrange(n2...) }
    }

    // MARK: decoding

    /// The text of `ids` as HF's WordPiece decoder writes it: tokens joined by spaces, "##" pieces glued to
    /// the previous one, and (with `cleanup` in the file, BERT's default) no space before . ? ! ,
    /// Special tokens are skipped by default, as in HF's `decode` (the BPE `Tokenizer.decode` keeps them).
    ///
    /// Throws `invalidArgument` for an id outside the vocabulary.
    public func decode(_ ids: [Int32], skipSpecial: Bool = true) throws -> String {
        var out = ""
        var first = true
        for id in ids {
            guard let token = token(of: id) else {
                throw PEFTKitError.invalidArgument("token id \(id) is outside the vocabulary (0..<\(vocabSize))")
            }
            if skipSpecial && specialIDs.contains(id) { continue }
            var piece = token
            if !first {
                // Bytes, not Characters: "##" + a combining mark is not a Character-wise prefix match.
                if !prefix.isEmpty, piece.utf8.starts(with: prefix.utf8) {
                    piece = String(decoding: piece.utf8.dropFirst(prefix.utf8.count), as: UTF8.self)
                } else {
                    piece = " " + piece
                }
            }
            first = false
            out += decoderCleanup ? wordPieceCleanup(piece) : piece
        }
        return out
    }
}

/// HF's `cleanup` of the WordPiece decoder (and `clean_up_tokenization_spaces`), applied to one token.
func wordPieceCleanup(_ s: String) -> String {
    guard s.utf8.contains(0x20) else { return s }
    var t = Array(s.utf8)
    for (from, to) in wordPieceCleanups {
        t = replaceAll(t, from, to)
    }
    return String(decoding: t, as: UTF8.self)
}

private let wordPieceCleanups: [([UInt8], [UInt8])] = [
    (" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"), (" 'm", "'m"),
    (" do not", " don't"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re"),
].map { (Array($0.0.utf8), Array($0.1.utf8)) }

private func replaceAll(_ s: [UInt8], _ from: [UInt8], _ to: [UInt8]) -> [UInt8] {
    guard from.count <= s.count else { return s }
    var out: [UInt8] = []
    out.reserveCapacity(s.count)
    var i = 0
    while i < s.count {
        if i + from.count <= s.count && s[i..<(i + from.count)].elementsEqual(from) {
            out += to
            i += from.count
        } else {
            out.append(s[i])
            i += 1
        }
    }
    return out
}
