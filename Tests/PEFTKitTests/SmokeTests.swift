import Testing
@testable import PEFTKit

@Test func configValidation() throws {
    var c = ModelConfig(architecture: .llama, vocabSize: 100, hiddenSize: 64, numLayers: 2, numHeads: 4, numKVHeads: 3)
    #expect(throws: PEFTKitError.self) { try c.validate() }
    c.numKVHeads = 2
    try c.validate()
}
