import FoundationEssentials

// Preference data: JSONL records {"prompt", "chosen", "rejected"} turned into token ids and response masks and
// packed into `PreferenceBatch`es for `Model.preferenceStep`.

/// One preference record: a prompt and two responses, the preferred one first.
public enum PreferenceRecord: Sendable, Equatable {
    /// Plain strings: encoded as `{"prompt", "response"}` records are for supervised tuning (through the chat
    /// template when the model has one, else prompt then response and EOS).
    case text(prompt: String, chosen: String, rejected: String)
    /// A conversation (`"prompt"` a list of messages) and two assistant replies: rendered with the chat template;
    /// only the final reply's tokens (and its end-of-turn marker) count.
    case chat(prompt: [ChatMessage], chosen: String, rejected: String)
}

/// Reading preference JSONL files. Each line is `{"prompt": P, "chosen": C, "rejected": R}` where P is a string or
/// a list of `{"role", "content"}` messages, and C and R are strings, an assistant message, or a list holding one
/// assistant message.
public enum PreferenceDataset {
    public static func read(path: String) throws -> [PreferenceRecord] {
        try parse(try readWholeFile(path: path, maxBytes: JSONLDataset.maxFileBytes), source: "'\(path)'")
    }

    public static func parse(_ text: String, source: String = "JSONL data") throws -> [PreferenceRecord] {
        try parse(Array(text.utf8), source: source)
    }

    public static func parse(_ bytes: [UInt8], source: String = "JSONL data") throws -> [PreferenceRecord] {
        var out: [PreferenceRecord] = []
        var line = 0, start = 0
        while start <= bytes.count {
            var end = start
            while end < bytes.count && bytes[end] != 0x0A { end += 1 }
            line += 1
            var hi = end
            if hi > start && bytes[hi - 1] == 0x0D { hi -= 1 }
            let slice = bytes[start..<hi]
            if slice.contains(where: { $0 != 0x20 && $0 != 0x09 }) {
                let w = "\(source) line \(line)"
                out.append(try decodeJSON(Raw.self, from: Array(slice), source: w).record(where: w))
            }
            if end >= bytes.count { break }
            start = end + 1
        }
        guard !out.isEmpty else { throw PEFTKitError.format("\(source) has no records") }
        return out
    }

    private struct Message: Decodable {
        var role: String
        var content: String
    }

    /// A string, a message or a list of messages.
    private enum Field: Decodable {
        case text(String)
        case messages([Message])

        init(from decoder: Decoder) throws {
            let c = try decoder.singleValueContainer()
            if let s = try? c.decode(String.self) { self = .text(s); return }
            if let m = try? c.decode(Message.self) { self = .messages([m]); return }
            self = .messages(try c.decode([Message].self))
        }
    }

    private struct Raw: Decodable {
        var prompt: Field?
        var chosen: Field?
        var rejected: Field?

        func reply(_ f: Field?, _ key: String, _ w: String) throws -> String {
            switch f {
            case nil: throw PEFTKitError.format("\(w): missing \"\(key)\"")
            case .text(let s)?:
                guard !s.isEmpty else { throw PEFTKitError.format("\(w): \"\(key)\" is empty") }
                return s
            case .messages(let m)?:
                guard m.count == 1, m[0].role == "assistant" else {
                    throw PEFTKitError.format("\(w): \"\(key)\" must be a string or one assistant message")
                }
                guard !m[0].content.isEmpty else { throw PEFTKitError.format("\(w): \"\(key)\" is empty") }
                return m[0].content
            }
        }

        func record(where w: String) throws -> PreferenceRecord {
            let c = try reply(chosen, "chosen", w), r = try reply(rejected, "rejected", w)
            switch prompt {
            case nil: throw PEFTKitError.format("\(w): missing \"prompt\"")
            case .text(let p)?: return .text(prompt: p, chosen: c, rejected: r)
            case .messages(let m)?:
                guard !m.isEmpty else { throw PEFTKitError.format("\(w): \"prompt\" is empty") }
                for (i, x) in m.enumerated() where x.role.isEmpty { throw PEFTKitError.format("\(w): prompt message \(i) has an empty role") }
                return .chat(prompt: m.map { ChatMessage(role: $0.role, content: $0.content) }, chosen: c, rejected: r)
            }
        }
    }
}

/// One encoded pair: ids and labels (-100 outside the response) of the chosen and the rejected sequence.
public struct PreferenceExample: Sendable, Equatable {
    public var chosen: DatasetExample
    public var rejected: DatasetExample
}

extension DatasetEncoder {
    /// Token ids and response labels of both sequences of a record (see `PreferenceRecord` for how each kind is
    /// rendered). Only the final response counts: earlier assistant turns of a chat prompt are context.
    public func encode(_ record: PreferenceRecord) throws -> PreferenceExample {
        func one(_ r: DatasetRecord) throws -> DatasetExample {
            var e = try encode(r)
            // Keep the last run of trained labels (the final reply), mask everything before it.
            var end = e.labels.count
            while end > 0 && e.labels[end - 1] == ignoreIndex { end -= 1 }
            var start = end
            while start > 0 && e.labels[start - 1] != ignoreIndex { start -= 1 }
            for i in 0..<start { e.labels[i] = ignoreIndex }
            guard end > start else { throw PEFTKitError.format("a response encodes to no tokens") }
            return e
        }
        switch record {
        case .text(let p, let c, let r):
            return PreferenceExample(chosen: try one(.promptResponse(system: nil, prompt: p, response: c)),
                                     rejected: try one(.promptResponse(system: nil, prompt: p, response: r)))
        case .chat(let m, let c, let r):
            return PreferenceExample(chosen: try one(.chat(m + [ChatMessage(role: "assistant", content: c)])),
                                     rejected: try one(.chat(m + [ChatMessage(role: "assistant", content: r)])))
        }
    }
}

extension PreferenceBatch {
    /// Packs pairs into a batch of `seqLen` tokens per row: each sequence is cut on the right or padded with `padID`
    /// (masks 0 on padding and prompt). A pair whose response is cut away entirely is refused.
    public init<C: Collection>(_ examples: C, seqLen: Int, padID: Int32) throws where C.Element == PreferenceExample {
        try require(!examples.isEmpty, "a batch needs at least one pair")
        try require(seqLen > 1, "sequence length must be at least 2, got \(seqLen)")
        var ids: ([Int32], [Int32]) = ([], []), masks: ([Int32], [Int32]) = ([], [])
        for (i, e) in examples.enumerated() {
            for (k, x) in [e.chosen, e.rejected].enumerated() {
                try require(x.inputIDs.count == x.labels.count, "example has \(x.inputIDs.count) ids but \(x.labels.count) labels")
                let n = min(seqLen, x.inputIDs.count)
                var row = Array(x.inputIDs[..<n]) + [Int32](repeating: padID, count: seqLen - n)
                var mask = x.labels[..<n].map { $0 == ignoreIndex ? Int32(0) : 1 } + [Int32](repeating: 0, count: seqLen - n)
                mask[0] = 0
                try require(mask.contains(1), "pair \(i): the \(k == 0 ? "chosen" : "rejected") response starts after \(seqLen) tokens (raise the sequence length)")
                if k == 0 { ids.0 += row; masks.0 += mask } else { ids.1 += row; masks.1 += mask }
                row.removeAll()
            }
        }
        self.init(chosen: ids.0, chosenMask: masks.0, rejected: ids.1, rejectedMask: masks.1, pairs: examples.count, seqLen: seqLen)
    }
}
