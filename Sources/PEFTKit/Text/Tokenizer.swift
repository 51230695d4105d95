// PEFTKit's byte-level BPE tokenizer (GPT-2, SmolLM2, Llama-3 / Qwen2 style vocabularies).
//
// Encoding: the text is cut at added tokens (special tokens such as `<|im_start|>`), the rest is cut into
// words by the model's pre-tokenizer (TokenizerPreTokenize.swift), each word's UTF-8 bytes are merged by
// BPE rank (TokenizerBPE.swift). Decoding: each id's bytes are concatenated and read as UTF-8, with invalid
// sequences replaced by U+FFFD. Loading from tokenizer.json, GPT-2's encoder.json + vocab.bpe and GGUF
// metadata is in TokenizerLoading.swift.

/// A token matched literally in the text before pre-tokenization.
struct AddedTokenEntry: Sendable {
    var content: String
    var bytes: [UInt8]
    var id: Int32
    var special: Bool
    var lstrip: Bool
    var rstrip: Bool
}

/// Everything a `Tokenizer` is built from, after a loader has read and checked its files.
struct TokenizerSpec {
    /// Names the source in error messages.
    var source: String
    /// (token in byte-level spelling, id) of the BPE vocabulary.
    var vocab: [(String, Int32)]
    /// Merge pairs in rank order (byte-level spelling).
    var merges: [(String, String)]
    var added: [AddedTokenEntry]
    var steps: [PreTokenizeStep]
    var ignoreMerges: Bool
    /// Hugging Face BPE options for bytes that have no token (absent from most byte-level vocabularies).
    var unkToken: String? = nil
    var fuseUnk = false
    var byteFallback = false
    var bosID: Int32?
    var eosID: Int32?
    /// Ids put before / after the text when `addSpecial` is true.
    var prefixIDs: [Int32]
    var suffixIDs: [Int32]
}

/// A byte-level BPE tokenizer: GPT-2's and the families that reuse its scheme (SmolLM2, Llama-3, Qwen2).
///
/// Immutable after initialization and safe to share between threads.
///
/// ```swift
/// let tok = try Tokenizer(tokenizerJSON: "model/tokenizer.json")
/// let ids = tok.encode("<|im_start|>user\nHello<|im_end|>\n")
/// let text = try tok.decode(ids)
/// ```
public final class Tokenizer: Sendable {
    /// One past the largest token id.
    public let vocabSize: Int
    /// Beginning-of-sequence token, if the model names one.
    public let bosID: Int32?
    /// End-of-sequence token, if the model names one.
    public let eosID: Int32?
    /// The pre-tokenizer steps in order, for diagnostics (e.g. `["digits(individual)", "gpt2-regex"]`).
    public let preTokenizerSteps: [String]
    /// The special token that closes a chat turn, if the vocabulary has one: `<|im_end|>` (ChatML),
    /// `<|eot_id|>` (Llama-3) or `<end_of_turn>` (Gemma), looked up in that order. Generation of a chat
    /// reply should stop on it as well as on `eosID`.
    public let endOfTurnID: Int32?

    /// Whether `encode(_:addSpecial: true)` puts `bosID` in front of the text (GGUF `add_bos_token`, or a
    /// tokenizer.json post-processor that adds it). Hosts that build prompts themselves should do the same.
    public var addsBOS: Bool { bosID != nil && prefixIDs.first == bosID }

    let steps: [PreTokenizeStep]
    let bpe: BytePairEncoder
    let tokenToID: [String: Int32]
    let idToToken: [String?]
    /// Bytes of token i are `tokenBytes[tokenOffsets[i] ..< tokenOffsets[i + 1]]`.
    let tokenBytes: [UInt8]
    let tokenOffsets: [Int32]
    let specialIDs: Set<Int32>
    let prefixIDs: [Int32]
    let suffixIDs: [Int32]
    /// Added tokens by first byte, longest first, for the two parse modes.
    let addedAll: [[AddedTokenEntry]]
    let addedNonSpecial: [[AddedTokenEntry]]

    /// Largest accepted vocabulary (tokens or merges).
    static let maxEntries = 1 << 22

    init(spec: TokenizerSpec) throws {
        let src = spec.source
        guard spec.vocab.count <= Self.maxEntries, spec.merges.count <= Self.maxEntries,
              spec.added.count <= Self.maxEntries else {
            throw PEFTKitError.format("\(src): \(spec.vocab.count) tokens / \(spec.merges.count) merges / \(spec.added.count) added tokens is more than the limit of \(Self.maxEntries)")
        }
        var maxID: Int32 = -1
        for (_, id) in spec.vocab { maxID = max(maxID, id) }
        for a in spec.added { maxID = max(maxID, a.id) }
        for (_, id) in spec.vocab where id < 0 {
            throw PEFTKitError.format("\(src): negative token id \(id)")
        }
        for a in spec.added where a.id < 0 {
            throw PEFTKitError.format("\(src): added token '\(a.content)' has negative id \(a.id)")
        }
        let total = spec.vocab.count + spec.added.count
        guard Int(maxID) < 2 * total + 1024 else {
            throw PEFTKitError.format("\(src): token id \(maxID) is far beyond the \(total) tokens defined (ids must be dense)")
        }
        let size = Int(maxID) + 1

        // Id <-> token tables.
        var toID: [String: Int32] = [:]
        toID.reserveCapacity(total)
        var toToken = [String?](repeating: nil, count: size)
        for (token, id) in spec.vocab {
            if let other = toToken[Int(id)], other != token {
                throw PEFTKitError.format("\(src): id \(id) is given to both '\(other)' and '\(token)'")
            }
            if let old = toID[token], old != id {
                throw PEFTKitError.format("\(src): token '\(token)' appears with ids \(old) and \(id)")
            }
            toToken[Int(id)] = token
            toID[token] = id
        }
        var special = Set<Int32>()
        for a in spec.added {
            guard !a.bytes.isEmpty else { throw PEFTKitError.format("\(src): added token \(a.id) is empty") }
            if let other = toToken[Int(a.id)], other != a.content {
                throw PEFTKitError.format("\(src): added token '\(a.content)' has id \(a.id), which belongs to '\(other)'")
            }
            toToken[Int(a.id)] = a.content
            if toID[a.content] == nil { toID[a.content] = a.id }
            if a.special { special.insert(a.id) }
        }

        // Bytes of every id: byte-level spelling decoded, or the UTF-8 of the token when it is not spelled in
        // the byte-level alphabet (added tokens such as "<|im_start|>" are both).
        var bytes: [UInt8] = []
        var offsets: [Int32] = [0]
        offsets.reserveCapacity(size + 1)
        let addedIDs = Set(spec.added.map(\.id))
        for id in 0..<size {
            if let token = toToken[id] {
                bytes.append(contentsOf: byteLevelBytes(of: token) ?? Array(token.utf8))
            }
            guard bytes.count < Int(Int32.max) else { throw PEFTKitError.format("\(src): vocabulary text is too large") }
            offsets.append(Int32(bytes.count))
        }

        // Byte tokens. Some byte-level vocabularies lack tokens for bytes that never occur in their training
        // text (SmolLM2 has none for 0x04, 0xC0, 0xF5...); printable ASCII must be there.
        var byteIDs = [Int32](repeating: -1, count: 256)
        var byteFallbacks = [[Int32]](repeating: [], count: 256)
        for b in 0..<256 {
            let s = String(Character(byteLevelChars[b]))
            if let id = toID[s] {
                byteIDs[b] = id
                continue
            }
            guard !(0x21...0x7E).contains(b) else {
                throw PEFTKitError.format("\(src): the vocabulary has no token for '\(s)'; not a byte-level BPE vocabulary")
            }
            if spec.byteFallback {
                let hex = s.utf8.map { b -> String in
                    let h = String(b, radix: 16, uppercase: true)
                    return "<0x" + (h.count < 2 ? "0" : "") + h + ">"
                }
                let ids = hex.compactMap { toID[$0] }
                if ids.count == hex.count { byteFallbacks[b] = ids }
            }
        }
        let unkID = spec.unkToken.flatMap { toID[$0] }
        var merges: [UInt64: UInt64] = [:]
        merges.reserveCapacity(spec.merges.count)
        for (rank, (a, b)) in spec.merges.enumerated() {
            guard let ia = toID[a], let ib = toID[b] else {
                throw PEFTKitError.format("\(src): merge \(rank) ('\(a)' '\(b)') uses a token that is not in the vocabulary")
            }
            guard let merged = toID[a + b] else {
                throw PEFTKitError.format("\(src): merge \(rank) ('\(a)' '\(b)') makes '\(a + b)', which is not in the vocabulary")
            }
            // A repeated pair takes its later rank.
            merges[BytePairEncoder.key(ia, ib)] = UInt64(rank) << 32 | UInt64(UInt32(bitPattern: merged))
        }
        var wholeWords: [[UInt8]: Int32]? = nil
        if spec.ignoreMerges {
            var w: [[UInt8]: Int32] = [:]
            w.reserveCapacity(spec.vocab.count)
            for (token, id) in spec.vocab where !addedIDs.contains(id) {
                if let raw = byteLevelBytes(of: token) { w[raw] = id }
            }
            wholeWords = w
        }

        for id in spec.prefixIDs + spec.suffixIDs + [spec.bosID, spec.eosID].compactMap({ $0 }) {
            guard id >= 0, Int(id) < size, toToken[Int(id)] != nil else {
                throw PEFTKitError.format("\(src): special token id \(id) is not in the vocabulary")
            }
        }

        var all = [[AddedTokenEntry]](repeating: [], count: 256)
        var nonSpecial = [[AddedTokenEntry]](repeating: [], count: 256)
        for a in spec.added.sorted(by: { $0.bytes.count > $1.bytes.count }) {
            all[Int(a.bytes[0])].append(a)
            if !a.special { nonSpecial[Int(a.bytes[0])].append(a) }
        }

        vocabSize = size
        endOfTurnID = Self.endOfTurnNames.lazy.compactMap { name in toID[name].flatMap { special.contains($0) ? $0 : nil } }.first
        bosID = spec.bosID
        eosID = spec.eosID
        steps = spec.steps
        preTokenizerSteps = spec.steps.map(\.name)
        bpe = BytePairEncoder(byteIDs: byteIDs, byteFallbacks: byteFallbacks, unkID: unkID, fuseUnk: spec.fuseUnk,
                              merges: merges, wholeWords: wholeWords)
        tokenToID = toID
        idToToken = toToken
        tokenBytes = bytes
        tokenOffsets = offsets
        specialIDs = special
        prefixIDs = spec.prefixIDs
        suffixIDs = spec.suffixIDs
        addedAll = all
        addedNonSpecial = nonSpecial
    }

    /// Special tokens that end a chat turn, most common first (see `endOfTurnID`).
    static let endOfTurnNames = ["<|im_end|>", "<|eot_id|>", "<end_of_turn>"]

    // MARK: lookups

    /// The id of a token, given in the vocabulary's own spelling (byte-level, e.g. `"Ġthe"`), or of an
    /// added token (e.g. `"<|im_start|>"`).
    public func id(of token: String) -> Int32? { tokenToID[token] }

    /// The vocabulary spelling of `id`, or nil if no token has that id.
    public func token(of id: Int32) -> String? {
        guard id >= 0, Int(id) < idToToken.count else { return nil }
        return idToToken[Int(id)]
    }

    /// True for special (control) tokens such as `<|endoftext|>`.
    public func isSpecial(_ id: Int32) -> Bool { specialIDs.contains(id) }

    // MARK: encoding

    /// Token ids of `text`.
    ///
    /// - Parameters:
    ///   - addSpecial: add the tokens the model puts around a text (e.g. a BOS token), if any.
    ///   - parseSpecial: turn special tokens written in the text (`<|im_start|>`) into their ids; when
    ///     false they are encoded as plain text. Non-special added tokens are always matched.
    public func encode(_ text: String, addSpecial: Bool = false, parseSpecial: Bool = true) -> [Int32] {
        var out: [Int32] = []
        if addSpecial { out.append(contentsOf: prefixIDs) }
        let utf8 = Array(text.utf8)
        let table = parseSpecial ? addedAll : addedNonSpecial
        utf8.withUnsafeBufferPointer { b in
            var segmentStart = 0
            var i = 0
            let n = b.count
            while i < n {
                let candidates = table[Int(b[i])]
                var matched: AddedTokenEntry? = nil
                if !candidates.isEmpty {
                    for a in candidates where a.bytes.count <= n - i {
                        var equal = true
                        for k in 0..<a.bytes.count where b[i + k] != a.bytes[k] { equal = false; break }
                        if equal { matched = a; break }
                    }
                }
                guard let a = matched else { i += 1; continue }
                var lo = i
                var hi = i + a.bytes.count
                if a.lstrip { lo = skipSpaceBackward(b, from: lo, limit: segmentStart) }
                if a.rstrip { hi = skipSpaceForward(b, from: hi) }
                encodeText(b, segmentStart..<lo, into: &out)
                out.append(a.id)
                segmentStart = hi
                i = hi
            }
            encodeText(b, segmentStart..<n, into: &out)
        }
        if addSpecial { out.append(contentsOf: suffixIDs) }
        return out
    }

    /// Pre-tokenizes and merges the text between added tokens.
    private func encodeText(_ b: UnsafeBufferPointer<UInt8>, _ range: Range<Int>, into out: inout [Int32]) {
        guard !range.isEmpty else { return }
        let text = ScalarText(utf8: b[range])
        preTokenize(text, 0..<text.count, steps: steps[...]) { t, r in
            let lo = Int(t.offsets[r.lowerBound]), hi = Int(t.offsets[r.upperBound])
            bpe.encodeWord(t.utf8[lo..<hi], into: &out)
        }
    }

    // MARK: decoding

    /// The text of `ids`: the tokens' bytes read as UTF-8, with invalid sequences replaced by U+FFFD.
    ///
    /// Throws `invalidArgument` for an id outside the vocabulary.
    public func decode(_ ids: [Int32], skipSpecial: Bool = false) throws -> String {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(ids.count * 4)
        for id in ids {
            if skipSpecial && specialIDs.contains(id) { continue }
            try appendBytes(of: id, to: &bytes)
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// The raw bytes of one token (a piece of UTF-8 that may end or start inside a character).
    public func bytes(of id: Int32) throws -> [UInt8] {
        var out: [UInt8] = []
        try appendBytes(of: id, to: &out)
        return out
    }

    func appendBytes(of id: Int32, to out: inout [UInt8]) throws {
        guard id >= 0, Int(id) < vocabSize, idToToken[Int(id)] != nil else {
            throw PEFTKitError.invalidArgument("token id \(id) is not in the vocabulary (size \(vocabSize))")
        }
        let lo = Int(tokenOffsets[Int(id)]), hi = Int(tokenOffsets[Int(id) + 1])
        out.append(contentsOf: tokenBytes[lo..<hi])
    }

    /// A decoder for ids that arrive one at a time (generation); see `StreamingDecoder`.
    public func streamingDecoder(skipSpecial: Bool = false) -> StreamingDecoder {
        StreamingDecoder(tokenizer: self, skipSpecial: skipSpecial)
    }

    /// Turns ids into text as they arrive, emitting only complete UTF-8 characters: a character whose bytes
    /// are spread over several tokens appears once its last byte has arrived. The concatenation of every
    /// `push` result and the final `finish()` equals `decode` of all the ids.
    ///
    /// ```swift
    /// var stream = tokenizer.streamingDecoder()
    /// for id in generated { print(try stream.push(id), terminator: "") }
    /// print(stream.finish())
    /// ```
    public struct StreamingDecoder: Sendable {
        let tokenizer: Tokenizer
        let skipSpecial: Bool
        /// Bytes of an incomplete but so far valid UTF-8 sequence at the end of the stream.
        private var pending: [UInt8] = []

        init(tokenizer: Tokenizer, skipSpecial: Bool) {
            self.tokenizer = tokenizer
            self.skipSpecial = skipSpecial
        }

        /// Adds one id; returns the text that is complete now (possibly empty).
        public mutating func push(_ id: Int32) throws -> String {
            if skipSpecial && tokenizer.specialIDs.contains(id) { return "" }
            try tokenizer.appendBytes(of: id, to: &pending)
            let keep = incompleteSuffixLength(pending)
            if keep == pending.count { return "" }
            let text = String(decoding: pending[..<(pending.count - keep)], as: UTF8.self)
            pending.removeFirst(pending.count - keep)
            return text
        }

        /// Ends the stream: returns what is still held (an incomplete character becomes U+FFFD).
        public mutating func finish() -> String {
            defer { pending.removeAll() }
            return pending.isEmpty ? "" : String(decoding: pending, as: UTF8.self)
        }
    }
}

/// Length of the longest suffix of `bytes` that is the start of a valid UTF-8 sequence still missing
/// bytes (0 if the bytes end on a character boundary or in an invalid sequence).
func incompleteSuffixLength(_ bytes: [UInt8]) -> Int {
    let n = bytes.count
    var k = 1
    while k <= min(3, n) {
        let b = bytes[n - k]
        if b & 0xC0 == 0x80 { k += 1; continue }  // continuation byte: keep looking for the lead
        let need: Int
        switch b {
        case 0xC2...0xDF: need = 2
        case 0xE0...0xEF: need = 3
        case 0xF0...0xF4: need = 4
        default: return 0
        }
        guard k < need else { return 0 }
        if k >= 2 {
            // The second byte's allowed range depends on the lead (no overlongs, surrogates, > U+10FFFF).
            let s = bytes[n - k + 1]
            let ok: Bool
            switch b {
            case 0xE0: ok = (0xA0...0xBF).contains(s)
            case 0xED: ok = (0x80...0x9F).contains(s)
            case 0xF0: ok = (0x90...0xBF).contains(s)
            case 0xF4: ok = (0x80...0x8F).contains(s)
            default: ok = true
            }
            if !ok { return 0 }
        }
        return k
    }
    return 0
}

@inline(__always)
private func isSpaceByteAt(_ b: UnsafeBufferPointer<UInt8>, _ i: Int) -> (isSpace: Bool, length: Int) {
    // Decodes the scalar starting at i (valid UTF-8).
    let b0 = b[i]
    if b0 < 0x80 { return (scalarClass(UInt32(b0)) & ScalarClass.space != 0, 1) }
    var len = b0 >= 0xF0 ? 4 : b0 >= 0xE0 ? 3 : 2
    len = min(len, b.count - i)
    var v = UInt32(b0) & (len == 4 ? 0x07 : len == 3 ? 0x0F : 0x1F)
    for k in 1..<max(len, 1) { v = v << 6 | UInt32(b[i + k] & 0x3F) }
    return (scalarClass(v) & ScalarClass.space != 0, max(len, 1))
}

/// Start of the white space that ends at `from` (not before `limit`).
private func skipSpaceBackward(_ b: UnsafeBufferPointer<UInt8>, from: Int, limit: Int) -> Int {
    var i = from
    while i > limit {
        var start = i - 1
        while start > limit && b[start] & 0xC0 == 0x80 { start -= 1 }
        guard isSpaceByteAt(b, start).isSpace else { break }
        i = start
    }
    return i
}

/// End of the white space that starts at `from`.
private func skipSpaceForward(_ b: UnsafeBufferPointer<UInt8>, from: Int) -> Int {
    var i = from
    while i < b.count {
        let (space, len) = isSpaceByteAt(b, i)
        guard space else { break }
        i += len
    }
    return i
}
