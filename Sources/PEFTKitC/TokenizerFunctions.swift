// Tokenization: the model's tokenizer and chat template. The reads do not take the handle's call lock (the
// attached tokenizer is immutable and swapped under its own lock), so a host may decode tokens from inside
// a generation callback.

import CPEFTKit
import PEFTKit

/// Longest text, id list or conversation accepted, in bytes / ids / messages; far beyond any real prompt,
/// and low enough that no size computed from it overflows.
private let maxTextBytes = 1 << 31
private let maxIDs = 1 << 28
private let maxMessages = 1 << 20

private func noTokenizer() -> ShimError {
    ShimError(code: PEFTKIT_ERR_STATE, message: "the model has no tokenizer (attach one with peftkit_tokenizer_load)")
}

/// Checks an output buffer against the header's two-call rules and copies `count` elements into it.
/// `extra` is 1 for text (room for the NUL), 0 for ids.
private func writeOutput<T>(_ values: UnsafeBufferPointer<T>, extra: Int, terminator: T?, to out: UnsafeMutablePointer<T>?,
                            capacity: Int, nOut: UnsafeMutablePointer<Int>, _ what: String) throws {
    nOut.pointee = values.count
    guard let out else {
        guard capacity == 0 else { throw ShimError.invalid("\(what) is NULL but its capacity is \(capacity)") }
        return
    }
    let cap = try readCapacity(capacity, "capacity of \(what)")
    guard cap >= values.count + extra else {
        throw ShimError.tooSmall("\(what) needs \(values.count + extra) \(extra == 1 ? "bytes" : "ids"), capacity is \(cap)")
    }
    if let base = values.baseAddress { out.update(from: base, count: values.count) }
    if let terminator { out[values.count] = terminator }
}

private func writeText(_ text: String, to out: UnsafeMutablePointer<CChar>?, capacity: Int,
                       nOut: UnsafeMutablePointer<Int>?, _ what: String) throws {
    guard let nOut else { throw ShimError.invalid("n_out is NULL") }
    let bytes = text.utf8.map { CChar(bitPattern: $0) }
    try bytes.withUnsafeBufferPointer {
        try writeOutput($0, extra: 1, terminator: 0, to: out, capacity: capacity, nOut: nOut, what)
    }
}

@c @implementation
public func peftkit_tokenizer_get_info(_ model: OpaquePointer?,
                                       _ out: UnsafeMutablePointer<peftkit_tokenizer_info>?) -> peftkit_status {
    entry("peftkit_tokenizer_get_info") {
        let h = try ModelHandle.from(model)
        guard let out else { throw ShimError.invalid("out is NULL") }
        let size = try callerStructSize(UnsafeRawPointer(out), peftkit_tokenizer_info.self, "out")
        var info = peftkit_tokenizer_info()
        info.struct_size = UInt32(MemoryLayout<peftkit_tokenizer_info>.size)
        let tok = h.model.tokenizer
        info.has_tokenizer = tok == nil ? 0 : 1
        info.has_chat_template = h.model.chatTemplate == nil ? 0 : 1
        info.vocab_size = Int32(bounded: tok?.vocabSize ?? 0)
        info.bos_id = tok?.bosID ?? -1
        info.eos_id = tok?.eosID ?? -1
        info.eot_id = h.model.endOfTurnID ?? -1
        info.adds_bos = (tok?.addsBOS ?? false) ? 1 : 0
        writeStruct(info, to: out, size: size)
    }
}

@c @implementation
public func peftkit_tokenizer_issue(_ model: OpaquePointer?, _ buf: UnsafeMutablePointer<CChar>?, _ cap: Int,
                                    _ lenOut: UnsafeMutablePointer<Int>?) -> peftkit_status {
    entry("peftkit_tokenizer_issue") {
        let h = try ModelHandle.from(model)
        try writeString(h.model.tokenizerIssue ?? "", buf, cap, lenOut, "buf")
    }
}

@c @implementation
public func peftkit_tokenizer_load(_ model: OpaquePointer?, _ path: UnsafePointer<CChar>?) -> peftkit_status {
    entry("peftkit_tokenizer_load") {
        let h = try ModelHandle.from(model)
        let p = try readString(path, "path")
        guard !p.isEmpty else { throw ShimError.invalid("path is empty") }
        try h.model.loadTokenizer(path: p)
    }
}

@c @implementation
public func peftkit_tokenize(_ model: OpaquePointer?, _ text: UnsafePointer<CChar>?, _ textLen: Int,
                             _ addSpecial: Int32, _ parseSpecial: Int32, _ outIDs: UnsafeMutablePointer<Int32>?,
                             _ capacity: Int, _ nOut: UnsafeMutablePointer<Int>?) -> peftkit_status {
    entry("peftkit_tokenize") {
        let h = try ModelHandle.from(model)
        guard let nOut else { throw ShimError.invalid("n_out is NULL") }
        guard textLen >= 0, textLen <= maxTextBytes else {
            throw ShimError.invalid("text_len must be at most \(maxTextBytes) bytes")
        }
        let add = try readBool(addSpecial, "add_special")
        let parse = try readBool(parseSpecial, "parse_special")
        let string: String
        if let text {
            let bytes = UnsafeRawPointer(text).assumingMemoryBound(to: UInt8.self)
            guard let s = String(validating: UnsafeBufferPointer(start: bytes, count: textLen), as: UTF8.self) else {
                throw ShimError.invalid("text is not valid UTF-8")
            }
            string = s
        } else {
            guard textLen == 0 else { throw ShimError.invalid("text is NULL but text_len is \(textLen)") }
            string = ""
        }
        guard let tok = h.model.tokenizer else { throw noTokenizer() }
        let ids = tok.encode(string, addSpecial: add, parseSpecial: parse)
        try ids.withUnsafeBufferPointer {
            try writeOutput($0, extra: 0, terminator: nil, to: outIDs, capacity: capacity, nOut: nOut, "out_ids")
        }
    }
}

@c @implementation
public func peftkit_detokenize(_ model: OpaquePointer?, _ ids: UnsafePointer<Int32>?, _ nIDs: Int,
                               _ skipSpecial: Int32, _ out: UnsafeMutablePointer<CChar>?, _ capacity: Int,
                               _ nOut: UnsafeMutablePointer<Int>?) -> peftkit_status {
    entry("peftkit_detokenize") {
        let h = try ModelHandle.from(model)
        guard nOut != nil else { throw ShimError.invalid("n_out is NULL") }
        guard nIDs >= 0, nIDs <= maxIDs else { throw ShimError.invalid("n_ids must be at most \(maxIDs)") }
        let skip = try readBool(skipSpecial, "skip_special")
        var list: [Int32] = []
        if let ids {
            list = Array(UnsafeBufferPointer(start: ids, count: nIDs))
        } else {
            guard nIDs == 0 else { throw ShimError.invalid("ids is NULL but n_ids is \(nIDs)") }
        }
        guard let tok = h.model.tokenizer else { throw noTokenizer() }
        try writeText(try tok.decode(list, skipSpecial: skip), to: out, capacity: capacity, nOut: nOut, "out")
    }
}

@c @implementation
public func peftkit_chat_template_apply(_ model: OpaquePointer?, _ roles: UnsafePointer<UnsafePointer<CChar>?>?,
                                        _ contents: UnsafePointer<UnsafePointer<CChar>?>?, _ nMessages: Int,
                                        _ addGenerationPrompt: Int32, _ out: UnsafeMutablePointer<CChar>?,
                                        _ capacity: Int, _ nOut: UnsafeMutablePointer<Int>?) -> peftkit_status {
    entry("peftkit_chat_template_apply") {
        let h = try ModelHandle.from(model)
        guard nOut != nil else { throw ShimError.invalid("n_out is NULL") }
        guard nMessages >= 0, nMessages <= maxMessages else {
            throw ShimError.invalid("n_messages must be at most \(maxMessages)")
        }
        let addPrompt = try readBool(addGenerationPrompt, "add_generation_prompt")
        var messages: [ChatMessage] = []
        if nMessages > 0 {
            guard let roles else { throw ShimError.invalid("roles is NULL but n_messages is \(nMessages)") }
            guard let contents else { throw ShimError.invalid("contents is NULL but n_messages is \(nMessages)") }
            messages.reserveCapacity(nMessages)
            for i in 0..<nMessages {
                messages.append(ChatMessage(role: try readString(roles[i], "roles[\(i)]"),
                                            content: try readString(contents[i], "contents[\(i)]")))
            }
        }
        guard let chat = h.model.chatTemplate else {
            throw ShimError(code: PEFTKIT_ERR_STATE, message: "the model has no chat template")
        }
        try writeText(chat.applyChatTemplate(messages, addGenerationPrompt: addPrompt), to: out, capacity: capacity,
                      nOut: nOut, "out")
    }
}
