#if canImport(Glibc)
import Glibc
#endif

// Reading and writing the safetensors format: an 8-byte little-endian header length, a JSON header
// mapping tensor names to dtype, shape and byte range, then the raw little-endian data section.
// Reading maps the file and validates the whole header up front, so a tensor can only be read from
// ranges proven to lie inside the file.

/// Element types of a safetensors file that PEFTKit understands (the header's `dtype` strings).
public enum DType: String, Sendable, CaseIterable {
    case f64 = "F64"
    case f32 = "F32"
    case f16 = "F16"
    case bf16 = "BF16"
    case i64 = "I64"
    case i32 = "I32"
    case i16 = "I16"
    case i8 = "I8"
    case u8 = "U8"
    case bool = "BOOL"

    /// Bytes per element.
    public var byteSize: Int {
        switch self {
        case .f64, .i64: return 8
        case .f32, .i32: return 4
        case .f16, .bf16, .i16: return 2
        case .i8, .u8, .bool: return 1
        }
    }

    /// Whether `SafeTensorsFile.tensor(_:)` can widen this type to fp32 exactly (or correctly rounded for F64).
    public var isFloatingPoint: Bool {
        switch self {
        case .f64, .f32, .f16, .bf16: return true
        default: return false
        }
    }
}

/// A read-only, memory-mapped `.safetensors` file with a fully validated header.
///
/// ```swift
/// let file = try SafeTensorsFile(path: "model.safetensors")
/// let wte = try file.tensor("transformer.wte.weight")   // fp32, zero-copy when stored as aligned F32
/// ```
///
/// Opening checks every header entry: known dtype, shape × element size equal to the byte range, ranges
/// inside the file and not overlapping. Any problem throws `PEFTKitError` naming the file (and tensor).
/// Tensors returned by `tensor(_:)` keep the mapping alive; they are read-only.
public struct SafeTensorsFile: Sendable {
    struct Entry: Sendable {
        let dtype: DType
        let shape: [Int]
        let count: Int
        /// Absolute byte offsets in the file.
        let begin: Int
        let end: Int
    }

    /// Largest JSON header accepted, in bytes.
    public static let maxHeaderBytes = 100_000_000

    /// The path the file was opened from (used in error messages).
    public let path: String
    /// Tensor names ordered by their position in the data section.
    public let names: [String]
    /// The optional `__metadata__` string map of the header.
    public let metadata: [String: String]
    let storage: Storage
    let entries: [String: Entry]

    /// Maps and validates the file at `path`.
    public init(path: String) throws {
        try self.init(storage: try Storage.map(path: path), path: path)
    }

    /// Validates a file already in memory; `path` is used only in messages.
    init(storage: Storage, path: String) throws {
        self.path = path
        self.storage = storage
        let size = storage.byteCount
        let file = "safetensors file '\(path)'"
        guard size >= 8 else {
            throw PEFTKitError.format("\(file) is truncated: \(size) bytes, shorter than the 8-byte header length")
        }
        let raw = UnsafeRawPointer(storage.base)
        let headerLength = UInt64(littleEndian: raw.loadUnaligned(as: UInt64.self))
        guard headerLength <= UInt64(Self.maxHeaderBytes) else {
            throw PEFTKitError.format("\(file) claims a \(headerLength)-byte header, more than the limit of \(Self.maxHeaderBytes)")
        }
        let n = Int(headerLength)
        guard n <= size - 8 else {
            throw PEFTKitError.format("\(file) is truncated: header length \(n) runs past the end of the file (\(size) bytes)")
        }
        let dataStart = 8 + n
        let dataSize = size - dataStart

        let header = try decodeJSON(RawHeader.self, from: UnsafeRawBufferPointer(start: raw + 8, count: n),
                                    source: "\(file) header")
        metadata = header.metadata ?? [:]

        var entries: [String: Entry] = [:]
        entries.reserveCapacity(header.tensors.count)
        for (name, t) in header.tensors {
            let what = "\(file): tensor '\(name)'"
            guard let dtype = DType(rawValue: t.dtype) else {
                throw PEFTKitError.unsupported("\(what) has dtype '\(t.dtype)', which PEFTKit cannot read "
                    + "(supported: \(DType.allCases.map(\.rawValue).joined(separator: ", ")))")
            }
            var count = 1
            for d in t.shape {
                guard d >= 0 else { throw PEFTKitError.format("\(what) has a negative dimension in shape \(t.shape)") }
                let (m, o) = count.multipliedReportingOverflow(by: d)
                guard !o else { throw PEFTKitError.format("\(what) has shape \(t.shape) whose element count overflows") }
                count = m
            }
            let (bytes, o) = count.multipliedReportingOverflow(by: dtype.byteSize)
            guard !o else { throw PEFTKitError.format("\(what) has shape \(t.shape) whose byte size overflows") }
            guard t.offsets.count == 2 else {
                throw PEFTKitError.format("\(what) has data_offsets \(t.offsets); expected [begin, end]")
            }
            let begin = t.offsets[0], end = t.offsets[1]
            guard begin >= 0, begin <= end else {
                throw PEFTKitError.format("\(what) has invalid data_offsets [\(begin), \(end)]")
            }
            guard end <= dataSize else {
                throw PEFTKitError.format("\(what) has data_offsets [\(begin), \(end)] past the end of the data section (\(dataSize) bytes)")
            }
            guard end - begin == bytes else {
                throw PEFTKitError.format("\(what) has shape \(t.shape) of \(t.dtype) (\(bytes) bytes) but data_offsets [\(begin), \(end)] span \(end - begin) bytes")
            }
            entries[name] = Entry(dtype: dtype, shape: t.shape, count: count,
                                  begin: dataStart + begin, end: dataStart + end)
        }

        // Order by position; two non-empty ranges must not share a byte.
        let ordered = entries.sorted { a, b in
            (a.value.begin, a.value.end, a.key) < (b.value.begin, b.value.end, b.key)
        }
        var furthest = (end: 0, name: "")
        for (name, e) in ordered where e.begin < e.end {
            if e.begin < furthest.end {
                throw PEFTKitError.format("\(file): tensors '\(furthest.name)' and '\(name)' have overlapping data ranges")
            }
            furthest = (e.end, name)
        }
        self.entries = entries
        self.names = ordered.map(\.key)
    }

    /// The same file with its tensors renamed by `rename`; two tensors may not get one name.
    func renamed(_ rename: (String) -> String) throws -> SafeTensorsFile {
        var e: [String: Entry] = [:]
        for (k, v) in entries {
            let n = rename(k)
            guard e[n] == nil else { throw PEFTKitError.format("safetensors file '\(path)' holds two tensors named '\(n)'") }
            e[n] = v
        }
        return SafeTensorsFile(path: path, names: names.map(rename), metadata: metadata, storage: storage, entries: e)
    }

    private init(path: String, names: [String], metadata: [String: String], storage: Storage, entries: [String: Entry]) {
        self.path = path
        self.names = names
        self.metadata = metadata
        self.storage = storage
        self.entries = entries
    }

    /// The stored dtype and shape of `name`, or nil if there is no such tensor.
    public func info(_ name: String) -> (dtype: DType, shape: [Int])? {
        guard let e = entries[name] else { return nil }
        return (e.dtype, e.shape)
    }

    /// Whether the file holds a tensor called `name`.
    public func has(_ name: String) -> Bool { entries[name] != nil }

    private func entry(_ name: String) throws -> Entry {
        guard let e = entries[name] else {
            throw PEFTKitError.notFound("tensor '\(name)' not found in safetensors file '\(path)'")
        }
        return e
    }

    /// Tensor `name` as fp32. Aligned F32 data is returned without copying (the tensor's storage is the
    /// file mapping, read-only); F16, BF16, F64 and misaligned F32 are widened into a new allocation.
    /// Integer dtypes throw `unsupported`.
    public func tensor(_ name: String) throws -> Tensor {
        let e = try entry(name)
        #if _endian(little)
        if e.dtype == .f32, (Int(bitPattern: storage.base) &+ e.begin) % MemoryLayout<Float>.alignment == 0 {
            let p = (storage.base + e.begin).bindMemory(to: Float.self, capacity: e.count)
            return Tensor(shape: e.shape, data: p, storage: storage)
        }
        #endif
        let out = try Storage.allocate(floats: e.count)
        try widen(e, name: name, into: out.floats)
        return Tensor(shape: e.shape, data: out.floats, storage: out)
    }

    /// Tensor `name` copied into an array of fp32 (any floating-point dtype).
    public func floatArray(_ name: String) throws -> [Float] {
        let e = try entry(name)
        return try [Float](unsafeUninitializedCapacity: e.count) { buf, n in
            if let base = buf.baseAddress { try widen(e, name: name, into: base) }
            n = e.count
        }
    }

    /// Integer tensor `name` (I32, I64, I16, I8 or U8) as `Int32`. I64 values outside the Int32 range throw.
    public func int32Tensor(_ name: String) throws -> [Int32] {
        let e = try entry(name)
        let src = UnsafeRawPointer(storage.base) + e.begin
        var out = [Int32](repeating: 0, count: e.count)
        switch e.dtype {
        case .i32:
            for i in 0..<e.count { out[i] = Int32(littleEndian: src.loadUnaligned(fromByteOffset: 4 * i, as: Int32.self)) }
        case .i64:
            for i in 0..<e.count {
                let v = Int64(littleEndian: src.loadUnaligned(fromByteOffset: 8 * i, as: Int64.self))
                guard let w = Int32(exactly: v) else {
                    throw PEFTKitError.format("tensor '\(name)' in '\(path)': element \(i) = \(v) does not fit in Int32")
                }
                out[i] = w
            }
        case .i16:
            for i in 0..<e.count { out[i] = Int32(Int16(littleEndian: src.loadUnaligned(fromByteOffset: 2 * i, as: Int16.self))) }
        case .i8:
            for i in 0..<e.count { out[i] = Int32(src.load(fromByteOffset: i, as: Int8.self)) }
        case .u8:
            for i in 0..<e.count { out[i] = Int32(src.load(fromByteOffset: i, as: UInt8.self)) }
        default:
            throw PEFTKitError.unsupported("tensor '\(name)' in '\(path)' has dtype \(e.dtype.rawValue); expected an integer dtype")
        }
        return out
    }

    /// Converts entry `e` to fp32 into `dst` (room for `e.count` floats).
    private func widen(_ e: Entry, name: String, into dst: UnsafeMutablePointer<Float>) throws {
        let src = UnsafeRawPointer(storage.base) + e.begin
        let n = e.count
        switch e.dtype {
        case .f32:
            for i in 0..<n {
                dst[i] = Float(bitPattern: UInt32(littleEndian: src.loadUnaligned(fromByteOffset: 4 * i, as: UInt32.self)))
            }
        case .f16:
            for i in 0..<n {
                dst[i] = floatFromHalfBits(UInt16(littleEndian: src.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self)))
            }
        case .bf16:
            for i in 0..<n {
                dst[i] = floatFromBFloat16Bits(UInt16(littleEndian: src.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self)))
            }
        case .f64:
            for i in 0..<n {
                dst[i] = Float(Double(bitPattern: UInt64(littleEndian: src.loadUnaligned(fromByteOffset: 8 * i, as: UInt64.self))))
            }
        default:
            throw PEFTKitError.unsupported("tensor '\(name)' in '\(path)' has dtype \(e.dtype.rawValue); expected F32, F16, BF16 or F64")
        }
    }
}

/// IEEE binary16 bits to Float, exactly: zeros keep their sign, subnormals are normalised, infinities stay
/// infinite and NaNs stay NaN with their payload shifted into the high mantissa bits.
@inline(__always)
func floatFromHalfBits(_ h: UInt16) -> Float {
    let sign = UInt32(h & 0x8000) << 16
    let exponent = UInt32(h >> 10) & 0x1f
    var mantissa = UInt32(h & 0x3ff)
    if exponent == 0x1f {
        return Float(bitPattern: sign | 0x7f80_0000 | (mantissa << 13))
    }
    if exponent != 0 {
        return Float(bitPattern: sign | ((exponent + 112) << 23) | (mantissa << 13))
    }
    if mantissa == 0 { return Float(bitPattern: sign) }
    // Subnormal half: value = mantissa · 2^-24. Shift the leading 1 up to the implicit-bit position.
    var e: UInt32 = 113
    while mantissa & 0x400 == 0 {
        mantissa <<= 1
        e -= 1
    }
    return Float(bitPattern: sign | (e << 23) | ((mantissa & 0x3ff) << 13))
}

/// bfloat16 bits to Float: bfloat16 is the upper half of an IEEE binary32.
@inline(__always)
func floatFromBFloat16Bits(_ b: UInt16) -> Float {
    Float(bitPattern: UInt32(b) << 16)
}

/// The decoded JSON header: tensor entries plus the optional metadata map.
private struct RawHeader: Decodable {
    var tensors: [String: RawTensor] = [:]
    var metadata: [String: String]? = nil

    init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: AnyKey.self)
        for key in c.allKeys {
            if key.stringValue == "__metadata__" {
                metadata = try c.decode([String: String].self, forKey: key)
            } else {
                tensors[key.stringValue] = try c.decode(RawTensor.self, forKey: key)
            }
        }
    }
}

private struct RawTensor: Decodable {
    var dtype: String
    var shape: [Int]
    var offsets: [Int]

    enum CodingKeys: String, CodingKey {
        case dtype, shape
        case offsets = "data_offsets"
    }
}

/// Writes safetensors files (F32 and I32, little-endian), replacing the target atomically.
///
/// ```swift
/// try SafeTensorsWriter.write(path: "adapter.safetensors",
///                             tensors: [(name: "down.weight", shape: [16, 64], data: weights)],
///                             metadata: ["format": "pt"])
/// ```
///
/// Tensors are stored in the given order; the header is padded with spaces so the data section starts at
/// a multiple of 8 bytes, which keeps every F32 tensor 4-byte aligned for zero-copy reads.
public enum SafeTensorsWriter {
    /// The data of one tensor. Buffer cases must stay valid until `write` returns.
    public enum Payload {
        case f32([Float])
        case i32([Int32])
        case f32Buffer(UnsafeBufferPointer<Float>)
        case i32Buffer(UnsafeBufferPointer<Int32>)

        var count: Int {
            switch self {
            case .f32(let a): return a.count
            case .i32(let a): return a.count
            case .f32Buffer(let b): return b.count
            case .i32Buffer(let b): return b.count
            }
        }

        var dtype: DType {
            switch self {
            case .f32, .f32Buffer: return .f32
            case .i32, .i32Buffer: return .i32
            }
        }
    }

    /// One named tensor to write.
    public struct Entry {
        public var name: String
        public var shape: [Int]
        public var payload: Payload

        public init(name: String, shape: [Int], payload: Payload) {
            self.name = name
            self.shape = shape
            self.payload = payload
        }
    }

    /// Writes `entries` (in order) and optional `metadata` to `path`, all or nothing.
    public static func write(path: String, entries: [Entry], metadata: [String: String]? = nil) throws {
        try writeFileAtomically(path: path, write: try writer(entries: entries, metadata: metadata, path: path))
    }

    /// What `write` puts into a file, as a function of the file descriptor (entries checked first).
    static func writer(entries: [Entry], metadata: [String: String]?, path: String) throws -> (Int32) throws -> Void {
        let header = try headerBytes(entries: entries, metadata: metadata, path: path)
        return { fd in
            try writeAll(fd, header)
            for e in entries {
                switch e.payload {
                case .f32(let a): try a.withUnsafeBytes { try writeLittleEndian32(fd, $0) }
                case .i32(let a): try a.withUnsafeBytes { try writeLittleEndian32(fd, $0) }
                case .f32Buffer(let b): try writeLittleEndian32(fd, UnsafeRawBufferPointer(b))
                case .i32Buffer(let b): try writeLittleEndian32(fd, UnsafeRawBufferPointer(b))
                }
            }
        }
    }

    /// Writes F32 tensors, then the optional I32 tensors, to `path`.
    public static func write(path: String, tensors: [(name: String, shape: [Int], data: [Float])],
                             int32Tensors: [(name: String, shape: [Int], data: [Int32])] = [],
                             metadata: [String: String]? = nil) throws {
        let entries = tensors.map { Entry(name: $0.name, shape: $0.shape, payload: .f32($0.data)) }
            + int32Tensors.map { Entry(name: $0.name, shape: $0.shape, payload: .i32($0.data)) }
        try write(path: path, entries: entries, metadata: metadata)
    }

    /// Writes F32 tensors given as buffers (no copy), e.g. views into a parameter block.
    public static func write(path: String, buffers: [(name: String, shape: [Int], data: UnsafeBufferPointer<Float>)],
                             metadata: [String: String]? = nil) throws {
        try write(path: path, entries: bufferEntries(buffers), metadata: metadata)
    }

    static func bufferEntries(_ buffers: [(name: String, shape: [Int], data: UnsafeBufferPointer<Float>)]) -> [Entry] {
        buffers.map { Entry(name: $0.name, shape: $0.shape, payload: .f32Buffer($0.data)) }
    }

    /// The 8-byte length plus the space-padded JSON header, after checking every entry.
    static func headerBytes(entries: [Entry], metadata: [String: String]?, path: String) throws -> [UInt8] {
        var json = "{"
        var first = true
        if let metadata, !metadata.isEmpty {
            json += jsonQuoted("__metadata__") + ":{"
            json += metadata.sorted { $0.key < $1.key }
                .map { jsonQuoted($0.key) + ":" + jsonQuoted($0.value) }
                .joined(separator: ",")
            json += "}"
            first = false
        }
        var seen = Set<String>()
        var offset = 0
        for e in entries {
            let what = "writing '\(path)': tensor '\(e.name)'"
            guard !e.name.isEmpty, e.name != "__metadata__" else {
                throw PEFTKitError.invalidArgument("writing '\(path)': invalid tensor name '\(e.name)'")
            }
            guard seen.insert(e.name).inserted else { throw PEFTKitError.invalidArgument("\(what) appears twice") }
            var count = 1
            for d in e.shape {
                guard d >= 0 else { throw PEFTKitError.invalidArgument("\(what) has a negative dimension in \(e.shape)") }
                let (m, o) = count.multipliedReportingOverflow(by: d)
                guard !o else { throw PEFTKitError.invalidArgument("\(what) has shape \(e.shape) whose size overflows") }
                count = m
            }
            guard count == e.payload.count else {
                throw PEFTKitError.invalidArgument("\(what) has shape \(e.shape) (\(count) elements) but \(e.payload.count) values")
            }
            let (bytes, o1) = count.multipliedReportingOverflow(by: e.payload.dtype.byteSize)
            let (end, o2) = offset.addingReportingOverflow(bytes)
            guard !o1, !o2 else { throw PEFTKitError.invalidArgument("\(what) makes the file size overflow") }
            if !first { json += "," }
            first = false
            json += jsonQuoted(e.name) + ":{\"dtype\":\"\(e.payload.dtype.rawValue)\",\"shape\":["
                + e.shape.map(String.init).joined(separator: ",") + "],\"data_offsets\":[\(offset),\(end)]}"
            offset = end
        }
        json += "}"
        var header = Array(json.utf8)
        let padded = (header.count + 7) / 8 * 8
        header += [UInt8](repeating: 0x20, count: padded - header.count)
        var out = [UInt8]()
        out.reserveCapacity(8 + header.count)
        var len = UInt64(header.count).littleEndian
        withUnsafeBytes(of: &len) { out += $0 }
        out += header
        return out
    }
}

/// Writes a buffer of 4-byte values (Float or Int32) to `fd` in little-endian order.
private func writeLittleEndian32(_ fd: Int32, _ raw: UnsafeRawBufferPointer) throws {
    #if _endian(little)
    try writeAll(fd, raw)
    #else
    let total = raw.count / 4
    var stage = [UInt32](repeating: 0, count: min(total, 1 << 16))
    var i = 0
    while i < total {
        let n = min(stage.count, total - i)
        for j in 0..<n { stage[j] = raw.loadUnaligned(fromByteOffset: 4 * (i + j), as: UInt32.self).littleEndian }
        try stage.withUnsafeBytes { try writeAll(fd, UnsafeRawBufferPointer(rebasing: $0[0..<(4 * n)])) }
        i += n
    }
    #endif
}
