import COpenBLAS
#if canImport(Glibc)
import Glibc
#endif

/// Prefix tuning (Li & Liang 2021): trainable keys and values that every layer's attention sees before the
/// sequence. Optionally reparameterised during training by an MLP (embedding → Linear → tanh → Linear), as
/// HF PEFT's `prefix_projection`.
public struct PrefixConfig: Sendable, Equatable {
    public var virtualTokens: Int = 20
    public var projection: Bool = false
    /// Hidden width of the projection MLP; 0 means the key/value width (PEFT's `encoder_hidden_size` default).
    public var projectionHidden: Int = 0
    public var seed: UInt64 = 42

    public init() {}
}

final class PrefixAdapter: Adapter {
    let config: PrefixConfig
    let P: Int, kvd: Int, width: Int, hidden: Int
    /// Offsets: without projection the block is the prefix itself [P, L·2·KVD]; with it: embedding [P, KVD],
    /// W1 [H, KVD], b1 [H], W2 [L·2·KVD, H], b2 [L·2·KVD].
    let emb = 0
    let w1: Int, b1: Int, w2: Int, b2: Int
    /// The prefix as each layer reads it: [L][key|value][P][KVD]; and its gradient, same layout.
    private let kv: Storage
    private let dkv: Storage
    /// Projection activations: flat prefix [P, W], tanh output [P, H].
    private let flat: Storage
    private let hid: Storage
    /// Gradient of the flat prefix (projection only).
    private let dflat: Storage

    init(config: PrefixConfig, model m: ModelConfig) throws {
        try require(config.virtualTokens > 0 && config.virtualTokens < m.maxPositions,
                    "virtual tokens must be in 1..<\(m.maxPositions), got \(config.virtualTokens)")
        try require(config.projectionHidden >= 0 && config.projectionHidden <= 1 << 16, "projection width out of range")
        self.config = config
        P = config.virtualTokens
        kvd = m.numKVHeads * m.headDim
        width = m.numLayers * 2 * kvd
        hidden = config.projectionHidden > 0 ? config.projectionHidden : kvd
        let C = kvd
        var count: Int
        if config.projection {
            w1 = P * C; b1 = w1 + hidden * C; w2 = b1 + hidden; b2 = w2 + width * hidden
            count = b2 + width
        } else {
            w1 = 0; b1 = 0; w2 = 0; b2 = 0
            count = P * width
        }
        kv = try Storage.allocate(floats: P * width)
        dkv = try Storage.allocate(floats: P * width)
        flat = try Storage.allocate(floats: P * width)
        hid = try Storage.allocate(floats: config.projection ? P * hidden : 1)
        dflat = try Storage.allocate(floats: config.projection ? P * width : 1)
        try super.init(model: m, config: .prefix(config), parameterCount: count)
        var rng = Rng(seed: config.seed)
        let p = params.floats
        if config.projection {
            fillNormal(p + emb, P * C, std: 1, rng: &rng)
            // nn.Linear's default init: U(±1/√fan_in) for weight and bias.
            let a1 = 1 / Float(C).squareRoot(), a2 = 1 / Float(hidden).squareRoot()
            fillUniform(p + w1, hidden * C, low: -a1, high: a1, rng: &rng)
            fillUniform(p + b1, hidden, low: -a1, high: a1, rng: &rng)
            fillUniform(p + w2, width * hidden, low: -a2, high: a2, rng: &rng)
            fillUniform(p + b2, width, low: -a2, high: a2, rng: &rng)
        } else {
            fillNormal(p, P * width, std: 1, rng: &rng)
        }
    }

    override var lowestLayer: Int { 0 }
    override var prefixLength: Int { P }

    /// The flat prefix [P, L·2·KVD] (the projection's output, or the parameters themselves).
    var flatPrefix: UnsafeMutablePointer<Float> { config.projection ? flat.floats : params.floats }

    override func beginPass(training: Bool) {
        let p = params.floats, C = kvd
        if config.projection {
            // hid = tanh(emb·W1ᵀ + b1); flat = hid·W2ᵀ + b2
            let h = hid.floats
            for i in 0..<P { (h + i * hidden).update(from: p + b1, count: hidden) }
            sgemm(transA: false, transB: true, m: P, n: hidden, k: C,
                  alpha: 1, a: p + emb, lda: C, b: p + w1, ldb: C, beta: 1, c: h, ldc: hidden)
            for i in 0..<(P * hidden) { h[i] = tanhf(h[i]) }
            let f = flat.floats
            for i in 0..<P { (f + i * width).update(from: p + b2, count: width) }
            sgemm(transA: false, transB: true, m: P, n: width, k: hidden,
                  alpha: 1, a: h, lda: hidden, b: p + w2, ldb: hidden, beta: 1, c: f, ldc: width)
        }
        // Rearrange [P][L][2][KVD] → [L][2][P][KVD].
        let src = flatPrefix, dst = kv.floats
        for i in 0..<P {
            for j in 0..<(2 * model.numLayers) {
                (dst + (j * P + i) * kvd).update(from: src + i * width + j * kvd, count: kvd)
            }
        }
        if training { dkv.floats.update(repeating: 0, count: P * width) }
    }

    override func prefixKV(_ l: Int) -> (UnsafeMutablePointer<Float>, UnsafeMutablePointer<Float>)? {
        (kv.floats + (2 * l) * P * kvd, kv.floats + (2 * l + 1) * P * kvd)
    }

    override func prefixKVGrad(_ l: Int, grads: UnsafeMutablePointer<Float>) -> (UnsafeMutablePointer<Float>, UnsafeMutablePointer<Float>)? {
        (dkv.floats + (2 * l) * P * kvd, dkv.floats + (2 * l + 1) * P * kvd)
    }

    override func endBackward(grads: UnsafeMutablePointer<Float>) {
        // [L][2][P][KVD] → [P][L·2·KVD]
        let d = dkv.floats
        let target = config.projection ? dflat.floats : grads
        if config.projection { target.update(repeating: 0, count: P * width) }
        for i in 0..<P {
            for j in 0..<(2 * model.numLayers) {
                addInPlace(target + i * width + j * kvd, d + (j * P + i) * kvd, kvd)
            }
        }
        guard config.projection else { return }
        let df = dflat
        let p = params.floats, C = kvd, h = hid.floats
        // flat = hid·W2ᵀ + b2
        sgemm(transA: true, transB: false, m: width, n: hidden, k: P,
              alpha: 1, a: df.floats, lda: width, b: h, ldb: hidden, beta: 1, c: grads + w2, ldc: hidden)
        columnSums(into: grads + b2, src: df.floats, rows: P, cols: width, ld: width)
        let dh = UnsafeMutablePointer<Float>.allocate(capacity: P * hidden)
        defer { dh.deallocate() }
        sgemm(transA: false, transB: false, m: P, n: hidden, k: width,
              alpha: 1, a: df.floats, lda: width, b: p + w2, ldb: hidden, beta: 0, c: dh, ldc: hidden)
        for i in 0..<(P * hidden) { dh[i] *= 1 - h[i] * h[i] }
        // pre = emb·W1ᵀ + b1
        sgemm(transA: true, transB: false, m: hidden, n: C, k: P,
              alpha: 1, a: dh, lda: hidden, b: p + emb, ldb: C, beta: 1, c: grads + w1, ldc: C)
        columnSums(into: grads + b1, src: dh, rows: P, cols: hidden, ld: hidden)
        sgemm(transA: false, transB: false, m: P, n: C, k: hidden,
              alpha: 1, a: dh, lda: hidden, b: p + w1, ldb: C, beta: 1, c: grads + emb, ldc: C)
    }
}
