#if canImport(Glibc)
import Glibc
#endif

// Encoder passes (BERT): hidden states of a padded batch, and the backward from a gradient of those hidden
// states into the active adapter's gradient block. Heads (`Heads.swift`) sit on top of both.

/// What an encoder pass reads besides the ids: token types and the padding mask, both [B·T] (nil = type 0 /
/// no padding).
struct EncoderInputs {
    var typeIDs: UnsafePointer<Int32>?
    var mask: UnsafePointer<Int32>?
}

extension Engine {
    /// The one check of an encoder batch: the architecture, the shape, ids, token types below
    /// `type_vocab_size`, a 0/1 mask with at least one unmasked position per row. Prompt tuning's virtual
    /// tokens are not supported on encoders yet.
    func validateEncoderBatch(inputIDs: UnsafeBufferPointer<Int32>, typeIDs: UnsafeBufferPointer<Int32>?,
                              mask: UnsafeBufferPointer<Int32>?, batch B: Int, seqLen T: Int, adapter: Adapter?) throws {
        guard let enc = config.encoder, config.architecture.weights.bidirectional else {
            throw PEFTKitError.unsupported("\(config.architecture) is not an encoder: hidden states, embeddings and "
                + "classification heads need a BERT model")
        }
        try require((adapter?.virtualTokens ?? 0) == 0, "prompt tuning (virtual tokens) is not supported on encoders yet")
        try checkShape(batch: B, seqLen: T, extra: adapter?.prefixLength ?? 0)
        let N = B * T
        try checkTokens(inputIDs, count: N, what: "input_ids")
        if let typeIDs {
            try require(typeIDs.count >= N, "token_type_ids has \(typeIDs.count) entries, expected \(N)")
            for i in 0..<N where typeIDs[i] < 0 || Int(typeIDs[i]) >= enc.typeVocabSize {
                throw PEFTKitError.invalidArgument("token_type_ids[\(i)] = \(typeIDs[i]) is outside 0..<\(enc.typeVocabSize)")
            }
        }
        if let mask {
            try require(mask.count >= N, "attention_mask has \(mask.count) entries, expected \(N)")
            for b in 0..<B {
                var any = false
                for t in 0..<T {
                    let m = mask[b * T + t]
                    try require(m == 0 || m == 1, "attention_mask[\(b * T + t)] = \(m) must be 0 or 1")
                    any = any || m == 1
                }
                try require(any, "attention_mask row \(b) masks every position")
            }
        }
    }

    /// Hidden states of the last layer, [B, T, C], into `out` (the active adapter applied).
    func encode(inputIDs: UnsafePointer<Int32>, inputs: EncoderInputs, batch B: Int, seqLen T: Int,
                into out: UnsafeMutablePointer<Float>) throws {
        let adapter = active?.adapter
        adapter?.beginPass(training: false)
        let P = adapter?.prefixLength ?? 0
        let buf = try buffers.inference(engine: self, batch: B, tq: T, tk: T + P, adapter: adapter)
        runStack(ids: inputIDs, batch: B, seqLen: T, virtual: false, adapter: adapter, buffers: .infer(buf),
                 typeIDs: inputs.typeIDs, keyMask: inputs.mask)
        out.update(from: buf.lnf, count: B * T * config.hiddenSize)
    }

    /// Forward of the batch with the active adapter in training mode, keeping activations; returns the
    /// hidden states ([B, T, C], valid until the next pass) and the buffers for `encoderBackward`.
    func encoderForwardForTraining(inputIDs: UnsafePointer<Int32>, inputs: EncoderInputs, batch B: Int, seqLen T: Int)
        throws -> (hidden: UnsafeMutablePointer<Float>, buffers: TrainBuffers, slot: AdapterSlot) {
        let (slot, _) = try trainable()
        guard let slot else { throw PEFTKitError.unsupported("full fine-tuning of encoders through heads is not supported yet") }
        let ad = slot.adapter
        let buf = try buffers.training(engine: self, batch: B, seqLen: T, adapter: ad)
        ad.beginPass(training: true)
        runStack(ids: inputIDs, batch: B, seqLen: T, virtual: false, adapter: ad, buffers: .train(buf),
                 typeIDs: inputs.typeIDs, keyMask: inputs.mask)
        return (buf.lnf, buf, slot)
    }

    /// Backward from dL/d(hidden states) (`dHidden`, [B, T, C]) down to the lowest adapted layer: the adapter's
    /// gradients accumulate into its block (frozen linears give input gradients only).
    func encoderBackward(dHidden: UnsafePointer<Float>, inputs: EncoderInputs, buffers buf: TrainBuffers, slot: AdapterSlot,
                         batch B: Int, seqLen T: Int) {
        let c = config, w = weights, N = B * T, C = c.hiddenSize, L = c.numLayers, lo = buf.lowest
        let ad = slot.adapter, grads = slot.opt.grads.floats
        let d = buf.scratch.d
        d.update(repeating: 0, count: N * C)
        // The encoder's final norm is the identity: its backward adds dHidden.
        w.finalNormBackward(dinp: d, grads: nil, dout: UnsafeMutablePointer(mutating: dHidden), inp: buf.streams[L - lo],
                            mean: buf.lnfMean, rstd: buf.lnfRstd, rows: N)
        for l in stride(from: L - 1, through: lo, by: -1) {
            let ctx = LayerContext(config: c, adapter: ad, grads: grads, pass: PassInfo(rows: N, slot: l, training: true),
                                   batch: B, seqLen: T, pastLen: ad.prefixLength, cache: nil, keyMask: inputs.mask)
            w.backwardLayer(l, ctx, x: buf.streams[l - lo], a: buf.acts[l - lo], s: buf.scratch, grads: nil)
        }
        ad.endBackward(grads: grads)
    }

    /// The gradient of sum(hidden · probe) with respect to the active adapter's parameters, left in its gradient
    /// block (zeroed first). What tests compare with autograd; heads use the two halves directly.
    func encoderGradients(inputIDs: UnsafeBufferPointer<Int32>, typeIDs: UnsafeBufferPointer<Int32>?,
                          mask: UnsafeBufferPointer<Int32>?, batch B: Int, seqLen T: Int, probe: UnsafePointer<Float>) throws {
        let (slot, opt) = try trainable()
        try validateEncoderBatch(inputIDs: inputIDs, typeIDs: typeIDs, mask: mask, batch: B, seqLen: T, adapter: slot?.adapter)
        let inputs = EncoderInputs(typeIDs: typeIDs?.baseAddress, mask: mask?.baseAddress)
        opt.grads.floats.update(repeating: 0, count: opt.count)
        let f = try encoderForwardForTraining(inputIDs: inputIDs.baseAddress!, inputs: inputs, batch: B, seqLen: T)
        encoderBackward(dHidden: probe, inputs: inputs, buffers: f.buffers, slot: f.slot, batch: B, seqLen: T)
    }
}
