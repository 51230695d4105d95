import Testing
@testable import PEFTKit
import Synchronization
import Dispatch
#if canImport(Glibc)
import Glibc
#endif

// Numerical failures leave every weight and the optimiser untouched; concurrent use of one model is refused,
// never corrupting; call sequences that re-size internal buffers keep working.

private func snapshot(_ s: AdapterSlot) -> (p: [UInt32], m: [UInt32], v: [UInt32], step: Int, rng: [UInt64]) {
    let n = s.parameterCount
    func bits(_ p: UnsafeMutablePointer<Float>) -> [UInt32] { (0..<n).map { p[$0].bitPattern } }
    let rng = (s.adapter as? TrainingRandomState).map { Array($0.trainingRng.words) } ?? []
    return (bits(s.adapter.params.floats), bits(s.opt.m.floats), bits(s.opt.v.floats), s.opt.step, rng)
}

private let reliabilityMethods: [(String, AdapterConfig)] = {
    var lora = LoRAConfig(); lora.rank = 2; lora.dropout = 0.1
    var prefix = PrefixConfig(); prefix.virtualTokens = 2
    var prompt = PromptConfig(); prompt.virtualTokens = 2
    return [("bottleneck", .bottleneck(BottleneckConfig(preset: .houlsby, reductionFactor: 4))), ("lora", .lora(lora)),
            ("ia3", .ia3(IA3Config())), ("prefix", .prefix(prefix)), ("prompt", .prompt(prompt))]
}()

@Suite struct ReliabilityTests {
    /// A NaN weight makes the loss NaN: the step is refused, and weights, AdamW moments and the step count are
    /// bit-for-bit what they were. Repairing the weight makes training work again.
    @Test(arguments: reliabilityMethods.map(\.0))
    func nonFiniteStepChangesNothing(_ method: String) throws {
        let cfg = TS.tinyConfig(.gpt2)
        let m = try Model.create(config: cfg, seed: 2)
        try m.attachAdapter(name: "a", config: reliabilityMethods.first { $0.0 == method }!.1)
        try m.setActiveAdapter("a")
        let ids = TS.ids(12, vocab: cfg.vocabSize, seed: 1)
        var tc = TrainConfig(); tc.learningRate = 1e-2
        for _ in 0..<2 { _ = try m.trainStep(inputIDs: ids, batch: 2, seqLen: 6, config: tc) }
        let slot = try m.engine.adapter(named: "a")
        let p = slot.adapter.params.floats
        let good = p[0]
        for poison: Float in [.nan, .infinity, -.infinity] {
            p[0] = poison
            slot.adapter.parametersChanged()
            let before = snapshot(slot)
            #expect {
                _ = try m.trainStep(inputIDs: ids, batch: 2, seqLen: 6, config: tc)
            } throws: { e in
                guard case PEFTKitError.numerical(let msg) = e else { return false }
                return msg.contains("no weight changed")
            }
            let after = snapshot(slot)
            #expect(before.p == after.p && before.m == after.m && before.v == after.v && before.step == after.step,
                    "\(method), \(poison): state changed by a refused step")
            #expect(before.rng == after.rng, "\(method), \(poison): a refused step advanced the dropout generator")
            #expect(method != "lora" || !before.rng.isEmpty)
            #expect(throws: PEFTKitError.self) { try m.forward(inputIDs: ids, batch: 2, seqLen: 6) }
            var g = GenerateConfig(); g.maxNewTokens = 3
            #expect(throws: PEFTKitError.self) { try m.generate(prompt: [1, 2], config: g) }
        }
        p[0] = good
        slot.adapter.parametersChanged()
        let r = try m.trainStep(inputIDs: ids, batch: 2, seqLen: 6, config: tc)
        #expect(r.step == 3 && r.loss.isFinite)
    }

    /// Two models trained on two threads at once end exactly where sequential runs end.
    @Test func twoModelsOnTwoThreadsMatchSequentialRuns() throws {
        let cfg = TS.tinyConfig(.llama)
        func make(_ seed: UInt64) throws -> Model {
            let m = try Model.create(config: cfg, seed: seed)
            var l = LoRAConfig(); l.rank = 4; l.dropout = 0.2
            try m.attachAdapter(name: "t", config: .lora(l))
            try m.setActiveAdapter("t")
            return m
        }
        @Sendable func train(_ m: Model) throws -> [UInt32] {
            var tc = TrainConfig(); tc.learningRate = 1e-2
            return try (0..<6).map { s in
                try m.trainStep(inputIDs: TS.ids(12, vocab: cfg.vocabSize, seed: UInt64(s)), batch: 2, seqLen: 6, config: tc).loss.bitPattern
            }
        }
        let seq = [try train(try make(1)), try train(try make(2))]
        let models = [try make(1), try make(2)]
        let results = Mutex<[[UInt32]]>([[], []])
        let errors = Atomic<Int>(0)
        nonisolated(unsafe) let ms = models
        DispatchQueue.concurrentPerform(iterations: 2) { i in
            do {
                let l = try train(ms[i])
                results.withLock { $0[i] = l }
            } catch {
                errors.add(1, ordering: .relaxed)
            }
        }
        #expect(errors.load(ordering: .relaxed) == 0)
        #expect(results.withLock { $0 } == seq)
    }

    /// One model hammered from 4 threads: every call succeeds or throws `busy`; the model ends where a
    /// sequential run of the successful steps ends, and still works.
    @Test func oneModelFromFourThreadsNeverCorrupts() throws {
        let cfg = TS.tinyConfig(.gpt2)
        let m = try Model.create(config: cfg, seed: 3)
        try m.attachAdapter(name: "h", config: BottleneckConfig(reductionFactor: 4))
        try m.setActiveAdapter("h")
        let ids = TS.ids(12, vocab: cfg.vocabSize, seed: 9)
        let tc = { var t = TrainConfig(); t.learningRate = 1e-2; return t }()
        let ok = Atomic<Int>(0), busy = Atomic<Int>(0), other = Atomic<Int>(0), wrongNames = Atomic<Int>(0)
        nonisolated(unsafe) let model = m
        DispatchQueue.concurrentPerform(iterations: 4) { _ in
            for _ in 0..<25 {
                // Reading the adapter names never waits for, or is spoiled by, a call running on another thread.
                if model.activeAdapter != "h" || model.adapterNames != ["h"] { wrongNames.add(1, ordering: .relaxed) }
                do {
                    _ = try model.trainStep(inputIDs: ids, batch: 2, seqLen: 6, config: tc)
                    ok.add(1, ordering: .relaxed)
                } catch PEFTKitError.busy {
                    busy.add(1, ordering: .relaxed)
                } catch {
                    other.add(1, ordering: .relaxed)
                }
            }
        }
        #expect(other.load(ordering: .relaxed) == 0)
        #expect(wrongNames.load(ordering: .relaxed) == 0)
        #expect(ok.load(ordering: .relaxed) + busy.load(ordering: .relaxed) == 100)
        let ref = try Model.create(config: cfg, seed: 3)
        try ref.attachAdapter(name: "h", config: BottleneckConfig(reductionFactor: 4))
        try ref.setActiveAdapter("h")
        for _ in 0..<ok.load(ordering: .relaxed) { _ = try ref.trainStep(inputIDs: ids, batch: 2, seqLen: 6, config: tc) }
        let a = try m.forward(inputIDs: ids, batch: 2, seqLen: 6).logits, b = try ref.forward(inputIDs: ids, batch: 2, seqLen: 6).logits
        #expect(a.map(\.bitPattern) == b.map(\.bitPattern))
        #expect(try m.trainStep(inputIDs: ids, batch: 2, seqLen: 6, config: tc).loss.isFinite)
    }

    /// generate() re-sizes the adapter's inference buffers for its prompt; a later forward pass of another shape
    /// must not run on them (it overflowed them: found by bindings/c/test_misuse.c's mixed-call hammer).
    @Test(arguments: reliabilityMethods.map(\.0))
    func forwardAfterGenerateOfAnotherShape(_ method: String) throws {
        for arch in Architecture.allCases {
            let cfg = TS.tinyConfig(arch)
            let m = try Model.create(config: cfg, seed: 4)
            try m.attachAdapter(name: "a", config: reliabilityMethods.first { $0.0 == method }!.1)
            try m.setActiveAdapter("a")
            let ids = TS.ids(16, vocab: cfg.vocabSize, seed: 2)
            let first = try m.forward(inputIDs: ids, batch: 2, seqLen: 8).logits
            var g = GenerateConfig(); g.maxNewTokens = 3
            _ = try m.generate(prompt: Array(ids.prefix(4)), config: g)
            let second = try m.forward(inputIDs: ids, batch: 2, seqLen: 8).logits
            #expect(first.map(\.bitPattern) == second.map(\.bitPattern), "\(arch)/\(method)")
        }
    }
}

@Suite struct UpdateOverflowTests {
    /// A finite but extreme learning rate would turn the weights into infinities: the step is refused before the
    /// update, like a NaN loss (before this check it returned success and left NaN weights behind).
    @Test func extremeLearningRateIsRefusedBeforeTheUpdate() throws {
        let cfg = TS.tinyConfig(.gpt2)
        let m = try Model.create(config: cfg, seed: 2)
        try m.attachAdapter(name: "a", config: BottleneckConfig(reductionFactor: 4))
        try m.setActiveAdapter("a")
        let ids = TS.ids(12, vocab: cfg.vocabSize, seed: 1)
        var tc = TrainConfig(); tc.learningRate = 1e-2
        _ = try m.trainStep(inputIDs: ids, batch: 2, seqLen: 6, config: tc)
        let slot = try m.engine.adapter(named: "a")
        let before = snapshot(slot)
        tc.learningRate = 3e38
        #expect {
            _ = try m.trainStep(inputIDs: ids, batch: 2, seqLen: 6, config: tc)
        } throws: { e in
            guard case PEFTKitError.numerical(let msg) = e else { return false }
            return msg.contains("would make a weight non-finite")
        }
        let after = snapshot(slot)
        #expect(before.p == after.p && before.m == after.m && before.v == after.v && before.step == after.step)
        tc.learningRate = 1e-2
        #expect(try m.trainStep(inputIDs: ids, batch: 2, seqLen: 6, config: tc).step == 2)
    }

    /// The guard answers exactly what adamwUpdate does: over random data, some steps overflowing and some not.
    @Test func guardAgreesWithTheKernel() {
        var rng = Rng(seed: 7)
        var outcomes = Set<Bool>()
        for trial in 0..<200 {
            let n = 64
            let gScale = Float(pow(10, Double(trial % 23)))
            var p = (0..<n).map { _ in rng.normal() * 1e3 }, g = (0..<n).map { _ in rng.normal() * gScale }
            var mm = (0..<n).map { _ in rng.normal() }, vv = (0..<n).map { _ in abs(rng.normal()) }
            let lr = pow(10, Double(trial % 40) - 2)
            let says = adamwUpdateStaysFinite(p, g, mm, vv, n, lr: lr, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.01, step: 1 + trial % 5)
            adamwUpdate(&p, &g, &mm, &vv, n, lr: lr, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.01, step: 1 + trial % 5)
            let finite = (p + mm + vv).allSatisfy(\.isFinite)
            #expect(says == finite, "trial \(trial), lr \(lr)")
            outcomes.insert(says)
        }
        #expect(outcomes.count == 2, "both finite and overflowing updates were tried")
    }
}

/// An adapter folder's files are replaced together (one atomic folder swap); the folder's other files stay,
/// staging folders of interrupted saves are cleaned up, and folders the swap cannot handle still save.
@Suite struct FolderReplacement {
    static func files(_ dir: String) -> [String] { (directoryEntries(dir) ?? []).map(\.name).sorted() }

    @Test func replacesTheFilesTogetherKeepingOtherFiles() throws {
        let root = TS.tempDir()
        let dir = root + "/adapter"
        let m = try Model.create(config: TS.tinyConfig(.gpt2), seed: 1)
        var l = LoRAConfig(); l.rank = 2
        try m.attachAdapter(name: "a", config: .lora(l))
        try m.saveAdapter(name: "a", to: dir)
        #expect(FolderReplacement.files(dir) == ["adapter_config.json", "adapter_model.safetensors"])
        try writeFileAtomically(path: dir + "/README.md", bytes: Array("notes".utf8))
        // A staging folder left by a save that was killed.
        #expect(mkdir(root + "/.adapter.peftkit-new-zzzzzz", 0o755) == 0)
        try writeFileAtomically(path: root + "/.adapter.peftkit-new-zzzzzz/adapter_config.json", bytes: [1])
        var ino = stat()
        #expect(stat(dir, &ino) == 0)
        let before = ino.st_ino
        let old = try readWholeFile(path: dir + "/adapter_config.json")
        l.rank = 3
        try m.attachAdapter(name: "b", config: .lora(l))
        try m.saveAdapter(name: "b", to: dir)
        #expect(try readWholeFile(path: dir + "/adapter_config.json") != old)
        #expect(try readWholeFile(path: dir + "/README.md") == Array("notes".utf8))
        #expect(FolderReplacement.files(dir) == ["README.md", "adapter_config.json", "adapter_model.safetensors"])
        #expect(FolderReplacement.files(root) == ["adapter"], "no staging folder is left behind")
        #expect(stat(dir, &ino) == 0 && ino.st_ino != before, "the folder itself was swapped")
        #expect(try m.adapterParameterCount(name: try m.loadAdapter(from: dir, name: "c")) == m.adapterParameterCount(name: "b"))
        // With a subfolder inside, files are replaced one by one, still each atomically.
        try createDirectory(path: dir + "/sub")
        try m.saveAdapter(name: "a", to: dir)
        #expect(FolderReplacement.files(dir) == ["README.md", "adapter_config.json", "adapter_model.safetensors", "sub"])
        #expect(try m.adapterParameterCount(name: try m.loadAdapter(from: dir, name: "d")) == m.adapterParameterCount(name: "a"))
        // A file where the folder should be is an error, and stays.
        try writeFileAtomically(path: root + "/file", bytes: [7])
        #expect(throws: PEFTKitError.self) { try m.saveAdapter(name: "a", to: root + "/file") }
        #expect(try readWholeFile(path: root + "/file") == [7])
    }
}
