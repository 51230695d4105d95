/// A JSON value for writing files whose readers care about number types (Python reads `1` as int and
/// `1.0` as float, and AdapterHub rejects an int where it expects a float).
enum JSONValue {
    case string(String)
    case int(Int)
    /// Always written with a fraction or exponent, so it reads back as a float.
    case double(Double)
    case bool(Bool)
    case null
    case array([JSONValue])
    /// Keys are written sorted.
    case object([String: JSONValue])

    /// Pretty-printed with two-space indentation and sorted keys.
    func serialized() -> String {
        var out = ""
        write(into: &out, indent: 0)
        return out
    }

    private func write(into out: inout String, indent: Int) {
        switch self {
        case .string(let s): JSONValue.writeString(s, into: &out)
        case .int(let i): out += String(i)
        case .double(let d):
            if !d.isFinite { out += "null"; return }
            var t = "\(d)"
            if !t.contains(".") && !t.contains("e") { t += ".0" }
            out += t
        case .bool(let b): out += b ? "true" : "false"
        case .null: out += "null"
        case .array(let a):
            if a.isEmpty { out += "[]"; return }
            out += "["
            for (i, v) in a.enumerated() {
                out += i == 0 ? "" : ", "
                v.write(into: &out, indent: indent)
            }
            out += "]"
        case .object(let o):
            if o.isEmpty { out += "{}"; return }
            let pad = String(repeating: " ", count: indent + 2)
            out += "{\n"
            for (i, k) in o.keys.sorted().enumerated() {
                out += pad
                JSONValue.writeString(k, into: &out)
                out += ": "
                o[k]!.write(into: &out, indent: indent + 2)
                out += i + 1 < o.count ? ",\n" : "\n"
            }
            out += String(repeating: " ", count: indent) + "}"
        }
    }

    private static func writeString(_ s: String, into out: inout String) {
        out += jsonQuoted(s)
    }

}

extension JSONValue: Codable, Equatable {
    func encode(to encoder: Encoder) throws {
        var c = encoder.singleValueContainer()
        switch self {
        case .string(let s): try c.encode(s)
        case .int(let i): try c.encode(i)
        case .double(let d): try c.encode(d)
        case .bool(let b): try c.encode(b)
        case .null: try c.encodeNil()
        case .array(let a): try c.encode(a)
        case .object(let o): try c.encode(o)
        }
    }

    /// Reads any JSON value. Integers that fit `Int` stay `.int`; other numbers are `.double`.
    init(from decoder: Decoder) throws {
        let c = try decoder.singleValueContainer()
        if c.decodeNil() { self = .null; return }
        if let b = try? c.decode(Bool.self) { self = .bool(b); return }
        if let i = try? c.decode(Int.self) { self = .int(i); return }
        if let d = try? c.decode(Double.self) { self = .double(d); return }
        if let s = try? c.decode(String.self) { self = .string(s); return }
        if let a = try? c.decode([JSONValue].self) { self = .array(a); return }
        self = .object(try c.decode([String: JSONValue].self))
    }

    /// Parses a JSON text whose top level must be an object.
    static func parseObject(_ bytes: [UInt8], source: String) throws -> [String: JSONValue] {
        guard case .object(let o) = try decodeJSON(JSONValue.self, from: bytes, source: source) else {
            throw PEFTKitError.format("\(source): the top level is not a JSON object")
        }
        return o
    }

    /// Equal values; numbers compare by value (`1` equals `1.0`: JSON does not tell them apart reliably).
    static func == (a: JSONValue, b: JSONValue) -> Bool {
        switch (a, b) {
        case (.string(let x), .string(let y)): return x == y
        case (.bool(let x), .bool(let y)): return x == y
        case (.null, .null): return true
        case (.int(let x), .int(let y)): return x == y
        case (.double(let x), .double(let y)): return x == y
        case (.int(let x), .double(let y)), (.double(let y), .int(let x)): return Double(x) == y
        case (.array(let x), .array(let y)): return x == y
        case (.object(let x), .object(let y)): return x == y
        default: return false
        }
    }

    /// Whether the value says "nothing": null, false, 0, an empty string, array or object.
    var isNeutral: Bool {
        switch self {
        case .null: return true
        case .bool(let b): return !b
        case .int(let i): return i == 0
        case .double(let d): return d == 0
        case .string(let s): return s.isEmpty
        case .array(let a): return a.isEmpty
        case .object(let o): return o.isEmpty
        }
    }

    /// The object re-encoded as bytes, for a `Decodable` view of it.
    func encodedBytes() -> [UInt8] { Array(serialized().utf8) }
}

