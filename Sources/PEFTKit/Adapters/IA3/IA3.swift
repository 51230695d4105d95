/// IA3 (Liu et al. 2022): learned vectors that scale the outputs of chosen frozen linears (keys, values)
/// or, for feed-forward modules, their inputs (the FFN's inner activation). Vectors start at 1.
public struct IA3Config: Sendable, Equatable {
    /// Modules to scale; empty means PEFT's default (GPT-2 `c_attn`, `mlp.c_proj`; Llama `k_proj`, `v_proj`,
    /// `down_proj`).
    public var targets: [String] = []
    /// Which targets are feed-forward (scaled on the input); nil means PEFT's default (GPT-2 `mlp.c_proj`;
    /// Llama `down_proj`) intersected with the targets, [] means none.
    public var feedforward: [String]? = nil
    /// Layers to adapt; nil means all.
    public var layers: [Int]? = nil

    public init() {}
}

final class IA3Adapter: Adapter {
    struct Unit {
        let layer: Int
        let site: LinearSite
        let width: Int
        let onInput: Bool
        let offset: Int
    }
    let config: IA3Config
    let units: [Unit]
    let index: [Int]
    /// Per slot and site: the unscaled output (output scaling) or the scaled input (input scaling), [N, width].
    private var saved: [Bool: [[UnsafeMutablePointer<Float>?]]] = [:]
    private var scratch: UnsafeMutablePointer<Float>?
    private var pools: [Bool: BufferPool] = [:]
    private var prepared: [Bool: (Int, Int)] = [:]

    init(config: IA3Config, model m: ModelConfig) throws {
        try validateLayers(config.layers, numLayers: m.numLayers)
        self.config = config
        let (sites, ff) = try IA3Adapter.resolve(config, m)
        var units: [Unit] = []
        var index = [Int](repeating: -1, count: m.numLayers * LinearSite.count)
        var off = 0
        for l in (config.layers ?? Array(0..<m.numLayers)).sorted() {
            for s in sites {
                let (i, o) = s.shape(m)
                let onInput = ff.contains(s)
                let w = onInput ? i : o
                index[l * LinearSite.count + s.rawValue] = units.count
                units.append(Unit(layer: l, site: s, width: w, onInput: onInput, offset: off))
                off += w
            }
        }
        self.units = units
        self.index = index
        try super.init(model: m, config: .ia3(config), parameterCount: off)
        params.floats.update(repeating: 1, count: off)
    }

    override var lowestLayer: Int { units.map { $0.layer }.min() ?? 0 }

    /// The target sites and, among them, the feed-forward ones (scaled on the input).
    static func resolve(_ config: IA3Config, _ m: ModelConfig) throws -> (sites: [LinearSite], feedforward: [LinearSite]) {
        // PEFT's defaults per model type.
        let (defaultTargets, defaultFF): ([String], [String])
        switch m.architecture {
        case .gpt2: (defaultTargets, defaultFF) = (["c_attn", "mlp.c_proj"], ["mlp.c_proj"])
        case .llama: (defaultTargets, defaultFF) = (["k_proj", "v_proj", "down_proj"], ["down_proj"])
        case .bert: (defaultTargets, defaultFF) = (["key", "value", "output.dense"], ["output.dense"])
        }
        let names = config.targets.isEmpty ? defaultTargets : config.targets
        let sites = try resolveTargets(names, arch: m.architecture, what: "IA3")
        let ffNames = config.feedforward ?? defaultFF
        let ff = ffNames.isEmpty ? [] : try resolveTargets(ffNames, arch: m.architecture, what: "IA3 feed-forward")
        if config.feedforward != nil {
            for s in ff { try require(sites.contains(s), "IA3 feed-forward module '\(s.shortName(m.architecture))' is not a target") }
        }
        return (sites, ff)
    }

    @inline(__always) func unit(_ l: Int, _ s: LinearSite) -> Unit? {
        let i = index[l * LinearSite.count + s.rawValue]
        return i >= 0 ? units[i] : nil
    }
    override func hooks(_ l: Int, _ site: LinearSite) -> Bool { unit(l, site) != nil }

    override func prepare(rows n: Int, batch: Int, seqLen: Int, slots: Int, training: Bool) throws {
        if let p = prepared[training], p == (n, slots) { return }
        let pool = BufferPool()
        var sv: [[UnsafeMutablePointer<Float>?]] = []
        var maxW = 1
        for slot in 0..<slots {
            var row: [UnsafeMutablePointer<Float>?] = []
            for s in LinearSite.allCases {
                let u = training ? unit(slot, s) : units.first { $0.site == s }
                row.append(try u.map { try pool.take(n * $0.width) })
                if u != nil { maxW = max(maxW, s.shape(model).outFeatures) }
            }
            sv.append(row)
        }
        saved[training] = sv
        if training { scratch = try pool.take(n * maxW) }
        pools[training] = pool
        prepared[training] = (n, slots)
    }

    private func buf(_ p: PassInfo, _ s: LinearSite) -> UnsafeMutablePointer<Float> { saved[p.training]![p.training ? p.slot : 0][s.rawValue]! }

    override func linearInput(_ l: Int, _ site: LinearSite, _ inp: UnsafeMutablePointer<Float>, ldi: Int,
                              _ p: PassInfo) -> UnsafeMutablePointer<Float> {
        guard let u = unit(l, site), u.onInput else { return inp }
        let out = buf(p, site), v = params.floats + u.offset, w = u.width
        for i in 0..<p.rows {
            let o = out + i * w, x = inp + i * ldi
            for j in 0..<w { o[j] = x[j] * v[j] }
        }
        return out
    }

    override func linearOutput(_ l: Int, _ site: LinearSite, out: UnsafeMutablePointer<Float>, ldo: Int,
                               inp: UnsafeMutablePointer<Float>, ldi: Int, _ p: PassInfo) {
        guard let u = unit(l, site), !u.onInput else { return }
        let v = params.floats + u.offset, w = u.width
        let keep = p.training ? buf(p, site) : nil
        for i in 0..<p.rows {
            let o = out + i * ldo
            if let k = keep { (k + i * w).update(from: o, count: w) }
            for j in 0..<w { o[j] *= v[j] }
        }
    }

    override func linearOutputBackward(_ l: Int, _ site: LinearSite, dout: UnsafeMutablePointer<Float>, lddo: Int,
                                       inp: UnsafeMutablePointer<Float>, ldi: Int, dinp: UnsafeMutablePointer<Float>, lddi: Int,
                                       grads: UnsafeMutablePointer<Float>, _ p: PassInfo) -> UnsafeMutablePointer<Float> {
        guard let u = unit(l, site), !u.onInput, let sc = scratch else { return dout }
        let v = params.floats + u.offset, g = grads + u.offset, w = u.width, y = buf(p, site)
        // dv += Σ_rows dY ⊙ y_unscaled (row order, deterministic); dY' = dY ⊙ v.
        for i in 0..<p.rows {
            let d = dout + i * lddo, yi = y + i * w, o = sc + i * w
            for j in 0..<w {
                g[j] += d[j] * yi[j]
                o[j] = d[j] * v[j]
            }
        }
        return sc
    }

    override func linearInputBackward(_ l: Int, _ site: LinearSite, dinp: UnsafeMutablePointer<Float>, lddi: Int,
                                      inp: UnsafeMutablePointer<Float>, ldi: Int, grads: UnsafeMutablePointer<Float>, _ p: PassInfo) {
        guard let u = unit(l, site), u.onInput else { return }
        let v = params.floats + u.offset, g = grads + u.offset, w = u.width
        for i in 0..<p.rows {
            let d = dinp + i * lddi, x = inp + i * ldi
            for j in 0..<w {
                g[j] += d[j] * x[j]
                d[j] *= v[j]
            }
        }
    }
}
