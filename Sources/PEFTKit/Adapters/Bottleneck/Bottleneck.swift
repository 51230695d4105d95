/// Where a bottleneck unit sits: the residual after a sub-layer.
typealias BottleneckSite = ResidualSite

/// Offsets (in floats) of one unit's parameters inside the adapter's flat parameter block.
struct BottleneckUnitLayout {
    let layer: Int
    let site: BottleneckSite
    var lnBeforeW = -1, lnBeforeB = -1
    var downW = 0, downB = 0, upW = 0, upB = 0
    var lnAfterW = -1, lnAfterB = -1
}

/// Activations one unit keeps between forward and backward, for `rows` rows.
struct BottleneckUnitActs {
    /// Adapter input z (Pfeiffer: x + h in its own buffer; Houlsby: points at h).
    var z: UnsafeMutablePointer<Float>
    /// Own buffer for z when it is x + h.
    var zOwn: UnsafeMutablePointer<Float>
    /// Post-LN layers (BERT) with `original_ln_before`: LN(x + h) with the sub-layer's own norm, and its
    /// statistics; z then points here.
    var normed: UnsafeMutablePointer<Float>?
    var normMean: UnsafeMutablePointer<Float>?
    var normRstd: UnsafeMutablePointer<Float>?
    var lnbOut: UnsafeMutablePointer<Float>?
    var lnbMean: UnsafeMutablePointer<Float>?
    var lnbRstd: UnsafeMutablePointer<Float>?
    /// Down-projection pre-activation [N, r] and activation [N, r].
    var a: UnsafeMutablePointer<Float>
    var g: UnsafeMutablePointer<Float>
    /// Scaled up-projection output [N, C] (the input of ln_after).
    var u: UnsafeMutablePointer<Float>
    var lnaOut: UnsafeMutablePointer<Float>?
    var lnaMean: UnsafeMutablePointer<Float>?
    var lnaRstd: UnsafeMutablePointer<Float>?
    /// Scratch [N, r] for the backward pass.
    var scratchR: UnsafeMutablePointer<Float>
}

/// A bottleneck adapter: units at chosen (layer, site) pairs, all parameters in one flat block so that
/// gradients and AdamW moments share its layout.
final class BottleneckAdapter: Adapter {
    let config: BottleneckConfig
    let hidden: Int
    let bottleneck: Int
    let units: [BottleneckUnitLayout]
    /// unitIndex[layer * 2 + site] → index into `units`, or -1.
    let unitIndex: [Int]
    /// Activation sets: [slot][site] (nil where no unit of that site exists).
    private var trainActs: [[BottleneckUnitActs?]] = []
    private var inferActs: [[BottleneckUnitActs?]] = []
    private var pools: [Bool: BufferPool] = [:]
    private var preparedRows: [Bool: Int] = [:]

    init(config: BottleneckConfig, model: ModelConfig) throws {
        try config.validate(numLayers: model.numLayers, hidden: model.hiddenSize)
        self.config = config
        let C = model.hiddenSize
        hidden = C
        let r = config.bottleneck(hidden: C)
        bottleneck = r
        let layers = (config.layers ?? Array(0..<model.numLayers)).sorted()
        var units: [BottleneckUnitLayout] = []
        var index = [Int](repeating: -1, count: model.numLayers * 2)
        var off = 0
        func take(_ n: Int) -> Int { defer { off += n }; return off }
        for l in layers {
            for site in BottleneckSite.allCases {
                if site == .attention && !config.mhAdapter { continue }
                if site == .output && !config.outputAdapter { continue }
                var u = BottleneckUnitLayout(layer: l, site: site)
                if config.lnBefore { u.lnBeforeW = take(C); u.lnBeforeB = take(C) }
                u.downW = take(r * C); u.downB = take(r)
                u.upW = take(C * r); u.upB = take(C)
                if config.lnAfter { u.lnAfterW = take(C); u.lnAfterB = take(C) }
                index[l * 2 + site.rawValue] = units.count
                units.append(u)
            }
        }
        self.units = units
        self.unitIndex = index
        try super.init(model: model, config: .bottleneck(config), parameterCount: off)
        initialize()
    }

    override var lowestLayer: Int { units.map { $0.layer }.min() ?? 0 }

    func unit(layer: Int, site: BottleneckSite) -> BottleneckUnitLayout? {
        let i = unitIndex[layer * 2 + site.rawValue]
        return i >= 0 ? units[i] : nil
    }

    override func hasUnit(_ l: Int, _ site: BottleneckSite) -> Bool { unit(layer: l, site: site) != nil }

    override func prepare(rows n: Int, batch: Int, seqLen: Int, slots: Int, training: Bool) throws {
        if preparedRows[training] == n, (training ? trainActs : inferActs).count == slots { return }
        let pool = BufferPool()
        let C = hidden, r = bottleneck
        var sets: [[BottleneckUnitActs?]] = []
        for slot in 0..<slots {
            var row: [BottleneckUnitActs?] = []
            for site in BottleneckSite.allCases {
                let needed = training ? unit(layer: slot, site: site) != nil : units.contains { $0.site == site }
                guard needed else { row.append(nil); continue }
                let z = try pool.take(n * C)
                // Post-LN layers hand the unit their norm (`SubLayerNorm`); pre-norm decoders never do.
                let normed = config.originalLnBefore && model.architecture.weights.bidirectional
                row.append(BottleneckUnitActs(
                    z: z, zOwn: z,
                    normed: normed ? try pool.take(n * C) : nil, normMean: normed ? try pool.take(n) : nil,
                    normRstd: normed ? try pool.take(n) : nil,
                    lnbOut: config.lnBefore ? try pool.take(n * C) : nil,
                    lnbMean: config.lnBefore ? try pool.take(n) : nil,
                    lnbRstd: config.lnBefore ? try pool.take(n) : nil,
                    a: try pool.take(n * r), g: try pool.take(n * r), u: try pool.take(n * C),
                    lnaOut: config.lnAfter ? try pool.take(n * C) : nil,
                    lnaMean: config.lnAfter ? try pool.take(n) : nil,
                    lnaRstd: config.lnAfter ? try pool.take(n) : nil,
                    scratchR: try pool.take(n * r)))
            }
            sets.append(row)
        }
        if training { trainActs = sets } else { inferActs = sets }
        pools[training] = pool
        preparedRows[training] = n
    }

    override func unitForward(_ l: Int, _ site: BottleneckSite, out: UnsafeMutablePointer<Float>, x: UnsafeMutablePointer<Float>,
                              h: UnsafeMutablePointer<Float>, norm: SubLayerNorm?, _ p: PassInfo) {
        guard let u = unit(layer: l, site: site) else { return }
        if p.training {
            forward(u, out: out, x: x, h: h, norm: norm, acts: &trainActs[p.slot][site.rawValue]!, rows: p.rows)
        } else {
            forward(u, out: out, x: x, h: h, norm: norm, acts: &inferActs[0][site.rawValue]!, rows: p.rows)
        }
    }

    override func unitBackward(_ l: Int, _ site: BottleneckSite, dz: UnsafeMutablePointer<Float>, dout: UnsafeMutablePointer<Float>,
                               grads: UnsafeMutablePointer<Float>, scratchC: UnsafeMutablePointer<Float>, norm: SubLayerNorm?,
                               _ p: PassInfo) -> Bool {
        guard let u = unit(layer: l, site: site), let acts = trainActs[p.slot][site.rawValue] else { return false }
        backward(u, dz: dz, dout: dout, acts: acts, grads: grads, scratchC: scratchC, rows: p.rows)
        if config.originalLnBefore, let norm, let m = acts.normMean, let s = acts.normRstd {
            // z = LN(x + h) with the layer's frozen norm: dz becomes the gradient of x + h.
            let n = p.rows * hidden
            scratchC.update(from: dz, count: n)
            dz.update(repeating: 0, count: n)
            layerNormBackward(dz, nil, nil, scratchC, acts.zOwn, norm.weight, m, s, p.rows, hidden)
        }
        return config.originalLnBefore
    }

    /// Fills the parameters as AdapterHub's `init_weights` does.
    private func initialize() {
        var rng = Rng(seed: config.seed)
        let p = params.floats
        let C = hidden, r = bottleneck
        for u in units {
            if u.lnBeforeW >= 0 { (p + u.lnBeforeW).update(repeating: 1, count: C) }
            if u.lnAfterW >= 0 { (p + u.lnAfterW).update(repeating: 1, count: C) }
            switch config.initWeights {
            case .bert:
                fillNormal(p + u.downW, r * C, std: 0.02, rng: &rng)
                fillNormal(p + u.upW, C * r, std: 0.02, rng: &rng)
            case .houlsby:
                fillTruncNormal(p + u.downW, r * C, std: 0.01, a: -0.02, b: 0.02, rng: &rng)
                fillTruncNormal(p + u.upW, C * r, std: 0.01, a: -0.02, b: 0.02, rng: &rng)
            case .zeroUp:
                // Kaiming-uniform with a = √5 on [r, C]: bound = 1/√C.
                let bound = 1 / Float(C).squareRoot()
                fillUniform(p + u.downW, r * C, low: -bound, high: bound, rng: &rng)
            }
        }
    }

    func down(_ u: BottleneckUnitLayout, _ base: UnsafeMutablePointer<Float>) -> FrozenLinear {
        FrozenLinear(weight: base + u.downW, bias: base + u.downB, inFeatures: hidden, outFeatures: bottleneck, transposed: false)
    }
    func up(_ u: BottleneckUnitLayout, _ base: UnsafeMutablePointer<Float>) -> FrozenLinear {
        FrozenLinear(weight: base + u.upW, bias: base + u.upB, inFeatures: bottleneck, outFeatures: hidden, transposed: false)
    }

    /// out = x + h + A(z), z = (Pfeiffer) x + h, or LN(x + h) with the layer's `norm` in a post-LN layer, or
    /// (Houlsby) h. `out` may alias neither x nor h.
    func forward(_ u: BottleneckUnitLayout, out: UnsafeMutablePointer<Float>, x: UnsafeMutablePointer<Float>,
                 h: UnsafeMutablePointer<Float>, norm: SubLayerNorm?, acts: inout BottleneckUnitActs, rows n: Int) {
        let C = hidden, p = params.floats
        if config.originalLnBefore {
            add(acts.zOwn, x, h, n * C)
            acts.z = acts.zOwn
            if let norm, let o = acts.normed, let m = acts.normMean, let s = acts.normRstd {
                layerNormForward(o, m, s, acts.zOwn, norm.weight, norm.bias, n, C, norm.eps)
                acts.z = o
            }
        } else {
            acts.z = h
        }
        var zin = acts.z
        if u.lnBeforeW >= 0, let o = acts.lnbOut, let m = acts.lnbMean, let s = acts.lnbRstd {
            layerNormForward(o, m, s, acts.z, p + u.lnBeforeW, p + u.lnBeforeB, n, C, 1e-5)
            zin = o
        }
        down(u, p).forward(out: acts.a, inp: zin, rows: n)
        activationForward(config.nonLinearity, acts.g, acts.a, n * bottleneck)
        up(u, p).forward(out: acts.u, inp: acts.g, rows: n)
        if config.scaling != 1 { scaleInPlace(acts.u, n * C, config.scaling) }
        add(out, x, h, n * C)
        if u.lnAfterW >= 0, let o = acts.lnaOut, let m = acts.lnaMean, let s = acts.lnaRstd {
            layerNormForward(o, m, s, acts.u, p + u.lnAfterW, p + u.lnAfterB, n, C, 1e-5)
            addInPlace(out, o, n * C)
        } else {
            addInPlace(out, acts.u, n * C)
        }
    }

    /// Given dout = dL/d(out), accumulates parameter gradients into `grads` and writes dz = dL/dz into `dz`
    /// (overwritten). The identity paths (dx += dout, dh += dout) are the caller's.
    func backward(_ u: BottleneckUnitLayout, dz: UnsafeMutablePointer<Float>, dout: UnsafeMutablePointer<Float>,
                  acts: BottleneckUnitActs, grads: UnsafeMutablePointer<Float>, scratchC: UnsafeMutablePointer<Float>,
                  rows n: Int) {
        let C = hidden, r = bottleneck, p = params.floats
        let du = scratchC
        if u.lnAfterW >= 0, let m = acts.lnaMean, let s = acts.lnaRstd {
            du.update(repeating: 0, count: n * C)
            layerNormBackward(du, grads + u.lnAfterW, grads + u.lnAfterB, dout, acts.u, p + u.lnAfterW, m, s, n, C)
        } else {
            du.update(from: dout, count: n * C)
        }
        if config.scaling != 1 { scaleInPlace(du, n * C, config.scaling) }
        let upL = up(u, p)
        upL.backwardWeights(dweight: grads + u.upW, dbias: grads + u.upB, dout: du, inp: acts.g, rows: n)
        let dg = acts.scratchR
        upL.backwardInput(dinp: dg, dout: du, rows: n, accumulate: false)
        // da = act'(a) ⊙ dg, written over g (no longer needed after the up-projection's weight gradient).
        let da = acts.g
        da.update(repeating: 0, count: n * r)
        activationBackward(config.nonLinearity, da, acts.a, dg, n * r)
        let zin = acts.lnbOut ?? acts.z
        let downL = down(u, p)
        downL.backwardWeights(dweight: grads + u.downW, dbias: grads + u.downB, dout: da, inp: zin, rows: n)
        if u.lnBeforeW >= 0, let m = acts.lnbMean, let s = acts.lnbRstd {
            let dzin = scratchC
            downL.backwardInput(dinp: dzin, dout: da, rows: n, accumulate: false)
            dz.update(repeating: 0, count: n * C)
            layerNormBackward(dz, grads + u.lnBeforeW, grads + u.lnBeforeB, dzin, acts.z, p + u.lnBeforeW, m, s, n, C)
        } else {
            downL.backwardInput(dinp: dz, dout: da, rows: n, accumulate: false)
        }
    }
}
