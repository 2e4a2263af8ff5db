import Foundation
import XCTest

/// `Scripts/loadgen.py`, the load generator `Docs/Serving.md` measures with:
/// its own unit tests, then short seeded mixes against a real 2-rank server,
/// checked through the JSON report it writes (counts, not timings).
final class LoadgenSmokeTests: XCTestCase {
    static let script = MPIRun.fixture.deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("Scripts/loadgen.py")

    struct Run {
        var status: Int32
        var stdout: String
        var stderr: String
        var report: [String: Any]?
    }

    /// `python3 Scripts/loadgen.py ARGS`, with `--json` into a temporary file when `json` is set.
    func loadgen(_ arguments: [String], json: Bool = true) throws -> Run {
        let report = FileManager.default.temporaryDirectory.appendingPathComponent("weft-loadgen-\(UUID().uuidString).json")
        defer { try? FileManager.default.removeItem(at: report) }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", Self.script.path] + arguments + (json ? ["--json", report.path] : [])
        let out = Pipe(), err = Pipe()
        process.standardOutput = out
        process.standardError = err
        try process.run()
        let outCollector = MPIRun.DataCollector(out.fileHandleForReading)
        let errCollector = MPIRun.DataCollector(err.fileHandleForReading)
        process.waitUntilExit()
        let object = json ? (try? Data(contentsOf: report)).flatMap { try? JSONSerialization.jsonObject(with: $0) as? [String: Any] } : nil
        return Run(status: process.terminationStatus, stdout: outCollector.finish(), stderr: errCollector.finish(), report: object)
    }

    func testSelfTest() throws {
        let run = try loadgen(["--self-test"], json: false)
        XCTAssertEqual(run.status, 0, run.stdout + run.stderr)
        XCTAssertTrue(run.stdout.contains("checks passed"), run.stdout)
        XCTAssertFalse(run.stdout.contains("FAIL"), run.stdout)
        let bad = try loadgen(["--rate", "1", "--disconnect-share", "1.5"], json: false)
        XCTAssertEqual(bad.status, 2)
        XCTAssertEqual(bad.stderr.split(separator: "\n").count, 1, bad.stderr)
        XCTAssertTrue(bad.stderr.contains("--disconnect-share"), bad.stderr)
    }

    /// A Poisson mix with every kind of client; then closed-loop requests that
    /// all share one system prompt (the prefix cache must hit when the server
    /// reports it); then ids beyond the vocabulary, which the server refuses
    /// (every request counted failed, exit 1). Disconnected clients must leave
    /// nothing running on the server.
    func testMixAgainstServer() throws {
        let server = try ServerProcess(ranks: 2, ["--max-num-seqs", "8", "--max-model-len", "256"])
        defer { server.stop() }
        let url = "http://127.0.0.1:\(server.port)"

        let mix = try loadgen(["--url", url, "--rate", "8", "--num-requests", "16", "--seed", "5", "--warmup", "1",
                               "--length-scale", "0.1", "--max-prompt-tokens", "96", "--max-output-tokens", "24",
                               "--shared-prefix-tokens", "32", "--shared-prefix-share", "0.5",
                               "--disconnect-share", "0.25", "--no-max-tokens-share", "0.25",
                               "--slo-ttft-ms", "600000", "--slo-itl-ms", "600000", "--metrics-interval", "0.5"])
        XCTAssertEqual(mix.status, 0, mix.stderr)
        let report = try XCTUnwrap(mix.report, mix.stderr)
        let plan = try XCTUnwrap(report["mix"] as? [String: Any])
        let kinds = try XCTUnwrap(plan["kinds"] as? [String: Int])
        let level = try XCTUnwrap((report["levels"] as? [[String: Any]])?.first)
        XCTAssertEqual(level["failed"] as? Int, 0, mix.stderr)
        XCTAssertEqual(level["disconnected"] as? Int, kinds["disconnect"])
        XCTAssertEqual(level["natural_end"] as? Int, kinds["no_max_tokens"])
        XCTAssertEqual(level["completed"] as? Int, kinds["normal"])
        XCTAssertGreaterThan(kinds["disconnect"] ?? 0, 0, "seed 5 draws some disconnecting clients")
        XCTAssertGreaterThan(kinds["no_max_tokens"] ?? 0, 0, "seed 5 draws some clients without max_tokens")
        for request in try XCTUnwrap(level["per_request"] as? [[String: Any]]) {
            let tokens = request["tokens"] as? Int ?? -1, planned = request["planned_output_tokens"] as? Int ?? -1
            switch request["state"] as? String {
            case "completed", "natural_end": XCTAssertEqual(tokens, planned, "ignore_eos: exactly the sampled length, \(request)")
            case "disconnected": XCTAssertLessThanOrEqual(tokens, max(1, planned - 1), "\(request)")
            default: XCTFail("unexpected \(request)")
            }
        }
        XCTAssertNotNil((level["ttft_ms"] as? [String: Any])?["p99"] as? Double)
        XCTAssertEqual(level["slo_attainment"] as? Double, 1.0, "generous SLOs: every request not disconnected attains them")
        XCTAssertTrue(mix.stdout.contains("| rate req/s | requests | completed |"), mix.stdout)

        // Every disconnected request's sequence is freed on the server.
        var running: Double? = nil
        for _ in 0..<300 {
            running = try server.metric("weft_running_sequences")
            if running == 0 { break }
            usleep(100_000)
        }
        XCTAssertEqual(running, 0, "sequences left running after the clients went away")

        let shared = try loadgen(["--url", url, "--concurrency", "1",
                                  "--num-requests", "4", "--seed", "6", "--warmup", "0", "--length-scale", "0.05",
                                  "--max-output-tokens", "4", "--shared-prefix-tokens", "48", "--shared-prefix-share", "1"])
        XCTAssertEqual(shared.status, 0, shared.stderr)
        let stats = try XCTUnwrap(((shared.report?["levels"] as? [[String: Any]])?.first)?["server"] as? [String: Any])
        if try server.metric("weft_prefix_cache_hit_tokens_total") != nil {
            let rate = try XCTUnwrap(stats["prefix_cache_hit_rate"] as? Double, "\(stats)")
            XCTAssertGreaterThan(rate, 0, "requests 2-4 start with the 48 tokens request 1 left in the cache")
        }

        let refused = try loadgen(["--url", url, "--num-requests", "3", "--warmup", "0", "--length-scale", "0.05",
                                   "--max-output-tokens", "2", "--vocab-size", "1000000"])
        XCTAssertEqual(refused.status, 1, refused.stderr)
        XCTAssertEqual((refused.report?["levels"] as? [[String: Any]])?.first?["failed"] as? Int, 3, refused.stderr)
    }
}
