// Pre-tokenization for PEFTKit's byte-level BPE: the text between added tokens is cut into words before BPE
// runs on each word. The regexes that byte-level BPE models declare are implemented here as hand-written
// scanners over Unicode scalars that give exactly the regex's matches:
//
//   GPT-2:    's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
//   Llama-3:  (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
//   Qwen2:    the Llama-3 regex with \p{N} in place of \p{N}{1,3}
//
// Alternatives are tried in order and the first that matches wins (regex semantics, not longest match).
// \p{L} is general category L*, \p{N} is N* (Nd, Nl, No), \s is the White_Space property, as in the
// Oniguruma engine Hugging Face tokenizers uses. Every scalar is covered by some alternative, so the
// matches tile the text.

/// Character classes of one scalar, as bit flags.
enum ScalarClass {
    static let other: UInt8 = 0
    static let letter: UInt8 = 1
    static let number: UInt8 = 2
    static let space: UInt8 = 4
    /// `\r` or `\n` (always together with `space`).
    static let newline: UInt8 = 8
}

/// The class of every scalar of the Basic Multilingual Plane, computed once on first use.
private let bmpClasses: [UInt8] = {
    var table = [UInt8](repeating: 0, count: 0x10000)
    for v in 0..<0x10000 {
        if let s = Unicode.Scalar(UInt32(v)) { table[v] = computeClass(s) }
    }
    return table
}()

private func computeClass(_ s: Unicode.Scalar) -> UInt8 {
    if s == "\r" || s == "\n" { return ScalarClass.space | ScalarClass.newline }
    let p = s.properties
    if p.isWhitespace { return ScalarClass.space }
    switch p.generalCategory {
    case .uppercaseLetter, .lowercaseLetter, .titlecaseLetter, .modifierLetter, .otherLetter:
        return ScalarClass.letter
    case .decimalNumber, .letterNumber, .otherNumber:
        return ScalarClass.number
    default:
        return ScalarClass.other
    }
}

@inline(__always)
func scalarClass(_ value: UInt32) -> UInt8 {
    if value < 0x10000 { return bmpClasses[Int(value)] }
    guard let s = Unicode.Scalar(value) else { return ScalarClass.other }
    return computeClass(s)
}

/// A run of text as UTF-8 bytes plus, per scalar, its byte offset and class. Words are ranges of scalar
/// indices into it.
struct ScalarText {
    var utf8: [UInt8]
    /// Byte offset of each scalar, plus one final entry equal to `utf8.count`.
    var offsets: [Int32]
    var classes: [UInt8]
    /// The first byte of each scalar: equal to the scalar for ASCII, >= 0xC0 otherwise.
    var leads: [UInt8]

    var count: Int { classes.count }

    /// Builds the scalar view of valid UTF-8 bytes (they come from a Swift `String`).
    init<C: Collection>(utf8 bytes: C) where C.Element == UInt8 {
        utf8 = Array(bytes)
        offsets = []
        classes = []
        leads = []
        offsets.reserveCapacity(utf8.count + 1)
        classes.reserveCapacity(utf8.count)
        leads.reserveCapacity(utf8.count)
        var i = 0
        let n = utf8.count
        utf8.withUnsafeBufferPointer { b in
            while i < n {
                let b0 = b[i]
                offsets.append(Int32(i))
                leads.append(b0)
                if b0 < 0x80 {
                    classes.append(scalarClass(UInt32(b0)))
                    i += 1
                    continue
                }
                var value: UInt32
                var len: Int
                if b0 >= 0xF0 { value = UInt32(b0 & 0x07); len = 4 } else if b0 >= 0xE0 { value = UInt32(b0 & 0x0F); len = 3 } else { value = UInt32(b0 & 0x1F); len = 2 }
                len = min(len, n - i)
                for k in 1..<max(len, 1) { value = (value << 6) | UInt32(b[i + k] & 0x3F) }
                classes.append(scalarClass(value))
                i += max(len, 1)
            }
        }
        offsets.append(Int32(n))
    }

    /// The same text with a space in front.
    func withLeadingSpace(_ range: Range<Int>) -> ScalarText {
        let lo = Int(offsets[range.lowerBound]), hi = Int(offsets[range.upperBound])
        var bytes: [UInt8] = [0x20]
        bytes.append(contentsOf: utf8[lo..<hi])
        return ScalarText(utf8: bytes)
    }
}

/// One step of a pre-tokenizer pipeline; each step cuts every word of the previous step into smaller words.
enum PreTokenizeStep: Sendable, Equatable {
    /// Isolate the matches of GPT-2's regex.
    case gpt2Regex
    /// Isolate the matches of the Llama-3 style regex; `maxDigits` is 3 for Llama-3, 1 for Qwen2.
    case llama3Regex(maxDigits: Int)
    /// Isolate each number scalar (`individual`) or each run of number scalars.
    case digits(individual: Bool)
    /// Put a space in front of a word that does not start with one (ByteLevel `add_prefix_space`).
    case prefixSpace

    var name: String {
        switch self {
        case .gpt2Regex: return "gpt2-regex"
        case .llama3Regex(let d): return d == 3 ? "llama3-regex" : "llama3-regex(digits \(d))"
        case .digits(let individual): return individual ? "digits(individual)" : "digits"
        case .prefixSpace: return "prefix-space"
        }
    }
}

/// Runs `steps` over `text[range]` and calls `emit` with each final word.
func preTokenize(_ text: ScalarText, _ range: Range<Int>, steps: ArraySlice<PreTokenizeStep>,
                 emit: (ScalarText, Range<Int>) -> Void) {
    guard !range.isEmpty else { return }
    guard let step = steps.first else { emit(text, range); return }
    let rest = steps.dropFirst()
    switch step {
    case .prefixSpace:
        if text.leads[range.lowerBound] == 0x20 {
            preTokenize(text, range, steps: rest, emit: emit)
        } else {
            let spaced = text.withLeadingSpace(range)
            preTokenize(spaced, 0..<spaced.count, steps: rest, emit: emit)
        }
    case .digits(let individual):
        var i = range.lowerBound
        var gapStart = i
        while i < range.upperBound {
            if text.classes[i] & ScalarClass.number != 0 {
                if gapStart < i { preTokenize(text, gapStart..<i, steps: rest, emit: emit) }
                var end = i + 1
                if !individual {
                    while end < range.upperBound && text.classes[end] & ScalarClass.number != 0 { end += 1 }
                }
                preTokenize(text, i..<end, steps: rest, emit: emit)
                i = end
                gapStart = end
            } else {
                i += 1
            }
        }
        if gapStart < range.upperBound { preTokenize(text, gapStart..<range.upperBound, steps: rest, emit: emit) }
    case .gpt2Regex:
        var i = range.lowerBound
        while i < range.upperBound {
            let end = gpt2Match(text, at: i, end: range.upperBound)
            preTokenize(text, i..<end, steps: rest, emit: emit)
            i = end
        }
    case .llama3Regex(let maxDigits):
        var i = range.lowerBound
        while i < range.upperBound {
            let end = llama3Match(text, at: i, end: range.upperBound, maxDigits: maxDigits)
            preTokenize(text, i..<end, steps: rest, emit: emit)
            i = end
        }
    }
}

/// End of the run of scalars from `i` whose class has any bit of `mask`.
@inline(__always)
private func runEnd(_ classes: [UInt8], from i: Int, to end: Int, mask: UInt8) -> Int {
    var j = i
    while j < end && classes[j] & mask != 0 { j += 1 }
    return j
}

/// End of the run of "other" scalars (not letter, number or white space) from `i`.
@inline(__always)
private func otherRunEnd(_ classes: [UInt8], from i: Int, to end: Int) -> Int {
    var j = i
    while j < end && classes[j] == ScalarClass.other { j += 1 }
    return j
}

/// `\s+(?!\S)|\s+` at a white-space scalar `i`: the run, less its last scalar when the run is followed
/// by a non-space and longer than one.
@inline(__always)
private func spaceMatch(_ classes: [UInt8], at i: Int, end: Int) -> Int {
    let r = runEnd(classes, from: i, to: end, mask: ScalarClass.space)
    if r == end || r - i == 1 { return r }
    return r - 1
}

@inline(__always)
private func lower(_ b: UInt8) -> UInt8 { (b >= 0x41 && b <= 0x5A) ? b | 0x20 : b }

/// Length of the contraction at `i` (which holds `'`), or 0. Case-insensitive matching also accepts
/// U+017F LATIN SMALL LETTER LONG S for `s`, as Unicode case folding does.
private func contraction(_ text: ScalarText, at i: Int, end: Int, caseInsensitive: Bool) -> Int {
    guard i + 1 < end else { return 0 }
    let a0 = text.leads[i + 1]
    let a = caseInsensitive ? lower(a0) : a0
    if a == 0x73 || a == 0x74 || a == 0x6D || a == 0x64 { return 2 }  // s t m d
    if caseInsensitive && a0 == 0xC5 {
        let o = Int(text.offsets[i + 1])
        if text.utf8[o + 1] == 0xBF { return 2 }  // U+017F is C5 BF
    }
    guard i + 2 < end else { return 0 }
    let b = caseInsensitive ? lower(text.leads[i + 2]) : text.leads[i + 2]
    if (a == 0x72 && b == 0x65) || (a == 0x76 && b == 0x65) || (a == 0x6C && b == 0x6C) { return 3 }  // re ve ll
    return 0
}

/// End of GPT-2's regex match starting at `i` (`i < end`).
func gpt2Match(_ text: ScalarText, at i: Int, end: Int) -> Int {
    let cls = text.classes
    if text.leads[i] == 0x27 {  // '
        let n = contraction(text, at: i, end: end, caseInsensitive: false)
        if n > 0 { return i + n }
    }
    // ` ?\p{L}+`, ` ?\p{N}+`, ` ?[^\s\p{L}\p{N}]+`: the optional space only helps if a match follows it.
    var j = i
    if text.leads[i] == 0x20 && i + 1 < end && cls[i + 1] & ScalarClass.space == 0 { j = i + 1 }
    let c = cls[j]
    if c & ScalarClass.letter != 0 { return runEnd(cls, from: j, to: end, mask: ScalarClass.letter) }
    if c & ScalarClass.number != 0 { return runEnd(cls, from: j, to: end, mask: ScalarClass.number) }
    if c == ScalarClass.other { return otherRunEnd(cls, from: j, to: end) }
    return spaceMatch(cls, at: i, end: end)
}

/// End of the Llama-3 style regex match starting at `i` (`i < end`).
func llama3Match(_ text: ScalarText, at i: Int, end: Int, maxDigits: Int) -> Int {
    let cls = text.classes
    let c = cls[i]
    if text.leads[i] == 0x27 {
        let n = contraction(text, at: i, end: end, caseInsensitive: true)
        if n > 0 { return i + n }
    }
    // [^\r\n\p{L}\p{N}]?\p{L}+
    if c & ScalarClass.letter != 0 { return runEnd(cls, from: i, to: end, mask: ScalarClass.letter) }
    if c & (ScalarClass.number | ScalarClass.newline) == 0, i + 1 < end, cls[i + 1] & ScalarClass.letter != 0 {
        return runEnd(cls, from: i + 1, to: end, mask: ScalarClass.letter)
    }
    // \p{N}{1,k}
    if c & ScalarClass.number != 0 {
        let r = runEnd(cls, from: i, to: end, mask: ScalarClass.number)
        return min(r, i + maxDigits)
    }
    //  ?[^\s\p{L}\p{N}]+[\r\n]*
    var j = i
    if text.leads[i] == 0x20 && i + 1 < end && cls[i + 1] == ScalarClass.other { j = i + 1 }
    if cls[j] == ScalarClass.other {
        let r = otherRunEnd(cls, from: j, to: end)
        return runEnd(cls, from: r, to: end, mask: ScalarClass.newline)
    }
    // \s*[\r\n]+ : up to and including the last newline of the white-space run, if it has one.
    let r = runEnd(cls, from: i, to: end, mask: ScalarClass.space)
    var k = r - 1
    while k >= i && cls[k] & ScalarClass.newline == 0 { k -= 1 }
    if k >= i { return k + 1 }
    return spaceMatch(cls, at: i, end: end)
}
