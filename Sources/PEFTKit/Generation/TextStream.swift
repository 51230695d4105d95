/// Turns generated tokens into text as they arrive, for printing while generation runs.
///
/// `push` returns only complete UTF-8 characters (a character whose bytes are spread over several tokens
/// comes out once its last byte has arrived, never as U+FFFD) and holds back text that is, or may become, the
/// start of one of the stop strings, until it is clear it is not one. Stop strings are matched on the bytes of
/// every token, as `Model.generateResult` does, also special tokens left out of the text with `skipSpecial`.
/// `finish(result)` returns the rest of the text, up to the stop string when one ended generation; every chunk
/// joined equals the result's text (without the skipped special tokens).
///
/// ```swift
/// var stream = GenerationTextStream(tokenizer: tok, stopStrings: g.stopStrings, skipSpecial: true)
/// let r = try model.generateResult(prompt: ids, config: g) { id in
///     print(stream.push(id), terminator: ""); return true
/// }
/// print(stream.finish(r))
/// ```
public struct GenerationTextStream: Sendable {
    let tokenizer: Tokenizer
    let stops: [[UInt8]]
    let skipSpecial: Bool
    /// Bytes not yet emitted, with whether each is part of the text (false: a skipped special token).
    private var held: [UInt8] = []
    private var shown: [Bool] = []
    /// Bytes of the stream before `held`.
    private var passed = 0
    /// Emitted bytes that end inside a character.
    private var partial: [UInt8] = []

    public init(tokenizer: Tokenizer, stopStrings: [String] = [], skipSpecial: Bool = false) {
        self.tokenizer = tokenizer
        stops = stopStrings.map { Array($0.utf8) }.filter { !$0.isEmpty }
        self.skipSpecial = skipSpecial
    }

    /// Adds one token; returns the text that is complete and cannot be part of a stop string (maybe empty).
    /// An id the tokenizer does not know adds nothing.
    public mutating func push(_ id: Int32) -> String {
        let bytes = (try? tokenizer.bytes(of: id)) ?? []
        let visible = !(skipSpecial && tokenizer.isSpecial(id))
        held += bytes
        shown += [Bool](repeating: visible, count: bytes.count)
        return release(stops.isEmpty ? held.count : holdFrom())
    }

    /// Ends the stream: the text still held, cut where the stop string of `result` starts (if one ended it).
    /// An incomplete character at the very end becomes U+FFFD.
    public mutating func finish(_ result: GenerateResult? = nil) -> String {
        var n = held.count
        if let end = result?.stopByteOffset { n = min(held.count, max(0, end - passed)) }
        var text = release(n)
        held.removeAll(); shown.removeAll()
        if !partial.isEmpty { text += String(decoding: partial, as: UTF8.self) }
        partial.removeAll()
        return text
    }

    /// The first held position where a stop string starts or may start (held.count if none).
    private func holdFrom() -> Int {
        for p in 0..<held.count {
            let rest = held[p...]
            for s in stops {
                let n = min(rest.count, s.count)
                if rest.prefix(n).elementsEqual(s.prefix(n)) { return p }
            }
        }
        return held.count
    }

    /// Emits the first `n` held bytes (the visible ones), keeping an incomplete character for later.
    private mutating func release(_ n: Int) -> String {
        for i in 0..<n where shown[i] { partial.append(held[i]) }
        held.removeFirst(n); shown.removeFirst(n)
        passed += n
        let keep = incompleteSuffixLength(partial)
        guard partial.count > keep else { return "" }
        let text = String(decoding: partial[..<(partial.count - keep)], as: UTF8.self)
        partial.removeFirst(partial.count - keep)
        return text
    }
}
