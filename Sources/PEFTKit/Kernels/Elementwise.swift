import CPEFTKitKernels
#if canImport(Glibc)
import Glibc
#endif

// Elementwise kernels, embeddings, bias, the random number generator, and the helpers the other kernel
// files share (parallel grain, deterministic column reductions).
//
// Conventions of every file in Kernels/: row-major fp32, N rows of C channels, outputs first, inputs as
// `UnsafePointer<Float>`. Backward functions ACCUMULATE (+=) into every gradient output; an optional weight
// gradient that is nil means "frozen": that work is skipped. Callers validate sizes and indices; the kernels
// only check their contract with `precondition` (no side effects inside).
//
// Determinism: every result is bitwise the same for any thread count. Row-parallel work computes each row
// independently. Reductions over rows (weight and bias gradients) are parallel over columns: each column
// sums its rows serially in row order, in Double, so the chunking of columns between threads changes nothing.
// Flat reductions (sum of squares) use fixed blocks whose size does not depend on the thread count.

/// The instruction-set path of the element-wise C kernels (Sources/CPEFTKitKernels/elementwise.c: activations,
/// softmax, cross-entropy, LayerNorm, RMSNorm, RoPE). `active` is the best path the CPU runs, unless the
/// environment variable PEFTKIT_CPU (scalar | avx2 | avx512) asks for a lower one; it is read once, on first use.
/// Every kernel that takes an `isa` argument defaults to `active`; tests pass each of `available` in turn.
enum ElementwiseISA: Int32, CaseIterable, Sendable, CustomStringConvertible {
    case scalar = 0, avx2 = 1, avx512 = 2

    /// The best path this CPU runs.
    static let detected: ElementwiseISA = ElementwiseISA(rawValue: pk_ew_detect()) ?? .scalar

    /// The path used when a caller does not name one.
    static let active = ElementwiseISA(rawValue: isaPath(asking: "PEFTKIT_CPU", detected: detected.rawValue)) ?? .scalar

    /// The paths this CPU runs.
    static var available: [ElementwiseISA] { allCases.filter { $0.rawValue <= detected.rawValue } }

    var description: String {
        switch self {
        case .scalar: return "scalar"
        case .avx2: return "AVX2+FMA"
        case .avx512: return "AVX-512F"
        }
    }
}

/// The path the environment variable `name` (scalar | avx2 | avx512) asks for, never above `detected` (the
/// numbering of the C kernels: 0 scalar, 1 AVX2+FMA, 2 AVX-512); `detected` when unset or unknown.
func isaPath(asking name: String, detected: Int32) -> Int32 {
    guard let v = getenv(name) else { return detected }
    let asked: Int32
    switch String(cString: v).lowercased() {
    case "scalar": asked = 0
    case "avx2": asked = 1
    case "avx512", "avx-512": asked = 2
    default: return detected
    }
    return min(asked, detected)
}

/// Work items (floats touched) below which a parallel loop runs inline: a dispatch costs microseconds.
let kernelParallelGrain = 1 << 14

/// Minimum rows per parallel chunk for rows of `width` floats.
@inline(__always)
func rowGrain(_ width: Int) -> Int {
    max(1, kernelParallelGrain / max(width, 1))
}

/// Columns handled per scratch block by `forEachColumnBlock`.
let columnBlockWidth = 256

/// Drives a deterministic reduction over rows: splits the C columns into blocks of at most
/// `columnBlockWidth`, in parallel over columns, and calls `body(c0, w, acc0, acc1)` once per block with two
/// zeroed Double scratch rows of `w` entries. The body loops over all rows in order and accumulates into the
/// scratch; it then adds the rounded sums to its outputs. A column's result depends only on its own rows.
@inline(__always)
func forEachColumnBlock(
    _ N: Int, _ C: Int,
    _ body: (_ c0: Int, _ w: Int, _ acc0: UnsafeMutablePointer<Double>, _ acc1: UnsafeMutablePointer<Double>) -> Void
) {
    if C <= 0 { return }
    parallelFor(C, grain: max(16, kernelParallelGrain / max(N, 1))) { s, e in
        withUnsafeTemporaryAllocation(of: Double.self, capacity: 2 * columnBlockWidth) { scratch in
            guard let acc0 = scratch.baseAddress else { return }
            let acc1 = acc0 + columnBlockWidth
            var c0 = s
            while c0 < e {
                let w = min(columnBlockWidth, e - c0)
                acc0.initialize(repeating: 0, count: w)
                acc1.initialize(repeating: 0, count: w)
                body(c0, w, acc0, acc1)
                c0 += w
            }
        }
    }
}

// MARK: - Elementwise

/// dst[i] += src[i] for i in 0..<n.
func addInPlace(_ dst: UnsafeMutablePointer<Float>, _ src: UnsafePointer<Float>, _ n: Int) {
    parallelFor(n, grain: 4 * kernelParallelGrain) { s, e in
        for i in s..<e { dst[i] += src[i] }
    }
}

/// out[i] = a[i] + b[i]. `out` may equal `a` or `b`.
func add(_ out: UnsafeMutablePointer<Float>, _ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ n: Int) {
    parallelFor(n, grain: 4 * kernelParallelGrain) { s, e in
        for i in s..<e { out[i] = a[i] + b[i] }
    }
}

/// dst[i] = src[i]. The ranges must not overlap unless equal.
func copy(_ dst: UnsafeMutablePointer<Float>, _ src: UnsafePointer<Float>, _ n: Int) {
    if n <= 0 || UnsafePointer(dst) == src { return }
    dst.update(from: src, count: n)
}

/// dst[i] = value.
func fill(_ dst: UnsafeMutablePointer<Float>, _ value: Float, _ n: Int) {
    if n <= 0 { return }
    dst.update(repeating: value, count: n)
}

// MARK: - Embeddings

/// out[r, :] = wte[ids[r], :] + wpe[posOffset + r % T, :] (the wpe term only when `wpe` is given; Llama has
/// none). out: [N, C], wte: [vocab, C], wpe: [maxPos, C]. The caller has validated ids and positions.
/// With `positions` ([N], packed rows) row r takes wpe[positions[r]] instead.
func embeddingForward(_ out: UnsafeMutablePointer<Float>, _ ids: UnsafePointer<Int32>,
                      _ wte: UnsafePointer<Float>, _ wpe: UnsafePointer<Float>?,
                      _ N: Int, _ T: Int, _ C: Int, _ posOffset: Int, positions: UnsafePointer<Int32>? = nil) {
    precondition(T > 0 && posOffset >= 0, "embeddingForward: bad T or posOffset")
    parallelFor(N, grain: rowGrain(C)) { r0, r1 in
        for r in r0..<r1 {
            let o = out + r * C
            let e = wte + Int(ids[r]) * C
            if let wpe {
                let p = wpe + (positions.map { Int($0[r]) } ?? (posOffset + r % T)) * C
                for i in 0..<C { o[i] = e[i] + p[i] }
            } else {
                o.update(from: e, count: C)
            }
        }
    }
}

/// dwte[ids[r], :] += dout[r, :] and dwpe[posOffset + r % T, :] += dout[r, :]; nil skips that table.
/// Parallel over columns; each table entry receives its rows' contributions in row order (deterministic).
func embeddingBackward(_ dwte: UnsafeMutablePointer<Float>?, _ dwpe: UnsafeMutablePointer<Float>?,
                       _ dout: UnsafePointer<Float>, _ ids: UnsafePointer<Int32>,
                       _ N: Int, _ T: Int, _ C: Int, _ posOffset: Int, positions: UnsafePointer<Int32>? = nil) {
    if dwte == nil && dwpe == nil { return }
    precondition(T > 0 && posOffset >= 0, "embeddingBackward: bad T or posOffset")
    parallelFor(C, grain: max(16, kernelParallelGrain / max(N, 1))) { c0, c1 in
        for r in 0..<N {
            let d = dout + r * C
            if let dwte {
                let g = dwte + Int(ids[r]) * C
                for c in c0..<c1 { g[c] += d[c] }
            }
            if let dwpe {
                let g = dwpe + (positions.map { Int($0[r]) } ?? (posOffset + r % T)) * C
                for c in c0..<c1 { g[c] += d[c] }
            }
        }
    }
}

// MARK: - Bias

/// out[r, :] += bias for every row r of [N, C].
func biasAdd(_ out: UnsafeMutablePointer<Float>, _ bias: UnsafePointer<Float>, _ N: Int, _ C: Int) {
    parallelFor(N, grain: rowGrain(C)) { r0, r1 in
        for r in r0..<r1 {
            let o = out + r * C
            for i in 0..<C { o[i] += bias[i] }
        }
    }
}

/// dbias[c] += sum over rows of dout[r, c]. Summed in Double in row order: deterministic.
func biasBackward(_ dbias: UnsafeMutablePointer<Float>, _ dout: UnsafePointer<Float>, _ N: Int, _ C: Int) {
    forEachColumnBlock(N, C) { c0, w, acc, _ in
        for r in 0..<N {
            let d = dout + r * C + c0
            for j in 0..<w { acc[j] += Double(d[j]) }
        }
        for j in 0..<w { dbias[c0 + j] += Float(acc[j]) }
    }
}

// MARK: - Random numbers

/// A seeded pseudo-random generator (xoshiro256**, state seeded by splitmix64). The same seed gives the same
/// sequence on every machine; used for weight initialisation and sampling.
public struct Rng: Sendable {
    // Internal (not private) so that training checkpoints can save and restore the exact state.
    var s0: UInt64, s1: UInt64, s2: UInt64, s3: UInt64

    public init(seed: UInt64) {
        var x = seed
        func splitmix(_ x: inout UInt64) -> UInt64 {
            x &+= 0x9E37_79B9_7F4A_7C15
            var z = x
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
        s0 = splitmix(&x); s1 = splitmix(&x); s2 = splitmix(&x); s3 = splitmix(&x)
    }

    @inline(__always)
    private static func rotl(_ x: UInt64, _ k: UInt64) -> UInt64 { (x << k) | (x >> (64 - k)) }

    /// 64 uniformly random bits.
    public mutating func nextUInt64() -> UInt64 {
        let result = Rng.rotl(s1 &* 5, 7) &* 9
        let t = s1 << 17
        s2 ^= s0
        s3 ^= s1
        s1 ^= s2
        s0 ^= s3
        s2 ^= t
        s3 = Rng.rotl(s3, 45)
        return result
    }

    /// A uniform Float in [0, 1) with 24 random bits.
    public mutating func nextFloat() -> Float {
        Float(nextUInt64() >> 40) * 0x1p-24
    }

    /// A standard normal sample (Box–Muller, computed in Double, one sample per call).
    public mutating func normal() -> Float {
        let u1 = (Double(nextUInt64() >> 11) + 1) * 0x1p-53   // (0, 1]: log is finite
        let u2 = Double(nextUInt64() >> 11) * 0x1p-53         // [0, 1)
        return Float((-2 * log(u1)).squareRoot() * cos(2 * Double.pi * u2))
    }
}

/// p[i] = N(0, std²) samples.
func fillNormal(_ p: UnsafeMutablePointer<Float>, _ n: Int, std: Float, rng: inout Rng) {
    for i in 0..<max(n, 0) { p[i] = rng.normal() * std }
}

/// p[i] = uniform samples in [low, high).
func fillUniform(_ p: UnsafeMutablePointer<Float>, _ n: Int, low: Float, high: Float, rng: inout Rng) {
    let span = high - low
    for i in 0..<max(n, 0) { p[i] = low + span * rng.nextFloat() }
}

/// p[i] = N(0, std²) samples restricted to [a, b] (as torch.nn.init.trunc_normal_ with mean 0): rejection
/// sampling, redrawing values outside the interval. After 100 rejections in a row (an interval far in a tail)
/// the last draw is clamped into [a, b], so the loop always ends. If a > b (or either is NaN) every value is a.
func fillTruncNormal(_ p: UnsafeMutablePointer<Float>, _ n: Int, std: Float, a: Float, b: Float, rng: inout Rng) {
    if !(a <= b) {
        fill(p, a, n)
        return
    }
    for i in 0..<max(n, 0) {
        var z = rng.normal() * std
        var tries = 1
        while !(z >= a && z <= b) && tries < 100 {
            z = rng.normal() * std
            tries += 1
        }
        if !(z >= a && z <= b) { z = z < a || z.isNaN ? a : b }
        p[i] = z
    }
}
