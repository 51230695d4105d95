/// A set of buffers allocated together and freed together (one per batch shape).
final class BufferPool {
    private(set) var storages: [Storage] = []
    private(set) var floats = 0

    func take(_ n: Int) throws -> UnsafeMutablePointer<Float> {
        let s = try Storage.allocate(floats: max(n, 1))
        storages.append(s)
        floats += n
        return s.floats
    }
}

/// One layer's activations. In training every adapted layer (and those above it) has its own set; inference
/// shares a single set across layers.
struct LayerActs {
    var ln1, ln1Mean, ln1Rstd: UnsafeMutablePointer<Float>
    var qkv: UnsafeMutablePointer<Float>
    var probs: UnsafeMutablePointer<Float>
    var attn: UnsafeMutablePointer<Float>
    var h1: UnsafeMutablePointer<Float>
    var x1: UnsafeMutablePointer<Float>
    var ln2, ln2Mean, ln2Rstd: UnsafeMutablePointer<Float>
    var fcPre: UnsafeMutablePointer<Float>
    var fcUp: UnsafeMutablePointer<Float>?
    var act: UnsafeMutablePointer<Float>
    var h2: UnsafeMutablePointer<Float>
    /// Keys/values of [prefix; sequence] per batch row ([B, tk, KVH·D]) when a prefix is attended to
    /// without a cache.
    var kvk: UnsafeMutablePointer<Float>?
    var kvv: UnsafeMutablePointer<Float>?

    /// `sharedH1` / `sharedH2`: buffers to use for `h1` / `h2` instead of new ones. The backward pass never
    /// reads the linear outputs h1 and h2 (only a bottleneck unit at that site keeps a pointer to them), so
    /// training shares one buffer across layers where no unit sits: N × C floats less per layer and site.
    init(pool: BufferPool, config c: ModelConfig, rows n: Int, batch: Int, tq: Int, tk: Int, prefix: Int = 0,
         sharedH1: UnsafeMutablePointer<Float>? = nil, sharedH2: UnsafeMutablePointer<Float>? = nil) throws {
        let C = c.hiddenSize, I = c.intermediateSize
        let hd = c.numHeads * c.headDim
        ln1 = try pool.take(n * C); ln1Mean = try pool.take(n); ln1Rstd = try pool.take(n)
        qkv = try pool.take(n * c.qkvWidth)
        probs = try pool.take(batch * c.numHeads * tq * tk)
        attn = try pool.take(n * hd)
        h1 = try sharedH1 ?? pool.take(n * C)
        x1 = try pool.take(n * C)
        ln2 = try pool.take(n * C); ln2Mean = try pool.take(n); ln2Rstd = try pool.take(n)
        fcPre = try pool.take(n * I)
        fcUp = c.architecture == .llama ? try pool.take(n * I) : nil
        act = try pool.take(n * I)
        h2 = try sharedH2 ?? pool.take(n * C)
        if prefix > 0 {
            let kvd = c.numKVHeads * c.headDim
            kvk = try pool.take(batch * tk * kvd)
            kvv = try pool.take(batch * tk * kvd)
        }
    }
}

/// Scratch for the backward pass, shared by all layers.
struct BackwardScratch {
    var d, dh, dln, dz, scratchC: UnsafeMutablePointer<Float>
    var dact, dfcPre, dfcUp: UnsafeMutablePointer<Float>
    var dattn, dqkv, dprobs: UnsafeMutablePointer<Float>
    /// Scratch for adapters that rewrite an output gradient ([N, max linear width]).
    var dtmp: UnsafeMutablePointer<Float>
    /// Key and value gradients of [prefix; sequence] ([2, B, tk, KVH·D]) when a prefix is trained.
    var dkv: UnsafeMutablePointer<Float>?

    init(pool: BufferPool, config c: ModelConfig, rows n: Int, batch: Int, seqLen t: Int, keys tk: Int) throws {
        let C = c.hiddenSize, I = c.intermediateSize, hd = c.numHeads * c.headDim
        d = try pool.take(n * C); dh = try pool.take(n * C); dln = try pool.take(n * C)
        dz = try pool.take(n * C); scratchC = try pool.take(n * C)
        dact = try pool.take(n * I); dfcPre = try pool.take(n * I)
        dfcUp = try pool.take(c.architecture == .llama ? n * I : 1)
        dattn = try pool.take(n * hd); dqkv = try pool.take(n * c.qkvWidth)
        dprobs = try pool.take(batch * c.numHeads * t * tk)
        dtmp = try pool.take(n * max(c.qkvWidth, c.intermediateSize, c.hiddenSize))
        if tk > t { dkv = try pool.take(2 * batch * tk * c.numKVHeads * c.headDim) }
    }
}

extension ModelConfig {
    /// Row width of the q|k|v buffer: H·D + 2·KVH·D.
    var qkvWidth: Int { (numHeads + 2 * numKVHeads) * headDim }
}

/// Key/value cache for generation: [layer][row][position][kvHeads·headDim] for keys and for values.
final class KVCache {
    let layers: Int, batch: Int, maxLen: Int, width: Int
    let k: Storage, v: Storage
    var length = 0

    init(config c: ModelConfig, batch: Int, maxLen: Int) throws {
        layers = c.numLayers; self.batch = batch; self.maxLen = maxLen
        width = c.numKVHeads * c.headDim
        let (n1, o1) = layers.multipliedReportingOverflow(by: batch * maxLen)
        let (n, o2) = n1.multipliedReportingOverflow(by: width)
        guard !o1, !o2 else { throw PEFTKitError.outOfMemory("KV cache size overflows") }
        k = try Storage.allocate(floats: n)
        v = try Storage.allocate(floats: n)
    }

    func kRows(_ l: Int) -> StridedRows {
        StridedRows(ptr: k.floats + l * batch * maxLen * width, ld: width, batchStride: maxLen * width)
    }
    func vRows(_ l: Int) -> StridedRows {
        StridedRows(ptr: v.floats + l * batch * maxLen * width, ld: width, batchStride: maxLen * width)
    }
}

extension Engine {
    /// Runs the frozen linear at `site` with the active adapter's hooks around it.
    @inline(__always)
    func linear(_ l: Int, _ site: LinearSite, _ lin: Linear, out: UnsafeMutablePointer<Float>, inp: UnsafeMutablePointer<Float>,
                rows n: Int, ldo: Int? = nil, adapter: Adapter?, pass: PassInfo) {
        let ldo = ldo ?? lin.outFeatures
        guard let ad = adapter, ad.hooks(l, site) else {
            lin.forward(out: out, inp: inp, rows: n, ldo: ldo)
            return
        }
        let x = ad.linearInput(l, site, inp, ldi: lin.inFeatures, pass)
        lin.forward(out: out, inp: x, rows: n, ldo: ldo)
        ad.linearOutput(l, site, out: out, ldo: ldo, inp: x, ldi: lin.inFeatures, pass)
    }

    /// Input gradient of the linear at `site`, with the adapter's hooks. A frozen linear (`wgrad` nil) gets no
    /// weight gradient; under full fine-tuning `wgrad` holds the views its weight and bias gradients
    /// accumulate into.
    @inline(__always)
    func linearBack(_ l: Int, _ site: LinearSite, _ lin: Linear, dinp: UnsafeMutablePointer<Float>, dout: UnsafeMutablePointer<Float>,
                    inp: UnsafeMutablePointer<Float>, rows n: Int, accumulate: Bool, lddo: Int? = nil, adapter: Adapter?,
                    grads: UnsafeMutablePointer<Float>?, wgrad: Linear? = nil, pass: PassInfo) {
        let lddo = lddo ?? lin.outFeatures
        guard let ad = adapter, let g = grads, ad.hooks(l, site) else {
            lin.backwardInput(dinp: dinp, dout: dout, rows: n, accumulate: accumulate, lddo: lddo)
            if let wg = wgrad {
                lin.backwardWeights(dweight: wg.weight, dbias: wg.bias, dout: dout, inp: inp, rows: n, lddo: lddo)
            }
            return
        }
        let dy = ad.linearOutputBackward(l, site, dout: dout, lddo: lddo, inp: inp, ldi: lin.inFeatures, dinp: dinp,
                                         lddi: lin.inFeatures, grads: g, pass)
        let dyld = dy == dout ? lddo : lin.outFeatures
        lin.backwardInput(dinp: dinp, dout: dy, rows: n, accumulate: accumulate, lddo: dyld)
        ad.linearInputBackward(l, site, dinp: dinp, lddi: lin.inFeatures, inp: inp, ldi: lin.inFeatures, grads: g, pass)
    }

    /// Forward of layer `l`: reads stream `x` [B·T, C], writes stream `out`. Queries sit at positions
    /// pastLen..<pastLen+T. With a cache, keys and values are appended at `pastLen` and attention runs over the
    /// cache; without one, a prefix adapter's keys/values (if any) precede the sequence's own.
    func forwardLayer(_ l: Int, x: UnsafeMutablePointer<Float>, out: UnsafeMutablePointer<Float>, a: inout LayerActs,
                      batch B: Int, seqLen T: Int, pastLen: Int, cache: KVCache?, adapter: Adapter?, pass: PassInfo) {
        let c = config, w = weights.layers[l]
        let N = B * T, C = c.hiddenSize, I = c.intermediateSize
        let H = c.numHeads, KVH = c.numKVHeads, D = c.headDim
        let hd = H * D, kvd = KVH * D, ld = c.qkvWidth
        let eps = c.normEps
        let gpt2 = c.architecture == .gpt2

        if gpt2 {
            layerNormForward(a.ln1, a.ln1Mean, a.ln1Rstd, x, w.norm1W, w.norm1B!, N, C, eps)
            linear(l, .qkv, w.qkv!, out: a.qkv, inp: a.ln1, rows: N, adapter: adapter, pass: pass)
        } else {
            rmsNormForward(a.ln1, a.ln1Rstd, x, w.norm1W, N, C, eps)
            linear(l, .q, w.q!, out: a.qkv, inp: a.ln1, rows: N, ldo: ld, adapter: adapter, pass: pass)
            linear(l, .k, w.k!, out: a.qkv + hd, inp: a.ln1, rows: N, ldo: ld, adapter: adapter, pass: pass)
            linear(l, .v, w.v!, out: a.qkv + hd + kvd, inp: a.ln1, rows: N, ldo: ld, adapter: adapter, pass: pass)
            ropeForward(a.qkv, rope!, rows: N, seqLen: T, posOffset: pastLen, numHeads: H, headDim: D, rowStride: ld)
            ropeForward(a.qkv + hd, rope!, rows: N, seqLen: T, posOffset: pastLen, numHeads: KVH, headDim: D, rowStride: ld)
        }
        let q = StridedRows(ptr: a.qkv, ld: ld, batchStride: T * ld)
        var k = StridedRows(ptr: a.qkv + hd, ld: ld, batchStride: T * ld)
        var v = StridedRows(ptr: a.qkv + hd + kvd, ld: ld, batchStride: T * ld)
        var tk = T
        if let cache {
            let kc = cache.kRows(l), vc = cache.vRows(l)
            for b in 0..<B {
                for t in 0..<T {
                    let src = a.qkv + (b * T + t) * ld
                    (kc.ptr + b * kc.batchStride + (pastLen + t) * kc.ld).update(from: src + hd, count: kvd)
                    (vc.ptr + b * vc.batchStride + (pastLen + t) * vc.ld).update(from: src + hd + kvd, count: kvd)
                }
            }
            k = kc; v = vc
            tk = pastLen + T
        } else if pastLen > 0, let ad = adapter, let kvk = a.kvk, let kvv = a.kvv {
            // [prefix; sequence] keys and values for every row.
            let P = pastLen
            tk = P + T
            let (pk, pv) = ad.prefixKV(l)
            for b in 0..<B {
                (kvk + b * tk * kvd).update(from: pk, count: P * kvd)
                (kvv + b * tk * kvd).update(from: pv, count: P * kvd)
                for t in 0..<T {
                    let src = a.qkv + (b * T + t) * ld
                    (kvk + (b * tk + P + t) * kvd).update(from: src + hd, count: kvd)
                    (kvv + (b * tk + P + t) * kvd).update(from: src + hd + kvd, count: kvd)
                }
            }
            k = StridedRows(ptr: kvk, ld: kvd, batchStride: tk * kvd)
            v = StridedRows(ptr: kvv, ld: kvd, batchStride: tk * kvd)
        }
        let shape = AttentionShape(batch: B, tq: T, tk: tk, pastLen: tk - T, heads: H, kvHeads: KVH, headDim: D)
        attentionForward(out: StridedRows(ptr: a.attn, ld: hd, batchStride: T * hd), probs: a.probs, q: q, k: k, v: v, shape)
        linear(l, .o, w.o, out: a.h1, inp: a.attn, rows: N, adapter: adapter, pass: pass)
        if let ad = adapter, ad.hasUnit(l, .attention) {
            ad.unitForward(l, .attention, out: a.x1, x: x, h: a.h1, pass)
        } else {
            add(a.x1, x, a.h1, N * C)
        }
        if gpt2 {
            layerNormForward(a.ln2, a.ln2Mean, a.ln2Rstd, a.x1, w.norm2W, w.norm2B!, N, C, eps)
            linear(l, .fc, w.fc!, out: a.fcPre, inp: a.ln2, rows: N, adapter: adapter, pass: pass)
            activationForward(.geluTanh, a.act, a.fcPre, N * I)
            linear(l, .proj, w.proj!, out: a.h2, inp: a.act, rows: N, adapter: adapter, pass: pass)
        } else {
            rmsNormForward(a.ln2, a.ln2Rstd, a.x1, w.norm2W, N, C, eps)
            linear(l, .gate, w.gate!, out: a.fcPre, inp: a.ln2, rows: N, adapter: adapter, pass: pass)
            linear(l, .up, w.up!, out: a.fcUp!, inp: a.ln2, rows: N, adapter: adapter, pass: pass)
            swigluForward(a.act, a.fcPre, a.fcUp!, N * I)
            linear(l, .down, w.down!, out: a.h2, inp: a.act, rows: N, adapter: adapter, pass: pass)
        }
        if let ad = adapter, ad.hasUnit(l, .output) {
            ad.unitForward(l, .output, out: out, x: a.x1, h: a.h2, pass)
        } else {
            add(out, a.x1, a.h2, N * C)
        }
    }

    /// Backward of layer `l` (no cache; `pastLen` = prefix length). On entry `s.d` holds dL/d(out); on exit
    /// dL/dx. Adapter parameter gradients accumulate into `grads`. Frozen weights get no gradient: only dX is
    /// computed through them. Under full fine-tuning `fullGrads` is given and every weight of the layer
    /// accumulates its gradient into its view there.
    func backwardLayer(_ l: Int, x: UnsafeMutablePointer<Float>, a: LayerActs, s: BackwardScratch, batch B: Int, seqLen T: Int,
                       pastLen: Int, adapter: Adapter?, grads: UnsafeMutablePointer<Float>?, fullGrads: BaseWeights? = nil,
                       pass: PassInfo) {
        let c = config, w = weights.layers[l]
        let gw = fullGrads?.layers[l]
        let N = B * T, C = c.hiddenSize, I = c.intermediateSize
        let H = c.numHeads, KVH = c.numKVHeads, D = c.headDim
        let hd = H * D, kvd = KVH * D, ld = c.qkvWidth
        let gpt2 = c.architecture == .gpt2
        let d = s.d

        // Feed-forward block: out = x1 + h2 (+ A(z))
        s.dh.update(from: d, count: N * C)
        if let ad = adapter, let g = grads, ad.hasUnit(l, .output) {
            let toX = ad.unitBackward(l, .output, dz: s.dz, dout: d, grads: g, scratchC: s.scratchC, pass)
            addInPlace(s.dh, s.dz, N * C)
            if toX { addInPlace(d, s.dz, N * C) }
        }
        if gpt2 {
            linearBack(l, .proj, w.proj!, dinp: s.dact, dout: s.dh, inp: a.act, rows: N, accumulate: false, adapter: adapter,
                       grads: grads, wgrad: gw?.proj, pass: pass)
            s.dfcPre.update(repeating: 0, count: N * I)
            activationBackward(.geluTanh, s.dfcPre, a.fcPre, s.dact, N * I)
            linearBack(l, .fc, w.fc!, dinp: s.dln, dout: s.dfcPre, inp: a.ln2, rows: N, accumulate: false, adapter: adapter,
                       grads: grads, wgrad: gw?.fc, pass: pass)
            layerNormBackward(d, gw?.norm2W, gw?.norm2B, s.dln, a.x1, w.norm2W, a.ln2Mean, a.ln2Rstd, N, C)
        } else {
            linearBack(l, .down, w.down!, dinp: s.dact, dout: s.dh, inp: a.act, rows: N, accumulate: false, adapter: adapter,
                       grads: grads, wgrad: gw?.down, pass: pass)
            s.dfcPre.update(repeating: 0, count: N * I)
            s.dfcUp.update(repeating: 0, count: N * I)
            swigluBackward(s.dfcPre, s.dfcUp, s.dact, a.fcPre, a.fcUp!, N * I)
            linearBack(l, .gate, w.gate!, dinp: s.dln, dout: s.dfcPre, inp: a.ln2, rows: N, accumulate: false, adapter: adapter,
                       grads: grads, wgrad: gw?.gate, pass: pass)
            linearBack(l, .up, w.up!, dinp: s.dln, dout: s.dfcUp, inp: a.ln2, rows: N, accumulate: true, adapter: adapter,
                       grads: grads, wgrad: gw?.up, pass: pass)
            rmsNormBackward(d, gw?.norm2W, s.dln, a.x1, w.norm2W, a.ln2Rstd, N, C)
        }

        // Attention block: x1 = x + h1 (+ A(z))
        s.dh.update(from: d, count: N * C)
        if let ad = adapter, let g = grads, ad.hasUnit(l, .attention) {
            let toX = ad.unitBackward(l, .attention, dz: s.dz, dout: d, grads: g, scratchC: s.scratchC, pass)
            addInPlace(s.dh, s.dz, N * C)
            if toX { addInPlace(d, s.dz, N * C) }
        }
        linearBack(l, .o, w.o, dinp: s.dattn, dout: s.dh, inp: a.attn, rows: N, accumulate: false, adapter: adapter,
                   grads: grads, wgrad: gw?.o, pass: pass)
        s.dqkv.update(repeating: 0, count: N * ld)
        func rows(_ p: UnsafeMutablePointer<Float>) -> StridedRows { StridedRows(ptr: p, ld: ld, batchStride: T * ld) }
        let dout = StridedRows(ptr: s.dattn, ld: hd, batchStride: T * hd)
        if pastLen > 0, let kvk = a.kvk, let kvv = a.kvv, let dk = s.dkv, let ad = adapter, let g = grads {
            let P = pastLen, tk = P + T
            let dkk = dk, dvv = dk + B * tk * kvd
            dkk.update(repeating: 0, count: 2 * B * tk * kvd)
            let shape = AttentionShape(batch: B, tq: T, tk: tk, pastLen: P, heads: H, kvHeads: KVH, headDim: D)
            attentionBackward(dq: rows(s.dqkv), dk: StridedRows(ptr: dkk, ld: kvd, batchStride: tk * kvd),
                              dv: StridedRows(ptr: dvv, ld: kvd, batchStride: tk * kvd), dprobs: s.dprobs, dout: dout,
                              probs: a.probs, q: rows(a.qkv), k: StridedRows(ptr: kvk, ld: kvd, batchStride: tk * kvd),
                              v: StridedRows(ptr: kvv, ld: kvd, batchStride: tk * kvd), shape)
            let (gk, gv) = ad.prefixKVGrad(l, grads: g)
            for b in 0..<B {
                addInPlace(gk, dkk + b * tk * kvd, P * kvd)
                addInPlace(gv, dvv + b * tk * kvd, P * kvd)
                for t in 0..<T {
                    let dst = s.dqkv + (b * T + t) * ld
                    (dst + hd).update(from: dkk + (b * tk + P + t) * kvd, count: kvd)
                    (dst + hd + kvd).update(from: dvv + (b * tk + P + t) * kvd, count: kvd)
                }
            }
        } else {
            let shape = AttentionShape(batch: B, tq: T, tk: T, pastLen: 0, heads: H, kvHeads: KVH, headDim: D)
            attentionBackward(dq: rows(s.dqkv), dk: rows(s.dqkv + hd), dv: rows(s.dqkv + hd + kvd), dprobs: s.dprobs,
                              dout: dout, probs: a.probs, q: rows(a.qkv), k: rows(a.qkv + hd), v: rows(a.qkv + hd + kvd), shape)
        }
        if gpt2 {
            linearBack(l, .qkv, w.qkv!, dinp: s.dln, dout: s.dqkv, inp: a.ln1, rows: N, accumulate: false, adapter: adapter,
                       grads: grads, wgrad: gw?.qkv, pass: pass)
            layerNormBackward(d, gw?.norm1W, gw?.norm1B, s.dln, x, w.norm1W, a.ln1Mean, a.ln1Rstd, N, C)
        } else {
            ropeBackward(s.dqkv, rope!, rows: N, seqLen: T, posOffset: pastLen, numHeads: H, headDim: D, rowStride: ld)
            ropeBackward(s.dqkv + hd, rope!, rows: N, seqLen: T, posOffset: pastLen, numHeads: KVH, headDim: D, rowStride: ld)
            linearBack(l, .q, w.q!, dinp: s.dln, dout: s.dqkv, inp: a.ln1, rows: N, accumulate: false, lddo: ld,
                       adapter: adapter, grads: grads, wgrad: gw?.q, pass: pass)
            linearBack(l, .k, w.k!, dinp: s.dln, dout: s.dqkv + hd, inp: a.ln1, rows: N, accumulate: true, lddo: ld,
                       adapter: adapter, grads: grads, wgrad: gw?.k, pass: pass)
            linearBack(l, .v, w.v!, dinp: s.dln, dout: s.dqkv + hd + kvd, inp: a.ln1, rows: N, accumulate: true, lddo: ld,
                       adapter: adapter, grads: grads, wgrad: gw?.v, pass: pass)
            rmsNormBackward(d, gw?.norm1W, s.dln, x, w.norm1W, a.ln1Rstd, N, C)
        }
    }
}
