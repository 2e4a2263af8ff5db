import Foundation
import XCTest

/// Broken GGUF models (Tests/Fixtures/gguf-model/bad, made by
/// make_gguf_models.py; the file name says the defect): one error line
/// naming the key or tensor, every rank exits non-zero.
final class BadGGUFTests: BadInputTestCase {
    static let bad = MPIRun.fixture.deletingLastPathComponent().appendingPathComponent("gguf-model/bad")
    func bad(_ name: String) -> URL { Self.bad.appendingPathComponent(name + ".gguf") }

    func testTheValidOneLoads() throws {
        let outcome = try MPIRun.run(ranks: 2, logits(bad("valid"), tokens: "1,2"))
        XCTAssertEqual(outcome.status, 0, outcome.stderr)
    }

    func testMissingKey() throws {
        try expectFailure(logits(bad("missing-key-block_count")), mentions: ["missing-key-block_count.gguf", "llama.block_count", "missing"])
    }

    func testKeyOfTheWrongType() throws {
        try expectFailure(logits(bad("wrong-type-embedding_length")), mentions: ["llama.embedding_length", "integer", "string"])
    }

    func testKeyOutOfRange() throws {
        try expectFailure(logits(bad("zero-head_count")), mentions: ["llama.attention.head_count", "1...4096", "found 0"])
    }

    func testUnsupportedArchitecture() throws {
        try expectFailure(logits(bad("unsupported-architecture")), mentions: ["general.architecture", "gpt2"])
    }

    func testShapeThatDoesNotMatchTheMetadata() throws {
        try expectFailure(logits(bad("shape-mismatch-ffn_up")), mentions: ["blk.0.ffn_up.weight", "[64, 100]", "[64, 128]"])
    }

    func testUnsupportedTensorType() throws {
        try expectFailure(logits(bad("unsupported-type-q5_0")), mentions: ["blk.0.attn_q.weight", "Q5_0", "not supported"])
    }

    func testMissingTensor() throws {
        try expectFailure(logits(bad("missing-tensor-ffn_down")), mentions: ["blk.0.ffn_down.weight", "missing"])
    }

    // Mixture-of-experts files (Tests/Fixtures/gguf-moe/bad, made by make_bad.py: a tiny qwen2moe).
    static let badMoE = bad.deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("gguf-moe/bad")
    func badMoE(_ name: String) -> URL { Self.badMoE.appendingPathComponent(name + ".gguf") }

    func testTheValidMoEOneLoadsUnderBothPlacements() throws {
        for placement in ["tp", "ep"] {
            let outcome = try MPIRun.run(ranks: 2, logits(badMoE("valid"), tokens: "1,2,3") + ["--moe-placement", placement])
            XCTAssertEqual(outcome.status, 0, outcome.stderr)
        }
    }

    func testBadMoEKeysAndStackedTensors() throws {
        try expectFailure(logits(badMoE("missing-key-expert_feed_forward_length")),
                          mentions: ["qwen2moe.expert_feed_forward_length", "missing"])
        try expectFailure(logits(badMoE("used-exceeds-count")), mentions: ["qwen2moe.expert_used_count", "1...4", "found 5"])
        try expectFailure(logits(badMoE("zero-expert_count")), mentions: ["qwen2moe.expert_count", "found 0"])
        try expectFailure(logits(badMoE("stacked-experts-mismatch-ffn_up_exps")),
                          mentions: ["blk.0.ffn_up_exps.weight", "[16, 8, 3]", "[16, 8, 4]"])
        try expectFailure(logits(badMoE("missing-tensor-ffn_down_exps")), mentions: ["blk.0.ffn_down_exps.weight", "missing"])
    }

    func testTruncatedFile() throws {
        let source = try Data(contentsOf: bad("valid"))
        let truncated = scratch.appendingPathComponent("truncated.gguf")
        try source.prefix(source.count - 1000).write(to: truncated)
        try expectFailure(logits(truncated), mentions: ["truncated.gguf"])
    }

    func testWrongMagic() throws {
        var data = try Data(contentsOf: bad("valid"))
        data[0] = UInt8(ascii: "X")
        let file = scratch.appendingPathComponent("magic.gguf")
        try data.write(to: file)
        try expectFailure(logits(file), mentions: ["magic.gguf"])
    }

    func testBadWeightDtype() throws {
        let outcome = try MPIRun.run(ranks: 0, logits(bad("valid")) + ["--weight-dtype", "q4_K"])
        XCTAssertNotEqual(outcome.status, 0)
        XCTAssertTrue(outcome.stderr.contains("--weight-dtype"), outcome.stderr)
    }
}
