#if canImport(Glibc)
import Glibc
#endif

/// The non-linearities of the kernels below (and of adapter modules), by their transformers names.
public enum Activation: String, Sendable, Codable, CaseIterable {
    case relu
    /// Exact (erf) GELU, as transformers' `"gelu"`.
    case gelu
    /// GELU with the tanh approximation (transformers' `"gelu_new"`).
    case geluTanh = "gelu_new"
    /// SiLU, x·sigmoid(x) (AdapterHub's `"swish"`).
    case swish
}

// Pointwise non-linearities (adapter activations, MLP activations) and SwiGLU (Llama MLP), forward and
// backward. Formulas and operation order follow PyTorch's CPU kernels; libm's erff and `vexp` below stand in
// for torch's vectorised erf / exp, so results agree to about an ulp of the larger terms, not bitwise.
// "gelu_new" uses the identity 0.5·x·(1 + tanh u) = x·sigmoid(2u): one exp instead of glibc's slow tanhf,
// and no cancellation in 1 + tanh u for negative x (torch's form loses relative accuracy there).

// MARK: - Vector exp

/// e^x on 8 lanes, for the exp-bound kernels (softmax, SiLU, SwiGLU, tanh-GELU). Within 2 ulp of the exact
/// value over the whole Float range (test: `vectorExpAccuracy`), about the accuracy of torch's vectorised
/// expf (1 ulp) and several times faster than calling libm's expf per element.
/// x = n·ln2 + r with |r| ≤ ln2/2 (Cody–Waite split of ln2), e^r by its degree-7 Taylor polynomial, then
/// two exact power-of-two scalings so that results near overflow and in the subnormal range are right.
/// x > 89 gives +inf, x < −104 gives 0, NaN stays NaN.
@inline(__always)
func vexp(_ x: SIMD8<Float>) -> SIMD8<Float> {
    let log2e: Float = 1.44269504088896340736
    let ln2Hi: Float = 0.693359375                // 355/512: n·ln2Hi is exact for |n| < 2^15
    let ln2Lo: Float = -2.12194440054690583e-4    // ln2 − ln2Hi
    let roundMagic: Float = 12582912              // 1.5·2^23: adding it rounds to an integer
    var xc = x
    xc.replace(with: 89, where: x .> 89)
    xc.replace(with: -104, where: x .< -104)
    let t = xc * log2e + roundMagic
    let nf = t - roundMagic
    let n = unsafeBitCast(t, to: SIMD8<Int32>.self) &- Int32(bitPattern: roundMagic.bitPattern)
    let r = (xc - nf * ln2Hi) - nf * ln2Lo
    var p: SIMD8<Float> = SIMD8(repeating: 1.0 / 5040)
    p = p * r + 1.0 / 720
    p = p * r + 1.0 / 120
    p = p * r + 1.0 / 24
    p = p * r + 1.0 / 6
    p = p * r + 0.5
    p = p * r + 1
    p = p * r + 1
    // 2^n as 2^n1 · 2^n2 with n1, n2 in [−75, 64]: each factor is a normal Float.
    let n1 = n &>> 1
    let n2 = n &- n1
    let s1 = unsafeBitCast((n1 &+ 127) &<< 23, to: SIMD8<Float>.self)
    let s2 = unsafeBitCast((n2 &+ 127) &<< 23, to: SIMD8<Float>.self)
    return (p * s1) * s2
}

/// Loads x[i..<i+8], padding with zeros past `end`. Elementwise kernels process partial groups this way so
/// that every element goes through the same arithmetic wherever chunk boundaries fall.
@inline(__always)
func load8(_ x: UnsafePointer<Float>, _ i: Int, _ end: Int) -> SIMD8<Float> {
    if i + 8 <= end { return UnsafeRawPointer(x + i).loadUnaligned(as: SIMD8<Float>.self) }
    var v = SIMD8<Float>(repeating: 0)
    for j in 0..<(end - i) { v[j] = x[i + j] }
    return v
}

/// Stores the first min(8, end − i) lanes of `v` at x[i...].
@inline(__always)
func store8(_ x: UnsafeMutablePointer<Float>, _ i: Int, _ end: Int, _ v: SIMD8<Float>) {
    if i + 8 <= end {
        UnsafeMutableRawPointer(x + i).storeBytes(of: v, as: SIMD8<Float>.self)
        return
    }
    for j in 0..<(end - i) { x[i + j] = v[j] }
}

// MARK: - Activations

/// 1/sqrt(2), as M_SQRT1_2.
private let sqrtHalf: Float = 0.707106781186547524400844362104849039
/// 1/sqrt(2π): the standard normal density at 0.
private let invSqrt2Pi: Float = 0.398942280401432677939946059934381868
/// sqrt(2/π), the tanh-GELU constant.
private let sqrt2OverPi: Float = 0.797884560802865355879892119868763737
private let geluKappa: Float = 0.044715

/// out[i] = act(inp[i]) for i in 0..<n. `out` may equal `inp` (in place).
func activationForward(_ act: Activation, _ out: UnsafeMutablePointer<Float>, _ inp: UnsafePointer<Float>,
                       _ n: Int) {
    parallelFor(n, grain: kernelParallelGrain) { s, e in
        switch act {
        case .relu:
            // NaN passes through (as torch), so a diverging run is not masked.
            for i in s..<e {
                let x = inp[i]
                out[i] = x < 0 ? 0 : x
            }
        case .gelu:
            // torch: x * 0.5 * (1 + erf(x * M_SQRT1_2))
            for i in s..<e {
                let x = inp[i]
                out[i] = x * 0.5 * (1 + erff(x * sqrtHalf))
            }
        case .geluTanh:
            // transformers NewGELUActivation: 0.5 * x * (1 + tanh(u)), u = sqrt(2/π) * (x + 0.044715 * x³),
            // evaluated as x / (1 + exp(-2u)).
            var i = s
            while i < e {
                let x = load8(inp, i, e)
                let u = sqrt2OverPi * (x + geluKappa * (x * x * x))
                store8(out, i, e, x / (1 + vexp(-2 * u)))
                i += 8
            }
        case .swish:
            // torch silu: x / (1 + exp(-x))
            var i = s
            while i < e {
                let x = load8(inp, i, e)
                store8(out, i, e, x / (1 + vexp(-x)))
                i += 8
            }
        }
    }
}

/// dinp[i] += act'(inp[i]) * dout[i] for i in 0..<n, where `inp` is the forward input.
func activationBackward(_ act: Activation, _ dinp: UnsafeMutablePointer<Float>, _ inp: UnsafePointer<Float>,
                        _ dout: UnsafePointer<Float>, _ n: Int) {
    parallelFor(n, grain: kernelParallelGrain) { s, e in
        switch act {
        case .relu:
            // Derivative 0 at x == 0, as torch (threshold_backward on the output). dout is loaded
            // unconditionally so the loop becomes a select, not a data-dependent branch.
            for i in s..<e {
                let d = dout[i]
                dinp[i] += inp[i] > 0 ? d : 0
            }
        case .gelu:
            // cdf + x * pdf
            for i in s..<e {
                let x = inp[i]
                let cdf = 0.5 * (1 + erff(x * sqrtHalf))
                let pdf = invSqrt2Pi * expf(x * x * -0.5)
                dinp[i] += dout[i] * (cdf + x * pdf)
            }
        case .geluTanh:
            // d/dx [0.5 x (1 + tanh u)] = 0.5 (1 + tanh u) + 0.5 x (1 − tanh² u) · u'
            // with σ = sigmoid(2u): 0.5 (1 + tanh u) = σ and 1 − tanh² u = 4σ(1 − σ), so
            // = σ + 2 x σ (1 − σ) · sqrt(2/π) (1 + 3κ x²), where 1 − σ = exp(−2u)·σ keeps its relative
            // accuracy for large x (1 − σ itself would round to 0).
            var i = s
            while i < e {
                let x = load8(inp, i, e)
                let x2 = x * x
                let u = sqrt2OverPi * (x + geluKappa * (x2 * x))
                let ex = vexp(-2 * u)
                let sig = 1 / (1 + ex)
                let du = sqrt2OverPi * (1 + 3 * geluKappa * x2)
                let d = load8(dout, i, e) * (sig + 2 * x * sig * (ex * sig) * du)
                store8(dinp, i, e, load8(dinp, i, e) + d)
                i += 8
            }
        case .swish:
            // sigmoid * (1 + x * (1 - sigmoid))
            var i = s
            while i < e {
                let x = load8(inp, i, e)
                let sig = 1 / (1 + vexp(-x))
                let d = load8(dout, i, e) * sig * (1 + x * (1 - sig))
                store8(dinp, i, e, load8(dinp, i, e) + d)
                i += 8
            }
        }
    }
}

/// SwiGLU (Llama MLP): out[i] = silu(gate[i]) * up[i]. `out` may equal `gate` or `up`.
func swigluForward(_ out: UnsafeMutablePointer<Float>, _ gate: UnsafePointer<Float>, _ up: UnsafePointer<Float>,
                   _ n: Int) {
    parallelFor(n, grain: kernelParallelGrain) { s, e in
        var i = s
        while i < e {
            let g = load8(gate, i, e)
            let u = load8(up, i, e)
            store8(out, i, e, (g / (1 + vexp(-g))) * u)
            i += 8
        }
    }
}

/// Backward of `swigluForward`: dup += dout * silu(gate); dgate += dout * up * silu'(gate).
func swigluBackward(_ dgate: UnsafeMutablePointer<Float>, _ dup: UnsafeMutablePointer<Float>,
                    _ dout: UnsafePointer<Float>, _ gate: UnsafePointer<Float>, _ up: UnsafePointer<Float>,
                    _ n: Int) {
    parallelFor(n, grain: kernelParallelGrain) { s, e in
        var i = s
        while i < e {
            let g = load8(gate, i, e)
            let d = load8(dout, i, e)
            let denom = 1 + vexp(-g)
            let sig = 1 / denom
            store8(dup, i, e, load8(dup, i, e) + d * (g / denom))
            let ds = d * load8(up, i, e)
            store8(dgate, i, e, load8(dgate, i, e) + ds * sig * (1 + g * (1 - sig)))
            i += 8
        }
    }
}
