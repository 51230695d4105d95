// Internal C kernels of PEFTKit (not part of the public C ABI in include/peftkit.h): the hot element-wise and
// row-wise kernels of a training step (exp-bound activations, softmax, cross-entropy, LayerNorm, RMSNorm, RoPE),
// each compiled three times (portable C vectors, AVX2+FMA, AVX-512F) and chosen at run time. No function validates its input:
// the Swift callers in Sources/PEFTKit/Kernels check sizes first and split the work between threads.
//
// `isa` selects the path (PK_EW_SCALAR, PK_EW_AVX2, PK_EW_AVX512); a path the CPU cannot run falls back to the
// best one it can, so any value is safe. Each path has a fixed operation and reduction order, so its results do
// not depend on how the caller splits an array into pieces; paths differ from each other by rounding only
// (fused multiply-adds, lane-parallel partial sums). Tests/PEFTKitTests/ElementwiseSIMDTests.swift states how far.
#ifndef PEFTKIT_ELEMENTWISE_H
#define PEFTKIT_ELEMENTWISE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/// Instruction-set paths of these kernels. PK_EW_SCALAR is the portable path (generic 8-lane C vectors for the
/// baseline target, no fused multiply-adds; the only one off x86-64); PK_EW_AVX2 needs AVX2 + FMA; PK_EW_AVX512
/// needs AVX-512F as well.
enum { PK_EW_SCALAR = 0, PK_EW_AVX2 = 1, PK_EW_AVX512 = 2 };

/// Activation codes of pk_ew_act_forward / pk_ew_act_backward.
enum { PK_EW_GELU = 1, PK_EW_GELU_TANH = 2, PK_EW_SILU = 3 };
/// Or'ed into the activation code of pk_ew_act_backward: store dinp instead of adding to it.
enum { PK_EW_ACT_SET = 0x100 };

/// The best path this CPU runs (detected once).
int pk_ew_detect(void);

/// y[i] = e^x[i]. Within 2 ulp of the exact value over the whole float range on every path (x > 88.72 gives +inf,
/// x < -103.97 gives 0, NaN stays NaN). `y` may equal `x`.
void pk_ew_exp(int isa, const float *x, float *y, int64_t n);

/// y[i] = erf(x[i]): within 2 ulp of erf over the float range (a polynomial below |x| = 1.25, 1 - exp(polynomial)
/// above, 1 from 3.925 on); odd, NaN stays NaN. `y` may equal `x`.
void pk_ew_erf(int isa, const float *x, float *y, int64_t n);

/// out[i] = act(inp[i]), act = PK_EW_GELU (exact: x/2 * (1 + erf(x/sqrt 2)), erf as pk_ew_erf), PK_EW_GELU_TANH
/// (transformers' gelu_new) or PK_EW_SILU. `out` may equal `inp`.
void pk_ew_act_forward(int isa, int act, float *out, const float *inp, int64_t n);

/// dinp[i] += act'(inp[i]) * dout[i]; with act | PK_EW_ACT_SET, dinp[i] = act'(inp[i]) * dout[i] (the same value
/// as the sum onto zeros; dinp is not read).
void pk_ew_act_backward(int isa, int act, float *dinp, const float *inp, const float *dout, int64_t n);

/// out[i] = silu(gate[i]) * up[i]. `out` may equal `gate` or `up`.
void pk_ew_swiglu_forward(int isa, float *out, const float *gate, const float *up, int64_t n);

/// dup[i] += dout[i] * silu(gate[i]); dgate[i] += dout[i] * up[i] * silu'(gate[i]).
void pk_ew_swiglu_backward(int isa, float *dgate, float *dup, const float *dout, const float *gate, const float *up,
                           int64_t n);

/// In place: row[j] = exp(row[j] - mx) / sum for j < valid (the sum in float, lane-parallel), row[j] = 0 for
/// valid <= j < width.
void pk_ew_softmax_row(int isa, float *row, int64_t valid, int64_t width, float mx);

/// pk_ew_softmax_row after masking and the row max: row[j] = -inf for off <= j < valid where mask[j - off] == 0,
/// mx = the max of row[0..<valid] (NaN ignored), then as pk_ew_softmax_row(row, valid, width, mx).
void pk_ew_masked_softmax_row(int isa, float *row, int64_t valid, int64_t width, const int32_t *mask, int64_t off);

/// One row of softmax cross-entropy: returns logsumexp(row) - row[target] (max-subtracted, exp in float, the sum
/// of exponentials and the loss in double). If `grad`, the row is overwritten with
/// (softmax(row) - onehot(target)) * scale. 0 <= target < V.
double pk_ew_xent_row(int isa, float *row, int64_t V, int64_t target, int grad, float scale);

/// LayerNorm forward of `rows` rows of C (statistics summed in double): out = (inp - mean) * rstd * w + b.
void pk_ew_layernorm_forward(int isa, float *out, float *mean, float *rstd, const float *inp, const float *w,
                             const float *b, int64_t rows, int64_t C, float eps);

/// LayerNorm input gradient of `rows` rows: dinp += rstd * (g - mean(g) - xhat * mean(g * xhat)), g = dout * w.
void pk_ew_layernorm_backward(int isa, float *dinp, const float *dout, const float *inp, const float *w,
                              const float *mean, const float *rstd, int64_t rows, int64_t C);

/// RMSNorm forward of `rows` rows (mean of squares in double, then eps and the root in float): out = w * (inp * rstd).
void pk_ew_rmsnorm_forward(int isa, float *out, float *rstd, const float *inp, const float *w, int64_t rows,
                           int64_t C, float eps);

/// RMSNorm input gradient of `rows` rows: dinp += rstd * g - (rstd^3 / C) * sum(g * inp) * inp, g = dout * w.
void pk_ew_rmsnorm_backward(int isa, float *dinp, const float *dout, const float *inp, const float *w,
                            const float *rstd, int64_t rows, int64_t C);

/// Rotates the `heads` heads of `head_dim` values at x (rotate_half layout): (a, b) = (x[i], x[i + head_dim/2])
/// becomes (a*c - b*s, b*c + a*s) with c = cos_row[i], s = sign * sin_row[i].
void pk_ew_rope_row(int isa, float *x, const float *cos_row, const float *sin_row, int64_t heads, int64_t head_dim,
                    float sign);

#ifdef __cplusplus
}
#endif
#endif
