#if canImport(Glibc)
import Glibc
#endif

// Reading GGUF files, versions 2 and 3 (little-endian): a header (magic "GGUF", version, tensor count,
// metadata count), typed key/value metadata, one info record per tensor (name, dimensions, element type,
// offset), then the tensor data section, which starts at the next multiple of `general.alignment`.
//
// Opening maps the file and checks everything before anything is returned: counts against the bytes
// left, every string and array inside the file, dimension products for overflow, each tensor's byte range
// inside the data section, aligned, and not overlapping another. Tensors are read as fp32: F32 without a
// copy when it is aligned, F16/BF16 widened, and Q8_0/Q4_0/Q4_1 blocks dequantised.

// MARK: metadata values

/// The type tags of GGUF metadata values.
public enum GGUFValueType: UInt32, Sendable, CaseIterable, CustomStringConvertible {
    case uint8 = 0, int8 = 1, uint16 = 2, int16 = 3, uint32 = 4, int32 = 5, float32 = 6, bool = 7
    case string = 8, array = 9, uint64 = 10, int64 = 11, float64 = 12

    public var description: String {
        switch self {
        case .uint8: return "uint8"
        case .int8: return "int8"
        case .uint16: return "uint16"
        case .int16: return "int16"
        case .uint32: return "uint32"
        case .int32: return "int32"
        case .float32: return "float32"
        case .bool: return "bool"
        case .string: return "string"
        case .array: return "array"
        case .uint64: return "uint64"
        case .int64: return "int64"
        case .float64: return "float64"
        }
    }

    /// Smallest encoding of one value of this type inside an array: fixed sizes for scalars, the 8-byte
    /// length of an empty string, the 12-byte type + count of an empty array.
    var minimumBytes: Int {
        switch self {
        case .uint8, .int8, .bool: return 1
        case .uint16, .int16: return 2
        case .uint32, .int32, .float32: return 4
        case .uint64, .int64, .float64, .string: return 8
        case .array: return 12
        }
    }
}

/// A GGUF array: its elements, stored compactly by element type. Nested arrays may differ in type.
public enum GGUFArray: Sendable, Equatable {
    case uint8([UInt8])
    case int8([Int8])
    case uint16([UInt16])
    case int16([Int16])
    case uint32([UInt32])
    case int32([Int32])
    case uint64([UInt64])
    case int64([Int64])
    case float32([Float])
    case float64([Double])
    case bool([Bool])
    case string([String])
    case array([GGUFArray])

    /// The element type tag.
    public var elementType: GGUFValueType {
        switch self {
        case .uint8: return .uint8
        case .int8: return .int8
        case .uint16: return .uint16
        case .int16: return .int16
        case .uint32: return .uint32
        case .int32: return .int32
        case .uint64: return .uint64
        case .int64: return .int64
        case .float32: return .float32
        case .float64: return .float64
        case .bool: return .bool
        case .string: return .string
        case .array: return .array
        }
    }

    /// Number of elements.
    public var count: Int {
        switch self {
        case .uint8(let a): return a.count
        case .int8(let a): return a.count
        case .uint16(let a): return a.count
        case .int16(let a): return a.count
        case .uint32(let a): return a.count
        case .int32(let a): return a.count
        case .uint64(let a): return a.count
        case .int64(let a): return a.count
        case .float32(let a): return a.count
        case .float64(let a): return a.count
        case .bool(let a): return a.count
        case .string(let a): return a.count
        case .array(let a): return a.count
        }
    }

    /// Element `i` as a single value, or nil when `i` is out of range.
    public func element(_ i: Int) -> GGUFValue? {
        guard i >= 0, i < count else { return nil }
        switch self {
        case .uint8(let a): return .uint8(a[i])
        case .int8(let a): return .int8(a[i])
        case .uint16(let a): return .uint16(a[i])
        case .int16(let a): return .int16(a[i])
        case .uint32(let a): return .uint32(a[i])
        case .int32(let a): return .int32(a[i])
        case .uint64(let a): return .uint64(a[i])
        case .int64(let a): return .int64(a[i])
        case .float32(let a): return .float32(a[i])
        case .float64(let a): return .float64(a[i])
        case .bool(let a): return .bool(a[i])
        case .string(let a): return .string(a[i])
        case .array(let a): return .array(a[i])
        }
    }

    /// The elements as strings, or nil when this is not a string array.
    public var strings: [String]? {
        if case .string(let a) = self { return a }
        return nil
    }

    /// The elements as `Int`, when this is an integer array whose every value fits.
    public var ints: [Int]? {
        switch self {
        case .uint8(let a): return a.map { Int($0) }
        case .int8(let a): return a.map { Int($0) }
        case .uint16(let a): return a.map { Int($0) }
        case .int16(let a): return a.map { Int($0) }
        case .uint32(let a): return a.map { Int($0) }
        case .int32(let a): return a.map { Int($0) }
        case .int64(let a): return a.map { Int($0) }
        case .uint64(let a):
            var out: [Int] = []
            out.reserveCapacity(a.count)
            for v in a {
                guard let i = Int(exactly: v) else { return nil }
                out.append(i)
            }
            return out
        default: return nil
        }
    }

    /// The elements as `Double`, when this is a float array (float32 widens exactly).
    public var doubles: [Double]? {
        switch self {
        case .float32(let a): return a.map { Double($0) }
        case .float64(let a): return a
        default: return nil
        }
    }
}

/// One GGUF metadata value.
public enum GGUFValue: Sendable, Equatable {
    case uint8(UInt8)
    case int8(Int8)
    case uint16(UInt16)
    case int16(Int16)
    case uint32(UInt32)
    case int32(Int32)
    case uint64(UInt64)
    case int64(Int64)
    case float32(Float)
    case float64(Double)
    case bool(Bool)
    case string(String)
    case array(GGUFArray)

    /// The type tag this value was stored with.
    public var type: GGUFValueType {
        switch self {
        case .uint8: return .uint8
        case .int8: return .int8
        case .uint16: return .uint16
        case .int16: return .int16
        case .uint32: return .uint32
        case .int32: return .int32
        case .uint64: return .uint64
        case .int64: return .int64
        case .float32: return .float32
        case .float64: return .float64
        case .bool: return .bool
        case .string: return .string
        case .array: return .array
        }
    }

    /// Any integer type, when the value fits in `Int`.
    public var intValue: Int? {
        switch self {
        case .uint8(let v): return Int(v)
        case .int8(let v): return Int(v)
        case .uint16(let v): return Int(v)
        case .int16(let v): return Int(v)
        case .uint32(let v): return Int(v)
        case .int32(let v): return Int(v)
        case .uint64(let v): return Int(exactly: v)
        case .int64(let v): return Int(v)
        default: return nil
        }
    }

    /// float32 or float64 (float32 widens exactly). Integers are not converted.
    public var doubleValue: Double? {
        switch self {
        case .float32(let v): return Double(v)
        case .float64(let v): return v
        default: return nil
        }
    }

    public var boolValue: Bool? {
        if case .bool(let v) = self { return v }
        return nil
    }

    public var stringValue: String? {
        if case .string(let v) = self { return v }
        return nil
    }

    public var arrayValue: GGUFArray? {
        if case .array(let v) = self { return v }
        return nil
    }
}

// MARK: tensor types


/// Where a tensor is and what it holds, as recorded in a GGUF file.
public struct GGUFTensorInfo: Sendable, Equatable {
    public let name: String
    /// Dimensions as stored: fastest-varying first (ggml's `ne`). A matrix with `ne = [in, out]` has `out`
    /// rows of `in` contiguous values.
    public let dimensions: [Int]
    public let type: GGMLType
    /// Byte offset inside the data section, as stored (a multiple of the file's alignment).
    public let offset: Int
    /// Bytes of tensor data.
    public let byteCount: Int
    /// Number of elements (product of `dimensions`).
    public let elementCount: Int

    /// The row-major shape of the tensor `GGUFFile.tensor(_:)` returns: `dimensions` reversed.
    public var shape: [Int] { dimensions.reversed() }
}

// MARK: the file

/// A read-only, memory-mapped GGUF file (version 2 or 3) with validated metadata and tensor table.
///
/// ```swift
/// let file = try GGUFFile(path: "SmolLM2-135M-Instruct.Q4_1.gguf")
/// let arch = try file.string("general.architecture")          // "llama"
/// let layers = try file.int("llama.block_count")              // 30
/// let embed = try file.tensor("token_embd.weight")             // fp32 [49152, 576], dequantised
/// ```
///
/// Every problem with the file throws `PEFTKitError` naming the file: `format` for malformed content,
/// `unsupported` for unknown value or tensor types and versions, `io` when it cannot be opened or mapped.
/// Tensors returned by `tensor(_:)` keep the mapping alive; they are read-only.
public struct GGUFFile: Sendable {
    /// The 4 bytes every GGUF file starts with.
    public static let magic: [UInt8] = Array("GGUF".utf8)
    /// Alignment of the data section and of every tensor when `general.alignment` is absent.
    public static let defaultAlignment = 32
    /// Deepest array nesting accepted in metadata.
    public static let maxArrayDepth = 8
    /// Longest key or tensor name accepted, in bytes.
    public static let maxNameBytes = 65535
    /// Dimensions a tensor may have (ggml's limit).
    public static let maxDimensions = 4

    /// The path the file was opened from (used in messages).
    public let path: String
    /// GGUF version, 2 or 3.
    public let version: UInt32
    /// Every metadata value by key.
    public let metadata: [String: GGUFValue]
    /// Metadata keys in file order.
    public let metadataKeys: [String]
    /// Tensor records in file order.
    public let tensorInfos: [GGUFTensorInfo]
    /// `general.alignment`, or 32.
    public let alignment: Int
    /// Absolute file offset of the tensor data section.
    public let dataOffset: Int
    let storage: Storage
    let tensorIndex: [String: Int]

    /// Maps and validates the file at `path`.
    public init(path: String) throws {
        try self.init(storage: try Storage.map(path: path), path: path)
    }

    /// Validates a file already in memory; `path` is used only in messages.
    init(storage: Storage, path: String) throws {
        self.path = path
        self.storage = storage
        var r = GGUFReader(base: UnsafeRawPointer(storage.base), size: storage.byteCount, file: "GGUF file '\(path)'")
        let file = r.file

        let magicBytes = try r.take(4, "the magic number")
        let magic = (0..<4).map { magicBytes.load(fromByteOffset: $0, as: UInt8.self) }
        guard magic == Self.magic else {
            throw PEFTKitError.format("\(file) does not start with the GGUF magic \"GGUF\" (found bytes \(magic))")
        }
        let version = try r.u32("the version")
        guard version == 2 || version == 3 else {
            if version == 1 {
                throw PEFTKitError.unsupported("\(file) is GGUF version 1; PEFTKit reads versions 2 and 3")
            }
            if version.byteSwapped == 2 || version.byteSwapped == 3 {
                throw PEFTKitError.unsupported("\(file) is a big-endian GGUF file; PEFTKit reads little-endian files")
            }
            throw PEFTKitError.unsupported("\(file) has GGUF version \(version); PEFTKit reads versions 2 and 3")
        }
        self.version = version
        let tensorCount = try r.count("the tensor count", minimumBytesEach: 8 + 4 + 8 + 4 + 8)
        let kvCount = try r.count("the metadata count", minimumBytesEach: 8 + 1 + 4 + 1)

        var metadata: [String: GGUFValue] = [:]
        var keys: [String] = []
        metadata.reserveCapacity(kvCount)
        keys.reserveCapacity(kvCount)
        for i in 0..<kvCount {
            let key = try r.name("the key of metadata entry \(i)")
            let rawType = try r.u32("the value type of metadata '\(key)'")
            guard let type = GGUFValueType(rawValue: rawType) else {
                throw PEFTKitError.unsupported("\(file): metadata '\(key)' has unknown value type \(rawType)")
            }
            let value = try r.value(type, key: key, depth: 0)
            guard metadata.updateValue(value, forKey: key) == nil else {
                throw PEFTKitError.format("\(file): metadata key '\(key)' appears twice")
            }
            keys.append(key)
        }
        self.metadata = metadata
        metadataKeys = keys

        var alignment = Self.defaultAlignment
        if let a = metadata["general.alignment"] {
            guard let v = a.intValue, v > 0, v <= 1 << 20, v & (v - 1) == 0 else {
                throw PEFTKitError.format("\(file): general.alignment must be a power of two in 1...1048576, got \(a)")
            }
            alignment = v
        }
        self.alignment = alignment

        var infos: [GGUFTensorInfo] = []
        var index: [String: Int] = [:]
        infos.reserveCapacity(tensorCount)
        index.reserveCapacity(tensorCount)
        for i in 0..<tensorCount {
            let name = try r.name("the name of tensor \(i)")
            let what = "tensor '\(name)'"
            let nDims = try r.u32("the dimension count of \(what)")
            guard nDims >= 1, nDims <= UInt32(Self.maxDimensions) else {
                throw PEFTKitError.format("\(file): \(what) has \(nDims) dimensions; expected 1...\(Self.maxDimensions)")
            }
            var dims: [Int] = []
            var count = 1
            for d in 0..<Int(nDims) {
                let raw = try r.u64("dimension \(d) of \(what)")
                guard let v = Int(exactly: raw) else {
                    throw PEFTKitError.format("\(file): \(what) has dimension \(d) = \(raw), too large")
                }
                let (m, o) = count.multipliedReportingOverflow(by: v)
                guard !o else {
                    throw PEFTKitError.format("\(file): \(what) has dimensions \(dims + [v]) whose element count overflows")
                }
                dims.append(v)
                count = m
            }
            let rawType = try r.u32("the type of \(what)")
            guard let type = GGMLType(rawValue: rawType) else {
                throw PEFTKitError.unsupported("\(file): \(what) has unknown tensor type \(rawType)")
            }
            guard dims[0] % type.blockSize == 0 else {
                throw PEFTKitError.format("\(file): \(what) of type \(type) has first dimension \(dims[0]), "
                    + "not a multiple of the block size \(type.blockSize)")
            }
            let (bytes, o) = (count / type.blockSize).multipliedReportingOverflow(by: type.blockBytes)
            guard !o else { throw PEFTKitError.format("\(file): \(what) has dimensions \(dims) whose byte size overflows") }
            let rawOffset = try r.u64("the data offset of \(what)")
            guard let offset = Int(exactly: rawOffset) else {
                throw PEFTKitError.format("\(file): \(what) has data offset \(rawOffset), too large")
            }
            guard offset % alignment == 0 else {
                throw PEFTKitError.format("\(file): \(what) has data offset \(offset), not a multiple of the alignment \(alignment)")
            }
            guard index.updateValue(infos.count, forKey: name) == nil else {
                throw PEFTKitError.format("\(file): tensor name '\(name)' appears twice")
            }
            infos.append(GGUFTensorInfo(name: name, dimensions: dims, type: type, offset: offset, byteCount: bytes,
                                        elementCount: count))
        }

        // The data section starts at the first aligned offset after the tensor table.
        let size = storage.byteCount
        let dataOffset = (r.pos + alignment - 1) / alignment * alignment
        self.dataOffset = dataOffset
        if !infos.isEmpty && dataOffset > size {
            throw PEFTKitError.format("\(file) is truncated: the tensor data section would start at offset \(dataOffset), "
                + "past the end of the file (\(size) bytes)")
        }
        let dataSize = max(0, size - dataOffset)
        for t in infos where t.offset > dataSize || t.byteCount > dataSize - t.offset {
            throw PEFTKitError.format("\(file): tensor '\(t.name)' (\(t.type), dimensions \(t.dimensions), \(t.byteCount) bytes "
                + "at data offset \(t.offset)) runs past the end of the file; the data section holds \(dataSize) bytes")
        }
        let ordered = infos.filter { $0.byteCount > 0 }.sorted { ($0.offset, $0.name) < ($1.offset, $1.name) }
        for k in ordered.indices.dropFirst() {
            let a = ordered[k - 1], b = ordered[k]
            if b.offset < a.offset + a.byteCount {
                throw PEFTKitError.format("\(file): tensors '\(a.name)' and '\(b.name)' have overlapping data")
            }
        }
        tensorInfos = infos
        tensorIndex = index
    }

    // MARK: metadata access

    /// Whether the metadata has `key`.
    public func has(key: String) -> Bool { metadata[key] != nil }

    private func wrongType(_ key: String, _ v: GGUFValue, _ expected: String) -> PEFTKitError {
        PEFTKitError.format("GGUF file '\(path)': metadata '\(key)' is a \(v.type), expected \(expected)")
    }

    /// The string at `key`; nil when absent; `format` error when it is not a string.
    public func string(_ key: String) throws -> String? {
        guard let v = metadata[key] else { return nil }
        guard let s = v.stringValue else { throw wrongType(key, v, "a string") }
        return s
    }

    /// The integer at `key` (any integer type); nil when absent; `format` error when it is not an integer
    /// or does not fit in `Int`.
    public func int(_ key: String) throws -> Int? {
        guard let v = metadata[key] else { return nil }
        guard let i = v.intValue else { throw wrongType(key, v, "an integer that fits in Int") }
        return i
    }

    /// The number at `key`: float32 or float64, or an integer converted; nil when absent.
    public func float(_ key: String) throws -> Double? {
        guard let v = metadata[key] else { return nil }
        if let d = v.doubleValue { return d }
        if let i = v.intValue { return Double(i) }
        throw wrongType(key, v, "a number")
    }

    /// The boolean at `key`; nil when absent.
    public func bool(_ key: String) throws -> Bool? {
        guard let v = metadata[key] else { return nil }
        guard let b = v.boolValue else { throw wrongType(key, v, "a bool") }
        return b
    }

    /// The array at `key`; nil when absent.
    public func array(_ key: String) throws -> GGUFArray? {
        guard let v = metadata[key] else { return nil }
        guard let a = v.arrayValue else { throw wrongType(key, v, "an array") }
        return a
    }

    // MARK: tensors

    /// The record of tensor `name`, or nil.
    public func info(_ name: String) -> GGUFTensorInfo? {
        tensorIndex[name].map { tensorInfos[$0] }
    }

    /// Whether the file holds a tensor called `name`.
    public func has(tensor name: String) -> Bool { tensorIndex[name] != nil }

    /// Tensor `name` as fp32 with the row-major shape `info.shape` (the stored dimensions reversed).
    /// Aligned F32 data is returned without copying (read-only, backed by the mapping); other readable
    /// types are widened or dequantised into a new allocation. Other types throw `unsupported`.
    public func tensor(_ name: String) throws -> Tensor {
        try tensor(name, copy: false)
    }

    /// Tensor `name` as fp32; with `copy`, always in a new writable allocation.
    func tensor(_ name: String, copy: Bool) throws -> Tensor {
        guard let i = tensorIndex[name] else {
            throw PEFTKitError.notFound("tensor '\(name)' not found in GGUF file '\(path)'")
        }
        let t = tensorInfos[i]
        guard t.type.isReadable else {
            throw PEFTKitError.unsupported("GGUF file '\(path)': tensor '\(name)' has type \(t.type), which PEFTKit "
                + "cannot read (supported: \(GGMLType.readableNames))")
        }
        let begin = dataOffset + t.offset
        #if _endian(little)
        if !copy, t.type == .f32, (Int(bitPattern: storage.base) &+ begin) % MemoryLayout<Float>.alignment == 0 {
            let p = (storage.base + begin).bindMemory(to: Float.self, capacity: t.elementCount)
            return Tensor(shape: t.shape, data: p, storage: storage)
        }
        #endif
        let out = try Storage.allocate(floats: t.elementCount)
        let src = UnsafeRawPointer(storage.base) + begin
        let rowLength = t.dimensions[0]
        if rowLength > 0 {
            let rows = t.elementCount / rowLength
            let rowBytes = rowLength / t.type.blockSize * t.type.blockBytes
            nonisolated(unsafe) let dst = out.floats
            let type = t.type
            parallelFor(rows, grain: max(1, (1 << 16) / rowLength)) { r0, r1 in
                for r in r0..<r1 {
                    ggmlDecodeRow(type, src + r * rowBytes, dst + r * rowLength, rowLength)
                }
            }
        }
        return Tensor(shape: t.shape, data: out.floats, storage: out)
    }
}

// MARK: decoding

/// Converts `n` elements of `type` at `src` to fp32 at `dst`. `n` is a multiple of the block size and
/// `type.isReadable`. The block formats and their dequantisation live in Kernels/QuantBlocks.swift
/// (bit-identical to gguf-py's `gguf.quants.dequantize`).
func ggmlDecodeRow(_ type: GGMLType, _ src: UnsafeRawPointer, _ dst: UnsafeMutablePointer<Float>, _ n: Int) {
    guard type.hasQuantKernels else {
        // Unreachable: callers check `isReadable`. Leave zeros rather than trap.
        dst.update(repeating: 0, count: n)
        return
    }
    quantDequantizeRows(type, src, rowBytes: n / type.blockSize * type.blockBytes, rows: 1, n: n, dst, ldd: n)
}

// MARK: reading primitives

/// A bounds-checked little-endian cursor over the mapped file. Every read checks the bytes left first.
struct GGUFReader {
    let base: UnsafeRawPointer
    let size: Int
    /// "GGUF file '<path>'", for messages.
    let file: String
    var pos = 0

    init(base: UnsafeRawPointer, size: Int, file: String) {
        self.base = base
        self.size = size
        self.file = file
    }

    var remaining: Int { size - pos }

    /// Advances past `n` bytes and returns a pointer to them.
    mutating func take(_ n: Int, _ what: @autoclosure () -> String) throws -> UnsafeRawPointer {
        guard n >= 0, n <= remaining else {
            throw PEFTKitError.format("\(file) is truncated: \(what()) at offset \(pos) needs \(n) bytes, "
                + "but the file ends at \(size)")
        }
        let p = base + pos
        pos += n
        return p
    }

    mutating func u8(_ what: @autoclosure () -> String) throws -> UInt8 {
        try take(1, what()).load(as: UInt8.self)
    }

    mutating func u16(_ what: @autoclosure () -> String) throws -> UInt16 {
        UInt16(littleEndian: try take(2, what()).loadUnaligned(as: UInt16.self))
    }

    mutating func u32(_ what: @autoclosure () -> String) throws -> UInt32 {
        UInt32(littleEndian: try take(4, what()).loadUnaligned(as: UInt32.self))
    }

    mutating func u64(_ what: @autoclosure () -> String) throws -> UInt64 {
        UInt64(littleEndian: try take(8, what()).loadUnaligned(as: UInt64.self))
    }

    /// A 64-bit count of items that each need at least `minimumBytesEach` bytes: refused when the rest of the
    /// file could not possibly hold that many, so nothing is ever sized from an absurd count.
    mutating func count(_ what: @autoclosure () -> String, minimumBytesEach: Int) throws -> Int {
        let raw = try u64(what())
        let limit = remaining / max(1, minimumBytesEach)
        guard raw <= UInt64(limit) else {
            throw PEFTKitError.format("\(file): \(what()) is \(raw), more than the \(remaining) bytes left "
                + "in the file can hold")
        }
        return Int(raw)
    }

    /// A length-prefixed string (u64 byte count, UTF-8 bytes, no terminator). Invalid UTF-8 is repaired
    /// with U+FFFD.
    mutating func string(_ what: @autoclosure () -> String) throws -> String {
        let raw = try u64("the length of \(what())")
        guard raw <= UInt64(remaining) else {
            throw PEFTKitError.format("\(file) is truncated: \(what()) at offset \(pos) claims \(raw) bytes, "
                + "but only \(remaining) are left")
        }
        let n = Int(raw)
        let p = try take(n, what())
        return String(decoding: UnsafeRawBufferPointer(start: p, count: n), as: UTF8.self)
    }

    /// A key or tensor name: a non-empty string of at most `GGUFFile.maxNameBytes` bytes.
    mutating func name(_ what: @autoclosure () -> String) throws -> String {
        let at = pos
        let s = try string(what())
        let n = pos - at - 8
        guard n > 0, n <= GGUFFile.maxNameBytes else {
            throw PEFTKitError.format("\(file): \(what()) at offset \(at) is \(n) bytes long; "
                + "expected 1...\(GGUFFile.maxNameBytes)")
        }
        return s
    }

    mutating func value(_ type: GGUFValueType, key: String, depth: Int) throws -> GGUFValue {
        let what = "the value of metadata '\(key)'"
        switch type {
        case .uint8: return .uint8(try u8(what))
        case .int8: return .int8(Int8(bitPattern: try u8(what)))
        case .uint16: return .uint16(try u16(what))
        case .int16: return .int16(Int16(bitPattern: try u16(what)))
        case .uint32: return .uint32(try u32(what))
        case .int32: return .int32(Int32(bitPattern: try u32(what)))
        case .uint64: return .uint64(try u64(what))
        case .int64: return .int64(Int64(bitPattern: try u64(what)))
        case .float32: return .float32(Float(bitPattern: try u32(what)))
        case .float64: return .float64(Double(bitPattern: try u64(what)))
        case .bool: return .bool(try boolean(what))
        case .string: return .string(try string(what))
        case .array: return .array(try array(key: key, depth: depth + 1))
        }
    }

    mutating func boolean(_ what: @autoclosure () -> String) throws -> Bool {
        let at = pos
        let b = try u8(what())
        guard b <= 1 else { throw PEFTKitError.format("\(file): \(what()) at offset \(at) is a bool with byte \(b); expected 0 or 1") }
        return b == 1
    }

    /// An array (element type, u64 count, elements) at nesting level `depth` (1 = an array value).
    mutating func array(key: String, depth: Int) throws -> GGUFArray {
        guard depth <= GGUFFile.maxArrayDepth else {
            throw PEFTKitError.format("\(file): metadata '\(key)' nests arrays deeper than \(GGUFFile.maxArrayDepth) levels")
        }
        let rawType = try u32("the element type of an array in metadata '\(key)'")
        guard let type = GGUFValueType(rawValue: rawType) else {
            throw PEFTKitError.unsupported("\(file): metadata '\(key)' has an array of unknown value type \(rawType)")
        }
        let n = try count("the element count of an array of \(type) in metadata '\(key)'", minimumBytesEach: type.minimumBytes)
        let what = "an element of the \(type) array in metadata '\(key)'"
        switch type {
        case .uint8: return .uint8(try scalars(n, what) { $0.load(as: UInt8.self) })
        case .int8: return .int8(try scalars(n, what) { $0.load(as: Int8.self) })
        case .uint16: return .uint16(try scalars(n, what) { UInt16(littleEndian: $0.loadUnaligned(as: UInt16.self)) })
        case .int16: return .int16(try scalars(n, what) { Int16(littleEndian: $0.loadUnaligned(as: Int16.self)) })
        case .uint32: return .uint32(try scalars(n, what) { UInt32(littleEndian: $0.loadUnaligned(as: UInt32.self)) })
        case .int32: return .int32(try scalars(n, what) { Int32(littleEndian: $0.loadUnaligned(as: Int32.self)) })
        case .uint64: return .uint64(try scalars(n, what) { UInt64(littleEndian: $0.loadUnaligned(as: UInt64.self)) })
        case .int64: return .int64(try scalars(n, what) { Int64(littleEndian: $0.loadUnaligned(as: Int64.self)) })
        case .float32:
            return .float32(try scalars(n, what) { Float(bitPattern: UInt32(littleEndian: $0.loadUnaligned(as: UInt32.self))) })
        case .float64:
            return .float64(try scalars(n, what) { Double(bitPattern: UInt64(littleEndian: $0.loadUnaligned(as: UInt64.self))) })
        case .bool:
            var out: [Bool] = []
            out.reserveCapacity(n)
            for _ in 0..<n { out.append(try boolean(what)) }
            return .bool(out)
        case .string:
            var out: [String] = []
            out.reserveCapacity(n)
            for _ in 0..<n { out.append(try string(what)) }
            return .string(out)
        case .array:
            var out: [GGUFArray] = []
            out.reserveCapacity(n)
            for _ in 0..<n { out.append(try array(key: key, depth: depth + 1)) }
            return .array(out)
        }
    }

    /// `n` fixed-size values read by `load` (the byte range is checked once, up front).
    private mutating func scalars<T>(_ n: Int, _ what: @autoclosure () -> String,
                                     _ load: (UnsafeRawPointer) -> T) throws -> [T] {
        let size = MemoryLayout<T>.size
        let (bytes, o) = n.multipliedReportingOverflow(by: size)
        guard !o else { throw PEFTKitError.format("\(file): \(what()) count \(n) overflows") }
        let p = try take(bytes, what())
        var out: [T] = []
        out.reserveCapacity(n)
        for i in 0..<n { out.append(load(p + i * size)) }
        return out
    }
}
