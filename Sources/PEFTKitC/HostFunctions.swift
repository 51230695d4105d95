// Host capabilities: loading with progress and cancellation, the train progress callback, and forward passes with
// per-token log-probabilities, per-row losses and last-position logits. Translation only: the core reports progress,
// cancels and computes.

import CPEFTKit
import PEFTKit

extension peftkit_load_config: VersionedStruct {
    static var cName: String { "peftkit_load_config" }
    static var fieldOffsets: [Int] {
        offsets([\Self.struct_size, \Self.flags, \Self.progress, \Self.progress_user])
    }
}

extension peftkit_forward_options: VersionedStruct {
    static var cName: String { "peftkit_forward_options" }
    static var fieldOffsets: [Int] {
        offsets([\Self.struct_size, \Self.logits_mode, \Self.logits, \Self.logits_capacity, \Self.token_logprobs,
                 \Self.row_losses, \Self.row_tokens])
    }
}

/// The defaults of peftkit_load_config_init (documented in peftkit.h).
private func defaultLoadConfig() -> peftkit_load_config {
    var c = peftkit_load_config()
    c.struct_size = UInt32(MemoryLayout<peftkit_load_config>.size)
    c.flags = 0
    c.progress = nil
    c.progress_user = nil
    return c
}

/// The defaults of peftkit_forward_options_init (documented in peftkit.h).
private func defaultForwardOptions() -> peftkit_forward_options {
    var o = peftkit_forward_options()
    o.struct_size = UInt32(MemoryLayout<peftkit_forward_options>.size)
    o.logits_mode = PEFTKIT_LOGITS_ALL
    return o
}

/// A C progress callback as the core's handler (non-zero = go on).
private func progressHandler(_ cb: peftkit_progress_callback?, _ user: UnsafeMutableRawPointer?) -> ProgressHandler? {
    guard let cb else { return nil }
    return { p in cb(Int64(p.done), Int64(p.total), user) != 0 }
}

@c @implementation
public func peftkit_load_config_init_sized(_ config: UnsafeMutablePointer<peftkit_load_config>?, _ size: Int) -> peftkit_status {
    entry("peftkit_load_config_init_sized") { try initStruct(config, size: size, defaults: defaultLoadConfig()) }
}

@c @implementation
public func peftkit_model_load_ex(_ path: UnsafePointer<CChar>?, _ config: UnsafePointer<peftkit_load_config>?,
                                  _ out: UnsafeMutablePointer<OpaquePointer?>?) -> peftkit_status {
    out?.pointee = nil
    return entry("peftkit_model_load_ex") {
        guard let out else { throw ShimError.invalid("out is NULL") }
        let c = config == nil ? defaultLoadConfig() : try readStruct(config, "config", defaults: defaultLoadConfig())
        guard c.flags & ~UInt32(PEFTKIT_LOAD_WIDEN) == 0 else { throw ShimError.invalid("unknown load flags \(c.flags)") }
        let p = try readString(path, "path")
        guard !p.isEmpty else { throw ShimError.invalid("path is empty") }
        let model = try Model.load(path: p, widen: c.flags & UInt32(PEFTKIT_LOAD_WIDEN) != 0,
                                   progress: progressHandler(c.progress, c.progress_user))
        out.pointee = ModelHandle(model).opaque
    }
}

@c @implementation
public func peftkit_model_set_progress_callback(_ model: OpaquePointer?, _ cb: peftkit_progress_callback?,
                                                _ user: UnsafeMutableRawPointer?) -> peftkit_status {
    entry("peftkit_model_set_progress_callback") {
        let h = try ModelHandle.from(model)
        try h.model.setProgressHandler(progressHandler(cb, user))
    }
}

@c @implementation
public func peftkit_forward_options_init_sized(_ options: UnsafeMutablePointer<peftkit_forward_options>?,
                                               _ size: Int) -> peftkit_status {
    entry("peftkit_forward_options_init_sized") { try initStruct(options, size: size, defaults: defaultForwardOptions()) }
}

@c @implementation
public func peftkit_forward_ex(_ model: OpaquePointer?, _ inputIDs: UnsafePointer<Int32>?, _ labels: UnsafePointer<Int32>?,
                               _ batch: Int32, _ seqLen: Int32, _ options: UnsafePointer<peftkit_forward_options>?,
                               _ lossOut: UnsafeMutablePointer<Float>?, _ tokensOut: UnsafeMutablePointer<Int64>?) -> peftkit_status {
    entry("peftkit_forward_ex") {
        let h = try ModelHandle.from(model)
        guard let inputIDs else { throw ShimError.invalid("input_ids is NULL") }
        let o = options == nil ? defaultForwardOptions() : try readStruct(options, "options", defaults: defaultForwardOptions())
        let mode: LogitsOutput
        switch o.logits_mode {
        case PEFTKIT_LOGITS_ALL: mode = .all
        case PEFTKIT_LOGITS_LAST: mode = .last
        case PEFTKIT_LOGITS_NONE: mode = .none
        default: throw ShimError.invalid("options->logits_mode \(o.logits_mode) is not a PEFTKIT_LOGITS_* value")
        }
        let n = tokenCount(batch: batch, seqLen: seqLen)
        let rows = batch > 0 ? Int(batch) : 0
        var logits: UnsafeMutableBufferPointer<Float>? = nil
        if let p = o.logits {
            guard mode != .none else { throw ShimError.invalid("options->logits is given but logits_mode is PEFTKIT_LOGITS_NONE") }
            let vocab = h.model.config.vocabSize
            let (needed, overflow) = (mode == .all ? n : rows).multipliedReportingOverflow(by: vocab)
            guard !overflow else { throw ShimError.overflow("the logits of \(batch) x \(seqLen) positions overflow") }
            let capacity = try readCapacity(o.logits_capacity, "options->logits_capacity")
            guard capacity >= needed else {
                throw ShimError.tooSmall("options->logits needs \(mode == .all ? "batch * seq_len" : "batch") * vocab_size = "
                                         + "\(needed) floats, logits_capacity is \(capacity)")
            }
            logits = UnsafeMutableBufferPointer(start: p, count: needed)
        }
        var rowTokens: [Int]? = o.row_tokens == nil ? nil : [Int](repeating: 0, count: rows)
        let wantsLoss = lossOut != nil || o.token_logprobs != nil || o.row_losses != nil || o.row_tokens != nil
        let r: EvalResult = try withOptionalBuffer(&rowTokens) { rt in
            try h.model.forward(
                inputIDs: UnsafeBufferPointer(start: inputIDs, count: n), labels: labels.map { UnsafeBufferPointer(start: $0, count: n) },
                batch: Int(batch), seqLen: Int(seqLen),
                outputs: ForwardOutputs(logitsMode: mode, logits: logits,
                                        tokenLogprobs: o.token_logprobs.map { UnsafeMutableBufferPointer(start: $0, count: n) },
                                        rowLosses: o.row_losses.map { UnsafeMutableBufferPointer(start: $0, count: rows) },
                                        rowTokens: rt, computeLoss: wantsLoss))
        }
        if let rowTokens, let dst = o.row_tokens {
            for (i, v) in rowTokens.enumerated() { dst[i] = Int64(v) }
        }
        lossOut?.pointee = r.loss
        tokensOut?.pointee = Int64(r.tokens)
    }
}

/// Calls `body` with a buffer over `array`, or nil when there is none.
private func withOptionalBuffer<T, R>(_ array: inout [T]?, _ body: (UnsafeMutableBufferPointer<T>?) throws -> R) rethrows -> R {
    guard array != nil else { return try body(nil) }
    return try array!.withUnsafeMutableBufferPointer { try body($0) }
}
