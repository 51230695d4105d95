// The adapter JSON that peftkit_adapter_attach_json, Model.attachAdapter(name:configJSON:) and adapter folders
// read (Adapters/Registry.swift): any text, for a tiny Llama and a tiny GPT-2. A config that parses must make an
// adapter, and the adapter_config.json object that adapter saves must parse back into one of the same layout.

@testable import PEFTKit

enum Target {
    nonisolated(unsafe) static var models: [ModelConfig] = []

    static func setUp() throws {
        models = [
            ModelConfig(architecture: .llama, vocabSize: 37, hiddenSize: 16, numLayers: 2, numHeads: 4, numKVHeads: 2,
                        intermediateSize: 24, maxPositions: 32, tieWordEmbeddings: false),
            ModelConfig(architecture: .gpt2, vocabSize: 37, hiddenSize: 16, numLayers: 2, numHeads: 2, maxPositions: 32),
        ]
    }

    static func run(_ input: [UInt8]) {
        for m in models {
            let ctx = AdapterContext(embeddingRow: { _, out in out.update(repeating: 0.5, count: m.hiddenSize) },
                                     tokenize: { s in s.utf8.prefix(8).map { Int32($0) % 37 } })
            guard let c = try? AdapterConfig.parse(json: input, model: m, context: ctx, source: "fuzz") else { continue }
            // Sizes a fuzzer can ask for are bounded by the config checks; skip what would be large anyway.
            guard let n = try? AdapterRegistry.parameterCount(c, model: m), n <= 1 << 22 else { continue }
            guard let a = try? AdapterRegistry.make(c, model: m, context: ctx) else { continue }
            guard a.parameterCount == n else { fatalError("parameterCount \(n) but the adapter has \(a.parameterCount): \(c)") }
            guard let s = a as? SavableAdapter else { continue }
            let written = JSONValue.object(s.fileConfig(name: "x"))
            guard let back = try? AdapterConfig.parse(json: written.encodedBytes(), model: m, context: ctx, source: "written") else {
                fatalError("a saved adapter_config.json does not parse: \(written.serialized())")
            }
            guard let b = try? AdapterRegistry.make(back, model: m, context: ctx), b.parameterCount == a.parameterCount else {
                fatalError("a saved adapter_config.json makes another adapter: \(c) -> \(back)")
            }
        }
    }

    static func seeds() throws -> [String: [UInt8]] {
        func s(_ t: String) -> [UInt8] { Array(t.utf8) }
        return [
            "lora": s(#"{"peft_type": "LORA", "r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj", "c_attn"], "layers_to_transform": [1]}"#),
            "lora-regex": s(#"{"peft_type": "LORA", "r": 2, "target_modules": ".*\\.(q_proj|c_attn)"}"#),
            "lora-all-linear": s(#"{"peft_type": "LORA", "r": 1, "target_modules": "all-linear", "use_rslora": true, "seed": 3}"#),
            "ia3": s(#"{"peft_type": "IA3", "target_modules": ["k_proj", "down_proj", "c_attn", "mlp.c_proj"], "feedforward_modules": ["down_proj", "mlp.c_proj"]}"#),
            "prefix": s(#"{"peft_type": "PREFIX_TUNING", "num_virtual_tokens": 3, "prefix_projection": true, "encoder_hidden_size": 8}"#),
            "prompt-text": s(#"{"peft_type": "PROMPT_TUNING", "num_virtual_tokens": 4, "prompt_tuning_init": "TEXT", "prompt_tuning_init_text": "hello"}"#),
            "bn-preset": s(#"{"config": "double_seq_bn"}"#),
            "bn-dict": s(#"{"mh_adapter": true, "output_adapter": true, "reduction_factor": 4, "non_linearity": "gelu", "ln_before": true, "leave_out": [0]}"#),
            "unknown-key": s(#"{"peft_type": "LORA", "r": 4, "target_modules": ["q_proj"], "use_qalora": true}"#),
            "huge": s(#"{"peft_type": "LORA", "r": 4096, "target_modules": "all-linear"}"#),
            "nested": s(String(repeating: "[", count: 5000)),
            "empty": [],
        ]
    }
}
