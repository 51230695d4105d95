import COpenBLAS

// DoRA (Liu et al. 2024), PEFT's `use_dora: true`: a LoRA variant, not a method of its own, because PEFT keeps it
// one (the same `adapter_config.json` with `peft_type` "LORA", the same lora_A/lora_B tensors plus one
// `….lora_magnitude_vector` [out] per module) and every LoRA option (targets, layers, rsLoRA, merge) applies.
//
// Per hooked linear, with W [out, in] the frozen weight, b its bias, s the LoRA scaling and m [out] the learned
// magnitude (PEFT's `DoraLinearLayer`):
//
//     n_j = ‖W_j + s·(B·A)_j‖₂          the norm of output row j, *detached* (no gradient flows through it)
//     y   = b + (m/n) ⊙ (x·Wᵀ + s·(x·Aᵀ)·Bᵀ)
//
// so the backward is LoRA's with the output gradient scaled by m/n per column, plus
//     dm_j = Σ_rows dy_j · (x·Wᵀ + s·x·Aᵀ·Bᵀ)_j / n_j.
//
// The norms never materialise W + s·B·A: with G = A·Wᵀ [r, out] (the frozen linear's own product, so any weight
// storage works) and K = A·Aᵀ [r, r], n_j² = ‖W_j‖² + 2s·Σ_k B_jk G_kj + s²·B_j K B_jᵀ, where ‖W_j‖² is computed
// once. That costs one r-row pass through each adapted linear per forward pass (`beginPass`).
//
// With lora_dropout in training, PEFT (`DoraLinearVariant.forward`) drops x for the DoRA term and recomputes the
// base product on the dropped input x̃ (bias only once, from the frozen linear on x):
//
//     y = x·Wᵀ + b + (m/n − 1) ⊙ (x̃·Wᵀ) + (m/n) ⊙ s·(x̃·Aᵀ)·Bᵀ
//
// so dm_j = Σ_rows dy_j · (x̃·Wᵀ + s·x̃·Aᵀ·Bᵀ)_j / n_j, A and B see dy ⊙ m/n and x̃, and
// dx = dy·W + mask ⊙ ((dy ⊙ (m/n − 1))·W + s·(dy ⊙ m/n)·B·A). That costs one more frozen product forward and
// one backward per adapted linear. Evaluation (no dropout) is the formula above.

/// What DoRA adds to a LoRA adapter: the frozen linears it reads, the norms of the current pass, and the
/// pre-scale outputs the backward needs.
final class DoRAState {
    /// The frozen linear of each unit (the original weights: merges of other adapters made later do not show).
    let frozen: [FrozenLinear]
    /// ‖W_j‖² per unit, at `rowOffset[u]`.
    let weightNorm2: [Double]
    let rowOffset: [Int]
    /// m/n and 1/n of the current pass, at `rowOffset[u]`.
    let scaleCol: Storage, invNorm: Storage
    /// Scratch of the norm computation: G [r, maxOut], K [r, r], H [maxOut, r].
    let g: Storage, k: Storage, h: Storage
    /// Per slot and site: x·Wᵀ + s·x·Aᵀ·Bᵀ [N, out] (training only); dy ⊙ m/n [N, max out].
    var pre: [[UnsafeMutablePointer<Float>?]] = []
    var dscaled: UnsafeMutablePointer<Float>?
    private var pool: BufferPool?
    /// Keeps the norms of the last pass (tests: a finite-difference check of the detached-norm gradient).
    var holdNorms = false
    private var prepared: (Int, Int)?
    /// The unit whose (dy ⊙ (m/n − 1)) `dscaled` holds for `droppedBaseGradient` (-1: none).
    private var pendingDropped = -1

    init(units: [LoRAAdapter.Unit], rank r: Int, context: AdapterContext) throws {
        guard let get = context.frozenLinear else {
            throw PEFTKitError.state("DoRA needs the base model's weights: attach it to a model")
        }
        var frozen: [FrozenLinear] = [], off: [Int] = [], total = 0, maxOut = 0
        for u in units {
            guard let f = get(u.layer, u.site), f.inFeatures == u.inF, f.outFeatures == u.outF else {
                throw PEFTKitError.state("DoRA: the base model has no linear \(u.site) in layer \(u.layer)")
            }
            frozen.append(f)
            off.append(total)
            total += u.outF
            maxOut = max(maxOut, u.outF)
        }
        var wn2 = [Double](repeating: 0, count: total)
        for (i, f) in frozen.enumerated() {
            for (j, n2) in f.outputSquaredNorms().enumerated() { wn2[off[i] + j] = n2 }
        }
        self.frozen = frozen
        weightNorm2 = wn2
        rowOffset = off
        scaleCol = try Storage.allocate(floats: max(total, 1))
        invNorm = try Storage.allocate(floats: max(total, 1))
        g = try Storage.allocate(floats: r * maxOut)
        k = try Storage.allocate(floats: r * r)
        h = try Storage.allocate(floats: maxOut * r)
    }

    /// PEFT's initial magnitude: the row norms of W (B is zero at init).
    func initialMagnitude(_ u: LoRAAdapter.Unit, into m: UnsafeMutablePointer<Float>) {
        for j in 0..<u.outF { m[j] = Float(weightNorm2[rowOffset[u.id] + j].squareRoot()) }
    }

    /// Training buffers only (evaluation keeps nothing): an evaluation pass between two training steps must
    /// not drop them, as the LoRA adapter prepares each mode once per shape.
    func prepare(_ lora: LoRAAdapter, rows n: Int, slots: Int, training: Bool) throws {
        guard training else { return }
        if let p = prepared, p == (n, slots) { return }
        let pool = BufferPool()
        var pre: [[UnsafeMutablePointer<Float>?]] = []
        var maxOut = 0
        for slot in 0..<slots {
            var row: [UnsafeMutablePointer<Float>?] = []
            for s in LinearSite.allCases {
                if let u = lora.unit(slot, s) {
                    row.append(try pool.take(n * u.outF))
                    maxOut = max(maxOut, u.outF)
                } else {
                    row.append(nil)
                }
            }
            pre.append(row)
        }
        self.pre = pre
        dscaled = maxOut > 0 ? try pool.take(n * maxOut) : nil
        self.pool = pool
        prepared = (n, slots)
    }

    /// Computes m/n and 1/n of every unit from the current parameters.
    func refresh(_ lora: LoRAAdapter) {
        let r = lora.config.rank, s = lora.scale, p = lora.params.floats
        let G = g.floats, K = k.floats, H = h.floats
        for u in lora.units {
            let f = frozen[u.id], O = u.outF, A = p + u.a, B = p + u.b, m = p + u.m
            f.linearForwardGEMM(out: G, ldo: O, inp: A, ldi: u.inF, rows: r, beta: 0)  // G = A·Wᵀ [r, O]
            sgemm(transA: false, transB: true, m: r, n: r, k: u.inF,
                  alpha: 1, a: A, lda: u.inF, b: A, ldb: u.inF, beta: 0, c: K, ldc: r)
            sgemm(transA: false, transB: false, m: O, n: r, k: r,
                  alpha: 1, a: B, lda: r, b: K, ldb: r, beta: 0, c: H, ldc: r)
            let off = rowOffset[u.id], sc = scaleCol.floats + off, inv = invNorm.floats + off
            let s2 = Double(s) * Double(s)
            for j in 0..<O {
                var d = weightNorm2[off + j]
                for q in 0..<r {
                    let bjq = Double(B[j * r + q])
                    d += bjq * (2 * Double(s) * Double(G[q * O + j]) + s2 * Double(H[j * r + q]))
                }
                let nrm = Float(max(d, 0).squareRoot())
                sc[j] = m[j] / nrm
                inv[j] = 1 / nrm
            }
        }
    }

    /// m/n from the current magnitudes and the held norms (`holdNorms`).
    func refreshScales(_ lora: LoRAAdapter) {
        for u in lora.units {
            let off = rowOffset[u.id], m = lora.params.floats + u.m
            for j in 0..<u.outF { scaleCol.floats[off + j] = m[j] * invNorm.floats[off + j] }
        }
    }

    /// After the frozen linear wrote `out` = x·Wᵀ + b and LoRA computed t = x·Aᵀ: out = b + (m/n)·(x·Wᵀ + s·t·Bᵀ).
    func forward(_ lora: LoRAAdapter, _ u: LoRAAdapter.Unit, out: UnsafeMutablePointer<Float>, ldo: Int,
                 t: UnsafeMutablePointer<Float>, _ p: PassInfo) {
        let n = p.rows, O = u.outF, r = lora.config.rank, B = lora.params.floats + u.b
        let bias = frozen[u.id].bias, sc = scaleCol.floats + rowOffset[u.id]
        let keep = p.training ? pre[p.slot][u.site.rawValue] : nil
        let y = keep ?? out, ldy = keep == nil ? ldo : O
        for i in 0..<n {
            let o = out + i * ldo, yi = y + i * ldy
            if let b = bias { for j in 0..<O { yi[j] = o[j] - b[j] } } else if keep != nil { yi.update(from: o, count: O) }
        }
        sgemm(transA: false, transB: true, m: n, n: O, k: r,
              alpha: lora.scale, a: t, lda: r, b: B, ldb: r, beta: 1, c: y, ldc: ldy)
        for i in 0..<n {
            let o = out + i * ldo, yi = y + i * ldy
            if let b = bias { for j in 0..<O { o[j] = b[j] + sc[j] * yi[j] } } else { for j in 0..<O { o[j] = sc[j] * yi[j] } }
        }
    }

    /// Training with dropout: `out` = x·Wᵀ + b came from the undropped x; t = x̃·Aᵀ from the dropped `dropped` x̃.
    /// out += (m/n − 1)·(x̃·Wᵀ) + (m/n)·s·t·Bᵀ, and pre = x̃·Wᵀ + s·t·Bᵀ for the backward.
    func forwardDropped(_ lora: LoRAAdapter, _ u: LoRAAdapter.Unit, out: UnsafeMutablePointer<Float>, ldo: Int,
                        t: UnsafeMutablePointer<Float>, dropped x: UnsafeMutablePointer<Float>, _ p: PassInfo) {
        let n = p.rows, O = u.outF, r = lora.config.rank, B = lora.params.floats + u.b
        let sc = scaleCol.floats + rowOffset[u.id]
        guard p.training, let y = pre[p.slot][u.site.rawValue], let l = dscaled else { return }
        frozen[u.id].linearForwardGEMM(out: y, ldo: O, inp: x, ldi: u.inF, rows: n, beta: 0)
        sgemm(transA: false, transB: true, m: n, n: O, k: r,
              alpha: lora.scale, a: t, lda: r, b: B, ldb: r, beta: 0, c: l, ldc: O)
        for i in 0..<n {
            let o = out + i * ldo, yi = y + i * O, li = l + i * O
            for j in 0..<O {
                o[j] += (sc[j] - 1) * yi[j] + sc[j] * li[j]
                yi[j] += li[j]
            }
        }
    }

    /// Training with dropout, after the LoRA branch's gradients: keeps dy ⊙ (m/n − 1) for `droppedBaseGradient`.
    func keepDroppedBaseGradient(_ u: LoRAAdapter.Unit, dout: UnsafeMutablePointer<Float>, lddo: Int, _ p: PassInfo) {
        let n = p.rows, O = u.outF, sc = scaleCol.floats + rowOffset[u.id]
        guard let ds = dscaled else { return }
        for i in 0..<n {
            let d = dout + i * lddo, o = ds + i * O
            for j in 0..<O { o[j] = d[j] * (sc[j] - 1) }
        }
        pendingDropped = u.id
    }

    /// w [N, in] = (dy ⊙ (m/n − 1))·W, the gradient of the dropped input through the recomputed base product;
    /// false (w untouched) unless `keepDroppedBaseGradient` ran for this unit.
    func droppedBaseGradient(_ u: LoRAAdapter.Unit, into w: UnsafeMutablePointer<Float>, _ p: PassInfo) -> Bool {
        guard pendingDropped == u.id, let ds = dscaled else { return false }
        pendingDropped = -1
        frozen[u.id].backwardInput(dinp: w, dout: ds, rows: p.rows, accumulate: false, lddi: u.inF, lddo: u.outF)
        return true
    }

    /// dm += Σ dy ⊙ pre / n; returns dy ⊙ m/n ([N, out], packed), the output gradient of both the frozen linear
    /// and the LoRA branch.
    func backward(_ u: LoRAAdapter.Unit, dout: UnsafeMutablePointer<Float>, lddo: Int, grads: UnsafeMutablePointer<Float>,
                  _ p: PassInfo) -> UnsafeMutablePointer<Float> {
        let n = p.rows, O = u.outF, off = rowOffset[u.id]
        let sc = scaleCol.floats + off, inv = invNorm.floats + off, dm = grads + u.m
        guard let y = pre[p.slot][u.site.rawValue], let ds = dscaled else { return dout }
        parallelFor(O, grain: 64) { j0, j1 in
            for j in j0..<j1 {
                var acc: Float = 0
                for i in 0..<n { acc += dout[i * lddo + j] * y[i * O + j] }
                dm[j] += acc * inv[j]
            }
        }
        for i in 0..<n {
            let d = dout + i * lddo, o = ds + i * O
            for j in 0..<O { o[j] = d[j] * sc[j] }
        }
        return ds
    }

    /// The merged weight row by row: W_j ← (m_j / ‖W_j + ΔW_j‖)·(W_j + ΔW_j), after ΔW was added.
    func rescaleMerged(_ u: LoRAAdapter.Unit, m: UnsafePointer<Float>, weight w: UnsafeMutablePointer<Float>, transposed: Bool) {
        let O = u.outF, I = u.inF
        if transposed {
            var n2 = [Double](repeating: 0, count: O)
            for row in 0..<I { let wr = w + row * O; for j in 0..<O { n2[j] += Double(wr[j]) * Double(wr[j]) } }
            let f = (0..<O).map { m[$0] / Float(n2[$0].squareRoot()) }
            for row in 0..<I { let wr = w + row * O; for j in 0..<O { wr[j] *= f[j] } }
        } else {
            for j in 0..<O {
                let wr = w + j * I
                var acc = 0.0
                for c in 0..<I { acc += Double(wr[c]) * Double(wr[c]) }
                let f = m[j] / Float(acc.squareRoot())
                for c in 0..<I { wr[c] *= f }
            }
        }
    }
}
