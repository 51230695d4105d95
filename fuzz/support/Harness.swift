// The part every fuzz target shares: libFuzzer's two entry points, forwarded to the `Target` that the
// target's own file (fuzz/targets/<name>.swift) defines, plus small file helpers.
//
// A target file declares
//
//     enum Target {
//         static func setUp() throws                       // once per process (temp folders, a model, ...)
//         static func seeds() throws -> [String: [UInt8]]  // named seed inputs: valid files and edge cases
//         static func run(_ input: [UInt8])                // one input; must not trap, whatever the bytes
//     }
//
// `PEFTKIT_FUZZ_WRITE_SEEDS=<dir> ./fuzz-<name> -runs=0` writes the seeds into <dir> (fuzz/build.sh --seeds).

@testable import PEFTKit
#if canImport(Glibc)
import Glibc
#endif

@_cdecl("LLVMFuzzerInitialize")
public func fuzzInitialize(_ argc: UnsafeMutablePointer<CInt>?,
                           _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>?) -> CInt {
    setNumThreads(1)
    limitMainThreadStack()
    do {
        try Target.setUp()
        if let out = getenv("PEFTKIT_FUZZ_WRITE_SEEDS") {
            let dir = String(cString: out)
            try createDirectory(path: dir)
            for (name, bytes) in try Target.seeds() { try writeFileAtomically(path: dir + "/" + name, bytes: bytes) }
        }
    } catch {
        fputs("fuzz target set-up failed: \(error)\n", stderr)
        abort()
    }
    return 0
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzTestOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let input = size > 0 && data != nil ? Array(UnsafeBufferPointer(start: data, count: size)) : []
    Target.run(input)
    return 0
}

/// Stack available to each input (PEFTKIT_FUZZ_STACK_KB, default 512): a host may call PEFTKit from a worker
/// thread with a small stack, so unbounded recursion on hostile input must show up as a crash here rather than
/// hide in the main thread's 8 MB. Inputs run on the main thread, whose growth the stack rlimit caps (Linux checks
/// it whenever the stack grows; threads created later keep the size they were given at process start).
private let fuzzStackBytes: Int = {
    if let v = getenv("PEFTKIT_FUZZ_STACK_KB"), let kb = Int(String(cString: v)), kb > 0 { return kb << 10 }
    return 512 << 10
}()

private func limitMainThreadStack() {
    var rl = rlimit()
    guard getrlimit(Int32(RLIMIT_STACK.rawValue), &rl) == 0 else { return }
    rl.rlim_cur = rlim_t(fuzzStackBytes)
    _ = setrlimit(Int32(RLIMIT_STACK.rawValue), &rl)
}

/// Folders made by `Fuzz.tempDir()`, removed when the process exits normally.
nonisolated(unsafe) private var tempDirs: [String] = []

enum Fuzz {
    /// A new empty folder under /tmp.
    static func tempDir() -> String {
        var template = Array("/tmp/peftkit-fuzz-XXXXXX".utf8CString)
        let p = template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }
        guard let p else { fatalError("mkdtemp failed") }
        let dir = String(cString: p)
        if tempDirs.isEmpty { atexit { for d in tempDirs { removeTree(d) } } }
        tempDirs.append(dir)
        return dir
    }

    /// Writes `bytes` to `path` (plainly: faster than the atomic writer, and the target owns the folder).
    static func write(_ path: String, _ bytes: [UInt8]) {
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else { fatalError("cannot write \(path)") }
        bytes.withUnsafeBytes { b in
            var off = 0
            while off < b.count {
                let n = Glibc.write(fd, b.baseAddress! + off, b.count - off)
                if n <= 0 { break }
                off += n
            }
        }
        close(fd)
    }

    static func read(_ path: String) throws -> [UInt8] { try readWholeFile(path: path, maxBytes: 1 << 30) }

    /// A safetensors file built by hand: `header` is the JSON text, `data` the data section.
    static func safetensors(header: String, data: [UInt8] = [], declaredLength: UInt64? = nil) -> [UInt8] {
        let h = Array(header.utf8)
        var len = (declaredLength ?? UInt64(h.count)).littleEndian
        return withUnsafeBytes(of: &len) { Array($0) } + h + data
    }
}

/// rm -r for the folders the targets make (two levels are enough for them).
private func removeTree(_ path: String) {
    for e in listDirectory(path) {
        let p = path + "/" + e
        if pathKind(p) == .directory { removeTree(p) } else { unlink(p) }
    }
    rmdir(path)
}
