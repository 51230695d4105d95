import COpenBLAS

/// Where a frozen linear's weight lives and in which number format. Today every weight is fp32, either
/// memory-mapped from the model file or owned (a copy made for a merge or for full fine-tuning). F16/BF16
/// tensors and GGUF quantized blocks become further cases: each brings its own widening before the GEMM, and
/// every caller of `FrozenLinear` stays as it is.
enum WeightStorage {
    /// fp32, in the layout given by `FrozenLinear.transposed`.
    case f32(UnsafeMutablePointer<Float>)
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

    /// The fp32 weight (what merging copies and edits, and what a gradient view points at). Setting it
    /// makes the storage fp32.
    var weight: UnsafeMutablePointer<Float> {
        get { switch storage { case .f32(let w): return w } }
        set { storage = .f32(newValue) }
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
        linearForwardGEMM(out: out, ldo: ldo, inp: inp, ldi: ldi, rows: n, beta: beta)
    }

    /// out = beta·out + inp·W (no bias).
    func linearForwardGEMM(out: UnsafeMutablePointer<Float>, ldo: Int, inp: UnsafePointer<Float>, ldi: Int, rows n: Int, beta: Float) {
        guard n > 0 else { return }
        let weight = self.weight  // the one storage today; a widened tile per format comes here
        if n == 1 {
            // One row (decode): a matrix-vector product. OpenBLAS 0.3.21's sgemm packs the whole weight even
            // for M = 1, reading it twice; sgemv streams it once, split over its threads.
            if transposed {
                cblas_sgemv(CblasRowMajor, CblasTrans, Int32(inFeatures), Int32(outFeatures), 1, weight, Int32(outFeatures),
                            inp, 1, beta, out, 1)
            } else {
                cblas_sgemv(CblasRowMajor, CblasNoTrans, Int32(outFeatures), Int32(inFeatures), 1, weight, Int32(inFeatures),
                            inp, 1, beta, out, 1)
            }
            return
        }
        if transposed {
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(n), Int32(outFeatures), Int32(inFeatures),
                        1, inp, Int32(ldi), weight, Int32(outFeatures), beta, out, Int32(ldo))
        } else {
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(n), Int32(outFeatures), Int32(inFeatures),
                        1, inp, Int32(ldi), weight, Int32(inFeatures), beta, out, Int32(ldo))
        }
    }

    /// dinp[N, inF] (+)= dout[N, outF] · Wᵀ. `accumulate` false overwrites.
    func backwardInput(dinp: UnsafeMutablePointer<Float>, dout: UnsafePointer<Float>, rows n: Int,
                       accumulate: Bool, lddi: Int? = nil, lddo: Int? = nil) {
        guard n > 0 else { return }
        let lddi = lddi ?? inFeatures, lddo = lddo ?? outFeatures
        let beta: Float = accumulate ? 1 : 0
        let weight = self.weight  // the one storage today; a widened tile per format comes here
        if transposed {
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(n), Int32(inFeatures), Int32(outFeatures),
                        1, dout, Int32(lddo), weight, Int32(outFeatures), beta, dinp, Int32(lddi))
        } else {
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(n), Int32(inFeatures), Int32(outFeatures),
                        1, dout, Int32(lddo), weight, Int32(inFeatures), beta, dinp, Int32(lddi))
        }
    }

    /// dW += doutᵀ·inp (in the weight's own layout), dB += column sums of dout.
    func backwardWeights(dweight: UnsafeMutablePointer<Float>, dbias: UnsafeMutablePointer<Float>?,
                         dout: UnsafePointer<Float>, inp: UnsafePointer<Float>, rows n: Int,
                         ldi: Int? = nil, lddo: Int? = nil) {
        guard n > 0 else { return }
        let ldi = ldi ?? inFeatures, lddo = lddo ?? outFeatures
        if transposed {
            // W [in, out]: dW = inpᵀ · dout
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, Int32(inFeatures), Int32(outFeatures), Int32(n),
                        1, inp, Int32(ldi), dout, Int32(lddo), 1, dweight, Int32(outFeatures))
        } else {
            // W [out, in]: dW = doutᵀ · inp
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, Int32(outFeatures), Int32(inFeatures), Int32(n),
                        1, dout, Int32(lddo), inp, Int32(ldi), 1, dweight, Int32(inFeatures))
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
