#if canImport(Glibc)
import Glibc
#endif

// AdamW and the flat-vector helpers of the training step (gradient norm, scaling, finiteness check).

/// One AdamW step over n parameters, in the operation order of torch.optim.AdamW (single-tensor path,
/// amsgrad and maximize off). The hyperparameters are Double because torch keeps them as Python floats:
/// scalar expressions (1 − lr·wd, 1 − β1, the bias corrections, the step size) are computed in Double and
/// rounded to Float only where a tensor op consumes them; tensor math is Float:
///
///     p = p * Float(1 − lr·wd)                          (skipped when wd == 0, as torch)
///     m = lerp(m, g, Float(1 − β1))                     torch's lerp_: m + w·(g − m) for w < 0.5,
///                                                       else g − (g − m)·(1 − w), each with one rounding
///                                                       (torch's vectorised lerp is a fused multiply-add)
///     v = v * Float(β2) + (Float(1 − β2) * g) * g       mul_ then addcmul_; the final multiply-add is
///                                                       fused (one rounding), as GCC contracts it in
///                                                       torch's CPU kernel
///     bc1 = 1 − β1^step, bc2 = 1 − β2^step              Double (pow of libm, as Python)
///     denom = sqrt(v) / Float(bc2 ** 0.5) + Float(eps)
///     p = p + (Float(−lr / bc1) * m) / denom            addcdiv_
///
/// Checked against torch 2.x AdamW (CPU wheel, single-tensor) on random data: m and v match bitwise, and so
/// does every later op given torch's sqrt; torch's sqrt itself (MKL vector math in the wheel) is off by one
/// ulp in about a fifth of the elements, where this kernel uses the correctly rounded IEEE sqrt, so p agrees
/// to an ulp of the update.
///
/// `step` is 1-based (the count after this update). Elementwise, so trivially deterministic.
func adamwUpdate(_ params: UnsafeMutablePointer<Float>, _ grads: UnsafePointer<Float>,
                 _ m: UnsafeMutablePointer<Float>, _ v: UnsafeMutablePointer<Float>, _ n: Int,
                 lr: Double, beta1: Double, beta2: Double, eps: Double, weightDecay: Double, step: Int) {
    precondition(step >= 1, "adamwUpdate: step is 1-based")
    // torch skips the decay when wd == 0; multiplying by exactly 1 is the same bits, without a branch.
    let decay = weightDecay != 0 ? Float(1 - lr * weightDecay) : 1
    let w = Float(1 - beta1)
    // lerp: base + coef·(g − m) with (base, coef) = (m, w) when |w| < 0.5, else (g, w − 1).
    let smallWeight = abs(w) < 0.5
    let coef = Double(smallWeight ? w : w - 1)
    let b2 = Float(beta2)
    let c2 = Float(1 - beta2)
    let bc1 = 1 - pow(beta1, Double(step))
    let bc2 = 1 - pow(beta2, Double(step))
    let negStepSize = Float(-(lr / bc1))
    let bc2Sqrt = Float(pow(bc2, 0.5))
    let epsF = Float(eps)
    parallelFor(n, grain: kernelParallelGrain) { s, e in
        for i in s..<e {
            let p = params[i] * decay
            let g = grads[i]
            let mOld = m[i]
            let diff = g - mOld
            // A product of two Floats is exact in Double, so Double(a) + Double(b)·Double(c) rounded to Float
            // is the fused multiply-add a + b·c (up to rare double-rounding ties).
            let base = smallWeight ? mOld : g
            let mNew = Float(Double(base) + coef * Double(diff))
            m[i] = mNew
            let vNew = Float(Double(v[i] * b2) + Double(c2 * g) * Double(g))
            v[i] = vNew
            let denom = vNew.squareRoot() / bc2Sqrt + epsF
            params[i] = p + (negStepSize * mNew) / denom
        }
    }
}

/// Elements per block of `sumOfSquares`; fixed, so the blocking never depends on the thread count.
private let reductionBlock = 8192

/// Σ x[i]² in Double. Deterministic: fixed blocks of 8192 with eight interleaved partial sums each, the block
/// sums added serially in order, whatever the number of threads.
func sumOfSquares(_ x: UnsafePointer<Float>, _ n: Int) -> Double {
    if n <= 0 { return 0 }
    let blocks = (n + reductionBlock - 1) / reductionBlock
    return withUnsafeTemporaryAllocation(of: Double.self, capacity: blocks) { buf -> Double in
        guard let partial = buf.baseAddress else { return 0 }
        parallelFor(blocks, grain: 4) { b0, b1 in
            for b in b0..<b1 {
                let start = b * reductionBlock
                let end = min(n, start + reductionBlock)
                var acc = SIMD8<Double>(repeating: 0)
                var i = start
                while i + 8 <= end {
                    let f = UnsafeRawPointer(x + i).loadUnaligned(as: SIMD8<Float>.self)
                    let d = SIMD8<Double>(f)
                    acc += d * d
                    i += 8
                }
                var tail = 0.0
                while i < end {
                    let d = Double(x[i])
                    tail += d * d
                    i += 1
                }
                partial[b] = acc.sum() + tail
            }
        }
        var total = 0.0
        for b in 0..<blocks { total += partial[b] }
        return total
    }
}

/// x[i] *= s.
func scaleInPlace(_ x: UnsafeMutablePointer<Float>, _ n: Int, _ s: Float) {
    parallelFor(n, grain: 4 * kernelParallelGrain) { b, e in
        for i in b..<e { x[i] *= s }
    }
}

/// True when no element is NaN or ±infinity (checks the exponent bits, so it vectorises).
func isAllFinite(_ x: UnsafePointer<Float>, _ n: Int) -> Bool {
    if n <= 0 { return true }
    var bad: UInt32 = 0
    var start = 0
    while start < n {
        let end = min(n, start + reductionBlock)
        for i in start..<end {
            // The exponent field is all ones exactly for NaN and infinities; adding one exponent ulp then
            // carries into the sign bit.
            bad |= ((x[i].bitPattern & 0x7F80_0000) &+ 0x0080_0000) >> 31
        }
        if bad != 0 { return false }
        start = end
    }
    return true
}
