import Foundation
import XCTest

/// The real default model, SmolLM2-135M-Instruct Q4_1 (30 layers, 9 heads, 3
/// KV heads), under `mpirun` at TP 1, 2 (both head splits) and 3, against the
/// float64 NumPy reference of Tests/Fixtures/smollm2
/// (Scripts/make_smollm2_reference.py: gguf's dequantized weights, chat
/// prompts rendered through the file's template with jinja2 and tokenized
/// with a Hugging Face `tokenizers` build of its vocabulary).
///
/// Weft multiplies Q4_1 and Q8_0 weights by activations rounded to 8-bit
/// blocks (the integer dot path, which decode always takes), as llama.cpp
/// does. That rounding moves each product by about 1 % and the logits by
/// about 1 (in a range of ±25) after 30 layers; and float32-sized
/// differences re-draw it (a value at a rounding boundary moves by a whole
/// step, which moves later layers' rounding): in the reference, perturbing
/// every product's input by a relative 1e-6 changes the 8-bit logits as much
/// as the rounding itself does. So two correct engines differ by that much,
/// and the tolerance is set by the reference's own 8-bit runs (one plain and
/// eleven perturbed at the last prompt position): 2× their largest
/// deviation (Weft was seen at up to 1.42× it once the prefill rounded
/// activations too), which stays below 1/2.5 of the error of a known bug (q
/// and k left in llama.cpp's row order). Greedy tokens are compared while the
/// reference's top-2 margin is above twice the largest change four such runs
/// made to it.
final class SmolLM2Tests: XCTestCase {
    struct Reference: Decodable {
        struct Prompt: Decodable {
            let name: String
            let tokens: [Int]
            let logits_file: String
            let argmax: Int
            let deviation_8bit: Float
            let deviation_qk_permutation_not_undone: Float
            let continuation: [Int]
            let margins: [Float]
            let margin_change_8bit_per_step: [Float]
        }
        let vocab: Int
        let prompts: [Prompt]
    }
    struct LogitsOutput: Decodable { let tokens: [Int]; let logits: [[Float]] }
    struct GenerateOutput: Decodable { let prompt_tokens: [Int]; let completion_tokens: [Int] }

    static let folder = MPIRun.fixture.deletingLastPathComponent().appendingPathComponent("smollm2")
    static let reference: Reference = try! JSONDecoder().decode(
        Reference.self, from: Data(contentsOf: folder.appendingPathComponent("reference.json")))

    /// Allowed max |logit − reference| as a multiple of the largest deviation
    /// of the reference's 8-bit runs.
    static let tolerance: Float = 2
    /// Steps compared: while margin > clearFactor × the 8-bit runs' change to it.
    static let clearFactor: Float = 2
    /// Chat prompts whose reference continuation is clear for all its steps
    /// (counting); "france"'s first step is not ("The" 0.08 above "Paris").
    static let greedyPrompts = ["count", "commas"]

    static func prompt(_ name: String) -> Reference.Prompt { reference.prompts.first { $0.name == name }! }

    static func expectedLogits(_ prompt: Reference.Prompt) throws -> [Float] {
        let data = try Data(contentsOf: folder.appendingPathComponent(prompt.logits_file))
        precondition(data.count == reference.vocab * 4, "\(prompt.logits_file): \(data.count) bytes")
        let bytes = [UInt8](data)
        return (0..<reference.vocab).map { (i: Int) -> Float in
            var bits: UInt32 = 0
            for b in (0..<4).reversed() { bits = bits << 8 | UInt32(bytes[4 * i + b]) }
            return Float(bitPattern: bits)
        }
    }

    /// How many leading greedy steps the reference's margin makes clear.
    static func clearSteps(_ prompt: Reference.Prompt) -> Int {
        zip(prompt.margins, prompt.margin_change_8bit_per_step).prefix { $0 > clearFactor * $1 }.count
    }

    static func worst(_ a: [Float], _ b: [Float]) -> Float { zip(a, b).map { abs($0 - $1) }.max() ?? .infinity }

    struct ManyLogits: Decodable { let sequences: [LogitsOutput] }

    /// Each prompt's last position's logits, all prompts in one batch: every
    /// prompt but its last token runs first (prefill), then the last tokens
    /// as one batch of decode steps.
    func lastLogits(_ model: String, ranks: Int, prompts: [[Int]], _ extra: [String] = [],
                    file: StaticString = #filePath, line: UInt = #line) throws -> [[Float]] {
        let outcome = try MPIRun.run(ranks: ranks, ["logits", "--model", model, "--threads", "1", "--kv-dtype", "f32"]
                                     + prompts.flatMap { ["--tokens", $0.map(String.init).joined(separator: ",")] }
                                     + ["--prefix-lengths", prompts.map { String($0.count - 1) }.joined(separator: ","), "--json"] + extra)
        XCTAssertEqual(outcome.status, 0, "TP \(ranks) \(extra): \(outcome.stderr)", file: file, line: line)
        guard outcome.status == 0 else { return [] }
        let data = Data(outcome.stdout.utf8)
        let sequences = prompts.count == 1 ? [try JSONDecoder().decode(LogitsOutput.self, from: data)]
                                           : try JSONDecoder().decode(ManyLogits.self, from: data).sequences
        XCTAssertEqual(sequences.map(\.logits.count), prompts.map { _ in 1 }, "TP \(ranks): one printed position each", file: file, line: line)
        return sequences.map { $0.logits.last ?? [] }
    }

    func generate(_ model: String, ranks: Int, tokens: [Int], steps: Int, _ extra: [String] = [],
                  file: StaticString = #filePath, line: UInt = #line) throws -> [Int] {
        let outcome = try MPIRun.run(ranks: ranks, ["generate", "--model", model, "--threads", "1", "--kv-dtype", "f32",
                                                    "--tokens", tokens.map(String.init).joined(separator: ","),
                                                    "--max-tokens", String(steps), "--json"] + extra)
        XCTAssertEqual(outcome.status, 0, "TP \(ranks) \(extra): \(outcome.stderr)", file: file, line: line)
        guard outcome.status == 0 else { return [] }
        return try JSONDecoder().decode(GenerateOutput.self, from: Data(outcome.stdout.utf8)).completion_tokens
    }

    /// The fixture is what the tests below rely on: its tolerance is far
    /// below the error of a known mistake (q and k left in llama.cpp's row
    /// order), and the greedy prompts' continuations are clear for at least
    /// 32 steps.
    func testReferenceIsDiscriminating() throws {
        for prompt in Self.reference.prompts {
            XCTAssertLessThan(Self.tolerance * prompt.deviation_8bit, prompt.deviation_qk_permutation_not_undone / 2.5, prompt.name)
        }
        for name in Self.greedyPrompts {
            XCTAssertGreaterThanOrEqual(Self.clearSteps(Self.prompt(name)), 32, name)
        }
    }

    /// The last prompt position's full-vocabulary logits at TP 1, 2 and 3
    /// within 2× the reference's largest 8-bit deviation, and the top token
    /// equal where the reference's margin is clear.
    func testLogitsAtTP1To3MatchTheReference() throws {
        let model = try RealModel.smolLM2()
        let prompts = Self.reference.prompts
        let expected = try prompts.map(Self.expectedLogits)
        for (ranks, extra) in Self.layouts {
            let actual = try lastLogits(model, ranks: ranks, prompts: prompts.map(\.tokens), extra)
            guard actual.count == prompts.count else { continue }
            for (i, prompt) in prompts.enumerated() {
                let label = "\(prompt.name) TP \(ranks) \(extra)"
                let allowed = Self.tolerance * prompt.deviation_8bit
                XCTAssertEqual(actual[i].count, expected[i].count, label)
                guard actual[i].count == expected[i].count else { continue }
                let error = Self.worst(actual[i], expected[i])
                print("smollm2 \(label): max |logit - reference| \(error) (allowed \(allowed))")
                XCTAssertLessThanOrEqual(error, allowed, label)
                if Self.clearSteps(prompt) > 0 {
                    XCTAssertEqual(actual[i].indices.max { actual[i][$0] < actual[i][$1] }, prompt.argmax, label)
                }
            }
        }
    }

    /// The same logits from a prefill of the whole prompt (every position
    /// printed; the last compared), which takes the kernels' prefill path
    /// where the prompt is long enough, within the same bound.
    func testPrefillLogitsMatchTheReference() throws {
        let model = try RealModel.smolLM2()
        let prompt = Self.prompt("france")   // 37 tokens, the template's default system prompt
        let expected = try Self.expectedLogits(prompt)
        let allowed = Self.tolerance * prompt.deviation_8bit
        // One layout (37 printed rows of 49152 logits are slow to read in a
        // debug build): TP 2 with the uneven KV-group split.
        for (ranks, extra) in [(2, ["--head-split", "kv-groups"])] {
            let label = "prefill \(prompt.name) TP \(ranks) \(extra)"
            let outcome = try MPIRun.run(ranks: ranks, ["logits", "--model", model, "--threads", "1", "--kv-dtype", "f32",
                                                        "--tokens", prompt.tokens.map(String.init).joined(separator: ","),
                                                        "--json"] + extra)
            XCTAssertEqual(outcome.status, 0, "\(label): \(outcome.stderr)")
            guard outcome.status == 0 else { continue }
            let rows = try JSONDecoder().decode(LogitsOutput.self, from: Data(outcome.stdout.utf8)).logits
            XCTAssertEqual(rows.count, prompt.tokens.count, label)
            let actual = rows.last ?? []
            XCTAssertEqual(actual.count, expected.count, label)
            guard actual.count == expected.count else { continue }
            let error = Self.worst(actual, expected)
            print("smollm2 \(label): max |logit - reference| \(error) (allowed \(allowed))")
            XCTAssertLessThanOrEqual(error, allowed, label)
        }
    }

    /// Greedy continuations of the counting chat prompts at TP 1 equal the
    /// reference's over the steps where its margin is clear (at least 32).
    func testGreedyContinuationsMatchTheReference() throws {
        let model = try RealModel.smolLM2()
        for name in Self.greedyPrompts {
            let prompt = Self.prompt(name)
            let clear = Self.clearSteps(prompt)
            XCTAssertGreaterThanOrEqual(clear, 32, name)
            let tokens = try generate(model, ranks: 1, tokens: prompt.tokens, steps: clear)
            XCTAssertEqual(tokens, Array(prompt.continuation.prefix(clear)), "\(name) TP 1")
        }
    }

    /// The tensor-parallel layouts of SmolLM2's 9 heads and 3 KV heads: TP 2
    /// with the heads split evenly (5 + 4, the KV head they share held on
    /// both ranks) or by whole KV groups (6 + 3, MLP rows balanced against
    /// the attention), and TP 3 (3 + 3 + 3).
    static let layouts: [(ranks: Int, extra: [String])] = [
        (1, []), (2, ["--head-split", "even"]), (2, ["--head-split", "kv-groups"]), (3, []),
    ]

    /// TP 2 and TP 3 give TP 1's greedy tokens in every communication mode:
    /// the reference's, which TP 1 gives (the test above), over its first
    /// `modeSteps` steps (all clear), to keep the file's run time down. With
    /// one-token batches overlap's decode runs fused, so the modes differ in
    /// the prompt's prefill and in decode's reductions. (Both TP 2 head
    /// splits are in the logits test.)
    static let modeSteps = 12

    func testGreedyEqualAcrossDegreesAndModes() throws {
        let model = try RealModel.smolLM2()
        let prompt = Self.prompt("count")
        XCTAssertGreaterThanOrEqual(Self.clearSteps(prompt), Self.modeSteps)
        let expected = Array(prompt.continuation.prefix(Self.modeSteps))
        for ranks in [2, 3] {
            for mode in ["baseline", "fused", "overlap"] {
                let tokens = try generate(model, ranks: ranks, tokens: prompt.tokens, steps: Self.modeSteps, ["--comm-mode", mode])
                XCTAssertEqual(tokens, expected, "TP \(ranks) \(mode)")
            }
        }
        // 16- and 8-bit transfers between nodes (forced on one machine): the same greedy tokens.
        for wire in ["bf16", "fp16", "q8_0"] {
            let tokens = try generate(model, ranks: 2, tokens: prompt.tokens, steps: Self.modeSteps,
                                      ["--comm-mode", "overlap", "--comm-transport", "mpi", "--comm-dtype", wire])
            XCTAssertEqual(tokens, expected, "TP 2 overlap, \(wire) between nodes")
        }
    }
}
