@testable import PEFTKit

/// Small deterministic helpers shared by the tests.
enum TS {
    static func tinyConfig(_ arch: Architecture) -> ModelConfig {
        switch arch {
        case .gpt2:
            return ModelConfig(architecture: .gpt2, vocabSize: 37, hiddenSize: 16, numLayers: 2, numHeads: 4, maxPositions: 32)
        case .llama:
            return ModelConfig(architecture: .llama, vocabSize: 37, hiddenSize: 16, numLayers: 2, numHeads: 4, numKVHeads: 2,
                               intermediateSize: 24, maxPositions: 32, ropeTheta: 10000, tieWordEmbeddings: false)
        case .bert:
            return ModelConfig(architecture: .bert, vocabSize: 37, hiddenSize: 16, numLayers: 2, numHeads: 4,
                               intermediateSize: 24, maxPositions: 32, encoder: EncoderSettings(typeVocabSize: 2, pooler: true))
        }
    }

    /// Moves every trainable parameter of `slot` by `scale` times a seeded standard normal draw: away from an
    /// initialisation where gradients vanish or coincide (LoRA's B = 0, IA3's scales 1).
    static func perturb(_ slot: AdapterSlot, seed: UInt64, scale: Float = 0.2) {
        var rng = Rng(seed: seed)
        for i in 0..<slot.parameterCount { slot.adapter.params.floats[i] += scale * rng.normal() }
    }

    static func ids(_ n: Int, vocab: Int, seed: UInt64) -> [Int32] {
        var r = Rng(seed: seed)
        return (0..<n).map { _ in Int32(r.nextUInt64() % UInt64(vocab)) }
    }

    static func maxAbsDiff(_ a: [Float], _ b: [Float]) -> Float {
        precondition(a.count == b.count)
        var m: Float = 0
        for i in 0..<a.count { m = max(m, abs(a[i] - b[i])) }
        return m
    }

    static func maxAbs(_ a: [Float]) -> Float { a.reduce(0) { max($0, abs($1)) } }

    /// Path of Tests/Fixtures in the source tree.
    static var fixtures: String {
        var parts = #filePath.split(separator: "/", omittingEmptySubsequences: false)
        parts.removeLast(2) // TestSupport.swift, PEFTKitTests
        return parts.joined(separator: "/") + "/Fixtures"
    }

    static func tempDir() -> String {
        var template = Array("/tmp/peftkit-test-XXXXXX".utf8CString)
        let p = template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }
        return String(cString: p!)
    }
}

#if canImport(Glibc)
import Glibc
#endif

extension AdapterSlot {
    /// The slot's adapter as a bottleneck adapter (tests of that method only).
    var bn: BottleneckAdapter { adapter as! BottleneckAdapter }
}
