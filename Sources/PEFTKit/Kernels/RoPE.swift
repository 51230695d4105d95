import CPEFTKitKernels
#if canImport(Glibc)
import Glibc
#endif

// Rotary position embeddings (Llama), in the "rotate_half" layout of transformers: within each head of D
// values, element i < D/2 pairs with element i + D/2.

/// cos / sin of the rotary angles for positions 0..<capacity, [capacity, headDim/2] each, computed as
/// transformers' LlamaRotaryEmbedding (default rope type) does in float32:
/// inv_freq[i] = 1 / (theta ** (Float(2i) / Float(headDim))), angle = Float(pos) * inv_freq[i].
/// The power is evaluated in Double from the Float base and exponent and rounded once; cos and sin likewise
/// from the Float angle. (torch uses its own vectorised pow/cos/sin, so values may differ in the last ulp.)
///
/// The table grows on demand (`reserve`) up to `maxPositions`, so a config that allows a million positions
/// costs nothing until sequences that long are run; each row's values do not depend on when it was computed.
final class RopeTable: @unchecked Sendable {
    let theta: Float
    let headDim: Int
    let maxPositions: Int
    /// headDim / 2: the row length of `cos` and `sin`.
    let half: Int
    /// Positions computed so far.
    private(set) var capacity = 0
    /// [capacity, half]
    private(set) var cos: UnsafeMutablePointer<Float>
    /// [capacity, half]
    private(set) var sin: UnsafeMutablePointer<Float>
    /// [half], the inverse frequencies.
    let invFreq: UnsafeMutablePointer<Float>
    private let freqStorage: Storage
    private var storage: Storage?

    init(theta: Float, headDim: Int, maxPositions: Int, initialCapacity: Int = 2048) throws {
        guard theta.isFinite, theta > 0 else {
            throw PEFTKitError.invalidArgument("rope theta must be positive and finite, got \(theta)")
        }
        guard headDim > 0, headDim % 2 == 0, headDim <= 1 << 16 else {
            throw PEFTKitError.invalidArgument("rope head dimension must be even and in 2...65536, got \(headDim)")
        }
        guard maxPositions > 0, maxPositions <= 1 << 24 else {
            throw PEFTKitError.invalidArgument("rope positions must be in 1...16777216, got \(maxPositions)")
        }
        let half = headDim / 2
        self.theta = theta
        self.headDim = headDim
        self.maxPositions = maxPositions
        self.half = half
        freqStorage = try Storage.allocate(floats: half)
        invFreq = freqStorage.floats
        cos = invFreq
        sin = invFreq
        for i in 0..<half {
            // torch: arange(0, dim, 2, int64).float() / dim, then base ** that (float32), then 1.0 / it.
            let exponent = Float(2 * i) / Float(headDim)
            let p = Float(pow(Double(theta), Double(exponent)))
            invFreq[i] = 1 / p
        }
        try reserve(min(maxPositions, initialCapacity))
    }

    /// Makes positions 0..<n available (n ≤ maxPositions), growing the table geometrically. Not thread-safe:
    /// call it from the thread that owns the model before a pass, never during one.
    func reserve(_ n: Int) throws {
        guard n > capacity else { return }
        guard n <= maxPositions else {
            throw PEFTKitError.invalidArgument("position \(n - 1) is past the model's maximum \(maxPositions)")
        }
        let rows = min(maxPositions, max(n, 2 * capacity))
        let (table, o1) = rows.multipliedReportingOverflow(by: half)
        let (total, o2) = table.multipliedReportingOverflow(by: 2)
        guard !o1, !o2 else { throw PEFTKitError.outOfMemory("rope table of \(rows) x \(headDim) overflows") }
        let s = try Storage.allocate(floats: total)
        let cosT = s.floats, sinT = s.floats + table, inv = invFreq, half = self.half
        let old = capacity
        if old > 0 {
            cosT.update(from: cos, count: old * half)
            sinT.update(from: sin, count: old * half)
        }
        parallelFor(rows - old, grain: max(1, 4096 / half)) { p0, p1 in
            for pos in (old + p0)..<(old + p1) {
                for i in 0..<half {
                    let angle = Double(Float(pos) * inv[i])
                    cosT[pos * half + i] = Float(Glibc.cos(angle))
                    sinT[pos * half + i] = Float(Glibc.sin(angle))
                }
            }
        }
        storage = s
        cos = cosT
        sin = sinT
        capacity = rows
    }
}

/// Rotates the heads of one row: for each head, (a, b) = (x[i], x[i + D/2]) becomes
/// (a·cos − b·s, b·cos + a·s) with s = sign·sin. sign = −1 applies the transpose (inverse) rotation.
/// In C on the CPU's vector path (elementwise.c); the vector paths fuse one product of each output.
@inline(__always)
private func ropeRotateRow(_ xr: UnsafeMutablePointer<Float>, _ cosRow: UnsafePointer<Float>,
                           _ sinRow: UnsafePointer<Float>, _ numHeads: Int, _ headDim: Int, _ sign: Float,
                           _ isa: ElementwiseISA) {
    pk_ew_rope_row(isa.rawValue, xr, cosRow, sinRow, Int64(numHeads), Int64(headDim), sign)
}

@inline(__always)
private func ropeApply(_ x: UnsafeMutablePointer<Float>, _ table: RopeTable, rows: Int, seqLen: Int,
                       posOffset: Int, numHeads: Int, headDim: Int, rowStride: Int, sign: Float,
                       isa: ElementwiseISA = .active) {
    precondition(headDim == table.headDim, "rope: head dimension \(headDim) differs from the table's \(table.headDim)")
    precondition(seqLen > 0 && posOffset >= 0 && posOffset + min(seqLen, rows) <= table.capacity,
                 "rope: positions exceed the table")
    precondition(rowStride >= numHeads * headDim, "rope: row stride smaller than numHeads * headDim")
    let half = table.half
    let cosT = table.cos, sinT = table.sin
    parallelFor(rows, grain: rowGrain(numHeads * headDim)) { r0, r1 in
        for r in r0..<r1 {
            let pos = posOffset + r % seqLen
            ropeRotateRow(x + r * rowStride, cosT + pos * half, sinT + pos * half, numHeads, headDim, sign, isa)
        }
    }
}

@inline(__always)
private func ropeApply(_ x: UnsafeMutablePointer<Float>, _ table: RopeTable, rows: Int,
                       positions: UnsafePointer<Int32>, numHeads: Int, headDim: Int, rowStride: Int,
                       sign: Float, isa: ElementwiseISA = .active) {
    precondition(headDim == table.headDim, "rope: head dimension \(headDim) differs from the table's \(table.headDim)")
    precondition(rowStride >= numHeads * headDim, "rope: row stride smaller than numHeads * headDim")
    let half = table.half
    let maxPos = table.capacity
    let cosT = table.cos, sinT = table.sin
    parallelFor(rows, grain: rowGrain(numHeads * headDim)) { r0, r1 in
        for r in r0..<r1 {
            let pos = Int(positions[r])
            precondition(pos >= 0 && pos < maxPos, "rope: position \(pos) outside the table")
            ropeRotateRow(x + r * rowStride, cosT + pos * half, sinT + pos * half, numHeads, headDim, sign, isa)
        }
    }
}

/// Applies the rotary embedding in place. Row r (0..<rows) sits at x + r·rowStride, holds `numHeads` heads of
/// `headDim` values and has position posOffset + r % seqLen. For each head and i < D/2, with a = x[i],
/// b = x[i + D/2]: x[i] = a·cos − b·sin, x[i + D/2] = b·cos + a·sin (transformers' apply_rotary_pos_emb).
/// Values between numHeads·headDim and rowStride are left alone (e.g. the V part of a fused QKV row).
func ropeForward(_ x: UnsafeMutablePointer<Float>, _ table: RopeTable, rows: Int, seqLen: Int, posOffset: Int,
                 numHeads: Int, headDim: Int, rowStride: Int, isa: ElementwiseISA = .active) {
    ropeApply(x, table, rows: rows, seqLen: seqLen, posOffset: posOffset, numHeads: numHeads,
              headDim: headDim, rowStride: rowStride, sign: 1, isa: isa)
}

/// `ropeForward` with an explicit position per row (positions[r] in 0..<table.capacity).
func ropeForward(_ x: UnsafeMutablePointer<Float>, _ table: RopeTable, rows: Int, positions: UnsafePointer<Int32>,
                 numHeads: Int, headDim: Int, rowStride: Int) {
    ropeApply(x, table, rows: rows, positions: positions, numHeads: numHeads, headDim: headDim,
              rowStride: rowStride, sign: 1)
}

/// Backward of `ropeForward`, in place on the gradient: the transpose rotation
/// a' = a·cos + b·sin, b' = b·cos − a·sin. Unlike the other backward functions this transforms `dx` in place
/// rather than accumulating: the rotation is the whole op.
func ropeBackward(_ dx: UnsafeMutablePointer<Float>, _ table: RopeTable, rows: Int, seqLen: Int, posOffset: Int,
                  numHeads: Int, headDim: Int, rowStride: Int, isa: ElementwiseISA = .active) {
    ropeApply(dx, table, rows: rows, seqLen: seqLen, posOffset: posOffset, numHeads: numHeads,
              headDim: headDim, rowStride: rowStride, sign: -1, isa: isa)
}

/// `ropeBackward` with an explicit position per row.
func ropeBackward(_ dx: UnsafeMutablePointer<Float>, _ table: RopeTable, rows: Int, positions: UnsafePointer<Int32>,
                  numHeads: Int, headDim: Int, rowStride: Int) {
    ropeApply(dx, table, rows: rows, positions: positions, numHeads: numHeads, headDim: headDim,
              rowStride: rowStride, sign: -1)
}
