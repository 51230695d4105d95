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

/// Sizes of one causal attention call. Query i of a sequence sits at absolute position `pastLen + i` and
/// sees keys 0...pastLen+i. `tk` is the number of keys present (pastLen + tq for a causal call).
struct AttentionShape {
    var batch: Int
    var tq: Int
    var tk: Int
    var pastLen: Int
    var heads: Int
    var kvHeads: Int
    var headDim: Int
    var scale: Float { 1 / Float(headDim).squareRoot() }
}

/// Causal multi-head attention with grouped-query heads: out = softmax(q·kᵀ/√D + mask)·v per head.
/// `probs` [B, H, tq, tk] receives the attention probabilities (kept for the backward pass).
/// Head h reads key/value head h / (H / KVH), as transformers' `repeat_kv`.
func attentionForward(out: StridedRows, probs: UnsafeMutablePointer<Float>, q: StridedRows, k: StridedRows, v: StridedRows,
                      _ s: AttentionShape) {
    if s.tq == 1 {
        attentionForwardOneQuery(out: out, probs: probs, q: q, k: k, v: v, s)
        return
    }
    let group = s.heads / s.kvHeads
    let D = s.headDim, tq = s.tq, tk = s.tk
    let alpha = s.scale
    for b in 0..<s.batch {
        for h in 0..<s.heads {
            let kvh = h / group
            let qp = q.ptr + b * q.batchStride + h * D
            let kp = k.ptr + b * k.batchStride + kvh * D
            let pp = probs + ((b * s.heads + h) * tq) * tk
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(tq), Int32(tk), Int32(D),
                        alpha, qp, Int32(q.ld), kp, Int32(k.ld), 0, pp, Int32(tk))
        }
    }
    let rows = s.batch * s.heads * tq
    let past = s.pastLen
    parallelFor(rows, grain: 16) { st, en in
        for r in st..<en {
            let i = r % tq
            let valid = min(tk, past + i + 1)
            let row = probs + r * tk
            var mx = -Float.infinity
            for j in 0..<valid { mx = max(mx, row[j]) }
            var sum: Float = 0
            for j in 0..<valid {
                let e = expf(row[j] - mx)
                row[j] = e
                sum += e
            }
            let inv = 1 / sum
            for j in 0..<valid { row[j] *= inv }
            if valid < tk {
                (row + valid).update(repeating: 0, count: tk - valid)
            }
        }
    }
    for b in 0..<s.batch {
        for h in 0..<s.heads {
            let kvh = h / group
            let vp = v.ptr + b * v.batchStride + kvh * D
            let op = out.ptr + b * out.batchStride + h * D
            let pp = probs + ((b * s.heads + h) * tq) * tk
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(tq), Int32(D), Int32(tk),
                        1, pp, Int32(tk), vp, Int32(v.ld), 0, op, Int32(out.ld))
        }
    }
}

/// `attentionForward` for one query per sequence (a decode step): dot products, softmax and the weighted sum
/// of values written directly, parallel over (sequence, head). Two small sgemm calls per head cost more in
/// call and packing overhead than the arithmetic they do.
func attentionForwardOneQuery(out: StridedRows, probs: UnsafeMutablePointer<Float>, q: StridedRows, k: StridedRows,
                              v: StridedRows, _ s: AttentionShape) {
    let group = s.heads / s.kvHeads
    let D = s.headDim, tk = s.tk, H = s.heads
    let alpha = s.scale
    let valid = min(tk, s.pastLen + 1)
    parallelFor(s.batch * H, grain: max(1, kernelParallelGrain / max(1, valid * D))) { st, en in
        for bh in st..<en {
            let b = bh / H, h = bh % H, kvh = h / group
            let qp = q.ptr + b * q.batchStride + h * D
            let kb = k.ptr + b * k.batchStride + kvh * D
            let vb = v.ptr + b * v.batchStride + kvh * D
            let row = probs + bh * tk
            var mx = -Float.infinity
            for j in 0..<valid {
                let kp = kb + j * k.ld
                var acc = SIMD8<Float>(repeating: 0)
                var d = 0
                while d < D {
                    acc += load8(qp, d, D) * load8(kp, d, D)
                    d += 8
                }
                let sc = acc.sum() * alpha
                row[j] = sc
                mx = max(mx, sc)
            }
            var sum: Float = 0
            for j in 0..<valid {
                let e = expf(row[j] - mx)
                row[j] = e
                sum += e
            }
            let inv = 1 / sum
            for j in 0..<valid { row[j] *= inv }
            if valid < tk { (row + valid).update(repeating: 0, count: tk - valid) }
            let op = out.ptr + b * out.batchStride + h * D
            var d = 0
            while d < D {
                var acc = SIMD8<Float>(repeating: 0)
                for j in 0..<valid { acc += row[j] * load8(vb + j * v.ld, d, D) }
                store8(op, d, D, acc)
                d += 8
            }
        }
    }
}

/// Backward of `attentionForward` for a self-contained causal call (pastLen 0, tk == tq).
/// Accumulates into dq, dk, dv. `dprobs` is scratch of the size of `probs`.
func attentionBackward(dq: StridedRows, dk: StridedRows, dv: StridedRows, dprobs: UnsafeMutablePointer<Float>,
                       dout: StridedRows, probs: UnsafePointer<Float>, q: StridedRows, k: StridedRows, v: StridedRows,
                       _ s: AttentionShape) {
    let group = s.heads / s.kvHeads
    let D = s.headDim, tq = s.tq, tk = s.tk
    // dP = dO · Vᵀ
    for b in 0..<s.batch {
        for h in 0..<s.heads {
            let kvh = h / group
            let vp = v.ptr + b * v.batchStride + kvh * D
            let dop = dout.ptr + b * dout.batchStride + h * D
            let dpp = dprobs + ((b * s.heads + h) * tq) * tk
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(tq), Int32(tk), Int32(D),
                        1, dop, Int32(dout.ld), vp, Int32(v.ld), 0, dpp, Int32(tk))
        }
    }
    // dS = P ⊙ (dP − Σ_j P·dP) · scale
    let rows = s.batch * s.heads * tq
    let past = s.pastLen
    let scale = s.scale
    parallelFor(rows, grain: 16) { st, en in
        for r in st..<en {
            let i = r % tq
            let valid = min(tk, past + i + 1)
            let p = probs + r * tk
            let dp = dprobs + r * tk
            var dot: Float = 0
            for j in 0..<valid { dot += p[j] * dp[j] }
            for j in 0..<valid { dp[j] = p[j] * (dp[j] - dot) * scale }
            if valid < tk { (dp + valid).update(repeating: 0, count: tk - valid) }
        }
    }
    for b in 0..<s.batch {
        for h in 0..<s.heads {
            let kvh = h / group
            let pp = probs + ((b * s.heads + h) * tq) * tk
            let dsp = dprobs + ((b * s.heads + h) * tq) * tk
            let dop = dout.ptr + b * dout.batchStride + h * D
            // dV += Pᵀ · dO
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, Int32(tk), Int32(D), Int32(tq),
                        1, pp, Int32(tk), dop, Int32(dout.ld), 1, dv.ptr + b * dv.batchStride + kvh * D, Int32(dv.ld))
            // dQ += dS · K
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(tq), Int32(D), Int32(tk),
                        1, dsp, Int32(tk), k.ptr + b * k.batchStride + kvh * D, Int32(k.ld),
                        1, dq.ptr + b * dq.batchStride + h * D, Int32(dq.ld))
            // dK += dSᵀ · Q
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, Int32(tk), Int32(D), Int32(tq),
                        1, dsp, Int32(tk), q.ptr + b * q.batchStride + h * D, Int32(q.ld),
                        1, dk.ptr + b * dk.batchStride + kvh * D, Int32(dk.ld))
        }
    }
}
