// Tensor access: an adapter's weights under the names and shapes its saved file gives them, read into and written
// from the host's buffers (fp32). The tensors are those a save writes now (`SavableAdapter.fileTensors`); the ones
// that are plain views of the adapter's parameter block can be written, the others (a projected prefix's MLP
// output) are derived and read-only.

/// One tensor of an adapter, as its saved file names and shapes it.
public struct AdapterTensorInfo: Sendable, Equatable {
    /// The name in the saved file (PEFT's `base_model.model.….lora_A.weight`, AdapterHub's `….adapter_down.0.weight`).
    public let name: String
    public let shape: [Int]
    /// False for a derived tensor (written by a save, not a parameter itself).
    public let writable: Bool
    /// Number of elements.
    public var count: Int { shape.reduce(1, *) }
}

extension Model {
    /// The tensors of adapter `name`, in the order a save lists them.
    public func adapterTensors(name: String) throws -> [AdapterTensorInfo] {
        try exclusive {
            let (ad, tensors) = try fileTensors(adapter: name)
            return tensors.map { AdapterTensorInfo(name: $0.name, shape: $0.shape, writable: parameterOffset(ad, $0) != nil) }
        }
    }

    /// Copies tensor `tensor` of adapter `adapter` into `out` (at least its element count); returns the count.
    @discardableResult
    public func readAdapterTensor(adapter: String, tensor: String, into out: UnsafeMutableBufferPointer<Float>) throws -> Int {
        try exclusive {
            let t = try fileTensor(adapter: adapter, tensor: tensor).tensor
            let n = t.data.count
            guard out.count >= n else {
                throw PEFTKitError.invalidArgument("the buffer holds \(out.count) floats, tensor '\(tensor)' has \(n)")
            }
            if n > 0, let src = t.data.baseAddress, let dst = out.baseAddress { dst.update(from: src, count: n) }
            return n
        }
    }

    /// Tensor `tensor` of adapter `adapter` as an array.
    public func readAdapterTensor(adapter: String, tensor: String) throws -> [Float] {
        try exclusive { Array(try fileTensor(adapter: adapter, tensor: tensor).tensor.data) }
    }

    /// Replaces tensor `tensor` of adapter `adapter` with `values` (exactly its element count, row-major, all
    /// finite). Later forward passes, generation and saves see the new values; the optimiser moments are kept.
    /// Throws `state` while the adapter is merged, `unsupported` for a derived tensor.
    public func writeAdapterTensor(adapter: String, tensor: String, from values: UnsafeBufferPointer<Float>) throws {
        try exclusive {
            let slot = try engine.adapter(named: adapter)
            guard !slot.merged else {
                throw PEFTKitError.state("adapter '\(adapter)' is merged into the base weights: unmerge it before writing its tensors")
            }
            let (ad, t) = try fileTensor(adapter: adapter, tensor: tensor)
            guard let offset = parameterOffset(ad, t) else {
                throw PEFTKitError.unsupported("tensor '\(tensor)' of adapter '\(adapter)' is derived from its parameters "
                                               + "(what a save writes), not a parameter: it cannot be written")
            }
            guard values.count == t.data.count else {
                throw PEFTKitError.invalidArgument("tensor '\(tensor)' has shape \(t.shape) (\(t.data.count) floats), "
                                                   + "got \(values.count) values")
            }
            if let i = values.firstIndex(where: { !$0.isFinite }) {
                throw PEFTKitError.invalidArgument("value \(i) for tensor '\(tensor)' is \(values[i]): tensors take finite values only")
            }
            guard let src = values.baseAddress else { return }
            (ad.params.floats + offset).update(from: src, count: values.count)
            ad.parametersChanged()
            engine.buffers.invalidate()
        }
    }

    public func writeAdapterTensor(adapter: String, tensor: String, values: [Float]) throws {
        try values.withUnsafeBufferPointer { try writeAdapterTensor(adapter: adapter, tensor: tensor, from: $0) }
    }

    // MARK: private

    private func fileTensors(adapter name: String) throws -> (SavableAdapter, [SavedTensor]) {
        let ad = try engine.adapter(named: name).adapter
        guard let savable = ad as? SavableAdapter else {
            throw PEFTKitError.unsupported("\(ad.method.rawValue) adapters have no file format, hence no named tensors")
        }
        var tensors = savable.fileTensors(name: name)
        if savable.fileFormat == .peft { tensors.sort { $0.name < $1.name } }  // the order the saved file has
        return (savable, tensors)
    }

    private func fileTensor(adapter: String, tensor: String) throws -> (adapter: SavableAdapter, tensor: SavedTensor) {
        let (ad, all) = try fileTensors(adapter: adapter)
        guard let t = all.first(where: { $0.name == tensor }) else {
            let some = all.prefix(3).map { $0.name }
            throw PEFTKitError.notFound("adapter '\(adapter)' has no tensor '\(tensor)' (it has \(all.count), e.g. \(some))")
        }
        return (ad, t)
    }

    /// Where a saved tensor lies in the adapter's parameter block, or nil when it is derived (lies elsewhere).
    private func parameterOffset(_ ad: SavableAdapter, _ t: SavedTensor) -> Int? {
        guard let p = t.data.baseAddress else { return nil }
        let base = UnsafePointer(ad.params.floats)
        guard p >= base, p + t.data.count <= base + ad.parameterCount else { return nil }
        return p - base
    }
}
