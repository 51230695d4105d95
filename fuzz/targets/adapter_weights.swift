// Engine.loadAdapter on an AdapterHub folder: the input is adapter.safetensors; next to it lies a valid
// adapter_config.json (a Pfeiffer adapter named "a" of the model below). Exercises the loader's checks of tensor
// names, shapes, dtypes and values on top of the safetensors parser.

@testable import PEFTKit

enum Target {
    nonisolated(unsafe) static var engine: Engine!
    nonisolated(unsafe) static var dir = ""
    nonisolated(unsafe) static var validWeights: [UInt8] = []

    static func setUp() throws {
        engine = try Engine(randomConfig: ModelConfig(architecture: .gpt2, vocabSize: 32, hiddenSize: 16, numLayers: 2,
                                                      numHeads: 2, maxPositions: 16), seed: 1)
        try engine.attachAdapter(name: "a", config: .bottleneck(BottleneckConfig(preset: .pfeiffer, reductionFactor: 4)))
        dir = Fuzz.tempDir()
        try engine.saveAdapter(name: "a", directory: dir)
        validWeights = try Fuzz.read(dir + "/" + AdapterFileFormat.adapterHub.weightsFile)
        try engine.removeAdapter(name: "a")
    }

    static func run(_ input: [UInt8]) {
        Fuzz.write(dir + "/" + AdapterFileFormat.adapterHub.weightsFile, input)
        if let name = try? engine.loadAdapter(directory: dir, name: nil) {
            try? engine.removeAdapter(name: name)
        }
    }

    static func seeds() throws -> [String: [UInt8]] {
        var nan = validWeights
        nan.replaceSubrange((nan.count - 4)..<nan.count, with: [0, 0, 0xc0, 0x7f])
        return [
            "valid": validWeights,
            "nan-weight": nan,
            "truncated": Array(validWeights.prefix(validWeights.count - 7)),
            "wrong-shape": Fuzz.safetensors(
                header: #"{"transformer.h.0.output_adapters.adapters.a.adapter_up.bias":{"dtype":"F32","shape":[3],"data_offsets":[0,12]}}"#,
                data: [UInt8](repeating: 0, count: 12)),
        ]
    }
}
