import Foundation
import XCTest

/// GGUF models under `mpirun` at TP 1, 2 and 3 (3 does not divide the 8
/// heads: 3/3/2) in every communication mode, against the float64 NumPy
/// references of Tests/Fixtures/gguf-model and against TP 1.
final class GGUFTensorParallelTests: XCTestCase {
    struct Reference: Decodable {
        struct File: Decodable { let file: String; let logits: [[[Float]]]; let logits_8bit_activations: [[[Float]]]? }
        let sequences: [[Int]]
        let files: [String: File]
    }
    struct LogitsOutput: Decodable { let tokens: [Int]; let logits: [[Float]] }
    struct GenerateOutput: Decodable { let prompt_tokens: [Int]; let completion_tokens: [Int] }

    static let folder = MPIRun.fixture.deletingLastPathComponent().appendingPathComponent("gguf-model")
    static let reference: Reference = try! JSONDecoder().decode(
        Reference.self, from: Data(contentsOf: folder.appendingPathComponent("reference.json")))
    static func file(_ kind: String) -> String { folder.appendingPathComponent("tiny-llama-\(kind).gguf").path }

    func logits(_ kind: String, ranks: Int, tokens: [Int], _ extra: [String] = [],
                file: StaticString = #filePath, line: UInt = #line) throws -> [Float] {
        let outcome = try MPIRun.run(ranks: ranks, ["logits", "--model", Self.file(kind), "--threads", "1", "--kv-dtype", "f32",
                                                    "--tokens", tokens.map(String.init).joined(separator: ","), "--json"] + extra)
        XCTAssertEqual(outcome.status, 0, "\(kind) TP \(ranks) \(extra): \(outcome.stderr)", file: file, line: line)
        guard outcome.status == 0 else { return [] }
        return try JSONDecoder().decode(LogitsOutput.self, from: Data(outcome.stdout.utf8)).logits.flatMap { $0 }
    }

    static func worst(_ a: [Float], _ b: [Float]) -> Float { zip(a, b).map { abs($0 - $1) }.max() ?? .infinity }

    /// Every TP degree against the float64 reference. For the quantized files
    /// the bound is 1.5× the deviation that rounding the activations to 8-bit
    /// blocks causes in NumPy (see GGUFModelTests); a Q4_K tensor whose
    /// blocks a split would cut is converted to Q8_0, which adds its own
    /// (smaller) rounding, so the Q4_K file gets 2×.
    func testLogitsAtTP1To3MatchTheReference() throws {
        for (kind, factor) in [("f32", Float(0)), ("q8_0", 1.5), ("q4_k", 2)] {
            let expected = Self.reference.files[kind]!
            for ranks in [1, 2, 3] {
                for (i, tokens) in Self.reference.sequences.enumerated() {
                    let exact = expected.logits[i].flatMap { $0 }
                    let scale = exact.map(abs).max()!
                    var allowed = 1e-4 * scale
                    if let rounded = expected.logits_8bit_activations?[i].flatMap({ $0 }) {
                        allowed = factor * Self.worst(rounded, exact)
                    }
                    let actual = try logits(kind, ranks: ranks, tokens: tokens)
                    XCTAssertEqual(actual.count, exact.count)
                    XCTAssertLessThanOrEqual(Self.worst(actual, exact), allowed, "\(kind) TP \(ranks) sequence \(i)")
                }
            }
        }
    }

    /// The whole-KV-group split (8 heads / 4 KV heads on 3 ranks: 4 + 2 + 2
    /// heads, MLP rows balanced against them on 32-blocks) computes the same
    /// model: F32 at 1e-4 of the largest logit, Q8_0 within the 8-bit
    /// activation bound, in the fused and overlap modes.
    func testKVGroupSplitMatchesTheReference() throws {
        for (kind, factor) in [("f32", Float(0)), ("q8_0", 1.5)] {
            let expected = Self.reference.files[kind]!
            for mode in ["fused", "overlap"] {
                let tokens = Self.reference.sequences[1]
                let exact = expected.logits[1].flatMap { $0 }
                var allowed = 1e-4 * exact.map(abs).max()!
                if let rounded = expected.logits_8bit_activations?[1].flatMap({ $0 }) { allowed = factor * Self.worst(rounded, exact) }
                let actual = try logits(kind, ranks: 3, tokens: tokens, ["--head-split", "kv-groups", "--comm-mode", mode])
                XCTAssertEqual(actual.count, exact.count)
                XCTAssertLessThanOrEqual(Self.worst(actual, exact), allowed, "\(kind) TP 3 kv-groups \(mode)")
            }
        }
    }

    /// Greedy continuations of the Q8_0 file (whose blocks every split keeps
    /// whole, so each rank rounds the same activation blocks as one rank does)
    /// equal TP 1's at TP 2 and 3 in every mode, up to the first step where
    /// TP 1's top two logits are closer than the float32 reordering noise.
    func testGreedyEqualAcrossDegreesAndModes() throws {
        let prompt = Self.reference.sequences[1]
        let steps = 12
        func generate(_ ranks: Int, _ extra: [String]) throws -> [Int] {
            let outcome = try MPIRun.run(ranks: ranks, ["generate", "--model", Self.file("q8_0"), "--threads", "1", "--kv-dtype", "f32",
                                                        "--tokens", prompt.map(String.init).joined(separator: ","),
                                                        "--max-tokens", String(steps), "--json"] + extra)
            XCTAssertEqual(outcome.status, 0, "TP \(ranks) \(extra): \(outcome.stderr)")
            guard outcome.status == 0 else { return [] }
            return try JSONDecoder().decode(GenerateOutput.self, from: Data(outcome.stdout.utf8)).completion_tokens
        }
        let one = try generate(1, ["--comm-mode", "baseline"])
        XCTAssertEqual(one.count, steps)
        // TP 1's margins along its own continuation, against how far TP 2's
        // and TP 3's logits of the same tokens move from TP 1's at that step
        // (prefill and decode both round activations to 8-bit blocks, so the
        // TP noise is that rounding re-drawn, and it varies from row to row).
        let rows = try logits("q8_0", ranks: 1, tokens: prompt + one.dropLast())
        let others = try [2, 3].map { try logits("q8_0", ranks: $0, tokens: prompt + one.dropLast()) }
        let vocab = rows.count / (prompt.count + steps - 1)
        var trusted = 0
        var noises: [Float] = []
        for step in 0..<steps {
            let range = (prompt.count - 1 + step) * vocab ..< (prompt.count + step) * vocab
            let noise = others.map { Self.worst(Array($0[range]), Array(rows[range])) }.max()!
            let row = rows[range].sorted(by: >)
            guard row[0] - row[1] > 2 * noise else { break }
            noises.append(noise)
            trusted += 1
        }
        print("greedy check: \(trusted) of \(steps) steps above twice that step's TP noise \(noises)")
        XCTAssertGreaterThanOrEqual(trusted, 4, "the check covers several steps")
        for ranks in [2, 3] {
            for mode in ["baseline", "fused", "overlap"] {
                let tokens = try generate(ranks, ["--comm-mode", mode])
                XCTAssertEqual(Array(tokens.prefix(trusted)), Array(one.prefix(trusted)), "TP \(ranks) \(mode)")
            }
        }
    }

    /// A split that cuts Q4_K blocks (o_proj at TP 2: 128 of 256 columns)
    /// converts the tensor and says so once, on rank 0.
    func testConversionIsNotedOnce() throws {
        let outcome = try MPIRun.run(ranks: 2, ["logits", "--model", Self.file("q4_k"), "--threads", "1", "--tokens", "1,2,3", "--json"])
        XCTAssertEqual(outcome.status, 0, outcome.stderr)
        let notes = outcome.stderr.split(separator: "\n").filter { $0.contains("note:") }
        XCTAssertEqual(notes.count, 1, outcome.stderr)
        XCTAssertTrue(notes.first?.contains("o_proj") == true && notes.first?.contains("q8_0") == true, outcome.stderr)
    }
}
