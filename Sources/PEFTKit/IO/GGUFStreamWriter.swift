// Writing large files a piece at a time: a buffered file-descriptor writer, and a GGUF (version 3) writer whose
// metadata may be any GGUF value (arrays included, e.g. a tokenizer carried over from another GGUF file) and whose
// tensors (F32 or F16) are produced row block by row block, so a whole model is never held twice in memory.

/// Collects small writes into a 1 MiB buffer before they reach the file descriptor; large contiguous payloads
/// go straight through.
final class BufferedFileWriter {
    let fd: Int32
    private var buffer: [UInt8] = []
    /// Bytes written so far (buffered included).
    private(set) var offset = 0
    static let capacity = 1 << 20

    init(fd: Int32) {
        self.fd = fd
        buffer.reserveCapacity(Self.capacity)
    }

    func append(_ bytes: UnsafeRawBufferPointer) throws {
        if buffer.count + bytes.count > Self.capacity { try flush() }
        if bytes.count >= Self.capacity {
            try writeAll(fd, bytes)
        } else {
            buffer.append(contentsOf: bytes)
        }
        offset += bytes.count
    }

    func append(_ bytes: [UInt8]) throws { try bytes.withUnsafeBytes { try append($0) } }

    func append<T: FixedWidthInteger>(integer v: T) throws {
        try withUnsafeBytes(of: v.littleEndian) { try append($0) }
    }

    /// Zero bytes up to the next multiple of `alignment`.
    func pad(to alignment: Int) throws {
        let n = (alignment - offset % alignment) % alignment
        if n > 0 { try append([UInt8](repeating: 0, count: n)) }
    }

    func flush() throws {
        guard !buffer.isEmpty else { return }
        try buffer.withUnsafeBytes { try writeAll(fd, $0) }
        buffer.removeAll(keepingCapacity: true)
    }
}

/// Number format of a tensor written by `GGUFStreamWriter`.
enum GGUFTensorFormat {
    case f32, f16

    var ggmlType: GGMLType { self == .f32 ? .f32 : .f16 }
    var bytesPerValue: Int { self == .f32 ? 4 : 2 }
}

/// A GGUF file written in one pass: metadata, tensor records, then each tensor's data from its producer.
struct GGUFStreamWriter {
    struct Tensor {
        let name: String
        /// ggml's `ne`: fastest-varying first (a row-major [rows, cols] matrix is `[cols, rows]`).
        let dimensions: [Int]
        let format: GGUFTensorFormat
        /// Fills `into` with `count` rows (of `dimensions[0]` values each) starting at row `first`, in fp32.
        let rows: (_ first: Int, _ count: Int, _ into: UnsafeMutablePointer<Float>) throws -> Void

        var rowLength: Int { dimensions[0] }
        var rowCount: Int { dimensions.dropFirst().reduce(1, *) }
        var byteCount: Int { dimensions.reduce(1, *) * format.bytesPerValue }
    }

    static let alignment = 32
    var metadata: [(String, GGUFValue)] = []
    var tensors: [Tensor] = []

    /// Writes the whole file to `fd`. Throws `invalidArgument` for a value that does not fit F16 (the file is
    /// then incomplete: write through `writeFileAtomically`, which removes it).
    func write(to fd: Int32) throws {
        let out = BufferedFileWriter(fd: fd)
        try out.append(GGUFFile.magic)
        try out.append(integer: UInt32(3))
        try out.append(integer: UInt64(tensors.count))
        try out.append(integer: UInt64(metadata.count))
        for (key, value) in metadata {
            try Self.put(string: key, out)
            try out.append(integer: value.type.rawValue)
            try Self.put(value: value, out)
        }
        var offset = 0
        for t in tensors {
            guard t.dimensions.count >= 1, t.dimensions.count <= GGUFFile.maxDimensions, t.dimensions.allSatisfy({ $0 > 0 }) else {
                throw PEFTKitError.invalidArgument("GGUF tensor '\(t.name)': bad dimensions \(t.dimensions)")
            }
            try Self.put(string: t.name, out)
            try out.append(integer: UInt32(t.dimensions.count))
            for d in t.dimensions { try out.append(integer: UInt64(d)) }
            try out.append(integer: t.format.ggmlType.rawValue)
            try out.append(integer: UInt64(offset))
            offset += (t.byteCount + Self.alignment - 1) / Self.alignment * Self.alignment
        }
        try out.pad(to: Self.alignment)
        for t in tensors {
            try Self.writeData(t, out)
            try out.pad(to: Self.alignment)
        }
        try out.flush()
    }

    /// Rows are produced in blocks of about 256 KiB of fp32.
    private static func writeData(_ t: Tensor, _ out: BufferedFileWriter) throws {
        let n = t.rowLength
        let block = max(1, min(t.rowCount, (1 << 16) / max(1, n)))
        let scratch = try Storage.allocate(floats: block * n)
        var half = [UInt16](repeating: 0, count: t.format == .f16 ? block * n : 0)
        var r = 0
        while r < t.rowCount {
            let k = min(block, t.rowCount - r)
            try t.rows(r, k, scratch.floats)
            let count = k * n
            switch t.format {
            case .f32:
                try out.append(UnsafeRawBufferPointer(start: scratch.base, count: 4 * count))
            case .f16:
                for i in 0..<count {
                    let x = scratch.floats[i]
                    let h = Float16(x)
                    guard h.isFinite || !x.isFinite else {
                        throw PEFTKitError.invalidArgument("tensor '\(t.name)' holds \(x), outside the range of F16 "
                            + "(±65504): write it as F32")
                    }
                    half[i] = h.bitPattern.littleEndian
                }
                try half.withUnsafeBytes { try out.append(UnsafeRawBufferPointer(rebasing: $0[0..<(2 * count)])) }
            }
            r += k
        }
    }

    private static func put(string s: String, _ out: BufferedFileWriter) throws {
        let b = Array(s.utf8)
        try out.append(integer: UInt64(b.count))
        try out.append(b)
    }

    private static func put(value: GGUFValue, _ out: BufferedFileWriter) throws {
        switch value {
        case .uint8(let v): try out.append(integer: v)
        case .int8(let v): try out.append(integer: v)
        case .uint16(let v): try out.append(integer: v)
        case .int16(let v): try out.append(integer: v)
        case .uint32(let v): try out.append(integer: v)
        case .int32(let v): try out.append(integer: v)
        case .uint64(let v): try out.append(integer: v)
        case .int64(let v): try out.append(integer: v)
        case .float32(let v): try out.append(integer: v.bitPattern)
        case .float64(let v): try out.append(integer: v.bitPattern)
        case .bool(let v): try out.append(integer: UInt8(v ? 1 : 0))
        case .string(let s): try put(string: s, out)
        case .array(let a): try put(array: a, out)
        }
    }

    private static func put(array a: GGUFArray, _ out: BufferedFileWriter) throws {
        try out.append(integer: a.elementType.rawValue)
        try out.append(integer: UInt64(a.count))
        switch a {
        case .uint8(let x): for v in x { try out.append(integer: v) }
        case .int8(let x): for v in x { try out.append(integer: v) }
        case .uint16(let x): for v in x { try out.append(integer: v) }
        case .int16(let x): for v in x { try out.append(integer: v) }
        case .uint32(let x): for v in x { try out.append(integer: v) }
        case .int32(let x): for v in x { try out.append(integer: v) }
        case .uint64(let x): for v in x { try out.append(integer: v) }
        case .int64(let x): for v in x { try out.append(integer: v) }
        case .float32(let x): for v in x { try out.append(integer: v.bitPattern) }
        case .float64(let x): for v in x { try out.append(integer: v.bitPattern) }
        case .bool(let x): for v in x { try out.append(integer: UInt8(v ? 1 : 0)) }
        case .string(let x): for s in x { try put(string: s, out) }
        case .array(let x): for inner in x { try put(array: inner, out) }
        }
    }
}
