import COpenBLAS
import CPEFTKitKernels

/// PEFTKit's one entry to OpenBLAS's sgemm. OpenBLAS runs single-threaded (set once, on the first product), and
/// each product big enough to share is split across PEFTKit's own pool (`parallelFor`): by rows of C when C is
/// taller than wide, by columns otherwise, in chunks that are multiples of 16. So one pool of threads runs both
/// PEFTKit's loops and the products: no OpenBLAS worker spins in `sched_yield` while a PEFTKit loop runs (three
/// runnable threads on two cores), and no call ever changes the process-wide OpenBLAS thread count again.
///
/// Every element of C is still one dot product over the whole of k; OpenBLAS picks its kernel by the size of each
/// call, so a split may move the last bit against one call (`GEMMTests`), and the result is the same on every run
/// with the same thread count. A one-row product (m == 1, decode) does not go to OpenBLAS: PEFTKit's own
/// matrix-vector kernels stream B once, with the same result for every thread count (`matvec` below).
///
/// Row-major: C[m, n] = alpha · op(A)[m, k] · op(B)[k, n] + beta · C, op = transpose when `transA` / `transB`.
func sgemm(transA: Bool, transB: Bool, m: Int, n: Int, k: Int, alpha: Float, a: UnsafePointer<Float>, lda: Int,
           b: UnsafePointer<Float>, ldb: Int, beta: Float, c: UnsafeMutablePointer<Float>, ldc: Int) {
    guard m > 0, n > 0 else { return }
    _ = blasSingleThreaded
    let ta = transA ? CblasTrans : CblasNoTrans, tb = transB ? CblasTrans : CblasNoTrans
    // Chunks of at least `gemmMinWorkPerChunk`: the work is the flops, or for a short A (decode: m = 1, a
    // bandwidth-bound stream of B) 5 per byte of B read, whichever is larger (about 50 GFLOP/s against 10 GB/s
    // per core). A smaller product costs more to hand out than it saves.
    let work = max(2 * m * n * max(k, 1), 5 * 4 * n * max(k, 1))
    let byRows = m >= n
    let units = ((byRows ? m : n) + 15) / 16
    let chunks = min(numThreads(), units, max(1, work / gemmMinWorkPerChunk))
    if m == 1 {
        matvec(transA: transA, transB: transB, n: n, k: k, alpha: alpha, a: a, lda: lda, b: b, ldb: ldb, beta: beta,
               c: c, chunks: chunks, units: units)
        return
    }
    if chunks <= 1 {
        cblas_sgemm(CblasRowMajor, ta, tb, Int32(m), Int32(n), Int32(k), alpha, a, Int32(lda), b, Int32(ldb), beta,
                    c, Int32(ldc))
        return
    }
    nonisolated(unsafe) let (pa, pb, pc) = (a, b, c)
    parallelFor(chunks) { c0, c1 in
        for ch in c0..<c1 {
            let u0 = units * ch / chunks, u1 = units * (ch + 1) / chunks
            if byRows {
                let r0 = 16 * u0, r1 = min(m, 16 * u1)
                guard r0 < r1 else { continue }
                // Rows r0..<r1 of op(A): row r of A, or column r of a transposed A.
                let ap = transA ? pa + r0 : pa + r0 * lda
                cblas_sgemm(CblasRowMajor, ta, tb, Int32(r1 - r0), Int32(n), Int32(k), alpha, ap, Int32(lda), pb,
                            Int32(ldb), beta, pc + r0 * ldc, Int32(ldc))
            } else {
                let j0 = 16 * u0, j1 = min(n, 16 * u1)
                guard j0 < j1 else { continue }
                // Columns j0..<j1 of op(B): column j of B, or row j of a transposed B.
                let bp = transB ? pb + j0 * ldb : pb + j0
                cblas_sgemm(CblasRowMajor, ta, tb, Int32(m), Int32(j1 - j0), Int32(k), alpha, pa, Int32(lda), bp,
                            Int32(ldb), beta, pc + j0, Int32(ldc))
            }
        }
    }
}

/// The path `pk_f32mv_rows` runs: its AVX2 body on AVX-512 CPUs too, since streaming rows with 256-bit loads
/// measured about 10 % faster than with 512-bit loads on Zen 4 (the same bytes; Tests/PEFTKitTests/MatvecTests.swift
/// still checks the AVX-512 body).
var matvecRowsISA: Int32 { min(ElementwiseISA.active.rawValue, ElementwiseISA.avx2.rawValue) }

/// The one-row product c[0, j] = alpha · Σₗ a[l] · op(B)[l, j] + beta · c[0, j] (decode: one activation row
/// against a weight) through PEFTKit's matrix-vector kernels (CPEFTKitKernels/matvec.c), which read B once; sgemm
/// would pack B first (a second pass over it). B as [n, k] (rows dotted with a) is split by output columns in
/// multiples of 16 (pieces of `units`, on `chunks` threads at most), so every core streams its own rows. Every
/// output is one dot product whose order depends on k only: the result is the same for every thread count.
/// A one-row A is a vector whatever `transA` says: element l sits at a[l] (a row) or a[l · lda] (a column,
/// gathered first when lda > 1).
private func matvec(transA: Bool, transB: Bool, n: Int, k: Int, alpha: Float, a: UnsafePointer<Float>, lda: Int,
                    b: UnsafePointer<Float>, ldb: Int, beta: Float, c: UnsafeMutablePointer<Float>, chunks: Int,
                    units: Int) {
    if transA, lda != 1, k > 1 {
        withUnsafeTemporaryAllocation(of: Float.self, capacity: k) { x in
            guard let xp = x.baseAddress else { return }
            for l in 0..<k { xp[l] = a[l * lda] }
            matvec(transA: false, transB: transB, n: n, k: k, alpha: alpha, a: xp, lda: k, b: b, ldb: ldb, beta: beta,
                   c: c, chunks: chunks, units: units)
        }
        return
    }
    let isa = ElementwiseISA.active.rawValue, rowsISA = matvecRowsISA
    nonisolated(unsafe) let (pa, pb, pc) = (a, b, c)
    // op(B) = Bᵀ: B is [n, k], rows j dotted with a. op(B) = B: B is [k, n], columns j of Bᵀ·a.
    let run = { (j0: Int, j1: Int) in
        if transB {
            pk_f32mv_rows(rowsISA, pb, Int64(ldb), pa, Int64(k), alpha, beta, pc, Int64(j0), Int64(j1))
        } else {
            pk_f32mv_cols(isa, pb, Int64(ldb), pa, Int64(k), alpha, beta, pc, Int64(j0), Int64(j1))
        }
    }
    // The column kernel stays on one thread: split by columns, each thread would read a piece of every row of B
    // (strided), which measured at less than half the one-thread stream on Zen 4; one core alone streams near
    // the machine's read bandwidth.
    if chunks <= 1 || !transB {
        run(0, n)
        return
    }
    // Up to 16 pieces per thread, claimed by whichever thread is free: a worker that starts late (or is descheduled
    // by another process) holds up at most one small piece. Measured a few % faster than 4 per thread under load.
    let pieces = min(units, 16 * chunks)
    parallelPieces(pieces, threads: chunks) { p in
        let j0 = 16 * (units * p / pieces), j1 = min(n, 16 * (units * (p + 1) / pieces))
        if j0 < j1 { run(j0, j1) }
    }
}

/// About 1 MFLOP (20 µs on one core) per chunk: below that, handing a product to another thread (a dispatch
/// round trip of a few µs) costs more than it saves.
let gemmMinWorkPerChunk = 1 << 20
