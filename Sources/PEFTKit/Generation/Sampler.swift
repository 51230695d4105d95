#if canImport(Glibc)
import Glibc
#endif

/// Picks the next token from logits: greedy when temperature is 0, otherwise temperature → top-k → top-p
/// → min-p → a draw from the remaining distribution with a seeded generator (equal seeds, equal draws).
/// This is transformers' order of its warpers. The repetition penalty, when on, is applied to the logits
/// before (`applyRepetitionPenalty`), so it also steers greedy decoding, as in transformers.
struct Sampler {
    let config: GenerateConfig
    let vocab: Int
    var rng: Rng
    private var probs: [Float]
    private var order: [Int32]

    init(config: GenerateConfig, vocab: Int) {
        self.config = config
        self.vocab = vocab
        rng = Rng(seed: config.seed)
        probs = [Float](repeating: 0, count: vocab)
        order = (0..<Int32(vocab)).map { $0 }
    }

    /// Index of the largest logit (the first one on ties, as torch.argmax).
    static func argmax(_ logits: UnsafePointer<Float>, _ n: Int) -> Int32 {
        var best = 0
        var bv = logits[0]
        for i in 1..<n where logits[i] > bv {
            bv = logits[i]; best = i
        }
        return Int32(best)
    }

    mutating func sample(_ logits: UnsafePointer<Float>) -> Int32 {
        if config.temperature == 0 { return Sampler.argmax(logits, vocab) }
        let invT = 1 / config.temperature
        var mx = -Float.infinity
        for i in 0..<vocab { mx = max(mx, logits[i] * invT) }
        // Candidates sorted by logit, descending (ties by index).
        for i in 0..<vocab { order[i] = Int32(i) }
        order.sort { a, b in
            let la = logits[Int(a)], lb = logits[Int(b)]
            return la != lb ? la > lb : a < b
        }
        var keep = vocab
        if config.topK > 0 { keep = min(keep, config.topK) }
        var sum: Double = 0
        for j in 0..<keep {
            let e = expf(logits[Int(order[j])] * invT - mx)
            probs[j] = e
            sum += Double(e)
        }
        if config.topP < 1 {
            var cum: Double = 0
            var k = 0
            while k < keep {
                cum += Double(probs[k]) / sum
                k += 1
                if cum >= Double(config.topP) { break }
            }
            keep = max(1, k)
            sum = 0
            for j in 0..<keep { sum += Double(probs[j]) }
        }
        if config.minP > 0 {
            // probs[0] is the most likely token (sorted); the others must reach minP times its probability.
            // The ratio needs no normalisation: both share the same sum.
            let floor = config.minP * probs[0]
            var k = 1
            while k < keep && probs[k] >= floor { k += 1 }
            if k < keep {
                keep = k
                sum = 0
                for j in 0..<keep { sum += Double(probs[j]) }
            }
        }
        let u = Double(rng.nextFloat()) * sum
        var acc: Double = 0
        for j in 0..<keep {
            acc += Double(probs[j])
            if u < acc { return order[j] }
        }
        return order[keep - 1]
    }
}

/// The repetition penalty over the tokens seen so far: logits of seen tokens are divided by `penalty` when
/// positive and multiplied by it when negative (transformers' `RepetitionPenaltyLogitsProcessor`).
struct RepetitionPenalty {
    let penalty: Float
    /// seen[id] is true once `id` occurred in the prompt or the output.
    private var seen: [Bool]
    /// The distinct ids seen, in the order they first occurred.
    private(set) var ids: [Int32] = []

    init(penalty: Float, vocab: Int) {
        self.penalty = penalty
        seen = penalty == 1 ? [] : [Bool](repeating: false, count: vocab)
    }

    var isOn: Bool { penalty != 1 }

    /// Records tokens (ids already validated against the vocabulary).
    mutating func add<S: Sequence>(_ tokens: S) where S.Element == Int32 {
        guard isOn else { return }
        for t in tokens where !seen[Int(t)] {
            seen[Int(t)] = true
            ids.append(t)
        }
    }

    /// Applies the penalty to `logits` in place.
    func apply(_ logits: UnsafeMutablePointer<Float>) {
        guard isOn else { return }
        for t in ids {
            let l = logits[Int(t)]
            logits[Int(t)] = l > 0 ? l / penalty : l * penalty
        }
    }
}
