/// The frozen linear layers an adapter can hook, named after what they compute.
enum LinearSite: Int, CaseIterable {
    /// GPT-2's fused `attn.c_attn` (q|k|v).
    case qkv = 0
    case q, k, v
    /// Attention output projection (GPT-2 `attn.c_proj`, Llama `o_proj`).
    case o
    /// GPT-2 `mlp.c_fc`.
    case fc
    /// GPT-2 `mlp.c_proj`.
    case proj
    case gate, up, down

    static let count = 10

    /// The module path of this site inside layer `l`, as transformers names it.
    func module(_ arch: Architecture, layer l: Int) -> String {
        switch arch {
        case .gpt2:
            let p = "transformer.h.\(l)."
            switch self {
            case .qkv: return p + "attn.c_attn"
            case .o: return p + "attn.c_proj"
            case .fc: return p + "mlp.c_fc"
            case .proj: return p + "mlp.c_proj"
            default: return p + "?"
            }
        case .llama:
            let p = "model.layers.\(l)."
            switch self {
            case .q: return p + "self_attn.q_proj"
            case .k: return p + "self_attn.k_proj"
            case .v: return p + "self_attn.v_proj"
            case .o: return p + "self_attn.o_proj"
            case .gate: return p + "mlp.gate_proj"
            case .up: return p + "mlp.up_proj"
            case .down: return p + "mlp.down_proj"
            default: return p + "?"
            }
        }
    }

    /// The short name users give in target lists (`c_attn`, `attn.c_proj`, `q_proj`, ...).
    func shortName(_ arch: Architecture) -> String {
        switch (arch, self) {
        case (.gpt2, .qkv): return "c_attn"
        case (.gpt2, .o): return "attn.c_proj"
        case (.gpt2, .fc): return "c_fc"
        case (.gpt2, .proj): return "mlp.c_proj"
        case (.llama, .q): return "q_proj"
        case (.llama, .k): return "k_proj"
        case (.llama, .v): return "v_proj"
        case (.llama, .o): return "o_proj"
        case (.llama, .gate): return "gate_proj"
        case (.llama, .up): return "up_proj"
        case (.llama, .down): return "down_proj"
        default: return "?"
        }
    }

    static func sites(_ arch: Architecture) -> [LinearSite] {
        arch == .gpt2 ? [.qkv, .o, .fc, .proj] : [.q, .k, .v, .o, .gate, .up, .down]
    }

    /// (in, out) features of the linear at this site in a model of shape `m`.
    func shape(_ m: ModelConfig) -> (inFeatures: Int, outFeatures: Int) {
        let C = m.hiddenSize, I = m.intermediateSize, q = m.numHeads * m.headDim, kv = m.numKVHeads * m.headDim
        switch self {
        case .qkv: return (C, 3 * C)
        case .q: return (C, q)
        case .k, .v: return (C, kv)
        case .o: return (q, C)
        case .fc, .gate, .up: return (C, I)
        case .proj, .down: return (I, C)
        }
    }
}
