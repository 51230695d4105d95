import Synchronization

// Byte-level BPE: the GPT-2 byte <-> character mapping and the merge loop. Vocabulary tokens are stored in
// their byte-level spelling ("Ġthe" for " the"); PEFTKit converts them to raw bytes once, so encoding works
// on bytes and token ids only.

/// GPT-2's byte-to-character table: printable Latin-1 bytes map to themselves, the other 68 bytes
/// (controls, space, DEL, NBSP, soft hyphen, ...) to U+0100 onwards in byte order.
let byteLevelChars: [Unicode.Scalar] = {
    var table = [Unicode.Scalar](repeating: " ", count: 256)
    var next: UInt32 = 256
    for b in 0..<256 {
        let printable = (0x21...0x7E).contains(b) || (0xA1...0xAC).contains(b) || (0xAE...0xFF).contains(b)
        if printable {
            table[b] = Unicode.Scalar(UInt8(b))
        } else {
            table[b] = Unicode.Scalar(next)!
            next += 1
        }
    }
    return table
}()

/// The inverse of `byteLevelChars`, indexed by scalar value (< 0x144); 0xFFFF where no byte maps there.
private let byteLevelBytes: [UInt16] = {
    var table = [UInt16](repeating: 0xFFFF, count: 0x144)
    for b in 0..<256 { table[Int(byteLevelChars[b].value)] = UInt16(b) }
    return table
}()

/// The byte-level spelling of raw bytes.
func byteLevelString<C: Sequence>(_ bytes: C) -> String where C.Element == UInt8 {
    var s = String.UnicodeScalarView()
    for b in bytes { s.append(byteLevelChars[Int(b)]) }
    return String(s)
}

/// The raw bytes a byte-level token spells, or nil if some character is outside the byte-level alphabet.
func byteLevelBytes(of token: String) -> [UInt8]? {
    var out: [UInt8] = []
    out.reserveCapacity(token.unicodeScalars.count)
    for s in token.unicodeScalars {
        guard s.value < 0x144 else { return nil }
        let b = byteLevelBytes[Int(s.value)]
        guard b != 0xFFFF else { return nil }
        out.append(UInt8(b))
    }
    return out
}

/// The merge table and the per-word encoder. Immutable except for its bounded word cache.
final class BytePairEncoder: Sendable {
    /// Token id of each single byte, or -1 when the vocabulary has no token for it (then `byteFallbacks`,
    /// `unkID` or nothing stands in for it, as in Hugging Face's BPE model).
    let byteIDs: [Int32]
    /// For a byte without a token: the `<0xHH>` tokens of its byte-level character's UTF-8 bytes when the
    /// model has `byte_fallback` and all of them exist, else empty.
    let byteFallbacks: [[Int32]]
    let unkID: Int32?
    let fuseUnk: Bool
    /// (left id << 32 | right id) -> (rank << 32 | merged id).
    let merges: [UInt64: UInt64]
    /// When set, a whole word found here is one token without merging (HF `ignore_merges`).
    let wholeWords: [[UInt8]: Int32]?

    private static let cacheLimit = 1 << 16
    private static let cacheWordLimit = 256
    private let cache = Mutex<[[UInt8]: [Int32]]>([:])

    init(byteIDs: [Int32], byteFallbacks: [[Int32]], unkID: Int32?, fuseUnk: Bool, merges: [UInt64: UInt64],
         wholeWords: [[UInt8]: Int32]?) {
        self.byteIDs = byteIDs
        self.byteFallbacks = byteFallbacks
        self.unkID = unkID
        self.fuseUnk = fuseUnk
        self.merges = merges
        self.wholeWords = wholeWords
    }

    @inline(__always)
    static func key(_ left: Int32, _ right: Int32) -> UInt64 {
        UInt64(UInt32(bitPattern: left)) << 32 | UInt64(UInt32(bitPattern: right))
    }

    /// The symbols BPE starts from: one token per byte. A byte without a token becomes its fallback tokens,
    /// or the unknown token (one per run when `fuseUnk`), or is left out, so that its neighbours can merge.
    func initialSymbols(_ word: ArraySlice<UInt8>) -> [Int32] {
        var symbols: [Int32] = []
        symbols.reserveCapacity(word.count)
        var lastUnknown = false
        for b in word {
            let id = byteIDs[Int(b)]
            if id >= 0 {
                symbols.append(id)
                lastUnknown = false
            } else if !byteFallbacks[Int(b)].isEmpty {
                symbols.append(contentsOf: byteFallbacks[Int(b)])
                lastUnknown = false
            } else if let unk = unkID {
                if !(fuseUnk && lastUnknown) { symbols.append(unk) }
                lastUnknown = true
            }
        }
        return symbols
    }

    /// Appends the tokens of one word (its UTF-8 bytes) to `out`.
    func encodeWord(_ word: ArraySlice<UInt8>, into out: inout [Int32]) {
        if word.isEmpty { return }
        if word.count == 1, byteIDs[Int(word[word.startIndex])] >= 0 {
            out.append(byteIDs[Int(word[word.startIndex])])
            return
        }
        if let whole = wholeWords, let id = whole[Array(word)] { out.append(id); return }
        let cacheable = word.count <= Self.cacheWordLimit
        let key = Array(word)
        if cacheable, let hit = cache.withLock({ $0[key] }) {
            out.append(contentsOf: hit)
            return
        }
        let symbols = initialSymbols(word)
        let ids = symbols.count <= 48 ? mergeSmall(symbols) : mergeLarge(symbols)
        out.append(contentsOf: ids)
        if cacheable {
            cache.withLock { c in
                if c.count >= Self.cacheLimit { c.removeAll(keepingCapacity: true) }
                c[key] = ids
            }
        }
    }

    /// Repeatedly merges the leftmost pair of lowest rank: quadratic, fastest for short words.
    func mergeSmall(_ initial: [Int32]) -> [Int32] {
        var symbols = initial
        while symbols.count > 1 {
            var bestRank = UInt64.max
            var bestPos = -1
            var bestID: Int32 = 0
            for k in 0..<(symbols.count - 1) {
                if let v = merges[Self.key(symbols[k], symbols[k + 1])], v >> 32 < bestRank {
                    bestRank = v >> 32
                    bestPos = k
                    bestID = Int32(truncatingIfNeeded: v & 0xFFFF_FFFF)
                }
            }
            if bestPos < 0 { break }
            symbols[bestPos] = bestID
            symbols.remove(at: bestPos + 1)
        }
        return symbols
    }

    /// The same merges with a priority queue ordered by (rank, position) over a linked list of symbols:
    /// O(n log n) for long words (long runs of one character, base64, minified code).
    func mergeLarge(_ initial: [Int32]) -> [Int32] {
        let n = initial.count
        guard n > 1 else { return initial }
        var ids = initial
        var next = Array(1...n)          // n means none
        var prev = Array(-1..<(n - 1))   // -1 means none
        var alive = [Bool](repeating: true, count: n)
        var heap = MinHeap()
        func push(_ pos: Int) {
            let r = next[pos]
            guard pos >= 0, r < n, let v = merges[Self.key(ids[pos], ids[r])] else { return }
            heap.push((v >> 32) << 32 | UInt64(pos))
        }
        for p in 0..<(n - 1) { push(p) }
        while let top = heap.pop() {
            let rank = top >> 32
            let pos = Int(top & 0xFFFF_FFFF)
            guard alive[pos] else { continue }
            let r = next[pos]
            guard r < n, let v = merges[Self.key(ids[pos], ids[r])], v >> 32 == rank else { continue }
            ids[pos] = Int32(truncatingIfNeeded: v & 0xFFFF_FFFF)
            alive[r] = false
            next[pos] = next[r]
            if next[r] < n { prev[next[r]] = pos }
            if prev[pos] >= 0 { push(prev[pos]) }
            push(pos)
        }
        var out: [Int32] = []
        var p = 0
        while p < n { out.append(ids[p]); p = next[p] }
        return out
    }
}

/// A binary min-heap of UInt64 keys.
struct MinHeap {
    private var items: [UInt64] = []

    mutating func push(_ x: UInt64) {
        items.append(x)
        var i = items.count - 1
        while i > 0 {
            let parent = (i - 1) / 2
            if items[parent] <= items[i] { break }
            items.swapAt(parent, i)
            i = parent
        }
    }

    mutating func pop() -> UInt64? {
        guard let first = items.first else { return nil }
        let last = items.removeLast()
        if !items.isEmpty {
            items[0] = last
            var i = 0
            let n = items.count
            while true {
                let l = 2 * i + 1, r = l + 1
                var m = i
                if l < n && items[l] < items[m] { m = l }
                if r < n && items[r] < items[m] { m = r }
                if m == i { break }
                items.swapAt(i, m)
                i = m
            }
        }
        return first
    }
}
