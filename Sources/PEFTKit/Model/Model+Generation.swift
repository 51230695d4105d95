// Generation's public face: one prompt with the active adapter, or several prompts with an adapter each.

extension Model {
    /// Generates up to `config.maxNewTokens` tokens after `prompt` with the active adapter and says why it
    /// stopped (`GenerateResult.finishReason`). `onToken` is called with every sampled token, before the stop
    /// checks (so it also sees the tokens a stop string later drops from the result); return false to stop.
    /// Stop strings (`GenerateConfig.stopStrings`) need the model's tokenizer.
    ///
    /// ```swift
    /// var g = GenerateConfig()
    /// g.maxNewTokens = 64
    /// g.stopStrings = ["\n\n"]
    /// let r = try model.generateResult(prompt: ids, config: g)
    /// print(r.text ?? "", r.finishReason)
    /// ```
    public func generateResult(prompt: [Int32], config: GenerateConfig,
                               onToken: ((Int32) -> Bool)? = nil) throws -> GenerateResult {
        let tok = config.stopStrings.isEmpty ? nil : tokenizer
        return try exclusive { try engine.generate(prompt: prompt, config: config, tokenizer: tok, onToken: onToken) }
    }

    /// Generates for several prompts, prompt b with adapter `adapters[b]` (nil = base model). Rows with the same
    /// adapter and the same prompt length are decoded together: one prefill and then one forward pass per step
    /// for the whole group over a batched KV cache (rows are grouped by adapter as `forward(...adapters:)`
    /// does); a row that shares neither runs alone. Row b's result equals `generateResult` for that prompt
    /// alone with that adapter active and the same config (each row's sampler starts from `config.seed`). The
    /// active adapter is unchanged afterwards.
    public func generateResults(prompts: [[Int32]], adapters: [String?], config: GenerateConfig) throws -> [GenerateResult] {
        let tok = config.stopStrings.isEmpty ? nil : tokenizer
        return try exclusive { try engine.generateMixed(prompts: prompts, adapters: adapters, config: config, tokenizer: tok) }
    }
}
