import CPEFTKitKernels
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
// backward. Formulas and operation order follow PyTorch's CPU kernels; the C kernels' erf and exp (`vexp` below)
// stand in for torch's vectorised erf / exp, so results agree to about an ulp of the larger terms, not bitwise.
// The erf- and exp-bound ones (gelu, gelu_new, SiLU, SwiGLU) run in C (Sources/CPEFTKitKernels/elementwise.c) on the CPU's
// best vector path (`ElementwiseISA`); each path computes every element the same way wherever a thread's chunk
// starts, so results stay independent of the thread count.
// "gelu_new" uses the identity 0.5·x·(1 + tanh u) = x·sigmoid(2u): one exp instead of glibc's slow tanhf,
// and no cancellation in 1 + tanh u for negative x (torch's form loses relative accuracy there).

// MARK: - Vector exp

/// e^x on 8 lanes through the element-wise C kernels' exp (`pk_ew_exp`): within 2 ulp of the exact value over
/// the whole Float range on every path (tests: `vectorExpAccuracy`, `ElementwiseSIMDTests`), about the accuracy of
/// torch's vectorised expf (1 ulp). x = n·ln2 + r with |r| ≤ ln2/2 (Cody–Waite split of ln2), e^r by its degree-7
/// Taylor polynomial, then two exact power-of-two scalings so that results near overflow and in the subnormal
/// range are right. x > 89 gives +inf, x < −104 gives 0, NaN stays NaN. The kernels call the C exp directly; this
/// form is for tests and occasional Swift callers.
func vexp(_ x: SIMD8<Float>, isa: ElementwiseISA = .active) -> SIMD8<Float> {
    var v = x
    withUnsafeMutableBytes(of: &v) { raw in
        guard let p = raw.baseAddress?.assumingMemoryBound(to: Float.self) else { return }
        pk_ew_exp(isa.rawValue, p, p, 8)
    }
    return v
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

/// out[i] = act(inp[i]) for i in 0..<n. `out` may equal `inp` (in place).
func activationForward(_ act: Activation, _ out: UnsafeMutablePointer<Float>, _ inp: UnsafePointer<Float>,
                       _ n: Int, isa: ElementwiseISA = .active) {
    parallelFor(n, grain: kernelParallelGrain) { s, e in
        switch act {
        case .relu:
            // NaN passes through (as torch), so a diverging run is not masked.
            for i in s..<e {
                let x = inp[i]
                out[i] = x < 0 ? 0 : x
            }
        case .gelu:
            // torch: x * 0.5 * (1 + erf(x * M_SQRT1_2)), with the C kernels' vector erf (within 2 ulp of erf).
            pk_ew_act_forward(isa.rawValue, Int32(PK_EW_GELU), out + s, inp + s, Int64(e - s))
        case .geluTanh:
            // transformers NewGELUActivation: 0.5 * x * (1 + tanh(u)), u = sqrt(2/π) * (x + 0.044715 * x³),
            // evaluated as x / (1 + exp(-2u)).
            pk_ew_act_forward(isa.rawValue, Int32(PK_EW_GELU_TANH), out + s, inp + s, Int64(e - s))
        case .swish:
            // torch silu: x / (1 + exp(-x))
            pk_ew_act_forward(isa.rawValue, Int32(PK_EW_SILU), out + s, inp + s, Int64(e - s))
        }
    }
}

/// dinp[i] += act'(inp[i]) * dout[i] for i in 0..<n, where `inp` is the forward input. `accumulate` false: dinp[i] =
/// act'(inp[i]) * dout[i], the same values as zeroing dinp first (dinp is not read).
func activationBackward(_ act: Activation, _ dinp: UnsafeMutablePointer<Float>, _ inp: UnsafePointer<Float>,
                        _ dout: UnsafePointer<Float>, _ n: Int, accumulate: Bool = true, isa: ElementwiseISA = .active) {
    let set = accumulate ? 0 : Int32(PK_EW_ACT_SET)
    parallelFor(n, grain: kernelParallelGrain) { s, e in
        switch act {
        case .relu:
            // Derivative 0 at x == 0, as torch (threshold_backward on the output). dout is loaded
            // unconditionally so the loop becomes a select, not a data-dependent branch.
            if !accumulate { (dinp + s).update(repeating: 0, count: e - s) }
            for i in s..<e {
                let d = dout[i]
                dinp[i] += inp[i] > 0 ? d : 0
            }
        case .gelu:
            // cdf + x * pdf, cdf = 0.5 * (1 + erf(x * M_SQRT1_2)), pdf = exp(-x²/2) / sqrt(2π)
            pk_ew_act_backward(isa.rawValue, Int32(PK_EW_GELU) | set, dinp + s, inp + s, dout + s, Int64(e - s))
        case .geluTanh:
            // d/dx [0.5 x (1 + tanh u)] = 0.5 (1 + tanh u) + 0.5 x (1 − tanh² u) · u'
            // with σ = sigmoid(2u): 0.5 (1 + tanh u) = σ and 1 − tanh² u = 4σ(1 − σ), so
            // = σ + 2 x σ (1 − σ) · sqrt(2/π) (1 + 3κ x²), where 1 − σ = exp(−2u)·σ keeps its relative
            // accuracy for large x (1 − σ itself would round to 0).
            pk_ew_act_backward(isa.rawValue, Int32(PK_EW_GELU_TANH) | set, dinp + s, inp + s, dout + s, Int64(e - s))
        case .swish:
            // sigmoid * (1 + x * (1 - sigmoid))
            pk_ew_act_backward(isa.rawValue, Int32(PK_EW_SILU) | set, dinp + s, inp + s, dout + s, Int64(e - s))
        }
    }
}

/// SwiGLU (Llama MLP): out[i] = silu(gate[i]) * up[i]. `out` may equal `gate` or `up`.
func swigluForward(_ out: UnsafeMutablePointer<Float>, _ gate: UnsafePointer<Float>, _ up: UnsafePointer<Float>,
                   _ n: Int, isa: ElementwiseISA = .active) {
    parallelFor(n, grain: kernelParallelGrain) { s, e in
        pk_ew_swiglu_forward(isa.rawValue, out + s, gate + s, up + s, Int64(e - s))
    }
}

/// Backward of `swigluForward`: dup += dout * silu(gate); dgate += dout * up * silu'(gate).
func swigluBackward(_ dgate: UnsafeMutablePointer<Float>, _ dup: UnsafeMutablePointer<Float>,
                    _ dout: UnsafePointer<Float>, _ gate: UnsafePointer<Float>, _ up: UnsafePointer<Float>,
                    _ n: Int, isa: ElementwiseISA = .active) {
    parallelFor(n, grain: kernelParallelGrain) { s, e in
        pk_ew_swiglu_backward(isa.rawValue, dgate + s, dup + s, dout + s, gate + s, up + s, Int64(e - s))
    }
}
