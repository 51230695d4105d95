@_spi(_Unicode) import Swift

// BERT's text normalization and pre-tokenization, character for character as Hugging Face `tokenizers`
// does it (BertNormalizer + BertPreTokenizer), for the WordPiece tokenizer (WordPiece.swift).
//
// Normalizer, in this order: clean text (drop NUL, U+FFFD and control characters: general category Cc, Cf, Co
// except \t \n \r; map white space to ' '), put spaces around CJK ideographs, strip accents (NFD, then drop
// nonspacing marks Mn), lower-case (per scalar, full mapping, no final-sigma rule). Pre-tokenizer: split on
// white space, and every punctuation character (general category P*, or ASCII 33-47, 58-64, 91-96, 123-126)
// is a word of its own.
//
// Unicode versions. `tokenizers` takes general categories from the `unicode_categories` crate, which is
// Unicode 8.0: a character assigned later is "unassigned" there (not a control, a mark or punctuation), and six
// characters changed category since. `oldCategory` reproduces that from the stdlib's `age` and
// `generalCategory`. White space (Rust's `char::is_whitespace`), lower-casing (Rust's std) and NFD (the
// `unicode-normalization` crate) are current, except that the crate has no decompositions new in Unicode 16
// and none for U+11938. All of this was checked against `tokenizers` 0.23.3 on every code point.
//
// NFD: the stdlib has no public NFD; `String._nfd` (SPI `_Unicode`, the one swift-foundation uses) is the
// stdlib's own normalizer, canonical reordering included, and needs no ICU.

/// What BERT's normalizer and pre-tokenizer see in one scalar.
struct BertCharClass: OptionSet, Sendable {
    let rawValue: UInt8
    /// Removed by clean_text (NUL, U+FFFD, Cc/Cf/Co except \t \n \r).
    static let dropped = BertCharClass(rawValue: 1)
    /// Becomes ' ' in clean_text; a word boundary in the pre-tokenizer.
    static let space = BertCharClass(rawValue: 2)
    /// A CJK ideograph (BERT's ranges): surrounded by spaces when handle_chinese_chars is on.
    static let cjk = BertCharClass(rawValue: 4)
    /// A word of its own in the pre-tokenizer.
    static let punctuation = BertCharClass(rawValue: 8)
    /// Removed after NFD when accents are stripped (Mn as of Unicode 8.0).
    static let nonspacingMark = BertCharClass(rawValue: 16)
}

/// General category as the `unicode_categories` crate (Unicode 8.0) gives it.
private func oldCategory(_ u: Unicode.Scalar) -> Unicode.GeneralCategory {
    switch u.value {
    case 0x166D, 0x111C9: return .otherPunctuation  // So / Mn today
    case 0x1734, 0x1171E: return .nonspacingMark    // Mc today
    case 0x1885, 0x1886: return .otherLetter        // Mn today
    case 0xA9BD: return .spacingMark                // Mn today
    default: break
    }
    let p = u.properties
    guard let age = p.age, age.major < 8 || (age.major == 8 && age.minor == 0) else { return .unassigned }
    return p.generalCategory
}

/// BERT's CJK ranges (with the original BERT's 0x2B920 start of Extension F, which HF keeps).
@inline(__always)
func isBertCJK(_ v: UInt32) -> Bool {
    (0x4E00...0x9FFF).contains(v) || (0x3400...0x4DBF).contains(v) || (0x20000...0x2A6DF).contains(v)
        || (0x2A700...0x2B73F).contains(v) || (0x2B740...0x2B81F).contains(v) || (0x2B920...0x2CEAF).contains(v)
        || (0xF900...0xFAFF).contains(v) || (0x2F800...0x2FA1F).contains(v)
}

private func computeClass(_ u: Unicode.Scalar) -> BertCharClass {
    let v = u.value
    var c: BertCharClass = []
    let gc = oldCategory(u)
    let whitespace = u.properties.isWhitespace
    let control = v != 9 && v != 10 && v != 13 && (gc == .control || gc == .format || gc == .privateUse)
    if v == 0 || v == 0xFFFD || control { c.insert(.dropped) }
    if whitespace { c.insert(.space) }
    if isBertCJK(v) { c.insert(.cjk) }
    switch gc {
    case .connectorPunctuation, .dashPunctuation, .openPunctuation, .closePunctuation, .initialPunctuation,
         .finalPunctuation, .otherPunctuation:
        c.insert(.punctuation)
    case .nonspacingMark:
        c.insert(.nonspacingMark)
    default:
        if (33...47).contains(v) || (58...64).contains(v) || (91...96).contains(v) || (123...126).contains(v) {
            c.insert(.punctuation)
        }
    }
    return c
}

/// Classes of the Basic Multilingual Plane (64 KB, computed once on first use: a few ms), so that non-ASCII
/// text does not pay for the stdlib's property lookups on every scalar. Surrogate code points stay empty.
private let bmpClasses: [BertCharClass] = (0..<0x10000).map { v in
    Unicode.Scalar(UInt32(v)).map(computeClass) ?? []
}

@inline(__always)
func bertClass(_ u: Unicode.Scalar) -> BertCharClass {
    u.value < 0x10000 ? bmpClasses[Int(u.value)] : computeClass(u)
}

/// Scalars the `unicode-normalization` crate does not decompose although the stdlib does.
@inline(__always)
private func keepsUndecomposed(_ u: Unicode.Scalar) -> Bool {
    guard u.value >= 0x10000 else { return false }
    if u.value == 0x11938 { return true }
    guard let age = u.properties.age else { return false }
    return age.major >= 16
}

/// BertNormalizer's options (tokenizer.json `normalizer`, or tokenizer_config.json).
public struct BertNormalizerOptions: Sendable, Equatable {
    public var cleanText: Bool
    public var handleChineseChars: Bool
    /// nil: follow `lowercase` (BERT's rule).
    public var stripAccents: Bool?
    public var lowercase: Bool

    public init(cleanText: Bool = true, handleChineseChars: Bool = true, stripAccents: Bool? = nil, lowercase: Bool = true) {
        self.cleanText = cleanText
        self.handleChineseChars = handleChineseChars
        self.stripAccents = stripAccents
        self.lowercase = lowercase
    }

    var stripsAccents: Bool { stripAccents ?? lowercase }
}

/// Normalizes `text` and cuts it into BERT words; `word` receives each word's scalars (reused storage).
func bertNormalizeAndSplit(_ text: Substring, _ o: BertNormalizerOptions, word: (ArraySlice<Unicode.Scalar>) -> Void) {
    // 1. clean text + CJK spacing.
    var a: [Unicode.Scalar] = []
    a.reserveCapacity(text.utf8.count + 8)
    var ascii = true
    for u in text.unicodeScalars {
        let c = bertClass(u)
        if o.cleanText {
            if c.contains(.dropped) { continue }
            if c.contains(.space) { a.append(" "); continue }
        }
        if o.handleChineseChars && c.contains(.cjk) {
            a.append(" "); a.append(u); a.append(" ")
        } else {
            a.append(u)
        }
        if u.value >= 128 { ascii = false }
    }
    // 2. strip accents: NFD, then drop Mn.
    if o.stripsAccents && !ascii {
        var b: [Unicode.Scalar] = []
        b.reserveCapacity(a.count + 8)
        var runStart = 0
        func flush(_ end: Int) {
            guard runStart < end else { return }
            var run = String.UnicodeScalarView()
            run.append(contentsOf: a[runStart..<end])
            for d in String(run)._nfd where !bertClass(d).contains(.nonspacingMark) { b.append(d) }
        }
        for (i, u) in a.enumerated() where u.value >= 0x10000 && keepsUndecomposed(u) {
            flush(i)
            if !bertClass(u).contains(.nonspacingMark) { b.append(u) }
            runStart = i + 1
        }
        flush(a.count)
        a = b
    }
    // 3. lower-case, 4. split into words.
    var w: [Unicode.Scalar] = []
    w.reserveCapacity(64)
    func add(_ u: Unicode.Scalar) {
        let c = bertClass(u)
        if c.contains(.space) {
            if !w.isEmpty { word(w[...]); w.removeAll(keepingCapacity: true) }
        } else if c.contains(.punctuation) {
            if !w.isEmpty { word(w[...]); w.removeAll(keepingCapacity: true) }
            w.append(u)
            word(w[...])
            w.removeAll(keepingCapacity: true)
        } else {
            w.append(u)
        }
    }
    for u in a {
        if o.lowercase {
            if u.value < 128 {
                add((65...90).contains(u.value) ? Unicode.Scalar(UInt8(u.value + 32)) : u)
            } else if u.properties.changesWhenLowercased {
                for l in u.properties.lowercaseMapping.unicodeScalars { add(l) }
            } else {
                add(u)
            }
        } else {
            add(u)
        }
    }
    if !w.isEmpty { word(w[...]) }
}
