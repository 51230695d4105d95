import CPEFTKitKernels
#if canImport(Glibc)
import Glibc
#endif

// Fused softmax cross-entropy over the vocabulary: the loss, and optionally its gradient written over the
// logits (the logits are not needed after the backward, so no second [N, V] buffer is used).

/// Target value of a row that has no loss (torch's default ignore_index).
let ignoreIndex: Int32 = -100

/// For each row r of `logits` [N, V] with targets[r] != -100: loss_r = logsumexp(row) − row[target]
/// (max-subtracted; exp in Float by the vector exp of `pk_ew_exp`, the sum of exponentials and the loss in Double).
/// `losses` (optional, [N]) receives loss_r as Float, 0 for ignored rows.
/// If `computeGrad`, each row is overwritten IN PLACE with (softmax(row) − onehot(target)) · gradScale
/// (· tokenScales[r] when given: a per-token loss weight), and ignored rows become zeros; otherwise the logits
/// are left unchanged.
/// Returns the sum of the row losses (added serially in row order: deterministic) and the number of rows
/// that count. Targets are already shifted by the caller; anything other than -100 must be in 0..<V.
func crossEntropyForwardBackward(logits: UnsafeMutablePointer<Float>, losses: UnsafeMutablePointer<Float>?,
                                 targets: UnsafePointer<Int32>, N: Int, V: Int, gradScale: Float,
                                 computeGrad: Bool, tokenScales: UnsafePointer<Float>? = nil,
                                 isa: ElementwiseISA = .active) -> (lossSum: Double, count: Int) {
    if N <= 0 { return (0, 0) }
    precondition(V > 0, "crossEntropy: empty vocabulary")
    return withUnsafeTemporaryAllocation(of: Double.self, capacity: N) { buf -> (lossSum: Double, count: Int) in
        guard let rowLoss = buf.baseAddress else { return (0, 0) }
        parallelFor(N, grain: rowGrain(V)) { r0, r1 in
            for r in r0..<r1 {
                let row = logits + r * V
                let t = targets[r]
                if t == ignoreIndex {
                    rowLoss[r] = 0
                    losses?[r] = 0
                    if computeGrad { row.update(repeating: 0, count: V) }
                    continue
                }
                precondition(t >= 0 && Int(t) < V, "crossEntropy: target \(t) outside 0..<\(V)")
                // The row in C (elementwise.c, the CPU's vector path): max, exp(x − max) summed in Double lanes
                // added in a fixed order (deterministic), loss = log(sum) + max − row[target], and the gradient
                // written over the row.
                let scale = gradScale * (tokenScales?[r] ?? 1)
                let loss = pk_ew_xent_row(isa.rawValue, row, Int64(V), Int64(t), computeGrad ? 1 : 0, scale)
                rowLoss[r] = loss
                losses?[r] = Float(loss)
            }
        }
        var total = 0.0
        var count = 0
        for r in 0..<N {
            if targets[r] != ignoreIndex {
                total += rowLoss[r]
                count += 1
            }
        }
        return (total, count)
    }
}
