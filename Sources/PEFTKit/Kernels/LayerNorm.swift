import CPEFTKitKernels
#if canImport(Glibc)
import Glibc
#endif

// LayerNorm (GPT-2, BERT, adapter ln_before/ln_after) and RMSNorm (Llama), forward and backward.
// Row statistics are summed in Double and rounded once; per-element math is Float. The row work (statistics,
// outputs, input gradients) runs in C on the CPU's vector path (elementwise.c, `ElementwiseISA`): the vector
// paths sum a row in W Double lanes added in lane order and fuse the multiply-adds, so paths differ by rounding
// only. The column reductions of the weight and bias gradients stay here (deterministic, see Elementwise.swift).

/// LayerNorm over the last dimension, as torch.nn.LayerNorm (biased variance):
/// out = (inp - mean) * rstd * weight + bias, rstd = 1 / sqrt(var + eps).
/// out, inp: [N, C]; weight, bias: [C]; mean, rstd: [N] saved for the backward. `out` may equal `inp`.
func layerNormForward(_ out: UnsafeMutablePointer<Float>, _ mean: UnsafeMutablePointer<Float>,
                      _ rstd: UnsafeMutablePointer<Float>, _ inp: UnsafePointer<Float>,
                      _ weight: UnsafePointer<Float>, _ bias: UnsafePointer<Float>,
                      _ N: Int, _ C: Int, _ eps: Float, isa: ElementwiseISA = .active) {
    if C <= 0 { return }
    parallelFor(N, grain: rowGrain(C)) { r0, r1 in
        pk_ew_layernorm_forward(isa.rawValue, out + r0 * C, mean + r0, rstd + r0, inp + r0 * C, weight, bias,
                                Int64(r1 - r0), Int64(C), eps)
    }
}

/// Backward of `layerNormForward`. With xhat = (inp - mean) * rstd and g = dout * weight:
/// dinp += rstd * (g - mean(g) - xhat * mean(g * xhat)); dweight += Σ_rows dout * xhat; dbias += Σ_rows dout.
/// dweight / dbias nil = frozen (skipped). The column sums are deterministic (see Elementwise.swift).
func layerNormBackward(_ dinp: UnsafeMutablePointer<Float>, _ dweight: UnsafeMutablePointer<Float>?,
                       _ dbias: UnsafeMutablePointer<Float>?, _ dout: UnsafePointer<Float>,
                       _ inp: UnsafePointer<Float>, _ weight: UnsafePointer<Float>,
                       _ mean: UnsafePointer<Float>, _ rstd: UnsafePointer<Float>,
                       _ N: Int, _ C: Int, isa: ElementwiseISA = .active) {
    if C <= 0 { return }
    parallelFor(N, grain: rowGrain(C)) { r0, r1 in
        pk_ew_layernorm_backward(isa.rawValue, dinp + r0 * C, dout + r0 * C, inp + r0 * C, weight, mean + r0,
                                 rstd + r0, Int64(r1 - r0), Int64(C))
    }
    if dweight == nil && dbias == nil { return }
    forEachColumnBlock(N, C) { c0, w, accW, accB in
        for r in 0..<N {
            let x = inp + r * C + c0
            let d = dout + r * C + c0
            let m = mean[r], rs = rstd[r]
            if dweight != nil {
                for j in 0..<w { accW[j] += Double(d[j] * ((x[j] - m) * rs)) }
            }
            if dbias != nil {
                for j in 0..<w { accB[j] += Double(d[j]) }
            }
        }
        if let dweight { for j in 0..<w { dweight[c0 + j] += Float(accW[j]) } }
        if let dbias { for j in 0..<w { dbias[c0 + j] += Float(accB[j]) } }
    }
}

/// RMSNorm as transformers' LlamaRMSNorm: out = weight * (inp * rstd), rstd = 1 / sqrt(mean(inp²) + eps).
/// The mean of squares is summed in Double, rounded to Float, then eps is added and the root taken in Float
/// (torch's order). out, inp: [N, C]; weight: [C]; rstd: [N] saved. `out` may equal `inp`.
func rmsNormForward(_ out: UnsafeMutablePointer<Float>, _ rstd: UnsafeMutablePointer<Float>,
                    _ inp: UnsafePointer<Float>, _ weight: UnsafePointer<Float>,
                    _ N: Int, _ C: Int, _ eps: Float, isa: ElementwiseISA = .active) {
    if C <= 0 { return }
    parallelFor(N, grain: rowGrain(C)) { r0, r1 in
        pk_ew_rmsnorm_forward(isa.rawValue, out + r0 * C, rstd + r0, inp + r0 * C, weight, Int64(r1 - r0),
                              Int64(C), eps)
    }
}

/// Backward of `rmsNormForward`. With g = dout * weight:
/// dinp += rstd * g - (rstd³ / C) * Σ(g * inp) * inp; dweight += Σ_rows dout * (inp * rstd) (nil = frozen).
func rmsNormBackward(_ dinp: UnsafeMutablePointer<Float>, _ dweight: UnsafeMutablePointer<Float>?,
                     _ dout: UnsafePointer<Float>, _ inp: UnsafePointer<Float>,
                     _ weight: UnsafePointer<Float>, _ rstd: UnsafePointer<Float>,
                     _ N: Int, _ C: Int, isa: ElementwiseISA = .active) {
    if C <= 0 { return }
    parallelFor(N, grain: rowGrain(C)) { r0, r1 in
        pk_ew_rmsnorm_backward(isa.rawValue, dinp + r0 * C, dout + r0 * C, inp + r0 * C, weight, rstd + r0,
                               Int64(r1 - r0), Int64(C))
    }
    guard let dweight else { return }
    forEachColumnBlock(N, C) { c0, w, acc, _ in
        for r in 0..<N {
            let x = inp + r * C + c0
            let d = dout + r * C + c0
            let rs = rstd[r]
            for j in 0..<w { acc[j] += Double(d[j] * (x[j] * rs)) }
        }
        for j in 0..<w { dweight[c0 + j] += Float(acc[j]) }
    }
}
