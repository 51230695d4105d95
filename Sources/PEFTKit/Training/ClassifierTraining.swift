// Training an encoder's task head (`Engine/Heads.swift`) together with the adapter that owns it.

extension Engine {
    /// One optimiser step of the active adapter and its task head: gradients as `headGradients`, one
    /// gradient-norm clip over the one block (as torch's `clip_grad_norm_` over every trainable parameter), then
    /// one AdamW update of the adapter's optimiser state, which holds the head's parameters after the adapter's
    /// (LoRA+'s learning-rate groups apply to the adapter's part; the head trains at the step's rate).
    func headTrainStep(inputIDs: UnsafeBufferPointer<Int32>, typeIDs: UnsafeBufferPointer<Int32>?,
                       mask: UnsafeBufferPointer<Int32>?, targets: HeadTargets, batch B: Int, seqLen T: Int,
                       config tc: TrainConfig) throws -> TrainStepResult {
        try tc.validate()
        let (slot, head) = try activeHead()
        let (loss, _) = try headGradients(inputIDs: inputIDs, typeIDs: typeIDs, mask: mask, targets: targets, batch: B, seqLen: T)
        let opt = slot.opt, g = opt.grads.floats, P = slot.adapter.parameterCount
        let norm = Float(sumOfSquares(g, opt.count).squareRoot())
        guard loss.isFinite, norm.isFinite else {
            g.update(repeating: 0, count: opt.count)
            throw PEFTKitError.numerical("non-finite loss or gradient (loss \(loss), grad norm \(norm)); the step was skipped and no weight changed")
        }
        if tc.maxGradNorm > 0 {
            let coef = tc.maxGradNorm / (norm + 1e-6)
            if coef < 1 { scaleInPlace(g, opt.count, coef) }
        }
        let lr = tc.learningRate(atStep: opt.step)
        var groups = slot.adapter.learningRateGroups(loraPlusRatio: decimalDouble(tc.loraPlusRatio))
        if groups != nil { groups!.append(LearningRateGroup(range: P..<(P + head.parameterCount), scale: 1)) }
        guard opt.update(lr: decimalDouble(lr), beta1: decimalDouble(tc.beta1), beta2: decimalDouble(tc.beta2),
                         eps: decimalDouble(tc.eps), weightDecay: decimalDouble(tc.weightDecay), groups: groups) else {
            g.update(repeating: 0, count: opt.count)
            throw PEFTKitError.numerical("the update would make an adapter or head weight non-finite (learning rate \(lr)); the step was skipped")
        }
        slot.adapter.parametersChanged()
        let counted: Int
        switch head.kind {
        case .regression: counted = B
        case .classification: counted = (0..<B).reduce(0) { $0 + (targets.labels![$1] == -100 ? 0 : 1) }
        case .tokens: counted = (0..<(B * T)).reduce(0) { $0 + (targets.labels![$1] == -100 ? 0 : 1) }
        }
        return TrainStepResult(loss: loss, gradNorm: norm, learningRate: lr, step: opt.step, tokens: counted)
    }
}

// MARK: labelled data

/// One record of a labelled JSONL file: `{"text": ..., "label": ...}`, with `"text_pair"` for pairs; the label
/// is a class name, a class index, or a number (regression).
public struct LabelledRecord: Sendable, Equatable {
    /// A label as written: a class name, a class index, or a value (regression).
    public enum Label: Sendable, Equatable {
        case name(String)
        case index(Int)
        case value(Double)
    }
    public var text: String
    public var textPair: String?
    /// nil when the record has none (texts to classify or embed).
    public var label: Label?
}

/// Reading labelled JSONL files for task heads.
public enum LabelledDataset {
    /// Reads every record of a JSONL file (blank lines skipped); errors name the file and the 1-based line.
    public static func read(path: String) throws -> [LabelledRecord] {
        try parse(try readWholeFile(path: path, maxBytes: JSONLDataset.maxFileBytes), source: "'\(path)'")
    }

    /// Parses labelled JSONL bytes; `source` names them in errors.
    public static func parse(_ bytes: [UInt8], source: String = "JSONL data") throws -> [LabelledRecord] {
        var out: [LabelledRecord] = []
        try forEachJSONLObject(bytes, source: source) { at, o in
            guard case .string(let text)? = o["text"] else { throw PEFTKitError.format("\(at): missing string \"text\"") }
            var pair: String? = nil
            switch o["text_pair"] {
            case nil, .null?: break
            case .string(let s)?: pair = s
            default: throw PEFTKitError.format("\(at): \"text_pair\" must be a string")
            }
            let label: LabelledRecord.Label?
            switch o["label"] {
            case nil, .null?: label = nil
            case .string(let s)?: label = .name(s)
            case .int(let i)?: label = .index(i)
            case .double(let d)? where d.isFinite: label = .value(d)
            case .bool(let b)?: label = .index(b ? 1 : 0)
            default: throw PEFTKitError.format("\(at): \"label\" must be a string, an integer or a finite number")
            }
            out.append(LabelledRecord(text: text, textPair: pair, label: label))
        }
        return out
    }
}

/// Calls `body` with each non-blank line's JSON object and its place ("<source> line <n>") for errors; throws
/// when there is none.
private func forEachJSONLObject(_ bytes: [UInt8], source: String,
                                _ body: (String, [String: JSONValue]) throws -> Void) throws {
    var line = 0, start = 0, count = 0
    while start <= bytes.count {
        var end = start
        while end < bytes.count && bytes[end] != 0x0A { end += 1 }
        line += 1
        var hi = end
        if hi > start && bytes[hi - 1] == 0x0D { hi -= 1 }
        let slice = Array(bytes[start..<hi])
        if slice.contains(where: { $0 != 0x20 && $0 != 0x09 }) {
            let at = "\(source) line \(line)"
            try body(at, try JSONValue.parseObject(slice, source: at))
            count += 1
        }
        if end >= bytes.count { break }
        start = end + 1
    }
    guard count > 0 else { throw PEFTKitError.format("\(source) has no records") }
}

// MARK: tagged data (token classification)

/// One record of a tagged JSONL file: words and one tag per word, from `{"tokens": [...], "tags": [...]}` or
/// `{"text": "...", "tags": [...]}` (the text split at white space). A tag is a name or a class index.
public struct TaggedRecord: Sendable, Equatable {
    public var words: [String]
    /// One per word: `.name` or `.index` (never `.value`).
    public var tags: [LabelledRecord.Label]
}

/// Reading tagged JSONL files for token heads, and the words' tags on WordPiece ids.
public enum TaggedDataset {
    /// Reads every record of a JSONL file (blank lines skipped); errors name the file and the 1-based line.
    public static func read(path: String) throws -> [TaggedRecord] {
        try parse(try readWholeFile(path: path, maxBytes: JSONLDataset.maxFileBytes), source: "'\(path)'")
    }

    /// Parses tagged JSONL bytes; `source` names them in errors.
    public static func parse(_ bytes: [UInt8], source: String = "JSONL data") throws -> [TaggedRecord] {
        var out: [TaggedRecord] = []
        try forEachJSONLObject(bytes, source: source) { at, o in
            let words: [String]
            switch (o["tokens"], o["text"]) {
            case (.array(let a)?, nil), (.array(let a)?, .null?):
                words = try a.map { v in
                    guard case .string(let s) = v, !s.isEmpty else { throw PEFTKitError.format("\(at): \"tokens\" must hold non-empty strings") }
                    return s
                }
            case (nil, .string(let s)?), (.null?, .string(let s)?):
                words = s.split(whereSeparator: { $0.isWhitespace }).map(String.init)
            default:
                throw PEFTKitError.format("\(at): a tagged record needs a \"tokens\" array or a \"text\" string (not both)")
            }
            guard case .array(let t)? = o["tags"] else { throw PEFTKitError.format("\(at): missing array \"tags\"") }
            guard t.count == words.count else {
                throw PEFTKitError.format("\(at): \(t.count) tags for \(words.count) words (one tag per word)")
            }
            guard !words.isEmpty else { throw PEFTKitError.format("\(at): a tagged record needs at least one word") }
            let tags: [LabelledRecord.Label] = try t.map { v in
                switch v {
                case .string(let s): return .name(s)
                case .int(let i): return .index(i)
                default: throw PEFTKitError.format("\(at): a tag must be a string or an integer")
                }
            }
            out.append(TaggedRecord(words: words, tags: tags))
        }
        return out
    }

    /// The ids of `[CLS] words [SEP]` and a label per id, in the usual Hugging Face convention for token
    /// classification: each word's tag on its first WordPiece, -100 on its other pieces and on the special
    /// tokens (so each word counts once). At most `maxLength` ids: words past the limit are cut (a word cut
    /// inside keeps its first piece and its tag); a word that tokenizes to nothing is skipped.
    /// `counted` is the number of words whose tag is in the labels.
    public static func align(words: [String], tags: [Int32], tokenizer: WordPieceTokenizer, maxLength: Int)
        -> (ids: [Int32], labels: [Int32], counted: Int) {
        let specials = (tokenizer.clsID == nil ? 0 : 1) + (tokenizer.sepID == nil ? 0 : 1)
        let budget = max(1, maxLength - specials)
        var ids: [Int32] = [], labels: [Int32] = [], counted = 0
        if let cls = tokenizer.clsID { ids.append(cls); labels.append(-100) }
        let first = ids.count
        for (w, word) in words.enumerated() {
            let pieces = tokenizer.encode(word, addSpecialTokens: false).ids
            guard !pieces.isEmpty else { continue }
            let room = budget - (ids.count - first)
            guard room > 0 else { break }
            for (i, id) in pieces.prefix(room).enumerated() {
                ids.append(id)
                labels.append(i == 0 ? tags[w] : -100)
            }
            counted += 1
        }
        if let sep = tokenizer.sepID { ids.append(sep); labels.append(-100) }
        return (ids, labels, counted)
    }
}
