import FoundationEssentials

// JSON helpers for the IO layer: decoding with errors that name the file and the field, and a tiny
// writer for the safetensors header (whose key order and padding PEFTKit controls byte for byte).

/// A coding key for objects whose keys are data (tensor names, weight-map entries).
struct AnyKey: CodingKey {
    var stringValue: String
    var intValue: Int? { nil }
    init(stringValue: String) { self.stringValue = stringValue }
    init?(intValue: Int) { return nil }
}

/// Decodes `T` from `bytes`, turning any decoding failure into `PEFTKitError.format` that names `source`
/// and, where known, the JSON path of the offending value.
func decodeJSON<T: Decodable>(_ type: T.Type, from bytes: UnsafeRawBufferPointer, source: String) throws -> T {
    let data = Data(bytes)
    do {
        return try JSONDecoder().decode(T.self, from: data)
    } catch let error as PEFTKitError {
        throw error
    } catch let error as DecodingError {
        throw PEFTKitError.format("\(source): \(describe(error))")
    } catch {
        throw PEFTKitError.format("\(source): invalid JSON (\(error))")
    }
}

func decodeJSON<T: Decodable>(_ type: T.Type, from bytes: [UInt8], source: String) throws -> T {
    try bytes.withUnsafeBytes { try decodeJSON(type, from: $0, source: source) }
}

private func pathString(_ path: [any CodingKey]) -> String {
    if path.isEmpty { return "top level" }
    var out = ""
    for key in path {
        if let i = key.intValue { out += "[\(i)]" } else { out += (out.isEmpty ? "" : ".") + key.stringValue }
    }
    return "'" + out + "'"
}

private func describe(_ error: DecodingError) -> String {
    switch error {
    case .typeMismatch(let type, let ctx):
        return "\(pathString(ctx.codingPath)) has the wrong type (expected \(jsonTypeName(type)))"
    case .valueNotFound(let type, let ctx):
        return "\(pathString(ctx.codingPath)) is null (expected \(jsonTypeName(type)))"
    case .keyNotFound(let key, let ctx):
        return "missing key '\(key.stringValue)' in \(pathString(ctx.codingPath))"
    case .dataCorrupted(let ctx):
        if ctx.codingPath.isEmpty { return "invalid JSON (\(ctx.debugDescription))" }
        return "bad value at \(pathString(ctx.codingPath)) (\(ctx.debugDescription))"
    @unknown default:
        return "invalid JSON"
    }
}

private func jsonTypeName(_ type: Any.Type) -> String {
    switch type {
    case is String.Type: return "a string"
    case is Int.Type, is Int64.Type, is Int32.Type: return "an integer"
    case is Double.Type, is Float.Type: return "a number"
    case is Bool.Type: return "true or false"
    default: return String(describing: type).hasPrefix("Array") ? "an array" : "an object"
    }
}

/// `s` as a JSON string literal, quotes included.
func jsonQuoted(_ s: String) -> String {
    var out = "\""
    for u in s.unicodeScalars {
        switch u {
        case "\"": out += "\\\""
        case "\\": out += "\\\\"
        case "\n": out += "\\n"
        case "\r": out += "\\r"
        case "\t": out += "\\t"
        default:
            if u.value < 0x20 {
                let hex = String(u.value, radix: 16)
                out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
            } else {
                out.unicodeScalars.append(u)
            }
        }
    }
    out += "\""
    return out
}
