// The tokenizer and chat template that travel with a model. `Model.load` reads them from the same files as
// the weights: a GGUF file's `tokenizer.ggml.*` and `tokenizer.chat_template` metadata, or a Hugging Face
// folder's tokenizer.json (else GPT-2's vocab.json + merges.txt) and chat_template.jinja /
// tokenizer_config.json. They are optional: a model without them still trains and generates on ids.

import Synchronization

/// The tokenizer and chat template attached to a model, and what went wrong when one is missing.
struct TextSupport: Sendable {
    var tokenizer: Tokenizer? = nil
    var chatTemplate: ChatTemplate? = nil
    /// Errors met while reading a tokenizer or template that the files do carry, in the order met.
    var errors: [PEFTKitError] = []
    /// Where the tokenizer and template were read from, for `saveModel` to carry them over (nil when set by hand).
    var origin: TextOrigin? = nil

    init() {}

    /// Reads both from GGUF metadata. Never throws: problems end up in `errors`.
    init(gguf file: GGUFFile, vocabSize: Int) {
        let keys = file.metadataKeys.filter { $0.hasPrefix("tokenizer.") }
        if !keys.isEmpty { origin = .gguf(keys.compactMap { k in file.metadata[k].map { (k, $0) } }) }
        if file.has(key: "tokenizer.ggml.model") {
            tokenizer = attempt { try checked(Tokenizer(gguf: file), vocabSize: vocabSize) }
        }
        if file.has(key: "tokenizer.chat_template") {
            chatTemplate = attempt {
                guard let text = try file.string("tokenizer.chat_template") else { return nil }
                return try ChatTemplate(jinja: text)
            }
        }
    }

    /// Reads both from a Hugging Face model folder. Never throws: problems end up in `errors`.
    init(folder: String, vocabSize: Int) {
        origin = .folder(folder)
        let json = joinPath(folder, "tokenizer.json")
        let vocab = joinPath(folder, "vocab.json"), merges = joinPath(folder, "merges.txt")
        if pathKind(json) == .file {
            tokenizer = attempt { try checked(Tokenizer(tokenizerJSON: json), vocabSize: vocabSize) }
        } else if pathKind(vocab) == .file && pathKind(merges) == .file {
            tokenizer = attempt { try checked(Tokenizer(gpt2EncoderJSON: vocab, vocabBPE: merges), vocabSize: vocabSize) }
        }
        readChatTemplate(folder: folder)
    }

    /// Reads the chat template of a Hugging Face folder, if it has one. Problems end up in `errors`.
    private mutating func readChatTemplate(folder: String) {
        // transformers writes the template to chat_template.jinja since 4.50, to tokenizer_config.json before.
        let jinja = joinPath(folder, "chat_template.jinja"), config = joinPath(folder, "tokenizer_config.json")
        if pathKind(jinja) == .file {
            chatTemplate = attempt {
                let bytes = try readWholeFile(path: jinja, maxBytes: 16 << 20)
                guard let text = String(validating: bytes, as: UTF8.self) else {
                    throw PEFTKitError.format("'\(jinja)' is not valid UTF-8")
                }
                return try ChatTemplate(jinja: text)
            }
        } else if pathKind(config) == .file {
            chatTemplate = attempt {
                do {
                    return try ChatTemplate(tokenizerConfig: config)
                } catch PEFTKitError.notFound {
                    return nil  // a tokenizer_config.json without a template is normal
                }
            }
        }
    }

    /// Reads both from a `.gguf` file, a tokenizer.json file, or a model folder. Unlike the loaders above,
    /// throws when no tokenizer could be read.
    static func read(path: String, vocabSize: Int) throws -> TextSupport {
        var t: TextSupport
        switch pathKind(path) {
        case .directory:
            t = TextSupport(folder: path, vocabSize: vocabSize)
        case .file where path.hasSuffix(".gguf"):
            t = TextSupport(gguf: try GGUFFile(path: path), vocabSize: vocabSize)
        case .file:
            t = TextSupport()
            t.tokenizer = try checked(Tokenizer(tokenizerJSON: path), vocabSize: vocabSize)
            let dir = path.lastIndex(of: "/").map { String(path[..<$0]) } ?? "."
            t.readChatTemplate(folder: dir.isEmpty ? "/" : dir)
        default:
            throw PEFTKitError.io("'\(path)' does not exist")
        }
        if t.tokenizer == nil {
            throw t.errors.first ?? PEFTKitError.notFound("'\(path)' has no tokenizer PEFTKit can read "
                + "(GGUF tokenizer.ggml.* metadata, tokenizer.json, or vocab.json + merges.txt)")
        }
        return t
    }

    private mutating func attempt<T>(_ body: () throws -> T?) -> T? {
        do {
            return try body()
        } catch let e as PEFTKitError {
            errors.append(e)
        } catch {
            errors.append(.format("\(error)"))
        }
        return nil
    }
}

/// Where a model's tokenizer and chat template came from.
enum TextOrigin: Sendable {
    /// A Hugging Face folder (its tokenizer files are copied when the model is saved as a folder).
    case folder(String)
    /// A GGUF file's `tokenizer.*` metadata, in file order (written into a saved GGUF model as it is).
    case gguf([(String, GGUFValue)])
}

/// `tokenizer` if every id it makes is a row of the model's embedding.
private func checked(_ tokenizer: Tokenizer, vocabSize: Int) throws -> Tokenizer {
    guard tokenizer.vocabSize <= vocabSize else {
        throw PEFTKitError.format("the tokenizer has \(tokenizer.vocabSize) token ids but the model's vocabulary is \(vocabSize)")
    }
    return tokenizer
}

extension Model {
    /// The tokenizer that turns text into this model's token ids, or nil when the model has none.
    ///
    /// Set by `load(path:)` from a GGUF file's `tokenizer.ggml.*` metadata (byte-level BPE,
    /// `tokenizer.ggml.model` "gpt2"; other tokenizer models give nil) or from a folder's tokenizer.json
    /// (else vocab.json + merges.txt); nil for `create(config:)` models until `setTokenizer` is called.
    /// Safe to read at any time, also while another call on the model runs.
    ///
    /// ```swift
    /// let model = try Model.load(path: "SmolLM2-135M-Instruct.Q4_1.gguf")
    /// if let tok = model.tokenizer, let chat = model.chatTemplate {
    ///     let prompt = chat.applyChatTemplate([ChatMessage(role: "user", content: "Hi")], addGenerationPrompt: true)
    ///     var gen = GenerateConfig(); gen.stopTokens = model.stopTokenIDs
    ///     let reply = try model.generate(prompt: tok.encode(prompt, addSpecial: tok.addsBOS), config: gen)
    ///     print(try tok.decode(reply, skipSpecial: true))
    /// }
    /// ```
    public var tokenizer: Tokenizer? { text.withLock { $0.tokenizer } }

    /// The model's chat template, or nil: from GGUF `tokenizer.chat_template`, or a folder's
    /// chat_template.jinja / tokenizer_config.json `chat_template`. A template outside the Jinja subset
    /// `ChatTemplate` renders leaves it nil (see `tokenizerIssue`).
    public var chatTemplate: ChatTemplate? { text.withLock { $0.chatTemplate } }

    /// Why `tokenizer` or `chatTemplate` is nil although the model files carry one (e.g. "tokenizer model
    /// 'llama' is not supported"), or nil when nothing went wrong.
    public var tokenizerIssue: String? {
        text.withLock { t in t.errors.isEmpty ? nil : t.errors.map(\.message).joined(separator: "; ") }
    }

    /// Attaches a tokenizer and chat template (either may be nil), replacing the ones the model had; e.g. to
    /// give a `create(config:)` model a vocabulary. Throws `invalidArgument` when the tokenizer makes ids
    /// beyond the model's vocabulary.
    public func setTokenizer(_ tokenizer: Tokenizer?, chatTemplate: ChatTemplate?) throws {
        if let tokenizer {
            try require(tokenizer.vocabSize <= config.vocabSize,
                        "the tokenizer has \(tokenizer.vocabSize) token ids but the model's vocabulary is \(config.vocabSize)")
        }
        text.withLock { $0 = TextSupport(); $0.tokenizer = tokenizer; $0.chatTemplate = chatTemplate }
    }

    /// Reads a tokenizer and chat template from `path` (a `.gguf` file, a tokenizer.json file, or a model
    /// folder) and attaches them as `setTokenizer` does. Throws when `path` has no tokenizer PEFTKit can read
    /// (`notFound`, `unsupported`, `format`, `io`) or its ids do not fit the model (`format`).
    public func loadTokenizer(path: String) throws {
        let t = try TextSupport.read(path: path, vocabSize: config.vocabSize)
        text.withLock { $0 = t }
    }

    /// The token that ends a chat turn: the chat template's `endOfTurn` text (`<|im_end|>`) when there is a
    /// template and the tokenizer knows it, else `Tokenizer.endOfTurnID`. Nil without a tokenizer.
    public var endOfTurnID: Int32? {
        text.withLock { t in
            guard let tok = t.tokenizer else { return nil }
            if let chat = t.chatTemplate, let id = tok.id(of: chat.endOfTurn) { return id }
            return tok.endOfTurnID
        }
    }

    /// The tokens generation should stop on: EOS and the end-of-turn token, without duplicates
    /// (`GenerateConfig.stopTokens`). Empty without a tokenizer.
    public var stopTokenIDs: [Int32] {
        var out: [Int32] = []
        for id in [tokenizer?.eosID, endOfTurnID].compactMap({ $0 }) where !out.contains(id) { out.append(id) }
        return out
    }
}
