// A sharded Hugging Face model folder: the input is model.safetensors.index.json; next to it lie config.json and
// two valid shards holding every tensor of a tiny GPT-2. A folder that opens is then loaded as a model.

@testable import PEFTKit

enum Target {
    nonisolated(unsafe) static var dir = ""
    nonisolated(unsafe) static var validIndex: [UInt8] = []
    static let shards = ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]

    static func setUp() throws {
        let cfg = ModelConfig(architecture: .gpt2, vocabSize: 8, hiddenSize: 4, numLayers: 1, numHeads: 1, maxPositions: 4)
        dir = Fuzz.tempDir()
        try writeFileAtomically(path: dir + "/config.json", bytes: try configJSON(for: cfg))
        let tensors = cfg.architecture.weights.tensors(cfg)
        let half = tensors.count / 2
        var map: [String: JSONValue] = [:]
        for (i, part) in [tensors[..<half], tensors[half...]].enumerated() {
            try SafeTensorsWriter.write(path: dir + "/" + shards[i],
                                        tensors: part.map { ($0.name, $0.shape, [Float](repeating: 0.01, count: $0.shape.reduce(1, *))) })
            for t in part { map[t.name] = .string(shards[i]) }
        }
        validIndex = Array(JSONValue.object(["metadata": .object(["total_size": .int(1234)]), "weight_map": .object(map)])
            .serialized().utf8)
    }

    static func run(_ input: [UInt8]) {
        Fuzz.write(dir + "/" + WeightSet.indexFileName, input)
        guard let set = try? WeightSet(folder: dir) else { return }
        for n in set.names { _ = set.info(n); _ = try? set.tensor(n) }
        _ = try? Engine(loadingFolder: dir)
    }

    static func seeds() throws -> [String: [UInt8]] {
        let valid = String(decoding: validIndex, as: UTF8.self)
        func edit(_ from: String, _ to: String) -> [UInt8] { Array(valid.replacing(from, with: to).utf8) }
        return [
            "valid": validIndex,
            "path-traversal": edit(shards[0], "../" + shards[0]),
            "absolute-path": edit(shards[1], "/etc/passwd"),
            "missing-shard": edit(shards[1], "model-00003-of-00002.safetensors"),
            "swapped-shards": Array(valid.replacing(shards[0], with: "#").replacing(shards[1], with: shards[0])
                .replacing("#", with: shards[1]).utf8),
            "nul-in-name": edit(shards[0], #"model\u0000.safetensors"#),
            "config-as-shard": edit(shards[0], "config.json"),
            "index-as-shard": edit(shards[0], WeightSet.indexFileName),
            "empty-map": Array(#"{"weight_map": {}}"#.utf8),
            "map-not-object": Array(#"{"weight_map": ["a"]}"#.utf8),
            "not-json": Array("weight_map".utf8),
        ]
    }
}
