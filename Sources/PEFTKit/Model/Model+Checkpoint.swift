// Training checkpoints on the public API. The format and its guarantees are described in
// Training/Checkpoint.swift.

extension Model {
    /// Writes a training checkpoint of adapter `name` into `directory` (created if missing): the adapter's
    /// method and configuration, its weights, its AdamW moments, its step count and the random state its
    /// training draws from (LoRA dropout). Training resumed from the checkpoint with the same batches and
    /// `TrainConfig` gives bit-identical losses and weights to a run that never stopped.
    ///
    /// The folder's manifest (`checkpoint.json`) is replaced last and atomically: a crash or kill at any
    /// moment leaves either the previous checkpoint or the new one, complete. The folder also holds the
    /// adapter in its portable format (`adapter-<tag>/`) when the method can be saved.
    ///
    /// ```swift
    /// try model.saveCheckpoint(name: "task", to: "runs/task/ckpt")
    /// // later, in a new process, on a model with the same base weights:
    /// let name = try model.loadCheckpoint(from: "runs/task/ckpt")
    /// try model.setActiveAdapter(name)
    /// ```
    ///
    /// Throws `notFound` for an unknown adapter, `io` when the folder cannot be written, `numerical` when the
    /// adapter holds NaN or infinity (nothing is written then), `unsupported` for a method checkpoints do not
    /// cover.
    public func saveCheckpoint(name: String, to directory: String) throws {
        try exclusive { try engine.saveCheckpoint(name: name, directory: directory) }
    }

    /// Reads a checkpoint written by `saveCheckpoint` and attaches its adapter, with its optimiser state,
    /// under the name stored in it. The adapter is not made active. Returns the name.
    ///
    /// Throws `io` (no checkpoint there), `format` (malformed or modified files, or a checkpoint of a model of
    /// another shape), `state` (an adapter of that name is already attached), `unsupported` (a newer format).
    /// Nothing is attached when it throws.
    @discardableResult
    public func loadCheckpoint(from directory: String) throws -> String {
        try exclusiveChangingAdapters { try engine.loadCheckpoint(directory: directory) }
    }
}
