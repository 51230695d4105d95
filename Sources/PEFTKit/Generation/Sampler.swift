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
        // The candidates, best first (logit descending, ties by index) wherever an order matters: top-k keeps a
        // heap of k, top-p pops a heap of the whole vocabulary only as far as the mass it needs. Neither sorts
        // all 49k logits of a real vocabulary per token.
        let better: (Int32, Int32) -> Bool = { a, b in
            let la = logits[Int(a)], lb = logits[Int(b)]
            return la != lb ? la > lb : a < b
        }
        var keep: Int
        var sorted = true
        if config.topK > 0 && config.topK < vocab {
            keep = config.topK
            Sampler.selectBest(keep, of: vocab, into: &order, better: better)
        } else if config.topP < 1 {
            // Pop best-first until the popped mass reaches top-p of the total.
            var total: Double = 0
            for i in 0..<vocab { total += Double(expf(logits[i] * invT - mx)) }
            for i in 0..<vocab { order[i] = Int32(i) }
            Sampler.heapify(&order, count: vocab, better: better)
            var cum: Double = 0
            keep = 0
            var heapCount = vocab
            while heapCount > 0 {
                let top = Sampler.popBest(&order, count: &heapCount, better: better)
                order[vocab - 1 - keep] = top
                keep += 1
                cum += Double(expf(logits[Int(top)] * invT - mx)) / total
                if cum >= Double(config.topP) { break }
            }
            // The popped tokens sit at the end in reverse: move them to the front, best first.
            let popped = Array(order[(vocab - keep)...].reversed())
            for j in 0..<keep { order[j] = popped[j] }
        } else if config.minP > 0 {
            // Only tokens within min-p of the best survive; the best has weight exp(0) = 1.
            keep = 0
            for i in 0..<vocab where expf(logits[i] * invT - mx) >= config.minP {
                order[keep] = Int32(i)
                keep += 1
            }
            order[0..<keep].sort(by: better)
        } else {
            // Plain temperature sampling: every token, in index order (the order does not change the distribution).
            keep = vocab
            sorted = false
            for i in 0..<vocab { order[i] = Int32(i) }
        }
        var sum: Double = 0
        for j in 0..<keep {
            let e = expf(logits[Int(order[j])] * invT - mx)
            probs[j] = e
            sum += Double(e)
        }
        if config.topP < 1 && config.topK > 0 && config.topK < vocab {
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
        if config.minP > 0 && sorted {
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

    /// order[0..<k] = the k best of 0..<n, best first: a heap of the k best so far (worst at its root).
    static func selectBest(_ k: Int, of n: Int, into order: inout [Int32], better: (Int32, Int32) -> Bool) {
        let worse: (Int32, Int32) -> Bool = { a, b in better(b, a) }
        for i in 0..<k { order[i] = Int32(i) }
        heapify(&order, count: k, better: worse)
        for i in k..<n where better(Int32(i), order[0]) {
            order[0] = Int32(i)
            siftDown(&order, 0, count: k, better: worse)
        }
        order[0..<k].sort(by: better)
    }

    /// A binary heap on order[0..<count] whose root is the best element under `better`.
    static func heapify(_ h: inout [Int32], count: Int, better: (Int32, Int32) -> Bool) {
        var i = count / 2 - 1
        while i >= 0 { siftDown(&h, i, count: count, better: better); i -= 1 }
    }

    static func siftDown(_ h: inout [Int32], _ start: Int, count: Int, better: (Int32, Int32) -> Bool) {
        var i = start
        while true {
            let l = 2 * i + 1, r = l + 1
            var b = i
            if l < count && better(h[l], h[b]) { b = l }
            if r < count && better(h[r], h[b]) { b = r }
            if b == i { return }
            h.swapAt(i, b)
            i = b
        }
    }

    static func popBest(_ h: inout [Int32], count: inout Int, better: (Int32, Int32) -> Bool) -> Int32 {
        let top = h[0]
        count -= 1
        h[0] = h[count]
        siftDown(&h, 0, count: count, better: better)
        return top
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
