import ArgumentParser
import PEFTKit
#if canImport(Glibc)
import Glibc
#endif

/// `peftkit train`: tune an adapter on a JSONL file and save it.
struct Train: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Train an adapter on a JSONL file and save it (with loss.svg) to --out.",
        discussion: """
            Each line of --data is one record: {"prompt": ..., "response": ...} (optionally "system"), \
            {"messages": [{"role": ..., "content": ...}, ...]} or {"text": ...}. Chat records go through the \
            model's chat template and only assistant tokens count towards the loss; text records count every \
            token. Rows are cut or padded to --seq-len (or the longest record, if shorter). With --pack, several \
            records share a row (epochs and --batch then count packed rows).

            Data-parallel: `mpirun -np N peftkit-cli train ...` splits each global batch of --batch rows over N \
            processes and gives the same adapter as one process (docs/DISTRIBUTED.md). libmpi (Open MPI) is opened \
            only when mpirun starts several processes; without MPI installed, train runs as one process as usual, \
            and a several-process launch stops with a message saying libmpi could not be opened.
            """)

    @OptionGroup var modelOptions: ModelOptions
    @OptionGroup var adapter: AdapterOptions
    @Option(help: "Training data (JSONL).") var data: String
    @Option(help: "Where to save the adapter (created if missing).") var out: String
    @Option(help: "Adapter name.") var name = "default"
    @Option(help: "Also write the adapter as <out>/adapter.gguf in llama.cpp's format (gguf: LoRA on Llama models), or as <out>/converted-lora/ (converted-lora: a PiSSA/OLoRA adapter as a rank-2r LoRA of the original base, PEFT's conversion); native writes the folder only.")
    var format: AdapterFormat = .native
    @Option(help: "After training, merge the adapter (LoRA, IA3) into the base and save the whole model there (needs --widen for a GGUF base).")
    var saveModel: String?
    @Option(help: "Format of --save-model: hf (folder), gguf (F32) or gguf-f16.") var modelFormat: ModelFormatOption = .hf
    @Option(help: "Optimiser steps (overrides --epochs).") var steps: Int?
    @Option(help: "Passes over the data when --steps is not given.") var epochs = 1
    @Option(help: "Rows per step.") var batch = 4
    @Option(help: "Tokens per row: longer records are cut, shorter ones padded.") var seqLen = 256
    @Option(help: "Peak learning rate.") var lr: Float = 2e-4
    @Option(help: "Learning-rate schedule: constant, linear, cosine.") var schedule: LRSchedule = .cosine
    @Option(help: "Warm-up steps.") var warmup = 0
    @Option(help: "AdamW weight decay.") var weightDecay: Float = 0
    @Option(help: "Clip the gradient norm to this (0 = off).") var clip: Float = 1
    @Option(help: "Rows per micro-batch for gradient accumulation (0 = whole batch).") var microBatch = 0
    @Flag(help: "Gradient checkpointing: keep only each layer's input, recompute the layer in the backward (less memory).")
    var gradCheckpoint = false
    @Option(help: "What each layer keeps for the backward without checkpointing: automatic (over a quantized base recompute-attention, and the up projection in the top sixth of the layers; keep otherwise), keep, recompute-attention, recompute-attention-up. Same gradients either way.")
    var activationMemory: ActivationMemory = .automatic
    @Flag(help: "Pack several records per row (first-fit decreasing, up to --seq-len tokens); each record attends only to itself and trains as if alone. Not with prompt or prefix tuning.")
    var pack = false
    @Option(help: "Seed for data order and adapter initialisation.") var seed: UInt64 = 0
    @Option(help: "Objective: sft (language-model loss), dpo or orpo (--data holds {\"prompt\", \"chosen\", \"rejected\"} records).")
    var objective: TrainObjective = .sft
    @Option(help: "DPO's beta, or ORPO's lambda (TRL names both beta).") var beta: Float = 0.1
    @OptionGroup var checkpoints: CheckpointOptions
    @Option(help: "Train a task head with the adapter on an encoder (BERT): classify or regress on {\"text\", \"text_pair\"?, \"label\"} JSONL, or tag (token classification) on {\"tokens\": [...], \"tags\": [...]} or {\"text\", \"tags\"} JSONL, each word's tag on its first WordPiece; --seq-len caps the ids per row.")
    var task: TaskOption?

    func validate() throws {
        guard batch > 0 else { throw ValidationError("--batch must be positive") }
        guard seqLen > 1 else { throw ValidationError("--seq-len must be at least 2") }
        guard epochs > 0 else { throw ValidationError("--epochs must be positive") }
        if let s = steps, s <= 0 { throw ValidationError("--steps must be positive") }
    }

    func run() throws {
        if let task { return try trainEncoderHead(self, task) }
        let dist = try Distributed.start()
        try dist.run { try run(dist) }
    }

    private func run(_ dist: Distributed) throws {
        let lm = try LoadedModel.load(dist.modelOptions(modelOptions))
        let m = lm.model
        print("model \(lm.path): \(m.config.architecture), \(countString(m.config.parameterCount)) parameters, loaded in \(fmt(lm.loadSeconds, 1)) s")
        if objective != .sft {
            guard dist.size == 1 else { throw CLIError("--objective \(objective.rawValue) runs in one process (no mpirun)") }
            guard !pack else { throw CLIError("--pack trains the language-model objective only (not --objective \(objective.rawValue))") }
            return try trainPreference(lm)
        }
        var examples = try loadExamples(data, lm.encoder)
        if pack {
            let records = examples.count
            // Rows of --seq-len (not the longest record's length, which the unpacked rows use).
            examples = try SequencePacking.pack(examples, seqLen: max(2, min(seqLen, m.config.maxPositions)))
            print("packed \(records) records into \(examples.count) rows")
        }
        let n = steps ?? BatchOrder.steps(count: examples.count, batch: batch, epochs: epochs)
        guard n > 0 else { throw CLIError("--steps/--epochs give no steps") }
        let configJSON = try adapter.configJSON(model: m.config, seed: seed)
        try checkpoints.attachOrResume(m, name: name, configJSON: configJSON)
        try m.setActiveAdapter(name)
        let method = try m.adapterMethod(name: name)
        if saveModel != nil {
            guard method == .lora || method == .ia3 else {
                throw CLIError("--save-model merges the adapter into the base: \(method.rawValue) adapters cannot be merged (only LoRA and IA3)")
            }
            if let q = m.baseTensors.first(where: { $0.format != "F32" }) {
                throw CLIError("--save-model merges the adapter into fp32 base weights, but '\(q.name)' is kept in \(q.format) blocks: add --widen")
            }
        }
        print("adapter '\(name)' (\(method.rawValue)): \(countString(try m.adapterParameterCount(name: name))) trainable parameters")
        var tc = TrainConfig()
        tc.learningRate = lr; tc.schedule = schedule; tc.warmupSteps = warmup; tc.totalSteps = n
        tc.weightDecay = weightDecay; tc.maxGradNorm = clip; tc.microBatchSize = microBatch
        tc.gradientCheckpointing = gradCheckpoint
        tc.activationMemory = activationMemory
        let run = try trainDataParallel(lm, examples: examples, run: DataParallelRun(
            steps: n, batch: batch, seqLen: seqLen, config: tc, seed: seed, name: name, checkpoints: checkpoints,
            modelPath: lm.path, dataPath: data, adapterConfigJSON: configJSON, method: method), dist: dist)
        guard dist.isRoot else { return }
        try m.saveAdapter(name: name, to: out)
        if format == .gguf {
            try m.saveAdapter(name: name, to: out + "/adapter.gguf", format: .gguf)
            print("saved \(out)/adapter.gguf: llama-cli -m <base>.gguf --lora \(out)/adapter.gguf")
        } else if format == .convertedLoRA {
            try m.saveAdapter(name: name, to: out + "/converted-lora", format: .convertedLoRA)
            print("saved \(out)/converted-lora: a plain LoRA of the original base weights")
        }
        let plot = out + "/loss.svg"
        try writeFileAtomically(path: plot, bytes: Array(lossPlotSVG(run.losses, title: "\(method.rawValue) on \(adapterNameHint(data)): loss per step").utf8))
        print("saved \(out) (\(byteString(diskBytes(out)))), loss plot \(plot)")
        if let saveModel {
            try m.mergeAdapter(name: name)
            try m.saveModel(to: saveModel, format: modelFormat.format)
            print("saved the merged model as \(modelFormat.describe(saveModel)) (\(byteString(diskBytes(saveModel))))")
        }
    }
}

/// Reads a JSONL file and tokenizes every record; reports how many there are.
func loadExamples(_ path: String, _ encoder: DatasetEncoder) throws -> [DatasetExample] {
    let records = try JSONLDataset.read(path: path)
    var out: [DatasetExample] = []
    out.reserveCapacity(records.count)
    for (i, r) in records.enumerated() {
        do { out.append(try encoder.encode(r)) } catch let e as PEFTKitError {
            throw CLIError("'\(path)' record \(i + 1): \(e.message)")
        }
    }
    return out
}

/// The row length to use: the requested one, or the longest example when that is shorter.
func effectiveSeqLen(_ examples: [DatasetExample], requested: Int) -> Int {
    max(2, min(requested, examples.map(\.inputIDs.count).max() ?? requested))
}

struct TrainRun {
    var losses: [Float] = []
    var seconds: Double = 0
    var tokens = 0
    /// Tokens of records (not padding) in the rows trained.
    var realTokens = 0
}

/// Trains the active adapter for `steps` steps on batches drawn in a seeded order, with a progress line.
func trainAdapter(_ lm: LoadedModel, examples: [DatasetExample], steps: Int, batch: Int, seqLen: Int,
                  config: TrainConfig, seed: UInt64) throws -> TrainRun {
    let T = effectiveSeqLen(examples, requested: min(seqLen, lm.model.config.maxPositions))
    let cut = examples.filter { $0.inputIDs.count > T }.count
    let pad = lm.tokenizer.eosID ?? 0
    print("data: \(examples.count) records, \(steps) steps of \(batch) × \(T) tokens"
          + (cut > 0 ? ", \(cut) records cut to \(T) tokens" : ""))
    var order = try BatchOrder(count: examples.count, batch: batch, seed: seed)
    var progress = ProgressLine(total: steps)
    var run = TrainRun()
    for s in 1...steps {
        let b = try TokenBatch(order.nextBatch().map { examples[$0] }, seqLen: T, padID: pad)
        let r = try lm.model.trainStep(inputIDs: b.inputIDs, labels: b.labels, batch: batch, seqLen: T, config: config)
        run.losses.append(r.loss)
        run.tokens += batch * T
        progress.update(step: s, loss: r.loss, tokens: batch * T)
    }
    run.seconds = progress.elapsed
    let first = run.losses.first ?? 0, last = run.losses.last ?? 0
    print("trained \(steps) steps in \(fmt(run.seconds, 1)) s (\(fmt(Double(run.tokens) / max(run.seconds, 1e-9), 0)) tok/s): loss \(fmt(Double(first), 3)) -> \(fmt(Double(last), 3))")
    return run
}

/// Mean loss over every trained token of `examples` with the active adapter, and the token count.
func evaluateLoss(_ lm: LoadedModel, examples: [DatasetExample], batch: Int, seqLen: Int) throws -> (loss: Double, tokens: Int) {
    guard batch > 0 else { throw CLIError("--batch must be positive") }
    let T = effectiveSeqLen(examples, requested: min(seqLen, lm.model.config.maxPositions))
    let pad = lm.tokenizer.eosID ?? 0
    var sum = 0.0
    var tokens = 0
    var i = 0
    while i < examples.count {
        let rows = Array(examples[i..<min(examples.count, i + batch)])
        let b = try TokenBatch(rows, seqLen: T, padID: pad)
        let r = try b.inputIDs.withUnsafeBufferPointer { ids in
            try b.labels.withUnsafeBufferPointer { lb in
                try lm.model.forward(inputIDs: ids, labels: lb, batch: rows.count, seqLen: T)
            }
        }
        sum += Double(r.loss) * Double(r.tokens)
        tokens += r.tokens
        i += batch
    }
    return (tokens > 0 ? sum / Double(tokens) : 0, tokens)
}

extension LRSchedule: ExpressibleByArgument {}

enum TrainObjective: String, ExpressibleByArgument, CaseIterable {
    case sft, dpo, orpo
}

extension AdapterFormat: ExpressibleByArgument {}

extension ActivationMemory: ExpressibleByArgument {}
