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

/// A trainable linear layer over features: out = W·x + b, W [K, C], b [K], in one flat block (weight then
/// bias) so that it trains as one more slice of parameters.
struct ClassifierHead {
    let classes: Int
    let features: Int
    var parameterCount: Int { classes * features + classes }

    private func linear(_ p: UnsafeMutablePointer<Float>) -> FrozenLinear {
        FrozenLinear(weight: p, bias: p + classes * features, inFeatures: features, outFeatures: classes, transposed: false)
    }

    /// logits[rows, K] from x[rows, C] with parameters `p`.
    func forward(_ logits: UnsafeMutablePointer<Float>, _ x: UnsafeMutablePointer<Float>, params p: UnsafeMutablePointer<Float>,
                 _ rows: Int) {
        linear(p).forward(out: logits, inp: x, rows: rows)
    }

    /// From dL/dlogits: accumulates the parameter gradients into `g` and writes dL/dx into `dx` (overwritten).
    func backward(_ dlogits: UnsafeMutablePointer<Float>, x: UnsafeMutablePointer<Float>, params p: UnsafeMutablePointer<Float>,
                  grads g: UnsafeMutablePointer<Float>, dx: UnsafeMutablePointer<Float>, _ rows: Int) {
        let lin = linear(p)
        lin.backwardWeights(dweight: g, dbias: g + classes * features, dout: dlogits, inp: x, rows: rows)
        lin.backwardInput(dinp: dx, dout: dlogits, rows: rows, accumulate: false)
    }

    /// Mean cross-entropy over the rows with a label (labels -100 ignored, as torch); writes dlogits (in place
    /// of the logits), accumulates the parameter gradients into `g` and dL/dx into `dx` (overwritten).
    /// Returns the mean loss.
    func lossBackward(_ logits: UnsafeMutablePointer<Float>, labels: UnsafePointer<Int32>, x: UnsafeMutablePointer<Float>,
                      params p: UnsafeMutablePointer<Float>, grads g: UnsafeMutablePointer<Float>,
                      dx: UnsafeMutablePointer<Float>, _ B: Int) -> Float {
        let loss = crossEntropyRowsBackward(logits, labels: labels, rows: B, classes: classes)
        backward(logits, x: x, params: p, grads: g, dx: dx, B)
        return loss
    }
}

/// Mean cross-entropy of `rows` rows of `K` logits over the rows whose label is not -100; the logits become
/// dL/dlogits in place (zero on ignored rows). Labels must be -100 or inside 0..<K (checked by the caller).
func crossEntropyRowsBackward(_ logits: UnsafeMutablePointer<Float>, labels: UnsafePointer<Int32>, rows: Int, classes K: Int)
    -> Float {
    var counted = 0
    for b in 0..<rows where labels[b] != -100 { counted += 1 }
    let scale = 1 / Float(max(counted, 1))
    var loss = 0.0
    for b in 0..<rows {
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
    return Float(loss) * scale
}

/// Mean squared error of `n` outputs against `targets` (torch's `MSELoss`); the outputs become dL/doutputs in
/// place.
func meanSquaredErrorBackward(_ y: UnsafeMutablePointer<Float>, targets: UnsafePointer<Float>, _ n: Int) -> Float {
    var loss = 0.0
    let scale = 2 / Float(max(n, 1))
    for i in 0..<n {
        let d = y[i] - targets[i]
        loss += Double(d) * Double(d)
        y[i] = d * scale
    }
    return Float(loss / Double(max(n, 1)))
}

/// What a task head computes over an encoder's hidden states.
public enum HeadKind: String, Sendable, CaseIterable {
    /// Sequence classification: the pooler's output (or the mean over the mask without a pooler) through a
    /// linear layer of `outputs` logits, cross-entropy on one label per row (`BertForSequenceClassification`).
    case classification
    /// Sequence regression: the same features and linear layer, mean squared error on `outputs` values per row
    /// (`BertForSequenceClassification` with `problem_type` "regression").
    case regression
    /// Token classification: every position's hidden state through a linear layer of `outputs` logits,
    /// cross-entropy on one label per position, -100 ignored (`BertForTokenClassification`).
    case tokens
}

/// A task head: a trainable linear layer of a `HeadKind`, owned by the adapter it trains with (as PEFT's
/// `modules_to_save`). transformers' init: N(0, 0.02) weight, zero bias.
final class TaskHead {
    let kind: HeadKind
    let head: ClassifierHead
    private let storage: Storage

    init(kind: HeadKind, outputs: Int, features: Int, seed: UInt64) throws {
        self.kind = kind
        head = ClassifierHead(classes: outputs, features: features)
        storage = try Storage.allocate(floats: head.parameterCount)
        var rng = Rng(seed: seed)
        fillNormal(storage.floats, outputs * features, std: 0.02, rng: &rng)
        (storage.floats + outputs * features).update(repeating: 0, count: outputs)
    }

    var params: UnsafeMutablePointer<Float> { storage.floats }
    var parameterCount: Int { head.parameterCount }
    var outputs: Int { head.classes }

    /// Outputs per batch of `B` rows of `T` positions.
    func outputCount(batch B: Int, seqLen T: Int) -> Int { (kind == .tokens ? B * T : B) * outputs }
}

/// What a head's loss is computed against: class labels (classification: [B]; tokens: [B·T]; -100 ignored) or
/// target values (regression: [B·outputs]).
struct HeadTargets {
    var labels: UnsafeBufferPointer<Int32>?
    var values: UnsafeBufferPointer<Float>?
}

extension Engine {
    /// The pooled features of a sequence head: the pooler's output, or the mean over the mask without a pooler.
    func classifierFeatures(_ out: UnsafeMutablePointer<Float>, hidden h: UnsafePointer<Float>, mask: UnsafePointer<Int32>?,
                            batch B: Int, seqLen T: Int) {
        let C = config.hiddenSize
        if let pooler = (weights as? BERTWeights)?.pooler {
            poolerForward(out, h, pooler: pooler, B, T, C)
        } else {
            meanPoolForward(out, h, mask: mask, B, T, C)
        }
    }

    /// The head of the active adapter, or a state error.
    func activeHead() throws -> (AdapterSlot, TaskHead) {
        guard let slot = active else { throw PEFTKitError.state("no active adapter: a task head belongs to the active adapter") }
        guard let head = slot.head else {
            throw PEFTKitError.state("adapter '\(slot.name)' has no task head: attach one first (attachHead)")
        }
        return (slot, head)
    }

    /// Checks labels or targets against the head's kind and the batch.
    func validateHeadTargets(_ head: TaskHead, _ t: HeadTargets, batch B: Int, seqLen T: Int) throws {
        let K = head.outputs
        switch head.kind {
        case .classification, .tokens:
            try require(t.values == nil, "a \(head.kind.rawValue) head takes integer labels, not float targets")
            guard let labels = t.labels else { throw PEFTKitError.invalidArgument("a \(head.kind.rawValue) head needs labels") }
            let n = head.kind == .tokens ? B * T : B
            try require(labels.count >= n, "labels has \(labels.count) entries, expected \(n)")
            for i in 0..<n where labels[i] != -100 && (labels[i] < 0 || Int(labels[i]) >= K) {
                throw PEFTKitError.invalidArgument("labels[\(i)] = \(labels[i]) must be -100 or inside 0..<\(K)")
            }
        case .regression:
            try require(t.labels == nil, "a regression head takes float targets, not integer labels")
            guard let values = t.values else { throw PEFTKitError.invalidArgument("a regression head needs targets") }
            let n = B * K
            try require(values.count >= n, "targets has \(values.count) entries, expected \(n)")
            for i in 0..<n where !values[i].isFinite {
                throw PEFTKitError.invalidArgument("targets[\(i)] = \(values[i]) is not finite")
            }
        }
    }

    /// The head's outputs ([B, K], or [B, T, K] for tokens: the real positions) over the pass's hidden states
    /// `h` ([B, V + T, C]), and the loss against `targets` when given (validated by the caller). Evaluation only:
    /// nothing is trained.
    func headOutputs(_ head: TaskHead, hidden h: UnsafeMutablePointer<Float>, rows r: EncoderRows,
                     targets: HeadTargets?) throws -> (outputs: [Float], loss: Float?) {
        let C = config.hiddenSize, K = head.outputs, B = r.batch, T = r.seqLen
        let rows = head.kind == .tokens ? B * T : B
        var out = [Float](repeating: 0, count: rows * K)
        let work = try Storage.allocate(floats: head.kind == .tokens ? rows * K + (r.virtual > 0 ? B * T * C : 0) : B * C + rows * K)
        let x: UnsafeMutablePointer<Float>
        if head.kind == .tokens {
            if r.virtual > 0 {
                x = work.floats + rows * K
                r.gatherReal(x, h, C)
            } else {
                x = h
            }
        } else {
            x = work.floats + rows * K
            classifierFeatures(x, hidden: h, mask: r.mask, batch: B, seqLen: r.width)
        }
        head.head.forward(work.floats, x, params: head.params, rows)
        out.withUnsafeMutableBufferPointer { $0.baseAddress!.update(from: work.floats, count: rows * K) }
        guard let targets else { return (out, nil) }
        let loss: Float
        if head.kind == .regression {
            loss = meanSquaredErrorBackward(work.floats, targets: targets.values!.baseAddress!, rows * K)
        } else {
            loss = crossEntropyRowsBackward(work.floats, labels: targets.labels!.baseAddress!, rows: rows, classes: K)
        }
        return (out, loss)
    }

    /// Forward and backward of the active adapter's head loss: the gradients of the adapter and the head (one
    /// block, zeroed first) are left in the adapter's optimiser state. Returns the mean loss and the outputs.
    func headGradients(inputIDs: UnsafeBufferPointer<Int32>, typeIDs: UnsafeBufferPointer<Int32>?,
                       mask: UnsafeBufferPointer<Int32>?, targets: HeadTargets, batch B: Int, seqLen T: Int)
        throws -> (loss: Float, outputs: [Float]) {
        let (slot, head) = try activeHead()
        let (tslot, opt) = try trainable()
        try require(tslot === slot, "the head's adapter is not the one being trained")
        try validateEncoderBatch(inputIDs: inputIDs, typeIDs: typeIDs, mask: mask, batch: B, seqLen: T, adapter: slot.adapter)
        try validateHeadTargets(head, targets, batch: B, seqLen: T)
        let K = head.outputs, C = config.hiddenSize, P = slot.adapter.parameterCount
        let rows = head.kind == .tokens ? B * T : B
        let inputs = EncoderInputs(typeIDs: typeIDs?.baseAddress, mask: mask?.baseAddress)
        opt.grads.floats.update(repeating: 0, count: opt.count)
        let f = try encoderForwardForTraining(inputIDs: inputIDs.baseAddress!, inputs: inputs, batch: B, seqLen: T)
        let W = f.rows.width, V = f.rows.virtual
        let work = try Storage.allocate(floats: 3 * B * C + rows * K + B * W * C + (V > 0 ? 2 * B * T * C : 0))
        let pooled = work.floats, dpooled = pooled + B * C, scratch = dpooled + B * C, logits = scratch + B * C
        let dh = logits + rows * K
        // Token heads read the real positions: the hidden rows themselves, or a copy without the virtual rows.
        let real = V > 0 ? dh + B * W * C : f.hidden, dreal = V > 0 ? real + B * T * C : dh
        if head.kind == .tokens && V > 0 { f.rows.gatherReal(real, f.hidden, C) }
        let x = head.kind == .tokens ? real : pooled
        if head.kind != .tokens { classifierFeatures(pooled, hidden: f.hidden, mask: f.rows.mask, batch: B, seqLen: W) }
        head.head.forward(logits, x, params: head.params, rows)
        let out = Array(UnsafeBufferPointer(start: logits, count: rows * K))
        let loss = head.kind == .regression
            ? meanSquaredErrorBackward(logits, targets: targets.values!.baseAddress!, rows * K)
            : crossEntropyRowsBackward(logits, labels: targets.labels!.baseAddress!, rows: rows, classes: K)
        let hg = opt.grads.floats + P
        if head.kind == .tokens {
            head.head.backward(logits, x: x, params: head.params, grads: hg, dx: dreal, rows)
            if V > 0 { f.rows.scatterReal(dh, dreal, C) }
        } else {
            head.head.backward(logits, x: x, params: head.params, grads: hg, dx: dpooled, rows)
            dh.update(repeating: 0, count: B * W * C)
            if let pooler = (weights as? BERTWeights)?.pooler {
                poolerBackward(dh, dpooled, out: pooled, pooler: pooler, scratch: scratch, B, W, C)
            } else {
                meanPoolBackward(dh, dpooled, mask: f.rows.mask, B, W, C)
            }
        }
        encoderBackward(dHidden: dh, rows: f.rows, buffers: f.buffers, slot: f.slot)
        return (loss, out)
    }
}

// MARK: files

/// PEFT's name of an encoder head model's classifier (`modules_to_save`), under `base_model.model.`.
private let headModule = "classifier"
/// AdapterHub's head files next to an adapter (`save_adapter(..., with_head=True)`).
let adapterHubHeadConfigFile = "head_config.json"
let adapterHubHeadWeightsFile = "model_head.safetensors"

/// Where PEFT keeps the head model's modules in a saved folder: `base_model.model.` for the tuner methods
/// (LoRA, IA3), `base_model.` for prompt learning (prefix, prompt), whose PeftModel wraps the model directly.
func peftHeadKeyBase(_ method: AdapterMethod) -> String {
    method == .prefix || method == .prompt ? "base_model." : "base_model.model."
}

extension Engine {
    /// What a save of `slot` adds for its task head (nil without one), in the adapter's ecosystem's form:
    /// - PEFT (`modules_to_save`), as `BertForSequenceClassification` / `BertForTokenClassification` + PEFT write
    ///   it: the classifier as `base_model.model.classifier.weight` / `.bias` (`base_model.classifier.*` for
    ///   prompt learning), the adapter's tensors under `base_model.model.bert.`, and `task_type` SEQ_CLS
    ///   (classification; regression with one output, which transformers reads as regression) or TOKEN_CLS;
    /// - AdapterHub (bottleneck adapters), as `save_adapter(..., with_head=True)` writes a static head model's
    ///   head: `head_config.json` (`config` null, `model_class` BertForSequenceClassification or
    ///   BertForTokenClassification, `num_labels`) and `model_head.safetensors` (`classifier.weight` / `.bias`).
    func headFileExtra(_ slot: AdapterSlot) throws -> AdapterFileExtra? {
        guard let head = slot.head else { return nil }
        guard let savable = slot.adapter as? SavableAdapter else { return nil }
        if head.kind == .regression && head.outputs != 1 {
            throw PEFTKitError.unsupported("a regression head of \(head.outputs) outputs cannot be saved in PEFT's or AdapterHub's "
                + "form (transformers reads a sequence head with more than one label as classification)")
        }
        let K = head.outputs, C = head.head.features
        func tensors(_ prefix: String) -> [SavedTensor] {
            [SavedTensor(name: prefix + "weight", shape: [K, C], data: UnsafeBufferPointer(start: head.params, count: K * C)),
             SavedTensor(name: prefix + "bias", shape: [K], data: UnsafeBufferPointer(start: head.params + K * C, count: K))]
        }
        if savable.fileFormat == .adapterHub {
            let entries = tensors(headModule + ".").map {
                SafeTensorsWriter.Entry(name: $0.name, shape: $0.shape, payload: .f32Buffer($0.data))
            }
            let weights = try SafeTensorsWriter.writer(entries: entries, metadata: ["format": "pt"], path: adapterHubHeadWeightsFile)
            var labels: [String: JSONValue] = [:]
            for k in 0..<K { labels["LABEL_\(k)"] = .int(k) }
            let cfg: [String: JSONValue] = [
                "config": .null, "hidden_size": .int(C), "label2id": .object(labels),
                "model_class": .string(head.kind == .tokens ? "BertForTokenClassification" : "BertForSequenceClassification"),
                "model_name": .string(""), "model_type": .string("bert"), "name": .null, "num_labels": .int(K),
                "version": .string("adapters.1.3.0"),
            ]
            let json = Array(JSONValue.object(cfg).serialized().utf8)
            return AdapterFileExtra(files: [(adapterHubHeadWeightsFile, weights),
                                            (adapterHubHeadConfigFile, { fd in try writeAll(fd, json) })])
        }
        let config: [String: JSONValue] = [
            "modules_to_save": .array([.string(headModule)]),
            "task_type": .string(head.kind == .tokens ? "TOKEN_CLS" : "SEQ_CLS"),
        ]
        let rename: (String) -> String = { n in
            n.hasPrefix("base_model.model.") ? encoderHeadModelPrefix + n.dropFirst("base_model.model.".count) : n
        }
        return AdapterFileExtra(tensors: tensors(peftHeadKeyBase(slot.adapter.method) + "\(headModule)."), config: config,
                                rename: rename)
    }

    /// The task head a PEFT adapter folder saves with its adapter (`modules_to_save` with a classifier, as
    /// `headFileExtra` writes or PEFT saves from a BERT head model: `base_model.model.classifier.*`, or
    /// `base_model.classifier.*` for prompt learning), or nil. TOKEN_CLS gives a token head, SEQ_CLS
    /// a classifier, or a regression head when it has one output (transformers' rule for `num_labels` 1).
    func readHeadFile(_ directory: String) throws -> TaskHead? {
        guard config.encoder != nil else { return nil }
        if pathKind(directory + "/" + adapterHubHeadConfigFile) == .file { return try readAdapterHubHead(directory) }
        let weightsPath = directory + "/" + AdapterFileFormat.peft.weightsFile
        guard pathKind(weightsPath) == .file else { return nil }
        let cfgPath = directory + "/" + AdapterFileFormat.configFile
        let object = try JSONValue.parseObject(try readWholeFile(path: cfgPath, maxBytes: 1 << 20), source: "'\(cfgPath)'")
        guard case .array(let saved)? = object["modules_to_save"], !saved.isEmpty else { return nil }
        let st = try SafeTensorsFile(path: weightsPath)
        let candidates = ["base_model.model.", "base_model."].flatMap { base in encoderHeadModules.sorted().map { base + $0 + "." } }
        guard let key = candidates.first(where: { st.has($0 + "weight") }) else {
            throw PEFTKitError.format("'\(cfgPath)' lists modules_to_save but '\(weightsPath)' holds no classifier weight")
        }
        guard let info = st.info(key + "weight"), info.shape.count == 2, info.shape[1] == config.hiddenSize,
              info.shape[0] >= 1, info.shape[0] <= 1 << 16 else {
            throw PEFTKitError.format("'\(weightsPath)': \(key)weight must be [labels, \(config.hiddenSize)]")
        }
        let K = info.shape[0]
        let task: String? = if case .string(let t)? = object["task_type"] { t } else { nil }
        let kind: HeadKind = task == "TOKEN_CLS" ? .tokens : (K == 1 ? .regression : .classification)
        let head = try TaskHead(kind: kind, outputs: K, features: config.hiddenSize, seed: 0)
        try copyFileTensor(st, key: key + "weight", shape: [K, config.hiddenSize], into: head.params, path: weightsPath)
        try copyFileTensor(st, key: key + "bias", shape: [K], into: head.params + K * config.hiddenSize, path: weightsPath)
        guard isAllFinite(head.params, head.parameterCount) else {
            throw PEFTKitError.numerical("'\(weightsPath)' holds a non-finite classifier weight")
        }
        return head
    }

    /// AdapterHub's static head (`head_config.json` with `config` null, as `save_adapter(..., with_head=True)`
    /// writes for `BertForSequenceClassification` / `BertForTokenClassification`) and its
    /// `model_head.safetensors`. Flex heads (a head config of their own) and pickled `pytorch_model_head.bin`
    /// are refused with a message.
    func readAdapterHubHead(_ directory: String) throws -> TaskHead {
        let cfgPath = directory + "/" + adapterHubHeadConfigFile
        let o = try JSONValue.parseObject(try readWholeFile(path: cfgPath, maxBytes: 1 << 20), source: "'\(cfgPath)'")
        let f = ConfigFields(object: o, source: "'\(cfgPath)'")
        guard o["config"] == nil || o["config"] == .null else {
            throw PEFTKitError.unsupported("'\(cfgPath)': AdapterHub flex heads (a head 'config' of their own, from an "
                + "AdapterModel) are not supported; static heads of BertForSequenceClassification / BertForTokenClassification are")
        }
        let kind: HeadKind
        switch try f.string("model_class") {
        case "BertForSequenceClassification"?: kind = .classification
        case "BertForTokenClassification"?: kind = .tokens
        case let other: throw PEFTKitError.unsupported("'\(cfgPath)': head of model_class \(other.map { "'\($0)'" } ?? "(none)")")
        }
        if let h = try f.int("hidden_size"), h != config.hiddenSize {
            throw PEFTKitError.format("'\(cfgPath)': the head was made for hidden size \(h), this model has \(config.hiddenSize)")
        }
        let weightsPath = directory + "/" + adapterHubHeadWeightsFile
        guard pathKind(weightsPath) == .file else {
            throw PEFTKitError.io("'\(directory)' has \(adapterHubHeadConfigFile) but no \(adapterHubHeadWeightsFile) "
                + "(a pickled pytorch_model_head.bin is not read: save with use_safetensors=True)")
        }
        let st = try SafeTensorsFile(path: weightsPath)
        let key = headModule + "."
        guard let info = st.info(key + "weight"), info.shape.count == 2, info.shape[1] == config.hiddenSize,
              info.shape[0] >= 1, info.shape[0] <= 1 << 16 else {
            throw PEFTKitError.format("'\(weightsPath)': \(key)weight must be [labels, \(config.hiddenSize)]")
        }
        let K = info.shape[0]
        if let n = try f.int("num_labels"), n != K {
            throw PEFTKitError.format("'\(cfgPath)': num_labels \(n) but the classifier has \(K) rows")
        }
        let extra = st.names.filter { $0 != key + "weight" && $0 != key + "bias" }
        guard extra.isEmpty else { throw PEFTKitError.format("'\(weightsPath)' has tensors a classifier does not use: \(extra.prefix(3))") }
        let head = try TaskHead(kind: kind == .classification && K == 1 ? .regression : kind, outputs: K, features: config.hiddenSize, seed: 0)
        try copyFileTensor(st, key: key + "weight", shape: [K, config.hiddenSize], into: head.params, path: weightsPath)
        try copyFileTensor(st, key: key + "bias", shape: [K], into: head.params + K * config.hiddenSize, path: weightsPath)
        guard isAllFinite(head.params, head.parameterCount) else {
            throw PEFTKitError.numerical("'\(weightsPath)' holds a non-finite classifier weight")
        }
        return head
    }
}
