// Writes GGUF files (version 3, little-endian): metadata of the scalar types PEFTKit needs and F32 tensors, the
// layout `GGUFFile` reads and llama.cpp's gguf.cpp expects: header, metadata, tensor records, data aligned to
// `general.alignment` (32 unless written).

/// A GGUF file to write: metadata in order, then F32 tensors.
struct GGUFWriter {
    enum Value {
        case string(String)
        case float32(Float)
        case uint32(UInt32)
    }

    struct TensorEntry {
        let name: String
        /// ggml's `ne`: fastest-varying first (a row-major [rows, cols] matrix is `[cols, rows]`).
        let dimensions: [Int]
        let data: [Float]
    }

    static let alignment = 32
    var metadata: [(String, Value)] = []
    var tensors: [TensorEntry] = []

    private static func put(_ v: UInt32, _ out: inout [UInt8]) { withUnsafeBytes(of: v.littleEndian) { out.append(contentsOf: $0) } }
    private static func put(_ v: UInt64, _ out: inout [UInt8]) { withUnsafeBytes(of: v.littleEndian) { out.append(contentsOf: $0) } }
    private static func put(_ s: String, _ out: inout [UInt8]) {
        let b = Array(s.utf8)
        put(UInt64(b.count), &out)
        out.append(contentsOf: b)
    }

    /// The whole file.
    func bytes() throws -> [UInt8] {
        var out: [UInt8] = []
        out.append(contentsOf: GGUFFile.magic)
        Self.put(UInt32(3), &out)
        Self.put(UInt64(tensors.count), &out)
        Self.put(UInt64(metadata.count), &out)
        for (key, value) in metadata {
            Self.put(key, &out)
            switch value {
            case .string(let s):
                Self.put(GGUFValueType.string.rawValue, &out)
                Self.put(s, &out)
            case .float32(let f):
                Self.put(GGUFValueType.float32.rawValue, &out)
                Self.put(f.bitPattern, &out)
            case .uint32(let u):
                Self.put(GGUFValueType.uint32.rawValue, &out)
                Self.put(u, &out)
            }
        }
        var offset = 0
        var offsets: [Int] = []
        for t in tensors {
            guard t.dimensions.count >= 1, t.dimensions.count <= GGUFFile.maxDimensions,
                  t.dimensions.reduce(1, *) == t.data.count else {
                throw PEFTKitError.invalidArgument("GGUF tensor '\(t.name)': dimensions \(t.dimensions) do not hold \(t.data.count) values")
            }
            Self.put(t.name, &out)
            Self.put(UInt32(t.dimensions.count), &out)
            for d in t.dimensions { Self.put(UInt64(d), &out) }
            Self.put(UInt32(0), &out)  // GGML_TYPE_F32
            Self.put(UInt64(offset), &out)
            offsets.append(offset)
            offset += (t.data.count * 4 + Self.alignment - 1) / Self.alignment * Self.alignment
        }
        while out.count % Self.alignment != 0 { out.append(0) }
        let base = out.count
        for (t, o) in zip(tensors, offsets) {
            while out.count < base + o { out.append(0) }
            out.reserveCapacity(out.count + t.data.count * 4)
            for v in t.data { Self.put(v.bitPattern, &out) }
        }
        while out.count % Self.alignment != 0 { out.append(0) }
        return out
    }
}
