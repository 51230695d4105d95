#if canImport(Glibc)
import Glibc
#endif
import Testing
@testable import PEFTKit

// MARK: helpers

/// Runs `body` with a fresh directory under /tmp, removed afterwards with everything in it.
private func withTempDir(_ body: (String) throws -> Void) throws {
    var template = Array("/tmp/peftkit-io-XXXXXX".utf8CString)
    let dir: String = try template.withUnsafeMutableBufferPointer { buf in
        guard let base = buf.baseAddress, mkdtemp(base) != nil else {
            throw PEFTKitError.io("mkdtemp failed")
        }
        return String(cString: base)
    }
    defer { removeTree(dir) }
    try body(dir)
}

private func removeTree(_ path: String) {
    var st = stat()
    guard lstat(path, &st) == 0 else { return }
    if (st.st_mode & S_IFMT) == S_IFDIR {
        for name in listDirectory(path) { removeTree(path + "/" + name) }
        rmdir(path)
    } else {
        unlink(path)
    }
}

private func listDirectory(_ path: String) -> [String] {
    guard let d = opendir(path) else { return [] }
    defer { closedir(d) }
    var names: [String] = []
    while let ent = readdir(d) {
        let name = withUnsafeBytes(of: ent.pointee.d_name) { raw in
            String(cString: raw.bindMemory(to: CChar.self).baseAddress!)
        }
        if name != "." && name != ".." { names.append(name) }
    }
    return names.sorted()
}

private func bytesOf(_ path: String) throws -> [UInt8] { try readWholeFile(path: path) }

/// A safetensors file assembled by hand: 8-byte length (or `length` if given), header text, data bytes.
private func rawSafeTensors(header: String, data: [UInt8] = [], length: UInt64? = nil) -> [UInt8] {
    let h = Array(header.utf8)
    var out: [UInt8] = []
    let n = length ?? UInt64(h.count)
    for i in 0..<8 { out.append(UInt8(truncatingIfNeeded: n >> (8 * UInt64(i)))) }
    return out + h + data
}

private func le<T: FixedWidthInteger>(_ values: [T]) -> [UInt8] {
    values.flatMap { v in (0..<(T.bitWidth / 8)).map { UInt8(truncatingIfNeeded: v >> (8 * $0)) } }
}

private func caseName(_ e: PEFTKitError) -> String {
    switch e {
    case .invalidArgument: return "invalidArgument"
    case .io: return "io"
    case .format: return "format"
    case .unsupported: return "unsupported"
    case .notFound: return "notFound"
    case .numerical: return "numerical"
    case .state: return "state"
    case .outOfMemory: return "outOfMemory"
    case .busy: return "busy"
    case .cancelled: return "cancelled"
    }
}

/// Expects `body` to throw a `PEFTKitError` of case `kind` whose message contains every string in `contains`.
private func expectError(_ kind: String, _ contains: [String], sourceLocation: SourceLocation = #_sourceLocation,
                         _ body: () throws -> Void) {
    do {
        try body()
        Issue.record("expected a \(kind) error, but nothing was thrown", sourceLocation: sourceLocation)
    } catch let e as PEFTKitError {
        #expect(caseName(e) == kind, "got \(caseName(e)): \(e.message)", sourceLocation: sourceLocation)
        for s in contains {
            #expect(e.message.contains(s), "message '\(e.message)' lacks '\(s)'", sourceLocation: sourceLocation)
        }
    } catch {
        Issue.record("expected PEFTKitError.\(kind), got \(error)", sourceLocation: sourceLocation)
    }
}

/// Writes `bytes` as `name` in `dir` and tries to open it as safetensors.
private func openRaw(_ dir: String, _ name: String, _ bytes: [UInt8]) throws -> SafeTensorsFile {
    let path = dir + "/" + name
    try writeFileAtomically(path: path, bytes: bytes)
    return try SafeTensorsFile(path: path)
}

private func bits(_ x: Float) -> UInt32 { x.bitPattern }

// MARK: safetensors round trip

@Test func safeTensorsRoundTrip() throws {
    try withTempDir { dir in
        let path = dir + "/t.safetensors"
        let a: [Float] = [1, -2, 3.5, 0, .infinity, -0.0]
        let c: [Float] = [42]
        try SafeTensorsWriter.write(
            path: path,
            tensors: [(name: "a", shape: [2, 3], data: a), (name: "scalar", shape: [], data: c),
                      (name: "empty", shape: [0, 5], data: [])],
            int32Tensors: [(name: "ids", shape: [4], data: [7, -1, Int32.max, Int32.min])],
            metadata: ["format": "pt", "quote\"key": "line\nbreak"])

        let raw = try bytesOf(path)
        let headerLength = raw[0..<8].enumerated().reduce(0) { $0 | Int($1.element) << (8 * $1.offset) }
        #expect(headerLength % 8 == 0)
        #expect(raw.count == 8 + headerLength + 6 * 4 + 4 + 4 * 4)
        #expect(raw[8] == UInt8(ascii: "{"))

        let f = try SafeTensorsFile(path: path)
        #expect(f.names == ["a", "scalar", "empty", "ids"])  // data order = the order given
        #expect(f.metadata == ["format": "pt", "quote\"key": "line\nbreak"])
        #expect(f.info("a")?.dtype == .f32)
        #expect(f.info("a")?.shape == [2, 3])
        #expect(f.info("empty")?.shape == [0, 5])
        #expect(f.info("ids")?.dtype == .i32)
        #expect(f.info("nope") == nil)

        let t = try f.tensor("a")
        #expect(t.shape == [2, 3])
        #expect(t.storage.isMapped, "aligned F32 must be zero-copy")
        #expect(t.toArray().map(bits) == a.map(bits))
        #expect(try f.floatArray("a").map(bits) == a.map(bits))
        #expect(try f.tensor("scalar").toArray() == [42])
        #expect(try f.tensor("scalar").shape == [])
        #expect(try f.tensor("empty").count == 0)
        #expect(try f.int32Tensor("ids") == [7, -1, Int32.max, Int32.min])
    }
}

@Test func safeTensorsWriterBufferVariantAndEntries() throws {
    try withTempDir { dir in
        let path = dir + "/b.safetensors"
        let values: [Float] = (0..<12).map { Float($0) * 0.25 }
        try values.withUnsafeBufferPointer { buf in
            try SafeTensorsWriter.write(path: path, buffers: [
                (name: "first", shape: [2, 2], data: UnsafeBufferPointer(rebasing: buf[0..<4])),
                (name: "second", shape: [8], data: UnsafeBufferPointer(rebasing: buf[4..<12])),
            ])
        }
        let f = try SafeTensorsFile(path: path)
        #expect(f.names == ["first", "second"])
        #expect(f.metadata.isEmpty)
        #expect(try f.floatArray("first") == [0, 0.25, 0.5, 0.75])
        #expect(try f.floatArray("second") == Array(values[4...]))
    }
}

@Test func safeTensorsWriterRejectsBadEntries() throws {
    try withTempDir { dir in
        let path = dir + "/w.safetensors"
        expectError("invalidArgument", ["'x'", "6 elements", "5 values"]) {
            try SafeTensorsWriter.write(path: path, tensors: [(name: "x", shape: [2, 3], data: [1, 2, 3, 4, 5])])
        }
        expectError("invalidArgument", ["twice"]) {
            try SafeTensorsWriter.write(path: path, tensors: [(name: "x", shape: [1], data: [1]),
                                                              (name: "x", shape: [1], data: [2])])
        }
        expectError("invalidArgument", ["__metadata__"]) {
            try SafeTensorsWriter.write(path: path, tensors: [(name: "__metadata__", shape: [1], data: [1])])
        }
        expectError("invalidArgument", ["negative"]) {
            try SafeTensorsWriter.write(path: path, tensors: [(name: "x", shape: [-1], data: [])])
        }
        #expect(listDirectory(dir).isEmpty, "nothing may be created when validation fails")
    }
}

// MARK: conversions

@Test func halfToFloatKnownPatterns() {
    let cases: [(UInt16, Float)] = [
        (0x0000, 0), (0x3c00, 1), (0xc000, -2), (0x7bff, 65504), (0x3555, 0.333251953125),
        (0x0001, 5.960464477539063e-08),      // smallest subnormal, 2^-24
        (0x03ff, 6.097555160522461e-05),      // largest subnormal, 1023·2^-24
        (0x8001, -5.960464477539063e-08),
        (0x0400, 6.103515625e-05),            // smallest normal, 2^-14
        (0x7c00, .infinity), (0xfc00, -.infinity),
    ]
    for (h, want) in cases {
        #expect(floatFromHalfBits(h).bitPattern == want.bitPattern, "half 0x\(String(h, radix: 16))")
    }
    #expect(floatFromHalfBits(0x8000).bitPattern == 0x8000_0000, "-0 keeps its sign")
    #expect(floatFromHalfBits(0x7e00).isNaN)
    #expect(floatFromHalfBits(0xfe01).isNaN)
    #expect(floatFromHalfBits(0x7d00).isNaN, "signalling NaN stays NaN")
    #expect(floatFromHalfBits(0x7e00).bitPattern == 0x7fc0_0000)
}

#if !(os(macOS) && arch(x86_64))
@Test func halfToFloatMatchesFloat16ForAllPatterns() {
    var mismatches = 0
    for h in 0...UInt16.max {
        let ours = floatFromHalfBits(h)
        let reference = Float(Float16(bitPattern: h))
        if ours.isNaN ? !reference.isNaN : ours.bitPattern != reference.bitPattern { mismatches += 1 }
    }
    #expect(mismatches == 0)
}
#endif

@Test func bfloat16KnownPatterns() {
    #expect(floatFromBFloat16Bits(0x3f80) == 1)
    #expect(floatFromBFloat16Bits(0xc049) == -3.140625)
    #expect(floatFromBFloat16Bits(0x0001).bitPattern == 0x0001_0000)  // subnormal
    #expect(floatFromBFloat16Bits(0x8000).bitPattern == 0x8000_0000)
    #expect(floatFromBFloat16Bits(0x7f80) == .infinity)
    #expect(floatFromBFloat16Bits(0xff80) == -.infinity)
    #expect(floatFromBFloat16Bits(0x7fc0).isNaN)
}

@Test func widenedDtypesThroughFiles() throws {
    try withTempDir { dir in
        let half: [UInt16] = [0x3c00, 0x8000, 0x0001, 0x7c00, 0x7e00, 0xc000]
        let bf: [UInt16] = [0x3f80, 0x8000, 0x0001, 0xff80, 0x7fc0, 0x4049]
        let dbl: [Double] = [1.5, -0.0, 1e300, 1e-50, 0.1, .nan]
        let header = """
        {"h":{"dtype":"F16","shape":[6],"data_offsets":[0,12]},\
        "b":{"dtype":"BF16","shape":[2,3],"data_offsets":[12,24]},\
        "d":{"dtype":"F64","shape":[6],"data_offsets":[24,72]}}
        """
        let data = le(half) + le(bf) + le(dbl.map(\.bitPattern))
        let f = try openRaw(dir, "w.safetensors", rawSafeTensors(header: header, data: data))
        #expect(f.info("h")?.dtype == .f16)

        let h = try f.tensor("h")
        #expect(!h.storage.isMapped)
        let hv = h.toArray()
        #expect(hv[0] == 1 && hv[1].bitPattern == 0x8000_0000 && hv[2] == 5.960464477539063e-08)
        #expect(hv[3] == .infinity && hv[4].isNaN && hv[5] == -2)

        let b = try f.floatArray("b")
        #expect(b[0] == 1 && b[1].bitPattern == 0x8000_0000 && b[2].bitPattern == 0x0001_0000)
        #expect(b[3] == -.infinity && b[4].isNaN && b[5] == 3.140625)
        #expect(try f.tensor("b").shape == [2, 3])

        let d = try f.tensor("d").toArray()
        #expect(d[0] == 1.5 && d[1].bitPattern == 0x8000_0000 && d[2] == .infinity && d[3].bitPattern == 0)
        #expect(d[4].bitPattern == 0x3dcc_cccd && d[5].isNaN)
    }
}

@Test func misalignedF32IsCopied() throws {
    try withTempDir { dir in
        // Case 1: the data section itself starts at an odd offset (header of 9 bytes + 8 = 17).
        let values: [Float] = [1.25, -7, Float(bitPattern: 1), .greatestFiniteMagnitude]
        var header = #"{"x":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}"#
        while (8 + header.utf8.count) % 4 != 1 { header += " " }
        let f = try openRaw(dir, "m1.safetensors", rawSafeTensors(header: header, data: le(values.map(\.bitPattern))))
        let t = try f.tensor("x")
        #expect(!t.storage.isMapped, "misaligned F32 must be copied")
        #expect(t.toArray().map(bits) == values.map(bits))
        #expect(Int(bitPattern: t.data) % 4 == 0)

        // Case 2: aligned data section, but a 2-byte U8 tensor pushes the F32 tensor to offset 2.
        var header2 = #"{"pad":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},"y":{"dtype":"F32","shape":[2,2],"data_offsets":[2,18]}}"#
        while (8 + header2.utf8.count) % 8 != 0 { header2 += " " }
        let g = try openRaw(dir, "m2.safetensors", rawSafeTensors(header: header2, data: [9, 8] + le(values.map(\.bitPattern))))
        #expect(g.names == ["pad", "y"])
        let y = try g.tensor("y")
        #expect(!y.storage.isMapped)
        #expect(y.shape == [2, 2])
        #expect(y.toArray().map(bits) == values.map(bits))
        #expect(try g.int32Tensor("pad") == [9, 8])
    }
}

@Test func integerTensorsAndDtypeMismatches() throws {
    try withTempDir { dir in
        let header = """
        {"big":{"dtype":"I64","shape":[2],"data_offsets":[0,16]},\
        "ok":{"dtype":"I64","shape":[2],"data_offsets":[16,32]},\
        "f":{"dtype":"F32","shape":[1],"data_offsets":[32,36]},\
        "s":{"dtype":"I16","shape":[2],"data_offsets":[36,40]}}
        """
        let data = le([Int64(1), Int64(1) << 40]) + le([Int64(-5), Int64(Int32.max)]) + le([Float(2).bitPattern])
            + le([Int16(-300), Int16(7)])
        let f = try openRaw(dir, "i.safetensors", rawSafeTensors(header: header, data: data))
        #expect(try f.int32Tensor("ok") == [-5, Int32.max])
        #expect(try f.int32Tensor("s") == [-300, 7])
        expectError("format", ["'big'", "1099511627776", "Int32"]) { _ = try f.int32Tensor("big") }
        expectError("unsupported", ["'f'", "F32"]) { _ = try f.int32Tensor("f") }
        expectError("unsupported", ["'ok'", "I64"]) { _ = try f.tensor("ok") }
        expectError("notFound", ["'missing'", "i.safetensors"]) { _ = try f.tensor("missing") }
        expectError("notFound", ["'missing'"]) { _ = try f.floatArray("missing") }
    }
}

// MARK: hostile headers

@Test func hostileSafeTensorsHeaders() throws {
    try withTempDir { dir in
        func expectBad(_ kind: String, _ contains: [String], _ bytes: [UInt8],
                       sourceLocation: SourceLocation = #_sourceLocation) {
            expectError(kind, ["bad.safetensors"] + contains, sourceLocation: sourceLocation) {
                _ = try openRaw(dir, "bad.safetensors", bytes)
            }
        }
        let f32x4 = #""dtype":"F32","shape":[4]"#
        // Truncated: empty, and shorter than the length field.
        expectBad("format", ["truncated", "0 bytes"], [])
        expectBad("format", ["truncated", "4 bytes"], [1, 0, 0, 0])
        // Header length past the end of the file.
        expectBad("format", ["truncated", "header length 100"], rawSafeTensors(header: "{}", length: 100))
        // Huge header lengths are refused before anything else.
        expectBad("format", ["limit"], rawSafeTensors(header: "{}", length: UInt64.max))
        expectBad("format", ["limit"], rawSafeTensors(header: "{}", length: 200_000_000))
        // Offsets past the end of the data section (a "huge tensor" claim).
        expectBad("format", ["'x'", "past the end"],
                  rawSafeTensors(header: #"{"x":{\#(f32x4),"data_offsets":[0,16]}}"#, data: [UInt8](repeating: 0, count: 8)))
        expectBad("format", ["'x'", "past the end"],
                  rawSafeTensors(header: #"{"x":{"dtype":"F32","shape":[1099511627776],"data_offsets":[0,4398046511104]}}"#))
        // Overlapping ranges.
        expectBad("format", ["overlapping", "'a'", "'b'"], rawSafeTensors(
            header: #"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#,
            data: [UInt8](repeating: 0, count: 12)))
        // Shape and byte range disagree.
        expectBad("format", ["'x'", "12 bytes", "span 8"],
                  rawSafeTensors(header: #"{"x":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#, data: [UInt8](repeating: 0, count: 8)))
        // Absurd shapes: element count or byte size overflows.
        expectBad("format", ["'x'", "overflows"],
                  rawSafeTensors(header: #"{"x":{"dtype":"F32","shape":[4294967296,4294967296,4294967296],"data_offsets":[0,0]}}"#))
        expectBad("format", ["'x'", "byte size overflows"],
                  rawSafeTensors(header: #"{"x":{"dtype":"F32","shape":[2305843009213693952,2],"data_offsets":[0,0]}}"#))
        expectBad("format", ["'x'", "negative"],
                  rawSafeTensors(header: #"{"x":{"dtype":"F32","shape":[-1],"data_offsets":[0,0]}}"#))
        expectBad("format", ["'x'", "invalid data_offsets"],
                  rawSafeTensors(header: #"{"x":{"dtype":"F32","shape":[1],"data_offsets":[8,4]}}"#, data: [UInt8](repeating: 0, count: 8)))
        expectBad("format", ["'x'", "[begin, end]"],
                  rawSafeTensors(header: #"{"x":{"dtype":"F32","shape":[1],"data_offsets":[0,4,8]}}"#, data: [UInt8](repeating: 0, count: 8)))
        // Numbers beyond Int.
        expectBad("format", ["header"],
                  rawSafeTensors(header: #"{"x":{"dtype":"F32","shape":[1e30],"data_offsets":[0,0]}}"#))
        expectBad("format", ["header"],
                  rawSafeTensors(header: #"{"x":{"dtype":"F32","shape":[99999999999999999999],"data_offsets":[0,0]}}"#))
        // Unknown dtype.
        expectBad("unsupported", ["'x'", "F8_E4M3"],
                  rawSafeTensors(header: #"{"x":{"dtype":"F8_E4M3","shape":[1],"data_offsets":[0,1]}}"#, data: [0]))
        // Malformed JSON and JSON of the wrong shape.
        expectBad("format", ["invalid JSON"], rawSafeTensors(header: "{not json"))
        expectBad("format", ["header"], rawSafeTensors(header: "[1, 2, 3]"))
        expectBad("format", ["header"], rawSafeTensors(header: "\"text\""))
        expectBad("format", ["header"], rawSafeTensors(header: ""))
        expectBad("format", ["dtype"], rawSafeTensors(header: #"{"x":{"shape":[1],"data_offsets":[0,4]}}"#, data: [0, 0, 0, 0]))
        expectBad("format", ["__metadata__"], rawSafeTensors(header: #"{"__metadata__":{"n":1}}"#))
        expectBad("format", ["'x'"], rawSafeTensors(header: #"{"x":5}"#))

        // The checks accept what they should: zero-size tensors share an offset, trailing padding is fine.
        let ok = try openRaw(dir, "ok.safetensors", rawSafeTensors(
            header: #"{"e1":{"dtype":"F32","shape":[0],"data_offsets":[0,0]},"e2":{"dtype":"F16","shape":[3,0],"data_offsets":[0,0]},"v":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}}  "#,
            data: [1, 2, 0, 0]))
        #expect(ok.names == ["e1", "e2", "v"])
        #expect(try ok.floatArray("e2").isEmpty)
    }
}

// MARK: atomic files and helpers

private struct Boom: Error, Equatable {}

@Test func atomicWriteKeepsOldFileWhenClosureThrows() throws {
    try withTempDir { dir in
        let path = dir + "/data.bin"
        try writeFileAtomically(path: path, bytes: Array("old contents".utf8))
        #expect(try bytesOf(path) == Array("old contents".utf8))

        #expect(throws: Boom.self) {
            try writeFileAtomically(path: path) { fd in
                try writeAll(fd, Array("partial new".utf8))
                throw Boom()
            }
        }
        #expect(try bytesOf(path) == Array("old contents".utf8))
        #expect(listDirectory(dir) == ["data.bin"], "no temporary file may remain")

        // A failing safetensors write (validation) also leaves the old file alone.
        #expect(throws: PEFTKitError.self) {
            try SafeTensorsWriter.write(path: path, tensors: [(name: "x", shape: [2], data: [1])])
        }
        #expect(try bytesOf(path) == Array("old contents".utf8))

        // Success replaces the content and keeps the permission bits.
        chmod(path, 0o600)
        try writeFileAtomically(path: path, bytes: Array("new".utf8))
        #expect(try bytesOf(path) == Array("new".utf8))
        var st = stat()
        #expect(stat(path, &st) == 0 && st.st_mode & 0o777 == 0o600)
        #expect(listDirectory(dir) == ["data.bin"])
    }
}

@Test func atomicWriteFailuresAreIOErrorsAndCleanUp() throws {
    try withTempDir { dir in
        // The target is a directory: the rename fails.
        try createDirectory(path: dir + "/target")
        expectError("io", ["target"]) { try writeFileAtomically(path: dir + "/target", bytes: [1, 2, 3]) }
        #expect(listDirectory(dir) == ["target"])
        // The directory does not exist.
        expectError("io", ["missing/x.bin"]) { try writeFileAtomically(path: dir + "/missing/x.bin", bytes: [1]) }
        // Paths that do not name a file.
        expectError("invalidArgument", []) { try writeFileAtomically(path: "", bytes: [1]) }
        expectError("invalidArgument", []) { try writeFileAtomically(path: dir + "/", bytes: [1]) }
        // A relative path without a directory part is split correctly.
        for (path, directory, name) in [("name.bin", ".", "name.bin"), ("/x.bin", "/", "x.bin"), ("a/b/c.bin", "a/b", "c.bin")] {
            let split = try splitPath(path)
            #expect(split.directory == directory && split.name == name, "\(path)")
        }
    }
}

@Test func createDirectoryAndReadWholeFile() throws {
    try withTempDir { dir in
        let deep = dir + "/a/b//c/"
        try createDirectory(path: deep)
        try createDirectory(path: deep)  // existing is fine
        #expect(pathKind(dir + "/a/b/c") == .directory)
        try writeFileAtomically(path: dir + "/a/file", bytes: Array(repeating: 7, count: 100))
        expectError("io", ["not a directory"]) { try createDirectory(path: dir + "/a/file/sub") }

        #expect(try readWholeFile(path: dir + "/a/file", maxBytes: 100) == Array(repeating: 7, count: 100))
        expectError("format", ["100 bytes", "99"]) { _ = try readWholeFile(path: dir + "/a/file", maxBytes: 99) }
        expectError("io", ["nothing-here"]) { _ = try readWholeFile(path: dir + "/nothing-here") }
        expectError("io", ["not a regular file"]) { _ = try readWholeFile(path: dir + "/a") }
        try writeFileAtomically(path: dir + "/empty", bytes: [])
        #expect(try readWholeFile(path: dir + "/empty") == [])
    }
}

// MARK: Hugging Face config.json

private let gpt2JSON = """
{
  "activation_function": "gelu_new",
  "architectures": ["GPT2LMHeadModel"],
  "attn_pdrop": 0.1,
  "bos_token_id": 50256,
  "eos_token_id": 50256,
  "layer_norm_epsilon": 1e-05,
  "model_type": "gpt2",
  "n_ctx": 1024,
  "n_embd": 64,
  "n_head": 4,
  "n_inner": null,
  "n_layer": 2,
  "n_positions": 128,
  "reorder_and_upcast_attn": false,
  "scale_attn_by_inverse_layer_idx": false,
  "scale_attn_weights": true,
  "task_specific_params": {"text-generation": {"do_sample": true, "max_length": 50}},
  "vocab_size": 100
}
"""

private let smolLMJSON = """
{
  "architectures": ["LlamaForCausalLM"],
  "attention_bias": false,
  "attention_dropout": 0.0,
  "bos_token_id": 1,
  "eos_token_id": 2,
  "head_dim": 64,
  "hidden_act": "silu",
  "hidden_size": 576,
  "initializer_range": 0.041666666666666664,
  "intermediate_size": 1536,
  "max_position_embeddings": 8192,
  "mlp_bias": false,
  "model_type": "llama",
  "num_attention_heads": 9,
  "num_hidden_layers": 30,
  "num_key_value_heads": 3,
  "pretraining_tp": 1,
  "rms_norm_eps": 1e-05,
  "rope_scaling": null,
  "rope_theta": 100000,
  "tie_word_embeddings": true,
  "torch_dtype": "bfloat16",
  "use_cache": true,
  "vocab_size": 49152
}
"""

private let qwen2JSON = """
{
  "architectures": ["Qwen2ForCausalLM"],
  "hidden_act": "silu",
  "hidden_size": 896,
  "intermediate_size": 4864,
  "max_position_embeddings": 32768,
  "max_window_layers": 24,
  "model_type": "qwen2",
  "num_attention_heads": 14,
  "num_hidden_layers": 24,
  "num_key_value_heads": 2,
  "rms_norm_eps": 1e-06,
  "rope_theta": 1000000.0,
  "sliding_window": 4096,
  "use_sliding_window": false,
  "vocab_size": 151936
}
"""

private func config(_ json: String) throws -> ModelConfig { try modelConfig(fromJSON: Array(json.utf8)) }

/// `json` with `"key": ...` lines edited: the value replaced, or the line removed when `value` is nil.
private func edited(_ json: String, _ key: String, _ value: String?) -> String {
    var lines = json.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
    if let i = lines.firstIndex(where: { $0.trimmingPrefix(while: { $0 == " " }).hasPrefix("\"\(key)\"") }) {
        if let value { lines[i] = "  \"\(key)\": \(value)," } else { lines.remove(at: i) }
    } else if let value {
        lines.insert("  \"\(key)\": \(value),", at: 1)
    }
    return lines.joined(separator: "\n")
}

@Test func hfConfigGPT2() throws {
    let c = try config(gpt2JSON)
    #expect(c == ModelConfig(architecture: .gpt2, vocabSize: 100, hiddenSize: 64, numLayers: 2, numHeads: 4,
                             intermediateSize: 256, maxPositions: 128, normEps: 1e-5))
    #expect(c.intermediateSize == 256 && c.headDim == 16 && c.tieWordEmbeddings && c.qkvBias && c.mlpBias)
    #expect(try config(edited(gpt2JSON, "n_inner", "100")).intermediateSize == 100)
    #expect(try config(edited(gpt2JSON, "n_positions", nil)).maxPositions == 1024)  // falls back to n_ctx
    #expect(try config(edited(gpt2JSON, "activation_function", "\"gelu_pytorch_tanh\"")).hiddenSize == 64)
    expectError("unsupported", ["relu"]) { _ = try config(edited(gpt2JSON, "activation_function", "\"relu\"")) }
    expectError("unsupported", ["scale_attn_by_inverse_layer_idx"]) {
        _ = try config(edited(gpt2JSON, "scale_attn_by_inverse_layer_idx", "true"))
    }
    expectError("unsupported", ["tie_word_embeddings"]) { _ = try config(edited(gpt2JSON, "tie_word_embeddings", "false")) }
    expectError("format", ["missing", "n_embd"]) { _ = try config(edited(gpt2JSON, "n_embd", nil)) }
    expectError("format", ["n_embd", "-64"]) { _ = try config(edited(gpt2JSON, "n_embd", "-64")) }
    expectError("format", ["n_embd", "9223372036854775807"]) { _ = try config(edited(gpt2JSON, "n_embd", "9223372036854775807")) }
    expectError("format", ["'n_embd'", "wrong type"]) { _ = try config(edited(gpt2JSON, "n_embd", "\"64\"")) }
    expectError("format", ["hidden_size = heads"]) { _ = try config(edited(gpt2JSON, "n_head", "5")) }
}

@Test func hfConfigLlama() throws {
    let c = try config(smolLMJSON)
    #expect(c.architecture == .llama)
    #expect(c.vocabSize == 49152 && c.hiddenSize == 576 && c.numLayers == 30 && c.intermediateSize == 1536)
    #expect(c.numHeads == 9 && c.numKVHeads == 3 && c.headDim == 64 && c.maxPositions == 8192)
    #expect(c.normEps == 1e-5 && c.ropeTheta == 100000 && c.tieWordEmbeddings)
    #expect(!c.qkvBias && !c.outputBias && !c.mlpBias)

    let defaults = try config(edited(edited(edited(edited(smolLMJSON, "num_key_value_heads", nil), "head_dim", nil),
                                            "tie_word_embeddings", nil), "rope_theta", nil))
    #expect(defaults.numKVHeads == 9 && defaults.headDim == 64 && !defaults.tieWordEmbeddings && defaults.ropeTheta == 10000)

    let biased = try config(edited(edited(smolLMJSON, "attention_bias", "true"), "mlp_bias", "true"))
    #expect(biased.qkvBias && biased.outputBias && biased.mlpBias)

    let v5 = try config(edited(edited(smolLMJSON, "rope_theta", nil), "rope_parameters",
                               #"{"rope_theta": 500000.0, "rope_type": "default"}"#))
    #expect(v5.ropeTheta == 500000)

    expectError("unsupported", ["rope_scaling", "llama3"]) {
        _ = try config(edited(smolLMJSON, "rope_scaling", #"{"factor": 8.0, "rope_type": "llama3"}"#))
    }
    expectError("unsupported", ["rope_scaling", "linear"]) {
        _ = try config(edited(smolLMJSON, "rope_scaling", #"{"factor": 2.0, "type": "linear"}"#))
    }
    expectError("unsupported", ["rope_parameters", "yarn"]) {
        _ = try config(edited(smolLMJSON, "rope_parameters", #"{"rope_theta": 1e4, "rope_type": "yarn"}"#))
    }
    expectError("unsupported", ["gelu"]) { _ = try config(edited(smolLMJSON, "hidden_act", "\"gelu\"")) }
    expectError("format", ["num_key_value_heads", "divide"]) { _ = try config(edited(smolLMJSON, "num_key_value_heads", "2")) }
    expectError("format", ["missing", "intermediate_size"]) { _ = try config(edited(smolLMJSON, "intermediate_size", nil)) }
}

@Test func hfConfigQwen2AndMistral() throws {
    let q = try config(qwen2JSON)
    #expect(q.architecture == .llama && q.hiddenSize == 896 && q.numKVHeads == 2 && q.headDim == 64)
    #expect(q.qkvBias && !q.outputBias && !q.mlpBias)
    #expect(!q.tieWordEmbeddings && q.ropeTheta == 1_000_000 && q.normEps == 1e-6 && q.maxPositions == 32768)
    #expect(try config(edited(qwen2JSON, "use_sliding_window", "true")).maxPositions == 4096)

    let mistral = edited(edited(edited(qwen2JSON, "model_type", "\"mistral\""), "use_sliding_window", nil),
                         "sliding_window", "2048")
    let m = try config(mistral)
    #expect(!m.qkvBias && !m.outputBias && m.maxPositions == 2048)
    #expect(try config(edited(mistral, "sliding_window", "null")).maxPositions == 32768)
}

@Test func hfConfigRejectsUnknownAndMalformed() throws {
    expectError("unsupported", ["'t5'"]) { _ = try config(edited(gpt2JSON, "model_type", "\"t5\"")) }
    expectError("format", ["model_type"]) { _ = try config(edited(gpt2JSON, "model_type", nil)) }
    expectError("format", ["config.json", "invalid JSON"]) { _ = try config("{\"model_type\": ") }
    expectError("format", ["config.json"]) { _ = try config("[]") }
    expectError("format", ["my.json"]) { _ = try modelConfig(fromJSON: Array("42".utf8), source: "my.json") }
}

@Test func configJSONRoundTrips() throws {
    let gpt2 = try config(gpt2JSON)
    let gpt2Text = String(decoding: try configJSON(for: gpt2), as: UTF8.self)
    #expect(gpt2Text.contains("\"GPT2LMHeadModel\""))
    #expect(gpt2Text.contains("1e-05"))
    #expect(try config(gpt2Text) == gpt2)

    let llama = try config(smolLMJSON)
    let llamaText = String(decoding: try configJSON(for: llama), as: UTF8.self)
    #expect(llamaText.contains("\"LlamaForCausalLM\"") && llamaText.contains("\"llama\""))
    #expect(try config(llamaText) == llama)

    let biased = try config(edited(edited(smolLMJSON, "attention_bias", "true"), "mlp_bias", "true"))
    #expect(try config(String(decoding: try configJSON(for: biased), as: UTF8.self)) == biased)

    let qwen = try config(qwen2JSON)
    let qwenText = String(decoding: try configJSON(for: qwen), as: UTF8.self)
    #expect(qwenText.contains("\"Qwen2ForCausalLM\""))
    #expect(try config(qwenText) == qwen)

    var odd = llama
    odd.qkvBias = false
    odd.outputBias = true
    expectError("unsupported", []) { _ = try configJSON(for: odd) }
    var invalid = llama
    invalid.numKVHeads = 2
    expectError("invalidArgument", []) { _ = try configJSON(for: invalid) }
}

// MARK: model folders

private func writeTiny(_ path: String, _ tensors: [(name: String, shape: [Int], data: [Float])]) throws {
    try SafeTensorsWriter.write(path: path, tensors: tensors)
}

@Test func weightSetSingleFileAndLoadHFFolder() throws {
    try withTempDir { dir in
        try writeTiny(dir + "/model.safetensors", [(name: "w", shape: [2], data: [1, 2]), (name: "b", shape: [1], data: [3])])
        let ws = try WeightSet(folder: dir)
        #expect(ws.names == ["b", "w"])
        #expect(ws.has("w") && !ws.has("x"))
        #expect(try ws.tensor("w").toArray() == [1, 2])
        #expect(ws.info("b")?.shape == [1])
        expectError("notFound", ["'x'", dir]) { _ = try ws.tensor("x") }

        expectError("io", ["config.json", dir]) { _ = try loadHFFolder(path: dir) }
        try writeFileAtomically(path: dir + "/config.json", bytes: Array(gpt2JSON.utf8))
        let (cfg, weights) = try loadHFFolder(path: dir)
        #expect(cfg.hiddenSize == 64 && cfg.architecture == .gpt2)
        #expect(try weights.tensor("b").toArray() == [3])

        try writeFileAtomically(path: dir + "/config.json", bytes: Array(#"{"model_type": "gpt2", "n_embd": 64}"#.utf8))
        expectError("format", [dir + "/config.json", "missing"]) { _ = try loadHFFolder(path: dir) }
    }
}

@Test func weightSetShardedIndex() throws {
    try withTempDir { dir in
        try writeTiny(dir + "/model-00001-of-00002.safetensors", [(name: "a", shape: [2], data: [1, 2]),
                                                                  (name: "stray", shape: [1], data: [9])])
        try writeTiny(dir + "/model-00002-of-00002.safetensors", [(name: "b", shape: [1, 3], data: [4, 5, 6])])
        let index = """
        {"metadata": {"total_size": 20},
         "weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}
        """
        try writeFileAtomically(path: dir + "/model.safetensors.index.json", bytes: Array(index.utf8))
        let ws = try WeightSet(folder: dir)
        #expect(ws.names == ["a", "b"])
        #expect(ws.files.count == 2)
        #expect(try ws.tensor("a").toArray() == [1, 2])
        #expect(try ws.tensor("b").shape == [1, 3])
        #expect(try ws.tensor("b").toArray() == [4, 5, 6])
        #expect(!ws.has("stray"), "only tensors named by the index are exposed")
    }
}

@Test func weightSetRejectsHostileIndexes() throws {
    try withTempDir { dir in
        let model = dir + "/model"
        try createDirectory(path: model)
        try writeTiny(dir + "/outside.safetensors", [(name: "a", shape: [1], data: [1])])
        try writeTiny(model + "/s1.safetensors", [(name: "a", shape: [1], data: [1])])
        let indexPath = model + "/model.safetensors.index.json"
        func withIndex(_ map: String, sourceLocation: SourceLocation = #_sourceLocation,
                       expect kind: String, _ contains: [String]) throws {
            try writeFileAtomically(path: indexPath, bytes: Array(#"{"weight_map": \#(map)}"#.utf8))
            expectError(kind, contains, sourceLocation: sourceLocation) { _ = try WeightSet(folder: model) }
        }
        try withIndex(#"{"a": "../outside.safetensors"}"#, expect: "format", ["../outside.safetensors", indexPath])
        try withIndex(#"{"a": "/etc/passwd"}"#, expect: "format", ["/etc/passwd"])
        try withIndex(#"{"a": ".."}"#, expect: "format", ["'..'"])
        try withIndex(#"{"a": ""}"#, expect: "format", ["plain file name"])
        try withIndex(#"{"a": "s2.safetensors"}"#, expect: "notFound", ["s2.safetensors"])
        try withIndex(#"{"zz": "s1.safetensors"}"#, expect: "format", ["'zz'", "s1.safetensors"])
        try withIndex(#"["a"]"#, expect: "format", [indexPath])

        try writeFileAtomically(path: indexPath, bytes: Array("{".utf8))
        expectError("format", [indexPath]) { _ = try WeightSet(folder: model) }

        try writeFileAtomically(path: indexPath, bytes: Array(#"{"weight_map": {"a": "s1.safetensors"}}"#.utf8))
        #expect(try WeightSet(folder: model).tensor("a").toArray() == [1])

        let empty = dir + "/empty"
        try createDirectory(path: empty)
        expectError("notFound", [empty, "model.safetensors"]) { _ = try WeightSet(folder: empty) }
        expectError("notFound", ["does not exist"]) { _ = try WeightSet(folder: dir + "/nope") }
        try writeFileAtomically(path: empty + "/pytorch_model.bin", bytes: [0])
        expectError("unsupported", ["pytorch_model.bin"]) { _ = try WeightSet(folder: empty) }
    }
}

