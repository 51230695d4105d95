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
    var unitAttn: BottleneckUnitActs?
    var unitOut: BottleneckUnitActs?

    init(pool: BufferPool, config c: ModelConfig, rows n: Int, batch: Int, tq: Int, tk: Int,
         adapter: BottleneckAdapter?, layer: Int?) throws {
        let C = c.hiddenSize, I = c.intermediateSize
        let hd = c.numHeads * c.headDim
        ln1 = try pool.take(n * C); ln1Mean = try pool.take(n); ln1Rstd = try pool.take(n)
        qkv = try pool.take(n * c.qkvWidth)
        probs = try pool.take(batch * c.numHeads * tq * tk)
        attn = try pool.take(n * hd)
        h1 = try pool.take(n * C)
        x1 = try pool.take(n * C)
        ln2 = try pool.take(n * C); ln2Mean = try pool.take(n); ln2Rstd = try pool.take(n)
        fcPre = try pool.take(n * I)
        fcUp = c.architecture == .llama ? try pool.take(n * I) : nil
        act = try pool.take(n * I)
        h2 = try pool.take(n * C)
        if let a = adapter {
            func unitActs(_ site: BottleneckSite) throws -> BottleneckUnitActs? {
                // Inference (layer nil) sizes for any layer that has a unit at this site.
                let has = layer.map { a.unit(layer: $0, site: site) != nil } ?? a.units.contains { $0.site == site }
                guard has else { return nil }
                let z = try pool.take(n * C)
                let r = a.bottleneck
                return BottleneckUnitActs(
                    z: z, zOwn: z,
                    lnbOut: a.config.lnBefore ? try pool.take(n * C) : nil,
                    lnbMean: a.config.lnBefore ? try pool.take(n) : nil,
                    lnbRstd: a.config.lnBefore ? try pool.take(n) : nil,
                    a: try pool.take(n * r), g: try pool.take(n * r), u: try pool.take(n * C),
                    lnaOut: a.config.lnAfter ? try pool.take(n * C) : nil,
                    lnaMean: a.config.lnAfter ? try pool.take(n) : nil,
                    lnaRstd: a.config.lnAfter ? try pool.take(n) : nil)
            }
            unitAttn = try unitActs(.attention)
            unitOut = try unitActs(.output)
        }
    }
}

/// Scratch for the backward pass, shared by all layers.
struct BackwardScratch {
    var d, dh, dln, dz, scratchC: UnsafeMutablePointer<Float>
    var dact, dfcPre, dfcUp: UnsafeMutablePointer<Float>
    var dattn, dqkv, dprobs: UnsafeMutablePointer<Float>
    var scratchR: UnsafeMutablePointer<Float>

    init(pool: BufferPool, config c: ModelConfig, rows n: Int, batch: Int, seqLen t: Int, bottleneck r: Int) throws {
        let C = c.hiddenSize, I = c.intermediateSize, hd = c.numHeads * c.headDim
        d = try pool.take(n * C); dh = try pool.take(n * C); dln = try pool.take(n * C)
        dz = try pool.take(n * C); scratchC = try pool.take(n * C)
        dact = try pool.take(n * I); dfcPre = try pool.take(n * I)
        dfcUp = try pool.take(c.architecture == .llama ? n * I : 1)
        dattn = try pool.take(n * hd); dqkv = try pool.take(n * c.qkvWidth)
        dprobs = try pool.take(batch * c.numHeads * t * t)
        scratchR = try pool.take(n * max(r, 1))
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
    /// Forward of layer `l`: reads stream `x` [B·T, C], writes stream `out`. With a cache, keys and values are
    /// appended at position `pastLen` and attention runs over the cache.
    func forwardLayer(_ l: Int, x: UnsafeMutablePointer<Float>, out: UnsafeMutablePointer<Float>, a: inout LayerActs,
                      batch B: Int, seqLen T: Int, pastLen: Int, cache: KVCache?, adapter: BottleneckAdapter?) {
        let c = config, w = weights.layers[l]
        let N = B * T, C = c.hiddenSize, I = c.intermediateSize
        let H = c.numHeads, KVH = c.numKVHeads, D = c.headDim
        let hd = H * D, kvd = KVH * D, ld = c.qkvWidth
        let eps = c.normEps
        let gpt2 = c.architecture == .gpt2

        if gpt2 {
            layerNormForward(a.ln1, a.ln1Mean, a.ln1Rstd, x, w.norm1W, w.norm1B!, N, C, eps)
            w.qkv!.forward(out: a.qkv, inp: a.ln1, rows: N)
        } else {
            rmsNormForward(a.ln1, a.ln1Rstd, x, w.norm1W, N, C, eps)
            w.q!.forward(out: a.qkv, inp: a.ln1, rows: N, ldo: ld)
            w.k!.forward(out: a.qkv + hd, inp: a.ln1, rows: N, ldo: ld)
            w.v!.forward(out: a.qkv + hd + kvd, inp: a.ln1, rows: N, ldo: ld)
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
        }
        let shape = AttentionShape(batch: B, tq: T, tk: tk, pastLen: pastLen, heads: H, kvHeads: KVH, headDim: D)
        attentionForward(out: StridedRows(ptr: a.attn, ld: hd, batchStride: T * hd), probs: a.probs, q: q, k: k, v: v, shape)
        w.o.forward(out: a.h1, inp: a.attn, rows: N)
        if let ad = adapter, let u = ad.unit(layer: l, site: .attention), a.unitAttn != nil {
            ad.forward(u, out: a.x1, x: x, h: a.h1, acts: &a.unitAttn!, rows: N, eps: eps)
        } else {
            add(a.x1, x, a.h1, N * C)
        }
        if gpt2 {
            layerNormForward(a.ln2, a.ln2Mean, a.ln2Rstd, a.x1, w.norm2W, w.norm2B!, N, C, eps)
            w.fc!.forward(out: a.fcPre, inp: a.ln2, rows: N)
            activationForward(.geluTanh, a.act, a.fcPre, N * I)
            w.proj!.forward(out: a.h2, inp: a.act, rows: N)
        } else {
            rmsNormForward(a.ln2, a.ln2Rstd, a.x1, w.norm2W, N, C, eps)
            w.gate!.forward(out: a.fcPre, inp: a.ln2, rows: N)
            w.up!.forward(out: a.fcUp!, inp: a.ln2, rows: N)
            swigluForward(a.act, a.fcPre, a.fcUp!, N * I)
            w.down!.forward(out: a.h2, inp: a.act, rows: N)
        }
        if let ad = adapter, let u = ad.unit(layer: l, site: .output), a.unitOut != nil {
            ad.forward(u, out: out, x: a.x1, h: a.h2, acts: &a.unitOut!, rows: N, eps: eps)
        } else {
            add(out, a.x1, a.h2, N * C)
        }
    }

    /// Backward of layer `l` (no cache). On entry `s.d` holds dL/d(out); on exit dL/dx. Adapter parameter
    /// gradients accumulate into `grads`. Frozen weights get no gradient: only dX is computed through them.
    func backwardLayer(_ l: Int, x: UnsafeMutablePointer<Float>, a: LayerActs, s: BackwardScratch, batch B: Int, seqLen T: Int,
                       adapter: BottleneckAdapter?, grads: UnsafeMutablePointer<Float>?) {
        let c = config, w = weights.layers[l]
        let N = B * T, C = c.hiddenSize, I = c.intermediateSize
        let H = c.numHeads, KVH = c.numKVHeads, D = c.headDim
        let hd = H * D, kvd = KVH * D, ld = c.qkvWidth
        let gpt2 = c.architecture == .gpt2
        let d = s.d

        // Feed-forward block: out = x1 + h2 (+ A(z))
        s.dh.update(from: d, count: N * C)
        if let ad = adapter, let u = ad.unit(layer: l, site: .output), let ua = a.unitOut, let g = grads {
            ad.backward(u, dz: s.dz, dout: d, acts: ua, grads: g, scratchC: s.scratchC, scratchR: s.scratchR, rows: N)
            addInPlace(s.dh, s.dz, N * C)
            if ad.config.originalLnBefore { addInPlace(d, s.dz, N * C) }
        }
        if gpt2 {
            w.proj!.backwardInput(dinp: s.dact, dout: s.dh, rows: N, accumulate: false)
            s.dfcPre.update(repeating: 0, count: N * I)
            activationBackward(.geluTanh, s.dfcPre, a.fcPre, s.dact, N * I)
            w.fc!.backwardInput(dinp: s.dln, dout: s.dfcPre, rows: N, accumulate: false)
            layerNormBackward(d, nil, nil, s.dln, a.x1, w.norm2W, a.ln2Mean, a.ln2Rstd, N, C)
        } else {
            w.down!.backwardInput(dinp: s.dact, dout: s.dh, rows: N, accumulate: false)
            s.dfcPre.update(repeating: 0, count: N * I)
            s.dfcUp.update(repeating: 0, count: N * I)
            swigluBackward(s.dfcPre, s.dfcUp, s.dact, a.fcPre, a.fcUp!, N * I)
            w.gate!.backwardInput(dinp: s.dln, dout: s.dfcPre, rows: N, accumulate: false)
            w.up!.backwardInput(dinp: s.dln, dout: s.dfcUp, rows: N, accumulate: true)
            rmsNormBackward(d, nil, s.dln, a.x1, w.norm2W, a.ln2Rstd, N, C)
        }

        // Attention block: x1 = x + h1 (+ A(z))
        s.dh.update(from: d, count: N * C)
        if let ad = adapter, let u = ad.unit(layer: l, site: .attention), let ua = a.unitAttn, let g = grads {
            ad.backward(u, dz: s.dz, dout: d, acts: ua, grads: g, scratchC: s.scratchC, scratchR: s.scratchR, rows: N)
            addInPlace(s.dh, s.dz, N * C)
            if ad.config.originalLnBefore { addInPlace(d, s.dz, N * C) }
        }
        w.o.backwardInput(dinp: s.dattn, dout: s.dh, rows: N, accumulate: false)
        s.dqkv.update(repeating: 0, count: N * ld)
        let shape = AttentionShape(batch: B, tq: T, tk: T, pastLen: 0, heads: H, kvHeads: KVH, headDim: D)
        func rows(_ p: UnsafeMutablePointer<Float>) -> StridedRows { StridedRows(ptr: p, ld: ld, batchStride: T * ld) }
        attentionBackward(dq: rows(s.dqkv), dk: rows(s.dqkv + hd), dv: rows(s.dqkv + hd + kvd), dprobs: s.dprobs,
                          dout: StridedRows(ptr: s.dattn, ld: hd, batchStride: T * hd), probs: a.probs,
                          q: rows(a.qkv), k: rows(a.qkv + hd), v: rows(a.qkv + hd + kvd), shape)
        if gpt2 {
            w.qkv!.backwardInput(dinp: s.dln, dout: s.dqkv, rows: N, accumulate: false)
            layerNormBackward(d, nil, nil, s.dln, x, w.norm1W, a.ln1Mean, a.ln1Rstd, N, C)
        } else {
            ropeBackward(s.dqkv, rope!, rows: N, seqLen: T, posOffset: 0, numHeads: H, headDim: D, rowStride: ld)
            ropeBackward(s.dqkv + hd, rope!, rows: N, seqLen: T, posOffset: 0, numHeads: KVH, headDim: D, rowStride: ld)
            w.q!.backwardInput(dinp: s.dln, dout: s.dqkv, rows: N, accumulate: false, lddo: ld)
            w.k!.backwardInput(dinp: s.dln, dout: s.dqkv + hd, rows: N, accumulate: true, lddo: ld)
            w.v!.backwardInput(dinp: s.dln, dout: s.dqkv + hd + kvd, rows: N, accumulate: true, lddo: ld)
            rmsNormBackward(d, nil, s.dln, x, w.norm1W, a.ln1Rstd, N, C)
        }
    }
}
