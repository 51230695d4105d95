extension Engine {
    static let peftWeightsFile = "adapter_model.safetensors"

    func savePEFTAdapter(slot: AdapterSlot, directory: String) throws {
        throw PEFTKitError.unsupported("saving \(slot.adapter.method.rawValue) adapters is not implemented yet")
    }

    func loadPEFTAdapter(directory: String, name: String?) throws -> String {
        throw PEFTKitError.unsupported("loading PEFT adapters is not implemented yet")
    }
}
