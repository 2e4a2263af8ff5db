import Foundation

/// Chooses the next token from a row of logits: greedy at temperature 0,
/// otherwise softmax at `temperature` restricted to the smallest set of
/// tokens whose probability reaches `topP` (nucleus), and `topK` if set.
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
        var order = Array(logits.indices)
        order.sort { logits[$0] > logits[$1] }
        if topK > 0 && topK < order.count { order.removeSubrange(topK...) }
        let maxLogit = Double(logits[order[0]])
        var probabilities = order.map { exp((Double(logits[$0]) - maxLogit) / temperature) }
        let total = probabilities.reduce(0, +)
        var cumulative = 0.0, keep = probabilities.count
        for (i, p) in probabilities.enumerated() {
            cumulative += p / total
            if cumulative >= topP { keep = i + 1; break }
        }
        probabilities.removeSubrange(keep...)
        let kept = probabilities.reduce(0, +)
        var draw = rng.nextUnit() * kept
        for (i, p) in probabilities.enumerated() {
            draw -= p
            if draw <= 0 { return order[i] - base }
        }
        return order[keep - 1] - base
    }
}

/// A small, fast, seedable generator (Steele et al.'s SplitMix64).
struct SplitMix64: Sendable {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    mutating func nextUnit() -> Double { Double(next() >> 11) / Double(1 << 53) }
}
