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
                 _ m: UnsafeMutablePointer<Float>, _ v: UnsafeMutablePointer<Float>, _ n: Int, _ k: AdamWConstants) {
    parallelFor(n, grain: kernelParallelGrain) { s, e in
        for i in s..<e {
            let (p, mNew, vNew) = k.element(params[i], grads[i], m[i], v[i])
            m[i] = mNew
            v[i] = vNew
            params[i] = p
        }
    }
}

/// Whether `adamwUpdate` with the same arguments would leave every parameter and both moments finite. Read-only,
/// and the same arithmetic (`AdamWConstants.element`), so its answer is exact for that kernel. Finite gradients
/// with an extreme learning rate can still push a weight to infinity, and a huge finite gradient can overflow
/// v: this is what makes "a refused step changes nothing" hold for the update itself.
func adamwUpdateStaysFinite(_ params: UnsafePointer<Float>, _ grads: UnsafePointer<Float>,
                            _ m: UnsafePointer<Float>, _ v: UnsafePointer<Float>, _ n: Int, _ k: AdamWConstants) -> Bool {
    guard k.isFinite else { return false }
    var bad: UInt32 = 0
    for i in 0..<max(0, n) {
        let (p, mNew, vNew) = k.element(params[i], grads[i], m[i], v[i])
        // The exponent field is all ones exactly for NaN and infinities.
        bad |= ((p.bitPattern & 0x7F80_0000) &+ 0x0080_0000) >> 31
        bad |= ((mNew.bitPattern & 0x7F80_0000) &+ 0x0080_0000) >> 31
        bad |= ((vNew.bitPattern & 0x7F80_0000) &+ 0x0080_0000) >> 31
    }
    return bad == 0
}

/// `adamwUpdate` with its hyper-parameters spelled out; `step` is 1-based.
func adamwUpdate(_ params: UnsafeMutablePointer<Float>, _ grads: UnsafePointer<Float>,
                 _ m: UnsafeMutablePointer<Float>, _ v: UnsafeMutablePointer<Float>, _ n: Int,
                 lr: Double, beta1: Double, beta2: Double, eps: Double, weightDecay: Double, step: Int) {
    adamwUpdate(params, grads, m, v, n, AdamWConstants(lr: lr, beta1: beta1, beta2: beta2, eps: eps, weightDecay: weightDecay, step: step))
}

/// `adamwUpdateStaysFinite` with its hyper-parameters spelled out; false for a step below 1.
func adamwUpdateStaysFinite(_ params: UnsafePointer<Float>, _ grads: UnsafePointer<Float>,
                            _ m: UnsafePointer<Float>, _ v: UnsafePointer<Float>, _ n: Int,
                            lr: Double, beta1: Double, beta2: Double, eps: Double, weightDecay: Double, step: Int) -> Bool {
    guard step >= 1 else { return false }
    return adamwUpdateStaysFinite(params, grads, m, v, n,
                                  AdamWConstants(lr: lr, beta1: beta1, beta2: beta2, eps: eps, weightDecay: weightDecay, step: step))
}

/// The scalars of one AdamW step (see `adamwUpdate`), computed once in Double as torch does.
struct AdamWConstants {
    let decay: Float, smallWeight: Bool, coef: Double, b2: Float, c2: Float
    let negStepSize: Float, bc2Sqrt: Float, epsF: Float

    /// `step` is 1-based (the count after this update).
    init(lr: Double, beta1: Double, beta2: Double, eps: Double, weightDecay: Double, step: Int) {
        // torch skips the decay when wd == 0; multiplying by exactly 1 is the same bits, without a branch.
        decay = weightDecay != 0 ? Float(1 - lr * weightDecay) : 1
        let w = Float(1 - beta1)
        // lerp: base + coef·(g − m) with (base, coef) = (m, w) when |w| < 0.5, else (g, w − 1).
        smallWeight = abs(w) < 0.5
        coef = Double(smallWeight ? w : w - 1)
        b2 = Float(beta2)
        c2 = Float(1 - beta2)
        let bc1 = 1 - pow(beta1, Double(max(step, 1)))
        let bc2 = 1 - pow(beta2, Double(max(step, 1)))
        negStepSize = Float(-(lr / bc1))
        bc2Sqrt = Float(pow(bc2, 0.5))
        epsF = Float(eps)
    }

    var isFinite: Bool { decay.isFinite && negStepSize.isFinite && bc2Sqrt.isFinite && bc2Sqrt > 0 }

    /// New (parameter, m, v) of one element.
    @inline(__always)
    func element(_ param: Float, _ g: Float, _ mOld: Float, _ vOld: Float) -> (Float, Float, Float) {
        let p = param * decay
        // A product of two Floats is exact in Double, so Double(a) + Double(b)·Double(c) rounded to Float
        // is the fused multiply-add a + b·c (up to rare double-rounding ties).
        let base = smallWeight ? mOld : g
        let mNew = Float(Double(base) + coef * Double(g - mOld))
        let vNew = Float(Double(vOld * b2) + Double(c2 * g) * Double(g))
        let denom = vNew.squareRoot() / bc2Sqrt + epsF
        return (p + (negStepSize * mNew) / denom, mNew, vNew)
    }
}

/// Everything AdamW keeps for one block of trainable parameters: gradients and both moments in the block's
/// layout (so the update is one flat loop), and the step count. Adapters and full fine-tuning use it alike.
/// The parameters may live in several places (an adapter's block and a task head's): `segments` lists them in
/// gradient order, and gradients and moments stay one flat block over all of them.
final class OptimizerState {
    /// The trained parameters of the first segment (owned by the adapter or the fine-tuned weights).
    let params: UnsafeMutablePointer<Float>
    /// Parameters over every segment.
    let count: Int
    /// The parameter blocks, in gradient order.
    let segments: [(params: UnsafeMutablePointer<Float>, count: Int)]
    let grads: Storage, m: Storage, v: Storage
    /// Updates taken.
    var step = 0

    convenience init(params: UnsafeMutablePointer<Float>, count: Int) throws {
        try self.init(segments: [(params, count)])
    }

    init(segments: [(params: UnsafeMutablePointer<Float>, count: Int)]) throws {
        self.segments = segments
        params = segments[0].params
        count = segments.reduce(0) { $0 + $1.count }
        grads = try Storage.allocate(floats: count)
        m = try Storage.allocate(floats: count)
        v = try Storage.allocate(floats: count)
    }

    /// The pieces of flat range `r`: (parameters, flat offset, length) per segment it touches.
    private func pieces(_ r: Range<Int>) -> [(UnsafeMutablePointer<Float>, Int, Int)] {
        var out: [(UnsafeMutablePointer<Float>, Int, Int)] = []
        var start = 0
        for s in segments {
            let lo = max(r.lowerBound, start), hi = min(r.upperBound, start + s.count)
            if lo < hi { out.append((s.params + (lo - start), lo, hi - lo)) }
            start += s.count
        }
        return out
    }

    /// Calls `body` with every trained parameter in gradient order (copied when there are several segments).
    func withFlatParameters<R>(_ body: (UnsafeBufferPointer<Float>) throws -> R) rethrows -> R {
        if segments.count == 1 { return try body(UnsafeBufferPointer(start: params, count: count)) }
        var flat: [Float] = []
        flat.reserveCapacity(count)
        for s in segments { flat.append(contentsOf: UnsafeBufferPointer(start: s.params, count: s.count)) }
        return try flat.withUnsafeBufferPointer { try body($0) }
    }

    /// One AdamW update from `grads`, or false (and nothing changed) if it would make a value non-finite.
    /// `groups` gives parameter ranges their own learning rate, `lr · scale` (torch's parameter groups, e.g.
    /// LoRA+'s B at `ratio · lr`); each group's scalars are computed from its own lr in Double as torch does.
    /// Elements outside every group use `lr`. nil: one group.
    func update(lr: Double, beta1: Double, beta2: Double, eps: Double, weightDecay: Double,
                groups: [LearningRateGroup]? = nil) -> Bool {
        let parts = groups ?? [LearningRateGroup(range: 0..<count, scale: 1)]
        let ks = parts.map { AdamWConstants(lr: lr * $0.scale, beta1: beta1, beta2: beta2, eps: eps, weightDecay: weightDecay, step: step + 1) }
        for (g, k) in zip(parts, ks) {
            guard g.range.lowerBound >= 0, g.range.upperBound <= count else { return false }
            for (p, o, n) in pieces(g.range) {
                guard adamwUpdateStaysFinite(p, grads.floats + o, m.floats + o, v.floats + o, n, k) else { return false }
            }
        }
        for (g, k) in zip(parts, ks) {
            for (p, o, n) in pieces(g.range) {
                adamwUpdate(p, grads.floats + o, m.floats + o, v.floats + o, n, k)
            }
        }
        step += 1
        return true
    }
}

/// A range of a parameter block trained at `scale` times the step's learning rate.
struct LearningRateGroup: Equatable {
    var range: Range<Int>
    var scale: Double
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
