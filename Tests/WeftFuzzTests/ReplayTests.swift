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
