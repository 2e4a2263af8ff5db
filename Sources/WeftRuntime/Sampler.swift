import Foundation

/// Chooses the next token from a row of logits: greedy at temperature 0,
/// otherwise softmax at `temperature` restricted to the smallest set of
/// tokens whose probability reaches `topP` (nucleus), and `topK` if set.
///
/// A sample is drawn with the Gumbel-max trick (vLLM's exponential race is
/// the same): each candidate token gets logit / temperature plus Gumbel
/// noise, and the largest wins, which picks token i with probability
/// softmax_i exactly. The noise of token i at a step is a hash of the
/// request's key for that step and of i, not a position in a running sum of
/// probabilities sorted by size, so a change in the last bits of the logits
/// (another batch composition or a recomputation after preemption takes
/// another GEMM path) moves the draw only where two candidates' scores tie
/// to within that change, instead of whenever two near-equal probabilities
/// trade places in the order. Each sample advances the seeded stream by
/// exactly one value, whatever the candidates.
public struct Sampler: Sendable {
    public var temperature: Double
    public var topP: Double
    public var topK: Int
    private var rng: SplitMix64

    public init(temperature: Double = 0, topP: Double = 1, topK: Int = 0, seed: UInt64 = 0) {
        self.temperature = temperature
        self.topP = topP
        self.topK = topK
        rng = SplitMix64(seed: seed)
    }

    public static func validate(temperature: Double, topP: Double) throws {
        guard temperature >= 0, temperature.isFinite else {
            throw RuntimeError.invalidParameter("Sampler.temperature", "must be a finite number >= 0, got \(temperature)")
        }
        guard topP > 0, topP <= 1 else { throw RuntimeError.invalidParameter("Sampler.topP", "must be in (0, 1], got \(topP)") }
    }

    public static func argmax(_ logits: ArraySlice<Float>) -> Int {
        var best = logits.startIndex
        for i in logits.indices where logits[i] > logits[best] { best = i }
        return best - logits.startIndex
    }

    public mutating func sample(_ logits: ArraySlice<Float>) -> Int {
        if temperature == 0 { return Sampler.argmax(logits) }
        let base = logits.startIndex
        let key = rng.next()
        var best = -1, bestScore = -Double.infinity
        for i in candidates(logits) {
            let score = Double(logits[i]) / temperature + Self.gumbel(key: key, token: UInt64(i - base))
            if best < 0 || score > bestScore { best = i; bestScore = score }
        }
        return best - base
    }

    /// The tokens a sample may take: all of them, or the `topK` largest
    /// logits and then the smallest most-likely set reaching `topP`.
    private func candidates(_ logits: ArraySlice<Float>) -> [Int] {
        let truncatesK = topK > 0 && topK < logits.count
        guard truncatesK || topP < 1 else { return Array(logits.indices) }
        var order = Array(logits.indices)
        order.sort { logits[$0] > logits[$1] || (logits[$0] == logits[$1] && $0 < $1) }
        if truncatesK { order.removeSubrange(topK...) }
        guard topP < 1 else { return order }
        let maxLogit = Double(logits[order[0]])
        let probabilities = order.map { exp((Double(logits[$0]) - maxLogit) / temperature) }
        let total = probabilities.reduce(0, +)
        var cumulative = 0.0
        for (i, p) in probabilities.enumerated() {
            cumulative += p / total
            if cumulative >= topP { return Array(order[...i]) }
        }
        return order
    }

    /// Standard Gumbel noise for `token` under a step's `key`: a SplitMix64
    /// output of (key, token) mapped into (0, 1), then -log(-log u).
    static func gumbel(key: UInt64, token: UInt64) -> Double {
        let z = SplitMix64.mix(key &+ (token &+ 1) &* SplitMix64.increment)
        let u = (Double(z >> 11) + 0.5) / 9_007_199_254_740_992   // 2^53: never 0 or 1
        return -log(-log(u))
    }
}

/// A small, fast, seedable generator (Steele et al.'s SplitMix64).
struct SplitMix64: Sendable {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    static let increment: UInt64 = 0x9E37_79B9_7F4A_7C15

    mutating func next() -> UInt64 {
        state &+= Self.increment
        return Self.mix(state)
    }

    /// SplitMix64's output function (also a good 64-bit hash of a counter).
    static func mix(_ value: UInt64) -> UInt64 {
        var z = value
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
