// Engine.loadAdapter on a Hugging Face PEFT folder: the input is adapter_config.json; next to it lies a valid
// adapter_model.safetensors (a LoRA of rank 2 on c_attn and mlp.c_proj of the model below). Exercises the
// PEFT config reader: target-module lists and regular expressions, layer selections, refused options.

@testable import PEFTKit

enum Target {
    nonisolated(unsafe) static var engine: Engine!
    nonisolated(unsafe) static var dir = ""
    nonisolated(unsafe) static var validConfig: [UInt8] = []

    static func setUp() throws {
        engine = try Engine(randomConfig: ModelConfig(architecture: .gpt2, vocabSize: 32, hiddenSize: 16, numLayers: 2,
                                                      numHeads: 2, maxPositions: 16), seed: 1)
        var l = LoRAConfig()
        l.rank = 2
        l.targets = ["c_attn", "mlp.c_proj"]
        try engine.attachAdapter(name: "a", config: .lora(l))
        dir = Fuzz.tempDir()
        try engine.saveAdapter(name: "a", directory: dir)
        validConfig = try Fuzz.read(dir + "/" + AdapterFileFormat.configFile)
        try engine.removeAdapter(name: "a")
    }

    static func run(_ input: [UInt8]) {
        Fuzz.write(dir + "/" + AdapterFileFormat.configFile, input)
        if let name = try? engine.loadAdapter(directory: dir, name: nil) {
            try? engine.removeAdapter(name: name)
        }
    }

    static func seeds() throws -> [String: [UInt8]] {
        let valid = String(decoding: validConfig, as: UTF8.self)
        func edit(_ from: String, _ to: String) -> [UInt8] { Array(valid.replacing(from, with: to).utf8) }
        let targets = "\"target_modules\": [\"c_attn\", \"mlp.c_proj\"]"
        return [
            "valid-lora": validConfig,
            "regex-targets": edit(targets, #""target_modules": ".*\\.(c_attn|mlp\\.c_proj)""#),
            "bad-regex": edit(targets, #""target_modules": "((((""#),
            "all-linear": edit(targets, #""target_modules": "all-linear""#),
            "layer-int": edit(#""layers_to_transform": null"#, #""layers_to_transform": 1"#),
            "layer-huge": edit(#""layers_to_transform": null"#, #""layers_to_transform": [9223372036854775807]"#),
            "rank-huge": edit(#""r": 2"#, #""r": 4096"#),
            "rank-negative": edit(#""r": 2"#, #""r": -3"#),
            "ia3": edit(#""peft_type": "LORA""#, #""peft_type": "IA3""#),
            "prefix": edit(#""peft_type": "LORA""#, #""peft_type": "PREFIX_TUNING", "num_virtual_tokens": 1000000000"#),
            "prompt": edit(#""peft_type": "LORA""#, #""peft_type": "PROMPT_TUNING", "num_virtual_tokens": 3, "token_dim": 16"#),
            "dora": edit(#""use_dora": false"#, #""use_dora": true"#),
            "empty": [],
        ]
    }
}
