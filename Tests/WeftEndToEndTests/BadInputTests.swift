import Foundation
import WeftModel
import XCTest

/// Helpers of the bad-input tests: a scratch folder, damaged copies of the
/// fixture, and the check that a run fails as it should.
class BadInputTestCase: XCTestCase {
    var scratch: URL!

    override func setUpWithError() throws {
        scratch = FileManager.default.temporaryDirectory.appendingPathComponent("weft-bad-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: scratch, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(at: scratch)
    }

    /// A copy of the fixture model that the test then damages.
    func copyOfFixture() throws -> URL {
        let copy = scratch.appendingPathComponent("model")
        try FileManager.default.copyItem(at: MPIRun.fixture, to: copy)
        return copy
    }

    func editConfig(_ model: URL, _ edit: (inout [String: Any]) -> Void) throws {
        let url = model.appendingPathComponent("config.json")
        var json = try JSONSerialization.jsonObject(with: Data(contentsOf: url)) as! [String: Any]
        edit(&json)
        try JSONSerialization.data(withJSONObject: json).write(to: url)
    }

    func editTensors(_ model: URL, _ edit: (inout [SafetensorsWriter.Entry]) -> Void) throws {
        let url = model.appendingPathComponent("model.safetensors")
        var entries = try SafetensorsWriter.read(url.path)
        edit(&entries)
        try SafetensorsWriter.write(entries, to: url)
    }

    /// Runs `weft logits` on 2 ranks and checks the failure.
    func expectFailure(_ arguments: [String], ranks: Int = 2, mentions fragments: [String],
                       file: StaticString = #filePath, line: UInt = #line) throws {
        let outcome = try MPIRun.run(ranks: ranks, arguments, timeout: 120)
        XCTAssertFalse(outcome.timedOut, "a rank hung", file: file, line: line)
        XCTAssertEqual(outcome.rankExits.count, max(ranks, 1), "every rank reported: \(outcome.stderr)", file: file, line: line)
        for (rank, code) in outcome.rankExits { XCTAssertNotEqual(code, 0, "rank \(rank) exit code", file: file, line: line) }
        let errorLines = outcome.stderr.split(separator: "\n").filter { $0.hasPrefix("error:") }
        XCTAssertEqual(errorLines.count, 1, "one error line, got: \(outcome.stderr)", file: file, line: line)
        for fragment in fragments {
            XCTAssertTrue(outcome.stderr.contains(fragment), "stderr should mention \(fragment): \(outcome.stderr)", file: file, line: line)
        }
        XCTAssertTrue(outcome.stdout.isEmpty, "no output on failure: \(outcome.stdout)", file: file, line: line)
    }

    func logits(_ model: URL, tokens: String = "1,2,3") -> [String] {
        ["logits", "--model", model.path, "--tokens", tokens, "--json", "--threads", "1"]
    }

}

/// Every kind of bad input gives one clear line naming what is wrong, and
/// every rank exits non-zero (none hangs waiting for a rank that failed).
final class BadInputTests: BadInputTestCase {
    func testMissingModelFolder() throws {
        try expectFailure(logits(scratch.appendingPathComponent("nope")), mentions: ["nope", "no such model folder"])
    }

    func testMissingConfigFile() throws {
        let model = try copyOfFixture()
        try FileManager.default.removeItem(at: model.appendingPathComponent("config.json"))
        try expectFailure(logits(model), mentions: ["config.json", "cannot read"])
    }

    func testMalformedConfigJSON() throws {
        let model = try copyOfFixture()
        try Data("{\"hidden_size\": 256,".utf8).write(to: model.appendingPathComponent("config.json"))
        try expectFailure(logits(model), mentions: ["config.json", "malformed JSON"])
    }

    func testMissingConfigField() throws {
        let model = try copyOfFixture()
        try editConfig(model) { $0.removeValue(forKey: "num_attention_heads") }
        try expectFailure(logits(model), mentions: ["config.json", "num_attention_heads", "missing"])
    }

    func testInvalidConfigField() throws {
        let model = try copyOfFixture()
        try editConfig(model) { $0["hidden_size"] = -4 }
        try expectFailure(logits(model), mentions: ["config.json", "hidden_size", "1...131072", "-4"])
    }

    func testUnsupportedArchitecture() throws {
        let model = try copyOfFixture()
        try editConfig(model) { $0["architectures"] = ["GPT2LMHeadModel"] }
        try expectFailure(logits(model), mentions: ["architectures", "GPT2LMHeadModel", "LlamaForCausalLM"])
    }

    func testUnsupportedRopeScaling() throws {
        let model = try copyOfFixture()
        try editConfig(model) { $0["rope_scaling"] = ["rope_type": "yarn", "factor": 4.0] }
        try expectFailure(logits(model), mentions: ["rope_scaling", "yarn", "llama3"])
    }

    func testTruncatedSafetensors() throws {
        let model = try copyOfFixture()
        let url = model.appendingPathComponent("model.safetensors")
        let data = try Data(contentsOf: url)
        try data.prefix(data.count / 2).write(to: url)
        try expectFailure(logits(model), mentions: ["model.safetensors", "truncated"])
    }

    func testMalformedSafetensorsHeader() throws {
        let model = try copyOfFixture()
        let url = model.appendingPathComponent("model.safetensors")
        var data = try Data(contentsOf: url)
        data.replaceSubrange(8..<12, with: Data("!!!!".utf8))
        try data.write(to: url)
        try expectFailure(logits(model), mentions: ["model.safetensors", "malformed header JSON"])
    }

    func testMissingTensor() throws {
        let model = try copyOfFixture()
        try editTensors(model) { $0.removeAll { $0.name == "model.layers.2.mlp.up_proj.weight" } }
        try expectFailure(logits(model), mentions: ["model.layers.2.mlp.up_proj.weight", "missing", "[688, 256]"])
    }

    func testWrongTensorShape() throws {
        let model = try copyOfFixture()
        try editTensors(model) { entries in
            let i = entries.firstIndex { $0.name == "model.layers.1.self_attn.k_proj.weight" }!
            entries[i].shape = [256, 128]   // same bytes, transposed shape
        }
        try expectFailure(logits(model), mentions: ["model.layers.1.self_attn.k_proj.weight", "[256, 128]", "[128, 256]"])
    }

    func testUnknownDType() throws {
        let model = try copyOfFixture()
        try editTensors(model) { entries in
            let i = entries.firstIndex { $0.name == "model.norm.weight" }!
            entries[i].dtype = "I16"
        }
        try expectFailure(logits(model), mentions: ["model.norm.weight", "unsupported dtype I16"])
    }

    /// Issue 9: 10^18 positions used to overflow sizing the KV cache (SIGILL on every rank).
    func testHugeMaxPositionEmbeddings() throws {
        let model = try copyOfFixture()
        try editConfig(model) { $0["max_position_embeddings"] = 1_000_000_000_000_000_000 }
        try expectFailure(logits(model), mentions: ["config.json", "max_position_embeddings", "1000000000000000000", "1...16777216"])
    }

    /// Issue 9: a header length of 2^63 or more trapped converting to Int.
    func testSafetensorsHeaderLengthAbove2To63() throws {
        let model = try copyOfFixture()
        let url = model.appendingPathComponent("model.safetensors")
        var data = try Data(contentsOf: url)
        data.replaceSubrange(0..<8, with: [0, 0, 0, 0, 0, 0, 0, 0x80])
        try data.write(to: url)
        try expectFailure(logits(model), mentions: ["model.safetensors", "header length 9223372036854775808"])
    }

    /// Issue 9: an unknown bos_token was accepted and BOS silently dropped.
    func testUnknownBosToken() throws {
        let model = try copyOfFixture()
        let url = model.appendingPathComponent("tokenizer_config.json")
        var json = try JSONSerialization.jsonObject(with: Data(contentsOf: url)) as! [String: Any]
        json["bos_token"] = "<no-such-token>"
        try JSONSerialization.data(withJSONObject: json).write(to: url)
        try expectFailure(logits(model), mentions: ["tokenizer_config.json", "bos_token", "<no-such-token>", "not in the vocabulary"])
    }

    func testTPDegreeBeyondTheHeads() throws {
        try expectFailure(logits(MPIRun.fixture), ranks: 9, mentions: ["tensor-parallel degree 9", "num_attention_heads 8"])
    }

    func testTokenOutOfRange() throws {
        try expectFailure(logits(MPIRun.fixture, tokens: "1,4096"), mentions: ["token id 4096", "4096 ids"])
    }

    func testGeneratePromptBeyondContext() throws {
        let model = try copyOfFixture()
        try editConfig(model) { $0["max_position_embeddings"] = 8 }
        try expectFailure(["generate", "--model", model.path, "--tokens", "1,2,3,4,5", "--max-tokens", "10", "--threads", "1"],
                          mentions: ["exceeds the context of 8 positions"])
    }

    /// As users run it (mpirun ends the job at the first failing rank), mpirun
    /// itself exits non-zero.
    func testMpirunExitsNonZeroOnFailure() throws {
        let outcome = try MPIRun.run(ranks: 2, logits(MPIRun.fixture, tokens: "1,99999"), letAllRanksFinish: false)
        XCTAssertFalse(outcome.timedOut)
        XCTAssertNotEqual(outcome.status, 0)
        XCTAssertTrue(outcome.stderr.contains("token id 99999"), outcome.stderr)
    }

    /// The engine names its own parameter (`EngineConfiguration.commCores`);
    /// the CLI shows the flag the user typed, on one rank (the error as
    /// thrown) and on two (the error agreed across ranks as text).
    func testEngineParameterErrorNamesTheFlag() throws {
        for ranks in [1, 2] {
            try expectFailure(logits(MPIRun.fixture) + ["--comm-cores", "4096"], ranks: ranks,
                              mentions: ["error: --comm-cores: 4096 leaves no compute core"])
            let outcome = try MPIRun.run(ranks: ranks, logits(MPIRun.fixture) + ["--comm-cores", "4096"])
            XCTAssertFalse(outcome.stderr.contains("EngineConfiguration"), outcome.stderr)
        }
    }

    /// The sampler's parameters are checked with the other options and shown as flags.
    func testSamplerParameterErrorNamesTheFlag() throws {
        let outcome = try MPIRun.run(ranks: 0, ["generate", "--model", MPIRun.fixture.path, "--tokens", "1,2", "--top-p=2"])
        XCTAssertEqual(outcome.rankExits.count, 1, outcome.stderr)
        for (rank, code) in outcome.rankExits { XCTAssertNotEqual(code, 0, "rank \(rank)") }
        XCTAssertTrue(outcome.stderr.contains("--top-p: must be in (0, 1], got 2.0"), outcome.stderr)
        XCTAssertFalse(outcome.stderr.contains("Sampler.topP"), outcome.stderr)
    }

    func testBadOptionIsReportedOnce() throws {
        let outcome = try MPIRun.run(ranks: 2, ["logits", "--model", MPIRun.fixture.path, "--tokens", "1,x"])
        XCTAssertEqual(outcome.rankExits.count, 2, outcome.stderr)
        XCTAssertEqual(outcome.stderr.components(separatedBy: "\"x\" is not a token id").count - 1, 1, outcome.stderr)
        for (rank, code) in outcome.rankExits { XCTAssertNotEqual(code, 0, "rank \(rank)") }
    }
}
