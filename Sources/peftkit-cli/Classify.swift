import ArgumentParser
import PEFTKit
#if canImport(Glibc)
import Glibc
#endif

// Encoders (BERT) on the command line: training a task head with an adapter (`train --task`), its accuracy or
// loss (`eval --task`), predictions (`classify`) and sentence embeddings (`embed`).
//
// `--task tag` is token classification on {"tokens": [...], "tags": [...]} or {"text": ..., "tags": [...]}
// records, one tag per word (the text split at white space). The usual Hugging Face convention: each word's tag
// sits on its first WordPiece, its other pieces and [CLS]/[SEP] get -100, so every word counts once in the loss,
// the accuracy and the macro-F1 (`TaggedDataset.align`).

enum TaskOption: String, ExpressibleByArgument, CaseIterable {
    case classify, regress, tag
    var kind: HeadKind {
        switch self {
        case .classify: return .classification
        case .regress: return .regression
        case .tag: return .tokens
        }
    }
}

/// An encoder folder (BERT) with its WordPiece tokenizer.
struct EncoderModel {
    let model: Model
    let path: String
    let tokenizer: WordPieceTokenizer

    static func load(_ options: ModelOptions) throws -> EncoderModel {
        guard let path = options.model else {
            throw CLIError("--model: an encoder (BERT) folder with tokenizer.json or vocab.txt, e.g. all-MiniLM-L6-v2")
        }
        return try load(path: path, threads: options.threads)
    }

    static func load(path: String, threads: Int) throws -> EncoderModel {
        setNumThreads(threads)
        let m = try Model.load(path: path)
        guard m.config.architecture == .bert else { throw CLIError("'\(path)' is \(m.config.architecture), not an encoder (BERT)") }
        let tok: WordPieceTokenizer
        if isFile(path + "/tokenizer.json") {
            tok = try WordPieceTokenizer(tokenizerJSON: path + "/tokenizer.json")
        } else if isFile(path + "/vocab.txt") {
            let cfg = path + "/tokenizer_config.json"
            tok = try WordPieceTokenizer(vocabFile: path + "/vocab.txt", configFile: isFile(cfg) ? cfg : nil)
        } else {
            throw CLIError("'\(path)' has neither tokenizer.json nor vocab.txt")
        }
        return EncoderModel(model: m, path: path, tokenizer: tok)
    }

    /// `[CLS] a [SEP] (b [SEP])` rows padded to the longest (at most `maxLength` ids): ids, token types, mask.
    func batch(_ rows: [(String, String?)], maxLength: Int) -> (ids: [Int32], types: [Int32], mask: [Int32], T: Int) {
        let enc = rows.map { tokenizer.encode($0.0, pair: $0.1, maxLength: maxLength) }
        let T = max(1, enc.map { $0.ids.count }.max() ?? 1)
        var ids = [Int32](repeating: 0, count: rows.count * T), types = ids, mask = ids
        for (r, e) in enc.enumerated() {
            for (t, id) in e.ids.enumerated() {
                ids[r * T + t] = id
                types[r * T + t] = e.typeIDs[t]
                mask[r * T + t] = 1
            }
        }
        return (ids, types, mask, T)
    }
}

/// Class names and the labels of the records: names sorted (string labels) or "0" ..< max + 1 (integer labels).
func classLabels(_ records: [LabelledRecord], names given: [String]? = nil) throws -> (labels: [Int32], names: [String]) {
    let names = given ?? labelNames(records.map(\.label))
    let labels: [Int32] = try records.enumerated().map { i, r in
        switch r.label {
        case .name(let s):
            guard let k = names.firstIndex(of: s) else { throw CLIError("record \(i + 1): label '\(s)' is not one of \(names)") }
            return Int32(k)
        case .index(let k):
            guard k >= 0, k < names.count else { throw CLIError("record \(i + 1): label \(k) is outside 0..<\(names.count)") }
            return Int32(k)
        case .value:
            throw CLIError("record \(i + 1): a number label is a regression target: use --task regress")
        case nil:
            throw CLIError("record \(i + 1) has no \"label\"")
        }
    }
    return (labels, names)
}

/// Names of the classes seen: sorted when every label is a name, else "0" ..< max index + 1 (at least two).
func labelNames(_ labels: [LabelledRecord.Label?]) -> [String] {
    if labels.allSatisfy({ if case .name? = $0 { true } else { false } }) {
        return Set(labels.map { if case .name(let s)? = $0 { s } else { "" } }).sorted()
    }
    let top = labels.map { if case .index(let i)? = $0 { i } else { -1 } }.max() ?? 0
    return (0...max(top, 1)).map(String.init)
}

/// Tag names and each record's tags as class indices (`labelNames` order unless `given`).
func tagLabels(_ records: [TaggedRecord], names given: [String]? = nil) throws -> (tags: [[Int32]], names: [String]) {
    let names = given ?? labelNames(records.flatMap { $0.tags.map { Optional($0) } })
    let tags: [[Int32]] = try records.enumerated().map { i, r in
        try r.tags.map { t in
            switch t {
            case .name(let s):
                guard let k = names.firstIndex(of: s) else { throw CLIError("record \(i + 1): tag '\(s)' is not one of \(names)") }
                return Int32(k)
            case .index(let k):
                guard k >= 0, k < names.count else { throw CLIError("record \(i + 1): tag \(k) is outside 0..<\(names.count)") }
                return Int32(k)
            case .value:
                throw CLIError("record \(i + 1): a tag must be a name or a class index")
            }
        }
    }
    return (tags, names)
}

/// Tagged rows padded to the longest (at most `maxLength` ids each): ids, mask and per-id labels (-100 on the
/// pieces after a word's first, on special tokens and on padding).
func tagBatch(_ em: EncoderModel, _ rows: [(words: [String], tags: [Int32])], maxLength: Int)
    -> (ids: [Int32], mask: [Int32], labels: [Int32], T: Int) {
    let enc = rows.map { TaggedDataset.align(words: $0.words, tags: $0.tags, tokenizer: em.tokenizer, maxLength: maxLength) }
    let T = max(1, enc.map { $0.ids.count }.max() ?? 1)
    var ids = [Int32](repeating: 0, count: rows.count * T), mask = ids
    var labels = [Int32](repeating: -100, count: rows.count * T)
    for (r, e) in enc.enumerated() {
        for t in 0..<e.ids.count {
            ids[r * T + t] = e.ids[t]
            labels[r * T + t] = e.labels[t]
            mask[r * T + t] = 1
        }
    }
    return (ids, mask, labels, T)
}

/// Word-level accuracy and macro-F1 (over the tag classes; a class never seen nor predicted scores 0) of the
/// active adapter's token head on `records`, and the mean loss per counted word.
func evaluateTagger(_ em: EncoderModel, _ records: [TaggedRecord], names: [String], batch: Int, maxLength: Int) throws
    -> (loss: Double, accuracy: Double, macroF1: Double, words: Int) {
    let tags = try tagLabels(records, names: names).tags
    let K = names.count
    var tp = [Int](repeating: 0, count: K), fp = tp, fn = tp
    var lossSum = 0.0, correct = 0, counted = 0
    for start in stride(from: 0, to: records.count, by: batch) {
        let idx = Array(start..<min(records.count, start + batch))
        let b = tagBatch(em, idx.map { (records[$0].words, tags[$0]) }, maxLength: maxLength)
        let r = try em.model.headOutputs(inputIDs: b.ids, attentionMask: b.mask, labels: b.labels, batch: idx.count, seqLen: b.T)
        let n = b.labels.filter { $0 != -100 }.count
        lossSum += Double(r.loss ?? 0) * Double(n)
        counted += n
        for (i, want) in b.labels.enumerated() where want != -100 {
            let z = r.outputs[i * K..<(i + 1) * K]
            let pred = z.indices.max { z[$0] < z[$1] }! - i * K
            if pred == Int(want) { correct += 1; tp[pred] += 1 } else { fp[pred] += 1; fn[Int(want)] += 1 }
        }
    }
    return (lossSum / Double(max(counted, 1)), Double(correct) / Double(max(counted, 1)), macroF1(tp: tp, fp: fp, fn: fn), counted)
}

/// Mean over the classes of 2·tp / (2·tp + fp + fn) (0 for a class with none of the three).
func macroF1(tp: [Int], fp: [Int], fn: [Int]) -> Double {
    var f1 = 0.0
    for k in 0..<tp.count {
        let d = Double(2 * tp[k] + fp[k] + fn[k])
        f1 += d == 0 ? 0 : Double(2 * tp[k]) / d
    }
    return f1 / Double(max(tp.count, 1))
}

func regressionTargets(_ records: [LabelledRecord]) throws -> [Float] {
    try records.enumerated().map { i, r in
        switch r.label {
        case .value(let d): return Float(d)
        case .index(let k): return Float(k)
        case .name(let s): throw CLIError("record \(i + 1): label '\(s)' is not a number (--task regress)")
        case nil: throw CLIError("record \(i + 1) has no \"label\"")
        }
    }
}

/// Accuracy (classification) or mean squared error (regression) of the active adapter's head on `records`.
func evaluateHead(_ em: EncoderModel, _ records: [LabelledRecord], task: TaskOption, names: [String], batch: Int,
                  maxLength: Int) throws -> (loss: Double, accuracy: Double?, macroF1: Double?) {
    let labels = task == .classify ? try classLabels(records, names: names).labels : []
    let targets = task == .regress ? try regressionTargets(records) : []
    var lossSum = 0.0, correct = 0
    let K = names.count
    var tp = [Int](repeating: 0, count: K), fp = tp, fn = tp
    for start in stride(from: 0, to: records.count, by: batch) {
        let rows = Array(records[start..<min(records.count, start + batch)])
        let b = em.batch(rows.map { ($0.text, $0.textPair) }, maxLength: maxLength)
        let r = try em.model.headOutputs(inputIDs: b.ids, attentionMask: b.mask, tokenTypeIDs: b.types,
                                         labels: task == .classify ? Array(labels[start..<start + rows.count]) : nil,
                                         targets: task == .regress ? Array(targets[start..<start + rows.count]) : nil,
                                         batch: rows.count, seqLen: b.T)
        lossSum += Double(r.loss ?? 0) * Double(rows.count)
        if task == .classify {
            for i in 0..<rows.count {
                let z = r.outputs[i * K..<(i + 1) * K]
                let pred = z.indices.max { z[$0] < z[$1] }! - i * K
                let want = Int(labels[start + i])
                if pred == want { correct += 1; tp[want] += 1 } else { fp[pred] += 1; fn[want] += 1 }
            }
        }
    }
    let n = Double(records.count)
    guard task == .classify else { return (lossSum / n, nil, nil) }
    return (lossSum / n, Double(correct) / n, macroF1(tp: tp, fp: fp, fn: fn))
}

/// `train --task`: an adapter and a task head on labelled (tagged) JSONL records, saved with the head (PEFT's
/// modules_to_save, or AdapterHub's head files for bottleneck adapters) and the class names (`labels.txt`).
func trainEncoderHead(_ t: Train, _ task: TaskOption) throws {
    let em = try EncoderModel.load(t.modelOptions)
    let m = em.model
    /// The batch of records `idx`: ids, types, mask, labels or targets, row length.
    let makeBatch: ([Int]) -> (ids: [Int32], types: [Int32]?, mask: [Int32], labels: [Int32]?, targets: [Float]?, T: Int)
    let count: Int, names: [String]
    if task == .tag {
        let records = try TaggedDataset.read(path: t.data)
        let (tags, tagNames) = try tagLabels(records)
        count = records.count; names = tagNames
        makeBatch = { idx in
            let b = tagBatch(em, idx.map { (records[$0].words, tags[$0]) }, maxLength: t.seqLen)
            return (b.ids, nil, b.mask, b.labels, nil, b.T)
        }
        print("model \(em.path): bert, \(countString(m.config.parameterCount)) parameters; \(records.count) records, "
              + "\(records.reduce(0) { $0 + $1.words.count }) words, \(names.count) tags \(names) (on each word's first WordPiece)")
    } else {
        let records = try LabelledDataset.read(path: t.data)
        let (labels, classNames) = task == .classify ? try classLabels(records) : ([], ["value"])
        let targets = task == .regress ? try regressionTargets(records) : []
        count = records.count; names = classNames
        makeBatch = { idx in
            let b = em.batch(idx.map { (records[$0].text, records[$0].textPair) }, maxLength: t.seqLen)
            return (b.ids, b.types, b.mask, task == .classify ? idx.map { labels[$0] } : nil,
                    task == .regress ? idx.map { targets[$0] } : nil, b.T)
        }
        print("model \(em.path): bert, \(countString(m.config.parameterCount)) parameters; \(records.count) records, "
              + (task == .classify ? "\(names.count) classes \(names)" : "regression"))
    }
    let configJSON = try t.adapter.configJSON(model: m.config, seed: t.seed)
    try m.attachAdapter(name: t.name, configJSON: configJSON)
    try m.setActiveAdapter(t.name)
    try m.attachHead(task.kind, outputs: names.count, seed: t.seed)
    let params = try m.gradientBuffer().count
    print("adapter '\(t.name)' (\(try m.adapterMethod(name: t.name).rawValue)) + \(task.kind.rawValue) head: \(countString(params)) trainable parameters")
    let n = t.steps ?? max(1, t.epochs * ((count + t.batch - 1) / t.batch))
    var tc = TrainConfig()
    tc.learningRate = t.lr; tc.schedule = t.schedule; tc.warmupSteps = t.warmup; tc.totalSteps = n
    tc.weightDecay = t.weightDecay; tc.maxGradNorm = t.clip
    var order = Array(0..<count)
    var rng = t.seed &+ 0x9E37_79B9_7F4A_7C15
    func shuffle() {
        for i in stride(from: order.count - 1, to: 0, by: -1) {
            rng = rng &* 6364136223846793005 &+ 1442695040888963407
            order.swapAt(i, Int((rng >> 33) % UInt64(i + 1)))
        }
    }
    shuffle()
    var pos = 0
    var losses: [Float] = []
    let clock = ContinuousClock(), t0 = clock.now
    for step in 1...n {
        if pos + t.batch > order.count { shuffle(); pos = 0 }
        let idx = Array(order[pos..<min(order.count, pos + t.batch)])
        pos += idx.count
        let b = makeBatch(idx)
        let r = try m.headTrainStep(inputIDs: b.ids, attentionMask: b.mask, tokenTypeIDs: b.types, labels: b.labels,
                                    targets: b.targets, batch: idx.count, seqLen: b.T, config: tc)
        losses.append(r.loss)
        if step == 1 || step == n || step % max(1, n / 10) == 0 {
            print("step \(step)/\(n): loss \(fmt(Double(r.loss), 4)), \(fmt((clock.now - t0).seconds, 1)) s")
        }
    }
    try m.saveAdapter(name: t.name, to: t.out)
    try writeFileAtomically(path: t.out + "/labels.txt", bytes: Array((names.joined(separator: "\n") + "\n").utf8))
    try writeFileAtomically(path: t.out + "/loss.svg", bytes: Array(lossPlotSVG(losses, title: "\(task.kind.rawValue) head: loss per step").utf8))
    let form = try m.adapterMethod(name: t.name) == .bottleneck ? "AdapterHub head files" : "PEFT modules_to_save"
    print("saved \(t.out) (\(byteString(diskBytes(t.out)))): adapter with its head (\(form)), labels.txt")
}

/// Class (or tag) names saved next to an adapter by `train --task classify|tag`, or nil.
func savedLabelNames(_ adapterDir: String) -> [String]? {
    guard let bytes = try? readWholeFile(path: adapterDir + "/labels.txt", maxBytes: 1 << 20),
          let text = String(validating: bytes, as: UTF8.self) else { return nil }
    let names = text.split(separator: "\n").map(String.init).filter { !$0.isEmpty }
    return names.isEmpty ? nil : names
}

/// `eval --task`: the head's accuracy and macro-F1 (classify; tag: per word) or mean squared error (regress) on
/// labelled (tagged) JSONL.
func evalEncoderHead(_ e: Eval, _ task: TaskOption) throws {
    let em = try EncoderModel.load(e.modelOptions)
    guard !e.adapter.isEmpty else { throw CLIError("eval --task needs --adapter: a folder saved by train --task") }
    let tagged = task == .tag ? try TaggedDataset.read(path: e.data) : []
    let records = task == .tag ? [] : try LabelledDataset.read(path: e.data)
    for dir in e.adapter {
        let name = try em.model.loadAdapter(from: dir, name: adapterName(forPath: dir))
        try em.model.setActiveAdapter(name)
        guard let head = try em.model.headInfo() else { throw CLIError("'\(dir)' holds no task head") }
        guard head.kind == task.kind else {
            throw CLIError("'\(dir)' holds a \(head.kind.rawValue) head, not the \(task.kind.rawValue) head --task \(task.rawValue) scores")
        }
        let names = savedLabelNames(dir) ?? (0..<head.outputs).map(String.init)
        if task == .tag {
            let r = try evaluateTagger(em, tagged, names: names, batch: e.batch, maxLength: e.seqLen)
            print("\(name): accuracy \(fmt(100 * r.accuracy, 1))%, macro-F1 \(fmt(r.macroF1, 3)), loss \(fmt(r.loss, 4)) over \(r.words) words of \(tagged.count) records")
            continue
        }
        let r = try evaluateHead(em, records, task: task, names: names, batch: e.batch, maxLength: e.seqLen)
        if task == .classify {
            print("\(name): accuracy \(fmt(100 * (r.accuracy ?? 0), 1))%, macro-F1 \(fmt(r.macroF1 ?? 0, 3)), loss \(fmt(r.loss, 4)) over \(records.count) records")
        } else {
            print("\(name): MSE \(fmt(r.loss, 4)) over \(records.count) records")
        }
    }
}

/// `peftkit classify`: the head's prediction for each text.
struct Classify: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Predictions of an encoder adapter's task head (saved by train --task) for texts.")

    @OptionGroup var modelOptions: ModelOptions
    @Option(name: .shortAndLong, help: "Adapter folder with its head (train --task).") var adapter: String
    @Option(help: "A text to classify (repeatable).") var text: [String] = []
    @Option(help: "Labelled or unlabelled JSONL ({\"text\": ..., \"text_pair\"?: ...}) to classify instead.") var data: String?
    @Option(help: "Ids per text (longer ones are cut).") var seqLen = 128

    func run() throws {
        let em = try EncoderModel.load(modelOptions)
        let name = try em.model.loadAdapter(from: adapter, name: adapterName(forPath: adapter))
        try em.model.setActiveAdapter(name)
        guard let head = try em.model.headInfo() else { throw CLIError("'\(adapter)' holds no task head") }
        var rows = text.map { ($0, String?.none) }
        if let data { rows += try readTexts(data) }
        guard !rows.isEmpty else { throw CLIError("give --text or --data") }
        let names = savedLabelNames(adapter) ?? (0..<head.outputs).map(String.init)
        for start in stride(from: 0, to: rows.count, by: 32) {
            let part = Array(rows[start..<min(rows.count, start + 32)])
            let b = em.batch(part, maxLength: seqLen)
            let K = head.outputs
            if head.kind == .tokens {
                // One word/TAG per word (the text split at white space), the tag of its first WordPiece.
                for r in part {
                    let words = r.0.split(whereSeparator: { $0.isWhitespace }).map(String.init)
                    let tb = tagBatch(em, [(words, [Int32](repeating: 0, count: words.count))], maxLength: seqLen)
                    let out = try em.model.classify(inputIDs: tb.ids, attentionMask: tb.mask, batch: 1, seqLen: tb.T)
                    var w = 0, shown: [String] = []
                    for t in 0..<tb.T where tb.labels[t] != -100 {
                        while w < words.count && em.tokenizer.encode(words[w], addSpecialTokens: false).ids.isEmpty { w += 1 }
                        let z = Array(out[t * K..<(t + 1) * K]), k = z.indices.max { z[$0] < z[$1] }!
                        shown.append("\(words[w])/\(k < names.count ? names[k] : String(k))")
                        w += 1
                    }
                    print(shown.joined(separator: " "))
                }
                continue
            }
            let out = try em.model.classify(inputIDs: b.ids, attentionMask: b.mask, tokenTypeIDs: b.types, batch: part.count, seqLen: b.T)
            for (i, r) in part.enumerated() {
                let z = Array(out[i * K..<(i + 1) * K])
                if head.kind == .regression {
                    print("\(z.map { fmt(Double($0), 4) }.joined(separator: " "))\t\(r.0)")
                } else {
                    let k = z.indices.max { z[$0] < z[$1] }!
                    print("\(k < names.count ? names[k] : String(k))\t\(r.0)")
                }
            }
        }
    }
}

/// Texts of a JSONL file (`text`, optional `text_pair`; labels ignored).
func readTexts(_ path: String) throws -> [(String, String?)] {
    try LabelledDataset.read(path: path).map { ($0.text, $0.textPair) }
}

/// `peftkit embed`: sentence embeddings (mean pooling + L2), one JSON array per text.
struct Embed: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Sentence embeddings of an encoder (mean pooling over the mask, L2-normalised): one JSON array per line.")

    @OptionGroup var modelOptions: ModelOptions
    @Option(name: .shortAndLong, help: "Adapter folder to apply (optional).") var adapter: String?
    @Option(help: "A text to embed (repeatable).") var text: [String] = []
    @Option(help: "JSONL with \"text\" (and \"text_pair\") per line to embed instead.") var data: String?
    @Option(help: "Ids per text (longer ones are cut).") var seqLen = 256
    @Flag(help: "The mean over the mask without L2 normalisation.") var noNormalize = false

    func run() throws {
        let em = try EncoderModel.load(modelOptions)
        if let adapter {
            try em.model.setActiveAdapter(try em.model.loadAdapter(from: adapter, name: adapterName(forPath: adapter)))
        }
        var rows = text.map { ($0, String?.none) }
        if let data {
            rows += try readTexts(data)
        }
        guard !rows.isEmpty else { throw CLIError("give --text or --data") }
        let C = em.model.config.hiddenSize
        for start in stride(from: 0, to: rows.count, by: 32) {
            let part = Array(rows[start..<min(rows.count, start + 32)])
            let b = em.batch(part, maxLength: seqLen)
            let e = try em.model.embed(inputIDs: b.ids, attentionMask: b.mask, tokenTypeIDs: b.types, batch: part.count,
                                       seqLen: b.T, normalize: !noNormalize)
            for i in 0..<part.count {
                print("[" + e[i * C..<(i + 1) * C].map { "\($0)" }.joined(separator: ", ") + "]")
            }
        }
    }
}
