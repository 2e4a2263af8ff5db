import Foundation
import XCTest

/// `weft logits` and `weft generate` at TP 1, 2 and 4 (oversubscribed) against
/// Hugging Face transformers' outputs.
final class TensorParallelTests: XCTestCase {
    struct Reference: Decodable {
        struct LogitsCase: Decodable { let tokens: [Int]; let logits: [[Float]] }
        struct GreedyCase: Decodable { let prompt_tokens: [Int]; let continuation: [Int]; let top1_top2_margin: [Float] }
        let logits_cases: [LogitsCase]
        let greedy_cases: [GreedyCase]
    }
    struct LogitsOutput: Decodable { let tokens: [Int]; let logits: [[Float]] }
    struct GenerateOutput: Decodable { let prompt_tokens: [Int]; let completion_tokens: [Int]; let text: String }

    static let reference: Reference = try! JSONDecoder().decode(
        Reference.self, from: Data(contentsOf: MPIRun.fixture.appendingPathComponent("reference.json")))

    func checkLogits(ranks: Int) throws {
        for (index, reference) in Self.reference.logits_cases.enumerated() {
            let outcome = try MPIRun.run(ranks: ranks, ["logits", "--model", MPIRun.fixture.path, "--threads", "1", "--kv-dtype", "f32",
                                                        "--tokens", reference.tokens.map(String.init).joined(separator: ","), "--json"])
            XCTAssertEqual(outcome.status, 0, "TP \(ranks) case \(index): \(outcome.stderr)")
            let output = try JSONDecoder().decode(LogitsOutput.self, from: Data(outcome.stdout.utf8))
            XCTAssertEqual(output.tokens, reference.tokens)
            XCTAssertEqual(output.logits.count, reference.logits.count)
            let scale = reference.logits.flatMap { $0 }.map(abs).max()!
            var worst: Float = 0
            for (row, expected) in zip(output.logits, reference.logits) {
                XCTAssertEqual(row.count, expected.count)
                for (a, e) in zip(row, expected) { worst = max(worst, abs(a - e)) }
            }
            XCTAssertLessThanOrEqual(worst, 1e-4 * scale, "TP \(ranks) case \(index): max |Δlogit| \(worst)")
        }
    }

    func checkGreedy(ranks: Int) throws {
        for (index, reference) in Self.reference.greedy_cases.enumerated() {
            let outcome = try MPIRun.run(ranks: ranks, ["generate", "--model", MPIRun.fixture.path, "--threads", "1", "--kv-dtype", "f32",
                                                        "--tokens", reference.prompt_tokens.map(String.init).joined(separator: ","),
                                                        "--max-tokens", String(reference.continuation.count), "--json"])
            XCTAssertEqual(outcome.status, 0, "TP \(ranks) case \(index): \(outcome.stderr)")
            let output = try JSONDecoder().decode(GenerateOutput.self, from: Data(outcome.stdout.utf8))
            XCTAssertEqual(output.prompt_tokens, reference.prompt_tokens)
            for (step, expected) in reference.continuation.enumerated() {
                guard reference.top1_top2_margin[step] > 1e-3, step < output.completion_tokens.count else { break }
                XCTAssertEqual(output.completion_tokens[step], expected, "TP \(ranks) greedy case \(index) step \(step)")
                if output.completion_tokens[step] != expected { break }
            }
        }
    }

    func testLogitsWithoutMPIRun() throws { try checkLogits(ranks: 0) }
    func testLogitsTP1() throws { try checkLogits(ranks: 1) }
    func testLogitsTP2() throws { try checkLogits(ranks: 2) }
    func testLogitsTP4() throws { try checkLogits(ranks: 4) }
    func testGreedyTP1() throws { try checkGreedy(ranks: 1) }
    func testGreedyTP2() throws { try checkGreedy(ranks: 2) }
    func testGreedyTP4() throws { try checkGreedy(ranks: 4) }

    /// TP 8 exceeds the fixture's 4 KV heads: each KV head is held by two ranks.
    func testLogitsTP8ReplicatesKVHeads() throws {
        let reference = Self.reference.logits_cases[0]
        let outcome = try MPIRun.run(ranks: 8, ["logits", "--model", MPIRun.fixture.path, "--threads", "1", "--kv-dtype", "f32",
                                                "--tokens", reference.tokens.map(String.init).joined(separator: ","), "--json"])
        XCTAssertEqual(outcome.status, 0, outcome.stderr)
        let output = try JSONDecoder().decode(LogitsOutput.self, from: Data(outcome.stdout.utf8))
        let scale = reference.logits.flatMap { $0 }.map(abs).max()!
        let worst = zip(output.logits.flatMap { $0 }, reference.logits.flatMap { $0 }).map { abs($0 - $1) }.max()!
        XCTAssertLessThanOrEqual(worst, 1e-4 * scale)
    }

    /// Text in, text out: the prompt goes through the tokenizer (BOS added) and
    /// the completion is decoded; the tokens equal the reference's greedy case.
    func testGeneratePromptTextTP2() throws {
        let reference = Self.reference.greedy_cases[0]   // "Hello world" with BOS
        let outcome = try MPIRun.run(ranks: 2, ["generate", "--model", MPIRun.fixture.path, "--threads", "1", "--kv-dtype", "f32",
                                                "--prompt", "Hello world", "--max-tokens", "5", "--json"])
        XCTAssertEqual(outcome.status, 0, outcome.stderr)
        let output = try JSONDecoder().decode(GenerateOutput.self, from: Data(outcome.stdout.utf8))
        XCTAssertEqual(output.prompt_tokens, reference.prompt_tokens)
        XCTAssertEqual(output.completion_tokens, Array(reference.continuation.prefix(5)))
        XCTAssertFalse(output.text.isEmpty)
    }

    func testTokenizeCommand() throws {
        let outcome = try MPIRun.run(ranks: 2, ["tokenize", "--model", MPIRun.fixture.path, "--text", "Hello world", "--json"])
        XCTAssertEqual(outcome.status, 0, outcome.stderr)
        XCTAssertEqual(outcome.stdout.trimmingCharacters(in: .whitespacesAndNewlines), "{\"ids\":[4094,39,483,417,3163]}")
        let bare = try MPIRun.run(ranks: 0, ["tokenize", "--model", MPIRun.fixture.path, "--text", "Hello world", "--no-special", "--json"])
        XCTAssertEqual(bare.stdout.trimmingCharacters(in: .whitespacesAndNewlines), "{\"ids\":[39,483,417,3163]}")
    }

    /// Streaming output is the decoded completion, printed on rank 0 only.
    func testGenerateStreamsTextOnRankZeroOnly() throws {
        let json = try MPIRun.run(ranks: 2, ["generate", "--model", MPIRun.fixture.path, "--threads", "1", "--kv-dtype", "f32",
                                             "--prompt", "Hello world", "--max-tokens", "8", "--json"])
        let expected = try JSONDecoder().decode(GenerateOutput.self, from: Data(json.stdout.utf8)).text
        let streamed = try MPIRun.run(ranks: 2, ["generate", "--model", MPIRun.fixture.path, "--threads", "1", "--kv-dtype", "f32",
                                                 "--prompt", "Hello world", "--max-tokens", "8"])
        XCTAssertEqual(streamed.status, 0, streamed.stderr)
        XCTAssertEqual(streamed.stdout, expected + "\n")
    }
}
