import Testing
@testable import PEFTKit
#if canImport(Glibc)
import Glibc
#endif

/// The adapter configurations the resume tests run (LoRA with dropout, so the dropout generator must be kept).
private func resumeConfigs(_ arch: Architecture) -> [(String, AdapterConfig)] {
    var lora = LoRAConfig()
    lora.rank = 4; lora.alpha = 8; lora.dropout = 0.25
    lora.targets = LinearSite.sites(arch).map { $0.shortName(arch) }
    var prefix = PrefixConfig(); prefix.virtualTokens = 3; prefix.projection = true; prefix.projectionHidden = 8
    var prompt = PromptConfig(); prompt.virtualTokens = 2
    return [
        ("bottleneck", .bottleneck(BottleneckConfig(preset: .houlsby, reductionFactor: 4, lnBefore: true))),
        ("lora-dropout", .lora(lora)),
        ("ia3", .ia3(IA3Config())),
        ("prefix-projection", .prefix(prefix)),
        ("prompt", .prompt(prompt)),
    ]
}

private struct ResumeCase: CustomStringConvertible, Sendable {
    let arch: Architecture
    let index: Int
    var description: String { "\(arch)/\(resumeConfigs(arch)[index].0)" }
}

private let resumeCases = Architecture.allCases.flatMap { a in (0..<resumeConfigs(a).count).map { ResumeCase(arch: a, index: $0) } }

private func trainConfig() -> TrainConfig {
    var tc = TrainConfig()
    tc.learningRate = 3e-2
    tc.schedule = .cosine
    tc.warmupSteps = 2
    tc.totalSteps = 6
    tc.maxGradNorm = 1
    return tc
}

/// Batch of step `s` (different every step, so a resumed run that repeated or skipped one would differ).
private func batch(_ s: Int, vocab: Int) -> [Int32] { TS.ids(2 * 6, vocab: vocab, seed: 100 + UInt64(s)) }

private func params(_ m: Model, _ name: String) throws -> [Float] {
    let s = try m.engine.adapter(named: name)
    return Array(UnsafeBufferPointer(start: s.adapter.params.floats, count: s.parameterCount))
}

private func moments(_ m: Model, _ name: String) throws -> ([Float], [Float], Int) {
    let s = try m.engine.adapter(named: name)
    let n = s.parameterCount
    return (Array(UnsafeBufferPointer(start: s.opt.m.floats, count: n)), Array(UnsafeBufferPointer(start: s.opt.v.floats, count: n)), s.opt.step)
}

private func bits(_ a: [Float]) -> [UInt32] { a.map(\.bitPattern) }

@Suite struct CheckpointTests {
    @Test(arguments: resumeCases)
    fileprivate func resumeIsBitIdentical(_ rc: ResumeCase) throws {
        let cfg = TS.tinyConfig(rc.arch)
        let (label, ac) = resumeConfigs(rc.arch)[rc.index]
        let tc = trainConfig()

        // Uninterrupted: 6 steps.
        let a = try Model.create(config: cfg, seed: 5, initStd: 0.1)
        try a.attachAdapter(name: "task", config: ac)
        try a.setActiveAdapter("task")
        var lossesA: [UInt32] = []
        for s in 0..<6 { lossesA.append(try a.trainStep(inputIDs: batch(s, vocab: cfg.vocabSize), batch: 2, seqLen: 6, config: tc).loss.bitPattern) }

        // Interrupted: 3 steps, checkpoint, a fresh model in its place, 3 more steps.
        let dir = TS.tempDir() + "/ckpt"
        var lossesB: [UInt32] = []
        do {
            let b = try Model.create(config: cfg, seed: 5, initStd: 0.1)
            try b.attachAdapter(name: "task", config: ac)
            try b.setActiveAdapter("task")
            for s in 0..<3 { lossesB.append(try b.trainStep(inputIDs: batch(s, vocab: cfg.vocabSize), batch: 2, seqLen: 6, config: tc).loss.bitPattern) }
            try b.saveCheckpoint(name: "task", to: dir)
        }
        let c = try Model.create(config: cfg, seed: 5, initStd: 0.1)
        let name = try c.loadCheckpoint(from: dir)
        #expect(name == "task")
        #expect(c.activeAdapter == nil, "loading does not activate")
        try c.setActiveAdapter(name)
        #expect(try c.adapterMethod(name: name) == ac.method)
        var lastStep = 0
        for s in 3..<6 {
            let r = try c.trainStep(inputIDs: batch(s, vocab: cfg.vocabSize), batch: 2, seqLen: 6, config: tc)
            lossesB.append(r.loss.bitPattern)
            lastStep = r.step
        }
        #expect(lastStep == 6, "the step count continues")
        #expect(lossesA == lossesB, "\(label): losses differ after resuming")
        #expect(bits(try params(a, "task")) == bits(try params(c, "task")), "\(label): final weights differ")
        let (ma, va, sa) = try moments(a, "task"), (mc, vc, sc) = try moments(c, "task")
        #expect(bits(ma) == bits(mc) && bits(va) == bits(vc) && sa == sc, "\(label): optimiser state differs")
    }

    @Test func checkpointFolderIsAlsoALoadableAdapter() throws {
        let cfg = TS.tinyConfig(.gpt2)
        let m = try Model.create(config: cfg, seed: 1)
        try m.attachAdapter(name: "bn", config: BottleneckConfig(preset: .pfeiffer, reductionFactor: 4))
        try m.setActiveAdapter("bn")
        _ = try m.trainStep(inputIDs: batch(0, vocab: cfg.vocabSize), batch: 2, seqLen: 6, config: trainConfig())
        let dir = TS.tempDir()
        try m.saveCheckpoint(name: "bn", to: dir)
        let manifest = try CheckpointManifest.decode(try readWholeFile(path: dir + "/checkpoint.json"), source: "test")
        let sub = try #require(manifest.adapter)
        let name = try m.loadAdapter(from: dir + "/" + sub, name: "copy")
        #expect(bits(try params(m, "bn")) == bits(try params(m, name)))
    }

    @Test func saveReplacesAndCleansUp() throws {
        let cfg = TS.tinyConfig(.llama)
        let m = try Model.create(config: cfg, seed: 1)
        var l = LoRAConfig(); l.rank = 2
        try m.attachAdapter(name: "l", config: .lora(l))
        try m.setActiveAdapter("l")
        let dir = TS.tempDir()
        // Leftovers of an interrupted save and an unrelated user file.
        try writeFileAtomically(path: dir + "/.state-0123456789abcdef.safetensors.tmp-1-x", bytes: [1, 2, 3])
        try writeFileAtomically(path: dir + "/notes.txt", bytes: Array("mine".utf8))
        for s in 0..<3 {
            _ = try m.trainStep(inputIDs: batch(s, vocab: cfg.vocabSize), batch: 2, seqLen: 6, config: trainConfig())
            try m.saveCheckpoint(name: "l", to: dir)
        }
        let names = listDirectory(dir).sorted()
        let states = names.filter { $0.hasPrefix("state-") }
        #expect(states.count == 1, "one state file after three saves: \(names)")
        #expect(names.contains("notes.txt") && names.contains("checkpoint.json"))
        #expect(!names.contains { $0.contains(".tmp-") }, "temporary files removed: \(names)")
        let m2 = try Model.create(config: cfg, seed: 1)
        _ = try m2.loadCheckpoint(from: dir)
        #expect(try moments(m2, "l").2 == 3)
    }

    @Test func loadRejectsEveryKindOfDamageWithoutAttaching() throws {
        let cfg = TS.tinyConfig(.gpt2)
        let m = try Model.create(config: cfg, seed: 1)
        try m.attachAdapter(name: "a", config: BottleneckConfig(reductionFactor: 4))
        try m.setActiveAdapter("a")
        _ = try m.trainStep(inputIDs: batch(0, vocab: cfg.vocabSize), batch: 2, seqLen: 6, config: trainConfig())
        let good = TS.tempDir()
        try m.saveCheckpoint(name: "a", to: good)
        let manifest = try readWholeFile(path: good + "/checkpoint.json")
        let parsed = try CheckpointManifest.decode(manifest, source: "t")
        let state = try readWholeFile(path: good + "/" + parsed.state.file)

        func variant(_ edit: (String) throws -> Void) throws -> String {
            let d = TS.tempDir()
            try writeFileAtomically(path: d + "/checkpoint.json", bytes: manifest)
            try writeFileAtomically(path: d + "/" + parsed.state.file, bytes: state)
            try edit(d)
            return d
        }
        func manifestWith(_ f: @escaping (inout CheckpointManifest) -> Void) -> (String) throws -> Void {
            { d in var c = parsed; f(&c); try writeFileAtomically(path: d + "/checkpoint.json", bytes: try c.encoded()) }
        }
        let fresh = try Model.create(config: cfg, seed: 1)
        let cases: [(String, (String) throws -> Void, (PEFTKitError) -> Bool)] = [
            ("no manifest", { d in unlink(d + "/checkpoint.json") }, { if case .io = $0 { true } else { false } }),
            ("manifest not JSON", { d in try writeFileAtomically(path: d + "/checkpoint.json", bytes: [0x7b, 0x22]) },
             { if case .format = $0 { true } else { false } }),
            ("truncated state", { d in try writeFileAtomically(path: d + "/" + parsed.state.file, bytes: Array(state.prefix(state.count - 4))) },
             { if case .format = $0 { true } else { false } }),
            ("flipped byte in state", { d in var s = state; s[s.count - 1] ^= 1; try writeFileAtomically(path: d + "/" + parsed.state.file, bytes: s) },
             { if case .format = $0 { true } else { false } }),
            ("state missing", { d in unlink(d + "/" + parsed.state.file) }, { if case .io = $0 { true } else { false } }),
            ("state path escapes", manifestWith { $0.state.file = "../" + parsed.state.file }, { if case .format = $0 { true } else { false } }),
            ("other model", manifestWith { $0.model.hiddenSize = 32 }, { if case .format = $0 { true } else { false } }),
            ("parameter count", manifestWith { $0.parameterCount += 1 }, { if case .format = $0 { true } else { false } }),
            ("unknown method", manifestWith { $0.method = "dora" }, { if case .unsupported = $0 { true } else { false } }),
            ("config of another method", manifestWith { $0.method = "lora" }, { if case .format = $0 { true } else { false } }),
            ("bad layer", manifestWith { m in
                guard case .object(var o) = m.config, case .object(var bn)? = o["config"] else { return }
                bn["leave_out"] = .array([.int(0), .int(1)])  // every layer of the tiny model
                o["config"] = .object(bn)
                m.config = .object(o)
            }, { if case .format = $0 { true } else { false } }),
            ("unknown config key", manifestWith { m in
                guard case .object(var o) = m.config, case .object(var bn)? = o["config"] else { return }
                bn["use_gating"] = .bool(true)
                o["config"] = .object(bn)
                m.config = .object(o)
            }, { if case .format = $0 { true } else { false } }),
            ("bad name", manifestWith { $0.name = "../x" }, { if case .format = $0 { true } else { false } }),
            ("negative step", manifestWith { $0.step = -1 }, { if case .format = $0 { true } else { false } }),
            ("newer version", manifestWith { $0.version = 3 }, { if case .unsupported = $0 { true } else { false } }),
            ("version 1 manifest", { d in
                let v1 = #"{"format": "peftkit-checkpoint", "version": 1, "name": "a", "method": "lora", "lora": {}}"#
                try writeFileAtomically(path: d + "/checkpoint.json", bytes: Array(v1.utf8))
            }, { if case .unsupported = $0 { true } else { false } }),
        ]
        for (label, edit, expected) in cases {
            let d = try variant(edit)
            do {
                _ = try fresh.loadCheckpoint(from: d)
                Issue.record("\(label): loaded")
            } catch let e as PEFTKitError {
                #expect(expected(e), "\(label): \(e)")
            }
            #expect(fresh.adapterNames.isEmpty, "\(label): something was attached")
        }
        _ = try fresh.loadCheckpoint(from: try variant { _ in })
        #expect(throws: PEFTKitError.self) { try fresh.loadCheckpoint(from: good) }  // name taken: state
    }

    @Test func nonFiniteAdapterIsNotCheckpointed() throws {
        let cfg = TS.tinyConfig(.gpt2)
        let m = try Model.create(config: cfg, seed: 1)
        try m.attachAdapter(name: "a", config: BottleneckConfig(reductionFactor: 4))
        let dir = TS.tempDir()
        try m.saveCheckpoint(name: "a", to: dir)
        let before = try readWholeFile(path: dir + "/checkpoint.json")
        try m.engine.adapter(named: "a").adapter.params.floats[3] = .nan
        #expect(throws: PEFTKitError.self) { try m.saveCheckpoint(name: "a", to: dir) }
        #expect(try readWholeFile(path: dir + "/checkpoint.json") == before, "the previous checkpoint is untouched")
        #expect(throws: PEFTKitError.self) { try m.saveCheckpoint(name: "nope", to: dir) }
    }

    /// A checkpoint stores the adapter's own adapter_config.json object; awkward values survive it exactly: the
    /// adapter made from the stored object has the same layout and writes the same object again.
    @Test func awkwardValuesSurviveTheManifest() throws {
        var l = LoRAConfig()
        l.alpha = 0.1; l.dropout = 0.3333333; l.seed = UInt64.max; l.layers = [1, 0]
        var b = BottleneckConfig(reductionFactor: 3.14159, scaling: 1e-7)
        b.seed = 1 << 63 + 12345
        var p = PromptConfig(); p.initTokens = [7, 0]
        var i = IA3Config(); i.feedforward = []
        for c: AdapterConfig in [.lora(l), .bottleneck(b), .prompt(p), .ia3(i)] {
            let model = try Model.create(config: TS.tinyConfig(.llama), seed: 1)
            try model.attachAdapter(name: "x", config: c)
            let dir = TS.tempDir()
            try model.saveCheckpoint(name: "x", to: dir)
            let man = try CheckpointManifest.decode(try readWholeFile(path: dir + "/checkpoint.json"), source: "t")
            let other = try Model.create(config: TS.tinyConfig(.llama), seed: 2)
            let name = try other.loadCheckpoint(from: dir)
            let a = try #require(try model.engine.adapter(named: "x").adapter as? SavableAdapter)
            let back = try #require(try other.engine.adapter(named: name).adapter as? SavableAdapter)
            #expect(JSONValue.object(back.fileConfig(name: "x")) == man.config, "\(c.method)")
            #expect(a.parameterCount == back.parameterCount)
            #expect(Array(UnsafeBufferPointer(start: a.params.floats, count: a.parameterCount))
                    == Array(UnsafeBufferPointer(start: back.params.floats, count: back.parameterCount)))
        }
    }
}
