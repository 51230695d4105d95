import FoundationEssentials
#if canImport(Glibc)
import Glibc
#endif

// Training checkpoints: everything needed to continue training an adapter exactly where it stopped, so that
// the resumed run's losses and weights are bit-identical to an uninterrupted run.
//
// A checkpoint folder holds
//
//     checkpoint.json            the manifest: adapter name, method, its adapter_config.json object (the method's
//                                own schema, as saving writes it), optimiser step, the model's
//                                shape, and the names of the state file and adapter folder that belong to it
//                                (with the state file's size and FNV-1a hash)
//     state-<tag>.safetensors    params, exp_avg (AdamW m) and exp_avg_sq (AdamW v), each flat F32 [P] in the
//                                adapter's parameter layout; training_rng I32 [8] when the method draws random
//                                numbers while training (LoRA dropout); with an encoder's task head (the
//                                manifest's `head`) also head_params, head_exp_avg, head_exp_avg_sq F32 [H]
//                                (weight [K, C] then bias [K])
//     adapter-<tag>/             the same weights in the method's portable format (what saveAdapter writes), so a
//                                checkpoint is also a loadable adapter; absent for methods that cannot be saved
//
// Every file is written atomically (temp file, fsync, rename) and the manifest is replaced last; files of the
// previous checkpoint are deleted only after that. A crash at any moment leaves a manifest naming a complete set:
// the previous checkpoint or the new one. Resuming reads the flat state, not the portable folder: the flat
// block restores the exact parameter layout the moments were accumulated in, for every method.
//
// One writer per folder at a time: two processes saving into the same folder may delete each other's files.

extension Rng {
    /// The generator's four state words.
    var words: [UInt64] { [s0, s1, s2, s3] }

    /// A generator continuing exactly from `words` (as returned by `words`).
    init?(words w: [UInt64]) {
        guard w.count == 4, w.contains(where: { $0 != 0 }) else { return nil }  // all-zero is a fixed point
        self.init(seed: 0)
        s0 = w[0]; s1 = w[1]; s2 = w[2]; s3 = w[3]
    }
}

// MARK: - Manifest

/// An encoder's task head trained with the adapter (`AdapterSlot.head`): what it computes and its shape.
struct CheckpointHead: Codable, Equatable {
    /// `HeadKind`'s raw value.
    var kind: String
    var outputs: Int
    var features: Int
}

/// Where the flat optimiser state lives, with what proves it is the file the manifest was written for.
struct CheckpointStateRef: Codable, Equatable {
    var file: String
    var bytes: Int
    /// FNV-1a 64 of the whole file, 16 lowercase hex digits.
    var fnv1a64: String
}

struct CheckpointManifest: Codable {
    static let formatName = "peftkit-checkpoint"
    /// 2: the adapter's configuration is its `adapter_config.json` object (1 had one mirror struct per method).
    static let currentVersion = 2

    var format: String
    var version: Int
    var name: String
    var method: String
    var step: Int
    var parameterCount: Int
    var model: ModelConfig
    /// The adapter's configuration in its method's file schema (what `adapter_config.json` holds).
    var config: JSONValue
    var state: CheckpointStateRef
    /// The portable adapter folder inside the checkpoint folder, if the method could be saved.
    var adapter: String?
    /// The adapter's task head, if it has one (absent in older manifests: no head).
    var head: CheckpointHead?

    /// The adapter configuration the manifest describes; `source` names the file in messages.
    func adapterConfig(model: ModelConfig, context: AdapterContext, source: String) throws -> AdapterConfig {
        guard let method = AdapterMethod(rawValue: method) else {
            throw PEFTKitError.unsupported("\(source): adapter method '\(self.method)' is not known to this version of PEFTKit")
        }
        guard case .object(let object) = config else { throw PEFTKitError.format("\(source): 'config' is not an object") }
        let c: AdapterConfig
        do {
            c = try AdapterRegistry.parse(object, model: model, context: context, source: source)
        } catch PEFTKitError.invalidArgument(let message) {
            throw PEFTKitError.format("\(source): the stored adapter configuration is invalid for this model: \(message)")
        } catch PEFTKitError.unsupported(let message) {
            throw PEFTKitError.format("\(source): the stored adapter configuration cannot be read: \(message)")
        }
        guard c.method == method else {
            throw PEFTKitError.format("\(source): method '\(method.rawValue)' but the configuration describes a \(c.method.rawValue) adapter")
        }
        return c
    }

    func encoded() throws -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        do {
            return Array(try encoder.encode(self)) + [0x0a]
        } catch {
            throw PEFTKitError.invalidArgument("the checkpoint manifest cannot be written as JSON: \(error)")
        }
    }

    static func decode(_ bytes: [UInt8], source: String) throws -> CheckpointManifest {
        try decodeJSON(CheckpointManifest.self, from: bytes, source: source)
    }
}

/// FNV-1a, 64 bits, of `count` bytes.
func fnv1a64(_ p: UnsafeRawPointer, _ count: Int) -> UInt64 {
    var h: UInt64 = 0xcbf2_9ce4_8422_2325
    let b = p.assumingMemoryBound(to: UInt8.self)
    for i in 0..<max(0, count) {
        h ^= UInt64(b[i])
        h = h &* 0x0000_0100_0000_01b3
    }
    return h
}

func hex16(_ v: UInt64) -> String {
    let s = String(v, radix: 16)
    return String(repeating: "0", count: max(0, 16 - s.count)) + s
}

// MARK: - Save and load

extension Engine {
    static let checkpointManifestFile = "checkpoint.json"
    /// Largest manifest accepted, in bytes.
    static let maxCheckpointManifestBytes = 1 << 20

    /// Writes a training checkpoint of adapter `name` into `directory`; see `Model.saveCheckpoint`.
    func saveCheckpoint(name: String, directory: String) throws {
        let slot = try adapter(named: name)
        let ad = slot.adapter, opt = slot.opt
        guard let savable = ad as? SavableAdapter else {
            throw PEFTKitError.unsupported("checkpoints of \(ad.method.rawValue) adapters are not implemented")
        }
        let fileConfig = JSONValue.object(savable.fileConfig(name: name))
        let P = slot.parameterCount, H = slot.head?.parameterCount ?? 0
        guard isAllFinite(ad.params.floats, P), isAllFinite(opt.m.floats, P + H), isAllFinite(opt.v.floats, P + H),
              slot.head.map({ isAllFinite($0.params, H) }) ?? true else {
            throw PEFTKitError.numerical("adapter '\(name)' holds non-finite weights or optimiser state; "
                + "no checkpoint was written (an existing one is left as it was)")
        }

        let tag = hex16(UInt64.random(in: 1...UInt64.max))
        let stateName = "state-\(tag).safetensors"
        var manifest = CheckpointManifest(
            format: CheckpointManifest.formatName, version: CheckpointManifest.currentVersion, name: name,
            method: ad.method.rawValue, step: opt.step, parameterCount: P, model: self.config, config: fileConfig,
            state: CheckpointStateRef(file: stateName, bytes: 0, fnv1a64: ""), adapter: nil,
            head: slot.head.map { CheckpointHead(kind: $0.kind.rawValue, outputs: $0.outputs, features: $0.head.features) })
        // What is written must read back as the same adapter: the same parameter layout and the same file config.
        let probe = try CheckpointManifest.decode(try manifest.encoded(), source: "checkpoint manifest")
        let again = try AdapterRegistry.make(try probe.adapterConfig(model: self.config, context: adapterContext(), source: "checkpoint manifest"),
                                             model: self.config, context: adapterContext())
        guard again.parameterCount == P, let savedAgain = again as? SavableAdapter,
              JSONValue.object(savedAgain.fileConfig(name: name)) == fileConfig, probe.model == self.config else {
            throw PEFTKitError.unsupported("adapter '\(name)': its configuration does not read back from its own adapter_config.json "
                + "exactly, so it cannot be checkpointed")
        }

        try createDirectory(path: directory)
        let statePath = joinPath(directory, stateName)
        var entries: [SafeTensorsWriter.Entry] = [
            .init(name: "params", shape: [P], payload: .f32Buffer(UnsafeBufferPointer(start: ad.params.floats, count: P))),
            .init(name: "exp_avg", shape: [P], payload: .f32Buffer(UnsafeBufferPointer(start: opt.m.floats, count: P))),
            .init(name: "exp_avg_sq", shape: [P], payload: .f32Buffer(UnsafeBufferPointer(start: opt.v.floats, count: P))),
        ]
        if let head = slot.head {
            // The one optimiser state holds the head's moments after the adapter's.
            entries += [
                .init(name: "head_params", shape: [H], payload: .f32Buffer(UnsafeBufferPointer(start: head.params, count: H))),
                .init(name: "head_exp_avg", shape: [H], payload: .f32Buffer(UnsafeBufferPointer(start: opt.m.floats + P, count: H))),
                .init(name: "head_exp_avg_sq", shape: [H], payload: .f32Buffer(UnsafeBufferPointer(start: opt.v.floats + P, count: H))),
            ]
        }
        if let r = ad as? TrainingRandomState {
            let words = r.trainingRng.words.flatMap { [Int32(truncatingIfNeeded: $0), Int32(truncatingIfNeeded: $0 >> 32)] }
            entries.append(.init(name: "training_rng", shape: [8], payload: .i32(words)))
        }
        try SafeTensorsWriter.write(path: statePath, entries: entries,
                                    metadata: ["format": "peftkit-checkpoint-state", "adapter": name])
        let written = try Storage.map(path: statePath)
        manifest.state.bytes = written.byteCount
        manifest.state.fnv1a64 = hex16(fnv1a64(written.base, written.byteCount))

        // The portable copy, in the method's own format (skipped for methods that cannot be saved yet).
        let adapterDir = "adapter-\(tag)"
        do {
            try saveAdapter(name: name, directory: joinPath(directory, adapterDir))
            manifest.adapter = adapterDir
        } catch PEFTKitError.unsupported {
            removeCheckpointLeftover(joinPath(directory, adapterDir), isDirectory: true)
        }

        // The switch: from here on the folder is the new checkpoint.
        try writeFileAtomically(path: joinPath(directory, Engine.checkpointManifestFile), bytes: try manifest.encoded())
        removeStaleCheckpointFiles(directory: directory, keepTag: tag)
    }

    /// Reads a checkpoint and attaches its adapter with its optimiser state; see `Model.loadCheckpoint`.
    func loadCheckpoint(directory: String) throws -> String {
        let manifestPath = joinPath(directory, Engine.checkpointManifestFile)
        guard pathKind(manifestPath) == .file else {
            throw PEFTKitError.io("'\(directory)' is not a checkpoint folder: it has no \(Engine.checkpointManifestFile)")
        }
        let source = "'\(manifestPath)'"
        let bytes = try readWholeFile(path: manifestPath, maxBytes: Engine.maxCheckpointManifestBytes)
        // Format and version first: another version's manifest has other fields.
        struct Header: Decodable { var format: String; var version: Int }
        let h = try decodeJSON(Header.self, from: bytes, source: source)
        guard h.format == CheckpointManifest.formatName else {
            throw PEFTKitError.format("\(source): format is '\(h.format)', expected '\(CheckpointManifest.formatName)'")
        }
        guard h.version == CheckpointManifest.currentVersion else {
            throw PEFTKitError.unsupported("\(source): checkpoint version \(h.version); this PEFTKit reads version \(CheckpointManifest.currentVersion)")
        }
        let m = try CheckpointManifest.decode(bytes, source: source)
        // Compare with this model's config as it reads back from JSON, so float fields compare exactly.
        var mine = m
        mine.model = config
        let here = try CheckpointManifest.decode(try mine.encoded(), source: "model config").model
        guard m.model == here else {
            throw PEFTKitError.format("\(source): the checkpoint was made for another model (\(m.model.architecture), "
                + "hidden \(m.model.hiddenSize), \(m.model.numLayers) layers, vocab \(m.model.vocabSize)); this model is "
                + "\(config.architecture), hidden \(config.hiddenSize), \(config.numLayers) layers, vocab \(config.vocabSize)")
        }
        guard m.step >= 0 else { throw PEFTKitError.format("\(source): negative step \(m.step)") }
        do {
            try Engine.validateName(m.name)
        } catch PEFTKitError.invalidArgument(let message) {
            throw PEFTKitError.format("\(source): \(message)")
        }
        guard !adapters.contains(where: { $0.name == m.name }) else {
            throw PEFTKitError.state("an adapter named '\(m.name)' is already attached")
        }
        let adapterCfg = try m.adapterConfig(model: config, context: adapterContext(), source: source)
        let ad: Adapter
        do {
            ad = try AdapterRegistry.make(adapterCfg, model: config, context: adapterContext())
        } catch PEFTKitError.invalidArgument(let message) {
            throw PEFTKitError.format("\(source): the stored adapter configuration is invalid for this model: \(message)")
        }
        let P = ad.parameterCount
        guard m.parameterCount == P else {
            throw PEFTKitError.format("\(source): \(m.parameterCount) parameters recorded, the configuration gives \(P)")
        }

        // The state file: the one the manifest names, byte for byte.
        guard isPlainFileName(m.state.file) else {
            throw PEFTKitError.format("\(source): state file '\(m.state.file)' is not a plain file name inside the folder")
        }
        let statePath = joinPath(directory, m.state.file)
        guard pathKind(statePath) == .file else {
            throw PEFTKitError.io("checkpoint state file '\(statePath)' is missing")
        }
        let storage = try Storage.map(path: statePath)
        guard storage.byteCount == m.state.bytes, hex16(fnv1a64(storage.base, storage.byteCount)) == m.state.fnv1a64 else {
            throw PEFTKitError.format("checkpoint state file '\(statePath)' is not the file the manifest was written for "
                + "(size or hash differs: truncated or modified)")
        }
        let st = try SafeTensorsFile(storage: storage, path: statePath)
        func flat(_ key: String, _ P: Int) throws -> Tensor {
            guard let info = st.info(key) else { throw PEFTKitError.format("'\(statePath)' lacks tensor '\(key)'") }
            guard info.dtype == .f32, info.shape == [P] else {
                throw PEFTKitError.format("'\(statePath)': tensor '\(key)' is \(info.dtype.rawValue) \(info.shape), expected F32 [\(P)]")
            }
            return try st.tensor(key)
        }
        // The task head: a kind PEFTKit knows, on an encoder, of this model's width.
        var head: (head: TaskHead, params: Tensor, m: Tensor, v: Tensor)? = nil
        if let h = m.head {
            guard let kind = HeadKind(rawValue: h.kind) else {
                throw PEFTKitError.format("\(source): head kind '\(h.kind)' is not one of \(HeadKind.allCases.map(\.rawValue))")
            }
            guard config.encoder != nil, h.features == config.hiddenSize, h.outputs >= 1, h.outputs <= 1 << 16 else {
                throw PEFTKitError.format("\(source): a head of \(h.outputs) outputs over \(h.features) features does not fit this "
                    + "model (an encoder of hidden size \(config.hiddenSize) takes 1...65536 outputs)")
            }
            let th = try TaskHead(kind: kind, outputs: h.outputs, features: h.features, seed: 0)
            let H = th.parameterCount
            let hp = try flat("head_params", H), hm = try flat("head_exp_avg", H), hv = try flat("head_exp_avg_sq", H)
            guard isAllFinite(hp.data, H), isAllFinite(hm.data, H), isAllFinite(hv.data, H) else {
                throw PEFTKitError.numerical("checkpoint state '\(statePath)' holds non-finite head values")
            }
            for i in 0..<H where hv.data[i] < 0 {
                throw PEFTKitError.format("checkpoint state '\(statePath)': head_exp_avg_sq[\(i)] is negative")
            }
            head = (th, hp, hm, hv)
        }
        let params = try flat("params", P), expAvg = try flat("exp_avg", P), expAvgSq = try flat("exp_avg_sq", P)
        guard isAllFinite(params.data, P), isAllFinite(expAvg.data, P), isAllFinite(expAvgSq.data, P) else {
            throw PEFTKitError.numerical("checkpoint state '\(statePath)' holds non-finite values")
        }
        for i in 0..<P where expAvgSq.data[i] < 0 {
            throw PEFTKitError.format("checkpoint state '\(statePath)': exp_avg_sq[\(i)] is negative")
        }
        var rng: Rng? = nil
        if ad is TrainingRandomState {
            guard let info = st.info("training_rng"), info.dtype == .i32, info.shape == [8] else {
                throw PEFTKitError.format("'\(statePath)' lacks tensor 'training_rng' (I32 [8]) that a \(m.method) adapter needs")
            }
            let w = try st.int32Tensor("training_rng")
            let words = (0..<4).map { UInt64(UInt32(bitPattern: w[2 * $0])) | UInt64(UInt32(bitPattern: w[2 * $0 + 1])) << 32 }
            guard let r = Rng(words: words) else { throw PEFTKitError.format("'\(statePath)': training_rng is all zero") }
            rng = r
        }

        // Everything checked: build the slot, then attach (the only change to the engine).
        let slot = try AdapterSlot(name: m.name, adapter: ad)
        ad.params.floats.update(from: params.data, count: P)
        slot.opt.m.floats.update(from: expAvg.data, count: P)
        slot.opt.v.floats.update(from: expAvgSq.data, count: P)
        if let head {
            let H = head.head.parameterCount
            head.head.params.update(from: head.params.data, count: H)
            try slot.attachHead(head.head)
            slot.opt.m.floats.advanced(by: P).update(from: head.m.data, count: H)
            slot.opt.v.floats.advanced(by: P).update(from: head.v.data, count: H)
        }
        slot.opt.step = m.step
        if let rng, let r = ad as? TrainingRandomState { r.trainingRng = rng }
        ad.parametersChanged()
        try appendSlot(slot)
        return m.name
    }

    /// Best-effort removal of files an older or interrupted save left in a checkpoint folder: state files and
    /// adapter folders of other tags, and temporary files of atomic writes. Only names PEFTKit itself makes.
    func removeStaleCheckpointFiles(directory: String, keepTag tag: String) {
        for entry in listDirectory(directory) {
            if let t = checkpointTag(entry, prefix: "state-", suffix: ".safetensors"), t != tag {
                removeCheckpointLeftover(joinPath(directory, entry), isDirectory: false)
            } else if let t = checkpointTag(entry, prefix: "adapter-", suffix: ""), t != tag {
                removeCheckpointLeftover(joinPath(directory, entry), isDirectory: true)
            } else if entry.hasPrefix(".state-") || entry.hasPrefix(".\(Engine.checkpointManifestFile).tmp-") {
                if entry.contains(".tmp-") { removeCheckpointLeftover(joinPath(directory, entry), isDirectory: false) }
            }
        }
    }

    private func checkpointTag(_ entry: String, prefix: String, suffix: String) -> String? {
        guard entry.hasPrefix(prefix), entry.hasSuffix(suffix) else { return nil }
        let t = entry.dropFirst(prefix.count).dropLast(suffix.count)
        guard t.count == 16, t.allSatisfy({ $0.isHexDigit && !$0.isUppercase }) else { return nil }
        return String(t)
    }

    func removeCheckpointLeftover(_ path: String, isDirectory: Bool) {
        if !isDirectory {
            unlink(path)
            return
        }
        guard pathKind(path) == .directory else { return }
        for entry in listDirectory(path) where pathKind(joinPath(path, entry)) == .file {
            unlink(joinPath(path, entry))
        }
        rmdir(path)
    }
}

