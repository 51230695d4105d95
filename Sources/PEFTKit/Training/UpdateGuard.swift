#if canImport(Glibc)
import Glibc
#endif

// The check that makes "a refused step changes nothing" hold for the optimiser update itself: finite gradients
// with an extreme learning rate can still push a weight to infinity, and a huge finite gradient can overflow v.
// The engine runs this read-only pass before `adamwUpdate` and refuses the step if any new weight would not be
// finite (or a moment would overflow), so no weight, moment or step count is touched.

/// Whether `adamwUpdate` with the same arguments would leave every parameter and both moments finite. Read-only; mirrors
/// `adamwUpdate`'s arithmetic operation for operation, so its answer is exact for that kernel.
func adamwUpdateStaysFinite(_ params: UnsafePointer<Float>, _ grads: UnsafePointer<Float>,
                            _ m: UnsafePointer<Float>, _ v: UnsafePointer<Float>, _ n: Int,
                            lr: Double, beta1: Double, beta2: Double, eps: Double, weightDecay: Double, step: Int) -> Bool {
    guard step >= 1 else { return false }
    let decay = weightDecay != 0 ? Float(1 - lr * weightDecay) : 1
    let w = Float(1 - beta1)
    let smallWeight = abs(w) < 0.5
    let coef = Double(smallWeight ? w : w - 1)
    let b2 = Float(beta2)
    let c2 = Float(1 - beta2)
    let bc1 = 1 - pow(beta1, Double(step))
    let bc2 = 1 - pow(beta2, Double(step))
    let negStepSize = Float(-(lr / bc1))
    let bc2Sqrt = Float(pow(bc2, 0.5))
    let epsF = Float(eps)
    guard decay.isFinite, negStepSize.isFinite, bc2Sqrt.isFinite, bc2Sqrt > 0 else { return false }
    var bad: UInt32 = 0
    for i in 0..<max(0, n) {
        let p = params[i] * decay
        let g = grads[i]
        let mOld = m[i]
        let base = smallWeight ? mOld : g
        let mNew = Float(Double(base) + coef * Double(g - mOld))
        let vNew = Float(Double(v[i] * b2) + Double(c2 * g) * Double(g))
        let denom = vNew.squareRoot() / bc2Sqrt + epsF
        let pNew = p + (negStepSize * mNew) / denom
        // The exponent field is all ones exactly for NaN and infinities.
        bad |= ((pNew.bitPattern & 0x7F80_0000) &+ 0x0080_0000) >> 31
        bad |= ((mNew.bitPattern & 0x7F80_0000) &+ 0x0080_0000) >> 31
        bad |= ((vNew.bitPattern & 0x7F80_0000) &+ 0x0080_0000) >> 31
    }
    return bad == 0
}
