/// An attached adapter with its optimiser state (gradients and AdamW moments share the parameter layout).
final class AdapterSlot {
    let name: String
    let adapter: Adapter
    let opt: OptimizerState
    /// True while the adapter is merged into the base weights (its hooks are then off).
    var merged = false

    init(name: String, adapter: Adapter) throws {
        self.name = name
        self.adapter = adapter
        opt = try OptimizerState(params: adapter.params.floats, count: adapter.parameterCount)
    }

    var parameterCount: Int { adapter.parameterCount }
}

/// Buffers for one (batch, seqLen, adapter) training shape. `seqLen` counts virtual tokens; keys per row are
/// `prefix + seqLen`.
final class TrainBuffers {
    let batch: Int, seqLen: Int, prefix: Int, lowest: Int
    let adapterID: ObjectIdentifier?
    let pool = BufferPool()
    /// streams[i] is the input of layer lowest + i; the last is the final stream.
    var streams: [UnsafeMutablePointer<Float>] = []
    var low: [UnsafeMutablePointer<Float>] = []
    var lowActs: LayerActs
    var acts: [LayerActs] = []
    var lnf, lnfMean, lnfRstd, dlnf: UnsafeMutablePointer<Float>
    var logits: UnsafeMutablePointer<Float>
    var targets: UnsafeMutablePointer<Int32>
    private let targetStorage: Storage
    var scratch: BackwardScratch
    /// Rows per LM-head chunk in evaluation and generation (logits buffer: headChunk × vocab floats).
    static let headChunk = 128
    /// Rows per LM-head chunk in training. OpenBLAS re-packs the whole [vocab, C] head weight for every
    /// chunk; 512 rows pay that four times less often than 128, for 3× more logits memory (GPT-2: 100 MB).
    static let trainHeadChunk = 512

    /// `adapter` nil = full fine-tuning (every layer trained, no hooks).
    init(engine e: Engine, batch: Int, seqLen: Int, adapter: Adapter?) throws {
        let c = e.config
        self.batch = batch; self.seqLen = seqLen
        prefix = adapter?.prefixLength ?? 0
        lowest = max(0, adapter?.lowestLayer ?? 0)
        adapterID = adapter.map { ObjectIdentifier($0) }
        let N = batch * seqLen, C = c.hiddenSize, tk = prefix + seqLen
        for _ in lowest...c.numLayers { streams.append(try pool.take(N * C)) }
        if lowest > 0 {
            low = [try pool.take(N * C), try pool.take(N * C)]
        }
        lowActs = try LayerActs(pool: pool, config: c, rows: N, batch: batch, tq: seqLen, tk: tk, prefix: prefix)
        let sharedH1 = try pool.take(N * C), sharedH2 = try pool.take(N * C)
        for l in lowest..<c.numLayers {
            acts.append(try LayerActs(pool: pool, config: c, rows: N, batch: batch, tq: seqLen, tk: tk, prefix: prefix,
                                      sharedH1: adapter?.hasUnit(l, .attention) == true ? nil : sharedH1,
                                      sharedH2: adapter?.hasUnit(l, .output) == true ? nil : sharedH2))
        }
        lnf = try pool.take(N * C); lnfMean = try pool.take(N); lnfRstd = try pool.take(N); dlnf = try pool.take(N * C)
        logits = try pool.take(min(N, TrainBuffers.trainHeadChunk) * c.vocabSize)
        targetStorage = try Storage.allocate(bytes: N * 4)
        targets = targetStorage.base.assumingMemoryBound(to: Int32.self)
        scratch = try BackwardScratch(pool: pool, config: c, rows: N, batch: batch, seqLen: seqLen, keys: tk)
        try adapter?.prepare(rows: N, batch: batch, seqLen: seqLen, slots: c.numLayers, training: true)
    }
}

/// Buffers for inference at a given (rows, tq, tk) capacity.
final class InferBuffers {
    let batch: Int, tq: Int, tk: Int
    let pool = BufferPool()
    var streams: [UnsafeMutablePointer<Float>]
    var acts: LayerActs
    var lnf, lnfMean, lnfRstd: UnsafeMutablePointer<Float>
    var logits: UnsafeMutablePointer<Float>
    var targets: UnsafeMutablePointer<Int32>
    private let targetStorage: Storage
    let adapterID: ObjectIdentifier?

    init(engine e: Engine, batch: Int, tq: Int, tk: Int, adapter: Adapter?, cached: Bool) throws {
        let c = e.config
        self.batch = batch; self.tq = tq; self.tk = tk
        adapterID = adapter.map { ObjectIdentifier($0) }
        let N = batch * tq, C = c.hiddenSize
        streams = [try pool.take(N * C), try pool.take(N * C)]
        acts = try LayerActs(pool: pool, config: c, rows: N, batch: batch, tq: tq, tk: tk,
                             prefix: cached ? 0 : (adapter?.prefixLength ?? 0))
        lnf = try pool.take(N * C); lnfMean = try pool.take(N); lnfRstd = try pool.take(N)
        logits = try pool.take(min(N, TrainBuffers.headChunk) * c.vocabSize)
        targetStorage = try Storage.allocate(bytes: N * 4)
        targets = targetStorage.base.assumingMemoryBound(to: Int32.self)
        try adapter?.prepare(rows: N, batch: batch, seqLen: tq, slots: 1, training: false)
    }
}

/// Internal owner of weights, adapters and buffers. `Model` is its public face.
final class Engine {
    let config: ModelConfig
    var weights: BaseWeights
    let rope: RopeTable?
    var adapters: [AdapterSlot] = []
    var activeName: String? = nil
    var trainBuffers: TrainBuffers?
    /// Adapters merged into the base weights, oldest first.
    var merges: [MergeRecord] = []
    var inferBuffers: InferBuffers?
    /// Set while every base weight is trained (`enableFullFineTuning`).
    var full: FullTuning?
    /// Gradients of a split train step waiting for `applyGradients`.
    var pending: PendingGradients?

    init(config: ModelConfig, weights: BaseWeights) throws {
        self.config = config
        self.weights = weights
        rope = config.architecture == .llama
            ? try RopeTable(theta: config.ropeTheta, headDim: config.headDim, maxPositions: config.maxPositions) : nil
    }

    convenience init(randomConfig: ModelConfig, seed: UInt64, initStd: Float = 0.02) throws {
        try randomConfig.validate()
        try self.init(config: randomConfig, weights: try BaseWeights.random(config: randomConfig, seed: seed, std: initStd))
    }

    convenience init(loadingFolder path: String) throws {
        let (cfg, set) = try loadHFFolder(path: path)
        let w = try BaseWeights(config: cfg) { name, shape in
            let t = try set.tensor(name)
            guard t.shape == shape else {
                throw PEFTKitError.format("tensor '\(name)' in '\(path)' has shape \(t.shape), expected \(shape)")
            }
            return t
        }
        try self.init(config: cfg, weights: w)
    }

    // MARK: adapters

    var active: AdapterSlot? {
        guard let n = activeName else { return nil }
        return adapters.first { $0.name == n && !$0.merged }
    }

    func adapter(named name: String) throws -> AdapterSlot {
        guard let s = adapters.first(where: { $0.name == name }) else {
            throw PEFTKitError.notFound("no adapter named '\(name)' (attached: \(adapters.map { $0.name }))")
        }
        return s
    }

    static func validateName(_ name: String) throws {
        try require(!name.isEmpty && name.utf8.count <= 128, "adapter name must be 1...128 bytes")
        let ok = name.unicodeScalars.allSatisfy { ($0.isASCII && ($0.properties.isAlphabetic || ("0"..."9").contains($0)))
            || $0 == "_" || $0 == "-" }
        try require(ok, "adapter name '\(name)' may only contain ASCII letters, digits, '_' and '-'")
    }

    func attachAdapter(name: String, config: AdapterConfig) throws {
        try Engine.validateName(name)
        guard !adapters.contains(where: { $0.name == name }) else {
            throw PEFTKitError.state("an adapter named '\(name)' is already attached")
        }
        adapters.append(try AdapterSlot(name: name, adapter: try AdapterRegistry.make(config, model: self.config, context: adapterContext())))
    }

    func removeAdapter(name: String) throws {
        let s = try adapter(named: name)
        guard !s.merged else { throw PEFTKitError.state("adapter '\(name)' is merged: unmerge it before removing it") }
        adapters.removeAll { $0 === s }
        if activeName == name { activeName = nil }
        trainBuffers = nil
        inferBuffers = nil
    }

    func setActive(_ name: String?) throws {
        if let name { _ = try adapter(named: name) }
        activeName = name
    }

    // MARK: validation

    func checkTokens(_ ids: UnsafeBufferPointer<Int32>, count: Int, what: String) throws {
        guard ids.count >= count, ids.baseAddress != nil || count == 0 else {
            throw PEFTKitError.invalidArgument("\(what) has \(ids.count) entries, expected \(count)")
        }
        let V = Int32(config.vocabSize)
        for i in 0..<count {
            let t = ids[i]
            guard t >= 0 && t < V else {
                throw PEFTKitError.invalidArgument("\(what)[\(i)] = \(t) is outside the vocabulary 0..<\(V)")
            }
        }
    }

    func checkLabels(_ labels: UnsafeBufferPointer<Int32>, count: Int) throws {
        guard labels.count >= count else {
            throw PEFTKitError.invalidArgument("labels has \(labels.count) entries, expected \(count)")
        }
        let V = Int32(config.vocabSize)
        for i in 0..<count {
            let t = labels[i]
            guard t == -100 || (t >= 0 && t < V) else {
                throw PEFTKitError.invalidArgument("labels[\(i)] = \(t) must be -100 or inside 0..<\(V)")
            }
        }
    }

    func checkShape(batch: Int, seqLen: Int, extra: Int = 0) throws {
        try require(batch > 0 && batch <= 1 << 16, "batch must be in 1...65536, got \(batch)")
        try require(seqLen > 0, "sequence length must be positive, got \(seqLen)")
        try require(seqLen + extra <= config.maxPositions,
                    "sequence length \(seqLen)\(extra > 0 ? " plus \(extra) virtual/prefix positions" : "") exceeds the model's maximum \(config.maxPositions)")
        let (_, o) = (batch * seqLen).multipliedReportingOverflow(by: config.vocabSize)
        try require(!o, "batch × sequence × vocabulary overflows")
        try rope?.reserve(seqLen + extra)
    }

    /// Shifted targets over rows of `virtual + T` positions, labels padded with `virtual` leading -100s:
    /// position t predicts label'[t+1]; the last position of each row predicts nothing.
    func fillTargets(_ out: UnsafeMutablePointer<Int32>, labels: UnsafeBufferPointer<Int32>, rowStart: Int, rows: Int,
                     seqLen T: Int, virtual Vt: Int = 0) -> Int {
        var count = 0
        let Tp = T + Vt
        for r in 0..<rows {
            for t in 0..<Tp {
                let j = t + 1 - Vt  // index into the real labels
                let v: Int32 = (t + 1 < Tp && j >= 0) ? labels[(rowStart + r) * T + j] : -100
                out[r * Tp + t] = v
                if v != -100 { count += 1 }
            }
        }
        return count
    }

    // MARK: forward

    func embed(_ out: UnsafeMutablePointer<Float>, ids: UnsafePointer<Int32>, rows N: Int, seqLen T: Int, pastLen: Int) {
        embeddingForward(out, ids, weights.wte, weights.wpe, N, T, config.hiddenSize, pastLen)
    }

    /// Embeds `B` rows of `T` ids behind `V` virtual tokens of `adapter` (prompt tuning): row b of the output
    /// holds [prompt; embed(ids)] at positions pastLen..<pastLen+V+T, [B·(V+T), C].
    func embedSequence(_ out: UnsafeMutablePointer<Float>, ids: UnsafePointer<Int32>, batch B: Int, seqLen T: Int,
                       pastLen: Int, adapter: Adapter?) {
        let V = adapter?.virtualTokens ?? 0
        guard V > 0, let ad = adapter else {
            embed(out, ids: ids, rows: B * T, seqLen: T, pastLen: pastLen)
            return
        }
        let C = config.hiddenSize, Tp = V + T
        let prompt = ad.promptEmbeddings()
        for b in 0..<B {
            let row = out + b * Tp * C
            row.update(from: prompt, count: V * C)
            if let wpe = weights.wpe {
                for t in 0..<V { addInPlace(row + t * C, wpe + (pastLen + t) * C, C) }
            }
            embed(row + V * C, ids: ids + b * T, rows: T, seqLen: T, pastLen: pastLen + V)
        }
    }

    func finalNorm(out: UnsafeMutablePointer<Float>, mean: UnsafeMutablePointer<Float>, rstd: UnsafeMutablePointer<Float>,
                   inp: UnsafeMutablePointer<Float>, rows N: Int) {
        let C = config.hiddenSize
        if config.architecture == .gpt2 {
            layerNormForward(out, mean, rstd, inp, weights.normFW, weights.normFB!, N, C, config.normEps)
        } else {
            rmsNormForward(out, rstd, inp, weights.normFW, N, C, config.normEps)
        }
    }

    func evaluate(inputIDs: UnsafeBufferPointer<Int32>, labels: UnsafeBufferPointer<Int32>?, batch B: Int, seqLen T: Int,
                  logits: UnsafeMutableBufferPointer<Float>?) throws -> EvalResult {
        let adapter = active?.adapter
        let Vt = adapter?.virtualTokens ?? 0, P = adapter?.prefixLength ?? 0
        try checkShape(batch: B, seqLen: T, extra: Vt + P)
        let N = B * T, V = config.vocabSize, C = config.hiddenSize
        try checkTokens(inputIDs, count: N, what: "input_ids")
        if let labels { try checkLabels(labels, count: N) }
        if let logits {
            try require(logits.count >= N * V, "logits buffer holds \(logits.count) floats, needs \(N * V)")
        }
        adapter?.beginPass(training: false)
        let Tp = T + Vt, Np = B * Tp
        let buf: InferBuffers
        if let b = inferBuffers, b.batch == B, b.tq == Tp, b.tk == Tp + P, b.adapterID == adapter.map({ ObjectIdentifier($0) }) {
            buf = b
        } else {
            inferBuffers = nil
            buf = try InferBuffers(engine: self, batch: B, tq: Tp, tk: Tp + P, adapter: adapter, cached: false)
            inferBuffers = buf
        }
        embedSequence(buf.streams[0], ids: inputIDs.baseAddress!, batch: B, seqLen: T, pastLen: P, adapter: adapter)
        var cur = 0
        let pass = PassInfo(rows: Np, slot: 0, training: false)
        for l in 0..<config.numLayers {
            forwardLayer(l, x: buf.streams[cur], out: buf.streams[1 - cur], a: &buf.acts, batch: B, seqLen: Tp, pastLen: P,
                         cache: nil, adapter: adapter, pass: pass)
            cur = 1 - cur
        }
        finalNorm(out: buf.lnf, mean: buf.lnfMean, rstd: buf.lnfRstd, inp: buf.streams[cur], rows: Np)
        let lab = labels ?? inputIDs
        let count = fillTargets(buf.targets, labels: lab, rowStart: 0, rows: B, seqLen: T, virtual: Vt)
        var lossSum = 0.0
        // LM head per batch row over the real positions (and the last virtual one, which predicts token 0).
        for b in 0..<B {
            let first = max(0, Vt - 1)
            var r0 = first
            while r0 < Tp {
                let rows = min(TrainBuffers.headChunk, Tp - r0)
                let src = buf.lnf + (b * Tp + r0) * C
                weights.lmHead.forward(out: buf.logits, inp: src, rows: rows)
                if count > 0 {
                    let (s, _) = crossEntropyForwardBackward(logits: buf.logits, losses: nil, targets: buf.targets + b * Tp + r0,
                                                             N: rows, V: V, gradScale: 0, computeGrad: false)
                    lossSum += s
                }
                if let logits {
                    for r in 0..<rows where r0 + r >= Vt {
                        (logits.baseAddress! + (b * T + r0 + r - Vt) * V).update(from: buf.logits + r * V, count: V)
                    }
                }
                r0 += rows
            }
        }
        let loss = count > 0 ? Float(lossSum / Double(count)) : 0
        guard loss.isFinite else { throw PEFTKitError.numerical("the forward pass produced a non-finite loss") }
        return EvalResult(loss: loss, tokens: count)
    }
}
