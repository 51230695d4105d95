#if canImport(Glibc)
import Glibc
#endif

// MPI for the CLI, opened at run time (as MLX does): the CLI and libpeftkit.so have no link-time dependency on
// libmpi, so they run single-process where MPI is not installed. Only a launch by `mpirun` with more than one
// process needs the library.
//
// Supported: Open MPI (Debian's openmpi-bin/libopenmpi-dev, libmpi.so.40). Its handles (MPI_COMM_WORLD,
// MPI_FLOAT, MPI_SUM, ...) are addresses of global objects (`ompi_mpi_comm_world`, ...), looked up with dlsym.
// MPICH and its ABI relatives (Intel MPI) use integer handles and other function signatures: a library without
// `ompi_mpi_comm_world` is refused with a message rather than called with the wrong types.

/// Who launched us: ranks and world size from the launcher's environment, before any MPI call.
struct MPILaunch {
    let size: Int
    let rank: Int
    let localSize: Int

    /// Open MPI sets OMPI_COMM_WORLD_SIZE/RANK, MPICH's Hydra and Slurm's PMI set PMI_SIZE/PMI_RANK.
    static func fromEnvironment() -> MPILaunch {
        func int(_ name: String) -> Int? { getenv(name).flatMap { Int(String(cString: $0)) } }
        let size = int("OMPI_COMM_WORLD_SIZE") ?? int("PMI_SIZE") ?? int("PMIX_SIZE") ?? 1
        let rank = int("OMPI_COMM_WORLD_RANK") ?? int("PMI_RANK") ?? int("PMIX_RANK") ?? 0
        let local = int("OMPI_COMM_WORLD_LOCAL_SIZE") ?? int("MPI_LOCALNRANKS") ?? size
        return MPILaunch(size: max(1, size), rank: rank, localSize: max(1, local))
    }
}

/// The few MPI calls data-parallel training needs, bound from libmpi at run time.
final class MPILibrary: @unchecked Sendable {
    typealias Handle = UnsafeMutableRawPointer
    private typealias InitThreadFn = @convention(c) (UnsafeMutablePointer<Int32>?, UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>?, Int32, UnsafeMutablePointer<Int32>?) -> Int32
    private typealias CommIntFn = @convention(c) (Handle, UnsafeMutablePointer<Int32>) -> Int32
    private typealias AllreduceFn = @convention(c) (UnsafeRawPointer?, UnsafeMutableRawPointer?, Int32, Handle, Handle, Handle) -> Int32
    private typealias GatherFn = @convention(c) (UnsafeRawPointer?, Int32, Handle, UnsafeMutableRawPointer?, Int32, Handle, Handle) -> Int32
    private typealias BcastFn = @convention(c) (UnsafeMutableRawPointer?, Int32, Handle, Int32, Handle) -> Int32
    private typealias CommFn = @convention(c) (Handle) -> Int32
    private typealias AbortFn = @convention(c) (Handle, Int32) -> Int32
    private typealias VoidFn = @convention(c) () -> Int32
    private typealias SetErrhandlerFn = @convention(c) (Handle, Handle) -> Int32
    private typealias ErrorStringFn = @convention(c) (Int32, UnsafeMutablePointer<CChar>, UnsafeMutablePointer<Int32>) -> Int32

    let path: String
    let commWorld: Handle, byte: Handle, int32: Handle, float: Handle, double: Handle, uint64: Handle, sum: Handle
    private let errorsReturn: Handle
    private let initThread: InitThreadFn, commSize: CommIntFn, commRank: CommIntFn
    private let allreduceFn: AllreduceFn, allgatherFn: GatherFn, alltoallFn: GatherFn, bcastFn: BcastFn
    private let barrierFn: CommFn, abortFn: AbortFn, finalizeFn: VoidFn
    private let setErrhandler: SetErrhandlerFn, errorString: ErrorStringFn

    /// PEFTKIT_LIBMPI, else libmpi.so.40 (Open MPI 3-5), else libmpi.so.
    static func open() throws -> MPILibrary {
        var candidates = ["libmpi.so.40", "libmpi.so"]
        if let p = getenv("PEFTKIT_LIBMPI").map({ String(cString: $0) }), !p.isEmpty { candidates = [p] }
        var errors: [String] = []
        for name in candidates {
            // RTLD_GLOBAL: Open MPI's components (dlopen'd plugins) resolve libmpi's symbols globally.
            if let h = dlopen(name, RTLD_NOW | RTLD_GLOBAL) { return try MPILibrary(handle: h, path: name) }
            errors.append(dlerror().map { String(cString: $0) } ?? name)
        }
        throw CLIError("""
            launched by mpirun with several processes, but libmpi could not be opened (\(errors.joined(separator: "; "))). \
            Install Open MPI (Debian/Ubuntu: apt-get install openmpi-bin libopenmpi-dev) or set PEFTKIT_LIBMPI to libmpi.so's path
            """)
    }

    private init(handle h: UnsafeMutableRawPointer, path: String) throws {
        self.path = path
        func sym(_ name: String) throws -> UnsafeMutableRawPointer {
            guard let p = dlsym(h, name) else {
                throw CLIError("'\(path)' has no symbol \(name)" + (name.hasPrefix("ompi_")
                    ? ": it is not Open MPI (MPICH-style libraries use integer handles, which peftkit-cli does not support yet); run with Open MPI's mpirun and libmpi.so.40"
                    : ""))
            }
            return p
        }
        func fn<F>(_ name: String, _: F.Type) throws -> F { unsafeBitCast(try sym(name), to: F.self) }
        commWorld = try sym("ompi_mpi_comm_world")
        byte = try sym("ompi_mpi_byte")
        int32 = try sym("ompi_mpi_int")
        float = try sym("ompi_mpi_float")
        double = try sym("ompi_mpi_double")
        uint64 = try sym("ompi_mpi_uint64_t")
        sum = try sym("ompi_mpi_op_sum")
        errorsReturn = try sym("ompi_mpi_errors_return")
        initThread = try fn("MPI_Init_thread", InitThreadFn.self)
        commSize = try fn("MPI_Comm_size", CommIntFn.self)
        commRank = try fn("MPI_Comm_rank", CommIntFn.self)
        allreduceFn = try fn("MPI_Allreduce", AllreduceFn.self)
        allgatherFn = try fn("MPI_Allgather", GatherFn.self)
        alltoallFn = try fn("MPI_Alltoall", GatherFn.self)
        bcastFn = try fn("MPI_Bcast", BcastFn.self)
        barrierFn = try fn("MPI_Barrier", CommFn.self)
        abortFn = try fn("MPI_Abort", AbortFn.self)
        finalizeFn = try fn("MPI_Finalize", VoidFn.self)
        setErrhandler = try fn("MPI_Comm_set_errhandler", SetErrhandlerFn.self)
        errorString = try fn("MPI_Error_string", ErrorStringFn.self)
    }

    private func check(_ rc: Int32, _ what: String) throws {
        guard rc != 0 else { return }
        var buf = [CChar](repeating: 0, count: 512)
        var n: Int32 = 0
        _ = errorString(rc, &buf, &n)
        throw CLIError("\(what) failed: \(String(decoding: buf.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)) (error \(rc)); another rank probably died")
    }

    /// MPI_Init_thread(FUNNELED): only the main thread calls MPI; the watchdog thread never does. Errors on
    /// MPI_COMM_WORLD return codes (MPI_ERRORS_RETURN) so that the CLI can say what failed.
    func initialize() throws -> (size: Int, rank: Int) {
        var provided: Int32 = 0
        try check(initThread(nil, nil, 1, &provided), "MPI_Init_thread")
        try check(setErrhandler(commWorld, errorsReturn), "MPI_Comm_set_errhandler")
        var s: Int32 = 0, r: Int32 = 0
        try check(commSize(commWorld, &s), "MPI_Comm_size")
        try check(commRank(commWorld, &r), "MPI_Comm_rank")
        return (Int(s), Int(r))
    }

    func allreduceSum(_ buf: UnsafeMutableRawPointer, count: Int, type: Handle) throws {
        // MPI_IN_PLACE is ((void *) 1) in Open MPI.
        try check(allreduceFn(UnsafeRawPointer(bitPattern: 1), buf, Int32(count), type, sum, commWorld), "MPI_Allreduce")
    }

    func allgather(_ send: UnsafeRawPointer, _ recv: UnsafeMutableRawPointer, count: Int, type: Handle) throws {
        try check(allgatherFn(send, Int32(count), type, recv, Int32(count), type, commWorld), "MPI_Allgather")
    }

    func alltoall(_ send: UnsafeRawPointer, _ recv: UnsafeMutableRawPointer, count: Int, type: Handle) throws {
        try check(alltoallFn(send, Int32(count), type, recv, Int32(count), type, commWorld), "MPI_Alltoall")
    }

    func bcast(_ buf: UnsafeMutableRawPointer, count: Int, type: Handle, root: Int = 0) throws {
        try check(bcastFn(buf, Int32(count), type, Int32(root), commWorld), "MPI_Bcast")
    }

    func barrier() throws { try check(barrierFn(commWorld), "MPI_Barrier") }

    func abort(_ code: Int32) { _ = abortFn(commWorld, code) }

    func finalize() { _ = finalizeFn() }
}
