/// The one table from `Architecture` to its definition. A new architecture is its own file (a `ModelWeights`
/// type) plus one line here (and its `Architecture` case).
extension Architecture {
    var weights: any ModelWeights.Type {
        switch self {
        case .gpt2: return GPT2Weights.self
        case .llama: return LlamaWeights.self
        case .bert: return BERTWeights.self
        }
    }
}
