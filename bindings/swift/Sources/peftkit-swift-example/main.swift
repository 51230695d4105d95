// Trains a bottleneck adapter on a tiny random GPT-2 for 20 steps and reports whether the loss fell.
// Exits 1 if it did not (or if anything throws).

import PEFTKit
#if canImport(Glibc)
import Glibc
#endif

let pattern = Array("peftkit! ".utf8).map { Int32($0) }
let batch = 4, seqLen = 32

// Row b is the pattern repeated, starting at offset b; tokens are bytes.
var ids: [Int32] = []
for b in 0..<batch {
    for t in 0..<seqLen { ids.append(pattern[(b + t) % pattern.count]) }
}

do {
    let config = ModelConfig(architecture: .gpt2, vocabSize: 256, hiddenSize: 64, numLayers: 2, numHeads: 4)
    let model = try Model.create(config: config, seed: 2024)
    try model.attachAdapter(name: "pattern", config: BottleneckConfig(preset: .pfeiffer, reductionFactor: 4))
    try model.setActiveAdapter("pattern")
    print("adapter 'pattern': \(try model.adapterParameterCount(name: "pattern")) trainable parameters")

    var train = TrainConfig()
    train.learningRate = 1e-2
    var first: Float = 0
    var last: Float = 0
    for step in 0..<20 {
        let r = try model.trainStep(inputIDs: ids, batch: batch, seqLen: seqLen, config: train)
        if step == 0 { first = r.loss }
        last = r.loss
        if step % 5 == 0 || step == 19 { print("step \(r.step)  loss \(r.loss)") }
    }
    let fell = last < first
    print(fell ? "loss fell: \(first) -> \(last)" : "loss did not fall: \(first) -> \(last)")
    if !fell { exit(1) }
} catch {
    print("error: \(error)")
    exit(1)
}
