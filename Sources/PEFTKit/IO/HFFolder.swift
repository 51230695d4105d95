// A Hugging Face model folder: `config.json` plus weights in `model.safetensors` or in shards listed by
// `model.safetensors.index.json`. Every shard is mapped and validated when the folder is opened.

/// The named weights of a model folder, across one file or several shards.
///
/// ```swift
/// let weights = try WeightSet(folder: "SmolLM2-135M")
/// let embed = try weights.tensor("model.embed_tokens.weight")
/// ```
///
/// Holds every opened `SafeTensorsFile`, so zero-copy tensors stay valid while either the set or the
/// tensor is alive.
public struct WeightSet: Sendable {
    public static let singleFileName = "model.safetensors"
    public static let indexFileName = "model.safetensors.index.json"
    /// Largest index file accepted, in bytes.
    public static let maxIndexBytes = 64 << 20

    /// The folder the weights were read from.
    public let folder: String
    /// All tensor names, sorted.
    public let names: [String]
    let files: [SafeTensorsFile]
    /// Tensor name → index into `files`.
    let location: [String: Int]

    /// Opens the weights of the model folder at `folder`.
    public init(folder: String) throws {
        self.folder = folder
        let single = joinPath(folder, Self.singleFileName)
        let index = joinPath(folder, Self.indexFileName)
        if pathKind(single) == .file {
            let file = try SafeTensorsFile(path: single)
            files = [file]
            location = Dictionary(uniqueKeysWithValues: file.names.map { ($0, 0) })
        } else if pathKind(index) == .file {
            (files, location) = try Self.openShards(indexPath: index, folder: folder)
        } else if pathKind(joinPath(folder, "pytorch_model.bin")) == .file {
            throw PEFTKitError.unsupported("model folder '\(folder)' has only pytorch_model.bin; PEFTKit reads "
                + "safetensors (re-save the model with safe_serialization=True)")
        } else if pathKind(folder) != .directory {
            throw PEFTKitError.notFound("model folder '\(folder)' does not exist or is not a directory")
        } else {
            throw PEFTKitError.notFound("model folder '\(folder)' has neither \(Self.singleFileName) nor \(Self.indexFileName)")
        }
        names = location.keys.sorted()
    }

    private static func openShards(indexPath: String, folder: String) throws -> ([SafeTensorsFile], [String: Int]) {
        let bytes = try readWholeFile(path: indexPath, maxBytes: maxIndexBytes)
        let index = try decodeJSON(ShardIndex.self, from: bytes, source: "shard index '\(indexPath)'")
        var files: [SafeTensorsFile] = []
        var fileNumber: [String: Int] = [:]
        var location: [String: Int] = [:]
        location.reserveCapacity(index.weightMap.count)
        // Open shards in a fixed order so errors do not depend on dictionary order.
        for (tensor, shard) in index.weightMap.sorted(by: { $0.key < $1.key }) {
            guard isPlainFileName(shard) else {
                throw PEFTKitError.format("shard index '\(indexPath)': tensor '\(tensor)' points to '\(shard)', "
                    + "which is not a plain file name inside the model folder")
            }
            let number: Int
            if let n = fileNumber[shard] {
                number = n
            } else {
                let shardPath = joinPath(folder, shard)
                guard pathKind(shardPath) == .file else {
                    throw PEFTKitError.notFound("shard '\(shardPath)' listed in '\(indexPath)' does not exist")
                }
                files.append(try SafeTensorsFile(path: shardPath))
                number = files.count - 1
                fileNumber[shard] = number
            }
            guard files[number].has(tensor) else {
                throw PEFTKitError.format("shard index '\(indexPath)' places tensor '\(tensor)' in '\(shard)', "
                    + "but that file has no such tensor")
            }
            location[tensor] = number
        }
        return (files, location)
    }

    /// Whether a tensor called `name` exists.
    public func has(_ name: String) -> Bool { location[name] != nil }

    /// The stored dtype and shape of `name`, or nil.
    public func info(_ name: String) -> (dtype: DType, shape: [Int])? {
        guard let i = location[name] else { return nil }
        return files[i].info(name)
    }

    /// Tensor `name` as fp32 (zero-copy when stored as aligned F32). Throws `notFound` naming the tensor
    /// and the folder when it does not exist.
    public func tensor(_ name: String) throws -> Tensor {
        guard let i = location[name] else {
            throw PEFTKitError.notFound("tensor '\(name)' not found in model folder '\(folder)'")
        }
        return try files[i].tensor(name)
    }
}

private struct ShardIndex: Decodable {
    var weightMap: [String: String]
    enum CodingKeys: String, CodingKey { case weightMap = "weight_map" }
}

/// A name that, joined to a folder, stays inside it: no separators, not `.`/`..`, no NUL.
func isPlainFileName(_ name: String) -> Bool {
    !name.isEmpty && name != "." && name != ".." && !name.contains("/") && !name.contains("\\")
        && !name.utf8.contains(0)
}

func joinPath(_ folder: String, _ name: String) -> String {
    folder.hasSuffix("/") ? folder + name : folder + "/" + name
}

/// Largest `config.json` accepted, in bytes.
let maxConfigBytes = 16 << 20
