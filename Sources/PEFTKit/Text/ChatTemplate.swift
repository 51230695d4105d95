// ChatML chat templates. Models ship their prompt format as a Jinja template (GGUF `tokenizer.chat_template`,
// `chat_template` in tokenizer_config.json). PEFTKit renders the ChatML family of templates with a small
// interpreter for the subset of Jinja they use: text, `{{ expr }}`, `{% for message in messages %}`,
// `{% if %}/{% elif %}/{% else %}`, string literals, `+`, `==`, `!=`, `and`, `or`, `not`, `message['role']`,
// `messages[0]['content']`, `loop.first` / `loop.last` / `loop.index`, `add_generation_prompt`, with
// transformers' environment settings (trim_blocks, lstrip_blocks, whitespace control with `-`).
// Templates outside that subset, or without the ChatML markers, are refused with `unsupported`.
//
// SmolLM2-Instruct's template is ChatML plus one rule: when the first message is not a system message, a
// default system message ("You are a helpful AI assistant named SmolLM, trained by Hugging Face") comes
// first. The interpreter reproduces that rule from the template text itself.

/// One message of a conversation.
public struct ChatMessage: Sendable, Equatable {
    /// "system", "user", "assistant", or any other role the template passes through.
    public var role: String
    public var content: String

    public init(role: String, content: String) {
        self.role = role
        self.content = content
    }
}

/// A ChatML chat template, parsed once and rendered for any conversation.
///
/// ```swift
/// let template = try ChatTemplate(jinja: ggufChatTemplate)
/// let prompt = template.applyChatTemplate([ChatMessage(role: "user", content: "Hi")], addGenerationPrompt: true)
/// // "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, ...<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
/// ```
public struct ChatTemplate: Sendable {
    private let nodes: [JNode]

    /// Plain ChatML: `<|im_start|>{role}\n{content}<|im_end|>\n` per message, generation prompt
    /// `<|im_start|>assistant\n`, no default system message.
    public static let chatML: ChatTemplate = {
        // The template text is a constant known to parse.
        try! ChatTemplate(jinja: "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")
    }()

    /// The text that closes every turn of a ChatML conversation. Its token id (`Tokenizer.id(of:)`) is
    /// where generation of a reply should stop.
    public var endOfTurn: String { "<|im_end|>" }

    /// Parses a Jinja chat template. Throws `unsupported` if it is not a ChatML template (no `<|im_start|>` /
    /// `<|im_end|>` markers) or uses Jinja beyond the subset described above, `format` if it is malformed.
    public init(jinja template: String) throws {
        guard template.contains("<|im_start|>"), template.contains("<|im_end|>") else {
            throw PEFTKitError.unsupported("chat template: not a ChatML template (no <|im_start|> / <|im_end|> markers)")
        }
        var parser = try JParser(template)
        nodes = try parser.parseBody(until: [])
    }

    /// Reads `chat_template` from a Hugging Face `tokenizer_config.json` (a string, or a list of named
    /// templates of which "default" is taken) and parses it.
    public init(tokenizerConfig path: String) throws {
        let bytes = try readWholeFile(path: path, maxBytes: 256 << 20)
        let config = try decodeJSON(ChatTemplateConfig.self, from: bytes, source: "'\(path)'")
        guard let template = config.chatTemplate?.text else {
            throw PEFTKitError.notFound("'\(path)' has no chat_template")
        }
        try self.init(jinja: template)
    }

    /// Renders `messages`; with `addGenerationPrompt` the text ends with the opening of an assistant turn.
    public func applyChatTemplate(_ messages: [ChatMessage], addGenerationPrompt: Bool) -> String {
        var out = ""
        var scope = JScope(messages: messages, addGenerationPrompt: addGenerationPrompt)
        render(nodes, &scope, &out)
        return out
    }

    private func render(_ nodes: [JNode], _ scope: inout JScope, _ out: inout String) {
        for node in nodes {
            switch node {
            case .text(let s):
                out += s
            case .output(let e):
                out += e.evaluate(scope).text
            case .ifBlock(let branches, let otherwise):
                var done = false
                for (cond, body) in branches where cond.evaluate(scope).truthy {
                    render(body, &scope, &out)
                    done = true
                    break
                }
                if !done { render(otherwise, &scope, &out) }
            case .forMessages(let body):
                let saved = scope.loop
                for i in 0..<scope.messages.count {
                    scope.loop = (i, scope.messages.count)
                    render(body, &scope, &out)
                }
                scope.loop = saved
            }
        }
    }
}

private struct ChatTemplateConfig: Decodable {
    struct Named: Decodable { var name: String; var template: String }
    enum Template: Decodable {
        case single(String)
        case named([Named])
        init(from decoder: any Decoder) throws {
            let c = try decoder.singleValueContainer()
            if let s = try? c.decode(String.self) { self = .single(s) } else { self = .named(try c.decode([Named].self)) }
        }
        var text: String? {
            switch self {
            case .single(let s): return s
            case .named(let list): return list.first(where: { $0.name == "default" })?.template
            }
        }
    }
    var chatTemplate: Template?
    enum CodingKeys: String, CodingKey { case chatTemplate = "chat_template" }
}

// MARK: interpreter

private struct JScope {
    var messages: [ChatMessage]
    var addGenerationPrompt: Bool
    /// (index, count) of the innermost `for message in messages` loop.
    var loop: (index: Int, count: Int)? = nil
}

private enum JValue: Sendable {
    case string(String), bool(Bool), int(Int), message(ChatMessage), messages, loop, undefined

    var truthy: Bool {
        switch self {
        case .string(let s): return !s.isEmpty
        case .bool(let b): return b
        case .int(let i): return i != 0
        case .message: return true
        case .messages, .loop: return true
        case .undefined: return false
        }
    }

    var text: String {
        switch self {
        case .string(let s): return s
        case .bool(let b): return b ? "True" : "False"
        case .int(let i): return String(i)
        case .undefined: return ""
        case .message(let m): return "{'role': '\(m.role)', 'content': '\(m.content)'}"
        case .messages: return "[messages]"
        case .loop: return "<loop>"
        }
    }

    static func == (a: JValue, b: JValue) -> Bool {
        switch (a, b) {
        case (.string(let x), .string(let y)): return x == y
        case (.bool(let x), .bool(let y)): return x == y
        case (.int(let x), .int(let y)): return x == y
        case (.undefined, .undefined): return true
        default: return false
        }
    }
}

private indirect enum JExpr: Sendable {
    case literal(JValue)
    case name(String)                 // messages, message, loop, add_generation_prompt
    case attribute(JExpr, String)     // x.role, x['role'], loop.first
    case index(JExpr, Int)            // messages[0]
    case concat(JExpr, JExpr)
    case equal(JExpr, JExpr, negated: Bool)
    case and(JExpr, JExpr)
    case or(JExpr, JExpr)
    case not(JExpr)

    func evaluate(_ scope: JScope) -> JValue {
        switch self {
        case .literal(let v): return v
        case .name(let n):
            switch n {
            case "messages": return .messages
            case "add_generation_prompt": return .bool(scope.addGenerationPrompt)
            case "loop": return scope.loop == nil ? .undefined : .loop
            case "message":
                guard let l = scope.loop else { return .undefined }
                return .message(scope.messages[l.index])
            default: return .undefined
            }
        case .attribute(let base, let key):
            switch base.evaluate(scope) {
            case .message(let m):
                return key == "role" ? .string(m.role) : key == "content" ? .string(m.content) : .undefined
            case .loop:
                guard let l = scope.loop else { return .undefined }
                switch key {
                case "first": return .bool(l.index == 0)
                case "last": return .bool(l.index == l.count - 1)
                case "index": return .int(l.index + 1)
                case "index0": return .int(l.index)
                case "length": return .int(l.count)
                default: return .undefined
                }
            default: return .undefined
            }
        case .index(let base, let i):
            guard case .messages = base.evaluate(scope) else { return .undefined }
            let n = scope.messages.count
            let k = i < 0 ? n + i : i
            return k >= 0 && k < n ? .message(scope.messages[k]) : .undefined
        case .concat(let a, let b):
            let x = a.evaluate(scope), y = b.evaluate(scope)
            if case .int(let p) = x, case .int(let q) = y { return .int(p + q) }
            return .string(x.text + y.text)
        case .equal(let a, let b, let negated):
            return .bool((a.evaluate(scope) == b.evaluate(scope)) != negated)
        case .and(let a, let b):
            let x = a.evaluate(scope)
            return x.truthy ? b.evaluate(scope) : x
        case .or(let a, let b):
            let x = a.evaluate(scope)
            return x.truthy ? x : b.evaluate(scope)
        case .not(let a):
            return .bool(!a.evaluate(scope).truthy)
        }
    }
}

private indirect enum JNode: Sendable {
    case text(String)
    case output(JExpr)
    case ifBlock([(JExpr, [JNode])], [JNode])
    case forMessages([JNode])
}

/// A template cut into text, `{{ }}` and `{% %}` pieces, with Jinja's whitespace rules applied.
private enum JPiece {
    case text(String)
    case output(String)
    case statement(String)
}

private struct JParser {
    private var pieces: [JPiece] = []
    private var position = 0
    /// Nesting of for/if blocks: parsing, rendering and freeing the tree recurse once per level, so a hostile
    /// template must not nest deeper than a thread's stack can take.
    private var depth = 0
    static let maxDepth = 32

    init(_ template: String) throws {
        pieces = try JParser.lex(template)
    }

    /// Splits the template and applies trim_blocks, lstrip_blocks, `-` whitespace control, and the removal of
    /// one trailing newline (keep_trailing_newline = false), as transformers' Jinja environment does.
    static func lex(_ template: String) throws -> [JPiece] {
        var src = Array(template.unicodeScalars)
        if src.last == "\n" { src.removeLast() }
        var out: [JPiece] = []
        var text: [Unicode.Scalar] = []
        var i = 0
        // Whether the pending text starts at the beginning of a line (template start, or right after a
        // newline that trim_blocks removed).
        var textStartsLine = true
        func flushText(stripTrailing: Bool, lstripLine: Bool) {
            if stripTrailing {
                while let l = text.last, l.properties.isWhitespace { text.removeLast() }
            } else if lstripLine {
                // lstrip_blocks: only spaces and tabs between the start of the line and the tag: remove them.
                var k = text.count
                while k > 0, text[k - 1] == " " || text[k - 1] == "\t" { k -= 1 }
                if (k == 0 && textStartsLine) || (k > 0 && text[k - 1] == "\n") { text.removeSubrange(k...) }
            }
            if !text.isEmpty { out.append(.text(String(String.UnicodeScalarView(text)))) }
            text.removeAll()
        }
        while i < src.count {
            let c = src[i]
            if c == "{", i + 1 < src.count, src[i + 1] == "{" || src[i + 1] == "%" || src[i + 1] == "#" {
                let kind = src[i + 1]
                let close: Unicode.Scalar = kind == "{" ? "}" : kind == "%" ? "%" : "#"
                var j = i + 2
                let minus = j < src.count && src[j] == "-"
                if minus || (j < src.count && src[j] == "+") { j += 1 }
                // Find the closing `}}` / `%}` / `#}` outside string literals.
                var k = j
                var quote: Unicode.Scalar? = nil
                var end = -1
                while k < src.count {
                    let d = src[k]
                    if let q = quote {
                        if d == "\\" { k += 2; continue }
                        if d == q { quote = nil }
                    } else if d == "'" || d == "\"" {
                        quote = d
                    } else if d == close, k + 1 < src.count, src[k + 1] == "}" {
                        end = k
                        break
                    }
                    k += 1
                }
                guard end >= 0 else { throw PEFTKitError.format("chat template: unclosed tag at character \(i)") }
                var bodyEnd = end
                let closeMinus = bodyEnd > j && src[bodyEnd - 1] == "-"
                if closeMinus || (bodyEnd > j && src[bodyEnd - 1] == "+") { bodyEnd -= 1 }
                var lo = j, hi = bodyEnd
                while lo < hi, src[lo].properties.isWhitespace { lo += 1 }
                while hi > lo, src[hi - 1].properties.isWhitespace { hi -= 1 }
                let body = String(String.UnicodeScalarView(src[lo..<hi]))
                flushText(stripTrailing: minus, lstripLine: kind != "{")
                switch kind {
                case "{": out.append(.output(body))
                case "%": out.append(.statement(body))
                default: break  // comment
                }
                i = end + 2
                textStartsLine = false
                if closeMinus {
                    while i < src.count, src[i].properties.isWhitespace { i += 1 }
                } else if kind != "{", i < src.count, src[i] == "\n" {
                    // trim_blocks: the newline right after a block tag goes.
                    i += 1
                    textStartsLine = true
                }
                continue
            }
            text.append(c)
            i += 1
        }
        flushText(stripTrailing: false, lstripLine: false)
        return out
    }

    /// Parses nodes until one of the statements in `until` (returned to the caller via `position`).
    mutating func parseBody(until: [String]) throws -> [JNode] {
        depth += 1
        defer { depth -= 1 }
        guard depth <= JParser.maxDepth else {
            throw PEFTKitError.format("chat template: blocks nested deeper than \(JParser.maxDepth)")
        }
        var nodes: [JNode] = []
        while position < pieces.count {
            switch pieces[position] {
            case .text(let s):
                nodes.append(.text(s))
                position += 1
            case .output(let e):
                nodes.append(.output(try JExprParser.parse(e)))
                position += 1
            case .statement(let s):
                let word = s.split(separator: " ", maxSplits: 1).first.map(String.init) ?? ""
                if until.contains(word) { return nodes }
                position += 1
                switch word {
                case "for":
                    let words = s.split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == "\n" })
                    guard words.count == 4, words[1] == "message", words[2] == "in", words[3] == "messages" else {
                        throw PEFTKitError.unsupported("chat template: '{% \(s) %}' is not supported (only 'for message in messages')")
                    }
                    let body = try parseBody(until: ["endfor"])
                    try expect("endfor")
                    nodes.append(.forMessages(body))
                case "if":
                    var branches: [(JExpr, [JNode])] = []
                    var condition = try JExprParser.parse(String(s.dropFirst(2)))
                    var otherwise: [JNode] = []
                    while true {
                        let body = try parseBody(until: ["elif", "else", "endif"])
                        branches.append((condition, body))
                        guard position < pieces.count, case .statement(let t) = pieces[position] else {
                            throw PEFTKitError.format("chat template: '{% if %}' without '{% endif %}'")
                        }
                        position += 1
                        if t.hasPrefix("elif") {
                            condition = try JExprParser.parse(String(t.dropFirst(4)))
                            continue
                        }
                        if t == "else" {
                            otherwise = try parseBody(until: ["endif"])
                            try expect("endif")
                        }
                        break
                    }
                    nodes.append(.ifBlock(branches, otherwise))
                default:
                    throw PEFTKitError.unsupported("chat template: '{% \(s) %}' is not supported by PEFTKit's ChatML renderer")
                }
            }
        }
        if !until.isEmpty {
            throw PEFTKitError.format("chat template: missing '{% \(until.last ?? "") %}'")
        }
        return nodes
    }

    private mutating func expect(_ word: String) throws {
        guard position < pieces.count, case .statement(let s) = pieces[position], s == word else {
            throw PEFTKitError.format("chat template: expected '{% \(word) %}'")
        }
        position += 1
    }
}

/// Expression parser for the subset: or > and > not > comparison > + > postfix (`.x`, `['x']`, `[0]`) > atom.
private struct JExprParser {
    enum Token: Equatable { case string(String), int(Int), name(String), op(String) }
    var tokens: [Token]
    var position = 0
    let source: String
    /// Parentheses and `not`s currently open. The tree's depth is bounded by this and by the token count, which
    /// keeps parsing, evaluating and freeing it far from a thread's stack limit.
    var depth = 0
    static let maxDepth = 32
    static let maxTokens = 512

    static func parse(_ text: String) throws -> JExpr {
        let tokens = try tokenize(text)
        guard tokens.count <= maxTokens else {
            throw PEFTKitError.format("chat template: an expression of \(tokens.count) tokens (more than \(maxTokens))")
        }
        var p = JExprParser(tokens: tokens, source: text)
        let e = try p.parseOr()
        guard p.position == p.tokens.count else { throw p.unsupported() }
        return e
    }

    func unsupported() -> PEFTKitError {
        PEFTKitError.unsupported("chat template: expression '\(source)' is not supported by PEFTKit's ChatML renderer")
    }

    static func tokenize(_ text: String) throws -> [Token] {
        let s = Array(text.unicodeScalars)
        var out: [Token] = []
        var i = 0
        while i < s.count {
            let c = s[i]
            if c.properties.isWhitespace { i += 1; continue }
            if c == "'" || c == "\"" {
                var value = String.UnicodeScalarView()
                var j = i + 1
                var closed = false
                while j < s.count {
                    let d = s[j]
                    if d == c { closed = true; break }
                    if d == "\\", j + 1 < s.count {
                        let e = s[j + 1]
                        switch e {
                        case "n": value.append("\n")
                        case "t": value.append("\t")
                        case "r": value.append("\r")
                        case "\\", "'", "\"": value.append(e)
                        default: value.append(d); value.append(e)
                        }
                        j += 2
                        continue
                    }
                    value.append(d)
                    j += 1
                }
                guard closed else { throw PEFTKitError.format("chat template: unterminated string in '\(text)'") }
                out.append(.string(String(value)))
                i = j + 1
            } else if (0x30...0x39).contains(c.value) {
                var j = i
                var v = 0
                while j < s.count, (0x30...0x39).contains(s[j].value), v < 1 << 40 { v = v * 10 + Int(s[j].value - 0x30); j += 1 }
                out.append(.int(v))
                i = j
            } else if c.isASCII, c == "_" || c.properties.isAlphabetic {
                var j = i
                while j < s.count, s[j].isASCII, s[j] == "_" || s[j].properties.isAlphabetic || (0x30...0x39).contains(s[j].value) { j += 1 }
                out.append(.name(String(String.UnicodeScalarView(s[i..<j]))))
                i = j
            } else if i + 1 < s.count, (c == "=" || c == "!"), s[i + 1] == "=" {
                out.append(.op(c == "=" ? "==" : "!="))
                i += 2
            } else if "+.[]()-".unicodeScalars.contains(c) {
                out.append(.op(String(c)))
                i += 1
            } else {
                throw PEFTKitError.unsupported("chat template: '\(c)' in expression '\(text)' is not supported")
            }
        }
        return out
    }

    mutating func parseOr() throws -> JExpr {
        var e = try parseAnd()
        while position < tokens.count, tokens[position] == .name("or") { position += 1; e = .or(e, try parseAnd()) }
        return e
    }

    mutating func parseAnd() throws -> JExpr {
        var e = try parseNot()
        while position < tokens.count, tokens[position] == .name("and") { position += 1; e = .and(e, try parseNot()) }
        return e
    }

    mutating func enter() throws {
        depth += 1
        guard depth <= JExprParser.maxDepth else {
            throw PEFTKitError.format("chat template: expression nested deeper than \(JExprParser.maxDepth) in '\(source.prefix(80))'")
        }
    }

    mutating func parseNot() throws -> JExpr {
        if position < tokens.count, tokens[position] == .name("not") {
            position += 1
            try enter()
            defer { depth -= 1 }
            return .not(try parseNot())
        }
        return try parseComparison()
    }

    mutating func parseComparison() throws -> JExpr {
        let e = try parseConcat()
        if position < tokens.count, case .op(let o) = tokens[position], o == "==" || o == "!=" {
            position += 1
            return .equal(e, try parseConcat(), negated: o == "!=")
        }
        return e
    }

    mutating func parseConcat() throws -> JExpr {
        var e = try parsePostfix()
        while position < tokens.count, tokens[position] == .op("+") { position += 1; e = .concat(e, try parsePostfix()) }
        return e
    }

    mutating func parsePostfix() throws -> JExpr {
        var e = try parseAtom()
        while position < tokens.count {
            if tokens[position] == .op(".") {
                guard position + 1 < tokens.count, case .name(let n) = tokens[position + 1] else { throw unsupported() }
                e = .attribute(e, n)
                position += 2
            } else if tokens[position] == .op("[") {
                guard position + 2 < tokens.count else { throw unsupported() }
                var k = position + 1
                var negative = false
                if tokens[k] == .op("-") { negative = true; k += 1 }
                guard k + 1 < tokens.count, tokens[k + 1] == .op("]") else { throw unsupported() }
                switch tokens[k] {
                case .string(let key) where !negative: e = .attribute(e, key)
                case .int(let i): e = .index(e, negative ? -i : i)
                default: throw unsupported()
                }
                position = k + 2
            } else {
                break
            }
        }
        return e
    }

    mutating func parseAtom() throws -> JExpr {
        guard position < tokens.count else { throw unsupported() }
        let t = tokens[position]
        position += 1
        switch t {
        case .string(let s): return .literal(.string(s))
        case .int(let i): return .literal(.int(i))
        case .name("true"), .name("True"): return .literal(.bool(true))
        case .name("false"), .name("False"): return .literal(.bool(false))
        case .name(let n) where ["messages", "message", "loop", "add_generation_prompt"].contains(n):
            return .name(n)
        case .op("("):
            try enter()
            defer { depth -= 1 }
            let e = try parseOr()
            guard position < tokens.count, tokens[position] == .op(")") else { throw unsupported() }
            position += 1
            return e
        default:
            throw unsupported()
        }
    }
}
