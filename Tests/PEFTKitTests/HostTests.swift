// Host capabilities: adapter tensor access, forward outputs (token log-probabilities, row losses, last-position
// logits), progress and cancellation of loads and train steps, and the busy error.

import Foundation
import Testing
@testable import PEFTKit

@Suite struct HostTests {
    static let lora = #"{"peft_type": "LORA", "r": 4, "lora_alpha": 8, "target_modules": ["c_attn"], "seed": 5}"#

    static func model(_ arch: Architecture = .gpt2, adapter json: String? = lora) throws -> Model {
        let m = try Model.create(config: TS.tinyConfig(arch), seed: 11)
        if let json {
            try m.attachAdapter(name: "a", configJSON: json)
            try m.setActiveAdapter("a")
        }
        return m
    }

    static func trainConfig() -> TrainConfig {
        var tc = TrainConfig()
        tc.learningRate = 1e-2
        return tc
    }

    // MARK: tensors

    /// The tensors listed are the saved file's, with its shapes; what a read returns is what the file holds, and
    /// values written land in the file a save writes.
    @Test func tensorRoundTripThroughTheSavedFile() throws {
        let m = try Self.model()
        _ = try m.trainStep(inputIDs: TS.ids(12, vocab: 37, seed: 1), batch: 2, seqLen: 6, config: Self.trainConfig())
        let infos = try m.adapterTensors(name: "a")
        #expect(infos.count == 4)  // lora_A and lora_B of c_attn in 2 layers
        #expect(infos.allSatisfy { $0.writable })
        let dir = TS.tempDir()
        try m.saveAdapter(name: "a", to: dir)
        let st = try SafeTensorsFile(path: dir + "/adapter_model.safetensors")
        #expect(Set(st.names) == Set(infos.map { $0.name }))
        for info in infos {
            #expect(st.info(info.name)?.shape == info.shape)
            let t = try st.tensor(info.name)
            #expect(try m.readAdapterTensor(adapter: "a", tensor: info.name) == Array(UnsafeBufferPointer(start: t.data, count: t.count)))
        }
        // Write new values into every tensor; the next save holds them.
        var written: [String: [Float]] = [:]
        for (k, info) in infos.enumerated() {
            let v = (0..<info.count).map { Float($0 % 7) * 0.01 - Float(k) * 0.1 }
            try m.writeAdapterTensor(adapter: "a", tensor: info.name, values: v)
            written[info.name] = v
        }
        let dir2 = TS.tempDir()
        try m.saveAdapter(name: "a", to: dir2)
        let st2 = try SafeTensorsFile(path: dir2 + "/adapter_model.safetensors")
        for (name, v) in written {
            let t = try st2.tensor(name)
            #expect(Array(UnsafeBufferPointer(start: t.data, count: t.count)) == v)
            #expect(try m.readAdapterTensor(adapter: "a", tensor: name) == v)
        }
    }

    /// A write changes what the model computes (no stale cache): the logits equal those of the same adapter loaded
    /// from a file holding the written values.
    @Test func writeChangesTheForwardPass() throws {
        let m = try Self.model()
        let ids = TS.ids(8, vocab: 37, seed: 2)
        let before = try m.forward(inputIDs: ids, batch: 1, seqLen: 8).logits
        let b = try m.adapterTensors(name: "a").first { $0.name.hasSuffix("lora_B.weight") }!
        try m.writeAdapterTensor(adapter: "a", tensor: b.name, values: (0..<b.count).map { Float($0 % 5) * 0.05 })
        let after = try m.forward(inputIDs: ids, batch: 1, seqLen: 8).logits
        #expect(TS.maxAbsDiff(before, after) > 1e-4)
        let dir = TS.tempDir()
        try m.saveAdapter(name: "a", to: dir)
        let other = try Self.model(adapter: nil)
        let n = try other.loadAdapter(from: dir, name: "b")
        try other.setActiveAdapter(n)
        #expect(TS.maxAbsDiff(after, try other.forward(inputIDs: ids, batch: 1, seqLen: 8).logits) == 0)
    }

    @Test func badWritesChangeNothing() throws {
        let m = try Self.model()
        let t = try m.adapterTensors(name: "a")[0]
        let old = try m.readAdapterTensor(adapter: "a", tensor: t.name)
        var bad = [Float](repeating: 0.5, count: t.count)
        bad[3] = .nan
        #expect(throws: PEFTKitError.self) { try m.writeAdapterTensor(adapter: "a", tensor: t.name, values: bad) }
        bad[3] = .infinity
        #expect(throws: PEFTKitError.self) { try m.writeAdapterTensor(adapter: "a", tensor: t.name, values: bad) }
        #expect(throws: PEFTKitError.self) { try m.writeAdapterTensor(adapter: "a", tensor: t.name, values: [Float](repeating: 0, count: t.count - 1)) }
        do {
            try m.writeAdapterTensor(adapter: "a", tensor: "nope", values: [1])
            Issue.record("an unknown tensor was written")
        } catch PEFTKitError.notFound {}
        #expect(throws: PEFTKitError.self) { try m.adapterTensors(name: "missing") }
        #expect(try m.readAdapterTensor(adapter: "a", tensor: t.name) == old)
        // Merged: refused (the base weights hold the old values).
        try m.mergeAdapter(name: "a")
        do {
            try m.writeAdapterTensor(adapter: "a", tensor: t.name, values: old)
            Issue.record("a write into a merged adapter succeeded")
        } catch PEFTKitError.state {}
    }

    /// A projected prefix saves its MLP's output: listed, readable, not writable.
    @Test func derivedTensorsAreReadOnly() throws {
        let m = try Self.model(adapter: #"{"peft_type": "PREFIX_TUNING", "num_virtual_tokens": 3, "prefix_projection": true, "encoder_hidden_size": 8}"#)
        let infos = try m.adapterTensors(name: "a")
        #expect(infos.count == 1 && !infos[0].writable)
        let v = try m.readAdapterTensor(adapter: "a", tensor: infos[0].name)
        #expect(v.count == infos[0].count)
        do {
            try m.writeAdapterTensor(adapter: "a", tensor: infos[0].name, values: v)
            Issue.record("a derived tensor was written")
        } catch PEFTKitError.unsupported {}
    }

    // MARK: forward outputs

    /// log p of each label equals the log-softmax of the full logits at the previous position; the row losses
    /// weighted by their token counts give the batch loss; last-position logits are the full logits' last rows.
    @Test(arguments: [nil, #"{"peft_type": "PROMPT_TUNING", "num_virtual_tokens": 3}"#])
    func forwardOutputsAgreeWithTheFullLogits(adapter: String?) throws {
        let m = try Self.model(adapter: adapter ?? Self.lora)
        let (B, T, V) = (3, 7, 37)
        let ids = TS.ids(B * T, vocab: V, seed: 4)
        var labels = ids
        labels[2] = -100; labels[T + 5] = -100
        for t in 0..<T { labels[2 * T + t] = -100 }  // a row that counts nothing
        let (full, whole) = try m.forward(inputIDs: ids, labels: labels, batch: B, seqLen: T)
        let virtual = adapter != nil
        let r = try m.score(inputIDs: ids, labels: labels, batch: B, seqLen: T, logits: .last)
        #expect(r.loss == whole.loss && r.tokens == whole.tokens)
        var weighted = 0.0
        for b in 0..<B {
            var count = 0
            for t in 0..<T {
                let lab = labels[b * T + t]
                let scored = lab != -100 && (t > 0 || virtual)
                if scored { count += 1 }
                let got = r.tokenLogprobs[b * T + t]
                if !scored || t == 0 {  // t = 0 is scored from the last virtual token, whose logits are not returned
                    if !scored { #expect(got == 0) }
                    continue
                }
                let row = Array(full[((b * T + t - 1) * V)..<((b * T + t) * V)])
                let mx = row.max()!
                let lse = Double(mx) + log(row.reduce(0.0) { $0 + exp(Double($1 - mx)) })
                #expect(abs(Double(got) - (Double(row[Int(lab)]) - lse)) < 1e-5)
            }
            #expect(r.rowTokens[b] == count)
            let meanFromTokens = count == 0 ? 0 : -r.tokenLogprobs[(b * T)..<((b + 1) * T)].reduce(0, +) / Float(count)
            #expect(abs(r.rowLosses[b] - meanFromTokens) < 1e-5)
            weighted += Double(r.rowLosses[b]) * Double(count)
        }
        #expect(r.rowLosses[2] == 0 && r.rowTokens[2] == 0)
        #expect(abs(weighted / Double(whole.tokens) - Double(whole.loss)) < 1e-5)
        for b in 0..<B {
            #expect(Array(r.logits[(b * V)..<((b + 1) * V)]) == Array(full[((b * T + T - 1) * V)..<((b * T + T) * V)]))
        }
    }

    /// Last-position logits without any loss output run the head on the last rows only, with the same values.
    @Test func lastLogitsWithoutLoss() throws {
        let m = try Self.model()
        let (B, T, V) = (2, 9, 37)
        let ids = TS.ids(B * T, vocab: V, seed: 6)
        let (full, _) = try m.forward(inputIDs: ids, batch: B, seqLen: T)
        var last = [Float](repeating: .nan, count: B * V)
        let r = try ids.withUnsafeBufferPointer { ip in
            try last.withUnsafeMutableBufferPointer { lp in
                try m.forward(inputIDs: ip, batch: B, seqLen: T, outputs: ForwardOutputs(logitsMode: .last, logits: lp, computeLoss: false))
            }
        }
        #expect(r.loss == 0 && r.tokens == B * (T - 1))
        // (One row goes through a matrix-vector product, many through a matrix product: equal to rounding.)
        for b in 0..<B { #expect(TS.maxAbsDiff(Array(last[(b * V)..<((b + 1) * V)]), Array(full[((b * T + T - 1) * V)..<((b * T + T) * V)])) < 1e-6) }
        // Logits with mode none, or a buffer too small: refused.
        #expect(throws: PEFTKitError.self) {
            try ids.withUnsafeBufferPointer { ip in
                try last.withUnsafeMutableBufferPointer { lp in
                    try m.forward(inputIDs: ip, batch: B, seqLen: T, outputs: ForwardOutputs(logitsMode: .none, logits: lp))
                }
            }
        }
        #expect(throws: PEFTKitError.self) {
            try ids.withUnsafeBufferPointer { ip in
                try last.withUnsafeMutableBufferPointer { lp in
                    try m.forward(inputIDs: ip, batch: B, seqLen: T, outputs: ForwardOutputs(logitsMode: .all, logits: lp))
                }
            }
        }
    }

    // MARK: progress and cancellation

    @Test func loadReportsProgressAndCancels() throws {
        let path = TS.fixtures + "/gpt2/model"
        var reports: [ProgressReport] = []
        let m = try Model.load(path: path, progress: { reports.append($0); return true })
        #expect(!reports.isEmpty && reports.last!.done == reports.last!.total)
        #expect(zip(reports, reports.dropFirst()).allSatisfy { $0.done < $1.done })
        // Cancelled at every possible point: always `cancelled`, never a model.
        for stop in [1, reports.count / 2, reports.count] {
            var seen = 0
            do {
                _ = try Model.load(path: path, progress: { _ in seen += 1; return seen < stop })
                Issue.record("the load was not cancelled at report \(stop)")
            } catch PEFTKitError.cancelled {}
            #expect(seen == stop)
        }
        // The model loaded with progress is the one loaded without.
        let ids = TS.ids(6, vocab: m.config.vocabSize, seed: 1)
        #expect(try m.forward(inputIDs: ids, batch: 1, seqLen: 6).logits == (try Model.load(path: path).forward(inputIDs: ids, batch: 1, seqLen: 6).logits))
    }

    @Test func ggufLoadCancels() throws {
        let path = TS.fixtures + "/quant_llama/tiny_q4_0.gguf"
        var total = 0
        _ = try Model.load(path: path, progress: { total = $0.total; return true })
        #expect(total > 0)
        do {
            _ = try Model.load(path: path, progress: { $0.done < 2 })
            Issue.record("the load was not cancelled")
        } catch PEFTKitError.cancelled {}
    }

    /// A cancelled train step leaves weights, AdamW moments, step count and dropout state as they were: the next
    /// steps give exactly what a model that was never cancelled gives.
    @Test(arguments: [0, 1])
    func cancelledTrainStepChangesNothing(microBatch: Int) throws {
        let json = #"{"peft_type": "LORA", "r": 4, "lora_alpha": 8, "lora_dropout": 0.1, "target_modules": ["c_attn"], "seed": 5}"#
        let m = try Self.model(adapter: json), ref = try Self.model(adapter: json)
        var tc = Self.trainConfig()
        tc.microBatchSize = microBatch == 0 ? 0 : 2
        let ids = TS.ids(4 * 6, vocab: 37, seed: 8)
        _ = try m.trainStep(inputIDs: ids, batch: 4, seqLen: 6, config: tc)
        _ = try ref.trainStep(inputIDs: ids, batch: 4, seqLen: 6, config: tc)
        let weights = try m.withTrainableParameters { Array($0) }
        var reports: [ProgressReport] = []
        try m.setProgressHandler { reports.append($0); return true }
        // (The reference computes the same gradients: both draw the same dropout masks.)
        for model in [m, ref] {
            _ = try ids.withUnsafeBufferPointer { try model.computeGradients(inputIDs: $0, batch: 4, seqLen: 6, config: tc) }
        }
        let total = reports.last!.total
        #expect(reports.last!.done == total && total == (microBatch == 0 ? 1 : 2) * 3)
        for stop in 1...total {
            var seen = 0
            try m.setProgressHandler { _ in seen += 1; return seen < stop }
            do {
                _ = try m.trainStep(inputIDs: ids, batch: 4, seqLen: 6, config: tc)
                Issue.record("the step was not cancelled at report \(stop)")
            } catch PEFTKitError.cancelled {}
            #expect(try m.withTrainableParameters { Array($0) } == weights)
            #expect(try m.withGradients { g in g.allSatisfy { $0 == 0 } })
            #expect(throws: PEFTKitError.self) { try m.applyGradients(config: tc) }
        }
        try m.setProgressHandler(nil)
        for _ in 0..<2 {
            let a = try m.trainStep(inputIDs: ids, batch: 4, seqLen: 6, config: tc)
            let b = try ref.trainStep(inputIDs: ids, batch: 4, seqLen: 6, config: tc)
            #expect(a == b)
        }
        #expect(try m.withTrainableParameters { Array($0) } == (try ref.withTrainableParameters { Array($0) }))
    }

    /// The model is in use while its handler runs: a call from there is `busy` (a distinct case), never a deadlock.
    @Test func callsFromTheHandlerAreBusy() throws {
        let m = try Self.model()
        nonisolated(unsafe) let model = m
        var errors: [PEFTKitError] = []
        try m.setProgressHandler { _ in
            do { _ = try model.adapterTensors(name: "a") } catch let e as PEFTKitError { errors.append(e) } catch {}
            return true
        }
        _ = try m.trainStep(inputIDs: TS.ids(12, vocab: 37, seed: 1), batch: 2, seqLen: 6, config: Self.trainConfig())
        #expect(!errors.isEmpty)
        #expect(errors.allSatisfy { if case .busy = $0 { return true } else { return false } })
    }
}
