// What every decoder layer shares, whatever its architecture: the activation and scratch buffers, the KV
// cache, and `LayerContext`, which runs a frozen linear with the active adapter's hooks around it, self-attention
// over [prefix; sequence] or the cache, and the residual adds (or the bottleneck units that replace them).
// An architecture's layer (`GPT2.swift`, `Llama.swift`) composes these with its norms, projections and MLP.

/// A set of buffers allocated together and freed together (one per batch shape). Buffers of 64 KiB and more
/// are anonymous mappings (`Storage.allocateMapped`): one that a pass never writes (the LM-head logits of an
/// encoder's training, the activation set of layers below the lowest adapted one when there are none) costs
/// no resident memory.
final class BufferPool {
    private(set) var storages: [Storage] = []
    private(set) var floats = 0
    static let mappedFloats = 16384

    func take(_ n: Int) throws -> UnsafeMutablePointer<Float> {
        let (bytes, overflow) = max(n, 1).multipliedReportingOverflow(by: MemoryLayout<Float>.stride)
        guard n >= 0, !overflow else { throw PEFTKitError.outOfMemory("allocation of \(n) floats overflows") }
        let s = n >= BufferPool.mappedFloats ? try Storage.allocateMapped(bytes: bytes) : try Storage.allocate(bytes: bytes)
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
    /// The up projection's output in a gated MLP (one float otherwise).
    var fcUp: UnsafeMutablePointer<Float>
    var act: UnsafeMutablePointer<Float>
    var h2: UnsafeMutablePointer<Float>
    /// Keys/values of [prefix; sequence] per batch row ([B, tk, KVH·D]) when a prefix is attended to
    /// without a cache.
    var kvk: UnsafeMutablePointer<Float>?
    var kvv: UnsafeMutablePointer<Float>?
    /// The set `ln1`, `probs`, `attn`, `act` (and `ln2` where it has one) belong to when they are shared by every
    /// trained layer: the layer's backward first refills them from what the layer keeps (`recomputeForBackward`
    /// in each architecture) unless they still hold its forward's values.
    var shared: RecomputedActs?
    var recomputed: Bool { shared != nil }
    /// Whether the backward recomputes the whole attention block (q|k|v and x1 are shared too,
    /// `ActivationMemory.recomputeAttention`).
    var recomputesAttention: Bool { shared?.qkv != nil }
    /// Whether the backward recomputes the up projection's output too (`fcUp` is the shared set's).
    var recomputesUp: Bool { shared?.fcUp != nil && shared?.fcUp == fcUp }

    /// Whether the layer's backward must refill the shared set (`shared`) first; the set then belongs to the
    /// backward, which may use its buffers as scratch. The top layer's forward values are still there.
    func needsRecompute(_ l: Int) -> Bool {
        guard let set = shared else { return false }
        defer { set.holder.layer = -1 }
        return set.holder.layer != l
    }

    /// `sharedH1` / `sharedH2`: buffers to use for `h1` / `h2` instead of new ones. The backward pass never
    /// reads the linear outputs h1 and h2 (only a bottleneck unit at that site keeps a pointer to them), so
    /// training shares one buffer across layers where no unit sits: N × C floats less per layer and site.
    /// `shared`: the buffers the backward recomputes (see the property of that name).
    init(pool: BufferPool, config c: ModelConfig, rows n: Int, batch: Int, tq: Int, tk: Int, prefix: Int = 0,
         sharedH1: UnsafeMutablePointer<Float>? = nil, sharedH2: UnsafeMutablePointer<Float>? = nil,
         shared: RecomputedActs? = nil, sharedUp: Bool = false) throws {
        let C = c.hiddenSize, I = c.intermediateSize
        let hd = c.numHeads * c.headDim
        self.shared = shared
        ln1 = try shared?.ln1 ?? pool.take(n * C); ln1Mean = try pool.take(n); ln1Rstd = try pool.take(n)
        qkv = try shared?.qkv ?? pool.take(n * c.qkvWidth)
        probs = try shared?.probs ?? pool.take(batch * c.numHeads * tq * tk)
        attn = try shared?.attn ?? pool.take(n * hd)
        h1 = try sharedH1 ?? pool.take(n * C)
        x1 = try shared?.x1 ?? pool.take(n * C)
        ln2 = try shared?.ln2 ?? pool.take(n * C); ln2Mean = try pool.take(n); ln2Rstd = try pool.take(n)
        fcPre = try pool.take(n * I)
        fcUp = try sharedUp ? shared?.fcUp ?? pool.take(n * I) : pool.take(c.architecture.weights.gatedMLP ? n * I : 1)
        act = try shared?.act ?? pool.take(n * I)
        h2 = try sharedH2 ?? pool.take(n * C)
        if prefix > 0 {
            let kvd = c.numKVHeads * c.headDim
            kvk = try pool.take(batch * tk * kvd)
            kvv = try pool.take(batch * tk * kvd)
        }
    }
}

/// The activations a trained layer does not keep: one set serves every layer, and each layer's backward first
/// recomputes them from what it keeps (its input stream, x1, qkv, the MLP's pre-activations and the norms'
/// statistics) with the forward's own kernels, so every value the backward reads is the one the forward
/// computed, bit for bit. The norm outputs, the activation output and the attention output cost an element-wise
/// pass or a norm each; the attention probabilities ([B, H, T, T], the largest of them) cost one more attention
/// forward per layer, a few percent of a step whose time goes to the projections. Under
/// `ActivationMemory.recomputeAttention` the set holds q|k|v and x1 as well, and the layer keeps only its input
/// stream, the MLP's pre-activations and the norms' statistics: its backward first reruns the attention block
/// (input norm, q/k/v projections with the adapter's hooks, attention, output projection, residual).
struct RecomputedActs {
    /// The trained layer whose forward values the set holds (-1: none), set by the training forward.
    final class Holder { var layer = -1 }
    let holder = Holder()
    var ln1: UnsafeMutablePointer<Float>
    var probs: UnsafeMutablePointer<Float>
    var attn: UnsafeMutablePointer<Float>
    /// nil where the layer cannot recompute `ln2` (`ModelWeights.keepsLn2`): each layer then keeps its own.
    var ln2: UnsafeMutablePointer<Float>?
    var act: UnsafeMutablePointer<Float>
    /// The attention block's values ([N, qkvWidth], [N, C]) under `recomputeAttention`, nil otherwise (each
    /// layer keeps its own).
    var qkv, x1: UnsafeMutablePointer<Float>?
    /// The up projection's output ([N, I]) under `recomputeAttentionAndUp`, nil otherwise.
    var fcUp: UnsafeMutablePointer<Float>?

    init(pool: BufferPool, config c: ModelConfig, rows n: Int, batch: Int, tq: Int, tk: Int,
         attention: Bool = false, up: Bool = false) throws {
        let C = c.hiddenSize
        if attention {
            qkv = try pool.take(n * c.qkvWidth)
            x1 = try pool.take(n * C)
        }
        if up { fcUp = try pool.take(n * c.intermediateSize) }
        ln1 = try pool.take(n * C)
        probs = try pool.take(batch * c.numHeads * tq * tk)
        attn = try pool.take(n * c.numHeads * c.headDim)
        ln2 = c.architecture.weights.keepsLn2 ? nil : try pool.take(n * C)
        act = try pool.take(n * c.intermediateSize)
    }
}

/// Scratch for the backward pass, shared by all layers.
struct BackwardScratch {
    var d, dh, dln, dz, scratchC: UnsafeMutablePointer<Float>
    var dact, dfcPre, dfcUp: UnsafeMutablePointer<Float>
    var dattn, dqkv: UnsafeMutablePointer<Float>
    /// Scratch for adapters that rewrite an output gradient ([N, max linear width]).
    var dtmp: UnsafeMutablePointer<Float>
    /// Key and value gradients of [prefix; sequence] ([2, B, tk, KVH·D]) when a prefix is trained.
    var dkv: UnsafeMutablePointer<Float>?

    /// The one buffer every field above is carved from, of at least `regionAtLeast` floats. Training reads the
    /// LM head's logits from it too (`TrainBuffers.logits`): the head's chunks are done before the first layer's
    /// backward starts, so the two never hold live data at once, and a step's peak memory has the larger of the
    /// two instead of their sum.
    let region: UnsafeMutablePointer<Float>

    /// The pieces' sizes in floats, each padded so that it starts on a 64-byte boundary, in the region's order:
    /// first the `commonPieces` every layer's backward writes (d, dh, dln, dact, dfcPre, dattn, dqkv), then
    /// those only some adapters or checkpointing write (dz, scratchC, dfcUp, dtmp, dkv). The region is an
    /// anonymous mapping, so pages no pass writes stay out of memory: the LM head's logits are sized to the
    /// first part (`TrainBuffers.headRows`).
    private static func pieces(config c: ModelConfig, rows n: Int, batch: Int, seqLen t: Int, keys tk: Int) -> [Int] {
        let C = c.hiddenSize, I = c.intermediateSize, hd = c.numHeads * c.headDim
        let sizes = [n * C, n * C, n * C, n * I, n * I, n * hd, n * c.qkvWidth,
                     n * C, n * C, c.architecture.weights.gatedMLP ? n * I : 1,
                     n * max(c.qkvWidth, c.intermediateSize, c.hiddenSize),
                     tk > t ? 2 * batch * tk * c.numKVHeads * c.headDim : 0]
        return sizes.map { ($0 + 15) / 16 * 16 }
    }
    private static let commonPieces = 7

    /// Floats the pieces take together (the region's size unless `regionAtLeast` asks for more).
    static func floats(config c: ModelConfig, rows n: Int, batch: Int, seqLen t: Int, keys tk: Int) -> Int {
        pieces(config: c, rows: n, batch: batch, seqLen: t, keys: tk).reduce(0, +)
    }

    /// Floats of the pieces every layer's backward writes (the start of the region).
    static func commonFloats(config c: ModelConfig, rows n: Int, batch: Int, seqLen t: Int, keys tk: Int) -> Int {
        pieces(config: c, rows: n, batch: batch, seqLen: t, keys: tk).prefix(commonPieces).reduce(0, +)
    }

    init(pool: BufferPool, config c: ModelConfig, rows n: Int, batch: Int, seqLen t: Int, keys tk: Int,
         regionAtLeast minFloats: Int = 0) throws {
        let padded = BackwardScratch.pieces(config: c, rows: n, batch: batch, seqLen: t, keys: tk)
        let base = try pool.take(max(padded.reduce(0, +), minFloats))
        var offsets: [Int] = [], o = 0
        for p in padded { offsets.append(o); o += p }
        d = base + offsets[0]; dh = base + offsets[1]; dln = base + offsets[2]
        dact = base + offsets[3]; dfcPre = base + offsets[4]
        dattn = base + offsets[5]; dqkv = base + offsets[6]
        dz = base + offsets[7]; scratchC = base + offsets[8]; dfcUp = base + offsets[9]
        dtmp = base + offsets[10]
        dkv = tk > t ? base + offsets[11] : nil
        region = base
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

/// What a layer's forward or backward needs besides its weights: the shape of the pass, the active adapter's
/// hooks (and its gradient block when training), and the KV cache when decoding.
struct LayerContext {
    let config: ModelConfig
    let adapter: (any LayerHooks)?
    /// The adapter's gradient block (backward only).
    let grads: UnsafeMutablePointer<Float>?
    let pass: PassInfo
    let batch: Int
    /// Query positions per row (virtual tokens included).
    let seqLen: Int
    /// Positions before the queries: a prefix adapter's length, or the cache length when decoding.
    let pastLen: Int
    let cache: KVCache?
    /// Padding mask of an encoder pass ([batch, seqLen], 0 = padding key); nil = every key counts.
    var keyMask: UnsafePointer<Int32>? = nil
    /// Packed rows: where each position's record starts in its row ([batch, seqLen]), nil = one record per row.
    var segmentStarts: UnsafePointer<Int32>? = nil
    /// Packed rows: each position's position within its record ([batch·seqLen]); rotary or learned positions
    /// restart at every record. nil = positions pastLen..<pastLen+seqLen.
    var positions: UnsafePointer<Int32>? = nil
    /// Gradient checkpointing's recomputation of a layer before its backward: the layer's output is still in
    /// its stream, so a layer may stop before work whose result only that output needs (`skipsOutputProjection`).
    var recompute = false

    /// Whether the recomputation may stop before the last projection and the output residual: neither the
    /// backward nor the adapter reads their results unless the adapter hooks the projection or the residual.
    func skipsOutputProjection(_ l: Int, _ site: LinearSite) -> Bool {
        guard recompute else { return false }
        guard let ad = adapter else { return true }
        return !ad.hooks(l, site) && !ad.hasUnit(l, .output)
    }

    /// Whether a layer's backward reads the input of the linear at `site`: the adapter hooks it (its gradients
    /// need the input), or the linear's own weights train (`weights`, full fine-tuning).
    func readsInput(_ l: Int, _ site: LinearSite, weights: Bool) -> Bool {
        weights || (grads != nil && adapter?.hooks(l, site) == true)
    }

    /// Whether queries see only earlier keys (decoders) or every key (encoders).
    var causal: Bool { !config.architecture.weights.bidirectional }

    /// Rows of the pass (batch × seqLen).
    var rows: Int { batch * seqLen }

    /// Runs the frozen linear at `site` with the active adapter's hooks around it.
    @inline(__always)
    func linear(_ l: Int, _ site: LinearSite, _ lin: FrozenLinear, out: UnsafeMutablePointer<Float>,
                inp: UnsafeMutablePointer<Float>, rows n: Int, ldo: Int? = nil) {
        let ldo = ldo ?? lin.outFeatures
        guard let ad = adapter, ad.hooks(l, site) else {
            lin.forward(out: out, inp: inp, rows: n, ldo: ldo)
            return
        }
        let x = ad.linearInput(l, site, inp, ldi: lin.inFeatures, pass)
        lin.forward(out: out, inp: x, rows: n, ldo: ldo)
        ad.linearOutput(l, site, out: out, ldo: ldo, inp: x, ldi: lin.inFeatures, pass)
    }

    /// The linears at `sites` that read the same input (q/k/v, gate/up): when decoding one row with no adapter
    /// hook on any of them, one quantized product for all (`FrozenLinear.decodeSharingInput`); otherwise, or
    /// when the weights are not all block-quantized, `linear` for each. Same outputs either way.
    func linearsSharingInput(_ l: Int, _ sites: [LinearSite], _ lins: [FrozenLinear], outs: [UnsafeMutablePointer<Float>],
                             inp: UnsafeMutablePointer<Float>, rows n: Int, ldo: Int? = nil) {
        if n == 1, adapter.map({ ad in !sites.contains { ad.hooks(l, $0) } }) ?? true,
           FrozenLinear.decodeSharingInput(lins, outs: outs, inp: inp) {
            return
        }
        for i in sites.indices { linear(l, sites[i], lins[i], out: outs[i], inp: inp, rows: n, ldo: ldo) }
    }

    /// Input gradient of the linear at `site`, with the adapter's hooks. A frozen linear (`wgrad` nil) gets no
    /// weight gradient; under full fine-tuning `wgrad` holds the views its weight and bias gradients
    /// accumulate into.
    @inline(__always)
    func linearBack(_ l: Int, _ site: LinearSite, _ lin: FrozenLinear, dinp: UnsafeMutablePointer<Float>,
                    dout: UnsafeMutablePointer<Float>, inp: UnsafeMutablePointer<Float>, rows n: Int, accumulate: Bool,
                    lddo: Int? = nil, wgrad: FrozenLinear? = nil) {
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

    /// Self-attention of layer `l` from the projected rows `a.qkv` ([N, q|k|v], positions already encoded) into
    /// `a.attn`. Queries sit at positions pastLen..<pastLen+T. With a cache, keys and values are appended at
    /// `pastLen` and attention runs over the cache; without one, a prefix adapter's keys/values (if any)
    /// precede the sequence's own. `output` false (a backward refilling `a.probs` whose o projection does not
    /// read `a.attn`): the probabilities only.
    func selfAttention(_ l: Int, _ a: inout LayerActs, output: Bool = true) {
        let c = config, B = batch, T = seqLen
        let H = c.numHeads, KVH = c.numKVHeads, D = c.headDim
        let hd = H * D, kvd = KVH * D, ld = c.qkvWidth
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
        } else if pastLen > 0, let kvk = a.kvk, let kvv = a.kvv, let (pk, pv) = adapter?.prefixKV(l) {
            // [prefix; sequence] keys and values for every row.
            let P = pastLen
            tk = P + T
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
        let shape = AttentionShape(batch: B, tq: T, tk: tk, pastLen: tk - T, heads: H, kvHeads: KVH, headDim: D,
                                   causal: causal, keyMask: keyMask, segmentStarts: segmentStarts)
        // One query per row takes the decode kernel, whose probabilities only the full call gives bit for bit.
        let out = output || T == 1 ? StridedRows(ptr: a.attn, ld: hd, batchStride: T * hd) : nil
        attentionForward(out: out, probs: a.probs, q: q, k: k, v: v, shape)
    }

    /// Backward of `selfAttention` (no cache): from dL/d(attn) in `s.dattn` to dL/d(q|k|v) in `s.dqkv`
    /// (positions still encoded); a trained prefix's key/value gradients accumulate into the adapter's block.
    func selfAttentionBackward(_ l: Int, _ a: LayerActs, _ s: BackwardScratch) {
        let c = config, B = batch, T = seqLen
        let H = c.numHeads, KVH = c.numKVHeads, D = c.headDim
        let hd = H * D, kvd = KVH * D, ld = c.qkvWidth
        s.dqkv.update(repeating: 0, count: B * T * ld)
        func rows(_ p: UnsafeMutablePointer<Float>) -> StridedRows { StridedRows(ptr: p, ld: ld, batchStride: T * ld) }
        let dout = StridedRows(ptr: s.dattn, ld: hd, batchStride: T * hd)
        if pastLen > 0, let kvk = a.kvk, let kvv = a.kvv, let dk = s.dkv, let g = grads, let (gk, gv) = adapter?.prefixKVGrad(l, grads: g) {
            let P = pastLen, tk = P + T
            let dkk = dk, dvv = dk + B * tk * kvd
            dkk.update(repeating: 0, count: 2 * B * tk * kvd)
            let shape = AttentionShape(batch: B, tq: T, tk: tk, pastLen: P, heads: H, kvHeads: KVH, headDim: D,
                                       causal: causal, keyMask: keyMask)
            attentionBackward(dq: rows(s.dqkv), dk: StridedRows(ptr: dkk, ld: kvd, batchStride: tk * kvd),
                              dv: StridedRows(ptr: dvv, ld: kvd, batchStride: tk * kvd), dprobs: nil, dout: dout,
                              probs: a.probs, q: rows(a.qkv), k: StridedRows(ptr: kvk, ld: kvd, batchStride: tk * kvd),
                              v: StridedRows(ptr: kvv, ld: kvd, batchStride: tk * kvd), shape)
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
            let shape = AttentionShape(batch: B, tq: T, tk: T, pastLen: 0, heads: H, kvHeads: KVH, headDim: D,
                                       causal: causal, keyMask: keyMask, segmentStarts: segmentStarts)
            attentionBackward(dq: rows(s.dqkv), dk: rows(s.dqkv + hd), dv: rows(s.dqkv + hd + kvd), dprobs: nil,
                              dout: dout, probs: a.probs, q: rows(a.qkv), k: rows(a.qkv + hd), v: rows(a.qkv + hd + kvd), shape)
        }
    }

    /// out = x + h, or the adapter's bottleneck unit at (l, unit) when it has one. `norm`: the sub-layer's
    /// LayerNorm when the layer normalises after the residual (BERT).
    @inline(__always)
    func residualForward(_ l: Int, _ unit: ResidualSite, out: UnsafeMutablePointer<Float>, x: UnsafeMutablePointer<Float>,
                         h: UnsafeMutablePointer<Float>, norm: SubLayerNorm? = nil) {
        if let ad = adapter, ad.hasUnit(l, unit) {
            ad.unitForward(l, unit, out: out, x: x, h: h, norm: norm, pass)
        } else {
            add(out, x, h, rows * config.hiddenSize)
        }
    }

    /// Backward of `residualForward`: `s.d` holds dL/d(out); on return `s.dh` holds dL/dh and `s.d` dL/dx so far
    /// (the block's branch adds to it later).
    @inline(__always)
    func residualBackward(_ l: Int, _ unit: ResidualSite, _ s: BackwardScratch, norm: SubLayerNorm? = nil) {
        let n = rows * config.hiddenSize
        s.dh.update(from: s.d, count: n)
        if let ad = adapter, let g = grads, ad.hasUnit(l, unit) {
            let toX = ad.unitBackward(l, unit, dz: s.dz, dout: s.d, grads: g, scratchC: s.scratchC, norm: norm, pass)
            addInPlace(s.dh, s.dz, n)
            if toX { addInPlace(s.d, s.dz, n) }
        }
    }
}
