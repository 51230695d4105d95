// Generation: peftkit_generate(_ex), peftkit_generate_mixed(_ex), peftkit_token_to_piece.

import CPEFTKit
import PEFTKit

@c @implementation
public func peftkit_generate(_ model: OpaquePointer?, _ prompt: UnsafePointer<Int32>?, _ nPrompt: Int32,
                             _ config: UnsafePointer<peftkit_generate_config>?,
                             _ outTokens: UnsafeMutablePointer<Int32>?, _ outCapacity: Int32,
                             _ nOut: UnsafeMutablePointer<Int32>?, _ cb: peftkit_token_callback?,
                             _ user: UnsafeMutableRawPointer?) -> peftkit_status {
    entry("peftkit_generate") {
        let r = try runGenerate(model, prompt, nPrompt, config, outTokens, outCapacity, cb, user)
        if let outTokens {
            for (i, t) in r.tokens.enumerated() { outTokens[i] = t }
        }
        nOut?.pointee = Int32(bounded: r.tokens.count)
    }
}

@c @implementation
public func peftkit_generate_ex(_ model: OpaquePointer?, _ prompt: UnsafePointer<Int32>?, _ nPrompt: Int32,
                                _ config: UnsafePointer<peftkit_generate_config>?,
                                _ outTokens: UnsafeMutablePointer<Int32>?, _ outCapacity: Int32,
                                _ result: UnsafeMutablePointer<peftkit_generate_result>?,
                                _ cb: peftkit_token_callback?, _ user: UnsafeMutableRawPointer?) -> peftkit_status {
    entry("peftkit_generate_ex") {
        guard let result else { throw ShimError.invalid("result is NULL") }
        let size = try callerStructSize(UnsafeRawPointer(result), peftkit_generate_result.self, "result")
        let r = try runGenerate(model, prompt, nPrompt, config, outTokens, outCapacity, cb, user)
        let all = r.tokens + r.droppedTokens
        if let outTokens {
            for (i, t) in all.enumerated() { outTokens[i] = t }
        }
        var c = peftkit_generate_result()
        c.struct_size = UInt32(MemoryLayout<peftkit_generate_result>.size)
        c.finish_reason = r.finishReason.abiCode
        c.n_tokens = Int32(bounded: r.tokens.count)
        c.n_generated = Int32(bounded: all.count)
        c.stop_index = r.stopIndex.map { Int32(bounded: $0) } ?? -1
        c.stop_byte_offset = r.stopByteOffset.map { Int32(bounded: $0) } ?? -1
        writeStruct(c, to: result, size: size)
    }
}

/// The shared body of peftkit_generate and peftkit_generate_ex: reads the arguments, checks the output array,
/// generates. Returns the core's result (tokens and dropped tokens at most max_new_tokens together).
private func runGenerate(_ model: OpaquePointer?, _ prompt: UnsafePointer<Int32>?, _ nPrompt: Int32,
                         _ config: UnsafePointer<peftkit_generate_config>?,
                         _ outTokens: UnsafeMutablePointer<Int32>?, _ outCapacity: Int32,
                         _ cb: peftkit_token_callback?, _ user: UnsafeMutableRawPointer?) throws -> GenerateResult {
    let h = try ModelHandle.from(model)
    guard let prompt else { throw ShimError.invalid("prompt is NULL") }
    let gc = try generateConfig(from: config)
    guard outCapacity >= 0 else { throw ShimError.invalid("out_capacity must be >= 0, got \(outCapacity)") }
    if outTokens == nil {
        guard outCapacity == 0 else {
            throw ShimError.invalid("out_tokens is NULL but out_capacity is \(outCapacity)")
        }
    } else if Int(outCapacity) < gc.maxNewTokens {
        throw ShimError.tooSmall("out_tokens needs max_new_tokens = \(gc.maxNewTokens) entries, "
                                 + "out_capacity is \(outCapacity)")
    }
    try checkPromptLength(nPrompt, "n_prompt", model: h.model)
    let promptArray = Array(UnsafeBufferPointer(start: prompt, count: Int(nPrompt)))
    let onToken: ((Int32) -> Bool)? = cb.map { f in { token in f(token, user) == 0 } }
    let r = try h.model.generateResult(prompt: promptArray, config: gc, onToken: onToken)
    guard r.tokens.count + r.droppedTokens.count <= gc.maxNewTokens else {
        throw ShimError.internal("generation returned \(r.tokens.count + r.droppedTokens.count) tokens, more than "
                                 + "max_new_tokens = \(gc.maxNewTokens)")
    }
    return r
}

@c @implementation
public func peftkit_generate_mixed(_ model: OpaquePointer?, _ prompts: UnsafePointer<UnsafePointer<Int32>?>?,
                                   _ nPrompts: UnsafePointer<Int32>?, _ adapters: UnsafePointer<UnsafePointer<CChar>?>?,
                                   _ batch: Int32, _ config: UnsafePointer<peftkit_generate_config>?,
                                   _ outTokens: UnsafeMutablePointer<Int32>?, _ outCapacity: Int,
                                   _ nOut: UnsafeMutablePointer<Int32>?) -> peftkit_status {
    entry("peftkit_generate_mixed") {
        _ = try runGenerateMixed(model, prompts, nPrompts, adapters, batch, config, outTokens, outCapacity, nOut)
    }
}

@c @implementation
public func peftkit_generate_mixed_ex(_ model: OpaquePointer?, _ prompts: UnsafePointer<UnsafePointer<Int32>?>?,
                                      _ nPrompts: UnsafePointer<Int32>?,
                                      _ adapters: UnsafePointer<UnsafePointer<CChar>?>?, _ batch: Int32,
                                      _ config: UnsafePointer<peftkit_generate_config>?,
                                      _ outTokens: UnsafeMutablePointer<Int32>?, _ outCapacity: Int,
                                      _ nOut: UnsafeMutablePointer<Int32>?,
                                      _ finishReasons: UnsafeMutablePointer<Int32>?) -> peftkit_status {
    entry("peftkit_generate_mixed_ex") {
        guard let finishReasons else { throw ShimError.invalid("finish_reasons is NULL") }
        let out = try runGenerateMixed(model, prompts, nPrompts, adapters, batch, config, outTokens, outCapacity, nOut)
        for (b, r) in out.enumerated() { finishReasons[b] = r.finishReason.abiCode }
    }
}

/// The shared body of peftkit_generate_mixed(_ex): reads and checks every argument, generates, writes the tokens
/// and n_out (nothing is written on an error).
private func runGenerateMixed(_ model: OpaquePointer?, _ prompts: UnsafePointer<UnsafePointer<Int32>?>?,
                              _ nPrompts: UnsafePointer<Int32>?, _ adapters: UnsafePointer<UnsafePointer<CChar>?>?,
                              _ batch: Int32, _ config: UnsafePointer<peftkit_generate_config>?,
                              _ outTokens: UnsafeMutablePointer<Int32>?, _ outCapacity: Int,
                              _ nOut: UnsafeMutablePointer<Int32>?) throws -> [GenerateResult] {
    let h = try ModelHandle.from(model)
    guard batch >= 1 else { throw ShimError.invalid("batch must be >= 1, got \(batch)") }
    guard let prompts else { throw ShimError.invalid("prompts is NULL") }
    guard let nPrompts else { throw ShimError.invalid("n_prompts is NULL") }
    guard let adapters else { throw ShimError.invalid("adapters is NULL") }
    guard let outTokens else { throw ShimError.invalid("out_tokens is NULL") }
    guard let nOut else { throw ShimError.invalid("n_out is NULL") }
    let gc = try generateConfig(from: config)
    let (need, overflow) = Int(batch).multipliedReportingOverflow(by: gc.maxNewTokens)
    guard !overflow, outCapacity >= need else {
        throw ShimError.tooSmall("out_tokens needs batch * max_new_tokens = \(Int(batch)) * \(gc.maxNewTokens) entries, "
                                 + "out_capacity is \(outCapacity)")
    }
    var rows: [[Int32]] = [], names: [String?] = []
    for b in 0..<Int(batch) {
        guard let p = prompts[b] else { throw ShimError.invalid("prompts[\(b)] is NULL") }
        let n = nPrompts[b]
        try checkPromptLength(n, "n_prompts[\(b)]", model: h.model)
        rows.append(Array(UnsafeBufferPointer(start: p, count: Int(n))))
        names.append(adapters[b] == nil ? nil : try readName(adapters[b], "adapters[\(b)]"))
    }
    let out = try h.model.generateResults(prompts: rows, adapters: names, config: gc)
    for (b, r) in out.enumerated() {
        guard r.tokens.count <= gc.maxNewTokens else {
            throw ShimError.internal("row \(b) produced \(r.tokens.count) tokens, more than max_new_tokens")
        }
    }
    for (b, r) in out.enumerated() {
        for (i, t) in r.tokens.enumerated() { outTokens[b * gc.maxNewTokens + i] = t }
        nOut[b] = Int32(bounded: r.tokens.count)
    }
    return out
}

@c @implementation
public func peftkit_token_to_piece(_ model: OpaquePointer?, _ token: Int32, _ out: UnsafeMutablePointer<CChar>?,
                                   _ capacity: Int, _ nOut: UnsafeMutablePointer<Int>?) -> peftkit_status {
    entry("peftkit_token_to_piece") {
        let h = try ModelHandle.from(model)
        guard let nOut else { throw ShimError.invalid("n_out is NULL") }
        let cap = try readCapacity(capacity, "capacity")
        guard let tok = h.model.tokenizer else {
            throw ShimError(code: PEFTKIT_ERR_STATE, message: "the model has no tokenizer (attach one with peftkit_tokenizer_load)")
        }
        let bytes = try tok.bytes(of: token)
        guard let out else {
            guard cap == 0 else { throw ShimError.invalid("out is NULL but capacity is \(cap)") }
            nOut.pointee = bytes.count
            return
        }
        nOut.pointee = bytes.count
        guard cap >= bytes.count else {
            throw ShimError.tooSmall("out needs \(bytes.count) bytes, capacity is \(cap)")
        }
        for (i, b) in bytes.enumerated() { out[i] = CChar(bitPattern: b) }
    }
}
