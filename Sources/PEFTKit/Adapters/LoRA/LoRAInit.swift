import COpenBLAS

// PiSSA (Meng et al. 2024) and OLoRA (Büyükakyüz 2024): LoRA initialised from the frozen weight it adapts, PEFT's
// `init_lora_weights` "pissa" and "olora". With W [out, in] the base weight (GPT-2's Conv1D weight transposed, as
// PEFT's `transpose(weight, fan_in_fan_out)` does) and s the LoRA scaling:
//
//   PiSSA  W = U·S·Vᵀ (exact SVD, singular values descending), S_r the r largest:
//            A₀ = √(S_r/s)·V_rᵀ [r, in],  B₀ = U_r·√(S_r/s) [out, r]
//   OLoRA  W = Q·R (Householder QR, reduced):  A₀ = R[:r, :] [r, in],  B₀ = Q[:, :r] [out, r]  (not scaled)
//
// and the base weight becomes the residual W − s·B₀·A₀, so that the adapted model starts equal to the base model
// (W_res + s·B₀·A₀ = W). PEFT rewrites the base layer's weight in place; PEFTKit does the same on a copy (the
// original, possibly memory-mapped, is never written): the engine applies `baseEdits()` when the adapter is attached
// and restores the original weights bit for bit when it is removed (Engine/ResidualBase.swift). While the adapter
// is attached every forward pass runs on the residual, whichever adapter is active, as in PEFT (whose disabled
// adapter gives the residual model).
//
// The decompositions run in Double (LAPACK dgesdd / dgeqrf + dorgqr from libopenblas); A₀, B₀ are rounded to fp32
// and the residual is W − s·B₀·A₀ in fp32, as PEFT computes it. Singular vectors (and Q's columns) are unique only up
// to sign: another LAPACK may flip column q of B₀ together with row q of A₀; B₀·A₀ and the residual are the same.
//
// Files. An adapter whose config says "pissa" / "olora" describes an adapter over the ORIGINAL base: whenever it is
// attached or loaded (PEFTKit's or PEFT's `from_pretrained`) the decomposition is redone on the base it is given and
// the saved A, B replace A₀, B₀. `convertedFileTensors` gives PEFT's conversion to a plain LoRA of the original base
// (`save_pretrained(path_initial_model_for_weight_conversion=...)`): W + s·(B·A − B₀·A₀) = W + s·[B | −B₀]·[A ; A₀],
// a rank-2r adapter with init_lora_weights true, lora_alpha doubled (rsLoRA: times √2) so the scaling is unchanged.

/// How a LoRA adapter's A and B start: PEFT's `init_lora_weights`.
public enum LoRAInit: String, Sendable, Equatable, CaseIterable {
    /// PEFT's default (`true`): A Kaiming-uniform, B zero; the base weights stay as they are.
    case standard
    /// PiSSA: A and B from the r leading singular triplets of each base weight; the base becomes the residual.
    case pissa
    /// OLoRA: A and B from the QR decomposition of each base weight; the base becomes the residual.
    /// `nn.Linear` weights only (PEFT's `olora_init` does not transpose GPT-2's Conv1D weights).
    case olora
    /// PEFT's `false`: A and B both Kaiming-uniform (`nn.Linear`'s own init, bounds 1/√in and 1/√r), so the
    /// adapter changes the model from the first step; PEFT uses it in tests, to see an adapter act at once.
    case random

    /// The `init_lora_weights` value PEFT writes for it.
    var peftValue: JSONValue {
        switch self {
        case .standard: return .bool(true)
        case .random: return .bool(false)
        case .pissa, .olora: return .string(rawValue)
        }
    }

    /// Whether A and B come from a decomposition of the base weight (which then becomes the residual).
    var rewritesBase: Bool { self == .pissa || self == .olora }

    /// The name in messages.
    var displayName: String { self == .pissa ? "PiSSA" : self == .olora ? "OLoRA" : "LoRA" }
}

extension LoRAAdapter: BaseRewritingAdapter {
    /// Decomposes each hooked base weight and fills A, B with A₀, B₀; keeps a copy of them (`initialWeights`).
    func initialiseFromBase(_ context: AdapterContext) throws {
        let how = config.initLoRAWeights, r = config.rank
        guard let get = context.frozenLinear else {
            throw PEFTKitError.state("\(how.displayName) initialisation needs the base model's weights: attach it to a model")
        }
        for u in units {
            guard let f = get(u.layer, u.site), f.inFeatures == u.inF, f.outFeatures == u.outF else {
                throw PEFTKitError.state("\(how.displayName): the base model has no linear \(u.site) in layer \(u.layer)")
            }
            let module = u.site.module(model.architecture, layer: u.layer)
            guard let w = f.f32Weight else {
                throw PEFTKitError.unsupported("\(how.displayName) replaces the base weight by a residual, but '\(module)' is kept in "
                    + "\(f.quantized.map { "\($0.type)" } ?? "quantized") blocks (PEFT too initialises PiSSA only from float weights, "
                    + "to re-quantize the residual afterwards). Load the model widened to fp32 (Model.load(path:widen: true), "
                    + "peftkit_model_load_ex with widen = 1, Python widen=True, CLI --widen)")
            }
            try require(r <= min(u.inF, u.outF), "\(how.displayName): rank \(r) exceeds min(in, out) = \(min(u.inF, u.outF)) of '\(module)'")
            if how == .olora && f.transposed {
                throw PEFTKitError.unsupported("OLoRA on '\(module)': GPT-2's Conv1D stores its weight transposed and PEFT's olora_init "
                    + "decomposes it as stored (a shape error, or an adapter that changes the output at init); use 'pissa' or "
                    + "a standard LoRA on GPT-2")
            }
            try decompose(u, weight: w, transposed: f.transposed, how: how)
        }
        let n = parameterCount
        let keep = try Storage.allocate(floats: max(n, 1))
        keep.floats.update(from: params.floats, count: n)
        initialWeights = keep
    }

    /// A₀, B₀ of unit `u` into the parameter block.
    private func decompose(_ u: Unit, weight w: UnsafeMutablePointer<Float>, transposed: Bool, how: LoRAInit) throws {
        let O = u.outF, I = u.inF, k = min(O, I), r = config.rank
        let A = params.floats + u.a, B = params.floats + u.b
        // W [O, I] column-major (a[i + j·O] = W[i][j]): Conv1D's [I, O] row-major storage already is that.
        var a = [Double](repeating: 0, count: O * I)
        if transposed {
            for idx in 0..<(O * I) { a[idx] = Double(w[idx]) }
        } else {
            for i in 0..<O { for j in 0..<I { a[i + j * O] = Double(w[i * I + j]) } }
        }
        switch how {
        case .pissa:
            let (s, U, VT) = try svd(&a, rows: O, cols: I)
            let sc = Double(scale)
            for q in 0..<r {
                // PEFT divides the singular values by the scaling before the square root.
                let f = (s[q] / sc).squareRoot()
                guard f.isFinite else { throw PEFTKitError.numerical("PiSSA: singular value \(s[q]) / scaling \(sc) has no real square root") }
                for i in 0..<O { B[i * r + q] = Float(U[i + q * O] * f) }
                for j in 0..<I { A[q * I + j] = Float(VT[q + j * k] * f) }
            }
        case .olora:
            let (Q, R) = try qr(&a, rows: O, cols: I)
            for q in 0..<r {
                for i in 0..<O { B[i * r + q] = Float(Q[i + q * O]) }
                for j in 0..<I { A[q * I + j] = j >= q ? Float(R[q + j * O]) : 0 }
            }
        case .standard, .random:
            break
        }
    }

    /// Thin SVD of the column-major [m, n] matrix `a` (destroyed): singular values (descending), U [m, k] and Vᵀ [k, n],
    /// column-major, k = min(m, n).
    private func svd(_ a: inout [Double], rows m: Int, cols n: Int) throws -> ([Double], [Double], [Double]) {
        let k = min(m, n)
        var s = [Double](repeating: 0, count: k), u = [Double](repeating: 0, count: m * k), vt = [Double](repeating: 0, count: k * n)
        var iwork = [Int32](repeating: 0, count: 8 * k)
        var M = Int32(m), N = Int32(n), lda = Int32(m), ldu = Int32(m), ldvt = Int32(k), info: Int32 = 0
        var lwork: Int32 = -1, query = [Double](repeating: 0, count: 1)
        let jobz: CChar = 0x53  // "S": the first k singular vectors
        var jz = jobz
        dgesdd_(&jz, &M, &N, &a, &lda, &s, &u, &ldu, &vt, &ldvt, &query, &lwork, &iwork, &info, 1)
        try require(info == 0, "PiSSA: LAPACK dgesdd workspace query failed (info \(info))")
        lwork = Int32(min(query[0], Double(Int32.max)))
        var work = [Double](repeating: 0, count: max(Int(lwork), 1))
        dgesdd_(&jz, &M, &N, &a, &lda, &s, &u, &ldu, &vt, &ldvt, &work, &lwork, &iwork, &info, 1)
        guard info == 0 else {
            throw PEFTKitError.numerical("PiSSA: the SVD of a \(m)×\(n) base weight did not converge (LAPACK dgesdd info \(info))")
        }
        return (s, u, vt)
    }

    /// Reduced QR of the column-major [m, n] matrix `a` (destroyed): Q [m, k] and R (upper triangle of the returned
    /// [m, n] column-major array, rows 0..<k), k = min(m, n).
    private func qr(_ a: inout [Double], rows m: Int, cols n: Int) throws -> ([Double], [Double]) {
        let k = min(m, n)
        var M = Int32(m), N = Int32(n), K = Int32(k), lda = Int32(m), info: Int32 = 0
        var tau = [Double](repeating: 0, count: k)
        var lwork: Int32 = -1, query = [Double](repeating: 0, count: 1)
        dgeqrf_(&M, &N, &a, &lda, &tau, &query, &lwork, &info)
        try require(info == 0, "OLoRA: LAPACK dgeqrf workspace query failed (info \(info))")
        lwork = Int32(min(query[0], Double(Int32.max)))
        var work = [Double](repeating: 0, count: max(Int(lwork), 1))
        dgeqrf_(&M, &N, &a, &lda, &tau, &work, &lwork, &info)
        guard info == 0 else { throw PEFTKitError.numerical("OLoRA: LAPACK dgeqrf failed (info \(info))") }
        let R = a
        var q = Array(a[0..<(m * k)])
        lwork = -1
        dorgqr_(&M, &K, &K, &q, &lda, &tau, &query, &lwork, &info)
        try require(info == 0, "OLoRA: LAPACK dorgqr workspace query failed (info \(info))")
        lwork = Int32(min(query[0], Double(Int32.max)))
        work = [Double](repeating: 0, count: max(Int(lwork), 1))
        dorgqr_(&M, &K, &K, &q, &lda, &tau, &work, &lwork, &info)
        guard info == 0 else { throw PEFTKitError.numerical("OLoRA: LAPACK dorgqr failed (info \(info))") }
        return (q, R)
    }

    /// W ← W − s·B₀·A₀ on each hooked weight, in its own layout.
    func baseEdits() -> [MergeEdit] {
        guard let initial = initialWeights else { return [] }
        return units.map { u in
            MergeEdit(layer: u.layer, site: u.site) { w, _, transposed, _, _ in
                self.addProduct(u, a: initial.floats + u.a, b: initial.floats + u.b, transposed: transposed, into: w, alpha: -self.scale)
            }
        }
    }

    /// w += alpha·B·A for unit `u` ([out, in], or its transpose for Conv1D), A [r, in] and B [out, r].
    func addProduct(_ u: Unit, a A: UnsafePointer<Float>, b B: UnsafePointer<Float>, transposed: Bool,
                    into w: UnsafeMutablePointer<Float>, alpha: Float) {
        let r = config.rank
        if transposed {
            sgemm(transA: true, transB: true, m: u.inF, n: u.outF, k: r,
                  alpha: alpha, a: A, lda: u.inF, b: B, ldb: r, beta: 1, c: w, ldc: u.outF)
        } else {
            sgemm(transA: false, transB: false, m: u.outF, n: u.inF, k: r,
                  alpha: alpha, a: B, lda: r, b: A, ldb: u.inF, beta: 1, c: w, ldc: u.inF)
        }
    }

    // MARK: PEFT's conversion to a plain LoRA of the original base

    /// The adapter as PEFT's `save_pretrained(path_initial_model_for_weight_conversion=...)` writes it: nil when the
    /// base was not rewritten (the plain file is then already one for the original base).
    func convertedFile(name: String) throws -> (config: [String: JSONValue], tensors: [SavedTensor])? {
        guard let initial = initialWeights else { return nil }
        let r = config.rank, r2 = 2 * r
        let total = units.reduce(0) { $0 + r2 * ($1.inF + $1.outF) }
        let store = try Storage.allocate(floats: max(total, 1))
        var tensors: [SavedTensor] = [], off = 0
        for u in units {
            let key = peftModuleKey(u.layer, u.site, model)
            let a2 = store.floats + off, b2 = a2 + r2 * u.inF
            // A' = [A ; A₀] [2r, in], B' = [B | −B₀] [out, 2r].
            a2.update(from: params.floats + u.a, count: r * u.inF)
            (a2 + r * u.inF).update(from: initial.floats + u.a, count: r * u.inF)
            for i in 0..<u.outF {
                for q in 0..<r {
                    b2[i * r2 + q] = params.floats[u.b + i * r + q]
                    b2[i * r2 + r + q] = -initial.floats[u.b + i * r + q]
                }
            }
            tensors.append(SavedTensor(name: key + ".lora_A.weight", shape: [r2, u.inF], data: UnsafeBufferPointer(start: a2, count: r2 * u.inF)))
            tensors.append(SavedTensor(name: key + ".lora_B.weight", shape: [u.outF, r2], data: UnsafeBufferPointer(start: b2, count: u.outF * r2)))
            off += r2 * (u.inF + u.outF)
        }
        convertedStorage = store  // the tensors point into it: kept until the next conversion
        var o = fileConfig(name: name)
        o["r"] = .int(r2)
        o["init_lora_weights"] = .bool(true)
        o["lora_alpha"] = config.useRSLoRA ? .double(decimalDouble(config.alpha) * 2.0.squareRoot()) : pythonNumber(2 * config.alpha)
        return (o, tensors)
    }
}
