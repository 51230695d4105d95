/// Where a frozen linear's weight lives and in which number format: fp32 (memory-mapped from the model file,
/// or owned: a copy made for a merge or for full fine-tuning), or GGUF blocks (Q8_0 … Q6_K, and F16/BF16
/// through the same type) that are widened a tile at a time inside the products. Every caller of
/// `FrozenLinear` stays as it is whatever the case.
enum WeightStorage {
    /// fp32, in the layout given by `FrozenLinear.transposed`.
    case f32(UnsafeMutablePointer<Float>)
    /// GGUF blocks, [out, in] (never transposed). Frozen for good: no weight gradient, no merge.
    case quantized(QuantizedMatrix, QuantWorkspace)
}

/// The fp32 scratch the quantized products widen their tiles into, shared by every quantized linear of one
/// model and allocated once when the model is loaded (no allocation inside a step). One model runs one call
/// at a time (its lock), so one workspace per model is enough.
final class QuantWorkspace: @unchecked Sendable {
    let storage: Storage
    /// Floats for the widened panel (`QuantizedMatrix.panelFloats`), then `outFeatures` floats for a
    /// matrix-vector result that is added to what the output already holds.
    let panelFloats: Int

    /// Room for the products of every matrix in `matrices`.
    init(for matrices: [QuantizedMatrix]) throws {
        panelFloats = matrices.map(\.panelFloats).max() ?? 0
        let extra = matrices.map(\.outFeatures).max() ?? 0
        storage = try Storage.allocate(floats: max(1, panelFloats + extra))
    }

    var panel: UnsafeMutablePointer<Float> { storage.floats }
    var vector: UnsafeMutablePointer<Float> { storage.floats + panelFloats }
}

/// A dense layer `y = x·Wᵀ + b` of the base model whose weight is stored either as `nn.Linear` ([out, in]) or
/// as GPT-2's `Conv1D` ([in, out]). Both layouts are used in place through the BLAS transpose flags: no copies.
/// Frozen under adapter training (`backwardInput` only: the dX half of the backward); full fine-tuning also
/// calls `backwardWeights` (dW) with a gradient view of the same layout.
struct FrozenLinear {
    var storage: WeightStorage
    var bias: UnsafeMutablePointer<Float>?
    let inFeatures: Int
    let outFeatures: Int
    /// True when the weight is stored [in, out] (HF `Conv1D`), false for [out, in] (`nn.Linear`).
    let transposed: Bool

    init(weight: UnsafeMutablePointer<Float>, bias: UnsafeMutablePointer<Float>?, inFeatures: Int, outFeatures: Int,
         transposed: Bool) {
        storage = .f32(weight)
        self.bias = bias
        self.inFeatures = inFeatures
        self.outFeatures = outFeatures
        self.transposed = transposed
    }

    /// A linear over a weight kept in GGUF blocks ([out, in]); `workspace` must have room for `weight`'s panel.
    init(quantized weight: QuantizedMatrix, bias: UnsafeMutablePointer<Float>?, workspace: QuantWorkspace) {
        storage = .quantized(weight, workspace)
        self.bias = bias
        inFeatures = weight.inFeatures
        outFeatures = weight.outFeatures
        transposed = false
    }

    /// The quantized weight, nil for fp32 storage.
    var quantized: QuantizedMatrix? {
        if case .quantized(let q, _) = storage { return q }
        return nil
    }

    /// The fp32 weight, nil when the weight is kept in blocks.
    var f32Weight: UnsafeMutablePointer<Float>? {
        if case .f32(let w) = storage { return w }
        return nil
    }

    /// The fp32 weight (what merging copies and edits, and what a gradient view points at). Setting it
    /// makes the storage fp32. Only for fp32 storage: merging and full fine-tuning refuse quantized weights
    /// before they get here (`Engine.requireWidened`).
    var weight: UnsafeMutablePointer<Float> {
        get {
            guard let w = f32Weight else { preconditionFailure("the fp32 view of a quantized weight was asked for") }
            return w
        }
        set { storage = .f32(newValue) }
    }

    /// ‖W_j‖² for every output feature j, in Double, whatever the storage (quantized rows are widened one at a time).
    func outputSquaredNorms() -> [Double] {
        let O = outFeatures, I = inFeatures
        var out = [Double](repeating: 0, count: O)
        switch storage {
        case .f32(let w):
            if transposed {
                for row in 0..<I { let wr = w + row * O; for j in 0..<O { out[j] += Double(wr[j]) * Double(wr[j]) } }
            } else {
                for j in 0..<O {
                    let wr = w + j * I
                    var acc = 0.0
                    for c in 0..<I { acc += Double(wr[c]) * Double(wr[c]) }
                    out[j] = acc
                }
            }
        case .quantized(let q, _):
            withUnsafeTemporaryAllocation(of: Float.self, capacity: I) { row in
                guard let r = row.baseAddress else { return }
                for j in 0..<O {
                    q.dequantizeRows(j, 1, into: r)
                    var acc = 0.0
                    for c in 0..<I { acc += Double(r[c]) * Double(r[c]) }
                    out[j] = acc
                }
            }
        }
        return out
    }

    /// out[N, outF] = inp[N, inF] · W (+ b). `ldi`/`ldo` are row strides (default: packed).
    func forward(out: UnsafeMutablePointer<Float>, inp: UnsafePointer<Float>, rows n: Int, ldi: Int? = nil, ldo: Int? = nil) {
        let ldi = ldi ?? inFeatures, ldo = ldo ?? outFeatures
        var beta: Float = 0
        if let b = bias {
            let o = outFeatures
            parallelFor(n, grain: 64) { s, e in
                for r in s..<e {
                    (out + r * ldo).update(from: b, count: o)
                }
            }
            beta = 1
        }
        linearForwardGEMM(out: out, ldo: ldo, inp: inp, ldi: ldi, rows: n, beta: beta,
                          int8Activations: FrozenLinear.int8Prefill)
    }

    /// Whether `forward` of a block-quantized weight may quantize a product's activation rows to 8 bits and use
    /// the int8 GEMM (`QuantizedMatrix.matmulInt8`, error bound `QuantizedMatrix.matvecErrorBound` per element)
    /// instead of the widened-weight sgemm: true only inside `withInt8Prefill`, which only passes without
    /// gradients use (a prompt's prefill). Training never sets it, so its forward and input gradient stay exact to the
    /// widened weight. One row (decode) quantizes its activation whatever this says.
    @TaskLocal static var int8Prefill = false

    /// Runs `body` with `int8Prefill` set on this thread (a product reads it before handing work to the pool).
    @discardableResult
    static func withInt8Prefill<R>(_ body: () throws -> R) rethrows -> R {
        try $int8Prefill.withValue(true, operation: body)
    }

    /// out = beta·out + inp·W (no bias). `int8Activations`: see `int8Prefill`.
    func linearForwardGEMM(out: UnsafeMutablePointer<Float>, ldo: Int, inp: UnsafePointer<Float>, ldi: Int, rows n: Int,
                           beta: Float, int8Activations: Bool = false) {
        guard n > 0 else { return }
        let weight: UnsafeMutablePointer<Float>
        switch storage {
        case .f32(let w): weight = w
        case .quantized(let q, let ws):
            if n == 1, q.type.isBlockQuantized {
                // Decode: 8-bit activations and integer dot products (error bound: QuantizedMatrix.matvecErrorBound).
                if beta == 0 {
                    q.matvec(out: out, inp: inp, isa: .active)
                } else {
                    let y = ws.vector
                    q.matvec(out: y, inp: inp, isa: .active)
                    for o in 0..<outFeatures { out[o] = beta * out[o] + y[o] }
                }
            } else if int8Activations, q.servesInt8GEMM(isa: .active) {
                q.matmulInt8(out: out, ldo: ldo, inp: inp, ldi: ldi, rows: n, beta: beta, isa: .active)
            } else {
                q.matmul(out: out, ldo: ldo, inp: inp, ldi: ldi, rows: n, beta: beta, isa: .active, panel: ws.panel)
            }
            return
        }
        if transposed {
            sgemm(transA: false, transB: false, m: n, n: outFeatures, k: inFeatures,
                  alpha: 1, a: inp, lda: ldi, b: weight, ldb: outFeatures, beta: beta, c: out, ldc: ldo)
        } else {
            sgemm(transA: false, transB: true, m: n, n: outFeatures, k: inFeatures,
                  alpha: 1, a: inp, lda: ldi, b: weight, ldb: inFeatures, beta: beta, c: out, ldc: ldo)
        }
    }

    /// dinp[N, inF] (+)= dout[N, outF] · Wᵀ. `accumulate` false overwrites.
    func backwardInput(dinp: UnsafeMutablePointer<Float>, dout: UnsafePointer<Float>, rows n: Int,
                       accumulate: Bool, lddi: Int? = nil, lddo: Int? = nil) {
        guard n > 0 else { return }
        let lddi = lddi ?? inFeatures, lddo = lddo ?? outFeatures
        let beta: Float = accumulate ? 1 : 0
        let weight: UnsafeMutablePointer<Float>
        switch storage {
        case .f32(let w): weight = w
        case .quantized(let q, let ws):
            q.matmulInputGradient(dinp: dinp, lddi: lddi, dout: dout, lddo: lddo, rows: n, accumulate: accumulate,
                                  isa: .active, panel: ws.panel)
            return
        }
        if transposed {
            sgemm(transA: false, transB: true, m: n, n: inFeatures, k: outFeatures,
                  alpha: 1, a: dout, lda: lddo, b: weight, ldb: outFeatures, beta: beta, c: dinp, ldc: lddi)
        } else {
            sgemm(transA: false, transB: false, m: n, n: inFeatures, k: outFeatures,
                  alpha: 1, a: dout, lda: lddo, b: weight, ldb: inFeatures, beta: beta, c: dinp, ldc: lddi)
        }
    }

    /// dW += doutᵀ·inp (in the weight's own layout), dB += column sums of dout. fp32 storage only (full
    /// fine-tuning widens first; see `Engine.requireWidened`).
    func backwardWeights(dweight: UnsafeMutablePointer<Float>, dbias: UnsafeMutablePointer<Float>?,
                         dout: UnsafePointer<Float>, inp: UnsafePointer<Float>, rows n: Int,
                         ldi: Int? = nil, lddo: Int? = nil) {
        guard n > 0 else { return }
        let ldi = ldi ?? inFeatures, lddo = lddo ?? outFeatures
        if transposed {
            // W [in, out]: dW = inpᵀ · dout
            sgemm(transA: true, transB: false, m: inFeatures, n: outFeatures, k: n,
                  alpha: 1, a: inp, lda: ldi, b: dout, ldb: lddo, beta: 1, c: dweight, ldc: outFeatures)
        } else {
            // W [out, in]: dW = doutᵀ · inp
            sgemm(transA: true, transB: false, m: outFeatures, n: inFeatures, k: n,
                  alpha: 1, a: dout, lda: lddo, b: inp, ldb: ldi, beta: 1, c: dweight, ldc: inFeatures)
        }
        if let db = dbias {
            columnSums(into: db, src: dout, rows: n, cols: outFeatures, ld: lddo)
        }
    }
}

/// dst[c] += Σ_r src[r, c], in a fixed row order (deterministic, independent of thread count).
func columnSums(into dst: UnsafeMutablePointer<Float>, src: UnsafePointer<Float>, rows: Int, cols: Int, ld: Int) {
    // Split over columns only, so each output element is summed serially in row order.
    parallelFor(cols, grain: 256) { s, e in
        for r in 0..<rows {
            let row = src + r * ld
            for c in s..<e { dst[c] += row[c] }
        }
    }
}
