import Testing
@testable import PEFTKit
#if canImport(Glibc)
import Glibc
#endif

/// DPO and ORPO: parity with the formulas written in PyTorch (scripts/make_preference_fixtures.py), finite
/// differences of the preference loss over every adapter method, refusals, data encoding and a CLI smoke run.
@Suite struct Preference {
    static func fixtureBatch(_ r: Parity.Ref) throws -> PreferenceBatch {
        let c = try r.i("chosen"), rj = try r.i("rejected")
        let cm = try r.i("chosen_mask"), rm = try r.i("rejected_mask")
        return PreferenceBatch(chosen: c, chosenMask: cm, rejected: rj, rejectedMask: rm, pairs: 2, seqLen: c.count / 2)
    }

    /// Max |a − b| ≤ rel · max |b|.
    static func rel(_ what: String, _ got: [Float], _ want: [Float], _ rel: Float) -> Bool {
        guard got.count == want.count else { print("\(what): size \(got.count) vs \(want.count)"); return false }
        let d = TS.maxAbsDiff(got, want), s = TS.maxAbs(want)
        print("\(what): max |diff| = \(d), max |ref| = \(s), relative \(d / max(s, 1e-30))")
        return s > 0 && d <= rel * s
    }

    @Test(arguments: ["gpt2", "llama"], ["dpo", "orpo"])
    func lossAndGradientsMatchPyTorch(_ arch: String, _ objective: String) throws {
        let r = try Parity.ref("preference/\(arch).safetensors")
        let m = try Model.load(path: TS.fixtures + "/\(arch)/model")
        let name = try m.loadAdapter(from: PEFTParity.dir(arch, "lora") + "/adapter")
        try m.setActiveAdapter(name)
        let slot = try m.engine.adapter(named: name)
        let layout = try #require(slot.adapter as? SavableAdapter).fileTensorSlots(name: name)
        for e in layout {
            let v = try r.f("init." + PEFTParity.paramName(e.name, kind: "lora"))
            #expect(v.count == e.shape.reduce(1, *))
            (slot.adapter.params.floats + e.offset).update(from: v, count: v.count)
        }
        slot.adapter.parametersChanged()
        let obj: PreferenceObjective = objective == "dpo" ? .dpo(beta: 0.1) : .orpo(lambda: 0.5)
        let stats = try m.computePreferenceGradients(try Preference.fixtureBatch(r), objective: obj, config: TrainConfig())
        #expect(Preference.rel("\(arch) \(objective) loss", [stats.loss], try r.f("\(objective).loss"), 1e-5))
        if objective == "dpo" {
            let rc = try r.f("dpo.chosen_reward"), rr = try r.f("dpo.rejected_reward")
            #expect(Preference.rel("chosen reward", [stats.chosenReward], [(rc[0] + rc[1]) / 2], 1e-4))
            #expect(Preference.rel("margin", [stats.rewardMargin], [(rc[0] - rr[0] + rc[1] - rr[1]) / 2], 1e-4))
            let acc = Float(zip(rc, rr).filter { $0 > $1 }.count) / 2
            #expect(stats.accuracy == acc)
        } else {
            #expect(Preference.rel("nll", [stats.nll], try r.f("orpo.nll"), 1e-5))
            #expect(Preference.rel("log odds ratio", [stats.logOddsRatio], try r.f("orpo.log_odds_ratio"), 1e-5))
        }
        var all: [Float] = [], want: [Float] = []
        for e in layout {
            let g = Array(UnsafeBufferPointer(start: slot.opt.grads.floats + e.offset, count: e.shape.reduce(1, *)))
            let w = try r.f("\(objective).grad." + PEFTParity.paramName(e.name, kind: "lora"))
            #expect(Preference.rel("\(arch) \(objective) grad \(e.name)", g, w, 2e-5))
            all += g; want += w
        }
        #expect(Preference.rel("\(arch) \(objective) all LoRA gradients", all, want, 1e-5))
    }

    static let fdCases = methodCases.filter { $0.arch != .bert }.flatMap { mc in ["dpo", "orpo"].map { (mc, $0) } }

    /// The preference loss's gradient against central differences of the loss, for every decoder method of the
    /// shared matrix (virtual tokens, prefixes, DoRA included).
    @Test(arguments: fdCases)
    func gradientsMatchFiniteDifferences(_ mc: MethodCase, _ objective: String) throws {
        let cfg = TS.tinyConfig(mc.arch)
        let model = try Model.create(config: cfg, seed: 11, initStd: 0.1)
        try model.attachAdapter(name: "a", config: mc.config(mc.arch))
        try model.setActiveAdapter("a")
        let slot = try model.engine.adapter(named: "a")
        var rng = Rng(seed: 3)
        let p = slot.adapter.params.floats
        for i in 0..<slot.parameterCount { p[i] += 0.3 * rng.normal() }
        slot.adapter.parametersChanged()
        let T = 7
        let c = TS.ids(2 * T, vocab: cfg.vocabSize, seed: 1), rj = TS.ids(2 * T, vocab: cfg.vocabSize, seed: 2)
        let cm: [Int32] = [0, 0, 0, 1, 1, 1, 0, 0, 0, 1, 1, 1, 1, 1], rm: [Int32] = [0, 0, 0, 1, 1, 0, 0, 0, 0, 1, 1, 1, 1, 0]
        let batch = PreferenceBatch(chosen: c, chosenMask: cm, rejected: rj, rejectedMask: rm, pairs: 2, seqLen: T)
        // A large beta makes the DPO loss depend strongly on the adapter.
        let obj: PreferenceObjective = objective == "dpo" ? .dpo(beta: 2) : .orpo(lambda: 1)
        var tc = TrainConfig(); tc.microBatchSize = 1
        _ = try model.computePreferenceGradients(batch, objective: obj, config: tc)
        (slot.adapter as? LoRAAdapter)?.dora?.holdNorms = true
        let g = Array(UnsafeBufferPointer(start: slot.opt.grads.floats, count: slot.parameterCount))
        func loss() throws -> Double {
            slot.adapter.parametersChanged()
            return Double(try model.computePreferenceGradients(batch, objective: obj, config: TrainConfig()).loss)
        }
        var maxErr = 0.0, maxG = 0.0
        for _ in 0..<30 {
            let i = Int(rng.nextUInt64() % UInt64(slot.parameterCount))
            let old = p[i]
            p[i] = old + 2e-3; let lp = try loss()
            p[i] = old - 2e-3; let lm = try loss()
            p[i] = old
            let num = (lp - lm) / 4e-3
            maxErr = max(maxErr, abs(num - Double(g[i])))
            maxG = max(maxG, abs(num))
        }
        print("\(mc) \(objective): max |fd - analytic| = \(maxErr), max |grad| = \(maxG)")
        #expect(maxG > 1e-4)
        #expect(maxErr < 3e-3 * max(0.1, maxG))
    }

    static func tinyModel() throws -> (Model, PreferenceBatch) {
        let cfg = TS.tinyConfig(.llama)
        let m = try Model.create(config: cfg, seed: 5, initStd: 0.1)
        try m.attachAdapter(name: "a", config: .lora(LoRAConfig()))
        try m.setActiveAdapter("a")
        let T = 6
        let b = PreferenceBatch(chosen: TS.ids(2 * T, vocab: 37, seed: 1), chosenMask: [0, 0, 1, 1, 1, 0, 0, 0, 1, 1, 0, 0],
                                rejected: TS.ids(2 * T, vocab: 37, seed: 2), rejectedMask: [0, 0, 1, 1, 0, 0, 0, 0, 1, 1, 1, 1],
                                pairs: 2, seqLen: T)
        return (m, b)
    }

    /// A few DPO steps raise the reward margin and the accuracy; the base weights never move; ORPO lowers its loss.
    @Test func trainingRaisesTheMargin() throws {
        let (m, b) = try Preference.tinyModel()
        let base = m.engine.weights.named.map { $0.tensor.toArray() }
        var tc = TrainConfig(); tc.learningRate = 2e-2; tc.schedule = .constant
        var margins: [Float] = []
        for _ in 0..<8 { margins.append(try m.preferenceStep(b, objective: .dpo(beta: 0.5), config: tc).stats.rewardMargin) }
        #expect(abs(margins.first!) < 1e-5, "LoRA starts at B = 0: policy = reference")
        #expect(margins.last! > margins.first! + 0.1, "\(margins)")
        #expect(m.engine.weights.named.map { $0.tensor.toArray() } == base)
        var losses: [Float] = []
        for _ in 0..<8 { losses.append(try m.preferenceStep(b, objective: .orpo(lambda: 0.5), config: tc).stats.loss) }
        #expect(losses.last! < losses.first!, "\(losses)")
    }

    /// Micro-batches of pairs give the gradient of the whole batch.
    @Test func microBatchesGiveTheSameGradient() throws {
        for obj in [PreferenceObjective.dpo(beta: 0.3), .orpo(lambda: 0.2)] {
            let (m, b) = try Preference.tinyModel()
            let slot = try m.engine.adapter(named: "a")
            TS.perturb(slot, seed: 9)
            let whole = try m.computePreferenceGradients(b, objective: obj, config: TrainConfig())
            let g1 = Array(UnsafeBufferPointer(start: slot.opt.grads.floats, count: slot.parameterCount))
            for mb in [1, 3] {
                var tc = TrainConfig(); tc.microBatchSize = mb
                let split = try m.computePreferenceGradients(b, objective: obj, config: tc)
                let g2 = Array(UnsafeBufferPointer(start: slot.opt.grads.floats, count: slot.parameterCount))
                #expect(abs(whole.loss - split.loss) <= 1e-6 * abs(whole.loss))
                #expect(TS.maxAbsDiff(g1, g2) <= 1e-5 * max(TS.maxAbs(g1), 1e-6))
            }
        }
    }

    /// Bad input is refused with a message and changes nothing.
    @Test func refusals() throws {
        let (m, b) = try Preference.tinyModel()
        let slot = try m.engine.adapter(named: "a")
        let p0 = Array(UnsafeBufferPointer(start: slot.adapter.params.floats, count: slot.parameterCount))
        func refused(_ batch: PreferenceBatch, _ text: String, _ obj: PreferenceObjective = .dpo(beta: 0.1)) {
            do {
                _ = try m.preferenceStep(batch, objective: obj, config: TrainConfig())
                Issue.record("accepted: \(text)")
            } catch let e as PEFTKitError {
                #expect(e.message.contains(text), "\(e.message)")
            } catch { Issue.record("\(error)") }
        }
        var x = b; x.chosenMask[3] = 2
        refused(x, "masks hold 0 or 1")
        x = b; x.rejectedMask.removeLast()
        refused(x, "masks hold")
        x = b; x.chosenMask = [Int32](repeating: 0, count: 12); x.chosenMask[0] = 1
        refused(x, "has no response token")
        x = b; x.rejected[4] = 37
        refused(x, "outside the vocabulary")
        x = b; x.chosen[0] = -1
        refused(x, "outside the vocabulary")
        refused(b, "beta must be positive", .dpo(beta: 0))
        refused(b, "beta must be positive", .dpo(beta: .nan))
        refused(b, "lambda must be non-negative", .orpo(lambda: -1))
        refused(PreferenceBatch(chosen: [], chosenMask: [], rejected: [], rejectedMask: [], pairs: 0, seqLen: 6), "at least one pair")
        try m.setActiveAdapter(nil)
        refused(b, "no active adapter")
        let unchanged = p0 == Array(UnsafeBufferPointer(start: slot.adapter.params.floats, count: slot.parameterCount))
        #expect(unchanged)
        #expect(slot.opt.step == 0)
    }

    @Test func dataRecordsEncode() throws {
        let dir = TS.fixtures + "/tokenizer/tiny"
        let tok = try Tokenizer(tokenizerJSON: dir + "/tokenizer.json")
        let chat = try ChatTemplate(tokenizerConfig: dir + "/tokenizer_config.json")
        let recs = try PreferenceDataset.parse("""
            {"prompt": "hi", "chosen": "yes", "rejected": "no"}

            {"prompt": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}, {"role": "user", "content": "c"}], "chosen": {"role": "assistant", "content": "good"}, "rejected": [{"role": "assistant", "content": "bad"}]}
            """)
        #expect(recs == [.text(prompt: "hi", chosen: "yes", rejected: "no"),
                         .chat(prompt: [ChatMessage(role: "user", content: "a"), ChatMessage(role: "assistant", content: "b"),
                                        ChatMessage(role: "user", content: "c")], chosen: "good", rejected: "bad")])
        let enc = DatasetEncoder(tokenizer: tok, chatTemplate: chat)
        let e = try enc.encode(recs[1])
        // Only the final reply counts: the earlier assistant turn "b" is context.
        let sft = try enc.encode(DatasetRecord.chat([ChatMessage(role: "user", content: "a"), ChatMessage(role: "assistant", content: "b"),
                                                     ChatMessage(role: "user", content: "c"), ChatMessage(role: "assistant", content: "good")]))
        #expect(e.chosen.inputIDs == sft.inputIDs)
        #expect(e.chosen.trainedTokens > 0 && e.chosen.trainedTokens < sft.trainedTokens)
        let trained = e.chosen.labels.filter { $0 != -100 }
        #expect(try tok.decode(trained).hasPrefix("good"))
        let batch = try PreferenceBatch([try enc.encode(recs[0]), e], seqLen: 400, padID: 0)
        #expect(batch.pairs == 2 && batch.chosen.count == 800 && batch.chosenMask.count == 800)
        #expect(throws: PEFTKitError.self) { try PreferenceBatch([e], seqLen: 3, padID: 0) }
        for bad in [#"{"prompt": "x", "chosen": "y"}"#, #"{"prompt": "x", "chosen": "", "rejected": "z"}"#,
                    #"{"prompt": "x", "chosen": {"role": "user", "content": "y"}, "rejected": "z"}"#, #"{"chosen": "y", "rejected": "z"}"#] {
            #expect(throws: PEFTKitError.self) { try PreferenceDataset.parse(bad) }
        }
    }

    /// `peftkit-cli train --objective dpo` on the llama fixture (with the tiny tokenizer): the reward margin in the
    /// progress lines grows over a few steps.
    @Test func cliRewardMarginGrows() throws {
        let exe = Preference.cliPath()
        guard access(exe, X_OK) == 0 else {
            Issue.record("peftkit-cli not found next to the test bundle (\(exe)): build it with `swift build`")
            return
        }
        let dir = TS.tempDir()
        mkdir(dir + "/model", 0o755)
        for (src, name) in [("/llama/model/config.json", "config.json"), ("/llama/model/model.safetensors", "model.safetensors"),
                            ("/tokenizer/tiny/tokenizer.json", "tokenizer.json"), ("/tokenizer/tiny/tokenizer_config.json", "tokenizer_config.json")] {
            symlink(TS.fixtures + src, dir + "/model/" + name)
        }
        var lines: [String] = []
        for i in 0..<8 {
            let p = ["a b", "c d", "e f", "g h"][i % 4]
            lines.append(#"{"prompt": "\#(p)", "chosen": "yes yes", "rejected": "no"}"#)
        }
        try writeFileAtomically(path: dir + "/prefs.jsonl", bytes: Array(lines.joined(separator: "\n").utf8))
        let out = try Preference.run(exe, ["train", "--model", dir + "/model", "--objective", "dpo", "--beta", "0.5",
                                           "--data", dir + "/prefs.jsonl", "--out", dir + "/out", "--steps", "6", "--batch", "4",
                                           "--lr", "0.02", "--schedule", "constant", "--method", "lora", "--rank", "4"])
        var margins: [Float] = []
        for line in out.split(whereSeparator: { $0 == "\n" }).map({ String($0) }) where line.hasPrefix("step ") {
            let words = line.split(separator: " ").map { String($0.filter { $0 != "," }) }
            if let k = words.firstIndex(of: "margin"), k + 1 < words.count, let v = Float(words[k + 1]) { margins.append(v) }
        }
        print(out)
        #expect(margins.count == 6, "\(out)")
        if let f = margins.first, let l = margins.last { #expect(l > f, "\(margins)") }
        #expect(access(dir + "/out/adapter_model.safetensors", R_OK) == 0)
    }

    static func cliPath() -> String {
        var buf = [CChar](repeating: 0, count: 4096)
        let n = readlink("/proc/self/exe", &buf, buf.count - 1)
        let exe = n > 0 ? String(decoding: buf[..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self) : ""
        var parts = exe.split(separator: "/", omittingEmptySubsequences: false)
        while let last = parts.last, !last.hasSuffix(".xctest") && parts.count > 1 { parts.removeLast() }
        parts.removeLast()
        return parts.joined(separator: "/") + "/peftkit-cli"
    }

    /// Runs a command, returns its stdout + stderr; throws when it fails.
    static func run(_ exe: String, _ args: [String]) throws -> String {
        let outPath = TS.tempDir() + "/out.txt"
        let cmd = ([exe] + args).map { "'\($0)'" }.joined(separator: " ") + " > '\(outPath)' 2>&1"
        let status = system(cmd)
        let text = String(decoding: (try? readWholeFile(path: outPath, maxBytes: 1 << 24)) ?? [], as: UTF8.self)
        guard status == 0 else { throw PEFTKitError.state("\(exe) failed (\(status)): \(text)") }
        return text
    }
}
