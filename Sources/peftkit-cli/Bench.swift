import ArgumentParser
import FoundationEssentials
import PEFTKit
#if canImport(Glibc)
import Glibc
#endif

// `peftkit bench`: train-step throughput of every adapter method, achieved GFLOP/s against OpenBLAS sgemm
// measured in the same process, an estimated time breakdown, prefill/decode speed and peak resident memory.
// By default each (shape, task) runs in a fresh child process (this executable re-run with `--only`), so
// every peak-RSS figure belongs to one configuration. `scripts/bench_compare.py` reads `--json`.

// MARK: - shapes and methods

/// Model shapes the bench knows. Random weights unless `--model` gives a folder.
enum BenchShape: String, CaseIterable, ExpressibleByArgument {
    case gpt2, smollm2
    /// Small shapes for a quick check of the whole pipeline (seconds, not meaningful numbers).
    case gpt2Tiny = "gpt2-tiny", llamaTiny = "llama-tiny"

    var config: ModelConfig {
        switch self {
        case .gpt2:
            return .gpt2Small
        case .smollm2:
            return ModelConfig(architecture: .llama, vocabSize: 49152, hiddenSize: 576, numLayers: 30, numHeads: 9,
                               numKVHeads: 3, intermediateSize: 1536, maxPositions: 2048, normEps: 1e-5,
                               ropeTheta: 100000, tieWordEmbeddings: true)
        case .gpt2Tiny:
            return ModelConfig(architecture: .gpt2, vocabSize: 1000, hiddenSize: 64, numLayers: 2, numHeads: 4,
                               maxPositions: 512)
        case .llamaTiny:
            return ModelConfig(architecture: .llama, vocabSize: 1000, hiddenSize: 64, numLayers: 2, numHeads: 4,
                               numKVHeads: 2, intermediateSize: 128, maxPositions: 512, normEps: 1e-5,
                               ropeTheta: 100000, tieWordEmbeddings: true)
        }
    }

    var label: String {
        switch self {
        case .gpt2: return "GPT-2 124M shape"
        case .smollm2: return "SmolLM2-135M shape"
        case .gpt2Tiny: return "tiny GPT-2"
        case .llamaTiny: return "tiny Llama"
        }
    }
}

/// The adapter configurations compared with HF PEFT / AdapterHub (each uses that library's defaults), and
/// full fine-tuning (every base weight, the baseline adapters are measured against).
enum BenchMethod: String, CaseIterable, ExpressibleByArgument {
    case full, houlsby, pfeiffer, lora, dora, ia3, prefix, prompt

    /// nil for full fine-tuning.
    func adapterConfig(_ arch: Architecture) -> AdapterConfig? {
        switch self {
        case .full: return nil
        case .houlsby: return .bottleneck(BottleneckConfig(preset: .houlsby, reductionFactor: 16))
        case .pfeiffer: return .bottleneck(BottleneckConfig(preset: .pfeiffer, reductionFactor: 16))
        case .lora:
            var c = LoRAConfig()
            c.rank = 8
            c.targets = loraTargets(arch)
            return .lora(c)
        case .dora:
            var c = LoRAConfig()
            c.rank = 8
            c.targets = loraTargets(arch)
            c.useDoRA = true
            return .lora(c)
        case .ia3: return .ia3(IA3Config())
        case .prefix:
            var c = PrefixConfig()
            c.virtualTokens = virtualTokens
            return .prefix(c)
        case .prompt:
            var c = PromptConfig()
            c.virtualTokens = virtualTokens
            return .prompt(c)
        }
    }

    var virtualTokens: Int { 20 }

    func loraTargets(_ arch: Architecture) -> [String] { arch == .gpt2 ? ["c_attn"] : ["q_proj", "v_proj"] }

    /// Attaches and activates the adapter as "bench", or enables full fine-tuning; returns the trainable count.
    func prepare(_ m: Model) throws -> Int {
        guard let ac = adapterConfig(m.config.architecture) else {
            try m.enableFullFineTuning()
            return m.baseParameterCount
        }
        try m.attachAdapter(name: "bench", config: ac)
        try m.setActiveAdapter("bench")
        return try m.adapterParameterCount(name: "bench")
    }

    func describe(_ arch: Architecture) -> String {
        switch self {
        case .full: return "full fine-tuning, AdamW on every base weight"
        case .houlsby: return "bottleneck double_seq_bn (Houlsby), reduction 16, swish"
        case .pfeiffer: return "bottleneck seq_bn (Pfeiffer), reduction 16, relu"
        case .lora: return "LoRA r=8 alpha=16 on \(loraTargets(arch).joined(separator: ","))"
        case .dora: return "DoRA r=8 alpha=16 on \(loraTargets(arch).joined(separator: ","))"
        case .ia3: return arch == .gpt2 ? "IA3 on c_attn, mlp.c_proj" : "IA3 on k_proj, v_proj, down_proj"
        case .prefix: return "prefix tuning, 20 virtual tokens, no projection"
        case .prompt: return "prompt tuning, 20 virtual tokens"
        }
    }
}

// MARK: - FLOP model

/// Matrix-multiply FLOPs of one train step, counted from the shapes. Element-wise work (norms, softmax,
/// activations, IA3 scaling, AdamW) is not counted.
struct FlopCount {
    static let formula = """
        N = B·T' tokens per step (T' = T + 20 virtual tokens for prompt tuning); Tk = T' (+ 20 prefix keys for prefix tuning)
        Pm = matmul weights per layer; V·C = LM head; H heads of width D; L layers; l0 = lowest adapted layer (0 for every method here)
        forward = 2·N·(L·Pm + V·C) + 4·B·H·T'·Tk·D·L   (attention counted as a full square, no causal halving)
        backward, input gradients only (frozen base) = 2·N·((L−l0)·Pm + V·C) + 8·B·H·T'·Tk·D·(L−l0)   (attention backward has twice the forward's products)
        adapter = 3 × its forward matmul FLOPs (forward, input gradient, weight gradient); element-wise work, AdamW and IA3 scaling are not counted
        full fine-tuning: backward also has the weight gradients, 2·N·(L·Pm + V·C) more
        GFLOP/s = (forward + backward + adapter) / step time
        """

    var forward: Double
    var backward: Double
    var adapter: Double
    var lmHeadShare: Double
    var total: Double { forward + backward + adapter }

    /// Weights that take part in matrix multiplies in one layer.
    static func matmulPerLayer(_ c: ModelConfig) -> Int {
        let C = c.hiddenSize, I = c.intermediateSize
        switch c.architecture {
        case .gpt2, .bert: return C * 3 * C + C * C + 2 * C * I
        case .llama:
            let q = c.numHeads * c.headDim, kv = c.numKVHeads * c.headDim
            return C * q + 2 * C * kv + q * C + 3 * C * I
        }
    }

    init(config c: ModelConfig, method: BenchMethod?, batch B: Int, seq T: Int) {
        let vt = method == .prompt ? method!.virtualTokens : 0
        let pf = method == .prefix ? method!.virtualTokens : 0
        let Tq = Double(T + vt), Tk = Tq + Double(pf)
        let N = Double(B) * Tq, L = Double(c.numLayers), l0 = 0.0
        let pm = Double(FlopCount.matmulPerLayer(c)), head = Double(c.vocabSize * c.hiddenSize)
        let attn = 4 * Double(B) * Double(c.numHeads) * Tq * Tk * Double(c.headDim)
        forward = 2 * N * (L * pm + head) + attn * L
        backward = 2 * N * ((L - l0) * pm + head) + 2 * attn * (L - l0)
        if method == .full { backward += 2 * N * (L * pm + head) }
        let C = Double(c.hiddenSize)
        var perToken = 0.0  // adapter forward matmul FLOPs per token
        if let m = method, let ac = m.adapterConfig(c.architecture) {
            switch ac {
            case .bottleneck(let b):
                let r = Double(b.bottleneck(hidden: c.hiddenSize))
                let sites = (b.mhAdapter ? 1.0 : 0) + (b.outputAdapter ? 1.0 : 0)
                perToken = sites * L * 2 * (2 * C * r)
            case .lora(let l):
                let r = Double(l.rank)
                let q = Double(c.numHeads * c.headDim), kv = Double(c.numKVHeads * c.headDim)
                for t in l.targets {
                    let out: Double
                    switch t {
                    case "c_attn": out = 3 * C
                    case "q_proj", "o_proj": out = q
                    case "k_proj", "v_proj": out = kv
                    default: out = C
                    }
                    perToken += L * 2 * r * (C + out)
                }
            case .ia3, .prefix, .prompt:
                perToken = 0
            }
        }
        adapter = 3 * N * perToken
        lmHeadShare = 4 * N * head / (forward + backward + adapter)
    }
}

// MARK: - report (the --json schema)

struct ShapeInfo: Codable {
    var name: String
    var label: String
    /// "random" or the model folder.
    var source: String
    var architecture: String
    var vocabSize, hiddenSize, numLayers, numHeads, numKVHeads, headDim, intermediateSize, maxPositions: Int
    var tieWordEmbeddings: Bool
    var ropeTheta: Double
    var parameters: Int
    var matmulParamsPerLayer: Int
}

struct Breakdown: Codable {
    var note: String
    var oneLayerStepMs: Double
    var perLayerStepMs: Double
    /// Embeddings + final norm + LM head + loss + AdamW: the 1-layer step minus one layer.
    var outsideLayersStepMs: Double
    var outsideLayersStepShare: Double
    var oneLayerForwardMs: Double
    var perLayerForwardMs: Double
    var outsideLayersForwardMs: Double
}

struct TrainResult: Codable {
    var method: String
    var detail: String
    var trainableParameters: Int
    var tokensPerStep: Int
    var stepMs: [Double]
    var medianMs: Double
    var bestMs: Double
    var tokensPerSecond: Double
    var tokensPerSecondBest: Double
    var gflopPerStep: Double
    var gflopsMedian: Double
    var gflopsBest: Double
    var lmHeadFlopShare: Double
    var sgemmGflops: Double
    var sgemmShape: String
    var ratioToSgemm: Double
    /// Eval forward pass on the same batch (adapter active, logits materialised), median ms.
    var forwardMs: Double
    var forwardShare: Double
    var breakdown: Breakdown?
    var firstLoss: Double
    var lastLoss: Double
    /// VmHWM right after the timed train steps (before the forward and breakdown measurements).
    var peakRSSMiB: Double
    /// VmRSS with the model loaded and the adapter attached, before the first step.
    var modelRSSMiB: Double?
    var error: String?
}

struct InferResult: Codable {
    var promptTokens: Int
    var newTokens: Int
    var runs: Int
    var prefillMs: Double
    var prefillTokensPerSecond: Double
    var decodeTokensPerSecond: Double
    var decodeMsPerToken: Double
    /// Bytes of matmul weights (layers + LM head) read per decoded token × decode tokens/s, GB/s.
    var decodeWeightGBps: Double?
    /// The same rate for one OpenBLAS sgemm with a single row and the LM head's shape ([1, d] × [d, vocab],
    /// too big for the caches), GB/s: what decode's matrix products can reach through sgemm here.
    var sgemmOneRowGBps: Double?
    var peakRSSMiB: Double
    var error: String?
}

struct ShapeResult: Codable {
    var shape: ShapeInfo
    var train: [TrainResult]
    var inference: InferResult?
}

struct BenchReport: Codable {
    var tool = "peftkit"
    var cpu: String
    var cores: Int
    var threads: Int
    var batch: Int
    var seq: Int
    var warmup: Int
    var steps: Int
    var isolated: Bool
    var flopFormula: String
    var shapes: [ShapeResult]
}

// MARK: - command

/// Benchmarks training and inference; see the file header.
struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Train-step, prefill and decode throughput, GFLOP/s and peak memory per adapter method.",
        discussion: """
            Default: the GPT-2 124M and SmolLM2-135M shapes with random weights, every adapter method, B=4, T=256, \
            all cores, each configuration in its own process so peak RSS is per configuration. --json prints the \
            machine-readable report on stdout (progress goes to stderr).
            """)

    @Option(help: "Comma-separated shapes: \(BenchShape.allCases.map(\.rawValue).joined(separator: ", ")).")
    var shapes = "gpt2,smollm2"
    @Option(help: "Hugging Face model folder or .gguf file (llama architecture) benchmarked instead of the random SmolLM2 shape.")
    var model: String?
    @Flag(help: "Widen the --model GGUF's weights to fp32 on load (default: keep them in their quantized blocks).")
    var widen = false
    @Option(help: "Comma-separated methods: \(BenchMethod.allCases.map(\.rawValue).joined(separator: ", ")), or none.")
    var methods = BenchMethod.allCases.map(\.rawValue).joined(separator: ",")
    @Option(help: "Rows per train step.") var batch = 4
    @Option(help: "Tokens per row.") var seq = 256
    @Option(help: "Untimed warm-up steps.") var warmup = 1
    @Option(help: "Timed train steps.") var steps = 5
    @Option(help: "Prompt length for the prefill measurement.") var promptTokens = 256
    @Option(help: "Tokens generated greedily for the decode measurement (batch 1).") var newTokens = 64
    @Option(help: "Timed generation runs (after one warm-up run).") var genRuns = 3
    @Option(help: "Threads (0 = all cores).") var threads = 0
    @Flag(inversion: .prefixedNo, help: "Estimate a time breakdown by also timing a 1-layer model of the same shape.")
    var breakdown = true
    @Flag(inversion: .prefixedNo, help: "Measure prefill and decode.") var inference = true
    @Flag(inversion: .prefixedNo, help: "Run each configuration in a fresh process (per-configuration peak RSS).")
    var isolate = true
    @Flag(help: "Print the report as JSON on stdout.") var json = false
    @Flag(help: "Train with gradient checkpointing (recompute each layer in the backward).") var gradCheckpoint = false
    @Option(help: "What each layer keeps for the backward: automatic, keep, recompute-attention, recompute-attention-up.")
    var activationMemory: ActivationMemory = .automatic
    @Option(help: "Rows per micro-batch of a train step (gradient accumulation within the step; 0 = whole batch).")
    var microBatch = 0
    @Option(help: .hidden) var only: String?

    func validate() throws {
        guard batch > 0, seq > 1, steps > 0, warmup >= 0, promptTokens > 0, newTokens > 1, genRuns > 0, microBatch >= 0 else {
            throw ValidationError("need batch > 0, seq > 1, steps > 0, warmup >= 0, prompt-tokens > 0, new-tokens > 1, "
                + "gen-runs > 0, micro-batch >= 0")
        }
        _ = try shapeList()
        _ = try methodList()
    }

    func shapeList() throws -> [BenchShape] {
        try shapes.split(separator: ",").map {
            guard let s = BenchShape(rawValue: String($0)) else { throw ValidationError("unknown shape '\($0)'") }
            return s
        }
    }

    func methodList() throws -> [BenchMethod] {
        if methods == "none" { return [] }
        return try methods.split(separator: ",").map {
            guard let m = BenchMethod(rawValue: String($0)) else { throw ValidationError("unknown method '\($0)'") }
            return m
        }
    }

    func run() throws {
        setNumThreads(threads)
        if let task = only {
            // Child mode: one shape, one task, JSON on stdout.
            let shape = try shapeList()[0]
            var r = ShapeResult(shape: try shapeInfo(shape), train: [], inference: nil)
            if task == "infer" {
                r.inference = runInference(shape)
            } else if let m = BenchMethod(rawValue: task) {
                r.train.append(runTrain(shape, m))
            } else {
                throw ValidationError("unknown task '\(task)'")
            }
            printJSON(report([r]))
            return
        }
        var results: [ShapeResult] = []
        for shape in try shapeList() {
            var r = ShapeResult(shape: try shapeInfo(shape), train: [], inference: nil)
            for m in try methodList() {
                progress("\(shape.rawValue) \(m.rawValue): training")
                if isolate {
                    let (child, why) = try runChild(shape: shape, task: m.rawValue)
                    if let c = child { r.shape = c.shape }
                    r.train.append(child?.train.first ?? failedTrain(m, why))
                } else {
                    r.train.append(runTrain(shape, m))
                }
            }
            if inference {
                progress("\(shape.rawValue): prefill and decode")
                if isolate {
                    let (child, why) = try runChild(shape: shape, task: "infer")
                    if let c = child { r.shape = c.shape }
                    r.inference = child?.inference ?? InferResult(
                        promptTokens: promptTokens, newTokens: newTokens, runs: 0, prefillMs: 0, prefillTokensPerSecond: 0,
                        decodeTokensPerSecond: 0, decodeMsPerToken: 0, decodeWeightGBps: nil, sgemmOneRowGBps: nil, peakRSSMiB: 0,
                        error: why)
                } else {
                    r.inference = runInference(shape)
                }
            }
            results.append(r)
        }
        let rep = report(results)
        if json { printJSON(rep) } else { printTable(rep) }
    }

    func report(_ shapes: [ShapeResult]) -> BenchReport {
        BenchReport(cpu: cpuModel(), cores: onlineCPUs(), threads: numThreads(), batch: batch, seq: seq, warmup: warmup,
                    steps: steps, isolated: isolate || only != nil, flopFormula: FlopCount.formula, shapes: shapes)
    }

    // MARK: models

    func modelConfig(_ shape: BenchShape) throws -> ModelConfig {
        if shape == .smollm2, model != nil { return try loadModel(shape).config }
        return shape.config
    }

    func loadModel(_ shape: BenchShape) throws -> Model {
        if shape == .smollm2, let path = model { return try Model.load(path: path, widen: widen) }
        return try Model.create(config: shape.config, seed: 1)
    }

    func shapeInfo(_ shape: BenchShape) throws -> ShapeInfo {
        // Loading a real model just to describe it would double the parent's work: read its config only once
        // per child; the parent describes a folder by its shape name until a child reports.
        let c = (shape == .smollm2 && model != nil && only != nil) ? try modelConfig(shape) : shape.config
        return ShapeInfo(name: shape.rawValue, label: shape.label, source: shape == .smollm2 ? (model ?? "random") : "random",
                         architecture: c.architecture.rawValue, vocabSize: c.vocabSize, hiddenSize: c.hiddenSize,
                         numLayers: c.numLayers, numHeads: c.numHeads, numKVHeads: c.numKVHeads, headDim: c.headDim,
                         intermediateSize: c.intermediateSize, maxPositions: c.maxPositions,
                         tieWordEmbeddings: c.tieWordEmbeddings, ropeTheta: Double(c.ropeTheta),
                         parameters: c.parameterCount, matmulParamsPerLayer: FlopCount.matmulPerLayer(c))
    }

    func tokens(_ count: Int, vocab: Int, salt: Int = 0) -> [Int32] {
        (0..<count).map { Int32(($0 * 7919 + salt * 104729 + 13) % vocab) }
    }

    // MARK: train

    func failedTrain(_ m: BenchMethod, _ msg: String) -> TrainResult {
        TrainResult(method: m.rawValue, detail: "", trainableParameters: 0, tokensPerStep: batch * seq, stepMs: [],
                    medianMs: 0, bestMs: 0, tokensPerSecond: 0, tokensPerSecondBest: 0, gflopPerStep: 0, gflopsMedian: 0,
                    gflopsBest: 0, lmHeadFlopShare: 0, sgemmGflops: 0, sgemmShape: "", ratioToSgemm: 0, forwardMs: 0,
                    forwardShare: 0, breakdown: nil, firstLoss: 0, lastLoss: 0, peakRSSMiB: 0, modelRSSMiB: nil, error: msg)
    }

    func runTrain(_ shape: BenchShape, _ method: BenchMethod) -> TrainResult {
        do {
            return try train(shape, method)
        } catch {
            progress("\(shape.rawValue) \(method.rawValue): \(error)")
            return failedTrain(method, "\(error)")
        }
    }

    /// Times `warmup + steps` train steps of `m`; returns the per-step milliseconds and the losses.
    func timeSteps(_ m: Model, _ ids: [Int32], steps n: Int, warmup w: Int, tag: String) throws -> ([Double], [Float]) {
        let clock = ContinuousClock()
        var ms: [Double] = [], losses: [Float] = []
        for s in 0..<(w + n) {
            let t0 = clock.now, cpu0 = processCPUSeconds()
            var tc = TrainConfig()
            tc.gradientCheckpointing = gradCheckpoint
            tc.activationMemory = activationMemory
            tc.microBatchSize = microBatch
            let r = try m.trainStep(inputIDs: ids, batch: batch, seqLen: seq, config: tc)
            let dt = (clock.now - t0).seconds * 1000, cpu = (processCPUSeconds() - cpu0) * 1000
            losses.append(r.loss)
            if s >= w { ms.append(dt) }
            progress("  \(tag) step \(s + 1)/\(w + n)\(s < w ? " (warm-up)" : ""): \(num(dt, 1)) ms (CPU \(num(cpu, 1)) ms), loss \(num(Double(r.loss), 4))")
        }
        return (ms, losses)
    }

    func timeForward(_ m: Model, _ ids: [Int32], runs: Int) throws -> Double {
        let clock = ContinuousClock()
        var ms: [Double] = []
        for i in 0...runs {
            let t0 = clock.now
            _ = try m.forward(inputIDs: ids, batch: batch, seqLen: seq)
            if i > 0 { ms.append((clock.now - t0).seconds * 1000) }
        }
        return median(ms)
    }

    func train(_ shape: BenchShape, _ method: BenchMethod) throws -> TrainResult {
        let m = try loadModel(shape)
        let c = m.config
        let sgK = c.hiddenSize, sgN = c.intermediateSize, sgM = batch * seq
        let sgemm = try measureSGEMM(m: sgM, n: sgN, k: sgK, iterations: 10)
        let trainable = try method.prepare(m)
        let before = rssMiB("VmRSS:")
        let ids = tokens(batch * seq, vocab: c.vocabSize)
        let (ms, losses) = try timeSteps(m, ids, steps: steps, warmup: warmup, tag: "\(shape.rawValue) \(method.rawValue)")
        let peak = peakRSSMiB()
        let fwd = try timeForward(m, ids, runs: max(1, min(3, steps)))
        let flops = FlopCount(config: c, method: method, batch: batch, seq: seq)
        let med = median(ms), best = ms.min() ?? 0
        var bd: Breakdown? = nil
        if breakdown && c.numLayers > 1 {
            var c1 = c
            c1.numLayers = 1
            let m1 = try Model.create(config: c1, seed: 1)
            _ = try method.prepare(m1)
            let (ms1, _) = try timeSteps(m1, ids, steps: max(1, min(3, steps)), warmup: 1, tag: "  1-layer")
            let f1 = try timeForward(m1, ids, runs: max(1, min(3, steps)))
            let s1 = median(ms1)
            let perLayer = (med - s1) / Double(c.numLayers - 1)
            let perLayerF = (fwd - f1) / Double(c.numLayers - 1)
            bd = Breakdown(note: "estimate: per layer = (L-layer − 1-layer)/(L−1); outside = 1-layer − per layer",
                           oneLayerStepMs: s1, perLayerStepMs: perLayer, outsideLayersStepMs: s1 - perLayer,
                           outsideLayersStepShare: (s1 - perLayer) / med, oneLayerForwardMs: f1,
                           perLayerForwardMs: perLayerF, outsideLayersForwardMs: f1 - perLayerF)
        }
        return TrainResult(
            method: method.rawValue, detail: method.describe(c.architecture),
            trainableParameters: trainable, tokensPerStep: batch * seq, stepMs: ms,
            medianMs: med, bestMs: best, tokensPerSecond: Double(batch * seq) / med * 1000,
            tokensPerSecondBest: Double(batch * seq) / best * 1000, gflopPerStep: flops.total / 1e9,
            gflopsMedian: flops.total / med / 1e6, gflopsBest: flops.total / best / 1e6, lmHeadFlopShare: flops.lmHeadShare,
            sgemmGflops: sgemm, sgemmShape: "\(sgM)x\(sgN)x\(sgK)", ratioToSgemm: flops.total / med / 1e6 / sgemm,
            forwardMs: fwd, forwardShare: fwd / med, breakdown: bd, firstLoss: Double(losses.first ?? 0),
            lastLoss: Double(losses.last ?? 0), peakRSSMiB: peak, modelRSSMiB: before, error: nil)
    }

    // MARK: inference

    func runInference(_ shape: BenchShape) -> InferResult {
        do {
            return try infer(shape)
        } catch {
            progress("\(shape.rawValue) inference: \(error)")
            return InferResult(promptTokens: promptTokens, newTokens: newTokens, runs: 0, prefillMs: 0, prefillTokensPerSecond: 0,
                               decodeTokensPerSecond: 0, decodeMsPerToken: 0, decodeWeightGBps: nil, sgemmOneRowGBps: nil, peakRSSMiB: 0,
                               error: "\(error)")
        }
    }

    /// Greedy generation, batch 1, no adapter: prefill = time to the first new token; decode = the rest.
    func infer(_ shape: BenchShape) throws -> InferResult {
        let m = try loadModel(shape)
        let prompt = tokens(promptTokens, vocab: m.config.vocabSize, salt: 1)
        var g = GenerateConfig()
        g.maxNewTokens = newTokens
        let clock = ContinuousClock()
        var prefill: [Double] = [], decode: [Double] = []
        for run in 0...genRuns {
            let t0 = clock.now
            var first = t0, last = t0, n = 0
            _ = try m.generate(prompt: prompt, config: g) { _ in
                let now = clock.now
                if n == 0 { first = now }
                last = now
                n += 1
                return true
            }
            guard n > 1 else { throw PEFTKitError.state("generation stopped after \(n) tokens") }
            let p = (first - t0).seconds * 1000, d = (last - first).seconds * 1000 / Double(n - 1)
            progress("  \(shape.rawValue) generate run \(run)\(run == 0 ? " (warm-up)" : ""): prefill \(num(p, 1)) ms, decode \(num(d, 2)) ms/token")
            if run > 0 { prefill.append(p); decode.append(d) }
        }
        let p = median(prefill), d = median(decode)
        let peak = peakRSSMiB()  // before the sgemm probe below allocates its own matrices
        let c = m.config
        let weightBytes = Double(c.numLayers * FlopCount.matmulPerLayer(c) + c.vocabSize * c.hiddenSize) * 4
        // One row: 2·n·k FLOPs per 4·n·k weight bytes, so GB/s = 2 × GFLOP/s.
        let oneRow = try measureSGEMM(m: 1, n: c.vocabSize, k: c.hiddenSize, iterations: 20) * 2
        return InferResult(promptTokens: promptTokens, newTokens: newTokens, runs: genRuns, prefillMs: p,
                           prefillTokensPerSecond: Double(promptTokens) / p * 1000, decodeTokensPerSecond: 1000 / d,
                           decodeMsPerToken: d, decodeWeightGBps: weightBytes / (d / 1000) / 1e9, sgemmOneRowGBps: oneRow,
                           peakRSSMiB: peak, error: nil)
    }

    // MARK: child processes

    /// Runs this executable with `--only task` for one shape; returns its result, or nil and why it failed.
    func runChild(shape: BenchShape, task: String) throws -> (ShapeResult?, String) {
        var args = ["bench", "--only", task, "--shapes", shape.rawValue, "--batch", "\(batch)", "--seq", "\(seq)",
                    "--warmup", "\(warmup)", "--steps", "\(steps)", "--prompt-tokens", "\(promptTokens)",
                    "--new-tokens", "\(newTokens)", "--gen-runs", "\(genRuns)", "--threads", "\(threads)",
                    breakdown ? "--breakdown" : "--no-breakdown"]
        if let m = model { args += ["--model", m] }
        if gradCheckpoint { args.append("--grad-checkpoint") }
        args += ["--activation-memory", activationMemory.rawValue, "--micro-batch", "\(microBatch)"]
        if widen { args += ["--widen"] }
        let (status, out) = try spawnCapturing(executable: selfExecutable(), arguments: args)
        guard status == 0 else {
            let why = status > 128 ? "child process killed by signal \(status - 128)" : "child process exited with status \(status)"
            progress("\(shape.rawValue) \(task): \(why)")
            return (nil, why)
        }
        do {
            let rep = try JSONDecoder().decode(BenchReport.self, from: Data(out))
            return (rep.shapes.first, "")
        } catch {
            progress("\(shape.rawValue) \(task): the child printed unreadable JSON: \(error)")
            return (nil, "child process printed unreadable JSON")
        }
    }
}

// MARK: - output

extension Bench {
    func printJSON(_ r: BenchReport) {
        let enc = JSONEncoder()
        enc.outputFormatting = [.prettyPrinted, .sortedKeys]
        guard let d = try? enc.encode(r) else { return }
        print(String(decoding: d, as: UTF8.self))
    }

    func printTable(_ r: BenchReport) {
        print("PEFTKit bench: \(r.cpu), \(r.cores) cores, \(r.threads) threads; B=\(r.batch) T=\(r.seq); "
              + "\(r.warmup) warm-up + \(r.steps) timed steps; "
              + (r.isolated ? "one process per configuration" : "all configurations in one process (peak RSS is cumulative)"))
        for s in r.shapes {
            let i = s.shape
            print("")
            print("\(i.name): \(i.label), \(i.source == "random" ? "random weights" : i.source); \(fmtCount(i.parameters)) parameters, "
                  + "L=\(i.numLayers) d=\(i.hiddenSize) heads=\(i.numHeads)/\(i.numKVHeads) ffn=\(i.intermediateSize) vocab=\(i.vocabSize)")
            if !s.train.isEmpty {
                let head = ["method", "trainable", "step ms med", "best", "tok/s med", "best", "GFLOP/step", "GFLOP/s",
                            "sgemm", "of sgemm", "fwd share", "model RSS", "peak RSS"]
                var rows: [[String]] = []
                for t in s.train {
                    if let e = t.error { rows.append([t.method, "error: \(e)"]); continue }
                    rows.append([t.method, fmtCount(t.trainableParameters), num(t.medianMs, 0), num(t.bestMs, 0),
                                 num(t.tokensPerSecond, 1), num(t.tokensPerSecondBest, 1), num(t.gflopPerStep, 2),
                                 num(t.gflopsMedian, 1), num(t.sgemmGflops, 1), pct(t.ratioToSgemm), pct(t.forwardShare),
                                 t.modelRSSMiB.map { "\(num($0, 0)) MiB" } ?? "-", "\(num(t.peakRSSMiB, 0)) MiB"])
                }
                printRows(head, rows)
                let bds = s.train.filter { $0.breakdown != nil }
                if !bds.isEmpty {
                    print("  time breakdown (estimated by differencing the \(i.numLayers)-layer and a 1-layer model):")
                    var rows2: [[String]] = []
                    for t in bds {
                        let b = t.breakdown!
                        rows2.append([t.method, num(b.perLayerStepMs, 1), num(b.outsideLayersStepMs, 1), pct(b.outsideLayersStepShare),
                                      pct(t.lmHeadFlopShare), num(b.perLayerForwardMs, 1), num(b.outsideLayersForwardMs, 1), num(t.forwardMs, 0)])
                    }
                    printRows(["method", "layer step ms", "outside ms", "outside share", "head FLOP share",
                               "layer fwd ms", "outside fwd ms", "forward ms"], rows2, indent: "  ")
                    print("  outside = embeddings + final norm + LM head + loss + AdamW; forward = eval pass with logits")
                }
            }
            if let g = s.inference {
                if let e = g.error {
                    print("  inference: error: \(e)")
                } else {
                    print("  inference (batch 1, greedy, no adapter): prefill \(g.promptTokens) tokens \(num(g.prefillMs, 1)) ms = "
                          + "\(num(g.prefillTokensPerSecond, 1)) tok/s; decode \(g.newTokens) tokens \(num(g.decodeTokensPerSecond, 2)) tok/s "
                          + "(\(num(g.decodeMsPerToken, 1)) ms/token); peak RSS \(num(g.peakRSSMiB, 0)) MiB")
                    if let w = g.decodeWeightGBps, let o = g.sgemmOneRowGBps {
                        print("  decode streams the weights at \(num(w, 1)) GB/s; one-row OpenBLAS sgemm [1, d]×[d, vocab] "
                              + "reaches \(num(o, 1)) GB/s in the same process")
                    }
                }
            }
        }
        print("")
        print("FLOPs (matrix products only):")
        for line in r.flopFormula.split(separator: "\n") { print("  " + line) }
        print("sgemm: OpenBLAS C[B·T, ffn] = A[B·T, d]·W[d, ffn] in the same process, best of 10.")
    }

    func printRows(_ head: [String], _ rows: [[String]], indent: String = "") {
        var w = head.map(\.count)
        for r in rows where r.count == head.count { for (i, c) in r.enumerated() { w[i] = max(w[i], c.count) } }
        func line(_ r: [String]) -> String {
            if r.count != head.count { return indent + r.joined(separator: "  ") }
            return indent + r.enumerated().map { i, c in
                let pad = String(repeating: " ", count: w[i] - c.count)
                return i == 0 ? c + pad : pad + c
            }.joined(separator: "  ")
        }
        print(line(head))
        for r in rows { print(line(r)) }
    }
}

// MARK: - helpers

func median(_ xs: [Double]) -> Double {
    if xs.isEmpty { return 0 }
    let s = xs.sorted()
    return s.count % 2 == 1 ? s[s.count / 2] : (s[s.count / 2 - 1] + s[s.count / 2]) / 2
}

/// `x` with `digits` decimals; whole numbers without a decimal point when `digits` is 0.
func num(_ x: Double, _ digits: Int = 1) -> String {
    guard x.isFinite else { return "\(x)" }
    if digits == 0 { return "\(Int(x.rounded()))" }
    var p = 1.0
    for _ in 0..<digits { p *= 10 }
    let v = (abs(x) * p).rounded()
    let whole = Int(v / p), frac = Int(v - Double(whole) * p)
    var f = "\(frac)"
    while f.count < digits { f = "0" + f }
    return (x < 0 && v > 0 ? "-" : "") + "\(whole).\(f)"
}

func pct(_ x: Double) -> String { num(x * 100, 0) + "%" }

func fmtCount(_ n: Int) -> String {
    if n >= 1_000_000 { return num(Double(n) / 1e6, 1) + "M" }
    if n >= 10_000 { return num(Double(n) / 1e3, 1) + "K" }
    return "\(n)"
}

func progress(_ s: String) {
    var line = s + "\n"
    line.withUTF8 { b in _ = write(2, b.baseAddress, b.count) }
}

/// The whole content of a (small, possibly /proc) file, or nil.
func readTextFile(_ path: String) -> String? {
    guard let f = fopen(path, "r") else { return nil }
    defer { fclose(f) }
    var bytes: [UInt8] = []
    var buf = [UInt8](repeating: 0, count: 4096)
    while true {
        let n = fread(&buf, 1, buf.count, f)
        if n <= 0 { break }
        bytes += buf[0..<n]
    }
    return String(decoding: bytes, as: UTF8.self)
}

/// CPU time of this process, every thread, in seconds (on a loaded machine a fairer clock than the wall's).
func processCPUSeconds() -> Double {
    var t = timespec()
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t)
    return Double(t.tv_sec) + Double(t.tv_nsec) / 1e9
}

/// Peak resident set size of this process (VmHWM), MiB.
func peakRSSMiB() -> Double { rssMiB("VmHWM:") }

/// A memory line of /proc/self/status ("VmHWM:", "VmRSS:") in MiB; 0 when the line is missing.
func rssMiB(_ key: String) -> Double {
    guard let s = readTextFile("/proc/self/status") else { return 0 }
    for line in s.split(separator: "\n") where line.hasPrefix(key) { return statusKiB(line) / 1024 }
    return 0
}

/// The kB figure of a /proc status line ("VmHWM:\t  880120 kB"). The kernel pads the number to eight columns
/// after the tab, so from 10⁷ kB (9.5 GiB) on no space separates it from the tab: split on both.
func statusKiB<S: StringProtocol>(_ line: S) -> Double {
    line.split(whereSeparator: { $0 == " " || $0 == "\t" }).dropFirst().compactMap { Double($0) }.first ?? 0
}

func cpuModel() -> String {
    guard let s = readTextFile("/proc/cpuinfo") else { return "unknown CPU" }
    for line in s.split(separator: "\n") where line.hasPrefix("model name") {
        if let i = line.firstIndex(of: ":") {
            return String(line[line.index(after: i)...].drop { $0 == " " || $0 == "\t" })
        }
    }
    return "unknown CPU"
}

func onlineCPUs() -> Int { max(1, Int(sysconf(Int32(_SC_NPROCESSORS_ONLN)))) }

func selfExecutable() -> String {
    var buf = [CChar](repeating: 0, count: 4096)
    let n = readlink("/proc/self/exe", &buf, buf.count - 1)
    guard n > 0 else { return CommandLine.arguments[0] }
    return String(decoding: buf[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
}

/// Runs `executable` with `arguments`, stdout captured, stderr inherited. Returns (exit status, stdout bytes).
func spawnCapturing(executable: String, arguments: [String]) throws -> (Int32, [UInt8]) {
    var fds: [Int32] = [0, 0]
    guard pipe(&fds) == 0 else { throw PEFTKitError.io("pipe failed") }
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    posix_spawn_file_actions_adddup2(&actions, fds[1], 1)
    posix_spawn_file_actions_addclose(&actions, fds[0])
    posix_spawn_file_actions_addclose(&actions, fds[1])
    let argv: [UnsafeMutablePointer<CChar>?] = ([executable] + arguments).map { strdup($0) } + [nil]
    defer { for p in argv { free(p) } }
    var pid: pid_t = 0
    let rc = posix_spawn(&pid, executable, &actions, nil, argv, environ)
    close(fds[1])
    guard rc == 0 else {
        close(fds[0])
        throw PEFTKitError.io("could not start \(executable): error \(rc)")
    }
    var out: [UInt8] = []
    var buf = [UInt8](repeating: 0, count: 65536)
    while true {
        let n = read(fds[0], &buf, buf.count)
        if n > 0 { out += buf[0..<n] } else if n == 0 || errno != EINTR { break }
    }
    close(fds[0])
    var status: Int32 = 0
    while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
    // WIFEXITED / WEXITSTATUS by hand (macros are not imported).
    let exited = (status & 0x7f) == 0
    return (exited ? (status >> 8) & 0xff : 128 + (status & 0x7f), out)
}
