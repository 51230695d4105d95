/// Internal owner of weights, adapters and buffers. (Work in progress.)
final class Engine {
    let config: ModelConfig
    var adapters: [AdapterSlot] = []
    var activeName: String? = nil

    init(randomConfig: ModelConfig, seed: UInt64) throws {
        config = randomConfig
        throw PEFTKitError.unsupported("not implemented yet")
    }
    init(loadingFolder: String) throws {
        throw PEFTKitError.unsupported("not implemented yet")
    }
    func adapter(named: String) throws -> AdapterSlot { throw PEFTKitError.notFound(named) }
    func attachAdapter(name: String, config: BottleneckConfig) throws { throw PEFTKitError.unsupported("") }
    func removeAdapter(name: String) throws { throw PEFTKitError.unsupported("") }
    func setActive(_ name: String?) throws { throw PEFTKitError.unsupported("") }
    func saveAdapter(name: String, directory: String) throws { throw PEFTKitError.unsupported("") }
    func loadAdapter(directory: String, name: String?) throws -> String { throw PEFTKitError.unsupported("") }
    func trainStep(inputIDs: UnsafeBufferPointer<Int32>, labels: UnsafeBufferPointer<Int32>?, batch: Int, seqLen: Int, config: TrainConfig) throws -> TrainStepResult { throw PEFTKitError.unsupported("") }
    func evaluate(inputIDs: UnsafeBufferPointer<Int32>, labels: UnsafeBufferPointer<Int32>?, batch: Int, seqLen: Int, logits: UnsafeMutableBufferPointer<Float>?) throws -> EvalResult { throw PEFTKitError.unsupported("") }
    func generate(prompt: [Int32], config: GenerateConfig, onToken: ((Int32) -> Bool)?) throws -> [Int32] { throw PEFTKitError.unsupported("") }
}

final class AdapterSlot {
    let name: String
    var parameterCount: Int { 0 }
    init(name: String) { self.name = name }
}
