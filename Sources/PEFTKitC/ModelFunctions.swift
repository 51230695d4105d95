// Creating, loading, freeing and describing models.

import CPEFTKit
import PEFTKit

@c @implementation
public func peftkit_model_create(_ config: UnsafePointer<peftkit_model_config>?, _ seed: UInt64,
                                 _ out: UnsafeMutablePointer<OpaquePointer?>?) -> peftkit_status {
    out?.pointee = nil
    return entry("peftkit_model_create") {
        guard let out else { throw ShimError.invalid("out is NULL") }
        let cfg = try modelConfig(from: config)
        let model = try Model.create(config: cfg, seed: seed)
        out.pointee = ModelHandle(model).opaque
    }
}

@c @implementation
public func peftkit_model_load(_ path: UnsafePointer<CChar>?,
                               _ out: UnsafeMutablePointer<OpaquePointer?>?) -> peftkit_status {
    out?.pointee = nil
    return entry("peftkit_model_load") {
        guard let out else { throw ShimError.invalid("out is NULL") }
        let p = try readString(path, "path")
        guard !p.isEmpty else { throw ShimError.invalid("path is empty") }
        let model = try Model.load(path: p)
        out.pointee = ModelHandle(model).opaque
    }
}

@c @implementation
public func peftkit_model_load_with(_ path: UnsafePointer<CChar>?, _ flags: UInt32,
                                    _ out: UnsafeMutablePointer<OpaquePointer?>?) -> peftkit_status {
    out?.pointee = nil
    return entry("peftkit_model_load_with") {
        guard let out else { throw ShimError.invalid("out is NULL") }
        guard flags & ~UInt32(PEFTKIT_LOAD_WIDEN) == 0 else { throw ShimError.invalid("unknown load flags \(flags)") }
        let p = try readString(path, "path")
        guard !p.isEmpty else { throw ShimError.invalid("path is empty") }
        let model = try Model.load(path: p, widen: flags & UInt32(PEFTKIT_LOAD_WIDEN) != 0)
        out.pointee = ModelHandle(model).opaque
    }
}

@c @implementation
public func peftkit_model_free(_ model: OpaquePointer?) {
    guard let model else { return }
    _ = ModelHandle.release(model)  // an unknown or already freed pointer is ignored
}

@c @implementation
public func peftkit_model_get_config(_ model: OpaquePointer?,
                                     _ out: UnsafeMutablePointer<peftkit_model_config>?) -> peftkit_status {
    entry("peftkit_model_get_config") {
        let h = try ModelHandle.from(model)
        guard let out else { throw ShimError.invalid("out is NULL") }
        let size = try callerStructSize(UnsafeRawPointer(out), peftkit_model_config.self, "out")
        store(h.model.config, into: out, size: size)
    }
}

@c @implementation
public func peftkit_model_set_full_finetuning(_ model: OpaquePointer?, _ enabled: Int32) -> peftkit_status {
    entry("peftkit_model_set_full_finetuning") {
        let h = try ModelHandle.from(model)
        if enabled != 0 { try h.model.enableFullFineTuning() } else { try h.model.disableFullFineTuning() }
    }
}
