import Foundation
import WeftFuzzTargets
import XCTest

/// Replays every seed (Tests/Fuzz/corpus/TARGET/) and every input a fuzzer
/// once crashed on (Tests/Fuzz/regressions/TARGET/) through its target with
/// the ordinary build: a regression traps this test process.
final class ReplayTests: XCTestCase {
    static let fuzzDirectory = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("Fuzz")

    func inputs(_ kind: String, _ target: String) -> [URL] {
        let dir = Self.fuzzDirectory.appendingPathComponent(kind).appendingPathComponent(target)
        let names = (try? FileManager.default.contentsOfDirectory(atPath: dir.path)) ?? []
        return names.sorted().filter { !$0.hasPrefix(".") }.map { dir.appendingPathComponent($0) }
    }

    func testEveryTargetHasASeedCorpus() {
        for name in FuzzTargets.names {
            XCTAssertFalse(inputs("corpus", name).isEmpty, "Tests/Fuzz/corpus/\(name) is empty or missing")
        }
        // Only known targets have directories (a typo would never be replayed).
        for kind in ["corpus", "regressions"] {
            let dir = Self.fuzzDirectory.appendingPathComponent(kind)
            for name in (try? FileManager.default.contentsOfDirectory(atPath: dir.path)) ?? [] where !name.hasPrefix(".") {
                XCTAssertNotNil(FuzzTargets.all[name], "Tests/Fuzz/\(kind)/\(name) names no fuzz target")
            }
        }
    }

    func testCorporaAndRegressionsReplayWithoutATrap() throws {
        var replayed = 0
        for name in FuzzTargets.names {
            let target = try XCTUnwrap(FuzzTargets.all[name])
            for url in inputs("corpus", name) + inputs("regressions", name) {
                target(Array(try Data(contentsOf: url)))
                replayed += 1
            }
        }
        XCTAssertGreaterThan(replayed, FuzzTargets.names.count)
    }
}

import WeftModel
import WeftTensor
import WeftTokenizer

/// The seeds the fuzzers start from are accepted by their parsers (a seed
/// that fails early gives the fuzzer no coverage of the code after it).
final class SeedTests: XCTestCase {
    func seed(_ target: String, _ name: String) throws -> [UInt8] {
        Array(try Data(contentsOf: ReplayTests.fuzzDirectory.appendingPathComponent("corpus/\(target)/\(name)")))
    }

    func testSafetensorsSeedParses() throws {
        let bytes = try seed("safetensors", "small-valid")
        let tensors = try bytes.withUnsafeBytes { try SafetensorsHeader.parse($0, fileLength: bytes.count, path: "seed") }
        XCTAssertEqual(tensors.count, 4)
    }

    func testConfigSeedsParse() throws {
        for name in ["minimal.json", "tiny-llama.json", "tiny-qwen2-variant.json"] {
            XCTAssertNoThrow(try ModelConfig.parse(Data(try seed("config", name)), file: name))
        }
        let moe: [(String, ModelConfig.Architecture)] = [
            ("tiny-mixtral.json", .mixtral), ("tiny-qwen2moe.json", .qwen2Moe), ("tiny-qwen3moe.json", .qwen3Moe),
            ("qwen2moe-dense-layers.json", .qwen2Moe),
        ]
        for (name, architecture) in moe {
            let config = try ModelConfig.parse(Data(try seed("config", name)), file: name)
            XCTAssertEqual(config.architecture, architecture, name)
            XCTAssertNotNil(config.moe, name)
        }
        let dense = try ModelConfig.parse(Data(try seed("config", "qwen2moe-dense-layers.json")), file: "")
        XCTAssertEqual((0..<4).map { dense.isSparse(layer: $0) }, [false, true, false, false])
    }

    /// Every gguf-model seed is a whole model that validates and loads (at
    /// degree 1, and as rank 1 of 2 under both expert placements), so the
    /// fuzzer starts inside the loader; the Q4_0 experts of mixtral.gguf keep
    /// their blocks on a 2-rank split and qwen3moe.gguf's Q8_0 experts (32
    /// columns) are converted, so both paths are seeded.
    func testGGUFModelSeedsLoad() throws {
        let pool = try ComputePool(threads: 1, pin: false)
        let seeds: [(String, ModelConfig.Architecture, Int)] = [
            ("llama.gguf", .llama, 0), ("mixtral.gguf", .mixtral, 2), ("qwen2moe.gguf", .qwen2Moe, 2),
            ("qwen3moe.gguf", .qwen3Moe, 3), ("qwen3moe-q8.gguf", .qwen3Moe, 3),
        ]
        let names = try FileManager.default.contentsOfDirectory(
            atPath: ReplayTests.fuzzDirectory.appendingPathComponent("corpus/gguf-model").path)
        XCTAssertEqual(names.sorted(), seeds.map(\.0).sorted())
        for (name, architecture, experts) in seeds {
            let path = ReplayTests.fuzzDirectory.appendingPathComponent("corpus/gguf-model/\(name)").path
            XCTAssertLessThan(try Data(contentsOf: URL(fileURLWithPath: path)).count, 8192, name)
            let source = try GGUFSource(path: path)
            let config = source.config
            XCTAssertEqual(config.architecture, architecture, name)
            XCTAssertEqual(config.moe?.expertCount ?? 0, experts, name)
            for tensor in config.tensorTable.tensors(config) {
                XCTAssertNoThrow(try source.validate(tensor.name, shape: tensor.entry.shape(config)), "\(name) \(tensor.name)")
            }
            let alignment = LlamaWeights.intermediateAlignment(config: config, source: source, format: nil)
            let one = try LlamaWeights(config: config, plan: TensorParallelPlan(config: config, rank: 0, size: 1, intermediateAlignment: alignment),
                                       source: source, pool: pool, node: nil)
            XCTAssertGreaterThan(one.byteCount, 0, name)
            guard experts > 0 else { continue }
            for placement in TensorParallelPlan.MoEPlacement.allCases {
                let plan = try TensorParallelPlan(config: config, rank: 1, size: 2, intermediateAlignment: alignment, moePlacement: placement)
                let weights = try LlamaWeights(config: config, plan: plan, source: source, pool: pool, node: nil)
                XCTAssertEqual(weights.layers[0].experts?.held, plan.experts, "\(name) \(placement)")
                if placement == .tensorParallel && name == "mixtral.gguf" { XCTAssertEqual(weights.conversions, [], name) }
                if placement == .tensorParallel && name == "qwen3moe.gguf" { XCTAssertFalse(weights.conversions.isEmpty, name) }
            }
        }
    }

    func testTokenizerSeedsLoad() throws {
        for name in ["minimal", "byte-level-split", "tiny-llama"] {
            let parts = try seed("tokenizer", name).split(separator: 0, maxSplits: 2, omittingEmptySubsequences: false)
            XCTAssertEqual(parts.count, 3, name)
            let t = try Tokenizer(tokenizerJSON: Data(parts[0]), tokenizerConfig: Data(parts[1]))
            XCTAssertFalse(t.encode(String(decoding: parts[2], as: UTF8.self)).isEmpty, name)
        }
    }
}
