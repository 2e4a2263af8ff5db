import Foundation
import XCTest
@testable import WeftRuntime

final class SamplerTests: XCTestCase {
    /// Frequencies of `draws` seeded samples against the expected
    /// probabilities, each within 5 standard deviations.
    func checkFrequencies(_ sampler: Sampler, logits: [Float], expected: [Double], draws: Int = 40_000,
                          file: StaticString = #filePath, line: UInt = #line) {
        var sampler = sampler
        var counts = Array(repeating: 0, count: logits.count)
        for _ in 0..<draws { counts[sampler.sample(logits[...])] += 1 }
        for (token, p) in expected.enumerated() {
            let seen = Double(counts[token]) / Double(draws)
            let sigma = max((p * (1 - p) / Double(draws)).squareRoot(), 1e-9)
            XCTAssertLessThanOrEqual(abs(seen - p), 5 * sigma + (p == 0 ? 0 : 1e-4),
                                     "token \(token): \(seen) against \(p)", file: file, line: line)
        }
    }

    func softmax(_ logits: [Float], temperature: Double, keep: Set<Int>? = nil) -> [Double] {
        let weights = logits.enumerated().map { keep?.contains($0.offset) ?? true ? exp(Double($0.element) / temperature) : 0 }
        let total = weights.reduce(0, +)
        return weights.map { $0 / total }
    }

    func testSamplesFollowTheSoftmaxAndItsTruncations() {
        let logits: [Float] = [2, 1, 0.5, 0, -1]
        checkFrequencies(Sampler(temperature: 0.8, seed: 1), logits: logits, expected: softmax(logits, temperature: 0.8))
        checkFrequencies(Sampler(temperature: 1.5, topK: 3, seed: 2), logits: logits,
                         expected: softmax(logits, temperature: 1.5, keep: [0, 1, 2]))
        // Probabilities at T=1: 0.563, 0.207, 0.126, 0.076, 0.028: top-p 0.7 keeps the first two.
        checkFrequencies(Sampler(temperature: 1, topP: 0.7, seed: 3), logits: logits,
                         expected: softmax(logits, temperature: 1, keep: [0, 1]))
        var greedy = Sampler()
        XCTAssertEqual(greedy.sample(logits[...]), 0)
    }

    func testTheSameSeedGivesTheSameTokens() {
        let logits = (0..<512).map { Float(sin(Double($0))) }
        var a = Sampler(temperature: 1, seed: 42), b = Sampler(temperature: 1, seed: 42), c = Sampler(temperature: 1, seed: 43)
        let first = (0..<64).map { _ in a.sample(logits[...]) }
        XCTAssertEqual(first, (0..<64).map { _ in b.sample(logits[...]) })
        XCTAssertNotEqual(first, (0..<64).map { _ in c.sample(logits[...]) })
    }

    /// Logits that differ in their last bits (another GEMM path: a prompt
    /// chunk against a decode, ~1e-5 relative) almost never change the
    /// token, even over a near-flat distribution of 4096 tokens where
    /// sorting by probability would reorder hundreds of them.
    func testLastBitDifferencesRarelyMoveADraw() {
        var rng = SplitMix64(seed: 9)
        var moved = 0
        let trials = 400
        for trial in 0..<trials {
            let logits = (0..<4096).map { _ in Float(Double(rng.next() >> 11) / 9_007_199_254_740_992 * 0.05) }
            let perturbed = logits.map { $0 * (1 + Float(Double(rng.next() % 2001) - 1000) * 1e-8) }
            var a = Sampler(temperature: 1, seed: UInt64(trial)), b = Sampler(temperature: 1, seed: UInt64(trial))
            if a.sample(logits[...]) != b.sample(perturbed[...]) { moved += 1 }
        }
        XCTAssertLessThanOrEqual(moved, 2, "\(moved) of \(trials) draws moved")
    }

    /// Each sample takes one value of the seeded stream whatever its
    /// candidates, so a different nucleus at one step does not shift the
    /// draws of every later step.
    func testATruncationThatDiffersOnceDoesNotShiftLaterDraws() {
        let later = (0..<256).map { Float(cos(Double($0) * 0.37)) }
        var a = Sampler(temperature: 1, topP: 0.5, seed: 5), b = Sampler(temperature: 1, topP: 0.5, seed: 5)
        _ = a.sample(([3, 0, 0, 0] as [Float])[...])          // nucleus of one token
        _ = b.sample(([0, 0, 0, 0] as [Float])[...])          // nucleus of two
        XCTAssertEqual((0..<32).map { _ in a.sample(later[...]) }, (0..<32).map { _ in b.sample(later[...]) })
    }
}
