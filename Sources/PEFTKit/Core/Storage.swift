#if canImport(Glibc)
import Glibc
#endif

/// A block of memory holding tensor data: either allocated by PEFTKit (64-byte aligned, zeroed)
/// or a read-only memory map of a file. Freed or unmapped when the last reference goes.
public final class Storage: @unchecked Sendable {
    public let base: UnsafeMutableRawPointer
    public let byteCount: Int
    public let isMapped: Bool

    private init(base: UnsafeMutableRawPointer, byteCount: Int, isMapped: Bool) {
        self.base = base
        self.byteCount = byteCount
        self.isMapped = isMapped
    }

    deinit {
        if isMapped {
            munmap(base, byteCount)
        } else {
            free(base)
        }
    }

    /// Allocates `byteCount` zeroed bytes aligned to 64.
    public static func allocate(bytes byteCount: Int) throws -> Storage {
        guard byteCount >= 0 else { throw PEFTKitError.outOfMemory("negative allocation size") }
        var p: UnsafeMutableRawPointer? = nil
        let n = max(byteCount, 64)
        let rc = posix_memalign(&p, 64, n)
        guard rc == 0, let ptr = p else {
            throw PEFTKitError.outOfMemory("could not allocate \(byteCount) bytes")
        }
        memset(ptr, 0, n)
        return Storage(base: ptr, byteCount: byteCount, isMapped: false)
    }

    /// Allocates `byteCount` zeroed bytes as an anonymous private mapping (page aligned): the kernel supplies
    /// zero pages on first touch, so a buffer costs resident memory only for the pages written. For large work
    /// buffers that some passes never use.
    public static func allocateMapped(bytes byteCount: Int) throws -> Storage {
        guard byteCount >= 0 else { throw PEFTKitError.outOfMemory("negative allocation size") }
        let n = max(byteCount, 1)
        guard let p = mmap(nil, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0), p != MAP_FAILED else {
            throw PEFTKitError.outOfMemory("could not map \(byteCount) bytes: \(errnoString())")
        }
        return Storage(base: p, byteCount: n, isMapped: true)
    }

    /// Allocates room for `count` zeroed floats, checking the byte size for overflow.
    public static func allocate(floats count: Int) throws -> Storage {
        let (bytes, overflow) = count.multipliedReportingOverflow(by: MemoryLayout<Float>.stride)
        guard count >= 0, !overflow else { throw PEFTKitError.outOfMemory("allocation of \(count) floats overflows") }
        return try allocate(bytes: bytes)
    }

    /// Maps a whole file read-only. Empty files map to a 1-byte allocation.
    public static func map(path: String) throws -> Storage {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw PEFTKitError.io("cannot open '\(path)': \(errnoString())") }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw PEFTKitError.io("cannot stat '\(path)': \(errnoString())") }
        guard (st.st_mode & S_IFMT) == S_IFREG else { throw PEFTKitError.io("'\(path)' is not a regular file") }
        let size = Int(st.st_size)
        if size == 0 { return try allocate(bytes: 0) }
        guard let p = mmap(nil, size, PROT_READ, MAP_PRIVATE, fd, 0), p != MAP_FAILED else {
            throw PEFTKitError.io("cannot map '\(path)': \(errnoString())")
        }
        return Storage(base: p, byteCount: size, isMapped: true)
    }

    public var floats: UnsafeMutablePointer<Float> { base.assumingMemoryBound(to: Float.self) }
}

func errnoString() -> String {
    String(cString: strerror(errno))
}

/// A dense row-major fp32 tensor: a pointer into a `Storage` plus a shape.
/// Tensors of a mapped file are read-only; PEFTKit never writes base weights.
public struct Tensor: @unchecked Sendable {
    public let shape: [Int]
    public let data: UnsafeMutablePointer<Float>
    public let storage: Storage

    public init(shape: [Int], data: UnsafeMutablePointer<Float>, storage: Storage) {
        self.shape = shape
        self.data = data
        self.storage = storage
    }

    /// A new zeroed tensor of the given shape.
    public init(zeros shape: [Int]) throws {
        var n = 1
        for d in shape {
            guard d >= 0 else { throw PEFTKitError.invalidArgument("negative dimension in shape \(shape)") }
            let (m, o) = n.multipliedReportingOverflow(by: d)
            guard !o else { throw PEFTKitError.outOfMemory("shape \(shape) overflows") }
            n = m
        }
        let s = try Storage.allocate(floats: n)
        self.init(shape: shape, data: s.floats, storage: s)
    }

    public var count: Int { shape.reduce(1, *) }
    public var buffer: UnsafeMutableBufferPointer<Float> { UnsafeMutableBufferPointer(start: data, count: count) }
    public func toArray() -> [Float] { Array(UnsafeBufferPointer(start: data, count: count)) }
}
