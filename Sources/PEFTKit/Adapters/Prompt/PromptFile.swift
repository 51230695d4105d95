// Prompt tuning in HF PEFT's files: `peft_type` "PROMPT_TUNING"; one tensor `prompt_embeddings`
// [virtual tokens, hidden]. A config with `prompt_tuning_init` "TEXT" starts from the embeddings of the
// tokenized `prompt_tuning_init_text` (cycled to fill every virtual token), as PEFT's TEXT init does.

enum PromptSchema: AdapterConfigSchema {
    static let known: Set<String> = ["num_virtual_tokens", "token_dim", "num_attention_heads", "num_layers",
                                     "num_transformer_submodules", "prompt_tuning_init", "prompt_tuning_init_text",
                                     "init_token_ids", "modules_to_save"]

    static func claims(_ o: [String: JSONValue]) -> Bool { o["peft_type"] == .string("PROMPT_TUNING") }

    static func parse(_ o: [String: JSONValue], model: ModelConfig, context: AdapterContext, source: String) throws -> AdapterConfig {
        let f = ConfigFields(object: o, source: source)
        try checkPEFTCommon(f, model)
        try checkConfigKeys(o, known: known, source: source)
        var c = PromptConfig()
        c.virtualTokens = try checkVirtualTokenFields(f, model: model, tokenDim: model.hiddenSize, heads: model.numHeads)
        if let seed = try f.int("seed") { c.seed = UInt64(truncatingIfNeeded: seed) }
        // PEFTKit's own key: the token ids to start from (what TEXT init tokenizes to).
        if let ids = try f.intList("init_token_ids") {
            c.initTokens = ids.map { Int32(truncatingIfNeeded: $0) }
        }
        switch try f.string("prompt_tuning_init") ?? "RANDOM" {
        case "RANDOM": break
        case "TEXT":
            guard c.initTokens == nil else { break }
            guard let text = try f.string("prompt_tuning_init_text"), !text.isEmpty else {
                throw f.bad("prompt_tuning_init TEXT needs a non-empty 'prompt_tuning_init_text'")
            }
            guard let tokenize = context.tokenize else {
                throw PEFTKitError.state("\(source): prompt_tuning_init TEXT needs the model's tokenizer, and this model has none")
            }
            c.initTokens = try tokenize(text)
        case let other:
            throw f.refuse("prompt_tuning_init '\(other)'")
        }
        return .prompt(c)
    }

    static func parameterCount(_ c: PromptConfig, model: ModelConfig) -> Int { c.virtualTokens * model.hiddenSize }
}

extension PromptAdapter: SavableAdapter {
    var fileFormat: AdapterFileFormat { .peft }

    func fileConfig(name: String) -> [String: JSONValue] {
        var o = peftCommonFields(model)
        // Written as RANDOM whatever the init: the saved tensor is what a reader needs.
        o.merge([
            "peft_type": .string("PROMPT_TUNING"), "num_virtual_tokens": .int(config.virtualTokens),
            "token_dim": .int(model.hiddenSize), "num_attention_heads": .int(model.numHeads),
            "num_layers": .int(model.numLayers), "num_transformer_submodules": .int(1),
            "prompt_tuning_init": .string("RANDOM"), "prompt_tuning_init_text": .null,
            "tokenizer_name_or_path": .null, "tokenizer_kwargs": .null,
        ]) { $1 }
        return o
    }

    func fileTensorSlots(name: String) -> [FileTensorSlot] {
        [FileTensorSlot(name: peftEmbeddingsKey, shape: [config.virtualTokens, model.hiddenSize], offset: 0)]
    }
}
