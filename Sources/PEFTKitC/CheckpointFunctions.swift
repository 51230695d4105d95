// Training checkpoints: save and resume an adapter with its optimiser state.

import CPEFTKit
import PEFTKit

@c @implementation
public func peftkit_checkpoint_save(_ model: OpaquePointer?, _ name: UnsafePointer<CChar>?,
                                    _ dir: UnsafePointer<CChar>?) -> peftkit_status {
    entry("peftkit_checkpoint_save") {
        let h = try ModelHandle.from(model)
        let n = try readName(name)
        let d = try readString(dir, "dir")
        guard !d.isEmpty else { throw ShimError.invalid("dir is empty") }
        try h.model.saveCheckpoint(name: n, to: d)
    }
}

@c @implementation
public func peftkit_checkpoint_load(_ model: OpaquePointer?, _ dir: UnsafePointer<CChar>?,
                                    _ nameOut: UnsafeMutablePointer<CChar>?, _ nameCap: Int) -> peftkit_status {
    entry("peftkit_checkpoint_load") {
        let h = try ModelHandle.from(model)
        let d = try readString(dir, "dir")
        guard !d.isEmpty else { throw ShimError.invalid("dir is empty") }
        let capacity = nameOut == nil ? 0 : try readCapacity(nameCap, "name_cap")
        let used = try h.model.loadCheckpoint(from: d)
        guard let nameOut else { return }
        if used.utf8.count >= capacity {
            // The caller cannot learn the name: undo the load so that the call has no effect.
            try h.model.removeAdapter(name: used)
            throw ShimError.tooSmall("name_out needs \(used.utf8.count + 1) bytes for adapter name '\(used)', "
                                     + "name_cap is \(capacity); the checkpoint was not loaded")
        }
        try writeString(used, nameOut, capacity, nil, "name_out")
    }
}
