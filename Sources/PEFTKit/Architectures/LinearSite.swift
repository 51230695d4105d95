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

    /// The module path of this site inside layer `l`, as transformers names it (the architecture's table).
    func module(_ arch: Architecture, layer l: Int) -> String {
        arch.weights.module(self, layer: l) ?? arch.weights.layerPrefix(l) + "?"
    }

    /// The short name users give in target lists (`c_attn`, `attn.c_proj`, `q_proj`, ...).
    func shortName(_ arch: Architecture) -> String {
        arch.weights.shortName(self) ?? "?"
    }

    /// The sites of one layer of `arch`, in forward order.
    static func sites(_ arch: Architecture) -> [LinearSite] {
        arch.weights.sites
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
