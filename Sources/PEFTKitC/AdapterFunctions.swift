// Attaching, listing, activating, saving and loading adapters.

import CPEFTKit
import PEFTKit

/// The longest config_json peftkit_adapter_attach_json reads (documented in peftkit.h).
private let maxConfigJSONBytes = 1 << 20

@c @implementation
public func peftkit_adapter_attach_json(_ model: OpaquePointer?, _ name: UnsafePointer<CChar>?,
                                        _ configJSON: UnsafePointer<CChar>?) -> peftkit_status {
    entry("peftkit_adapter_attach_json") {
        let h = try ModelHandle.from(model)
        let n = try readName(name)
        let json = try readString(configJSON, "config_json", maxBytes: maxConfigJSONBytes)
        try h.model.attachAdapter(name: n, configJSON: json)
    }
}

@c @implementation
public func peftkit_adapter_set_active(_ model: OpaquePointer?, _ name: UnsafePointer<CChar>?) -> peftkit_status {
    entry("peftkit_adapter_set_active") {
        let h = try ModelHandle.from(model)
        let n: String? = name == nil ? nil : try readName(name)
        try h.model.setActiveAdapter(n)
    }
}

@c @implementation
public func peftkit_adapter_remove(_ model: OpaquePointer?, _ name: UnsafePointer<CChar>?) -> peftkit_status {
    entry("peftkit_adapter_remove") {
        let h = try ModelHandle.from(model)
        let n = try readName(name)
        try h.model.removeAdapter(name: n)
    }
}

@c @implementation
public func peftkit_adapter_count(_ model: OpaquePointer?, _ out: UnsafeMutablePointer<Int32>?) -> peftkit_status {
    entry("peftkit_adapter_count") {
        let h = try ModelHandle.from(model)
        guard let out else { throw ShimError.invalid("out is NULL") }
        let count = h.model.adapterNames.count
        out.pointee = Int32(bounded: count)
    }
}

@c @implementation
public func peftkit_adapter_name(_ model: OpaquePointer?, _ index: Int32, _ buf: UnsafeMutablePointer<CChar>?,
                                 _ cap: Int, _ lenOut: UnsafeMutablePointer<Int>?) -> peftkit_status {
    entry("peftkit_adapter_name") {
        let h = try ModelHandle.from(model)
        let names = h.model.adapterNames
        guard index >= 0 && Int(index) < names.count else {
            throw ShimError.invalid("index \(index) is out of range [0, \(names.count))")
        }
        try writeString(names[Int(index)], buf, cap, lenOut, "buf")
    }
}

@c @implementation
public func peftkit_adapter_get_active(_ model: OpaquePointer?, _ buf: UnsafeMutablePointer<CChar>?,
                                       _ cap: Int, _ lenOut: UnsafeMutablePointer<Int>?) -> peftkit_status {
    entry("peftkit_adapter_get_active") {
        let h = try ModelHandle.from(model)
        let active = h.model.activeAdapter
        try writeString(active ?? "", buf, cap, lenOut, "buf")
    }
}

@c @implementation
public func peftkit_adapter_num_params(_ model: OpaquePointer?, _ name: UnsafePointer<CChar>?,
                                       _ out: UnsafeMutablePointer<Int64>?) -> peftkit_status {
    entry("peftkit_adapter_num_params") {
        let h = try ModelHandle.from(model)
        let n = try readName(name)
        guard let out else { throw ShimError.invalid("out is NULL") }
        let count = try h.model.adapterParameterCount(name: n)
        out.pointee = Int64(count)
    }
}

@c @implementation
public func peftkit_adapter_save(_ model: OpaquePointer?, _ name: UnsafePointer<CChar>?,
                                 _ dir: UnsafePointer<CChar>?) -> peftkit_status {
    entry("peftkit_adapter_save") {
        let h = try ModelHandle.from(model)
        let n = try readName(name)
        let d = try readString(dir, "dir")
        guard !d.isEmpty else { throw ShimError.invalid("dir is empty") }
        try h.model.saveAdapter(name: n, to: d)
    }
}

@c @implementation
public func peftkit_adapter_save_as(_ model: OpaquePointer?, _ name: UnsafePointer<CChar>?,
                                    _ path: UnsafePointer<CChar>?, _ format: Int32) -> peftkit_status {
    entry("peftkit_adapter_save_as") {
        let h = try ModelHandle.from(model)
        let n = try readName(name)
        let p = try readString(path, "path")
        guard !p.isEmpty else { throw ShimError.invalid("path is empty") }
        let f: AdapterFormat
        switch format {
        case PEFTKIT_ADAPTER_FORMAT_NATIVE: f = .native
        case PEFTKIT_ADAPTER_FORMAT_GGUF: f = .gguf
        case PEFTKIT_ADAPTER_FORMAT_CONVERTED_LORA: f = .convertedLoRA
        default: throw ShimError.invalid("format \(format) is not a PEFTKIT_ADAPTER_FORMAT_* value")
        }
        try h.model.saveAdapter(name: n, to: p, format: f)
    }
}

@c @implementation
public func peftkit_adapter_load(_ model: OpaquePointer?, _ dir: UnsafePointer<CChar>?, _ name: UnsafePointer<CChar>?,
                                 _ nameOut: UnsafeMutablePointer<CChar>?, _ nameCap: Int) -> peftkit_status {
    entry("peftkit_adapter_load") {
        let h = try ModelHandle.from(model)
        let d = try readString(dir, "dir")
        guard !d.isEmpty else { throw ShimError.invalid("dir is empty") }
        let n: String? = name == nil ? nil : try readName(name)
        var capacity = 0
        if nameOut != nil {
            capacity = try readCapacity(nameCap, "name_cap")
            if let n, n.utf8.count >= capacity {
                throw ShimError.tooSmall("name_out needs \(n.utf8.count + 1) bytes, name_cap is \(capacity)")
            }
        }
        let used = try h.model.loadAdapter(from: d, name: n)
        guard let nameOut else { return }
        if used.utf8.count >= capacity {
            // The caller cannot learn the name: undo the load so that the call has no effect.
            try h.model.removeAdapter(name: used)
            throw ShimError.tooSmall("name_out needs \(used.utf8.count + 1) bytes for adapter name '\(used)', "
                                     + "name_cap is \(capacity); the adapter was not attached")
        }
        try writeString(used, nameOut, capacity, nil, "name_out")
    }
}

@c @implementation
public func peftkit_adapter_method(_ model: OpaquePointer?, _ name: UnsafePointer<CChar>?,
                                   _ out: UnsafeMutablePointer<Int32>?) -> peftkit_status {
    entry("peftkit_adapter_method") {
        let h = try ModelHandle.from(model)
        let n = try readName(name)
        guard let out else { throw ShimError.invalid("out is NULL") }
        let m = try h.model.adapterMethod(name: n)
        out.pointee = methodCode(m)
    }
}

@c @implementation
public func peftkit_adapter_merge(_ model: OpaquePointer?, _ name: UnsafePointer<CChar>?) -> peftkit_status {
    entry("peftkit_adapter_merge") {
        let h = try ModelHandle.from(model)
        let n = try readName(name)
        try h.model.mergeAdapter(name: n)
    }
}

@c @implementation
public func peftkit_adapter_unmerge(_ model: OpaquePointer?, _ name: UnsafePointer<CChar>?) -> peftkit_status {
    entry("peftkit_adapter_unmerge") {
        let h = try ModelHandle.from(model)
        let n = try readName(name)
        try h.model.unmergeAdapter(name: n)
    }
}
