// Saving the whole model (after full fine-tuning or with adapters merged) in Hugging Face's or llama.cpp's format.
// The engine writes the weights (Engine/ModelExport.swift); this side adds what the tokenizer's origin allows.

extension Model {
    /// Tokenizer files copied from a Hugging Face source folder into a saved folder, when present.
    static let tokenizerFileNames = ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json",
                                     "merges.txt", "vocab.txt", "added_tokens.json", "chat_template.jinja",
                                     "generation_config.json"]

    /// Writes the whole model, as it computes with no adapter active, to `path`: merged adapters
    /// (`mergeAdapter`) and fully fine-tuned weights (`enableFullFineTuning`) included. Weights kept in GGUF
    /// blocks (a GGUF model loaded without `widen`) are widened to fp32 as they are written.
    ///
    /// - `.huggingFace`: `path` is a folder (created if missing) that receives `config.json` and `model.safetensors`
    ///   (F32, transformers' names and layouts: `GPT2LMHeadModel`, `LlamaForCausalLM` / `Qwen2ForCausalLM`,
    ///   `BertModel`), and the tokenizer files of the folder the model was loaded from (tokenizer.json,
    ///   tokenizer_config.json, vocab.json, merges.txt, chat_template.jinja, ...). A model loaded from GGUF gets its
    ///   chat template as chat_template.jinja and no tokenizer files. The files are replaced together: after a crash
    ///   the folder holds all the old files or all the new ones.
    /// - `.gguf(.f32)` / `.gguf(.f16)`: `path` is one file (replaced atomically) that llama.cpp loads, Llama
    ///   architecture only; matrices in the chosen precision, norms and biases F32. The tokenizer metadata of the GGUF
    ///   file the tokenizer came from is carried over. A tokenizer read from Hugging Face files has no GGUF form in
    ///   PEFTKit: such a model is refused (`unsupported`); a model without a tokenizer is written without one
    ///   (`Model.load` reads it, llama.cpp needs a vocabulary). F16 refuses weights beyond ±65504.
    ///
    /// Throws `state` when an adapter is active but not merged (the file would not hold it), `unsupported` for
    /// formats the model cannot take, `io` when the path cannot be written (nothing is left behind).
    ///
    /// ```swift
    /// let model = try Model.load(path: "SmolLM2-135M-Instruct.Q4_1.gguf", widen: true)
    /// try model.loadAdapter(from: "my-lora")
    /// try model.mergeAdapter(name: "default")
    /// try model.saveModel(to: "merged.gguf", format: .gguf(.f16))
    /// try model.saveModel(to: "merged-hf", format: .huggingFace)
    /// ```
    public func saveModel(to path: String, format: ModelFormat) throws {
        let extras = try saveExtras(for: format)
        try exclusive { try engine.saveModel(to: path, format: format, extras: extras) }
    }

    /// What the tokenizer's origin gives a saved model.
    private func saveExtras(for format: ModelFormat) throws -> ModelSaveExtras {
        let (origin, hasTokenizer) = text.withLock { ($0.origin, $0.tokenizer != nil) }
        var extras = ModelSaveExtras()
        switch origin {
        case .gguf(let keys):
            extras.ggufTokenizer = keys
            if format == .huggingFace,
               let (_, v) = keys.first(where: { $0.0 == "tokenizer.chat_template" }), let template = v.stringValue {
                extras.folderFiles.append(("chat_template.jinja", Array(template.utf8)))
            }
        case .folder(let folder):
            if hasTokenizer { extras.tokenizerWithoutGGUFForm = "the Hugging Face folder '\(folder)'" }
            if format == .huggingFace {
                for name in Model.tokenizerFileNames {
                    let p = joinPath(folder, name)
                    guard pathKind(p) == .file else { continue }
                    extras.folderFiles.append((name, try readWholeFile(path: p, maxBytes: 256 << 20)))
                }
            }
        case nil:
            if hasTokenizer { extras.tokenizerWithoutGGUFForm = "Hugging Face tokenizer files" }
        }
        return extras
    }
}
