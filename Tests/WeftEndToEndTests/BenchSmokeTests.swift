import Foundation
import XCTest

/// Every bench subcommand runs on the tiny model under mpirun and prints
/// parseable output holding every requested row (timings are not checked).
final class BenchSmokeTests: XCTestCase {
    func json(_ outcome: MPIRun.Outcome, file: StaticString = #filePath, line: UInt = #line) throws -> Any {
        XCTAssertEqual(outcome.rankExits.values.filter { $0 != 0 }.count, 0, outcome.stderr, file: file, line: line)
        let text = outcome.stdout.split(separator: "\n").first { $0.hasPrefix("[") || $0.hasPrefix("{") }.map(String.init) ?? ""
        return try JSONSerialization.jsonObject(with: Data(text.utf8))
    }

    func testEndToEnd() throws {
        let out = try json(MPIRun.run(ranks: 2, ["bench", "e2e", "--model", MPIRun.fixture.path, "--threads", "1",
                                                 "-p", "16", "-n", "4", "-r", "1", "-o", "json"])) as! [String: Any]
        let results = out["results"] as! [[String: Any]]
        XCTAssertEqual(results.map { $0["test"] as! String }, ["pp16", "tg4"])
        XCTAssertTrue(results.allSatisfy { ($0["tokens_per_second_mean"] as! Double) > 0 })
        XCTAssertEqual((out["memory"] as! [[String: Any]]).count, 2, "one memory row per rank")
        let csv = try MPIRun.run(ranks: 0, ["bench", "e2e", "--model", MPIRun.fixture.path, "-p", "8", "-n", "2", "-r", "1", "-o", "csv"])
        XCTAssertEqual(csv.stdout.split(separator: "\n").count, 3, csv.stdout)
        // At a depth: llama-bench's "@ dN" labels; past the context, one error line.
        let deep = try json(MPIRun.run(ranks: 2, ["bench", "e2e", "--model", MPIRun.fixture.path, "--threads", "1",
                                                  "-d", "520", "-p", "8", "-n", "2", "-r", "1", "-o", "json"])) as! [String: Any]
        XCTAssertEqual((deep["results"] as! [[String: Any]]).map { $0["test"] as! String }, ["pp8 @ d520", "tg2 @ d520"])
        let tooDeep = try MPIRun.run(ranks: 0, ["bench", "e2e", "--model", MPIRun.fixture.path, "-d", "4000", "-p", "8", "-n", "2", "-r", "1"])
        XCTAssertNotEqual(tooDeep.status, 0)
        XCTAssertEqual(tooDeep.stderr.split(separator: "\n").filter { $0.hasPrefix("error:") && $0.contains("max_position_embeddings") }.count, 1, tooDeep.stderr)
    }

    func testPrefillModes() throws {
        let plot = FileManager.default.temporaryDirectory.appendingPathComponent("weft-plot-\(UUID().uuidString).svg")
        defer { try? FileManager.default.removeItem(at: plot) }
        let rows = try json(MPIRun.run(ranks: 2, ["bench", "prefill", "--model", MPIRun.fixture.path, "--threads", "1",
                                                  "--tokens", "8,20", "--modes", "baseline,fused,overlap,auto,nocomm", "-r", "1", "--json",
                                                  "--plot", plot.path])) as! [[String: Any]]
        let svg = try String(contentsOf: plot, encoding: .utf8)
        XCTAssertTrue(svg.hasPrefix("<svg"))
        XCTAssertEqual(svg.components(separatedBy: "<polyline").count - 1, 5, "one line per mode")
        XCTAssertEqual(rows.count, 10)
        for count in [8, 20] {
            XCTAssertEqual(Set(rows.filter { $0["tokens"] as! Int == count }.map { $0["mode"] as! String }),
                           ["baseline", "fused", "overlap", "auto", "nocomm"])
        }
    }

    /// `--trace`: a Chrome trace holding, for every traced run and rank, the
    /// compute steps of each chunk and layer, the waits, and (over MPI) the
    /// comm thread's reduce-scatter / norm / all-gather spans with the bytes
    /// the pairwise exchange really sends; `--chunks 3` runs three chunks.
    func testPrefillTrace() throws {
        // Enough rows for three chunks of whole micro-kernel row blocks on every
        // ISA (AVX-512's blocks are taller than AVX2's: 40 rows were too few).
        let rows = 96
        let trace = FileManager.default.temporaryDirectory.appendingPathComponent("weft-trace-\(UUID().uuidString).json")
        defer { try? FileManager.default.removeItem(at: trace) }
        let outcome = try MPIRun.run(ranks: 2, ["bench", "prefill", "--model", MPIRun.fixture.path, "--threads", "1",
                                                "--tokens", String(rows), "--modes", "fused,overlap", "-r", "1", "--chunks", "3",
                                                "--comm-transport", "mpi", "--comm-dtype", "bf16", "--trace", trace.path])
        XCTAssertEqual(outcome.rankExits.values.filter { $0 != 0 }.count, 0, outcome.stderr)
        XCTAssertTrue(outcome.stdout.contains("| \(rows) | overlap | 0 |"), outcome.stdout)
        let document = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(contentsOf: trace)) as? [String: Any])
        let events = try XCTUnwrap(document["traceEvents"] as? [[String: Any]])
        let spans = events.filter { $0["ph"] as? String == "X" }
        // 2 runs × 2 ranks, each named.
        let processes = events.filter { $0["name"] as? String == "process_name" }.compactMap { ($0["args"] as? [String: Any])?["name"] as? String }
        XCTAssertEqual(processes.count, 4, "\(processes)")
        XCTAssertTrue(processes.contains { $0.hasPrefix("\(rows) tokens overlap (cuts ") && $0.hasSuffix("· rank 1") }, "\(processes)")
        let layers = 4, hidden = 256   // the tiny model
        for pid in 0..<4 {
            let mine = spans.filter { $0["pid"] as? Int == pid }
            let names = mine.map { $0["name"] as! String }
            let overlap = pid >= 2
            let attention = names.filter { $0.hasPrefix("attention") }.count
            XCTAssertEqual(attention, overlap ? 3 * layers : layers, "pid \(pid): \(names)")
            XCTAssertEqual(names.filter { $0.hasPrefix("mlp") }.count, attention)
            // One reduction per chunk for the embedding and after each attention and MLP.
            let reductions = (overlap ? 3 : 1) * (2 * layers + 1)
            XCTAssertEqual(names.filter { $0.hasPrefix("reduce-scatter") }.count, reductions, "pid \(pid)")
            XCTAssertEqual(names.filter { $0.hasPrefix("all-gather") }.count, reductions)
            // bf16 rows of 256: per reduction of r rows rank 0 sends its peer's r - ⌈r/2⌉
            // rows, then its own ⌈r/2⌉ (`rows` in all); rank 1 sends ⌈r/2⌉ twice (at least `rows`).
            let bytes = mine.compactMap { ($0["args"] as? [String: Any])?["bytes"] as? Int }.reduce(0, +)
            let exact = (2 * layers + 1) * rows * hidden * 2
            if pid % 2 == 0 { XCTAssertEqual(bytes, exact, "pid \(pid)") } else { XCTAssertGreaterThanOrEqual(bytes, exact, "pid \(pid)") }
            for span in mine {
                XCTAssertGreaterThanOrEqual(span["dur"] as! Double, 0)
                XCTAssertTrue([1, 2, 3].contains(span["tid"] as! Int))
            }
        }
    }

    /// A mixture-of-experts model (tiny-mixtral: 8 experts, top 2, both
    /// layers sparse): `bench e2e` and `bench prefill` report routed tokens
    /// per expert and per rank and their imbalance, and the counts add up
    /// to tokens × k × sparse layers × timed runs.
    func testMixtureOfExpertsLoad() throws {
        let model = MPIRun.fixture.deletingLastPathComponent().appendingPathComponent("tiny-mixtral").path
        let config = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: model + "/config.json"))) as! [String: Any]
        let k = config["num_experts_per_tok"] as! Int, layers = config["num_hidden_layers"] as! Int
        let experts = config["num_local_experts"] as! Int
        XCTAssertEqual([k, layers, experts], [2, 2, 8])
        for placement in ["tp", "ep"] {
            let out = try json(MPIRun.run(ranks: 2, ["bench", "e2e", "--model", model, "--threads", "1", "-p", "16", "-n", "4", "-r", "2",
                                                     "-o", "json", "--moe-placement", placement])) as! [String: Any]
            let results = out["results"] as! [[String: Any]]
            XCTAssertEqual(results.map { $0["test"] as! String }, ["pp16", "tg4"])
            for (index, row) in results.enumerated() {
                let tokens = [16 * 2, 4 * 2][index], steps = [2, 4 * 2][index]
                let test = row["test"] as! String
                let moe = try XCTUnwrap(row["moe"] as? [String: Any], "\(row)")
                XCTAssertEqual(moe["placement"] as? String, placement)
                XCTAssertEqual(moe["steps"] as? Int, steps)
                let perExpert = moe["routed_tokens_per_expert"] as! [Int], perRank = moe["routed_tokens_per_rank"] as! [Int]
                let routed = tokens * k * layers
                XCTAssertEqual(perExpert.count, experts)
                XCTAssertEqual(perExpert.reduce(0, +), routed, "\(placement) \(test)")
                let imbalance = moe["load_imbalance"] as! Double
                if placement == "ep" {
                    // Rank 0 holds experts 0-3, rank 1 experts 4-7.
                    XCTAssertEqual(perRank, [perExpert[0..<4].reduce(0, +), perExpert[4..<8].reduce(0, +)])
                    // Per pass the busiest rank, summed: at least the busiest rank's
                    // total (a sum of maxima bounds the maximum of sums), at most
                    // every pass on one rank.
                    let mean = Double(routed) / 2
                    XCTAssertGreaterThanOrEqual(imbalance, Double(perRank.max()!) / mean - 1e-12, "\(test)")
                    XCTAssertLessThanOrEqual(imbalance, 2, "\(test)")
                } else {
                    XCTAssertEqual(perRank, [routed, routed], "every rank computes a slice of every routed token")
                    XCTAssertEqual(imbalance, 1)
                }
                let stepMean = moe["step_load_imbalance_mean"] as! Double
                XCTAssertTrue((1...2).contains(stepMean), "\(stepMean)")
            }
            XCTAssertLessThan(results[0]["active_params"] as! Int, results[0]["params"] as! Int, "6 of 8 experts idle per token")
        }
        // The table's form names the placement and every test's imbalance.
        let table = try MPIRun.run(ranks: 2, ["bench", "e2e", "--model", model, "--threads", "1", "-p", "8", "-n", "2", "-r", "1",
                                              "--moe-placement", "ep"])
        XCTAssertTrue(table.stdout.contains("Experts, placement ep over 2 ranks"), table.stdout)
        XCTAssertEqual(table.stdout.split(separator: "\n").filter { $0.hasPrefix("| pp8 | ") || $0.hasPrefix("| tg2 | ") }.count, 2, table.stdout)
        // A dense model has none of it.
        let dense = try json(MPIRun.run(ranks: 0, ["bench", "e2e", "--model", MPIRun.fixture.path, "-p", "8", "-n", "2", "-r", "1", "-o", "json"])) as! [String: Any]
        XCTAssertTrue((dense["results"] as! [[String: Any]]).allSatisfy { $0["moe"] == nil && $0["active_params"] as? Int == $0["params"] as? Int })

        // Prefill: every mode that reduces reports the load of its timed runs.
        let rows = try json(MPIRun.run(ranks: 2, ["bench", "prefill", "--model", model, "--threads", "1", "--tokens", "8,20",
                                                  "--modes", "baseline,overlap,nocomm", "-r", "2", "--warmups", "1", "--json",
                                                  "--moe-placement", "ep"])) as! [[String: Any]]
        XCTAssertEqual(rows.count, 6)
        for row in rows {
            let tokens = row["tokens"] as! Int
            guard row["mode"] as! String != "nocomm" else {
                XCTAssertNil(row["moe"], "without reductions the ranks route different partial sums")
                continue
            }
            let moe = try XCTUnwrap(row["moe"] as? [String: Any])
            let perExpert = moe["routed_tokens_per_expert"] as! [Int], perRank = moe["routed_tokens_per_rank"] as! [Int]
            XCTAssertEqual(perExpert.reduce(0, +), 2 * tokens * k * layers, "\(row)")
            XCTAssertEqual(perRank, [perExpert[0..<4].reduce(0, +), perExpert[4..<8].reduce(0, +)])
            XCTAssertGreaterThanOrEqual(moe["load_imbalance"] as! Double, 1)
        }
    }

    func testCollectiveSizes() throws {
        let rows = try json(MPIRun.run(ranks: 2, ["bench", "collective", "--sizes", "16K..256K", "--hidden", "256",
                                                  "--repetitions", "2", "--threads", "1", "--json"])) as! [[String: Any]]
        // 16K, 64K, 256K × (allreduce, shm, mpi, memcpy).
        XCTAssertEqual(rows.count, 12)
        XCTAssertEqual(Set(rows.map { $0["bytes"] as! Int }), [16384, 65536, 262144])
    }

    func testSplitReport() throws {
        let rows = try json(MPIRun.run(ranks: 2, ["bench", "split", "--model", MPIRun.fixture.path, "--threads", "1",
                                                  "--tokens", "12,30", "-r", "1", "--json"])) as! [[String: Any]]
        XCTAssertEqual(rows.map { $0["tokens"] as! Int }, [12, 30])
        for row in rows {
            let split = row["split"] as! Int
            XCTAssertTrue(split > 0 && split < row["tokens"] as! Int)
            XCTAssertNotNil(row["measured_a_ms"] as? Double)
        }
    }

    func testBadBenchInputIsRefused() throws {
        let unknown = try MPIRun.run(ranks: 0, ["bench", "prefill", "--model", MPIRun.fixture.path, "--modes", "fast"])
        XCTAssertTrue(unknown.stderr.contains("unknown mode \"fast\""), unknown.stderr)
        let tooFew = try MPIRun.run(ranks: 2, ["bench", "prefill", "--model", MPIRun.fixture.path, "--tokens", "1", "--threads", "1"])
        XCTAssertTrue(tooFew.stderr.contains("at least the number of ranks"), tooFew.stderr)
        for (rank, code) in tooFew.rankExits { XCTAssertNotEqual(code, 0, "rank \(rank)") }
        let shape = try MPIRun.run(ranks: 0, ["bench", "e2e", "--random-weights", "/nonexistent.json", "-p", "4", "-n", "1"])
        XCTAssertTrue(shape.stderr.contains("/nonexistent.json"), shape.stderr)
    }
}
