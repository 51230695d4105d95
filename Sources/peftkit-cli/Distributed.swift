import ArgumentParser
import PEFTKit
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

// Data-parallel training and evaluation under `mpirun` (docs/DISTRIBUTED.md).
//
// Every rank reads the same data and draws the same seeded batch order, so every rank knows the whole global
// batch of each step (and its count of counted tokens: no collective is needed for it). Rank r of N trains on
// the contiguous rows [r·B/N, (r+1)·B/N) of the global batch of B rows: when N does not divide B, the first
// ranks get one row fewer than the last ones; every rank has at least one row (B >= N is checked at start).
// Each rank computes the gradient of Σ loss(its rows) / (global counted tokens); the sum over ranks is the
// gradient of the global mean, taken in a fixed order (see `Distributed.sumGradients`), so every rank holds
// bit-identical gradients and applies the same AdamW step. Rank 0 alone prints, saves and checkpoints.

/// The CLI's options for checkpoints and resuming, which data-parallel runs use like single-process ones.
struct CheckpointOptions: ParsableArguments {
    @Option(help: "Write a training checkpoint (weights, AdamW moments, step, random state) here every --checkpoint-every steps; rank 0 writes it.")
    var checkpointDir: String?
    @Option(help: "Steps between checkpoints (0 = only after the last step) when --checkpoint-dir is given.")
    var checkpointEvery = 0
    @Option(help: "Resume from this checkpoint folder: same data, seed, --batch and --steps continue where it stopped, under any number of processes.")
    var resume: String?
    @Option(help: "Stop after this step as if interrupted (the schedule still spans --steps); with --checkpoint-dir, a checkpoint of that step is written. For time-sliced jobs.")
    var stopAfter: Int?

    func validate() throws {
        guard checkpointEvery >= 0 else { throw ValidationError("--checkpoint-every must not be negative") }
        if let s = stopAfter, s <= 0 { throw ValidationError("--stop-after must be positive") }
    }

    /// Attaches adapter `name`: from the checkpoint when resuming (the name must match), else fresh from `configJSON`.
    func attachOrResume(_ m: Model, name: String, configJSON: @autoclosure () throws -> String) throws {
        guard let dir = resume else {
            try m.attachAdapter(name: name, configJSON: try configJSON())
            return
        }
        let stored = try m.loadCheckpoint(from: dir)
        guard stored == name else {
            throw CLIError("checkpoint '\(dir)' holds adapter '\(stored)': pass --name \(stored) to resume it")
        }
    }

    /// The step count stored in the resumed checkpoint (0 when not resuming).
    func resumeStep() throws -> Int {
        guard let dir = resume else { return 0 }
        let text = try readText(dir + "/checkpoint.json")
        let chars = Array(text), key = Array("\"step\"")
        guard let at = (0...max(0, chars.count - key.count)).first(where: { chars[$0..<min(chars.count, $0 + key.count)].elementsEqual(key) })
        else { throw CLIError("'\(dir)/checkpoint.json' has no step") }
        let digits = String(chars[(at + key.count)...].drop { $0 == " " || $0 == ":" }.prefix { $0.isNumber })
        guard let s = Int(digits) else { throw CLIError("'\(dir)/checkpoint.json' has no readable step") }
        return s
    }
}

/// The process group: one process (no MPI touched) or N ranks launched by mpirun.
final class Distributed: @unchecked Sendable {
    let size: Int
    let rank: Int
    let localSize: Int
    let mpi: MPILibrary?
    var isRoot: Bool { rank == 0 }
    /// MPI_Allreduce instead of the fixed-order sum (PEFTKIT_MPI_REDUCE=allreduce), to measure the difference.
    let useAllreduce: Bool
    /// Seconds a collective may wait for the other ranks before the watchdog stops this process
    /// (PEFTKIT_MPI_TIMEOUT, default 20), raised to 4× the slowest step seen; 10× during start-up.
    let baseTimeout: Double
    private var slowestStep = 0.0
    private var scratch: [Float] = []
    private var received: [Float] = []
    private(set) var exchangeSeconds = 0.0
    private(set) var waitSeconds = 0.0
    private(set) var exchanges = 0

    private init(launch: MPILaunch, mpi: MPILibrary?) {
        size = launch.size; rank = launch.rank; localSize = launch.localSize; self.mpi = mpi
        useAllreduce = getenv("PEFTKIT_MPI_REDUCE").map { String(cString: $0) } == "allreduce"
        baseTimeout = getenv("PEFTKIT_MPI_TIMEOUT").flatMap { Double(String(cString: $0)) } ?? 20
    }

    /// Detects an mpirun launch from the environment. One process: MPI is never opened. Several: libmpi is
    /// opened (failing with a clear message if it cannot be), initialised, and every rank but 0 sends its stdout
    /// to /dev/null (errors still go to stderr).
    static func start() throws -> Distributed {
        let launch = MPILaunch.fromEnvironment()
        guard launch.size > 1 else { return Distributed(launch: launch, mpi: nil) }
        let lib = try MPILibrary.open()
        let (size, rank) = try lib.initialize()
        guard size == launch.size, rank == launch.rank else {
            lib.abort(1)
            throw CLIError("MPI says rank \(rank) of \(size), the launcher's environment says \(launch.rank) of \(launch.size)")
        }
        let d = Distributed(launch: launch, mpi: lib)
        if rank != 0 {
            fflush(nil)
            let fd = open("/dev/null", O_WRONLY)
            if fd >= 0 { dup2(fd, 1); close(fd) }
        }
        Watchdog.shared.start(rank: rank)
        return d
    }

    /// Runs a command body. Under MPI: an error every rank reached together (`AgreedError`) ends every rank
    /// normally with it; any other error on one rank aborts the whole job (MPI_Abort) so no rank waits forever.
    func run(_ body: () throws -> Void) throws {
        guard let mpi else { return try body() }
        do {
            try body()
            Watchdog.shared.arm(nil)
            mpi.finalize()
        } catch let e as AgreedError {
            Watchdog.shared.arm(nil)
            mpi.finalize()
            // Every rank knows; rank 0 says it once.
            if rank != 0 { throw ExitCode(1) }
            throw CLIError(e.message)
        } catch {
            writeStderr("peftkit rank \(rank) of \(size): error: \(error)\n  stopping every rank (MPI_Abort)\n")
            mpi.abort(1)
            throw error
        }
    }

    /// --threads 0 under mpirun means the machine's cores shared among the ranks on this machine.
    func modelOptions(_ o: ModelOptions) -> ModelOptions {
        guard size > 1, o.threads == 0 else { return o }
        var o = o
        o.threads = max(1, Int(sysconf(Int32(_SC_NPROCESSORS_ONLN))) / localSize)
        return o
    }

    /// Rows [lo, hi) of a global batch of `batch` rows that this rank trains on.
    func rows(ofBatch batch: Int) -> Range<Int> { (rank * batch / size)..<((rank + 1) * batch / size) }

    private func timeout(startup: Bool) -> Double {
        startup ? max(10 * baseTimeout, 4 * slowestStep) : max(baseTimeout, 4 * slowestStep)
    }

    func noteStep(seconds: Double) { slowestStep = max(slowestStep, seconds) }

    /// A collective under the watchdog: if it has not returned after the timeout, this rank prints why and exits.
    private func collective<R>(_ what: String, startup: Bool = false, _ body: (MPILibrary) throws -> R) throws -> R {
        guard let mpi else { preconditionFailure("collective without MPI") }
        Watchdog.shared.arm((what: what, seconds: timeout(startup: startup)))
        defer { Watchdog.shared.arm(nil) }
        return try body(mpi)
    }

    /// Every rank's `values`, concatenated in rank order, on every rank.
    func allgather(_ values: [UInt64], _ what: String, startup: Bool = false) throws -> [UInt64] {
        guard size > 1 else { return values }
        var out = [UInt64](repeating: 0, count: values.count * size)
        try collective(what, startup: startup) { mpi in
            try values.withUnsafeBytes { s in
                try out.withUnsafeMutableBytes { r in
                    try mpi.allgather(s.baseAddress!, r.baseAddress!, count: s.count, type: mpi.byte)
                }
            }
        }
        return out
    }

    /// Every rank's `values`, concatenated in rank order, on every rank.
    func allgather(_ values: [Double], _ what: String) throws -> [Double] {
        guard size > 1 else { return values }
        return try allgather(values.map(\.bitPattern), what).map { Double(bitPattern: $0) }
    }

    /// Rank 0's `values` on every rank.
    func broadcast(_ values: [UInt64], _ what: String, startup: Bool = false) throws -> [UInt64] {
        guard size > 1 else { return values }
        var v = values
        try collective(what, startup: startup) { mpi in
            try v.withUnsafeMutableBytes { try mpi.bcast($0.baseAddress!, count: $0.count, type: mpi.byte) }
        }
        return v
    }

    /// Replaces `g` on every rank by the sum over ranks, added in rank order (g₀ + g₁ + … + g_{N−1}) so that the
    /// result does not depend on MPI's reduction algorithm and is bit-identical on every rank: a reduce-scatter
    /// by MPI_Alltoall (rank j receives every rank's j-th chunk and adds them in rank order), then MPI_Allgather
    /// of the summed chunks. It moves the same 2(N−1)/N of the buffer per rank as a ring all-reduce.
    func sumGradients(_ g: UnsafeMutableBufferPointer<Float>) throws {
        guard size > 1 else { return }
        // Time the wait for the slowest rank (a barrier) apart from the exchange itself.
        let clock = ContinuousClock(), w0 = clock.now
        try collective("MPI_Barrier before the gradient exchange") { try $0.barrier() }
        let t0 = clock.now
        waitSeconds += (t0 - w0).seconds
        defer { exchangeSeconds += (clock.now - t0).seconds; exchanges += 1 }
        if useAllreduce {
            try collective("MPI_Allreduce of the gradients") { try $0.allreduceSum(UnsafeMutableRawPointer(g.baseAddress!), count: g.count, type: $0.float) }
            return
        }
        let P = g.count, N = size, chunk = (P + N - 1) / N
        if scratch.count != chunk * N { scratch = [Float](repeating: 0, count: chunk * N); received = scratch }
        scratch.withUnsafeMutableBufferPointer { s in
            s.baseAddress!.update(from: g.baseAddress!, count: P)
            for i in P..<(chunk * N) { s[i] = 0 }
        }
        try collective("MPI_Alltoall of the gradients") { mpi in
            try scratch.withUnsafeBytes { s in
                try received.withUnsafeMutableBytes { r in
                    try mpi.alltoall(s.baseAddress!, r.baseAddress!, count: chunk, type: mpi.float)
                }
            }
        }
        // received = [rank 0's chunk `rank` | rank 1's chunk `rank` | ...]: add in rank order into scratch's chunk `rank`.
        let me = rank
        received.withUnsafeBufferPointer { r in
            scratch.withUnsafeMutableBufferPointer { s in
                let out = s.baseAddress! + me * chunk
                for i in 0..<chunk { out[i] = r[i] }
                for j in 1..<N {
                    let src = r.baseAddress! + j * chunk
                    for i in 0..<chunk { out[i] += src[i] }
                }
            }
        }
        try collective("MPI_Allgather of the summed gradients") { mpi in
            try scratch.withUnsafeMutableBytes { s in
                // In place is not portable for Allgather; send our chunk from a copy.
                let mine = Array(UnsafeBufferPointer(start: s.baseAddress!.assumingMemoryBound(to: Float.self) + me * chunk, count: chunk))
                try mine.withUnsafeBytes { m in
                    try mpi.allgather(m.baseAddress!, s.baseAddress!, count: chunk, type: mpi.float)
                }
            }
        }
        scratch.withUnsafeBufferPointer { s in _ = UnsafeMutableBufferPointer(rebasing: g[0..<P]).update(from: s[0..<P]) }
    }

    /// Stops before the first step when ranks disagree on what they train: rank 0's fingerprint is broadcast,
    /// every rank compares field by field, and every rank learns which fields differ on which rank.
    func checkAgreement(_ fields: [(name: String, value: UInt64)]) throws {
        guard size > 1 else { return }
        let root = try broadcast(fields.map(\.value), "the start-up check (broadcast of rank 0's fingerprint)", startup: true)
        var mask: UInt64 = 0
        for (i, f) in fields.enumerated() where f.value != root[i] { mask |= 1 << UInt64(i) }
        let masks = try allgather([mask], "the start-up check (gather of every rank's verdict)", startup: true)
        var problems: [String] = []
        for (r, m) in masks.enumerated() where m != 0 {
            let names = fields.indices.filter { m & (1 << UInt64($0)) != 0 }.map { fields[$0].name }
            problems.append("rank \(r) differs from rank 0 in: \(names.joined(separator: ", "))")
        }
        guard problems.isEmpty else {
            throw AgreedError(message: "the ranks disagree before the first step, nothing was trained: " + problems.joined(separator: "; "))
        }
    }
}

/// An error every rank reaches at the same point (so no rank is left waiting in a collective).
struct AgreedError: Error { let message: String }

/// A thread that ends this process when a collective waits longer than its deadline: a rank that died or hangs
/// would otherwise leave the others blocked forever (launchers usually kill the job first; this is the backstop).
final class Watchdog: @unchecked Sendable {
    static let shared = Watchdog()
    private let state = Mutex<(what: String, deadline: ContinuousClock.Instant?)>(("", nil))
    private var rank = 0
    private var thread: pthread_t?

    func arm(_ job: (what: String, seconds: Double)?) {
        state.withLock { s in
            if let job { s = (job.what, ContinuousClock.now + .milliseconds(Int64(job.seconds * 1000))) } else { s.deadline = nil }
        }
    }

    func start(rank: Int) {
        self.rank = rank
        var t = pthread_t()
        let rc = pthread_create(&t, nil, { _ in
            while true {
                sleep(1)
                let (what, deadline) = Watchdog.shared.state.withLock { ($0.what, $0.deadline) }
                if let deadline, ContinuousClock.now > deadline {
                    writeStderr("peftkit rank \(Watchdog.shared.rank): no answer from the other ranks in \(what): a rank died or hangs; stopping this rank (exit 3)\n")
                    _exit(3)
                }
            }
        }, nil)
        if rc == 0 { thread = t }
    }
}

/// FNV-1a 64 of bytes, continuing from `h`.
func fnv1a64(_ bytes: UnsafeRawBufferPointer, _ h0: UInt64 = 0xcbf2_9ce4_8422_2325) -> UInt64 {
    var h = h0
    for b in bytes { h = (h ^ UInt64(b)) &* 0x100_0000_01b3 }
    return h
}

func fnv1a64(_ s: String) -> UInt64 { var s = s; return s.withUTF8 { fnv1a64(UnsafeRawBufferPointer($0)) } }

/// A cheap identity of a file or a model folder: size and FNV-1a of the first and last 4 MiB of each file (the
/// whole file when `whole`); in a folder, the files a model is read from (.safetensors, .gguf, .json, .txt,
/// .model), sorted by name. Model files of many GB are identified without reading them.
func fileFingerprint(_ path: String, whole: Bool = false) -> UInt64 {
    var paths: [String] = []
    if isDirectory(path), let d = opendir(path) {
        while let e = readdir(d) {
            let name = withUnsafeBytes(of: e.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            let model = [".safetensors", ".gguf", ".json", ".txt", ".model"].contains { name.hasSuffix($0) }
            if model && isFile(path + "/" + name) { paths.append(path + "/" + name) }
        }
        closedir(d)
        paths.sort()
    } else {
        paths = [path]
    }
    var h: UInt64 = 0xcbf2_9ce4_8422_2325
    for p in paths {
        let fd = open(p, O_RDONLY)
        guard fd >= 0 else { h = fnv1a64("missing " + p, h); continue }
        defer { close(fd) }
        var st = stat()
        fstat(fd, &st)
        let size = Int(st.st_size)
        h = withUnsafeBytes(of: UInt64(size)) { fnv1a64($0, h) }
        let window = 4 << 20
        let spans: [(Int, Int)] = whole || size <= 2 * window ? [(0, size)] : [(0, window), (size - window, window)]
        var buf = [UInt8](repeating: 0, count: 1 << 20)
        for (start, count) in spans {
            var off = start
            while off < start + count {
                let n = buf.withUnsafeMutableBytes { pread(fd, $0.baseAddress, min($0.count, start + count - off), off_t(off)) }
                if n <= 0 { break }
                h = buf.withUnsafeBytes { fnv1a64(UnsafeRawBufferPointer(rebasing: $0[0..<n]), h) }
                off += n
            }
        }
    }
    return h
}

private func fnv1a64(_ s: String, _ h: UInt64) -> UInt64 { var s = s; return s.withUTF8 { fnv1a64(UnsafeRawBufferPointer($0), h) } }

func readText(_ path: String) throws -> String {
    guard let f = fopen(path, "rb") else { throw CLIError("cannot read '\(path)'") }
    defer { fclose(f) }
    var bytes: [UInt8] = []
    var buf = [UInt8](repeating: 0, count: 65536)
    while true {
        let n = fread(&buf, 1, buf.count, f)
        if n <= 0 { break }
        bytes += buf[0..<n]
    }
    return String(decoding: bytes, as: UTF8.self)
}

/// What `trainDataParallel` needs besides the model and data.
struct DataParallelRun {
    var steps: Int
    var batch: Int
    var seqLen: Int
    var config: TrainConfig
    var seed: UInt64
    var name: String
    var checkpoints: CheckpointOptions
    /// Identity of what the ranks must agree on, beyond the numbers above.
    var modelPath: String
    var dataPath: String
    var adapterConfigJSON: String
    var method: AdapterMethod
}

/// Trains the active adapter for steps (resumed step + 1)...steps, split over the ranks of `dist` (one process
/// when dist.size == 1): the same batches, losses and weights as one process with the same global batch.
func trainDataParallel(_ lm: LoadedModel, examples: [DatasetExample], run p: DataParallelRun, dist: Distributed) throws -> TrainRun {
    let m = lm.model
    let B = p.batch, N = dist.size
    guard B >= N else { throw AgreedError(message: "--batch \(B) is smaller than the \(N) processes: every rank needs at least one row") }
    let T = effectiveSeqLen(examples, requested: min(p.seqLen, m.config.maxPositions))
    let pad = lm.tokenizer.eosID ?? 0
    let start = try p.checkpoints.resumeStep()
    guard start < p.steps else { throw AgreedError(message: "the checkpoint is at step \(start): nothing left of --steps \(p.steps)") }

    let tc = p.config
    try dist.checkAgreement([
        ("model file (size and first/last 4 MiB)", fileFingerprint(p.modelPath)),
        ("adapter config", fnv1a64(p.adapterConfigJSON)),
        ("data file", fileFingerprint(p.dataPath, whole: true)),
        ("seed", p.seed),
        ("steps", UInt64(p.steps)),
        ("batch", UInt64(B)),
        ("seq-len (as used)", UInt64(T)),
        ("training options (lr, schedule, warm-up, weight decay, clip, micro-batch)",
         fnv1a64("\(tc.learningRate) \(tc.schedule) \(tc.warmupSteps) \(tc.weightDecay) \(tc.maxGradNorm) \(tc.microBatchSize) \(tc.totalSteps)")),
        ("resumed checkpoint (step and files)", p.checkpoints.resume.map { fileFingerprint($0, whole: true) &+ UInt64(start) } ?? 0),
    ])

    let mine = dist.rows(ofBatch: B)
    let rows = mine.count
    let local = tc   // --micro-batch splits each rank's rows (into near-equal parts, as the ranks split the batch)
    let cut = examples.filter { $0.inputIDs.count > T }.count
    let unit = examples.contains { $0.segmentIDs != nil } ? "packed rows" : "records"
    print("data: \(examples.count) \(unit), \(p.steps) steps of \(B) × \(T) tokens"
          + (cut > 0 ? ", \(cut) records cut to \(T) tokens" : "")
          + (N > 1 ? "; \(N) processes (MPI, \(dist.mpi?.path ?? "")), \(B / N)\(B % N == 0 ? "" : "-\(B / N + 1)") rows each" : "")
          + (start > 0 ? "; resuming after step \(start)" : ""))

    var order = try BatchOrder(count: examples.count, batch: B, seed: p.seed)
    for _ in 0..<start { _ = order.nextBatch() }
    var progress = ProgressLine(total: min(p.steps, p.checkpoints.stopAfter ?? p.steps) - start)
    var run = TrainRun()
    let clock = ContinuousClock()
    let firstCounted = p.method == .prompt ? 0 : 1   // with virtual tokens the last one predicts the first real token
    let last = min(p.steps, p.checkpoints.stopAfter ?? p.steps)
    guard last > start else { throw AgreedError(message: "--stop-after \(last) is not after the checkpoint's step \(start)") }
    for s in (start + 1)...last {
        let t0 = clock.now
        let b = try TokenBatch(order.nextBatch().map { examples[$0] }, seqLen: T, padID: pad)
        // Every rank holds the global batch, so the global count of counted tokens needs no collective.
        var globalTokens = 0
        for r in 0..<B {
            for t in firstCounted..<T where b.labels[r * T + t] != -100 {
                // In a packed row nothing predicts a record's first token.
                if let sg = b.segmentIDs, t > 0, sg[r * T + t] != sg[r * T + t - 1] { continue }
                globalTokens += 1
            }
        }
        guard globalTokens > 0 else { throw AgreedError(message: "step \(s): no label of the batch counts towards the loss") }
        let ids = Array(b.inputIDs[(mine.lowerBound * T)..<(mine.upperBound * T)])
        let labels = Array(b.labels[(mine.lowerBound * T)..<(mine.upperBound * T)])
        let segments = b.segmentIDs.map { Array($0[(mine.lowerBound * T)..<(mine.upperBound * T)]) }
        let part = try ids.withUnsafeBufferPointer { i in
            try labels.withUnsafeBufferPointer { l in
                try (segments ?? []).withUnsafeBufferPointer { sg in
                    try m.computeGradients(inputIDs: i, labels: l, batch: rows, seqLen: T, config: local, lossDivisor: globalTokens,
                                           segmentIDs: segments == nil ? nil : sg)
                }
            }
        }
        var loss = part.loss, counted = part.tokens
        if N > 1 {
            try m.withGradients { try dist.sumGradients($0) }
            let parts = try dist.allgather([Double(part.loss), Double(part.tokens)], "MPI_Allgather of the losses")
            loss = 0; counted = 0
            for r in 0..<N { loss += Float(parts[2 * r]); counted += Int(parts[2 * r + 1]) }
        }
        // The divisor must be the tokens the core counted, or the gradient is not the global mean's.
        guard counted == globalTokens else {
            throw AgreedError(message: "step \(s): the ranks counted \(counted) tokens, the CLI \(globalTokens); nothing was applied")
        }
        _ = try m.applyGradients(config: tc)
        dist.noteStep(seconds: (clock.now - t0).seconds)
        run.losses.append(loss)
        run.tokens += B * T
        run.realTokens += b.realTokens
        if dist.isRoot {
            progress.update(step: s - start, loss: loss, tokens: B * T)
            if let dir = p.checkpoints.checkpointDir,
               (p.checkpoints.checkpointEvery > 0 && s % p.checkpoints.checkpointEvery == 0) || s == last {
                try m.saveCheckpoint(name: p.name, to: dir)
            }
        }
        if getenv("PEFTKIT_PRINT_LOSSES") != nil, dist.isRoot { writeStderr("loss step \(s) \(loss.bitPattern) \(loss)\n") }
    }
    run.seconds = progress.elapsed
    let firstLoss = run.losses.first ?? 0, lastLoss = run.losses.last ?? 0
    print("trained \(run.losses.count) steps in \(fmt(run.seconds, 1)) s (\(fmt(Double(run.tokens) / max(run.seconds, 1e-9), 0)) tok/s, "
          + "\(fmt(Double(run.realTokens) / max(run.seconds, 1e-9), 0)) real tok/s without padding): loss \(fmt(Double(firstLoss), 3)) -> \(fmt(Double(lastLoss), 3))")
    if N > 1 {
        let P = try m.withGradients { $0.count }
        print("gradient exchange (\(dist.useAllreduce ? "MPI_Allreduce" : "fixed-order Alltoall + Allgather"), \(byteString(4 * P)) per step): "
              + "\(fmt(dist.exchangeSeconds / Double(max(dist.exchanges, 1)) * 1000, 2)) ms/step, after waiting "
              + "\(fmt(dist.waitSeconds / Double(max(dist.exchanges, 1)) * 1000, 2)) ms/step for the slowest rank")
        // Every rank's weights must be bit-identical: compare their hashes.
        let h = try m.withTrainableParameters { fnv1a64(UnsafeRawBufferPointer($0)) }
        writeStderr("peftkit rank \(dist.rank): trainable weights fnv1a64 \(hex(h))\n")
        let all = try dist.allgather([h], "MPI_Allgather of the weight hashes")
        guard all.allSatisfy({ $0 == h }) else {
            throw AgreedError(message: "the ranks' weights differ after training: " + all.map(hex).joined(separator: " "))
        }
        print("weights bit-identical on all \(N) ranks (fnv1a64 \(hex(h)))")
    }
    return run
}

/// Mean loss over every counted token, batches dealt round-robin to the ranks, sums added in rank order.
func evaluateLossDataParallel(_ lm: LoadedModel, examples: [DatasetExample], batch: Int, seqLen: Int,
                              dist: Distributed) throws -> (loss: Double, tokens: Int) {
    guard dist.size > 1 else { return try evaluateLoss(lm, examples: examples, batch: batch, seqLen: seqLen) }
    let batches = stride(from: 0, to: examples.count, by: batch).map { $0 }
    var mineExamples: [DatasetExample] = []
    for (k, i) in batches.enumerated() where k % dist.size == dist.rank {
        mineExamples += examples[i..<min(examples.count, i + batch)]
    }
    var sum = 0.0, tokens = 0
    if !mineExamples.isEmpty {
        // Same row length as one process would use: the longest record of all the data, capped.
        let T = effectiveSeqLen(examples, requested: min(seqLen, lm.model.config.maxPositions))
        let r = try evaluateLoss(lm, examples: mineExamples, batch: batch, seqLen: T)
        sum = r.loss * Double(r.tokens); tokens = r.tokens
    }
    let parts = try dist.allgather([sum, Double(tokens)], "MPI_Allgather of the evaluation sums")
    var s = 0.0, n = 0.0
    for r in 0..<dist.size { s += parts[2 * r]; n += parts[2 * r + 1] }
    return (n > 0 ? s / n : 0, Int(n))
}

func hex(_ h: UInt64) -> String {
    let s = String(h, radix: 16)
    return String(repeating: "0", count: 16 - s.count) + s
}
