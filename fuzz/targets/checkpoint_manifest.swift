// Engine.loadCheckpoint: the input is checkpoint.json; next to it lies the state file of a LoRA adapter (with
// dropout, so a training RNG state) renamed to state-0000000000000001.safetensors. The manifest's size and
// hash fields guard the state file, so mutations mostly exercise the manifest's own checks.

@testable import PEFTKit
#if canImport(Glibc)
import Glibc
#endif

enum Target {
    nonisolated(unsafe) static var engine: Engine!
    nonisolated(unsafe) static var dir = ""
    nonisolated(unsafe) static var validManifest: [UInt8] = []
    static let stateName = "state-0000000000000001.safetensors"

    static func setUp() throws {
        engine = try Engine(randomConfig: ModelConfig(architecture: .llama, vocabSize: 32, hiddenSize: 16, numLayers: 2,
                                                      numHeads: 2, numKVHeads: 1, intermediateSize: 24, maxPositions: 16,
                                                      tieWordEmbeddings: false), seed: 1)
        var lora = LoRAConfig(); lora.rank = 2; lora.dropout = 0.1; lora.targets = ["q_proj", "down_proj"]
        try engine.attachAdapter(name: "c", config: .lora(lora))
        dir = Fuzz.tempDir()
        try engine.saveCheckpoint(name: "c", directory: dir)
        var m = try CheckpointManifest.decode(try Fuzz.read(dir + "/checkpoint.json"), source: "set-up")
        let state = try Fuzz.read(dir + "/" + m.state.file)
        unlink(dir + "/" + m.state.file)
        Fuzz.write(dir + "/" + stateName, state)
        m.state.file = stateName
        validManifest = try m.encoded()
        try engine.removeAdapter(name: "c")
    }

    static func run(_ input: [UInt8]) {
        Fuzz.write(dir + "/" + Engine.checkpointManifestFile, input)
        if let name = try? engine.loadCheckpoint(directory: dir) {
            try? engine.removeAdapter(name: name)
        }
    }

    static func seeds() throws -> [String: [UInt8]] {
        var m = try CheckpointManifest.decode(validManifest, source: "seed")
        func with(_ f: (inout CheckpointManifest) -> Void) throws -> [UInt8] { var c = m; f(&c); return try c.encoded() }
        let valid = validManifest
        // Edits of the stored adapter_config.json object.
        func config(_ key: String, _ value: JSONValue) throws -> [UInt8] {
            try with { c in
                guard case .object(var o) = c.config else { return }
                o[key] = value
                c.config = .object(o)
            }
        }
        m.step = 2
        return [
            "valid-lora": valid,
            "other-method": try with { $0.method = "bottleneck" },
            "bad-rank": try config("r", .int(1 << 40)),
            "huge-step": try with { $0.step = Int.max },
            "state-escapes": try with { $0.state.file = "../../" + stateName },
            "wrong-hash": try with { $0.state.fnv1a64 = "0000000000000000" },
            "negative-bytes": try with { $0.state.bytes = -1 },
            "layers-out-of-range": try config("layers_to_transform", .array([.int(0), .int(99)])),
            "targets-unknown": try config("target_modules", .array([.string("c_attn")])),
            "unsupported-key": try config("use_dora", .bool(true)),
            "model-changed": try with { $0.model.numLayers = 1024 },
            "not-json": Array("{".utf8),
        ]
    }
}
