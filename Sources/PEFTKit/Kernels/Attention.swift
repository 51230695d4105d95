import CPEFTKitKernels
import COpenBLAS
#if canImport(Glibc)
import Glibc
#endif

/// Where one of q, k, v or the attention output lives: a base pointer, the row stride (elements between
/// consecutive positions) and the batch stride (elements between consecutive sequences).
struct StridedRows {
    var ptr: UnsafeMutablePointer<Float>
    var ld: Int
    var batchStride: Int
}

/// Sizes of one attention call. Causal: query i of a sequence sits at absolute position `pastLen + i` and
/// sees keys 0...pastLen+i; `tk` is the number of keys present (pastLen + tq for a causal call).
/// Bidirectional (`causal` false, encoders): every query sees every key, except keys a padding mask removes.
struct AttentionShape {
    var batch: Int
    var tq: Int
    var tk: Int
    var pastLen: Int
    var heads: Int
    var kvHeads: Int
    var headDim: Int
    var causal = true
    /// Padding mask over the last `tq` keys of each sequence ([batch, tq], 0 = padding, not attended); the
    /// `tk - tq` keys before them (a prefix) are always attended. nil = no padding.
    var keyMask: UnsafePointer<Int32>? = nil
    /// Packed rows ([batch, tq]): for each query, the position in its row where its record starts. Attention is
    /// then block-diagonal and causal within each record (only with `causal`, no past keys and no padding mask:
    /// tk == tq). nil = one record per row.
    var segmentStarts: UnsafePointer<Int32>? = nil
    var scale: Float { 1 / Float(headDim).squareRoot() }

    /// Keys query `i` may see (a prefix of the row; the padding mask then removes some of them).
    @inline(__always)
    func visible(_ i: Int) -> Int { causal ? min(tk, pastLen + i + 1) : tk }
}

/// Causal multi-head attention with grouped-query heads: out = softmax(q·kᵀ/√D + mask)·v per head.
/// `probs` [B, H, tq, tk] receives the attention probabilities (kept for the backward pass).
/// Head h reads key/value head h / (H / KVH), as transformers' `repeat_kv`.
///
/// Parallel over (sequence, head), each head's two products on a single-threaded BLAS: per-head products
/// are small (T×T×D), and splitting each of them over the threads cost more in synchronisation than the
/// heads cost one after the other. Every output element is computed as in a sequential run.
///
/// `out` nil (training's backward refilling `probs`, `tq` > 1): the probabilities only, as the full call writes them.
func attentionForward(out: StridedRows?, probs: UnsafeMutablePointer<Float>, q: StridedRows, k: StridedRows, v: StridedRows,
                      _ s: AttentionShape) {
    if let starts = s.segmentStarts {
        attentionForwardPacked(out: out, probs: probs, q: q, k: k, v: v, starts: starts, s)
        return
    }
    if s.tq == 1 && s.causal && s.keyMask == nil, let out {
        attentionForwardOneQuery(out: out, probs: probs, q: q, k: k, v: v, s)
        return
    }
    let group = s.heads / s.kvHeads
    let D = s.headDim, tq = s.tq, tk = s.tk, H = s.heads
    let alpha = s.scale
    let mask = s.keyMask, maskOffset = tk - tq
    parallelFor(s.batch * H) { st, en in
        for bh in st..<en {
            let b = bh / H, h = bh % H, kvh = h / group
            let qp = q.ptr + b * q.batchStride + h * D
            let kp = k.ptr + b * k.batchStride + kvh * D
            let pp = probs + bh * tq * tk
            sgemm(transA: false, transB: true, m: tq, n: tk, k: D,
                  alpha: alpha, a: qp, lda: q.ld, b: kp, ldb: k.ld, beta: 0, c: pp, ldc: tk)
            for i in 0..<tq {
                let valid = s.visible(i)
                let row = pp + i * tk
                if let mask {
                    // Padding keys score -inf: their probability is exactly 0 (as transformers' additive
                    // float-min mask gives once exponentiated). Masking, the (exact) row max and the softmax in
                    // one C pass: the same values as the unmasked path's steps.
                    pk_ew_masked_softmax_row(ElementwiseISA.active.rawValue, row, Int64(valid), Int64(tk), mask + b * tq,
                                             Int64(maskOffset))
                    continue
                }
                var mx = -Float.infinity
                for j in 0..<valid { mx = max(mx, row[j]) }
                softmaxRow(row, valid: valid, width: tk, max: mx)
            }
            guard let out else { continue }
            let vp = v.ptr + b * v.batchStride + kvh * D
            let op = out.ptr + b * out.batchStride + h * D
            sgemm(transA: false, transB: false, m: tq, n: D, k: tk,
                  alpha: 1, a: pp, lda: tk, b: vp, ldb: v.ld, beta: 0, c: op, ldc: out.ld)
        }
    }
}

/// `attentionForward` for one query per sequence (a decode step), parallel over (sequence, head): the scores are
/// the key cache's rows dotted with the query and the output is the value cache's columns weighted by the
/// probabilities, both with the decode matrix-vector kernels (peftkit_matvec.h) over the cache as it is laid
/// out (rows `ld` floats apart), which keep the keys' and values' rows streaming through vector registers. Two
/// sgemm calls per head cost more in call and packing overhead than the arithmetic they do.
func attentionForwardOneQuery(out: StridedRows, probs: UnsafeMutablePointer<Float>, q: StridedRows, k: StridedRows,
                              v: StridedRows, _ s: AttentionShape) {
    let group = s.heads / s.kvHeads
    let D = s.headDim, tk = s.tk, H = s.heads
    let alpha = s.scale
    let valid = min(tk, s.pastLen + 1)
    let isa = ElementwiseISA.active.rawValue, rowsISA = matvecRowsISA
    parallelFor(s.batch * H, grain: max(1, kernelParallelGrain / max(1, valid * D))) { st, en in
        for bh in st..<en {
            let b = bh / H, h = bh % H, kvh = h / group
            let qp = q.ptr + b * q.batchStride + h * D
            let kb = k.ptr + b * k.batchStride + kvh * D
            let vb = v.ptr + b * v.batchStride + kvh * D
            let row = probs + bh * tk
            pk_f32mv_rows(rowsISA, kb, Int64(k.ld), qp, Int64(D), alpha, 0, row, 0, Int64(valid))
            var mx = -Float.infinity
            for j in 0..<valid { mx = max(mx, row[j]) }
            softmaxRow(row, valid: valid, width: tk, max: mx)
            let op = out.ptr + b * out.batchStride + h * D
            pk_f32mv_cols(isa, vb, Int64(v.ld), row, Int64(valid), 1, 0, op, 0, Int64(D))
        }
    }
}

/// Backward of `attentionForward` (no cache). Padding keys have probability 0, so their score gradients are 0.
/// Accumulates into dq, dk, dv. `dprobs` is scratch of the size of `probs`, or nil: each task then works in
/// one [tq, tk] block of its own (the values are the same; training passes nil, so no [B, H, tq, tk] gradient
/// buffer is ever resident).
/// Parallel over (sequence, key/value head): the heads sharing a key/value head accumulate into the same dk
/// and dv, so they run in one task, in head order, as a sequential run does.
func attentionBackward(dq: StridedRows, dk: StridedRows, dv: StridedRows, dprobs: UnsafeMutablePointer<Float>?,
                       dout: StridedRows, probs: UnsafePointer<Float>, q: StridedRows, k: StridedRows, v: StridedRows,
                       _ s: AttentionShape) {
    if let starts = s.segmentStarts {
        attentionBackwardPacked(dq: dq, dk: dk, dv: dv, dprobs: dprobs, dout: dout, probs: probs, q: q, k: k, v: v,
                                starts: starts, s)
        return
    }
    let group = s.heads / s.kvHeads
    let D = s.headDim, tq = s.tq, tk = s.tk, H = s.heads, KVH = s.kvHeads
    let scale = s.scale
    parallelFor(s.batch * KVH) { st, en in
        let own = dprobs == nil ? UnsafeMutablePointer<Float>.allocate(capacity: tq * tk) : nil
        defer { own?.deallocate() }
        for bk in st..<en {
            let b = bk / KVH, kvh = bk % KVH
            let vp = v.ptr + b * v.batchStride + kvh * D
            let kp = k.ptr + b * k.batchStride + kvh * D
            let dvp = dv.ptr + b * dv.batchStride + kvh * D
            let dkp = dk.ptr + b * dk.batchStride + kvh * D
            for h in (kvh * group)..<((kvh + 1) * group) {
                let pp = probs + ((b * H + h) * tq) * tk
                let dsp = own ?? dprobs! + ((b * H + h) * tq) * tk
                let dop = dout.ptr + b * dout.batchStride + h * D
                // dP = dO · Vᵀ
                sgemm(transA: false, transB: true, m: tq, n: tk, k: D,
                      alpha: 1, a: dop, lda: dout.ld, b: vp, ldb: v.ld, beta: 0, c: dsp, ldc: tk)
                // dS = P ⊙ (dP − Σ_j P·dP) · scale
                for i in 0..<tq {
                    let valid = s.visible(i)
                    let p = pp + i * tk
                    let dp = dsp + i * tk
                    var dot: Float = 0
                    for j in 0..<valid { dot += p[j] * dp[j] }
                    for j in 0..<valid { dp[j] = p[j] * (dp[j] - dot) * scale }
                    if valid < tk { (dp + valid).update(repeating: 0, count: tk - valid) }
                }
                // dV += Pᵀ · dO
                sgemm(transA: true, transB: false, m: tk, n: D, k: tq,
                      alpha: 1, a: pp, lda: tk, b: dop, ldb: dout.ld, beta: 1, c: dvp, ldc: dv.ld)
                // dQ += dS · K
                sgemm(transA: false, transB: false, m: tq, n: D, k: tk,
                      alpha: 1, a: dsp, lda: tk, b: kp, ldb: k.ld, beta: 1, c: dq.ptr + b * dq.batchStride + h * D, ldc: dq.ld)
                // dK += dSᵀ · Q
                sgemm(transA: true, transB: false, m: tk, n: D, k: tq,
                      alpha: 1, a: dsp, lda: tk, b: q.ptr + b * q.batchStride + h * D, ldb: q.ld, beta: 1, c: dkp, ldc: dk.ld)
            }
        }
    }
}

// MARK: packed rows

/// Calls `body(start, length)` for each record of row `b` of a packed batch, in order. A record starts where
/// `starts[t] == t`.
@inline(__always)
func forEachSegment(_ starts: UnsafePointer<Int32>, row b: Int, length T: Int, _ body: (Int, Int) -> Void) {
    let st = starts + b * T
    var s = 0
    while s < T {
        var e = s + 1
        while e < T && Int(st[e]) != e { e += 1 }
        body(s, e - s)
        s = e
    }
}

/// `attentionForward` over packed rows: each record attends only to itself (causally), so the scores, softmax and
/// weighted sums run per record block on the diagonal; the work between records is skipped, not masked. Within
/// a record of length n at offset s, query s+i sees keys s...s+i, exactly as the record alone at positions 0..<n.
/// Only the diagonal blocks of `probs` are written (the backward reads only those).
func attentionForwardPacked(out: StridedRows?, probs: UnsafeMutablePointer<Float>, q: StridedRows, k: StridedRows,
                            v: StridedRows, starts: UnsafePointer<Int32>, _ s: AttentionShape) {
    let group = s.heads / s.kvHeads
    let D = s.headDim, tq = s.tq, tk = s.tk, H = s.heads
    let alpha = s.scale
    do {
        parallelFor(s.batch * H) { st, en in
            for bh in st..<en {
                let b = bh / H, h = bh % H, kvh = h / group
                let qb = q.ptr + b * q.batchStride + h * D
                let kb = k.ptr + b * k.batchStride + kvh * D
                let vb = v.ptr + b * v.batchStride + kvh * D
                let pp = probs + bh * tq * tk
                forEachSegment(starts, row: b, length: tq) { s0, n in
                    let blk = pp + s0 * tk + s0
                    sgemm(transA: false, transB: true, m: n, n: n, k: D,
                          alpha: alpha, a: qb + s0 * q.ld, lda: q.ld, b: kb + s0 * k.ld, ldb: k.ld, beta: 0, c: blk, ldc: tk)
                    for i in 0..<n {
                        let row = blk + i * tk
                        var mx = -Float.infinity
                        for j in 0...i { mx = max(mx, row[j]) }
                        softmaxRow(row, valid: i + 1, width: n, max: mx)
                    }
                    guard let out else { return }
                    let ob = out.ptr + b * out.batchStride + h * D
                    sgemm(transA: false, transB: false, m: n, n: D, k: n,
                          alpha: 1, a: blk, lda: tk, b: vb + s0 * v.ld, ldb: v.ld, beta: 0, c: ob + s0 * out.ld, ldc: out.ld)
                }
            }
        }
    }
}

/// Backward of `attentionForwardPacked`: the products of `attentionBackward`, per record block (`dprobs` as there).
func attentionBackwardPacked(dq: StridedRows, dk: StridedRows, dv: StridedRows, dprobs: UnsafeMutablePointer<Float>?,
                             dout: StridedRows, probs: UnsafePointer<Float>, q: StridedRows, k: StridedRows, v: StridedRows,
                             starts: UnsafePointer<Int32>, _ s: AttentionShape) {
    let group = s.heads / s.kvHeads
    let D = s.headDim, tq = s.tq, tk = s.tk, H = s.heads, KVH = s.kvHeads
    let scale = s.scale
    do {
        parallelFor(s.batch * KVH) { st, en in
            let own = dprobs == nil ? UnsafeMutablePointer<Float>.allocate(capacity: tq * tk) : nil
            defer { own?.deallocate() }
            for bk in st..<en {
                let b = bk / KVH, kvh = bk % KVH
                let vb = v.ptr + b * v.batchStride + kvh * D
                let kb = k.ptr + b * k.batchStride + kvh * D
                let dvb = dv.ptr + b * dv.batchStride + kvh * D
                let dkb = dk.ptr + b * dk.batchStride + kvh * D
                for h in (kvh * group)..<((kvh + 1) * group) {
                    let pp = probs + ((b * H + h) * tq) * tk
                    let dsp = own ?? dprobs! + ((b * H + h) * tq) * tk
                    let dob = dout.ptr + b * dout.batchStride + h * D
                    let qb = q.ptr + b * q.batchStride + h * D
                    let dqb = dq.ptr + b * dq.batchStride + h * D
                    forEachSegment(starts, row: b, length: tq) { s0, n in
                        let pb = pp + s0 * tk + s0, db = dsp + s0 * tk + s0
                        let dop = dob + s0 * dout.ld
                        // dP = dO · Vᵀ
                        sgemm(transA: false, transB: true, m: n, n: n, k: D,
                              alpha: 1, a: dop, lda: dout.ld, b: vb + s0 * v.ld, ldb: v.ld, beta: 0, c: db, ldc: tk)
                        // dS = P ⊙ (dP − Σ_j P·dP) · scale, zero above the diagonal
                        for i in 0..<n {
                            let p = pb + i * tk, dp = db + i * tk
                            var dot: Float = 0
                            for j in 0...i { dot += p[j] * dp[j] }
                            for j in 0...i { dp[j] = p[j] * (dp[j] - dot) * scale }
                            if i + 1 < n { (dp + i + 1).update(repeating: 0, count: n - i - 1) }
                        }
                        // dV += Pᵀ · dO
                        sgemm(transA: true, transB: false, m: n, n: D, k: n,
                              alpha: 1, a: pb, lda: tk, b: dop, ldb: dout.ld, beta: 1, c: dvb + s0 * dv.ld, ldc: dv.ld)
                        // dQ += dS · K
                        sgemm(transA: false, transB: false, m: n, n: D, k: n,
                              alpha: 1, a: db, lda: tk, b: kb + s0 * k.ld, ldb: k.ld, beta: 1, c: dqb + s0 * dq.ld, ldc: dq.ld)
                        // dK += dSᵀ · Q
                        sgemm(transA: true, transB: false, m: n, n: D, k: n,
                              alpha: 1, a: db, lda: tk, b: qb + s0 * q.ld, ldb: q.ld, beta: 1, c: dkb + s0 * dk.ld, ldc: dk.ld)
                    }
                }
            }
        }
    }
}

/// Softmax of the first `valid` scores of a row of `width` (their maximum is `mx`), in place; the masked rest
/// of the row becomes 0. In C on the CPU's vector path (`pk_ew_softmax_row`: the vector exp, the sum in Float
/// lanes added in a fixed order).
@inline(__always)
func softmaxRow(_ row: UnsafeMutablePointer<Float>, valid: Int, width: Int, max mx: Float,
                isa: ElementwiseISA = .active) {
    pk_ew_softmax_row(isa.rawValue, row, Int64(valid), Int64(width), mx)
}
