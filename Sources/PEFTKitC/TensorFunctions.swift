// Tensor access: an adapter's tensors by their saved-file names, read into and written from caller buffers.
// Translation only: the core checks names, shapes, values and the adapter's state.

import CPEFTKit
import PEFTKit

@c @implementation
public func peftkit_adapter_tensor_count(_ model: OpaquePointer?, _ adapter: UnsafePointer<CChar>?,
                                         _ out: UnsafeMutablePointer<Int32>?) -> peftkit_status {
    entry("peftkit_adapter_tensor_count") {
        let h = try ModelHandle.from(model)
        let name = try readName(adapter, "adapter")
        guard let out else { throw ShimError.invalid("out is NULL") }
        out.pointee = Int32(bounded: try h.model.adapterTensors(name: name).count)
    }
}

@c @implementation
public func peftkit_adapter_tensor_info(_ model: OpaquePointer?, _ adapter: UnsafePointer<CChar>?, _ index: Int32,
                                        _ nameBuf: UnsafeMutablePointer<CChar>?, _ nameCap: Int,
                                        _ nameLen: UnsafeMutablePointer<Int>?, _ shape: UnsafeMutablePointer<Int64>?,
                                        _ shapeCap: Int32, _ ndim: UnsafeMutablePointer<Int32>?,
                                        _ writable: UnsafeMutablePointer<Int32>?) -> peftkit_status {
    entry("peftkit_adapter_tensor_info") {
        let h = try ModelHandle.from(model)
        let name = try readName(adapter, "adapter")
        guard let ndim else { throw ShimError.invalid("ndim is NULL") }
        guard shapeCap >= 0 else { throw ShimError.invalid("shape_cap must be >= 0, got \(shapeCap)") }
        guard shape != nil || shapeCap == 0 else { throw ShimError.invalid("shape is NULL but shape_cap is \(shapeCap)") }
        let all = try h.model.adapterTensors(name: name)
        guard index >= 0, Int(index) < all.count else {
            throw ShimError.invalid("index \(index) is outside 0..<\(all.count) (the tensors of adapter '\(name)')")
        }
        let t = all[Int(index)]
        // Check both outputs before writing either.
        ndim.pointee = Int32(bounded: t.shape.count)
        guard t.shape.count <= Int(shapeCap) else {
            throw ShimError.tooSmall("tensor '\(t.name)' has \(t.shape.count) dimensions, shape_cap is \(shapeCap)")
        }
        try writeString(t.name, nameBuf, nameCap, nameLen, "name_buf")
        if let shape { for (i, d) in t.shape.enumerated() { shape[i] = Int64(d) } }
        writable?.pointee = t.writable ? 1 : 0
    }
}

@c @implementation
public func peftkit_adapter_tensor_read(_ model: OpaquePointer?, _ adapter: UnsafePointer<CChar>?,
                                        _ tensor: UnsafePointer<CChar>?, _ buf: UnsafeMutablePointer<Float>?, _ count: Int,
                                        _ nOut: UnsafeMutablePointer<Int>?) -> peftkit_status {
    entry("peftkit_adapter_tensor_read") {
        let h = try ModelHandle.from(model)
        let name = try readName(adapter, "adapter")
        let tname = try readName(tensor, "tensor")
        let capacity = try readCapacity(count, "count")
        guard buf != nil || capacity == 0 else { throw ShimError.invalid("buf is NULL but count is \(capacity)") }
        guard let info = try h.model.adapterTensors(name: name).first(where: { $0.name == tname }) else {
            throw PEFTKitError.notFound("adapter '\(name)' has no tensor '\(tname)'")
        }
        nOut?.pointee = info.count
        guard capacity >= info.count else {
            throw ShimError.tooSmall("tensor '\(tname)' has \(info.count) floats, count is \(capacity)")
        }
        try h.model.readAdapterTensor(adapter: name, tensor: tname, into: UnsafeMutableBufferPointer(start: buf, count: capacity))
    }
}

@c @implementation
public func peftkit_adapter_tensor_write(_ model: OpaquePointer?, _ adapter: UnsafePointer<CChar>?,
                                         _ tensor: UnsafePointer<CChar>?, _ data: UnsafePointer<Float>?,
                                         _ count: Int) -> peftkit_status {
    entry("peftkit_adapter_tensor_write") {
        let h = try ModelHandle.from(model)
        let name = try readName(adapter, "adapter")
        let tname = try readName(tensor, "tensor")
        let n = try readCapacity(count, "count")
        guard data != nil || n == 0 else { throw ShimError.invalid("data is NULL but count is \(n)") }
        // The core refuses a count other than the tensor's before it reads a value.
        try h.model.writeAdapterTensor(adapter: name, tensor: tname, from: UnsafeBufferPointer(start: data, count: n))
    }
}
