import PEFTKit

// The tokenizer and chat template that come with a model file: GGUF tokenizer metadata, or tokenizer.json
// and tokenizer_config.json in a Hugging Face folder.

func modelTokenizer(model: Model, path: String) throws -> Tokenizer? {
    if isDirectory(path) {
        let file = path + "/tokenizer.json"
        return isFile(file) ? try Tokenizer(tokenizerJSON: file) : nil
    }
    let g = try GGUFFile(path: path)
    guard let tokens = try g.array("tokenizer.ggml.tokens")?.strings else { return nil }
    let merges = try g.array("tokenizer.ggml.merges")?.strings ?? []
    let types = try g.array("tokenizer.ggml.token_type")?.ints.map { $0.map { Int32(truncatingIfNeeded: $0) } }
    let bos = try g.int("tokenizer.ggml.bos_token_id").map { Int32(truncatingIfNeeded: $0) }
    let eos = try g.int("tokenizer.ggml.eos_token_id").map { Int32(truncatingIfNeeded: $0) }
    return try Tokenizer(ggufTokens: tokens, merges: merges, tokenTypes: types, bosID: bos, eosID: eos,
                         preTokenizer: try g.string("tokenizer.ggml.pre"), addBOS: try g.bool("tokenizer.ggml.add_bos_token"))
}

func modelChatTemplate(model: Model, path: String) throws -> ChatTemplate? {
    if isDirectory(path) {
        let file = path + "/tokenizer_config.json"
        guard isFile(file) else { return nil }
        do { return try ChatTemplate(tokenizerConfig: file) } catch PEFTKitError.notFound { return nil }
    }
    guard let text = try GGUFFile(path: path).string("tokenizer.chat_template") else { return nil }
    return try ChatTemplate(jinja: text)
}

/// The token that closes a chat turn (`<|im_end|>` for ChatML templates), if the model has a chat template.
func endOfTurnID(model: Model, tokenizer: Tokenizer) -> Int32? {
    tokenizer.id(of: "<|im_end|>")
}
