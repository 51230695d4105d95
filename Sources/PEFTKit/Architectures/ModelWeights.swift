// What an architecture is, to the rest of PEFTKit: a weights type that knows its own tensors (Hugging Face and
// GGUF names, shapes, random-init rule), its linear sites, and the forward and backward of its embedding, its
// layers and its final norm, composed from `Kernels/`. Each architecture is one file (`GPT2.swift`,
// `Llama.swift`) plus one line in `ArchitectureRegistry.swift`; the engine holds `any ModelWeights` and never asks which.

/// One tensor of an architecture: its Hugging Face name, its GGUF name (nil where GGUF has no spelling), its
/// shape ([out, in] for `nn.Linear`, [in, out] for GPT-2's `Conv1D`, as stored).
struct TensorSpec {
    let name: String
    let gguf: String?
    let shape: [Int]
}

/// How `randomWeights` fills a tensor.
enum RandomInit {
    case zeros, ones
    /// N(0, std).
    case normal
    /// N(0, std/√(2L)): projections that write into the residual stream (GPT-2's scaled init).
    case residual
}

/// The base weights of one architecture, and the layer computation that reads them.
///
/// Tensors are views into storage owned by `named` (memory-mapped from the model file, or allocated); PEFTKit
/// never writes them after construction (merging swaps a linear for a copy through `setLinear`).
protocol ModelWeights {
    // MARK: the architecture's tables

    /// The tensors a model of `config` needs, in a fixed order (the order of `named`, of the random
    /// initialisation and of the full fine-tuning block).
    static func tensors(_ config: ModelConfig) -> [TensorSpec]
    /// How `randomWeights` initialises the tensor called `name` of shape `shape`.
    static func randomInit(_ name: String, shape: [Int]) -> RandomInit
    /// The linear sites of one layer, in forward order.
    static var sites: [LinearSite] { get }
    /// The Hugging Face name prefix of layer `layer`'s modules (`transformer.h.3.`, `model.layers.3.`).
    static func layerPrefix(_ layer: Int) -> String
    /// The module path of `site` inside layer `layer`, as transformers names it (`transformer.h.3.attn.c_attn`).
    static func module(_ site: LinearSite, layer: Int) -> String?
    /// The short name users give in target lists (`c_attn`, `q_proj`, ...).
    static func shortName(_ site: LinearSite) -> String?
    /// True when the MLP has a gate and an up projection (two intermediate activations per row).
    static var gatedMLP: Bool { get }
    /// True for encoders: every query attends to every (unpadded) key.
    static var bidirectional: Bool { get }
    /// True when `LayerActs.ln2` holds something the layer cannot recompute from what it keeps (post-norm
    /// BERT: the sum y + h2 before its second LayerNorm), so training keeps it per layer (`RecomputedActs`).
    static var keepsLn2: Bool { get }
    /// True when a trained layer's backward can recompute its attention block (q|k|v, x1) from its input
    /// (`ActivationMemory.recomputeAttention`); the layer then keeps neither.
    static var recomputesAttention: Bool { get }
    /// True when it can also recompute a gated MLP's up projection (`ActivationMemory.recomputeAttentionAndUp`).
    static var recomputesUp: Bool { get }

    /// Builds the weights from `tensors` (every name of `tensors(config)` is present with its shape).
    init(config: ModelConfig, tensors: [String: Tensor]) throws
    /// As `init(config:tensors:)`, with some matrices (linear weights, the token embedding) kept in GGUF blocks:
    /// every name of `tensors(config)` is in exactly one of the two. The default refuses any quantized matrix.
    init(config: ModelConfig, tensors: [String: Tensor], quantized: [String: QuantizedMatrix]) throws

    // MARK: the weights

    var config: ModelConfig { get }
    /// Every tensor by its Hugging Face name (keeps the storage alive; used by tests and inspection).
    var named: [(name: String, tensor: Tensor)] { get set }
    /// The token embedding matrix [vocab, C] in fp32 (not for a table kept in blocks: read rows through
    /// `embeddingRow`).
    var tokenEmbedding: UnsafeMutablePointer<Float> { get }
    /// Row `id` of the token embedding as fp32 into `out` [C] (dequantised when the table is kept in blocks).
    func embeddingRow(_ id: Int, into out: UnsafeMutablePointer<Float>)
    /// The matrices kept in GGUF blocks, by Hugging Face name (empty when every weight is fp32).
    var quantized: [(name: String, matrix: QuantizedMatrix)] { get }
    var lmHead: FrozenLinear { get }
    /// The rotary table, for architectures with rotary positions.
    var rope: RopeTable? { get }

    /// The frozen linear of `layer` at `site`, nil when this architecture has no such site.
    func linear(_ layer: Int, _ site: LinearSite) -> FrozenLinear?
    /// Replaces the linear of `layer` at `site` (merging points it at a merged copy and back).
    mutating func setLinear(_ layer: Int, _ site: LinearSite, _ linear: FrozenLinear)

    // MARK: forward and backward

    /// out[N, C] = embeddings of `ids` (N = rows, rows of `seqLen`) at positions pastLen..<pastLen+seqLen.
    func embed(_ out: UnsafeMutablePointer<Float>, ids: UnsafePointer<Int32>, rows: Int, seqLen: Int, pastLen: Int)
    /// `embed` with token types ([N], nil = all type 0) for architectures that have them; others ignore them.
    func embed(_ out: UnsafeMutablePointer<Float>, ids: UnsafePointer<Int32>, typeIDs: UnsafePointer<Int32>?, rows: Int,
               seqLen: Int, pastLen: Int)
    /// `embed` of packed rows: row r at position `positions[r]` (positions restart at each record).
    func embed(_ out: UnsafeMutablePointer<Float>, ids: UnsafePointer<Int32>, rows: Int, positions: UnsafePointer<Int32>)
    /// `embedBackward` of packed rows (`positions` as in `embed(_:ids:rows:positions:)`).
    func embedBackward(into grads: any ModelWeights, _ d: UnsafePointer<Float>, ids: UnsafePointer<Int32>, rows: Int,
                       positions: UnsafePointer<Int32>)
    /// Adds the position embedding of positions first..<first+count to `count` rows of `x` (virtual tokens);
    /// nothing for architectures whose positions live in attention.
    func addPositions(_ x: UnsafeMutablePointer<Float>, first: Int, count: Int)
    /// Backward of `addPositions` for the `count` rows made from `prompt`: accumulates dL/dprompt into `dprompt`
    /// from `d` (dL/d(those rows)). The rows' gradient itself where positions are only added (the default);
    /// BERT also normalises virtual tokens.
    func virtualTokensBackward(_ dprompt: UnsafeMutablePointer<Float>, _ d: UnsafePointer<Float>, prompt: UnsafePointer<Float>,
                               first: Int, count: Int)
    /// Accumulates the embedding gradient `d` [N, C] into `grads`' embedding tensors (full fine-tuning).
    func embedBackward(into grads: any ModelWeights, _ d: UnsafePointer<Float>, ids: UnsafePointer<Int32>, rows: Int,
                       seqLen: Int)
    func finalNorm(out: UnsafeMutablePointer<Float>, mean: UnsafeMutablePointer<Float>, rstd: UnsafeMutablePointer<Float>,
                   inp: UnsafeMutablePointer<Float>, rows: Int)
    /// dinp (+)= final norm backward of `dout`; with `grads` (full fine-tuning) its weight gradients too.
    func finalNormBackward(dinp: UnsafeMutablePointer<Float>, grads: (any ModelWeights)?, dout: UnsafeMutablePointer<Float>,
                           inp: UnsafeMutablePointer<Float>, mean: UnsafeMutablePointer<Float>, rstd: UnsafeMutablePointer<Float>,
                           rows: Int)
    /// Forward of layer `l`: reads stream `x` [B·T, C], writes stream `out`, keeps what backward needs in `a`.
    func forwardLayer(_ l: Int, _ ctx: LayerContext, x: UnsafeMutablePointer<Float>, out: UnsafeMutablePointer<Float>,
                      a: inout LayerActs)
    /// Backward of layer `l`. On entry `s.d` holds dL/d(out); on exit dL/dx. Frozen weights get dX only; with
    /// `grads` (full fine-tuning) every weight of the layer accumulates its gradient into its view there.
    func backwardLayer(_ l: Int, _ ctx: LayerContext, x: UnsafeMutablePointer<Float>, a: LayerActs, s: BackwardScratch,
                       grads: (any ModelWeights)?)
}

extension ModelWeights {
    static var bidirectional: Bool { false }
    static var keepsLn2: Bool { false }
    static var recomputesAttention: Bool { false }
    static var recomputesUp: Bool { false }
    func embed(_ out: UnsafeMutablePointer<Float>, ids: UnsafePointer<Int32>, typeIDs: UnsafePointer<Int32>?, rows: Int,
               seqLen: Int, pastLen: Int) {
        embed(out, ids: ids, rows: rows, seqLen: seqLen, pastLen: pastLen)
    }
    var rope: RopeTable? { nil }
    /// Architectures whose positions live in attention (rotary) embed tokens alone.
    func embed(_ out: UnsafeMutablePointer<Float>, ids: UnsafePointer<Int32>, rows: Int, positions: UnsafePointer<Int32>) {
        embed(out, ids: ids, rows: rows, seqLen: rows, pastLen: 0)
    }
    func embedBackward(into grads: any ModelWeights, _ d: UnsafePointer<Float>, ids: UnsafePointer<Int32>, rows: Int,
                       positions: UnsafePointer<Int32>) {
        embedBackward(into: grads, d, ids: ids, rows: rows, seqLen: rows)
    }
    func addPositions(_ x: UnsafeMutablePointer<Float>, first: Int, count: Int) {}
    func virtualTokensBackward(_ dprompt: UnsafeMutablePointer<Float>, _ d: UnsafePointer<Float>, prompt: UnsafePointer<Float>,
                               first: Int, count: Int) {
        addInPlace(dprompt, d, count * config.hiddenSize)
    }
    var quantized: [(name: String, matrix: QuantizedMatrix)] { [] }

    func embeddingRow(_ id: Int, into out: UnsafeMutablePointer<Float>) {
        let C = config.hiddenSize
        out.update(from: tokenEmbedding + id * C, count: C)
    }

    init(config: ModelConfig, tensors: [String: Tensor], quantized: [String: QuantizedMatrix]) throws {
        if let name = quantized.keys.sorted().first {
            throw PEFTKitError.unsupported("\(config.architecture) weights cannot keep '\(name)' in quantized blocks: "
                + "load the model widened to fp32")
        }
        try self.init(config: config, tensors: tensors)
    }
}

/// The weights `config` needs, from tensors given by `lookup(name, shape)`, which must return a tensor of
/// exactly that shape or throw. Names in `quantized` (matrices kept in GGUF blocks, already checked against
/// their shapes) are not looked up.
func loadWeights(config c: ModelConfig, quantized: [String: QuantizedMatrix] = [:],
                 lookup: (String, [Int]) throws -> Tensor) throws -> any ModelWeights {
    let W = c.architecture.weights
    var named: [(name: String, tensor: Tensor)] = []
    var byName: [String: Tensor] = [:]
    for spec in W.tensors(c) {
        if let q = quantized[spec.name] {
            guard [q.outFeatures, q.inFeatures] == spec.shape else {
                throw PEFTKitError.format("tensor '\(spec.name)' has shape \([q.outFeatures, q.inFeatures]), expected \(spec.shape)")
            }
            continue
        }
        let t = try lookup(spec.name, spec.shape)
        guard t.shape == spec.shape else {
            throw PEFTKitError.format("tensor '\(spec.name)' has shape \(t.shape), expected \(spec.shape)")
        }
        named.append((spec.name, t))
        byName[spec.name] = t
    }
    var w = quantized.isEmpty ? try W.init(config: c, tensors: byName)
                              : try W.init(config: c, tensors: byName, quantized: quantized)
    w.named = named
    return w
}

/// Random weights by the architecture's rule (GPT-2's for both today): N(0, std) for matrices and embeddings,
/// residual output projections N(0, std/√(2L)), biases 0, norm weights 1.
func randomWeights(config c: ModelConfig, seed: UInt64, std: Float = 0.02) throws -> any ModelWeights {
    var rng = Rng(seed: seed)
    let residualStd = std / Float(2 * c.numLayers).squareRoot()
    let W = c.architecture.weights
    return try loadWeights(config: c) { name, shape in
        let t = try Tensor(zeros: shape)
        let n = t.count
        switch W.randomInit(name, shape: shape) {
        case .zeros: break
        case .ones: t.data.update(repeating: 1, count: n)
        case .normal: fillNormal(t.data, n, std: std, rng: &rng)
        case .residual: fillNormal(t.data, n, std: residualStd, rng: &rng)
        }
        return t
    }
}

/// A tensor looked up by name while building weights; throws instead of trapping when a table and an
/// initialiser disagree.
func tensorData(_ tensors: [String: Tensor], _ name: String) throws -> UnsafeMutablePointer<Float> {
    guard let t = tensors[name] else { throw PEFTKitError.state("base tensor '\(name)' is missing") }
    return t.data
}
