// Engine.loadAdapter on an AdapterHub folder: the input is adapter_config.json; next to it lies a valid
// adapter.safetensors (a Pfeiffer adapter named "a" of the model below).

@testable import PEFTKit

enum Target {
    nonisolated(unsafe) static var engine: Engine!
    nonisolated(unsafe) static var dir = ""
    nonisolated(unsafe) static var validConfig: [UInt8] = []

    static func setUp() throws {
        engine = try Engine(randomConfig: ModelConfig(architecture: .gpt2, vocabSize: 32, hiddenSize: 16, numLayers: 2,
                                                      numHeads: 2, maxPositions: 16), seed: 1)
        try engine.attachAdapter(name: "a", config: .bottleneck(BottleneckConfig(preset: .pfeiffer, reductionFactor: 4)))
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
        return [
            "valid-pfeiffer": validConfig,
            "houlsby": edit(#""mh_adapter": false"#, #""mh_adapter": true"#),
            "reduction-factor-dict": edit(#""reduction_factor": 4"#, #""reduction_factor": {"1": 2, "default": 16}"#),
            "reduction-factor-zero": edit(#""reduction_factor": 4"#, #""reduction_factor": 0"#),
            "reduction-factor-tiny": edit(#""reduction_factor": 4"#, #""reduction_factor": 1e-300"#),
            "reduction-factor-nan": edit(#""reduction_factor": 4"#, #""reduction_factor": NaN"#),
            "leave-out-extremes": edit(#""leave_out": []"#, #""leave_out": [-9223372036854775808, 9223372036854775807, 1]"#),
            "leave-out-all": edit(#""leave_out": []"#, #""leave_out": [0, 1]"#),
            "hidden-size-other": edit(#""hidden_size": 16"#, #""hidden_size": 64"#),
            "scaling-string": edit(#""scaling": 1.0"#, #""scaling": "learned""#),
            "name-traversal": edit(#""name": "a""#, #""name": "../../etc""#),
            "phm": edit(#""phm_layer": false"#, #""phm_layer": true"#),
            "not-an-object": Array("[1, 2, 3]".utf8),
            "empty": [],
        ]
    }
}
