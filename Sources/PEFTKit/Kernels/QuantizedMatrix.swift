import COpenBLAS
import CPEFTKitKernels

/// A frozen weight W [out, in] kept in its GGUF blocks: row o (one output feature) is `rowBytes` bytes at
/// `data + o·rowBytes`, as GGUF stores a tensor with ne = [in, out]. The products follow the layout of a
/// linear layer, y = x·Wᵀ, and never widen the whole matrix to fp32:
///
/// - `matvec` (decode, one token): the activation is quantized to 8 bits per group of 32 (scale max|x|/127,
///   as llama.cpp's Q8 activations) and each row is an integer dot product (AVX-512 VNNI, AVX2 or scalar).
/// - `matmul` / `matmulInputGradient` (training, and prefill without the int8 kernel): a tile of rows is
///   dequantised into an fp32 panel and multiplied with `cblas_sgemm`; the result equals the fp32 product with
///   the dequantised weight up to the summation order.
/// - `matmulInt8` (prefill without gradients): 8-bit activations as `matvec`, an int8 GEMM over unpacked panels
///   of 16 weight rows.
///
/// The matrix does not own `data` (typically a GGUF mapping): `owner` (the mapping's or a copy's `Storage`)
/// keeps it alive as long as the matrix.
struct QuantizedMatrix: @unchecked Sendable {
    let type: GGMLType
    let outFeatures: Int
    let inFeatures: Int
    let data: UnsafeRawPointer
    /// Bytes of one row: inFeatures / type.blockSize · type.blockBytes.
    let rowBytes: Int
    /// What keeps `data` alive (nil when the caller does).
    var owner: AnyObject?

    /// Bytes of the whole matrix: what stays resident.
    var byteCount: Int { rowBytes * outFeatures }

    /// Checks that `byteCount` bytes at `data` hold exactly `outFeatures` rows of `inFeatures` elements of `type`.
    /// - Throws: `format` when in-features is not a whole number of blocks or the byte count does not match,
    ///   `unsupported` for a type without kernels, `invalidArgument` for a non-positive or oversized shape.
    init(type: GGMLType, outFeatures: Int, inFeatures: Int, data: UnsafeRawPointer, byteCount: Int,
         name: String = "weight", owner: AnyObject? = nil) throws {
        guard type.hasQuantKernels else {
            throw PEFTKitError.unsupported("\(name): type \(type) has no quantized-matrix kernels "
                + "(supported: \(GGMLType.quantKernelNames))")
        }
        guard outFeatures > 0, inFeatures > 0, outFeatures <= Int(Int32.max), inFeatures <= Int(Int32.max) else {
            throw PEFTKitError.invalidArgument("\(name): shape [\(outFeatures), \(inFeatures)] is empty or too large")
        }
        guard inFeatures % type.blockSize == 0 else {
            throw PEFTKitError.format("\(name): \(inFeatures) in-features is not a whole number of \(type) blocks "
                + "(\(type.blockSize) elements each)")
        }
        let rb = inFeatures / type.blockSize * type.blockBytes
        let (total, overflow) = rb.multipliedReportingOverflow(by: outFeatures)
        guard !overflow, total == byteCount else {
            throw PEFTKitError.format("\(name): \(byteCount) bytes do not hold \(outFeatures) rows of \(inFeatures) "
                + "\(type) elements (\(overflow ? "more than Int.max" : String(total)) bytes expected)")
        }
        self.type = type
        self.outFeatures = outFeatures
        self.inFeatures = inFeatures
        self.data = data
        self.rowBytes = rb
        self.owner = owner
    }

    /// Floats of the fp32 panel `matmul` and `matmulInputGradient` widen into: the whole weight when it fits the
    /// panel budget (`widensWhole`), a tile of `tileRows` rows otherwise. A caller that passes a `panel` of this
    /// size makes the products allocation-free.
    var panelFloats: Int { widensWhole ? outFeatures * inFeatures : tileRows * inFeatures }

    /// Rows r0 ..< r0 + count as fp32 into `into` [count, inFeatures] (bit-identical to gguf-py).
    func dequantizeRows(_ r0: Int, _ count: Int, into: UnsafeMutablePointer<Float>) {
        dequantizeRows(r0, count, into: into, isa: .active)
    }

    func dequantizeRows(_ r0: Int, _ count: Int, into: UnsafeMutablePointer<Float>, isa: QuantISA) {
        guard count > 0 else { return }
        let (n, rb, t, base) = (inFeatures, rowBytes, type, data + r0 * rowBytes)
        nonisolated(unsafe) let dst = into
        parallelFor(count, grain: max(1, (1 << 15) / n)) { a, b in
            quantDequantizeRows(t, base + a * rb, rowBytes: rb, rows: b - a, n: n, dst + a * n, ldd: n, isa: isa)
        }
    }

    // MARK: decode

    /// out[outFeatures] = W · inp[inFeatures]. Block-quantized types quantize `inp` to 8 bits per group of 32
    /// first (see `matvecErrorBound`); F32/F16/BF16 weights are widened and use an fp32 dot product.
    func matvec(out: UnsafeMutablePointer<Float>, inp: UnsafePointer<Float>) {
        matvec(out: out, inp: inp, isa: .active)
    }

    func matvec(out: UnsafeMutablePointer<Float>, inp: UnsafePointer<Float>, isa: QuantISA,
                panel: UnsafeMutablePointer<Float>? = nil) {
        guard type.isBlockQuantized else {
            matmul(out: out, ldo: outFeatures, inp: inp, ldi: inFeatures, rows: 1, beta: 0, isa: isa, panel: panel)
            return
        }
        // Activation workspace: n int8 + n/32 scales + n/16 half-group sums (about 1.2 bytes per element).
        QuantizedMatrix.matvecSharingInput([(self, out)], inp: inp, isa: isa)
    }

    /// Rows the kernels take per pass (they share the activation loads); chunks of the pool start at multiples.
    static let rowsPerPass = 4

    /// out_i = W_i · x for matrices that read the same input (q/k/v, gate/up when decoding): the input is
    /// quantized once and all rows go to the pool in one hand-off. Every matrix must be block-quantized with the
    /// same in-features (the caller checks; see `FrozenLinear.decodeSharingInput`). Each row's result is the one
    /// `matvec` gives.
    static func matvecSharingInput(_ parts: [(QuantizedMatrix, UnsafeMutablePointer<Float>)], inp: UnsafePointer<Float>,
                                   isa: QuantISA = .active) {
        guard let n = parts.first?.0.inFeatures else { return }
        let groups = n / 32
        withUnsafeTemporaryAllocation(byteCount: n + 4 * groups + 4 * groups, alignment: 64) { raw in
            let base = raw.baseAddress!
            let xq = base.bindMemory(to: Int8.self, capacity: n)
            let xd = (base + n).bindMemory(to: Float.self, capacity: groups)
            let xs = (base + n + 4 * groups).bindMemory(to: Int16.self, capacity: 2 * groups)
            pk_quantize_act(inp, Int64(n), xq, xd, xs)
            matvecQuantized(parts, xq: xq, xd: xd, xs: xs, isa: isa)
        }
    }

    /// The products of `matvecSharingInput` from an activation pk_quantize_act has quantized: the rows of all
    /// matrices, in passes of `rowsPerPass`, split into at most one chunk per thread (one pool hand-off) with
    /// at least about 64 KiB of weight per chunk, so small matrices stay on the calling thread.
    private static func matvecQuantized(_ parts: [(QuantizedMatrix, UnsafeMutablePointer<Float>)],
                                        xq: UnsafeMutablePointer<Int8>, xd: UnsafeMutablePointer<Float>,
                                        xs: UnsafeMutablePointer<Int16>, isa: QuantISA) {
        let rp = rowsPerPass
        var units = 0, bytes = 0
        for (m, _) in parts {
            units += (m.outFeatures + rp - 1) / rp
            bytes += m.byteCount
        }
        let grain = max(1, units * (1 << 16) / max(1, bytes))
        nonisolated(unsafe) let (q, d, s, ps) = (xq, xd, xs, parts)
        parallelFor(units, grain: grain) { a, b in
            var u0 = 0
            for (m, y) in ps {
                let mu = (m.outFeatures + rp - 1) / rp
                let lo = max(a, u0) - u0, hi = min(b, u0 + mu) - u0
                if lo < hi {
                    pk_matvec_rows(isa.rawValue, Int32(m.type.rawValue), m.data, m.rowBytes, Int64(lo * rp),
                                   Int64(min(m.outFeatures, hi * rp)), Int64(m.inFeatures), q, d, s, y)
                }
                u0 += mu
            }
        }
    }

    /// Whether inference takes `matmulInt8` for this matrix on `isa`: a block format (Q8_0, Q4_0, Q4_1, Q5_0,
    /// Q5_1, Q4_K, Q5_K, Q6_K) on AVX-512 VNNI, where it ran at 2.2-3.3x the widened sgemm (N = 512, SmolLM2
    /// shapes, scripts/bench_quant_gemm.sh). Its AVX2 path (vpmaddubsw) ran at 0.8-1.4x OpenBLAS's sgemm (AVX2 or
    /// AVX-512 kernel) and its scalar path is slower still, so those keep the widened product.
    func servesInt8GEMM(isa: QuantISA) -> Bool {
        isa == .avx512 && pk_qgemm_supported(Int32(type.rawValue)) != 0
    }

    /// out[rows, outFeatures] (ldo) = inp[rows, inFeatures] (ldi) · Wᵀ (+ beta·out) with 8-bit activations: each
    /// row of `inp` is quantized as `matvec` quantizes its input (so each element stays within
    /// `matvecErrorBound` of the product with the widened weight), and the products are the int8 GEMM of
    /// CPEFTKitKernels/qgemm.c: the weight unpacked 16 rows at a time into one layout for every format, VNNI
    /// (AVX-512) or maddubs (AVX2) integer dot products per scale chunk, one fp32 scaling per chunk. Every path
    /// (scalar included) gives the same bits, whatever the thread count. For inference without gradients (a
    /// prompt's prefill); training keeps `matmul`, exact to the widened weight. Types without the kernel take
    /// `matmul`.
    func matmulInt8(out: UnsafeMutablePointer<Float>, ldo: Int, inp: UnsafePointer<Float>, ldi: Int, rows: Int,
                    beta: Float = 0, isa: QuantISA = .active) {
        guard rows > 0 else { return }
        let t = Int32(type.rawValue)
        guard pk_qgemm_supported(t) != 0 else {
            matmul(out: out, ldo: ldo, inp: inp, ldi: ldi, rows: rows, beta: beta, isa: isa)
            return
        }
        let n = inFeatures, groups = n / 32, nch = Int(pk_qgemm_chunks(t, Int64(n)))
        // One block: xq [rows, n] int8 | xd [rows, groups] | xs [rows, 2·groups] int16 | xo [rows, nch] | xm [rows, nch].
        let oq = 0, od = oq + rows * n, os = od + 4 * rows * groups, oo = os + 4 * rows * groups, om = oo + 4 * rows * nch
        let raw = UnsafeMutableRawPointer.allocate(byteCount: om + 4 * rows * nch, alignment: 64)
        defer { raw.deallocate() }
        let xqAll = (raw + oq).bindMemory(to: Int8.self, capacity: rows * n)
        let xdAll = (raw + od).bindMemory(to: Float.self, capacity: rows * groups)
        let xsAll = (raw + os).bindMemory(to: Int16.self, capacity: rows * 2 * groups)
        let xoAll = (raw + oo).bindMemory(to: Int32.self, capacity: rows * nch)
        let xmAll = (raw + om).bindMemory(to: Float.self, capacity: rows * nch)
        nonisolated(unsafe) let (xq, xd, xs, xo, xm, x, y) = (xqAll, xdAll, xsAll, xoAll, xmAll, inp, out)
        parallelFor(rows, grain: max(1, (1 << 15) / n)) { a, b in
            for r in a..<b { pk_quantize_act(x + r * ldi, Int64(n), xq + r * n, xd + r * groups, xs + r * 2 * groups) }
            pk_qgemm_prepare(t, Int64(n), Int64(b - a), xd + a * groups, xs + a * 2 * groups, xo + a * nch, xm + a * nch)
        }
        // Pieces of whole 48-row units (the AVX-512 tile), taken by whichever thread is free; at least about
        // 2 M multiply-adds per piece so that small products stay on the calling thread.
        let unit = 48, units = (outFeatures + unit - 1) / unit, threads = numThreads()
        let pieces = max(1, min(units, 4 * threads, outFeatures * n * rows / (1 << 21)))
        let (w, rb, O, scratchBytes) = (data, rowBytes, outFeatures, pk_qgemm_scratch_bytes(t, Int64(n)))
        parallelPieces(pieces, threads: threads) { i in
            let r0 = units * i / pieces * unit, r1 = min(O, units * (i + 1) / pieces * unit)
            guard r0 < r1 else { return }
            let scratch = UnsafeMutableRawPointer.allocate(byteCount: scratchBytes, alignment: 64)
            defer { scratch.deallocate() }
            pk_qgemm_rows(isa.rawValue, t, w, rb, Int64(r0), Int64(r1), Int64(n), Int64(rows), xq, xd, xo, xm,
                          y, Int64(ldo), beta, scratch)
        }
    }

    /// A bound on |matvec(x) − W·x| (W the dequantised weight, exact arithmetic), element `o`: quantizing a group
    /// g of x to 8 bits moves each element by at most d_g/2 (d_g = max_g|x|/127, round to nearest), and the
    /// integer dot products are exact, so the error is at most Σ_g (d_g/2)·Σ_{i∈g}|w_oi|, plus fp32 rounding of the
    /// scale products and the float accumulation, bounded here by 1e-5·Σ_i |w_oi|·(|x_i| + d_g/2).
    /// (Relative to Σ|w||x| this is at most 1/254 + 1e-5 when every group's max|x| is in the group's sum.)
    static func matvecErrorBound(weightRow w: UnsafePointer<Float>, x: UnsafePointer<Float>, n: Int) -> Double {
        var bound = 0.0
        for g in 0..<(n / 32) {
            var amax: Float = 0
            for i in 32 * g..<32 * g + 32 { amax = max(amax, abs(x[i])) }
            let half = Double(amax) / 127 / 2
            for i in 32 * g..<32 * g + 32 {
                let aw = Double(abs(w[i]))
                bound += half * aw + 1e-5 * aw * (Double(abs(x[i])) + half)
            }
        }
        return bound
    }

    // MARK: prefill / training

    /// fp32 panel size the tiles aim at (internal so scripts/bench_quant.sh can compare budgets). At N = 1024,
    /// 2048x5632 weights, 1 MiB (32 rows) ran at 13 GFLOP/s, 2 MiB (80 rows) 17, 4 MiB (176 rows) 18, 8 MiB (256
    /// rows) 19-21, plain sgemm on the widened weight 20-26: sgemm wants a wide panel more than a cached one.
    nonisolated(unsafe) static var panelBudgetBytes = 1 << 23

    /// Whether the products widen the whole weight into the panel at once (the weight has at most
    /// `panelBudgetBytes` / 4 elements: every matrix of a SmolLM2-135M layer, the key/value projections of a
    /// 1B model), then run the fp32 path's own `sgemm` on it: bit for bit the product over the widened weight,
    /// split across the pool by rows of the activations like that path. Tiles (`tileRows`) split the output
    /// features instead, and each thread multiplies its own narrow panels: at N = 1024, 2 threads, SmolLM2's
    /// 576x576 forward ran at 0.88x and its input gradient at 0.79x of sgemm on the widened weight, the whole
    /// panel at 0.98-1.0x.
    var widensWhole: Bool { outFeatures * inFeatures <= QuantizedMatrix.panelBudgetBytes / 4 }

    /// Runs `body` on the whole weight widened into `workspace` (an allocation of `outFeatures · inFeatures`
    /// floats when nil).
    private func withWholePanel(_ workspace: UnsafeMutablePointer<Float>?, isa: QuantISA,
                                _ body: (UnsafePointer<Float>) -> Void) {
        let panel = workspace ?? UnsafeMutablePointer<Float>.allocate(capacity: outFeatures * inFeatures)
        defer { if workspace == nil { panel.deallocate() } }
        dequantizeRows(0, outFeatures, into: panel, isa: isa)
        body(panel)
    }

    /// Output rows per fp32 panel of a tiled product: about `panelBudgetBytes`, 16 to 256 rows.
    var tileRows: Int {
        let t = QuantizedMatrix.panelBudgetBytes / (4 * inFeatures)
        return min(outFeatures, max(16, min(256, t / 16 * 16)))
    }

    /// out[rows, outFeatures] (leading dimension ldo) = inp[rows, inFeatures] (ldi) · Wᵀ + beta·out.
    func matmul(out: UnsafeMutablePointer<Float>, ldo: Int, inp: UnsafePointer<Float>, ldi: Int, rows: Int,
                beta: Float) {
        matmul(out: out, ldo: ldo, inp: inp, ldi: ldi, rows: rows, beta: beta, isa: .active)
    }

    func matmul(out: UnsafeMutablePointer<Float>, ldo: Int, inp: UnsafePointer<Float>, ldi: Int, rows: Int,
                beta: Float, isa: QuantISA, panel workspace: UnsafeMutablePointer<Float>? = nil) {
        guard rows > 0 else { return }
        let n = inFeatures
        if type == .f32, Int(bitPattern: data) % MemoryLayout<Float>.alignment == 0 {
            let w = data.assumingMemoryBound(to: Float.self)
            sgemm(transA: false, transB: true, m: rows, n: outFeatures, k: n,
                  alpha: 1, a: inp, lda: ldi, b: w, ldb: n, beta: beta, c: out, ldc: ldo)
            return
        }
        if widensWhole {
            withWholePanel(workspace, isa: isa) { w in
                sgemm(transA: false, transB: true, m: rows, n: outFeatures, k: n,
                      alpha: 1, a: inp, lda: ldi, b: w, ldb: n, beta: beta, c: out, ldc: ldo)
            }
            return
        }
        // Split across the pool by tiles of output features: each thread widens its own tiles and multiplies
        // them (single-threaded), so no thread waits while another widens. A tile's products are those of the
        // serial loop, element for element.
        let threads = numThreads()
        if threads > 1, !insideParallelChunk, outFeatures >= 32 {
            let cap = max(16, tileRows / threads / 16 * 16)
            var tiles = (outFeatures + cap - 1) / cap
            tiles = (tiles + threads - 1) / threads * threads
            let tr = ((outFeatures + tiles - 1) / tiles + 15) / 16 * 16
            tiles = (outFeatures + tr - 1) / tr
            // Thread slot s widens into its own tr·n floats of the workspace (tr ≤ tileRows / threads, so the
            // slots fit in `panelFloats` unless the tiles hit their 16-row minimum: then it allocates).
            let slots = min(threads, tiles)
            let shared = workspace.flatMap { slots * tr * n <= panelFloats ? $0 : nil }
            nonisolated(unsafe) let (o, x, ws) = (out, inp, shared)
            parallelFor(slots) { s0, s1 in
                for slot in s0..<s1 {
                    let panel = ws.map { $0 + slot * tr * n } ?? UnsafeMutablePointer<Float>.allocate(capacity: tr * n)
                    defer { if ws == nil { panel.deallocate() } }
                    for ti in tiles * slot / slots..<tiles * (slot + 1) / slots {
                        let r0 = ti * tr, t = min(tr, outFeatures - r0)
                        dequantizeRows(r0, t, into: panel, isa: isa)
                        sgemm(transA: false, transB: true, m: rows, n: t, k: n,
                              alpha: 1, a: x, lda: ldi, b: panel, ldb: n, beta: beta, c: o + r0, ldc: ldo)
                    }
                }
            }
            return
        }
        let tile = tileRows
        let panel = workspace ?? UnsafeMutablePointer<Float>.allocate(capacity: tile * n)
        defer { if workspace == nil { panel.deallocate() } }
        var r0 = 0
        while r0 < outFeatures {
            let t = min(tile, outFeatures - r0)
            dequantizeRows(r0, t, into: panel, isa: isa)
            sgemm(transA: false, transB: true, m: rows, n: t, k: n,
                  alpha: 1, a: inp, lda: ldi, b: panel, ldb: n, beta: beta, c: out + r0, ldc: ldo)
            r0 += t
        }
    }

    /// dinp[rows, inFeatures] (lddi) (+)= dout[rows, outFeatures] (lddo) · W: the input gradient of y = x·Wᵀ.
    /// With `accumulate` false, dinp is overwritten.
    func matmulInputGradient(dinp: UnsafeMutablePointer<Float>, lddi: Int, dout: UnsafePointer<Float>, lddo: Int,
                             rows: Int, accumulate: Bool) {
        matmulInputGradient(dinp: dinp, lddi: lddi, dout: dout, lddo: lddo, rows: rows, accumulate: accumulate,
                            isa: .active)
    }

    func matmulInputGradient(dinp: UnsafeMutablePointer<Float>, lddi: Int, dout: UnsafePointer<Float>, lddo: Int,
                             rows: Int, accumulate: Bool, isa: QuantISA, panel workspace: UnsafeMutablePointer<Float>? = nil) {
        guard rows > 0 else { return }
        let n = inFeatures
        if type == .f32, Int(bitPattern: data) % MemoryLayout<Float>.alignment == 0 {
            let w = data.assumingMemoryBound(to: Float.self)
            sgemm(transA: false, transB: false, m: rows, n: n, k: outFeatures,
                  alpha: 1, a: dout, lda: lddo, b: w, ldb: n, beta: accumulate ? 1 : 0, c: dinp, ldc: lddi)
            return
        }
        if widensWhole {
            withWholePanel(workspace, isa: isa) { w in
                sgemm(transA: false, transB: false, m: rows, n: n, k: outFeatures,
                      alpha: 1, a: dout, lda: lddo, b: w, ldb: n, beta: accumulate ? 1 : 0, c: dinp, ldc: lddi)
            }
            return
        }
        let tile = tileRows
        // Split across the pool by block-aligned ranges of input features: each thread widens its columns of
        // every tile and accumulates into its columns of dinp, over the tiles in the serial loop's order.
        let threads = numThreads(), bs = type.blockSize, units = n / bs
        if threads > 1, !insideParallelChunk, units >= 2 {
            let chunks = min(threads, units)
            // Chunk columns c0..<c1 widen into tile·(c1 − c0) floats at tile·c0 of the workspace: together
            // tile·n = `panelFloats`.
            nonisolated(unsafe) let (di, dout, ws) = (dinp, dout, workspace)
            let (t0, rb, bb, base) = (type, rowBytes, type.blockBytes, data)
            parallelFor(chunks) { a, b in
                for ch in a..<b {
                    let c0 = units * ch / chunks * bs, c1 = units * (ch + 1) / chunks * bs, w = c1 - c0
                    let panel = ws.map { $0 + tile * c0 } ?? UnsafeMutablePointer<Float>.allocate(capacity: tile * w)
                    defer { if ws == nil { panel.deallocate() } }
                    var r0 = 0
                    while r0 < outFeatures {
                        let t = min(tile, outFeatures - r0)
                        quantDequantizeRows(t0, base + r0 * rb + c0 / bs * bb, rowBytes: rb, rows: t, n: w, panel, ldd: w,
                                            isa: isa)
                        sgemm(transA: false, transB: false, m: rows, n: w, k: t, alpha: 1, a: dout + r0, lda: lddo,
                              b: panel, ldb: w, beta: (r0 > 0 || accumulate) ? 1 : 0, c: di + c0, ldc: lddi)
                        r0 += t
                    }
                }
            }
            return
        }
        let panel = workspace ?? UnsafeMutablePointer<Float>.allocate(capacity: tile * n)
        defer { if workspace == nil { panel.deallocate() } }
        var r0 = 0
        while r0 < outFeatures {
            let t = min(tile, outFeatures - r0)
            dequantizeRows(r0, t, into: panel, isa: isa)
            sgemm(transA: false, transB: false, m: rows, n: n, k: t,
                  alpha: 1, a: dout + r0, lda: lddo, b: panel, ldb: n, beta: (r0 > 0 || accumulate) ? 1 : 0, c: dinp, ldc: lddi)
            r0 += t
        }
    }
}

extension FrozenLinear {
    /// Decode (one row) of frozen linears that read the same input, as one `QuantizedMatrix.matvecSharingInput`
    /// (one activation quantization, one pool hand-off) when every one is block-quantized, bias-free and of the
    /// same in-features; returns false, having done nothing, otherwise. Each output is what `forward` gives.
    static func decodeSharingInput(_ lins: [FrozenLinear], outs: [UnsafeMutablePointer<Float>],
                                   inp: UnsafePointer<Float>) -> Bool {
        guard lins.count == outs.count, let n = lins.first?.inFeatures else { return false }
        var parts: [(QuantizedMatrix, UnsafeMutablePointer<Float>)] = []
        parts.reserveCapacity(lins.count)
        for (lin, y) in zip(lins, outs) {
            guard lin.bias == nil, case .quantized(let q, _) = lin.storage, q.type.isBlockQuantized,
                  q.inFeatures == n, q.outFeatures == lin.outFeatures else { return false }
            parts.append((q, y))
        }
        QuantizedMatrix.matvecSharingInput(parts, inp: inp)
        return true
    }
}
