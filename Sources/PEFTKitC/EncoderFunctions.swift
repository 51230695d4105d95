// Encoders (BERT): hidden states, sentence embeddings and task heads with token types and padding masks.

import CPEFTKit
import PEFTKit

/// The id, token-type and mask arrays of an encoder call, copied out of the caller's memory (the core checks
/// the shape, the ids, the types and the mask).
private struct EncoderArgs {
    let ids: [Int32]
    let types: [Int32]?
    let mask: [Int32]?
    let tokens: Int

    init(_ inputIDs: UnsafePointer<Int32>?, _ types: UnsafePointer<Int32>?, _ mask: UnsafePointer<Int32>?,
         _ batch: Int32, _ seqLen: Int32) throws {
        guard let inputIDs else { throw ShimError.invalid("input_ids is NULL") }
        let n = tokenCount(batch: batch, seqLen: seqLen)
        tokens = n
        ids = Array(UnsafeBufferPointer(start: inputIDs, count: n))
        self.types = types.map { Array(UnsafeBufferPointer(start: $0, count: n)) }
        self.mask = mask.map { Array(UnsafeBufferPointer(start: $0, count: n)) }
    }
}

/// `out` as a buffer of `count` floats after checking the caller's capacity.
private func outputBuffer(_ out: UnsafeMutablePointer<Float>?, _ capacity: Int, count: Int, _ what: String) throws
    -> UnsafeMutablePointer<Float> {
    guard let out else { throw ShimError.invalid("out is NULL") }
    let cap = try readCapacity(capacity, "out_capacity")
    guard cap >= count else { throw ShimError.tooSmall("out needs \(what) = \(count) floats, out_capacity is \(cap)") }
    return out
}

/// `a · b`, or an overflow error naming the product.
private func product(_ a: Int, _ b: Int, _ what: String) throws -> Int {
    let (n, o) = a.multipliedReportingOverflow(by: b)
    guard !o else { throw ShimError.overflow("\(what) overflows") }
    return n
}

@c @implementation
public func peftkit_encoder_hidden_states(_ model: OpaquePointer?, _ inputIDs: UnsafePointer<Int32>?,
                                          _ tokenTypeIDs: UnsafePointer<Int32>?, _ attentionMask: UnsafePointer<Int32>?,
                                          _ batch: Int32, _ seqLen: Int32, _ out: UnsafeMutablePointer<Float>?,
                                          _ outCapacity: Int) -> peftkit_status {
    entry("peftkit_encoder_hidden_states") {
        let h = try ModelHandle.from(model)
        let a = try EncoderArgs(inputIDs, tokenTypeIDs, attentionMask, batch, seqLen)
        let n = try product(a.tokens, h.model.config.hiddenSize, "batch * seq_len * hidden_size")
        let o = try outputBuffer(out, outCapacity, count: n, "batch * seq_len * hidden_size")
        let r = try h.model.hiddenStates(inputIDs: a.ids, attentionMask: a.mask, tokenTypeIDs: a.types, batch: Int(batch),
                                         seqLen: Int(seqLen))
        guard r.count == n else { throw ShimError.internal("hidden states have \(r.count) floats, expected \(n)") }
        o.update(from: r, count: n)
    }
}

@c @implementation
public func peftkit_encoder_embed(_ model: OpaquePointer?, _ inputIDs: UnsafePointer<Int32>?,
                                  _ tokenTypeIDs: UnsafePointer<Int32>?, _ attentionMask: UnsafePointer<Int32>?,
                                  _ batch: Int32, _ seqLen: Int32, _ normalize: Int32, _ out: UnsafeMutablePointer<Float>?,
                                  _ outCapacity: Int) -> peftkit_status {
    entry("peftkit_encoder_embed") {
        let h = try ModelHandle.from(model)
        let norm = try readBool(normalize, "normalize")
        let a = try EncoderArgs(inputIDs, tokenTypeIDs, attentionMask, batch, seqLen)
        let n = try product(max(0, Int(batch)), h.model.config.hiddenSize, "batch * hidden_size")
        let o = try outputBuffer(out, outCapacity, count: n, "batch * hidden_size")
        let r = try h.model.embed(inputIDs: a.ids, attentionMask: a.mask, tokenTypeIDs: a.types, batch: Int(batch),
                                  seqLen: Int(seqLen), normalize: norm)
        guard r.count == n else { throw ShimError.internal("embeddings have \(r.count) floats, expected \(n)") }
        o.update(from: r, count: n)
    }
}

private let headKinds: [(code: Int32, kind: HeadKind)] = [
    (PEFTKIT_HEAD_CLASSIFICATION, .classification), (PEFTKIT_HEAD_REGRESSION, .regression), (PEFTKIT_HEAD_TOKENS, .tokens),
]

@c @implementation
public func peftkit_head_attach(_ model: OpaquePointer?, _ kind: Int32, _ outputs: Int32, _ seed: UInt64) -> peftkit_status {
    entry("peftkit_head_attach") {
        let h = try ModelHandle.from(model)
        guard let k = headKinds.first(where: { $0.code == kind })?.kind else {
            throw ShimError.invalid("kind must be PEFTKIT_HEAD_CLASSIFICATION (1), _REGRESSION (2) or _TOKENS (3), got \(kind)")
        }
        try h.model.attachHead(k, outputs: Int(outputs), seed: seed)
    }
}

@c @implementation
public func peftkit_head_get(_ model: OpaquePointer?, _ kind: UnsafeMutablePointer<Int32>?,
                             _ outputs: UnsafeMutablePointer<Int32>?) -> peftkit_status {
    entry("peftkit_head_get") {
        let h = try ModelHandle.from(model)
        guard let kind, let outputs else { throw ShimError.invalid("kind and outputs must not be NULL") }
        let info = try h.model.headInfo()
        kind.pointee = info.map { i in headKinds.first { $0.kind == i.kind }?.code ?? 0 } ?? 0
        outputs.pointee = Int32(bounded: info?.outputs ?? 0)
    }
}

/// Labels and targets copied with the lengths the active head reads (the core refuses the wrong kind, and a
/// missing head, before reading them).
private func headTargets(_ h: ModelHandle, _ labels: UnsafePointer<Int32>?, _ targets: UnsafePointer<Float>?,
                         _ batch: Int32, tokens: Int) throws -> (labels: [Int32]?, targets: [Float]?, outputs: Int?) {
    let info = try h.model.headInfo()
    let rows = max(0, Int(batch))
    let nLabels = info?.kind == .tokens ? tokens : rows
    let nTargets = try product(rows, info?.outputs ?? 0, "batch * outputs")
    let lab = labels.map { Array(UnsafeBufferPointer(start: $0, count: info?.kind == .regression ? 0 : nLabels)) }
    let tg = targets.map { Array(UnsafeBufferPointer(start: $0, count: info?.kind == .regression ? nTargets : 0)) }
    let outCount = try info.map { try product(($0.kind == .tokens ? tokens : rows), $0.outputs, "output count") }
    return (lab, tg, outCount)
}

@c @implementation
public func peftkit_head_forward(_ model: OpaquePointer?, _ inputIDs: UnsafePointer<Int32>?,
                                 _ tokenTypeIDs: UnsafePointer<Int32>?, _ attentionMask: UnsafePointer<Int32>?,
                                 _ batch: Int32, _ seqLen: Int32, _ labels: UnsafePointer<Int32>?,
                                 _ targets: UnsafePointer<Float>?, _ out: UnsafeMutablePointer<Float>?,
                                 _ outCapacity: Int, _ lossOut: UnsafeMutablePointer<Float>?) -> peftkit_status {
    entry("peftkit_head_forward") {
        let h = try ModelHandle.from(model)
        let a = try EncoderArgs(inputIDs, tokenTypeIDs, attentionMask, batch, seqLen)
        let t = try headTargets(h, labels, targets, batch, tokens: a.tokens)
        var o: UnsafeMutablePointer<Float>? = nil
        if out != nil || outCapacity != 0, let n = t.outputs {
            o = try outputBuffer(out, outCapacity, count: n, "the head's output count")
        }
        let r = try h.model.headOutputs(inputIDs: a.ids, attentionMask: a.mask, tokenTypeIDs: a.types, labels: t.labels,
                                        targets: t.targets, batch: Int(batch), seqLen: Int(seqLen))
        if let o {
            guard r.outputs.count == t.outputs else { throw ShimError.internal("the head gave \(r.outputs.count) outputs") }
            o.update(from: r.outputs, count: r.outputs.count)
        }
        if let l = r.loss { lossOut?.pointee = l }
    }
}

@c @implementation
public func peftkit_head_train_step(_ model: OpaquePointer?, _ inputIDs: UnsafePointer<Int32>?,
                                    _ tokenTypeIDs: UnsafePointer<Int32>?, _ attentionMask: UnsafePointer<Int32>?,
                                    _ batch: Int32, _ seqLen: Int32, _ labels: UnsafePointer<Int32>?,
                                    _ targets: UnsafePointer<Float>?, _ config: UnsafePointer<peftkit_train_config>?,
                                    _ out: UnsafeMutablePointer<peftkit_train_result>?) -> peftkit_status {
    entry("peftkit_head_train_step") {
        let h = try ModelHandle.from(model)
        let a = try EncoderArgs(inputIDs, tokenTypeIDs, attentionMask, batch, seqLen)
        let tc = try trainConfig(from: config)
        let outSize = try outputStructSize(out, "out")
        let t = try headTargets(h, labels, targets, batch, tokens: a.tokens)
        let r = try h.model.headTrainStep(inputIDs: a.ids, attentionMask: a.mask, tokenTypeIDs: a.types, labels: t.labels,
                                          targets: t.targets, batch: Int(batch), seqLen: Int(seqLen), config: tc)
        if let out, let outSize { store(r, into: out, size: outSize) }
    }
}
