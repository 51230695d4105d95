#if canImport(Glibc)
import Glibc
#endif

/// Learning-rate schedules. All start with `warmupSteps` of linear warm-up from 0.
public enum LRSchedule: String, Sendable, CaseIterable {
    case constant, linear, cosine
}

/// Optimiser and step settings for `Model.trainStep`. Defaults follow PyTorch's `AdamW`.
public struct TrainConfig: Sendable, Equatable {
    public var learningRate: Float = 1e-3
    public var beta1: Float = 0.9
    public var beta2: Float = 0.999
    public var eps: Float = 1e-8
    /// Decoupled weight decay (PyTorch AdamW semantics: `p -= lr·wd·p` before the Adam update).
    public var weightDecay: Float = 0.01
    public var schedule: LRSchedule = .constant
    public var warmupSteps: Int = 0
    /// Length of the schedule for `linear` and `cosine` (the LR reaches 0 at this step).
    public var totalSteps: Int = 0
    /// Clip the global gradient L2 norm to this value; 0 disables clipping.
    public var maxGradNorm: Float = 0
    /// Gradient accumulation: at most this many rows per micro-batch (0 = the whole batch at once). A batch of B
    /// rows runs as K = ceil(B / microBatchSize) near-equal parts, part k being rows [k·B/K, (k+1)·B/K) (the
    /// smaller parts first: B 5, size 3 runs 2 + 3 rows), the split K MPI ranks use. The gradient is the full
    /// batch's (up to float rounding of the grouped sums); only activation memory shrinks.
    public var microBatchSize: Int = 0
    /// LoRA+ (Hayou et al. 2024; PEFT's `create_loraplus_optimizer(loraplus_lr_ratio:)`): LoRA's B matrices (and
    /// DoRA's magnitudes, as PEFT groups 1-D parameters with B) train at `loraPlusRatio ×` the learning rate.
    /// 0 = the adapter's own `loraplus_lr_ratio` if its config has one, else off (1). Ignored by other methods.
    public var loraPlusRatio: Float = 0
    /// Gradient checkpointing: the forward keeps only each layer's input (and the adapter's own small
    /// activations); the backward recomputes each layer's activations just before its backward. Same gradients,
    /// bit for bit (the same kernels run on the same inputs, dropout masks redrawn from the same generator
    /// state); less memory, one more forward per step.
    public var gradientCheckpointing: Bool = false
    /// What each trained layer keeps for its backward when not checkpointing (see `ActivationMemory`).
    public var activationMemory: ActivationMemory = .automatic

    public init() {}

    public func validate() throws {
        try require(learningRate.isFinite && learningRate >= 0, "learning rate must be finite and >= 0, got \(learningRate)")
        try require(beta1.isFinite && beta1 >= 0 && beta1 < 1, "beta1 must be in [0, 1), got \(beta1)")
        try require(beta2.isFinite && beta2 >= 0 && beta2 < 1, "beta2 must be in [0, 1), got \(beta2)")
        try require(eps.isFinite && eps > 0, "eps must be positive and finite, got \(eps)")
        try require(weightDecay.isFinite && weightDecay >= 0, "weight decay must be finite and >= 0, got \(weightDecay)")
        try require(warmupSteps >= 0, "warmup steps must be >= 0, got \(warmupSteps)")
        try require(totalSteps >= 0, "total steps must be >= 0, got \(totalSteps)")
        try require(maxGradNorm.isFinite && maxGradNorm >= 0, "max grad norm must be finite and >= 0, got \(maxGradNorm)")
        try require(microBatchSize >= 0, "micro-batch size must be >= 0, got \(microBatchSize)")
        try require(loraPlusRatio.isFinite && loraPlusRatio >= 0, "LoRA+ ratio must be finite and >= 0, got \(loraPlusRatio)")
    }

    /// The learning rate at optimiser step `step` (0-based: the first update uses step 0), as
    /// transformers' `get_*_schedule_with_warmup` computes it.
    public func learningRate(atStep step: Int) -> Float {
        if warmupSteps > 0 && step < warmupSteps {
            return learningRate * Float(step) / Float(warmupSteps)
        }
        switch schedule {
        case .constant:
            return learningRate
        case .linear:
            guard totalSteps > warmupSteps else { return learningRate }
            let frac = Float(totalSteps - step) / Float(max(1, totalSteps - warmupSteps))
            return learningRate * max(0, frac)
        case .cosine:
            guard totalSteps > warmupSteps else { return learningRate }
            let progress = Double(step - warmupSteps) / Double(max(1, totalSteps - warmupSteps))
            let p = min(1, max(0, progress))
            return learningRate * Float(0.5 * (1 + _cos(Double.pi * p)))
        }
    }
}

@inline(__always) func _cos(_ x: Double) -> Double {
    #if canImport(Glibc)
    return Glibc.cos(x)
    #else
    return 0
    #endif
}

/// What one optimiser step did.
public struct TrainStepResult: Sendable, Equatable {
    /// Mean cross-entropy over counted tokens, before the update.
    public var loss: Float
    /// Global L2 norm of the gradient before clipping.
    public var gradNorm: Float
    /// Learning rate used for this step.
    public var learningRate: Float
    /// Optimiser steps taken by this adapter so far, including this one.
    public var step: Int
    /// Tokens that counted towards the loss.
    public var tokens: Int
}
