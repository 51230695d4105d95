import COpenBLAS

/// LoRA (Hu et al. 2021): `y = W·x + s·B·(A·x)` on chosen frozen linears, with `s = alpha / r`
/// (rsLoRA: `alpha / √r`). A is [r, in], B is [out, r] for every layout, as HF PEFT stores them.
public struct LoRAConfig: Sendable, Equatable {
    public var rank: Int = 8
    public var alpha: Float = 16
    /// Dropout on the LoRA branch's input during training (0 = off).
    public var dropout: Float = 0
    /// Scale by alpha/√r instead of alpha/r.
    public var useRSLoRA: Bool = false
    /// DoRA (PEFT's `use_dora`): a learned magnitude per output row times the row-normalised W + s·B·A
    /// (see DoRA.swift). Needs the base weights, so the adapter is made on a model.
    public var useDoRA: Bool = false
    /// LoRA+: B (and DoRA's magnitude) at this multiple of the learning rate, when `TrainConfig.loraPlusRatio`
    /// is 0. PEFTKit's own key `loraplus_lr_ratio` in adapter_config.json (PEFT passes it to an optimizer
    /// helper instead). nil = off.
    public var loraPlusRatio: Float? = nil
    /// Module names to adapt (GPT-2: `c_attn`, `attn.c_proj`, `c_fc`, `mlp.c_proj`; Llama: `q_proj`, `k_proj`,
    /// `v_proj`, `o_proj`, `gate_proj`, `up_proj`, `down_proj`; `c_proj` means both GPT-2 projections).
    /// Empty means PEFT's default for the architecture (GPT-2 `c_attn`; Llama `q_proj`, `v_proj`).
    public var targets: [String] = []
    /// Layers to adapt; nil means all.
    public var layers: [Int]? = nil
    public var seed: UInt64 = 42
    /// How A and B start (PEFT's `init_lora_weights`): `.pissa` and `.olora` decompose the base weights and rewrite
    /// them to the residual while the adapter is attached (see LoRAInit.swift).
    public var initLoRAWeights: LoRAInit = .standard

    public init() {}

    /// PEFT's default targets for an architecture.
    static func defaultTargets(_ arch: Architecture) -> [String] {
        switch arch {
        case .gpt2: return ["c_attn"]
        case .llama: return ["q_proj", "v_proj"]
        case .bert: return ["query", "value"]  // PEFT's default for bert
        }
    }

    public var scaling: Float { useRSLoRA ? alpha / Float(rank).squareRoot() : alpha / Float(rank) }

    func validate(_ m: ModelConfig) throws {
        try require(rank > 0 && rank <= 4096, "LoRA rank must be in 1...4096, got \(rank)")
        try require(alpha.isFinite, "LoRA alpha must be finite, got \(alpha)")
        try require(dropout.isFinite && dropout >= 0 && dropout < 1, "LoRA dropout must be in [0, 1), got \(dropout)")
        try validateLayers(layers, numLayers: m.numLayers)
        if let r = loraPlusRatio { try require(r.isFinite && r > 0, "loraplus_lr_ratio must be positive, got \(r)") }
        if useDoRA && initLoRAWeights != .standard {
            throw PEFTKitError.unsupported("DoRA with init_lora_weights "
                + "\(initLoRAWeights == .random ? "false" : "'\(initLoRAWeights.rawValue)'") is not supported")
        }
    }
}

/// Checks a user's layer selection: non-empty, in range, no duplicates (nil = every layer).
func validateLayers(_ layers: [Int]?, numLayers: Int) throws {
    guard let ls = layers else { return }
    try require(!ls.isEmpty, "layer list is empty")
    for l in ls { try require(l >= 0 && l < numLayers, "layer \(l) is out of range 0..<\(numLayers)") }
    try require(Set(ls).count == ls.count, "layer list has duplicates")
}

/// Resolves user target names to sites, PEFT style: a name matches a module whose path equals it or ends
/// with "." + name.
func resolveTargets(_ names: [String], arch: Architecture, what: String) throws -> [LinearSite] {
    var out: [LinearSite] = []
    for n in names {
        let matches = LinearSite.sites(arch).filter { site in
            let full = site.module(arch, layer: 0)
            return full == n || full.hasSuffix("." + n)
        }
        try require(!matches.isEmpty, "\(what) target '\(n)' matches no module of a \(arch) model "
                    + "(choose from \(LinearSite.sites(arch).map { $0.shortName(arch) }))")
        for s in matches where !out.contains(s) { out.append(s) }
    }
    return out.sorted { $0.rawValue < $1.rawValue }
}

final class LoRAAdapter: Adapter {
    struct Unit {
        let layer: Int
        let site: LinearSite
        let inF: Int, outF: Int
        let a: Int, b: Int  // offsets of A [r, in] and B [out, r]
        /// Offset of DoRA's magnitude [out] (-1 without DoRA); the unit's index.
        let m: Int, id: Int
    }
    let config: LoRAConfig
    let sites: [LinearSite]
    let units: [Unit]
    /// index[layer * LinearSite.count + site] → unit, or -1.
    let index: [Int]
    let scale: Float
    /// Per slot and unit: t = x·Aᵀ [N, r]; the dropout mask scaled by 1/(1-p) [N, in] when dropout is on.
    private var acts: [Bool: [[UnsafeMutablePointer<Float>?]]] = [:]
    private var drop: [Bool: [[UnsafeMutablePointer<Float>?]]] = [:]
    /// g = dY·B [N, r] and a dropout work buffer [N, max in].
    private var gbuf: UnsafeMutablePointer<Float>?
    private var work: UnsafeMutablePointer<Float>?
    private var pools: [Bool: BufferPool] = [:]
    private var prepared: [Bool: (Int, Int)] = [:]
    /// Internal (not private): checkpoints save and restore it (`TrainingRandomState`).
    var dropRng: Rng
    /// Tests: a keep mask (1 kept, 0 dropped) [N, in] per unit id that replaces the drawn one, so a pass can be
    /// repeated with the same mask or matched to a reference's.
    var fixedDropoutKeep: [Int: [Float]] = [:]
    /// DoRA's norms and saved outputs (nil for plain LoRA).
    private(set) var dora: DoRAState?
    /// PiSSA / OLoRA: A₀ and B₀ as initialised, in the parameter layout (nil for the standard init). The base runs
    /// as W − s·B₀·A₀ while the adapter is attached (LoRAInit.swift).
    var initialWeights: Storage?
    /// The tensors of the last `convertedFile` (they point into it).
    var convertedStorage: Storage?

    init(config: LoRAConfig, model m: ModelConfig, context: AdapterContext = AdapterContext()) throws {
        try config.validate(m)
        self.config = config
        let names = config.targets.isEmpty ? LoRAConfig.defaultTargets(m.architecture) : config.targets
        sites = try resolveTargets(names, arch: m.architecture, what: "LoRA")
        let layers = (config.layers ?? Array(0..<m.numLayers)).sorted()
        var units: [Unit] = []
        var index = [Int](repeating: -1, count: m.numLayers * LinearSite.count)
        var off = 0
        let r = config.rank
        for l in layers {
            for s in sites {
                let (i, o) = LoRAAdapter.dims(s, m)
                index[l * LinearSite.count + s.rawValue] = units.count
                units.append(Unit(layer: l, site: s, inF: i, outF: o, a: off, b: off + r * i,
                                  m: config.useDoRA ? off + r * i + o * r : -1, id: units.count))
                off += r * i + o * r + (config.useDoRA ? o : 0)
            }
        }
        self.units = units
        self.index = index
        scale = config.scaling
        dropRng = Rng(seed: config.seed ^ 0x9E37_79B9_7F4A_7C15)
        try super.init(model: m, config: .lora(config), parameterCount: off)
        if config.initLoRAWeights.rewritesBase {
            try initialiseFromBase(context)
        } else {
            // PEFT's init: A Kaiming-uniform (a = √5 → bound 1/√in), B zero; `false` leaves B as nn.Linear
            // initialises it too (bound 1/√r). B's draws follow every A's, so A is the same either way.
            var rng = Rng(seed: config.seed)
            for u in units {
                let bound = 1 / Float(u.inF).squareRoot()
                fillUniform(params.floats + u.a, r * u.inF, low: -bound, high: bound, rng: &rng)
            }
            if config.initLoRAWeights == .random {
                let bound = 1 / Float(r).squareRoot()
                for u in units { fillUniform(params.floats + u.b, u.outF * r, low: -bound, high: bound, rng: &rng) }
            }
        }
        if config.useDoRA {
            let d = try DoRAState(units: units, rank: r, context: context)
            for u in units { d.initialMagnitude(u, into: params.floats + u.m) }
            dora = d
        }
    }

    static func dims(_ s: LinearSite, _ m: ModelConfig) -> (Int, Int) { s.shape(m) }

    override var lowestLayer: Int { units.map { $0.layer }.min() ?? 0 }

    /// LoRA+: each unit's A at lr, its B and magnitude at ratio·lr (PEFT's groupA / groupB; every B and
    /// magnitude decays, as PEFT's `decay_parameters` holds them).
    override func learningRateGroups(loraPlusRatio: Double) -> [LearningRateGroup]? {
        let ratio = loraPlusRatio > 0 ? loraPlusRatio : config.loraPlusRatio.map { decimalDouble($0) } ?? 1
        guard ratio != 1 else { return nil }
        let r = config.rank
        return units.flatMap { u in
            [LearningRateGroup(range: u.a..<u.b, scale: 1),
             LearningRateGroup(range: u.b..<(u.b + u.outF * r + (u.m >= 0 ? u.outF : 0)), scale: ratio)]
        }
    }

    @inline(__always) func unit(_ l: Int, _ s: LinearSite) -> Unit? {
        let i = index[l * LinearSite.count + s.rawValue]
        return i >= 0 ? units[i] : nil
    }
    override func hooks(_ l: Int, _ site: LinearSite) -> Bool { unit(l, site) != nil }

    override func prepare(rows n: Int, batch: Int, seqLen: Int, slots: Int, training: Bool) throws {
        if let p = prepared[training], p == (n, slots) { return }
        let pool = BufferPool()
        let r = config.rank
        var a: [[UnsafeMutablePointer<Float>?]] = []
        var d: [[UnsafeMutablePointer<Float>?]] = []
        for slot in 0..<slots {
            var row: [UnsafeMutablePointer<Float>?] = []
            var drow: [UnsafeMutablePointer<Float>?] = []
            for s in LinearSite.allCases {
                let has = training ? unit(slot, s) != nil : units.contains { $0.site == s }
                row.append(has ? try pool.take(n * r) : nil)
                let inF = LoRAAdapter.dims(s, model).0
                drow.append(has && training && config.dropout > 0 ? try pool.take(n * inF) : nil)
            }
            a.append(row); d.append(drow)
        }
        acts[training] = a
        drop[training] = d
        if training {
            gbuf = try pool.take(n * r)
            if config.dropout > 0 { work = try pool.take(n * max(model.hiddenSize, model.intermediateSize, model.numHeads * model.headDim)) }
        }
        pools[training] = pool
        prepared[training] = (n, slots)
        try dora?.prepare(self, rows: n, slots: slots, training: training)
    }

    override func beginPass(training: Bool) {
        if let d = dora { d.holdNorms ? d.refreshScales(self) : d.refresh(self) }
    }

    private func t(_ p: PassInfo, _ s: LinearSite) -> UnsafeMutablePointer<Float> { acts[p.training]![p.training ? p.slot : 0][s.rawValue]! }

    override func linearOutput(_ l: Int, _ site: LinearSite, out: UnsafeMutablePointer<Float>, ldo: Int,
                               inp: UnsafeMutablePointer<Float>, ldi: Int, _ p: PassInfo) {
        guard let u = unit(l, site) else { return }
        let r = config.rank, n = p.rows, A = params.floats + u.a, B = params.floats + u.b
        var x = inp, ldx = ldi
        if p.training, config.dropout > 0, let ms = drop[true]![p.slot][site.rawValue], let w = work {
            // Inverted dropout on the branch input: the scaled mask is kept; the masked input is rebuilt when needed.
            let keep = 1 - config.dropout, inv = 1 / keep
            if let fixed = fixedDropoutKeep[u.id], fixed.count >= n * u.inF {
                for i in 0..<(n * u.inF) { ms[i] = fixed[i] * inv }
            } else {
                for i in 0..<(n * u.inF) { ms[i] = dropRng.nextFloat() < keep ? inv : 0 }
            }
            masked(w, inp, ldi, ms, n, u.inF)
            x = w; ldx = u.inF
        }
        let tt = t(p, site)
        sgemm(transA: false, transB: true, m: n, n: r, k: u.inF,
              alpha: 1, a: x, lda: ldx, b: A, ldb: u.inF, beta: 0, c: tt, ldc: r)
        if let d = dora {
            if x != inp {
                d.forwardDropped(self, u, out: out, ldo: ldo, t: tt, dropped: x, p)
            } else {
                d.forward(self, u, out: out, ldo: ldo, t: tt, p)
            }
            return
        }
        sgemm(transA: false, transB: true, m: n, n: u.outF, k: r,
              alpha: scale, a: tt, lda: r, b: B, ldb: r, beta: 1, c: out, ldc: ldo)
    }

    override func linearOutputBackward(_ l: Int, _ site: LinearSite, dout: UnsafeMutablePointer<Float>, lddo: Int,
                                       inp: UnsafeMutablePointer<Float>, ldi: Int, dinp: UnsafeMutablePointer<Float>, lddi: Int,
                                       grads: UnsafeMutablePointer<Float>, _ p: PassInfo) -> UnsafeMutablePointer<Float> {
        guard let u = unit(l, site), let g = gbuf else { return dout }
        let r = config.rank, n = p.rows, B = params.floats + u.b
        // DoRA: the magnitude's gradient, and dy·m/n as the gradient of both branches (of the LoRA branch only
        // under dropout: the frozen linear then gets dy itself, see `linearInputBackward`).
        let dy = dout, lddy = lddo
        var dout = dout, lddo = lddo
        if let d = dora {
            dout = d.backward(u, dout: dout, lddo: lddo, grads: grads, p)
            lddo = u.outF
        }
        let tt = t(p, site)
        var x = inp, ldx = ldi, dropped = false
        if config.dropout > 0, let ms = drop[true]![p.slot][site.rawValue], let w = work {
            masked(w, inp, ldi, ms, n, u.inF)
            x = w; ldx = u.inF; dropped = true
        }
        // dB += s·dYᵀ·t ; g = dY·B ; dA += s·gᵀ·x
        sgemm(transA: true, transB: false, m: u.outF, n: r, k: n,
              alpha: scale, a: dout, lda: lddo, b: tt, ldb: r, beta: 1, c: grads + u.b, ldc: r)
        sgemm(transA: false, transB: false, m: n, n: r, k: u.outF,
              alpha: 1, a: dout, lda: lddo, b: B, ldb: r, beta: 0, c: g, ldc: r)
        sgemm(transA: true, transB: false, m: r, n: u.inF, k: n,
              alpha: scale, a: g, lda: r, b: x, ldb: ldx, beta: 1, c: grads + u.a, ldc: u.inF)
        if dropped, let d = dora {
            d.keepDroppedBaseGradient(u, dout: dy, lddo: lddy, p)
            return dy
        }
        return dout
    }

    override func linearInputBackward(_ l: Int, _ site: LinearSite, dinp: UnsafeMutablePointer<Float>, lddi: Int,
                                      inp: UnsafeMutablePointer<Float>, ldi: Int, grads: UnsafeMutablePointer<Float>, _ p: PassInfo) {
        guard let u = unit(l, site), let g = gbuf else { return }
        let r = config.rank, n = p.rows, A = params.floats + u.a
        if config.dropout > 0, let ms = drop[true]![p.slot][site.rawValue], let w = work {
            // dX += (s·g·A) ⊙ mask/(1-p); DoRA adds its base term on the dropped input: (dy ⊙ (m/n − 1))·W.
            var beta: Float = 0
            if let d = dora, d.droppedBaseGradient(u, into: w, p) { beta = 1 }
            sgemm(transA: false, transB: false, m: n, n: u.inF, k: r,
                  alpha: scale, a: g, lda: r, b: A, ldb: u.inF, beta: beta, c: w, ldc: u.inF)
            for i in 0..<n {
                let d = dinp + i * lddi, ww = w + i * u.inF, m = ms + i * u.inF
                for j in 0..<u.inF { d[j] += ww[j] * m[j] }
            }
        } else {
            sgemm(transA: false, transB: false, m: n, n: u.inF, k: r,
                  alpha: scale, a: g, lda: r, b: A, ldb: u.inF, beta: 1, c: dinp, ldc: lddi)
        }
    }

    private func masked(_ out: UnsafeMutablePointer<Float>, _ x: UnsafeMutablePointer<Float>, _ ldx: Int,
                        _ ms: UnsafeMutablePointer<Float>, _ n: Int, _ w: Int) {
        for i in 0..<n {
            let o = out + i * w, xi = x + i * ldx, mi = ms + i * w
            for j in 0..<w { o[j] = xi[j] * mi[j] }
        }
    }

    /// ΔW for unit `u` in the base weight's own layout: s·B·A ([out, in]) or its transpose for Conv1D.
    func delta(_ u: Unit, transposed: Bool, into w: UnsafeMutablePointer<Float>, sign: Float) {
        let r = config.rank, A = params.floats + u.a, B = params.floats + u.b
        if transposed {
            // W [in, out] += s·Aᵀ·Bᵀ
            sgemm(transA: true, transB: true, m: u.inF, n: u.outF, k: r,
                  alpha: sign * scale, a: A, lda: u.inF, b: B, ldb: r, beta: 1, c: w, ldc: u.outF)
        } else {
            sgemm(transA: false, transB: false, m: u.outF, n: u.inF, k: r,
                  alpha: sign * scale, a: B, lda: r, b: A, ldb: u.inF, beta: 1, c: w, ldc: u.inF)
        }
    }
}
