#if canImport(Glibc)
import Glibc
#endif

// Heads over an encoder's hidden states, forward and backward side by side: mean pooling over the padding
// mask (+ L2 normalisation: what sentence-transformers computes for all-MiniLM-L6-v2), BERT's pooler
// (tanh(W·h[CLS] + b)) and a linear classifier with its cross-entropy.

/// out[b] = Σ_t mask[b,t]·h[b,t] / max(Σ_t mask[b,t], 1e-9) ([B, C]); mask nil = every position.
func meanPoolForward(_ out: UnsafeMutablePointer<Float>, _ h: UnsafePointer<Float>, mask: UnsafePointer<Int32>?,
                     _ B: Int, _ T: Int, _ C: Int) {
    for b in 0..<B {
        let o = out + b * C
        o.update(repeating: 0, count: C)
        var n: Float = 0
        for t in 0..<T where (mask?[b * T + t] ?? 1) != 0 {
            addInPlace(o, h + (b * T + t) * C, C)
            n += 1
        }
        let inv = 1 / max(n, 1e-9)
        for i in 0..<C { o[i] *= inv }
    }
}

/// dh[b,t] += mask[b,t] · dout[b] / count_b.
func meanPoolBackward(_ dh: UnsafeMutablePointer<Float>, _ dout: UnsafePointer<Float>, mask: UnsafePointer<Int32>?,
                      _ B: Int, _ T: Int, _ C: Int) {
    for b in 0..<B {
        var n: Float = 0
        for t in 0..<T where (mask?[b * T + t] ?? 1) != 0 { n += 1 }
        let inv = 1 / max(n, 1e-9)
        for t in 0..<T where (mask?[b * T + t] ?? 1) != 0 {
            let d = dh + (b * T + t) * C, g = dout + b * C
            for i in 0..<C { d[i] += g[i] * inv }
        }
    }
}

/// Rows scaled to unit L2 norm in place, as torch.nn.functional.normalize (norm clamped below at 1e-12).
func l2NormalizeRows(_ x: UnsafeMutablePointer<Float>, _ B: Int, _ C: Int) {
    for b in 0..<B {
        let r = x + b * C
        var ss = 0.0
        for i in 0..<C { ss += Double(r[i]) * Double(r[i]) }
        let inv = Float(1 / max(ss.squareRoot(), 1e-12))
        for i in 0..<C { r[i] *= inv }
    }
}

/// BERT's pooler: out[b] = tanh(W·h[b, 0] + bias) ([B, C]), the [CLS] row of each sequence.
func poolerForward(_ out: UnsafeMutablePointer<Float>, _ h: UnsafePointer<Float>, pooler: FrozenLinear, _ B: Int, _ T: Int,
                   _ C: Int) {
    pooler.forward(out: out, inp: h, rows: B, ldi: T * C, ldo: C)
    for i in 0..<(B * C) { out[i] = tanhf(out[i]) }
}

/// Backward of `poolerForward` (frozen pooler: input gradient only): dh[b, 0] += Wᵀ·(dout ⊙ (1 − out²)).
/// `scratch` holds B·C floats.
func poolerBackward(_ dh: UnsafeMutablePointer<Float>, _ dout: UnsafePointer<Float>, out: UnsafePointer<Float>,
                    pooler: FrozenLinear, scratch: UnsafeMutablePointer<Float>, _ B: Int, _ T: Int, _ C: Int) {
    for i in 0..<(B * C) { scratch[i] = dout[i] * (1 - out[i] * out[i]) }
    for b in 0..<B {
        pooler.backwardInput(dinp: dh + b * T * C, dout: scratch + b * C, rows: 1, accumulate: true)
    }
}

/// A trainable linear classifier over pooled features: logits = W·x + b, W [K, C], b [K], in one flat block
/// (weight then bias) so that it trains as one more slice of parameters.
struct ClassifierHead {
    let classes: Int
    let features: Int
    var parameterCount: Int { classes * features + classes }

    /// logits[B, K] from x[B, C] with parameters `p`.
    func forward(_ logits: UnsafeMutablePointer<Float>, _ x: UnsafeMutablePointer<Float>, params p: UnsafeMutablePointer<Float>,
                 _ B: Int) {
        FrozenLinear(weight: p, bias: p + classes * features, inFeatures: features, outFeatures: classes, transposed: false)
            .forward(out: logits, inp: x, rows: B)
    }

    /// Mean cross-entropy over the rows with a label (labels -100 ignored, as torch); writes dlogits (in place
    /// of the logits), accumulates the parameter gradients into `g` and dL/dx into `dx` (overwritten).
    /// Returns the mean loss.
    func lossBackward(_ logits: UnsafeMutablePointer<Float>, labels: UnsafePointer<Int32>, x: UnsafeMutablePointer<Float>,
                      params p: UnsafeMutablePointer<Float>, grads g: UnsafeMutablePointer<Float>,
                      dx: UnsafeMutablePointer<Float>, _ B: Int) -> Float {
        let K = classes, C = features
        var counted = 0
        for b in 0..<B where labels[b] != -100 { counted += 1 }
        let scale = 1 / Float(max(counted, 1))
        var loss = 0.0
        for b in 0..<B {
            let z = logits + b * K
            guard labels[b] != -100 else { z.update(repeating: 0, count: K); continue }
            var mx = -Float.infinity
            for k in 0..<K { mx = max(mx, z[k]) }
            var s = 0.0
            for k in 0..<K { s += Double(expf(z[k] - mx)) }
            let lse = Double(mx) + log(s)
            loss += lse - Double(z[Int(labels[b])])
            for k in 0..<K { z[k] = Float(exp(Double(z[k]) - lse)) * scale }
            z[Int(labels[b])] -= scale
        }
        let lin = FrozenLinear(weight: p, bias: p + K * C, inFeatures: C, outFeatures: K, transposed: false)
        lin.backwardWeights(dweight: g, dbias: g + K * C, dout: logits, inp: x, rows: B)
        lin.backwardInput(dinp: dx, dout: logits, rows: B, accumulate: false)
        return Float(loss) * scale
    }
}

/// A sequence-classification head: BERT's pooler (frozen, from the base weights) and a trainable linear
/// classifier, as `BertForSequenceClassification` (dropout off); over mean pooling when the model has no pooler.
/// Its parameters have their own optimiser state next to the adapter's.
final class SequenceClassifier {
    let head: ClassifierHead
    let opt: OptimizerState
    private let storage: Storage

    init(classes: Int, features: Int, seed: UInt64) throws {
        head = ClassifierHead(classes: classes, features: features)
        storage = try Storage.allocate(floats: head.parameterCount)
        var rng = Rng(seed: seed)
        // transformers' init of a classifier: N(0, 0.02) weight, zero bias.
        fillNormal(storage.floats, classes * features, std: 0.02, rng: &rng)
        (storage.floats + classes * features).update(repeating: 0, count: classes)
        opt = try OptimizerState(params: storage.floats, count: head.parameterCount)
    }

    var params: UnsafeMutablePointer<Float> { storage.floats }
}

extension Engine {
    /// The pooled features of the classifier: the pooler's output, or the mean over the mask without a pooler.
    func classifierFeatures(_ out: UnsafeMutablePointer<Float>, hidden h: UnsafePointer<Float>, mask: UnsafePointer<Int32>?,
                            batch B: Int, seqLen T: Int) {
        let C = config.hiddenSize
        if let pooler = (weights as? BERTWeights)?.pooler {
            poolerForward(out, h, pooler: pooler, B, T, C)
        } else {
            meanPoolForward(out, h, mask: mask, B, T, C)
        }
    }

    /// Forward and backward of the classifier's cross-entropy over `labels` ([B], -100 = ignored): the
    /// active adapter's gradients (zeroed first) and the head's (zeroed first) are left in their blocks.
    /// Returns the mean loss and the logits [B, K].
    func classifierGradients(_ head: SequenceClassifier, inputIDs: UnsafeBufferPointer<Int32>,
                             typeIDs: UnsafeBufferPointer<Int32>?, mask: UnsafeBufferPointer<Int32>?,
                             labels: UnsafeBufferPointer<Int32>, batch B: Int, seqLen T: Int) throws -> (loss: Float, logits: [Float]) {
        let (slot, opt) = try trainable()
        try validateEncoderBatch(inputIDs: inputIDs, typeIDs: typeIDs, mask: mask, batch: B, seqLen: T, adapter: slot?.adapter)
        let K = head.head.classes, C = config.hiddenSize
        try require(labels.count >= B, "labels has \(labels.count) entries, expected \(B)")
        for b in 0..<B where labels[b] != -100 && (labels[b] < 0 || Int(labels[b]) >= K) {
            throw PEFTKitError.invalidArgument("labels[\(b)] = \(labels[b]) must be -100 or inside 0..<\(K)")
        }
        let inputs = EncoderInputs(typeIDs: typeIDs?.baseAddress, mask: mask?.baseAddress)
        opt.grads.floats.update(repeating: 0, count: opt.count)
        head.opt.grads.floats.update(repeating: 0, count: head.opt.count)
        let f = try encoderForwardForTraining(inputIDs: inputIDs.baseAddress!, inputs: inputs, batch: B, seqLen: T)
        let work = try Storage.allocate(floats: 3 * B * C + B * K + B * T * C)
        let pooled = work.floats, dpooled = pooled + B * C, scratch = dpooled + B * C, logits = scratch + B * C
        let dh = logits + B * K
        classifierFeatures(pooled, hidden: f.hidden, mask: inputs.mask, batch: B, seqLen: T)
        head.head.forward(logits, pooled, params: head.params, B)
        let out = Array(UnsafeBufferPointer(start: logits, count: B * K))
        let loss = head.head.lossBackward(logits, labels: labels.baseAddress!, x: pooled, params: head.params,
                                          grads: head.opt.grads.floats, dx: dpooled, B)
        dh.update(repeating: 0, count: B * T * C)
        if let pooler = (weights as? BERTWeights)?.pooler {
            poolerBackward(dh, dpooled, out: pooled, pooler: pooler, scratch: scratch, B, T, C)
        } else {
            meanPoolBackward(dh, dpooled, mask: inputs.mask, B, T, C)
        }
        encoderBackward(dHidden: dh, inputs: inputs, buffers: f.buffers, slot: f.slot, batch: B, seqLen: T)
        return (loss, out)
    }
}
