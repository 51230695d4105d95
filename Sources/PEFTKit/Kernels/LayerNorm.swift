#if canImport(Glibc)
import Glibc
#endif

// LayerNorm (GPT-2, BERT, adapter ln_before/ln_after) and RMSNorm (Llama), forward and backward.
// Row statistics are summed in Double and rounded once; per-element math is Float.

/// LayerNorm over the last dimension, as torch.nn.LayerNorm (biased variance):
/// out = (inp - mean) * rstd * weight + bias, rstd = 1 / sqrt(var + eps).
/// out, inp: [N, C]; weight, bias: [C]; mean, rstd: [N] saved for the backward. `out` may equal `inp`.
func layerNormForward(_ out: UnsafeMutablePointer<Float>, _ mean: UnsafeMutablePointer<Float>,
                      _ rstd: UnsafeMutablePointer<Float>, _ inp: UnsafePointer<Float>,
                      _ weight: UnsafePointer<Float>, _ bias: UnsafePointer<Float>,
                      _ N: Int, _ C: Int, _ eps: Float) {
    if C <= 0 { return }
    parallelFor(N, grain: rowGrain(C)) { r0, r1 in
        for r in r0..<r1 {
            let x = inp + r * C
            let y = out + r * C
            var s = 0.0
            for i in 0..<C { s += Double(x[i]) }
            let m = s / Double(C)
            var ss = 0.0
            for i in 0..<C {
                let d = Double(x[i]) - m
                ss += d * d
            }
            let variance = ss / Double(C)
            let mf = Float(m)
            let rs = Float(1.0 / (variance + Double(eps)).squareRoot())
            for i in 0..<C { y[i] = (x[i] - mf) * rs * weight[i] + bias[i] }
            mean[r] = mf
            rstd[r] = rs
        }
    }
}

/// Backward of `layerNormForward`. With xhat = (inp - mean) * rstd and g = dout * weight:
/// dinp += rstd * (g - mean(g) - xhat * mean(g * xhat)); dweight += Σ_rows dout * xhat; dbias += Σ_rows dout.
/// dweight / dbias nil = frozen (skipped). The column sums are deterministic (see Elementwise.swift).
func layerNormBackward(_ dinp: UnsafeMutablePointer<Float>, _ dweight: UnsafeMutablePointer<Float>?,
                       _ dbias: UnsafeMutablePointer<Float>?, _ dout: UnsafePointer<Float>,
                       _ inp: UnsafePointer<Float>, _ weight: UnsafePointer<Float>,
                       _ mean: UnsafePointer<Float>, _ rstd: UnsafePointer<Float>,
                       _ N: Int, _ C: Int) {
    if C <= 0 { return }
    parallelFor(N, grain: rowGrain(C)) { r0, r1 in
        for r in r0..<r1 {
            let x = inp + r * C
            let d = dout + r * C
            let dx = dinp + r * C
            let m = mean[r], rs = rstd[r]
            var sumG = 0.0, sumGX = 0.0
            for i in 0..<C {
                let g = d[i] * weight[i]
                let xh = (x[i] - m) * rs
                sumG += Double(g)
                sumGX += Double(g) * Double(xh)
            }
            let meanG = Float(sumG / Double(C))
            let meanGX = Float(sumGX / Double(C))
            for i in 0..<C {
                let g = d[i] * weight[i]
                let xh = (x[i] - m) * rs
                dx[i] += rs * (g - meanG - xh * meanGX)
            }
        }
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
                    _ N: Int, _ C: Int, _ eps: Float) {
    if C <= 0 { return }
    parallelFor(N, grain: rowGrain(C)) { r0, r1 in
        for r in r0..<r1 {
            let x = inp + r * C
            let y = out + r * C
            var ss = 0.0
            for i in 0..<C { ss += Double(x[i]) * Double(x[i]) }
            let variance = Float(ss / Double(C))
            let rs = 1 / sqrtf(variance + eps)
            for i in 0..<C { y[i] = weight[i] * (x[i] * rs) }
            rstd[r] = rs
        }
    }
}

/// Backward of `rmsNormForward`. With g = dout * weight:
/// dinp += rstd * g - (rstd³ / C) * Σ(g * inp) * inp; dweight += Σ_rows dout * (inp * rstd) (nil = frozen).
func rmsNormBackward(_ dinp: UnsafeMutablePointer<Float>, _ dweight: UnsafeMutablePointer<Float>?,
                     _ dout: UnsafePointer<Float>, _ inp: UnsafePointer<Float>,
                     _ weight: UnsafePointer<Float>, _ rstd: UnsafePointer<Float>,
                     _ N: Int, _ C: Int) {
    if C <= 0 { return }
    parallelFor(N, grain: rowGrain(C)) { r0, r1 in
        for r in r0..<r1 {
            let x = inp + r * C
            let d = dout + r * C
            let dx = dinp + r * C
            let rs = rstd[r]
            var sumGX = 0.0
            for i in 0..<C { sumGX += Double(d[i] * weight[i]) * Double(x[i]) }
            let r64 = Double(rs)
            let k = Float(r64 * r64 * r64 * sumGX / Double(C))
            for i in 0..<C { dx[i] += rs * (d[i] * weight[i]) - k * x[i] }
        }
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
