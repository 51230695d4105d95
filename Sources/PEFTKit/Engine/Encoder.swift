#if canImport(Glibc)
import Glibc
#endif

// Encoder passes (BERT): hidden states of a padded batch, and the backward from a gradient of those hidden
// states into the active adapter's gradient block. Heads (`Heads.swift`) sit on top of both.
//
// Prompt tuning and prefix tuning run as PEFT 0.18.1 runs them on BERT: the prompt's V virtual tokens come
// first in every row (before [CLS]), go through the embeddings like words (position 0..<V, token type 0, the
// embedding LayerNorm), and the padding mask is extended with V ones; a prefix's P keys and values precede every
// layer's own, are always attended, and the tokens' positions start at P (BERT's `past_key_values_length`).
// The pass then holds V + T rows per sequence; the pooler reads its row 0 (the first virtual token, as
// `BertForSequenceClassification` under PEFT does), mean pooling covers the virtual rows, and what a caller
// sees per token (hidden states, token logits) is the T real positions.

/// What an encoder pass reads besides the ids: token types and the padding mask, both [B·T] (nil = type 0 /
/// no padding).
struct EncoderInputs {
    var typeIDs: UnsafePointer<Int32>?
    var mask: UnsafePointer<Int32>?
}

/// An encoder batch as the stack runs it: `virtual` prompt tokens before each row's `seqLen` positions, and the
/// padding mask over all of them ([B, virtual + seqLen], virtual positions 1; nil = no padding).
struct EncoderRows {
    let batch: Int, seqLen: Int, virtual: Int
    /// Token types of the real positions ([B·seqLen], nil = 0).
    let typeIDs: UnsafePointer<Int32>?
    let mask: UnsafePointer<Int32>?
    private let storage: Storage?

    /// Positions per row in the pass (virtual tokens included).
    var width: Int { virtual + seqLen }

    init(_ inputs: EncoderInputs, batch B: Int, seqLen T: Int, virtual V: Int) throws {
        batch = B; seqLen = T; virtual = V
        typeIDs = inputs.typeIDs
        guard V > 0, let m = inputs.mask else {
            mask = inputs.mask
            storage = nil
            return
        }
        let s = try Storage.allocate(bytes: B * (V + T) * MemoryLayout<Int32>.stride)
        let p = s.base.assumingMemoryBound(to: Int32.self)
        for b in 0..<B {
            (p + b * (V + T)).update(repeating: 1, count: V)
            (p + b * (V + T) + V).update(from: m + b * T, count: T)
        }
        storage = s
        mask = UnsafePointer(p)
    }

    /// Copies the real positions' rows of `full` ([B, width, C]) into `out` ([B, seqLen, C]).
    func gatherReal(_ out: UnsafeMutablePointer<Float>, _ full: UnsafePointer<Float>, _ C: Int) {
        for b in 0..<batch {
            (out + b * seqLen * C).update(from: full + (b * width + virtual) * C, count: seqLen * C)
        }
    }

    /// Writes `real` ([B, seqLen, C]) into the real positions' rows of `full` ([B, width, C]) and zeros the
    /// virtual rows.
    func scatterReal(_ full: UnsafeMutablePointer<Float>, _ real: UnsafePointer<Float>, _ C: Int) {
        for b in 0..<batch {
            (full + b * width * C).update(repeating: 0, count: virtual * C)
            (full + (b * width + virtual) * C).update(from: real + b * seqLen * C, count: seqLen * C)
        }
    }
}

extension Engine {
    /// The one check of an encoder batch: the architecture, the shape (with the adapter's virtual tokens and
    /// prefix), ids, token types below `type_vocab_size`, a 0/1 mask with at least one unmasked position per row.
    func validateEncoderBatch(inputIDs: UnsafeBufferPointer<Int32>, typeIDs: UnsafeBufferPointer<Int32>?,
                              mask: UnsafeBufferPointer<Int32>?, batch B: Int, seqLen T: Int, adapter: Adapter?) throws {
        guard let enc = config.encoder, config.architecture.weights.bidirectional else {
            throw PEFTKitError.unsupported("\(config.architecture) is not an encoder: hidden states, embeddings and "
                + "classification heads need a BERT model")
        }
        try checkShape(batch: B, seqLen: T, extra: (adapter?.virtualTokens ?? 0) + (adapter?.prefixLength ?? 0))
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

    /// Hidden states of the last layer with the active adapter: every row of the pass ([B, V + T, C], prompt
    /// tuning's virtual rows first), and the rows' layout.
    func encode(inputIDs: UnsafePointer<Int32>, inputs: EncoderInputs, batch B: Int, seqLen T: Int) throws
        -> (hidden: Storage, rows: EncoderRows) {
        let adapter = active?.adapter
        let rows = try EncoderRows(inputs, batch: B, seqLen: T, virtual: adapter?.virtualTokens ?? 0)
        adapter?.beginPass(training: false)
        let P = adapter?.prefixLength ?? 0, W = rows.width
        let buf = try buffers.inference(engine: self, batch: B, tq: W, tk: W + P, adapter: adapter)
        runStack(ids: inputIDs, batch: B, seqLen: T, virtual: true, adapter: adapter, buffers: .infer(buf),
                 typeIDs: inputs.typeIDs, keyMask: rows.mask)
        let out = try Storage.allocate(floats: B * W * config.hiddenSize)
        out.floats.update(from: buf.lnf, count: B * W * config.hiddenSize)
        return (out, rows)
    }

    /// Forward of the batch with the active adapter in training mode, keeping activations; returns the
    /// hidden states of every row of the pass ([B, V + T, C], valid until the next pass), the buffers for
    /// `encoderBackward` and the rows' layout.
    func encoderForwardForTraining(inputIDs: UnsafePointer<Int32>, inputs: EncoderInputs, batch B: Int, seqLen T: Int)
        throws -> (hidden: UnsafeMutablePointer<Float>, buffers: TrainBuffers, slot: AdapterSlot, rows: EncoderRows) {
        let (slot, _) = try trainable()
        guard let slot else { throw PEFTKitError.unsupported("full fine-tuning of encoders through heads is not supported yet") }
        let ad = slot.adapter
        let rows = try EncoderRows(inputs, batch: B, seqLen: T, virtual: ad.virtualTokens)
        let buf = try buffers.training(engine: self, batch: B, seqLen: rows.width, adapter: ad)
        ad.beginPass(training: true)
        runStack(ids: inputIDs, batch: B, seqLen: T, virtual: true, adapter: ad, buffers: .train(buf),
                 typeIDs: inputs.typeIDs, keyMask: rows.mask)
        return (buf.lnf, buf, slot, rows)
    }

    /// Backward from dL/d(hidden states) (`dHidden`, [B, V + T, C], every row of the pass) down to the lowest
    /// adapted layer, and for prompt tuning on through the embedding LayerNorm into the virtual tokens: the
    /// adapter's gradients accumulate into its block (frozen linears give input gradients only).
    func encoderBackward(dHidden: UnsafePointer<Float>, rows: EncoderRows, buffers buf: TrainBuffers, slot: AdapterSlot) {
        let c = config, w = weights, B = rows.batch, W = rows.width, N = B * W, C = c.hiddenSize, L = c.numLayers
        let lo = buf.lowest
        let ad = slot.adapter, grads = slot.opt.grads.floats
        let d = buf.scratch.d
        d.update(repeating: 0, count: N * C)
        // The encoder's final norm is the identity: its backward adds dHidden.
        w.finalNormBackward(dinp: d, grads: nil, dout: UnsafeMutablePointer(mutating: dHidden), inp: buf.streams[L - lo],
                            mean: buf.lnfMean, rstd: buf.lnfRstd, rows: N)
        for l in stride(from: L - 1, through: lo, by: -1) {
            let ctx = LayerContext(config: c, adapter: ad, grads: grads, pass: PassInfo(rows: N, slot: l, training: true),
                                   batch: B, seqLen: W, pastLen: ad.prefixLength, cache: nil, keyMask: rows.mask)
            w.backwardLayer(l, ctx, x: buf.streams[l - lo], a: buf.acts[buf.actsIndex(l)], s: buf.scratch, grads: nil)
        }
        // d is now dL/d(embedding output); the virtual rows lead back to the prompt.
        if rows.virtual > 0, let prompt = ad.promptEmbeddings(), let g = ad.promptGrad(grads: grads) {
            for b in 0..<B {
                w.virtualTokensBackward(g, d + b * W * C, prompt: prompt, first: ad.prefixLength, count: rows.virtual)
            }
        }
        ad.endBackward(grads: grads)
    }

    /// The gradient of sum(hidden · probe) with respect to the active adapter's parameters, left in its gradient
    /// block (zeroed first); `probe` covers the real positions ([B, T, C], as `hiddenStates` returns them). What
    /// tests compare with autograd; heads use the two halves directly.
    func encoderGradients(inputIDs: UnsafeBufferPointer<Int32>, typeIDs: UnsafeBufferPointer<Int32>?,
                          mask: UnsafeBufferPointer<Int32>?, batch B: Int, seqLen T: Int, probe: UnsafePointer<Float>) throws {
        let (slot, opt) = try trainable()
        try validateEncoderBatch(inputIDs: inputIDs, typeIDs: typeIDs, mask: mask, batch: B, seqLen: T, adapter: slot?.adapter)
        let inputs = EncoderInputs(typeIDs: typeIDs?.baseAddress, mask: mask?.baseAddress)
        opt.grads.floats.update(repeating: 0, count: opt.count)
        let f = try encoderForwardForTraining(inputIDs: inputIDs.baseAddress!, inputs: inputs, batch: B, seqLen: T)
        let dh = try Storage.allocate(floats: B * f.rows.width * config.hiddenSize)
        f.rows.scatterReal(dh.floats, probe, config.hiddenSize)
        encoderBackward(dHidden: dh.floats, rows: f.rows, buffers: f.buffers, slot: f.slot)
    }
}
