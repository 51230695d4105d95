import ArgumentParser
import PEFTKit

@main
struct PEFTKitCLI: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "peftkit",
        abstract: "Adapter fine-tuning of GPT-2 and Llama models on the CPU.",
        subcommands: [Demo.self, Bench.self])
}

enum ArchOption: String, ExpressibleByArgument, CaseIterable {
    case gpt2, llama
    var arch: Architecture { self == .gpt2 ? .gpt2 : .llama }
}

enum PresetOption: String, ExpressibleByArgument, CaseIterable {
    case houlsby, pfeiffer
    var preset: BottleneckConfig.Preset { self == .houlsby ? .houlsby : .pfeiffer }
}

func fmt(_ x: Double, _ digits: Int = 2) -> String {
    var p = 1.0
    for _ in 0..<digits { p *= 10 }
    let v = (x * p).rounded() / p
    return "\(v)"
}

/// Trains a bottleneck adapter on a small synthetic task and shows the before/after behaviour.
struct Demo: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Train an adapter on a synthetic sequence task, save it, reload it and generate.")

    @Option(help: "Hugging Face model folder (config.json + model.safetensors). Default: a small random GPT-2.")
    var model: String?
    @Option(help: "Adapter preset.") var preset: PresetOption = .pfeiffer
    @Option(help: "Training steps.") var steps = 60
    @Option(help: "Where to write the adapter.") var out = "/tmp/peftkit-demo-adapter"
    @Option(help: "Threads (0 = all cores).") var threads = 0

    func run() throws {
        setNumThreads(threads)
        let m: Model
        if let path = model {
            m = try Model.load(path: path)
            print("loaded \(path): \(m.config.architecture), \(m.config.parameterCount) parameters")
        } else {
            let cfg = ModelConfig(architecture: .gpt2, vocabSize: 64, hiddenSize: 128, numLayers: 4, numHeads: 4, maxPositions: 128)
            m = try Model.create(config: cfg, seed: 1, initStd: 0.2)
            print("random GPT-2: 4 layers, d=128, vocab 64, \(cfg.parameterCount) parameters (frozen)")
        }
        // Task: continue an arithmetic progression modulo the vocabulary.
        let V = Int32(min(m.config.vocabSize, 64))
        let B = 8, T = 32
        func row(_ start: Int32, _ stride: Int32) -> [Int32] { (0..<Int32(T)).map { (start + $0 * stride) % V } }
        var ids: [Int32] = []
        for b in 0..<B { ids += row(Int32(b * 5) % V, Int32(1 + b % 3)) }
        try m.attachAdapter(name: "demo", config: BottleneckConfig(preset: preset.preset, reductionFactor: 4))
        try m.setActiveAdapter("demo")
        print("adapter 'demo' (\(preset.rawValue)): \(try m.adapterParameterCount(name: "demo")) trainable parameters")
        let prompt = Array(row(3, 2).prefix(6))
        var g = GenerateConfig(); g.maxNewTokens = 12
        print("before: \(prompt) -> \(try m.generate(prompt: prompt, config: g))")
        var tc = TrainConfig()
        tc.learningRate = 3e-3; tc.schedule = .cosine; tc.warmupSteps = 5; tc.totalSteps = steps
        let clock = ContinuousClock()
        let t0 = clock.now
        var first: Float = 0, last: Float = 0
        for s in 0..<steps {
            let r = try m.trainStep(inputIDs: ids, batch: B, seqLen: T, config: tc)
            if s == 0 { first = r.loss }
            last = r.loss
            if s % 10 == 0 || s == steps - 1 {
                print("step \(r.step): loss \(fmt(Double(r.loss), 4)) lr \(r.learningRate) grad-norm \(fmt(Double(r.gradNorm), 3))")
            }
        }
        let dt = (clock.now - t0).seconds
        print("trained \(steps) steps in \(fmt(dt)) s (\(fmt(Double(steps * B * T) / dt, 0)) tok/s): loss \(first) -> \(last)")
        print("after:  \(prompt) -> \(try m.generate(prompt: prompt, config: g))")
        try m.saveAdapter(name: "demo", to: out)
        try m.loadAdapter(from: out, name: "reloaded")
        try m.setActiveAdapter("reloaded")
        print("reloaded from \(out): \(try m.generate(prompt: prompt, config: g))")
        try m.setActiveAdapter(nil)
        print("base model: \(try m.generate(prompt: prompt, config: g))")
    }
}

/// Times one training step and the matching sgemm throughput in the same run.
struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Time training steps (GPT-2-124M shape by default).")

    @Option(help: "Architecture of the random model.") var arch: ArchOption = .gpt2
    @Option(help: "Hugging Face model folder instead of a random model.") var model: String?
    @Option(help: "Adapter preset.") var preset: PresetOption = .houlsby
    @Option var batch = 4
    @Option var seq = 256
    @Option var steps = 3
    @Option(help: "Threads (0 = all cores).") var threads = 0

    func run() throws {
        setNumThreads(threads)
        let m: Model
        if let path = model {
            m = try Model.load(path: path)
        } else if arch == .gpt2 {
            m = try Model.create(config: .gpt2Small, seed: 1)
        } else {
            let c = ModelConfig(architecture: .llama, vocabSize: 49152, hiddenSize: 576, numLayers: 30, numHeads: 9,
                                numKVHeads: 3, intermediateSize: 1536, maxPositions: 2048, ropeTheta: 100000,
                                tieWordEmbeddings: true)
            m = try Model.create(config: c, seed: 1)
        }
        let gf = try measureSGEMM()
        print("threads \(numThreads()); OpenBLAS sgemm 1024x768x768: \(fmt(gf, 1)) GFLOP/s")
        try m.attachAdapter(name: "b", config: BottleneckConfig(preset: preset.preset))
        try m.setActiveAdapter("b")
        var ids = [Int32](repeating: 0, count: batch * seq)
        for i in ids.indices { ids[i] = Int32((i * 7919) % m.config.vocabSize) }
        let clock = ContinuousClock()
        var times: [Double] = []
        for s in 0...steps {
            let t0 = clock.now
            let r = try m.trainStep(inputIDs: ids, batch: batch, seqLen: seq, config: TrainConfig())
            let dt = (clock.now - t0).seconds
            if s > 0 { times.append(dt) }
            print("step \(s)\(s == 0 ? " (warm-up)" : ""): \(fmt(dt * 1000, 1)) ms, loss \(r.loss)")
        }
        let best = times.min() ?? 0
        let tokens = Double(batch * seq)
        print("train step B=\(batch) T=\(seq) \(preset.rawValue): best \(fmt(best * 1000, 1)) ms = \(fmt(tokens / best, 1)) tok/s")
        let t0 = clock.now
        _ = try m.forward(inputIDs: ids, batch: batch, seqLen: seq)
        print("forward (eval, logits materialised): \(fmt((clock.now - t0).seconds * 1000, 1)) ms")
    }
}
