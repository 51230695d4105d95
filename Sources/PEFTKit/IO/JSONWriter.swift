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
