import FoundationEssentials

// Training data for hosts: JSONL files of chat or plain-text records, turned into token ids and labels
// with `-100` wherever the loss must not count (prompts, system and user turns, padding), then packed into
// fixed-shape batches for `Model.trainStep` / `Model.forward`.

/// One record of a JSONL data file.
public enum DatasetRecord: Sendable, Equatable {
    /// `{"text": ...}`: every token is trained.
    case text(String)
    /// `{"prompt": ..., "response": ...}` (optionally `"system"`; `"completion"` is accepted for
    /// `"response"`): only the response is trained.
    case promptResponse(system: String?, prompt: String, response: String)
    /// `{"messages": [{"role": ..., "content": ...}, ...]}`: only assistant turns are trained.
    case chat([ChatMessage])
}

/// One tokenized record: `labels[t]` is the token at t when it is trained, `-100` otherwise (the model
/// shifts labels inside: position t predicts `labels[t + 1]`).
public struct DatasetExample: Sendable, Equatable {
    public var inputIDs: [Int32]
    public var labels: [Int32]
    /// A packed row (`SequencePacking.pack`): the record each position belongs to (0, 1, ... in row order).
    /// nil = one record.
    public var segmentIDs: [Int32]?

    public init(inputIDs: [Int32], labels: [Int32], segmentIDs: [Int32]? = nil) {
        self.inputIDs = inputIDs
        self.labels = labels
        self.segmentIDs = segmentIDs
    }

    /// Positions whose token is trained.
    public var trainedTokens: Int { labels.reduce(0) { $0 + ($1 == -100 ? 0 : 1) } }
}

/// Reading JSONL data files.
public enum JSONLDataset {
    /// Largest data file read (1 GiB).
    public static let maxFileBytes = 1 << 30

    /// Reads every record of a JSONL file (one JSON object per line; blank lines are skipped).
    /// Errors name the file and the 1-based line: `'data.jsonl' line 7: missing "response"`.
    public static func read(path: String) throws -> [DatasetRecord] {
        let bytes = try readWholeFile(path: path, maxBytes: maxFileBytes)
        return try parse(bytes, source: "'\(path)'")
    }

    /// Parses JSONL text; `source` names it in errors.
    public static func parse(_ text: String, source: String = "JSONL data") throws -> [DatasetRecord] {
        try parse(Array(text.utf8), source: source)
    }

    /// Parses JSONL bytes; `source` names them in errors.
    public static func parse(_ bytes: [UInt8], source: String = "JSONL data") throws -> [DatasetRecord] {
        var records: [DatasetRecord] = []
        var line = 0
        var start = 0
        while start <= bytes.count {
            var end = start
            while end < bytes.count && bytes[end] != 0x0A { end += 1 }
            line += 1
            var hi = end
            if hi > start && bytes[hi - 1] == 0x0D { hi -= 1 }  // CRLF files
            let slice = bytes[start..<hi]
            if slice.contains(where: { $0 != 0x20 && $0 != 0x09 }) {
                let raw = try decodeJSON(RawRecord.self, from: Array(slice), source: "\(source) line \(line)")
                records.append(try raw.record(where: "\(source) line \(line)"))
            }
            if end >= bytes.count { break }
            start = end + 1
        }
        guard !records.isEmpty else { throw PEFTKitError.format("\(source) has no records") }
        return records
    }

    private struct RawMessage: Decodable {
        var role: String
        var content: String
    }

    private struct RawRecord: Decodable {
        var text: String?
        var prompt: String?
        var response: String?
        var completion: String?
        var system: String?
        var messages: [RawMessage]?

        func record(where w: String) throws -> DatasetRecord {
            let answer = response ?? completion
            let kinds = (text != nil ? 1 : 0) + (prompt != nil || answer != nil ? 1 : 0) + (messages != nil ? 1 : 0)
            guard kinds == 1 else {
                throw PEFTKitError.format(kinds == 0
                    ? "\(w): expected \"prompt\" + \"response\", \"messages\" or \"text\""
                    : "\(w): mixes record formats (use one of \"prompt\" + \"response\", \"messages\", \"text\")")
            }
            if let text {
                guard !text.isEmpty else { throw PEFTKitError.format("\(w): \"text\" is empty") }
                return .text(text)
            }
            if let messages {
                guard !messages.isEmpty else { throw PEFTKitError.format("\(w): \"messages\" is empty") }
                for (i, m) in messages.enumerated() where m.role.isEmpty {
                    throw PEFTKitError.format("\(w): message \(i) has an empty role")
                }
                guard messages.contains(where: { $0.role == "assistant" }) else {
                    throw PEFTKitError.format("\(w): \"messages\" has no assistant message (nothing to train on)")
                }
                return .chat(messages.map { ChatMessage(role: $0.role, content: $0.content) })
            }
            guard let prompt else { throw PEFTKitError.format("\(w): missing \"prompt\"") }
            guard let answer else { throw PEFTKitError.format("\(w): missing \"response\"") }
            guard !answer.isEmpty else { throw PEFTKitError.format("\(w): \"response\" is empty") }
            return .promptResponse(system: system, prompt: prompt, response: answer)
        }
    }
}

/// Turns records into token ids and loss masks for one model.
///
/// Chat records (prompt/response and messages) are rendered with the model's chat template; the loss covers
/// each assistant turn's content and its end-of-turn marker, nothing else. Without a chat template a
/// prompt/response record is the prompt followed by the response and EOS (messages records need a
/// template). Text records are trained on every token, followed by EOS when the tokenizer has one. Every
/// sequence starts with the tokens the tokenizer puts in front of a text (e.g. BOS), if any.
///
/// ```swift
/// let encoder = DatasetEncoder(tokenizer: tok, chatTemplate: template)
/// let examples = try JSONLDataset.read(path: "train.jsonl").map { try encoder.encode($0) }
/// let batch = try TokenBatch(examples[0..<8], seqLen: 128, padID: tok.eosID ?? 0)
/// ```
public struct DatasetEncoder: Sendable {
    public let tokenizer: Tokenizer
    public let chatTemplate: ChatTemplate?
    /// Appended (and trained) after text records and template-less responses; nil = nothing appended.
    public var eosID: Int32?

    public init(tokenizer: Tokenizer, chatTemplate: ChatTemplate?, eosID: Int32? = nil) {
        self.tokenizer = tokenizer
        self.chatTemplate = chatTemplate
        self.eosID = eosID ?? tokenizer.eosID
    }

    /// BOS when the tokenizer adds one in front of a text (`Tokenizer.addsBOS`), else nothing.
    public var prefixIDs: [Int32] { tokenizer.addsBOS ? tokenizer.bosID.map { [$0] } ?? [] : [] }

    /// Token ids and labels of one record.
    public func encode(_ record: DatasetRecord) throws -> DatasetExample {
        var out = DatasetExample(inputIDs: prefixIDs, labels: [])
        out.labels = [Int32](repeating: -100, count: out.inputIDs.count)
        func add(_ text: String, trained: Bool) {
            let ids = tokenizer.encode(text)
            out.inputIDs += ids
            out.labels += trained ? ids : [Int32](repeating: -100, count: ids.count)
        }
        func addEOS() {
            if let e = eosID { out.inputIDs.append(e); out.labels.append(e) }
        }
        switch record {
        case .text(let t):
            add(t, trained: true)
            addEOS()
        case .promptResponse(let system, let prompt, let response):
            if chatTemplate == nil {
                add((system.map { $0 + "\n" } ?? "") + prompt, trained: false)
                add(response, trained: true)
                addEOS()
            } else {
                var messages = system.map { [ChatMessage(role: "system", content: $0)] } ?? []
                messages += [ChatMessage(role: "user", content: prompt), ChatMessage(role: "assistant", content: response)]
                for (text, trained) in try chatSegments(messages) { add(text, trained: trained) }
            }
        case .chat(let messages):
            for (text, trained) in try chatSegments(messages) { add(text, trained: trained) }
        }
        return out
    }

    /// The ids of a generation prompt: `messages` rendered with the chat template and the opening of an
    /// assistant turn (or, without a template, the contents joined by newlines), after the prefix tokens.
    public func promptIDs(messages: [ChatMessage]) -> [Int32] {
        let text = chatTemplate?.applyChatTemplate(messages, addGenerationPrompt: true)
            ?? messages.map(\.content).joined(separator: "\n")
        return prefixIDs + tokenizer.encode(text)
    }

    /// The ids of a plain-text generation prompt, after the prefix tokens.
    public func promptIDs(text: String) -> [Int32] { prefixIDs + tokenizer.encode(text) }

    /// Splits the rendered conversation into (text, trained) pieces. For assistant message i, the template's
    /// rendering of messages[..<i] with a generation prompt must be a prefix of messages[...i]'s rendering,
    /// which must be a prefix of the whole: the difference is the trained piece (whitespace after the
    /// end-of-turn marker stays untrained).
    func chatSegments(_ messages: [ChatMessage]) throws -> [(String, Bool)] {
        guard let template = chatTemplate else {
            throw PEFTKitError.unsupported("the model has no chat template: use {\"prompt\", \"response\"} or {\"text\"} records")
        }
        let full = Array(template.applyChatTemplate(messages, addGenerationPrompt: false).utf8)
        var pieces: [(String, Bool)] = []
        var done = 0
        func isPrefix(_ a: [UInt8], of b: [UInt8]) -> Bool { a.count <= b.count && b[..<a.count].elementsEqual(a) }
        for i in messages.indices where messages[i].role == "assistant" {
            let before = Array(template.applyChatTemplate(Array(messages[..<i]), addGenerationPrompt: true).utf8)
            let through = Array(template.applyChatTemplate(Array(messages[...i]), addGenerationPrompt: false).utf8)
            guard isPrefix(before, of: through), isPrefix(through, of: full), before.count >= done else {
                throw PEFTKitError.unsupported("the chat template does not render assistant turns as appendable pieces")
            }
            var end = through.count
            while end > before.count, [0x20, 0x0A, 0x0D, 0x09].contains(through[end - 1]) { end -= 1 }
            if before.count > done { pieces.append((String(decoding: full[done..<before.count], as: UTF8.self), false)) }
            if end > before.count { pieces.append((String(decoding: full[before.count..<end], as: UTF8.self), true)) }
            done = end
        }
        if full.count > done { pieces.append((String(decoding: full[done...], as: UTF8.self), false)) }
        return pieces
    }
}

/// Several records per row ("packing"): rows of up to `seqLen` tokens filled with whole records, so that short
/// records do not leave a row mostly padding. `Model.trainStep(segmentIDs:)` then keeps the records apart
/// (attention within each record, positions from 0, no prediction across a boundary): a packed row trains
/// exactly as its records one by one, in fewer, fuller rows.
public enum SequencePacking {
    /// Packs `examples` into rows of at most `seqLen` tokens, first-fit decreasing: records longest first (ties
    /// in input order), each into the first row with room, else a new row; within a row, records keep the order
    /// they were placed in. Records longer than `seqLen` are cut to `seqLen` (as `TokenBatch` cuts them) and fill
    /// a row alone. Deterministic: the same examples give the same rows. Each row's `segmentIDs` number its
    /// records 0, 1, ...; rows are not padded (`TokenBatch` pads them).
    public static func pack(_ examples: [DatasetExample], seqLen: Int) throws -> [DatasetExample] {
        try require(seqLen > 1, "sequence length must be at least 2, got \(seqLen)")
        for e in examples {
            try require(e.inputIDs.count == e.labels.count, "example has \(e.inputIDs.count) ids but \(e.labels.count) labels")
            try require(e.segmentIDs == nil, "an example is already a packed row")
        }
        let order = examples.indices.filter { !examples[$0].inputIDs.isEmpty }.sorted {
            let a = min(seqLen, examples[$0].inputIDs.count), b = min(seqLen, examples[$1].inputIDs.count)
            return a != b ? a > b : $0 < $1
        }
        var rows: [DatasetExample] = []
        var free: [Int] = []
        for i in order {
            let e = examples[i]
            let n = min(seqLen, e.inputIDs.count)
            // First row with room; rows are few compared with records (each holds at least one record).
            var r = 0
            while r < rows.count && free[r] < n { r += 1 }
            if r == rows.count {
                rows.append(DatasetExample(inputIDs: [], labels: [], segmentIDs: []))
                free.append(seqLen)
            }
            let id = Int32(rows[r].segmentIDs!.last.map { $0 + 1 } ?? 0)
            rows[r].inputIDs += e.inputIDs[..<n]
            rows[r].labels += e.labels[..<n]
            rows[r].segmentIDs! += [Int32](repeating: id, count: n)
            free[r] -= n
        }
        return rows
    }
}

/// A `[batch, seqLen]` block of token ids and labels: each example truncated on the right or padded with
/// `padID` (padding labels are `-100`). When an example is a packed row, `segmentIDs` holds every row's
/// segment ids (padding forms a segment of its own) for `Model.trainStep(segmentIDs:)`.
public struct TokenBatch: Sendable, Equatable {
    public var inputIDs: [Int32]
    public var labels: [Int32]
    /// [batch·seqLen] when any example is a packed row, else nil.
    public var segmentIDs: [Int32]?
    public let batch: Int
    public let seqLen: Int

    public init<C: Collection>(_ examples: C, seqLen: Int, padID: Int32) throws where C.Element == DatasetExample {
        try require(!examples.isEmpty, "a batch needs at least one example")
        try require(seqLen > 1, "sequence length must be at least 2, got \(seqLen)")
        batch = examples.count
        self.seqLen = seqLen
        inputIDs = []
        labels = []
        inputIDs.reserveCapacity(batch * seqLen)
        labels.reserveCapacity(batch * seqLen)
        let packed = examples.contains { $0.segmentIDs != nil }
        var segments: [Int32] = []
        for e in examples {
            try require(e.inputIDs.count == e.labels.count, "example has \(e.inputIDs.count) ids but \(e.labels.count) labels")
            let n = min(seqLen, e.inputIDs.count)
            inputIDs += e.inputIDs[..<n]
            labels += e.labels[..<n]
            inputIDs += [Int32](repeating: padID, count: seqLen - n)
            labels += [Int32](repeating: -100, count: seqLen - n)
            paddingCount += seqLen - n
            if packed {
                let sg = e.segmentIDs ?? [Int32](repeating: 0, count: e.inputIDs.count)
                try require(sg.count == e.inputIDs.count, "packed row has \(e.inputIDs.count) ids but \(sg.count) segment ids")
                segments += sg[..<n]
                let padSegment = (sg[..<n].max() ?? -1) + 1
                segments += [Int32](repeating: padSegment, count: seqLen - n)
            }
        }
        segmentIDs = packed ? segments : nil
    }

    /// Label positions that count towards the loss (the first position of a row, and of each record of a
    /// packed row, never does: nothing predicts it).
    public var trainedTokens: Int {
        var n = 0
        for b in 0..<batch {
            for t in 1..<seqLen where labels[b * seqLen + t] != -100 {
                if let sg = segmentIDs, sg[b * seqLen + t] != sg[b * seqLen + t - 1] { continue }
                n += 1
            }
        }
        return n
    }

    /// Positions holding a token of an example (not padding).
    public var realTokens: Int {
        inputIDs.count - paddingCount
    }
    private var paddingCount = 0
}

/// Which examples make up each step: epochs over `count` examples in a seeded shuffled order (a new order
/// each epoch), `batch` at a time; the last batch of an epoch takes its remainder from the next epoch.
public struct BatchOrder: Sendable {
    public let count: Int
    public let batch: Int
    public let shuffle: Bool
    private var rng: Rng
    private var order: [Int] = []
    private var next = 0
    /// Completed passes over the data.
    public private(set) var epoch = 0

    public init(count: Int, batch: Int, seed: UInt64, shuffle: Bool = true) throws {
        try require(count > 0, "no examples")
        try require(batch > 0, "batch size must be positive, got \(batch)")
        self.count = count
        self.batch = batch
        self.shuffle = shuffle
        rng = Rng(seed: seed)
        newEpoch()
        epoch = 0
    }

    private mutating func newEpoch() {
        order = Array(0..<count)
        if shuffle {
            for i in stride(from: count - 1, to: 0, by: -1) {
                let j = Int(rng.nextUInt64() % UInt64(i + 1))
                order.swapAt(i, j)
            }
        }
        next = 0
    }

    /// Indices of the next batch.
    public mutating func nextBatch() -> [Int] {
        var out: [Int] = []
        out.reserveCapacity(batch)
        while out.count < batch {
            if next == count {
                epoch += 1
                newEpoch()
            }
            out.append(order[next])
            next += 1
        }
        return out
    }

    /// Steps that make `epochs` passes over the data.
    public static func steps(count: Int, batch: Int, epochs: Int) -> Int {
        guard count > 0, batch > 0, epochs > 0 else { return 0 }
        return (count * epochs + batch - 1) / batch
    }
}
