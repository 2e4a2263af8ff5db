import Foundation
import XCTest

/// Mixture-of-experts models at TP 1-4 under both expert placements and
/// every communication mode, against their references (Hugging Face
/// transformers for tiny-mixtral and tiny-qwen2moe, the float64 NumPy
/// implementation for tiny-qwen3moe and the GGUF files), on a mixed batch
/// with cached prefixes, plus greedy continuations. Tolerance as for the
/// dense models: float32 reordering (1e-4 of the largest logit).
final class MoETensorParallelTests: XCTestCase {
    struct Case: Decodable { let tokens: [Int]; let logits: [[Float]] }
    struct Greedy: Decodable { let tokens: [Int]; let continuation: [Int]; let top1_top2_margin: [Float]? }
    struct Reference: Decodable { let logits_cases: [Case]; let greedy: Greedy }
    struct Sequence: Decodable { let tokens: [Int]; let logits: [[Float]] }
    struct Many: Decodable { let sequences: [Sequence] }
    struct GenerateOutput: Decodable { let completion_tokens: [Int] }

    static let fixtures = MPIRun.fixture.deletingLastPathComponent()

    func reference(_ folder: String) throws -> Reference {
        try JSONDecoder().decode(Reference.self, from: Data(contentsOf: Self.fixtures.appendingPathComponent("\(folder)/reference.json")))
    }

    /// The three reference cases (8, 15 and 5 tokens) as one batch: the
    /// 15-token case after 6 cached tokens, the 8-token case fresh, one
    /// decode token of the 5-token case — 18 rows (after a first batch of
    /// the 10 prefix rows; `--split` cuts both).
    func mixed(_ folder: String, ranks: Int, _ extra: [String], file: StaticString = #filePath, line: UInt = #line) throws {
        let cases = try reference(folder).logits_cases
        let order = [1, 0, 2], prefixes = [6, 0, 4]
        var arguments = ["logits", "--model", Self.fixtures.appendingPathComponent(folder).path, "--json", "--threads", "1",
                         "--kv-dtype", "f32", "--prefix-lengths", prefixes.map(String.init).joined(separator: ",")]
        for c in order { arguments += ["--tokens", cases[c].tokens.map(String.init).joined(separator: ",")] }
        let outcome = try MPIRun.run(ranks: ranks, arguments + extra)
        let label = "\(folder) TP \(ranks) \(extra.joined(separator: " "))"
        XCTAssertEqual(outcome.status, 0, "\(label): \(outcome.stderr)", file: file, line: line)
        guard outcome.status == 0 else { return }
        guard let many = try? JSONDecoder().decode(Many.self, from: Data(outcome.stdout.utf8)) else {
            return XCTFail("\(label): not the logits' JSON: \(outcome.stdout.prefix(300)) \(outcome.stderr.prefix(300))", file: file, line: line)
        }
        let actual = many.sequences.map(\.logits)
        for (i, c) in order.enumerated() {
            let expected = cases[c].logits[prefixes[i]...].flatMap { $0 }
            let got = actual[i].flatMap { $0 }
            XCTAssertEqual(got.count, expected.count, label, file: file, line: line)
            let scale = expected.map(abs).max()!
            let worst = zip(got, expected).map { abs($0 - $1) }.max() ?? .infinity
            XCTAssertLessThanOrEqual(worst, 1e-4 * scale, "\(label) sequence \(i): max |Δ| \(worst)", file: file, line: line)
        }
    }

    func testMixtralTP1AndTP2EveryModeBothPlacements() throws {
        try mixed("tiny-mixtral", ranks: 1, ["--comm-mode", "fused"])
        for placement in ["tp", "ep"] {
            for mode in [["baseline"], ["fused"], ["overlap", "--split", "7"], ["auto"]] {
                try mixed("tiny-mixtral", ranks: 2, ["--moe-placement", placement, "--comm-mode"] + mode)
            }
            try mixed("tiny-mixtral", ranks: 2, ["--moe-placement", placement, "--comm-mode", "overlap", "--comm-transport", "mpi", "--split", "3,6,9"])
        }
    }

    func testMixtralTP3AndTP4() throws {
        for placement in ["tp", "ep"] {
            try mixed("tiny-mixtral", ranks: 3, ["--moe-placement", placement, "--comm-mode", "fused"])
            try mixed("tiny-mixtral", ranks: 3, ["--moe-placement", placement, "--comm-mode", "overlap", "--split", "9"])
            try mixed("tiny-mixtral", ranks: 4, ["--moe-placement", placement, "--comm-mode", "overlap", "--split", "8"])
            try mixed("tiny-mixtral", ranks: 4, ["--moe-placement", placement, "--comm-mode", "fused", "--comm-transport", "hier", "--ranks-per-node", "2"])
        }
    }

    func testQwen2MoESharedExpertAtTP1To4() throws {
        try mixed("tiny-qwen2moe", ranks: 1, ["--comm-mode", "baseline"])
        try mixed("tiny-qwen2moe", ranks: 2, ["--moe-placement", "ep", "--comm-mode", "baseline"])
        try mixed("tiny-qwen2moe", ranks: 2, ["--moe-placement", "tp", "--comm-mode", "overlap", "--split", "5"])
        try mixed("tiny-qwen2moe", ranks: 3, ["--moe-placement", "tp", "--comm-mode", "fused"])
        try mixed("tiny-qwen2moe", ranks: 3, ["--moe-placement", "ep", "--comm-mode", "auto"])
        try mixed("tiny-qwen2moe", ranks: 4, ["--moe-placement", "ep", "--comm-mode", "overlap", "--split", "8"])
        try mixed("tiny-qwen2moe", ranks: 4, ["--moe-placement", "tp", "--comm-mode", "fused"])
    }

    func testQwen3MoEAndSkewedRoutingAtTP1To4() throws {
        try mixed("tiny-qwen3moe", ranks: 1, ["--comm-mode", "fused"])
        try mixed("tiny-qwen3moe", ranks: 2, ["--moe-placement", "tp", "--comm-mode", "overlap", "--split", "7"])
        try mixed("tiny-qwen3moe", ranks: 3, ["--moe-placement", "ep", "--comm-mode", "fused"])
        try mixed("tiny-qwen3moe", ranks: 4, ["--moe-placement", "ep", "--comm-mode", "baseline"])
        try mixed("tiny-qwen3moe", ranks: 4, ["--moe-placement", "tp", "--comm-mode", "overlap", "--split", "9"])
        // Every token of layer 0 to one expert, three experts idle: with expert
        // parallelism one rank does all of layer 0's routed work.
        try mixed("tiny-mixtral-skewed", ranks: 2, ["--moe-placement", "ep", "--comm-mode", "overlap", "--split", "9"])
        try mixed("tiny-mixtral-skewed", ranks: 4, ["--moe-placement", "ep", "--comm-mode", "fused"])
        try mixed("tiny-mixtral-skewed", ranks: 3, ["--moe-placement", "tp", "--comm-mode", "baseline"])
    }

    /// Greedy continuations (prefill, then one token per step: most experts
    /// idle in each decode step) at TP 2 and 3, both placements.
    func testGreedyContinuations() throws {
        for (folder, ranks, placement) in [("tiny-mixtral", 2, "ep"), ("tiny-qwen2moe", 3, "tp"), ("tiny-qwen3moe", 2, "ep"),
                                           ("tiny-mixtral-skewed", 3, "ep")] {
            let greedy = try reference(folder).greedy
            let outcome = try MPIRun.run(ranks: ranks, ["generate", "--model", Self.fixtures.appendingPathComponent(folder).path,
                                                        "--threads", "1", "--kv-dtype", "f32", "--moe-placement", placement,
                                                        "--tokens", greedy.tokens.map(String.init).joined(separator: ","),
                                                        "--max-tokens", String(greedy.continuation.count), "--json"])
            XCTAssertEqual(outcome.status, 0, "\(folder): \(outcome.stderr)")
            guard outcome.status == 0 else { continue }
            let produced = try JSONDecoder().decode(GenerateOutput.self, from: Data(outcome.stdout.utf8)).completion_tokens
            XCTAssertEqual(produced, greedy.continuation, "\(folder) TP \(ranks) \(placement)")
        }
    }

    /// The quantized GGUF Mixtral (Q4_0 experts, stacked) at TP 2 and 4 under
    /// both placements gives TP 1's logits of the same file.
    func testQuantizedGGUFAcrossRanksAndPlacements() throws {
        let file = Self.fixtures.appendingPathComponent("gguf-moe/tiny-mixtral-q4_0.gguf").path
        let tokens = "4094,17,250,3,1200,7,7,4000"
        func logits(_ ranks: Int, _ extra: [String]) throws -> [Float] {
            let outcome = try MPIRun.run(ranks: ranks, ["logits", "--model", file, "--threads", "1", "--kv-dtype", "f32",
                                                        "--tokens", tokens, "--json"] + extra)
            XCTAssertEqual(outcome.status, 0, "TP \(ranks) \(extra): \(outcome.stderr)")
            guard outcome.status == 0 else { return [] }
            return try JSONDecoder().decode(Sequence.self, from: Data(outcome.stdout.utf8)).logits.flatMap { $0 }
        }
        let one = try logits(1, [])
        let scale = one.map(abs).max()!
        for (ranks, placement) in [(2, "ep"), (2, "tp"), (4, "ep"), (4, "tp")] {
            let many = try logits(ranks, ["--moe-placement", placement, "--comm-mode", "fused"])
            XCTAssertEqual(many.count, one.count)
            let worst = zip(many, one).map { abs($0 - $1) }.max() ?? .infinity
            // 8-bit activation blocks can round differently once sums are reordered.
            XCTAssertLessThanOrEqual(worst, 2e-3 * scale, "TP \(ranks) \(placement): max |Δ| \(worst)")
        }
    }

    /// A bad placement fails on every rank with one line naming the option
    /// (a placement the model cannot take: MixtureOfExpertsTests).
    func testPlacementErrors() throws {
        let mixtral = Self.fixtures.appendingPathComponent("tiny-mixtral").path
        let bad = try MPIRun.run(ranks: 2, ["logits", "--model", mixtral, "--tokens", "1,2", "--moe-placement", "experts"])
        XCTAssertNotEqual(bad.status, 0)
        XCTAssertTrue(bad.stderr.contains("--moe-placement must be tp or ep"), bad.stderr)
    }
}
