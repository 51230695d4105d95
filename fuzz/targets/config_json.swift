// modelConfig(fromJSON:): Hugging Face config.json for GPT-2 and the Llama family. A config that parses must
// also survive configJSON(for:) and parse back to the same ModelConfig.

@testable import PEFTKit

enum Target {
    static func setUp() throws {}

    static func run(_ input: [UInt8]) {
        guard let c = try? modelConfig(fromJSON: input, source: "fuzz") else { return }
        guard let written = try? configJSON(for: c) else { return }  // a bias combination no HF class has
        guard let back = try? modelConfig(fromJSON: written, source: "written") else {
            fatalError("configJSON(for:) wrote a config that does not parse: \(String(decoding: written, as: UTF8.self))")
        }
        if back != c { fatalError("config.json round trip changed the config: \(c) -> \(back)") }
    }

    static func seeds() throws -> [String: [UInt8]] {
        func s(_ t: String) -> [UInt8] { Array(t.utf8) }
        let small = ModelConfig(architecture: .llama, vocabSize: 37, hiddenSize: 16, numLayers: 2, numHeads: 4, numKVHeads: 2,
                                intermediateSize: 24, maxPositions: 32, tieWordEmbeddings: false)
        return [
            "gpt2-small": s(#"{"model_type":"gpt2","vocab_size":50257,"n_embd":768,"n_layer":12,"n_head":12,"n_positions":1024,"#
                + #""activation_function":"gelu_new","layer_norm_epsilon":1e-05}"#),
            "llama-written": try configJSON(for: small),
            "qwen2": s(#"{"model_type":"qwen2","vocab_size":151936,"hidden_size":896,"intermediate_size":4864,"num_hidden_layers":24,"#
                + #""num_attention_heads":14,"num_key_value_heads":2,"max_position_embeddings":32768,"rope_theta":1000000.0,"#
                + #""rms_norm_eps":1e-06,"tie_word_embeddings":true,"use_sliding_window":false,"sliding_window":4096}"#),
            "mistral-rope-scaling": s(#"{"model_type":"mistral","vocab_size":32000,"hidden_size":4096,"intermediate_size":14336,"#
                + #""num_hidden_layers":32,"num_attention_heads":32,"num_key_value_heads":8,"sliding_window":4096,"#
                + #""rope_scaling":{"type":"linear","factor":2.0}}"#),
            "rope-parameters": s(#"{"model_type":"llama","vocab_size":10,"hidden_size":8,"intermediate_size":8,"num_hidden_layers":1,"#
                + #""num_attention_heads":2,"rope_parameters":{"rope_type":"default","rope_theta":500000.0}}"#),
            "huge-sizes": s(#"{"model_type":"llama","vocab_size":9223372036854775807,"hidden_size":1073741824,"intermediate_size":-1,"#
                + #""num_hidden_layers":1e300,"num_attention_heads":0}"#),
            "wrong-types": s(#"{"model_type":["gpt2"],"n_embd":"768","n_layer":null}"#),
            "eps-overflow": s(#"{"model_type":"gpt2","vocab_size":5,"n_embd":4,"n_layer":1,"n_head":1,"layer_norm_epsilon":1e300}"#),
            "nested": s(String(repeating: "[", count: 5000)),
            "empty": [],
        ]
    }
}
