// Training steps and forward passes.

import CPEFTKit
import PEFTKit

@c @implementation
public func peftkit_train_step(_ model: OpaquePointer?, _ inputIDs: UnsafePointer<Int32>?,
                               _ labels: UnsafePointer<Int32>?, _ batch: Int32, _ seqLen: Int32,
                               _ config: UnsafePointer<peftkit_train_config>?,
                               _ out: UnsafeMutablePointer<peftkit_train_result>?) -> peftkit_status {
    trainStep("peftkit_train_step", model, inputIDs, labels, nil, batch, seqLen, config, out)
}

@c @implementation
public func peftkit_train_step_packed(_ model: OpaquePointer?, _ inputIDs: UnsafePointer<Int32>?,
                                      _ labels: UnsafePointer<Int32>?, _ segmentIDs: UnsafePointer<Int32>?,
                                      _ batch: Int32, _ seqLen: Int32, _ config: UnsafePointer<peftkit_train_config>?,
                                      _ out: UnsafeMutablePointer<peftkit_train_result>?) -> peftkit_status {
    trainStep("peftkit_train_step_packed", model, inputIDs, labels, segmentIDs, batch, seqLen, config, out)
}

/// The body of peftkit_train_step and its packed form (segment ids NULL: not packed).
private func trainStep(_ function: StaticString, _ model: OpaquePointer?, _ inputIDs: UnsafePointer<Int32>?,
                       _ labels: UnsafePointer<Int32>?, _ segmentIDs: UnsafePointer<Int32>?, _ batch: Int32,
                       _ seqLen: Int32, _ config: UnsafePointer<peftkit_train_config>?,
                       _ out: UnsafeMutablePointer<peftkit_train_result>?) -> peftkit_status {
    entry(function) {
        let h = try ModelHandle.from(model)
        let (ids, lb, tc) = try readTrainArgs(inputIDs, labels, batch, seqLen, config)
        let outSize = try outputStructSize(out, "out")
        let r = try h.model.trainStep(inputIDs: ids, labels: lb, segmentIDs: segmentBuffer(segmentIDs, ids.count),
                                      batch: Int(batch), seqLen: Int(seqLen), config: tc)
        if let out, let outSize { store(r, into: out, size: outSize) }
    }
}

@c @implementation
public func peftkit_train_compute_gradients_packed(_ model: OpaquePointer?, _ inputIDs: UnsafePointer<Int32>?,
                                                   _ labels: UnsafePointer<Int32>?, _ segmentIDs: UnsafePointer<Int32>?,
                                                   _ batch: Int32, _ seqLen: Int32,
                                                   _ config: UnsafePointer<peftkit_train_config>?, _ lossDivisor: Int64,
                                                   _ lossOut: UnsafeMutablePointer<Float>?,
                                                   _ tokensOut: UnsafeMutablePointer<Int64>?) -> peftkit_status {
    computeGradients("peftkit_train_compute_gradients_packed", model, inputIDs, labels, segmentIDs, batch, seqLen, config,
                     lossDivisor, lossOut, tokensOut)
}

/// The body of peftkit_train_compute_gradients and its packed form (segment ids NULL: not packed).
private func computeGradients(_ function: StaticString, _ model: OpaquePointer?, _ inputIDs: UnsafePointer<Int32>?,
                              _ labels: UnsafePointer<Int32>?, _ segmentIDs: UnsafePointer<Int32>?, _ batch: Int32,
                              _ seqLen: Int32, _ config: UnsafePointer<peftkit_train_config>?, _ lossDivisor: Int64,
                              _ lossOut: UnsafeMutablePointer<Float>?,
                              _ tokensOut: UnsafeMutablePointer<Int64>?) -> peftkit_status {
    entry(function) {
        let h = try ModelHandle.from(model)
        let (ids, lb, tc) = try readTrainArgs(inputIDs, labels, batch, seqLen, config)
        let r = try h.model.computeGradients(inputIDs: ids, labels: lb, batch: Int(batch), seqLen: Int(seqLen), config: tc,
                                             lossDivisor: try readLossDivisor(lossDivisor),
                                             segmentIDs: segmentBuffer(segmentIDs, ids.count))
        lossOut?.pointee = r.loss
        tokensOut?.pointee = Int64(r.tokens)
    }
}

@c @implementation
public func peftkit_forward_packed(_ model: OpaquePointer?, _ inputIDs: UnsafePointer<Int32>?,
                                   _ labels: UnsafePointer<Int32>?, _ segmentIDs: UnsafePointer<Int32>?,
                                   _ batch: Int32, _ seqLen: Int32,
                                   _ logits: UnsafeMutablePointer<Float>?, _ logitsCapacity: Int,
                                   _ lossOut: UnsafeMutablePointer<Float>?,
                                   _ tokensOut: UnsafeMutablePointer<Int64>?) -> peftkit_status {
    forward("peftkit_forward_packed", model, inputIDs, labels, segmentIDs, batch, seqLen, logits, logitsCapacity,
            lossOut, tokensOut)
}

/// The body of peftkit_forward and its packed form (segment ids NULL: not packed).
private func forward(_ function: StaticString, _ model: OpaquePointer?, _ inputIDs: UnsafePointer<Int32>?,
                     _ labels: UnsafePointer<Int32>?, _ segmentIDs: UnsafePointer<Int32>?, _ batch: Int32,
                     _ seqLen: Int32, _ logits: UnsafeMutablePointer<Float>?, _ logitsCapacity: Int,
                     _ lossOut: UnsafeMutablePointer<Float>?, _ tokensOut: UnsafeMutablePointer<Int64>?) -> peftkit_status {
    entry(function) {
        let h = try ModelHandle.from(model)
        let (ids, lb, logitsBuffer) = try readForwardArgs(h, inputIDs, labels, batch, seqLen, logits, logitsCapacity)
        let r = try h.model.forward(inputIDs: ids, labels: lb, segmentIDs: segmentBuffer(segmentIDs, ids.count),
                                    batch: Int(batch), seqLen: Int(seqLen), logits: logitsBuffer)
        lossOut?.pointee = r.loss
        tokensOut?.pointee = Int64(r.tokens)
    }
}

/// The caller's segment ids as a buffer of the batch's size (nil = not packed); the core checks the shape first.
private func segmentBuffer(_ p: UnsafePointer<Int32>?, _ n: Int) -> UnsafeBufferPointer<Int32>? {
    p.map { UnsafeBufferPointer(start: $0, count: n) }
}

/// loss_divisor of the compute calls: 0 = this batch's tokens (nil).
private func readLossDivisor(_ d: Int64) throws -> Int? {
    guard d >= 0, d <= Int64(Int32.max) * Int64(Int32.max) else {
        throw ShimError.invalid("loss_divisor must be >= 0 (0 = this batch's tokens), got \(d)")
    }
    return d == 0 ? nil : Int(d)
}

/// The token arrays (input ids, optional labels) and the train config of a training call.
private func readTrainArgs(_ inputIDs: UnsafePointer<Int32>?, _ labels: UnsafePointer<Int32>?, _ batch: Int32, _ seqLen: Int32,
                           _ config: UnsafePointer<peftkit_train_config>?)
    throws -> (UnsafeBufferPointer<Int32>, UnsafeBufferPointer<Int32>?, TrainConfig) {
    guard let inputIDs else { throw ShimError.invalid("input_ids is NULL") }
    let n = tokenCount(batch: batch, seqLen: seqLen)
    let tc = try trainConfig(from: config)
    return (UnsafeBufferPointer(start: inputIDs, count: n), labels.map { UnsafeBufferPointer(start: $0, count: n) }, tc)
}

func store(_ r: TrainStepResult, into out: UnsafeMutablePointer<peftkit_train_result>, size: Int) {
    var o = peftkit_train_result()
    o.struct_size = UInt32(MemoryLayout<peftkit_train_result>.size)
    o.loss = r.loss
    o.grad_norm = r.gradNorm
    o.learning_rate = r.learningRate
    o.step = Int64(r.step)
    o.tokens = Int64(r.tokens)
    writeStruct(o, to: out, size: size)
}

@c @implementation
public func peftkit_train_compute_gradients(_ model: OpaquePointer?, _ inputIDs: UnsafePointer<Int32>?,
                                            _ labels: UnsafePointer<Int32>?, _ batch: Int32, _ seqLen: Int32,
                                            _ config: UnsafePointer<peftkit_train_config>?, _ lossDivisor: Int64,
                                            _ lossOut: UnsafeMutablePointer<Float>?,
                                            _ tokensOut: UnsafeMutablePointer<Int64>?) -> peftkit_status {
    computeGradients("peftkit_train_compute_gradients", model, inputIDs, labels, nil, batch, seqLen, config, lossDivisor,
                     lossOut, tokensOut)
}

@c @implementation
public func peftkit_train_apply_gradients(_ model: OpaquePointer?, _ config: UnsafePointer<peftkit_train_config>?,
                                          _ out: UnsafeMutablePointer<peftkit_train_result>?) -> peftkit_status {
    entry("peftkit_train_apply_gradients") {
        let h = try ModelHandle.from(model)
        let tc = try trainConfig(from: config)
        let outSize = try outputStructSize(out, "out")
        let r = try h.model.applyGradients(config: tc)
        if let out, let outSize { store(r, into: out, size: outSize) }
    }
}

@c @implementation
public func peftkit_train_gradients(_ model: OpaquePointer?, _ data: UnsafeMutablePointer<UnsafeMutablePointer<Float>?>?,
                                    _ count: UnsafeMutablePointer<Int64>?) -> peftkit_status {
    entry("peftkit_train_gradients") {
        let h = try ModelHandle.from(model)
        guard let data, let count else { throw ShimError.invalid("data and count must not be NULL") }
        let g = try h.model.gradientBuffer()
        data.pointee = g.baseAddress
        count.pointee = Int64(g.count)
    }
}

@c @implementation
public func peftkit_forward(_ model: OpaquePointer?, _ inputIDs: UnsafePointer<Int32>?,
                            _ labels: UnsafePointer<Int32>?, _ batch: Int32, _ seqLen: Int32,
                            _ logits: UnsafeMutablePointer<Float>?, _ logitsCapacity: Int,
                            _ lossOut: UnsafeMutablePointer<Float>?,
                            _ tokensOut: UnsafeMutablePointer<Int64>?) -> peftkit_status {
    forward("peftkit_forward", model, inputIDs, labels, nil, batch, seqLen, logits, logitsCapacity, lossOut, tokensOut)
}

@c @implementation
public func peftkit_forward_mixed(_ model: OpaquePointer?, _ inputIDs: UnsafePointer<Int32>?,
                                  _ labels: UnsafePointer<Int32>?, _ adapters: UnsafePointer<UnsafePointer<CChar>?>?,
                                  _ batch: Int32, _ seqLen: Int32,
                                  _ logits: UnsafeMutablePointer<Float>?, _ logitsCapacity: Int,
                                  _ lossOut: UnsafeMutablePointer<Float>?,
                                  _ tokensOut: UnsafeMutablePointer<Int64>?) -> peftkit_status {
    entry("peftkit_forward_mixed") {
        let h = try ModelHandle.from(model)
        let (ids, lb, logitsBuffer) = try readForwardArgs(h, inputIDs, labels, batch, seqLen, logits, logitsCapacity)
        guard let adapters else { throw ShimError.invalid("adapters is NULL") }
        var names: [String?] = []
        for b in 0..<max(0, Int(batch)) {
            names.append(adapters[b] == nil ? nil : try readName(adapters[b], "adapters[\(b)]"))
        }
        let r = try h.model.forward(inputIDs: ids, labels: lb, adapters: names, batch: Int(batch), seqLen: Int(seqLen),
                                    logits: logitsBuffer)
        lossOut?.pointee = r.loss
        tokensOut?.pointee = Int64(r.tokens)
    }
}

/// Reads the arguments shared by peftkit_forward and peftkit_forward_mixed (ids, labels, logits buffer) as
/// buffers. The core checks the shape, the ids and the labels; the shim checks only that the caller's logits
/// array is as large as the call needs.
private func readForwardArgs(_ h: ModelHandle, _ inputIDs: UnsafePointer<Int32>?, _ labels: UnsafePointer<Int32>?,
                             _ batch: Int32, _ seqLen: Int32, _ logits: UnsafeMutablePointer<Float>?,
                             _ logitsCapacity: Int) throws
    -> (UnsafeBufferPointer<Int32>, UnsafeBufferPointer<Int32>?, UnsafeMutableBufferPointer<Float>?) {
    let vocab = h.model.config.vocabSize
    guard let inputIDs else { throw ShimError.invalid("input_ids is NULL") }
    let n = tokenCount(batch: batch, seqLen: seqLen)
    var logitsBuffer: UnsafeMutableBufferPointer<Float>? = nil
    if let logits {
        let (needed, overflow) = n.multipliedReportingOverflow(by: vocab)
        guard !overflow else {
            throw ShimError.overflow("batch * seq_len * vocab_size = \(batch) * \(seqLen) * \(vocab) overflows")
        }
        let capacity = try readCapacity(logitsCapacity, "logits_capacity")
        guard capacity >= needed else {
            throw ShimError.tooSmall("logits needs batch * seq_len * vocab_size = \(needed) floats, "
                                     + "logits_capacity is \(capacity)")
        }
        logitsBuffer = UnsafeMutableBufferPointer(start: logits, count: needed)
    }
    return (UnsafeBufferPointer(start: inputIDs, count: n), labels.map { UnsafeBufferPointer(start: $0, count: n) },
            logitsBuffer)
}
