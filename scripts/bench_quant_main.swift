// Driver of scripts/bench_quant.sh (not part of the package).
@testable import PEFTKit
import COpenBLAS
#if canImport(Glibc)
import Glibc
#endif

func pad(_ s: String, _ n: Int) -> String { s.count >= n ? s + " " : s + String(repeating: " ", count: n - s.count) }
func f1(_ v: Double) -> String { String(Double(Int((v * 10).rounded())) / 10) }

/// Process CPU time with one thread (the machines here are shared: wall time of a busy 2-core box is noise),
/// wall time with more.
nonisolated(unsafe) var clockID = CLOCK_PROCESS_CPUTIME_ID

func now() -> Double {
    var t = timespec()
    clock_gettime(clockID, &t)
    return Double(t.tv_sec) + Double(t.tv_nsec) * 1e-9
}

/// Best of `reps` timings after one warm-up, in seconds.
func best(_ reps: Int, _ f: () -> Void) -> Double {
    f()
    var b = Double.infinity
    for _ in 0..<reps {
        let t0 = now()
        f()
        b = min(b, now() - t0)
    }
    return b
}

func randomBlocks(_ t: GGMLType, out: Int, inF: Int, _ rng: inout Rng) -> UnsafeMutableRawPointer {
    let bytes = out * (inF / t.blockSize * t.blockBytes)
    let p = UnsafeMutableRawPointer.allocate(byteCount: bytes, alignment: 64)
    let b = p.bindMemory(to: UInt8.self, capacity: bytes)
    for i in 0..<bytes { b[i] = UInt8(truncatingIfNeeded: rng.nextUInt64()) }
    let halves: [Int] = t == .q6_K ? [208] : ([.q4_1, .q5_1, .q4_K, .q5_K].contains(t) ? [0, 2] : [0])
    for blk in 0..<(bytes / t.blockBytes) {
        for off in halves { b[blk * t.blockBytes + off] = 0; b[blk * t.blockBytes + off + 1] = 0x20 }
    }
    return p
}

let threads = CommandLine.arguments.count > 1 ? Int(CommandLine.arguments[1]) ?? 1 : 1
setNumThreads(threads)
openblas_set_num_threads(Int32(threads))
if threads > 1 { clockID = CLOCK_MONOTONIC }
var rng = Rng(seed: 1)
print("threads \(numThreads()) (\(threads > 1 ? "wall" : "CPU") time), kernels detected: \(QuantISA.detected)")
let shapes = [(576, 1536), (1536, 576), (2048, 5632), (5632, 2048)]  // (out, in)
print("\nmatvec: GB/s of weight bytes streamed (best of 20)")
print(pad("type  out x in", 18) + pad("MB", 7) + QuantISA.available.map { pad(String(describing: $0), 14) }.joined())
for t in [GGMLType.q4_1, .q8_0, .q4_K] {
    for (out, inF) in shapes where inF % t.blockSize == 0 {
        let p = randomBlocks(t, out: out, inF: inF, &rng)
        let bytes = out * (inF / t.blockSize * t.blockBytes)
        let m = try! QuantizedMatrix(type: t, outFeatures: out, inFeatures: inF, data: p, byteCount: bytes)
        let x = UnsafeMutablePointer<Float>.allocate(capacity: inF)
        let y = UnsafeMutablePointer<Float>.allocate(capacity: out)
        for i in 0..<inF { x[i] = rng.normal() }
        var line = pad("\(t)  \(out)x\(inF)", 18)
        line += pad(f1(Double(bytes) / 1e6), 7)
        for isa in QuantISA.available {
            let s = best(20) { m.matvec(out: y, inp: x, isa: isa) }
            line += pad(f1(Double(bytes) / s / 1e9) + " GB/s", 14)
        }
        print(line)
        p.deallocate(); x.deallocate(); y.deallocate()
    }
}

print("\nmatmul N=1024: tile dequant + sgemm vs sgemm on the widened fp32 weight vs int8 GEMM, GFLOP/s (best of 3)")
let N = 1024
for t in [GGMLType.q4_1, .q8_0, .q4_K] {
    for (out, inF) in shapes where inF % t.blockSize == 0 {
        let p = randomBlocks(t, out: out, inF: inF, &rng)
        let bytes = out * (inF / t.blockSize * t.blockBytes)
        let m = try! QuantizedMatrix(type: t, outFeatures: out, inFeatures: inF, data: p, byteCount: bytes)
        let x = UnsafeMutablePointer<Float>.allocate(capacity: N * inF)
        let y = UnsafeMutablePointer<Float>.allocate(capacity: N * out)
        let w = UnsafeMutablePointer<Float>.allocate(capacity: out * inF)
        for i in 0..<(N * inF) { x[i] = rng.normal() }
        m.dequantizeRows(0, out, into: w)
        let flop = 2.0 * Double(N) * Double(out) * Double(inF)
        var budgets = ""
        for budget in [1 << 20, 1 << 21, 1 << 22] {
            QuantizedMatrix.panelBudgetBytes = budget
            let tb = best(3) { m.matmul(out: y, ldo: out, inp: x, ldi: inF, rows: N, beta: 0) }
            budgets += " \(budget >> 20) MiB/\(m.tileRows) rows \(f1(flop / tb / 1e9))"
        }
        QuantizedMatrix.panelBudgetBytes = 1 << 23
        let tq = best(3) { m.matmul(out: y, ldo: out, inp: x, ldi: inF, rows: N, beta: 0) }
        let tf = best(3) {
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(N), Int32(out), Int32(inF), 1, x, Int32(inF),
                        w, Int32(inF), 0, y, Int32(out))
        }
        let tg = best(3) { m.matmulInputGradient(dinp: x, lddi: inF, dout: y, lddo: out, rows: N, accumulate: false) }
        let tdq = best(3) { m.dequantizeRows(0, out, into: w) }
        let ti = best(3) { m.matmulInt8(out: y, ldo: out, inp: x, ldi: inF, rows: N) }
        var line = "\(t)  \(out)x\(inF)  tile \(m.tileRows) rows: quant \(f1(flop / tq / 1e9)), "
        line += "fp32 sgemm \(f1(flop / tf / 1e9)) GFLOP/s; quant input grad \(f1(flop / tg / 1e9)); "
        line += "int8 GEMM \(f1(flop / ti / 1e9)); full dequant \(f1(tdq * 1e3)) ms"
        print(line)
        print("      other panel budgets:" + budgets)
        p.deallocate(); x.deallocate(); y.deallocate(); w.deallocate()
    }
}
