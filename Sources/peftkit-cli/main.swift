import ArgumentParser
import PEFTKit

// main.swift is top-level code once the target has several files, so `@main` cannot be used here.
PEFTKitCLI.main()

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
