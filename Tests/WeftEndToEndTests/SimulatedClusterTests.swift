import Foundation
import XCTest

/// Two hosts as network namespaces on this machine (Scripts/simcluster): ranks
/// on different hosts are different nodes to Open MPI and talk over TCP, so
/// `weft logits` runs the real inter-node path; afterwards nothing is left.
final class SimulatedClusterTests: XCTestCase {
    static let script = MPIRun.fixture.deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("Scripts/simcluster").path

    override func setUpWithError() throws {
        guard getuid() == 0 else { throw XCTSkip("network namespaces need root") }
        let probe = try shell(["ip", "netns", "list"])
        guard probe.status == 0 else { throw XCTSkip("ip netns is not available: \(probe.output)") }
        guard try shell(["tc", "-V"]).status == 0 else { throw XCTSkip("tc (iproute2) is not available") }
    }

    /// Ours without the test process's own MPI singleton variables, as root may run mpirun.
    static let environment = ProcessInfo.processInfo.environment.filter { key, _ in
        !["OMPI_", "PMIX_", "ORTE_", "OPAL_"].contains { key.hasPrefix($0) }
    }.merging(["OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"]) { $1 }

    func shell(_ arguments: [String], timeout: TimeInterval = 240) throws -> (status: Int32, output: String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = arguments
        process.environment = Self.environment
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        let collector = MPIRun.DataCollector(pipe.fileHandleForReading)
        try process.run()
        let deadline = Date().addingTimeInterval(timeout)
        while process.isRunning && Date() < deadline { usleep(20_000) }
        if process.isRunning { process.terminate() }
        process.waitUntilExit()
        return (process.terminationStatus, collector.finish())
    }

    func assertNothingLeft(_ name: String, file: StaticString = #filePath, line: UInt = #line) throws {
        let namespaces = try shell(["ip", "netns", "list"]).output
        XCTAssertFalse(namespaces.contains("\(name)h"), "namespaces left: \(namespaces)", file: file, line: line)
        let links = try shell(["ip", "-o", "link", "show"]).output
        XCTAssertFalse(links.contains("\(name)br") || links.contains("\(name)v0"), "links left: \(links)", file: file, line: line)
        // Killed daemons are reaped asynchronously (by mpirun, then init): give them a few seconds.
        var running = ""
        for _ in 0..<50 {
            // The test process's own MPI singleton daemon (--singleton-died-pipe) is not the cluster's.
            running = try shell(["sh", "-c", "pgrep -a -x orted | grep -v -- --singleton-died-pipe || true"]).output
                .trimmingCharacters(in: .whitespacesAndNewlines)
            if running.isEmpty { break }
            usleep(100_000)
        }
        XCTAssertEqual(running, "", "orted left running", file: file, line: line)
    }

    func testLogitsAcrossTwoHostsMatchReference() throws {
        let reference = TensorParallelTests.reference.logits_cases[2]
        let scale = reference.logits.flatMap { $0 }.map(abs).max()!
        func logits(_ extra: [String]) throws -> [Float] {
            let outcome = try shell([Self.script, "run", "--hosts", "2", "--rate", "1gbit", "--name", "wtest", "--",
                                     MPIRun.weft.path, "logits", "--model", MPIRun.fixture.path, "--threads", "1", "--kv-dtype", "f32", "--json",
                                     "--tokens", reference.tokens.map(String.init).joined(separator: ",")] + extra)
            XCTAssertEqual(outcome.status, 0, "\(extra): \(outcome.output)")
            let json = outcome.output.split(separator: "\n").first { $0.hasPrefix("{") }.map(String.init) ?? ""
            let output = try JSONDecoder().decode(TensorParallelTests.LogitsOutput.self, from: Data(json.utf8))
            try assertNothingLeft("wtest")
            return output.logits.flatMap { $0 }
        }
        func worst(_ a: [Float], _ b: [Float]) -> Float { zip(a, b).map { abs($0 - $1) }.max()! }
        let expected = reference.logits.flatMap { $0 }
        for mode in [["--comm-mode", "fused"], ["--comm-mode", "overlap", "--split", "20"], ["--comm-mode", "baseline"]] {
            let exact = try logits(mode + ["--comm-transport", "mpi", "--comm-dtype", "f32"])
            XCTAssertLessThanOrEqual(worst(exact, expected), 1e-4 * scale, "\(mode)")
        }
        // Between real (simulated) hosts the default wire format is bf16: close, not exact.
        let exact = try logits(["--comm-mode", "overlap", "--split", "20", "--comm-dtype", "f32"])
        let narrow = try logits(["--comm-mode", "overlap", "--split", "20"])
        XCTAssertGreaterThan(worst(narrow, exact), 0, "the default between hosts should be bf16")
        XCTAssertLessThanOrEqual(worst(narrow, expected), 1e-2 * scale)
    }

    /// Every narrow wire format (bf16, fp16, q8_0) across simulated hosts
    /// against float32 on the wire: TP 2 (two hosts) and TP 3 (three hosts; they share this machine's cores,
    /// which changes timings, not results), fused and overlapped.
    func testWireFormatsAcrossHosts() throws {
        let reference = TensorParallelTests.reference.logits_cases[2]
        // Measured on this fixture at TP 2-4 (CommModeTests): bf16 4.2e-3, fp16 5.3e-4, q8_0 1.7e-2 of the largest logit.
        let bound: [String: Float] = ["bf16": 1e-2, "fp16": 2e-3, "q8_0": 3e-2]
        for hosts in [2, 3] {
            func logits(_ extra: [String]) throws -> [Float] {
                let outcome = try shell([Self.script, "run", "--hosts", String(hosts), "--share-cores", "--rate", "1gbit", "--name", "wtest", "--",
                                         MPIRun.weft.path, "logits", "--model", MPIRun.fixture.path, "--threads", "1", "--kv-dtype", "f32", "--json",
                                         "--tokens", reference.tokens.map(String.init).joined(separator: ",")] + extra)
                XCTAssertEqual(outcome.status, 0, "\(hosts) hosts \(extra): \(outcome.output)")
                let json = outcome.output.split(separator: "\n").first { $0.hasPrefix("{") }.map(String.init) ?? ""
                return try JSONDecoder().decode(TensorParallelTests.LogitsOutput.self, from: Data(json.utf8)).logits.flatMap { $0 }
            }
            for mode in [["--comm-mode", "fused"], ["--comm-mode", "overlap", "--split", "6,13"]] {
                let exact = try logits(mode + ["--comm-dtype", "f32"])
                let scale = exact.map(abs).max()!
                for wire in ["bf16", "fp16", "q8_0"] {
                    let narrow = try logits(mode + ["--comm-dtype", wire])
                    XCTAssertEqual(narrow.count, exact.count)
                    let worst = zip(narrow, exact).map { abs($0 - $1) }.max() ?? .infinity
                    XCTAssertGreaterThan(worst, 0, "\(hosts) hosts \(mode) \(wire): the wire format was not applied")
                    XCTAssertLessThanOrEqual(worst, bound[wire]! * scale, "\(hosts) hosts \(mode) \(wire)")
                }
            }
        }
        try assertNothingLeft("wtest")
    }

    /// Two simulated hosts with two ranks each: the hierarchical path for real.
    func testHierarchicalAcrossTwoHostsOfTwoRanks() throws {
        let reference = TensorParallelTests.reference.logits_cases[2]
        let outcome = try shell([Self.script, "run", "--hosts", "2", "--slots", "2", "--name", "wtest", "--mca", "rmaps_base_oversubscribe", "1", "--",
                                 MPIRun.weft.path, "logits", "--model", MPIRun.fixture.path, "--threads", "1", "--kv-dtype", "f32", "--json",
                                 "--comm-mode", "overlap", "--split", "14", "--comm-dtype", "f32",
                                 "--tokens", reference.tokens.map(String.init).joined(separator: ",")])
        XCTAssertEqual(outcome.status, 0, outcome.output)
        let json = outcome.output.split(separator: "\n").first { $0.hasPrefix("{") }.map(String.init) ?? ""
        let output = try JSONDecoder().decode(TensorParallelTests.LogitsOutput.self, from: Data(json.utf8))
        let scale = reference.logits.flatMap { $0 }.map(abs).max()!
        let worst = zip(output.logits.flatMap { $0 }, reference.logits.flatMap { $0 }).map { abs($0 - $1) }.max()!
        XCTAssertLessThanOrEqual(worst, 1e-4 * scale)
        try assertNothingLeft("wtest")
    }

    /// `weft COMMAND…` on the fixture across two simulated hosts over MPI with a
    /// 3 s peer timeout, in the background, its output readable as it comes.
    func startTwoHosts(_ command: [String]) throws -> (Process, FaultInjectionTests.LiveOutput) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = [Self.script, "run", "--hosts", "2", "--rate", "1gbit", "--name", "wtest", "--", MPIRun.weft.path]
            + command + ["--model", MPIRun.fixture.path, "--threads", "1", "--comm-timeout", "3", "--comm-transport", "mpi"]
        process.environment = Self.environment
        let output = FaultInjectionTests.LiveOutput()
        process.standardOutput = output.pipe
        process.standardError = output.pipe
        try process.run()
        return (process, output)
    }

    /// Polls `condition` until it holds or the hang bound passes.
    func wait(_ condition: () -> Bool) -> Bool {
        let deadline = Date().addingTimeInterval(FaultInjectionTests.hang)
        while Date() < deadline { if condition() { return true }; usleep(100_000) }
        return false
    }

    /// Host 1's link goes down mid-generation: each rank, past the peer
    /// timeout, finds the other silent and says so (rank 1's line reaches
    /// mpirun once the link is back), both ranks exit, and once Open MPI's
    /// daemons can talk again the job ends and nothing is left.
    func testALinkTakenDownMidStepIsNamedByBothRanks() throws {
        let (process, output) = try startTwoHosts(["generate", "--tokens", "1,2,3", "--max-tokens", "2000", "--seed", "20261130"])
        defer { _ = try? shell(["ip", "link", "set", "wtestv1", "up"]); if process.isRunning { process.terminate() } }
        XCTAssertTrue(wait { output.text.count > 16 }, "generation did not start: \(output.text)")
        XCTAssertEqual(try shell(["ip", "link", "set", "wtestv1", "down"]).status, 0)
        XCTAssertTrue(wait { output.text.contains("error: rank 0: rank 1 stopped responding") }, output.text)
        // Rank 1 is cut off too: it gives up and exits on its own.
        let rankOneGone = wait {
            let ranks = (try? shell(["sh", "-c", "pgrep -f 'seed 20261130' -a | grep -cE '^[0-9]+ [^ ]*/weft generate' || true"]).output) ?? ""
            return ranks.trimmingCharacters(in: .whitespacesAndNewlines) == "0"
        }
        XCTAssertTrue(rankOneGone, "a rank outlived the lost link")
        XCTAssertEqual(try shell(["ip", "link", "set", "wtestv1", "up"]).status, 0)
        XCTAssertTrue(wait { !process.isRunning }, "the job did not end once the link was back")
        XCTAssertNotEqual(process.terminationStatus, 0)
        XCTAssertTrue(output.finish().contains("error: rank 1: rank 0 stopped responding"), output.text)
        try assertNothingLeft("wtest")
    }

    /// The same under `weft serve`: rank 0 (host 0) names rank 1 once host 1's
    /// link is down, and the client's open stream ends with an error event
    /// naming it instead of hanging.
    func testALinkTakenDownUnderServeEndsTheStreamWithAnError() throws {
        let address = "10.231.119.1"   // simcluster's host 0 for --name wtest
        let (process, output) = try startTwoHosts(["serve", "--host", address, "--port", "0"])
        defer { _ = try? shell(["ip", "link", "set", "wtestv1", "up"]); if process.isRunning { process.terminate() } }
        XCTAssertTrue(wait { output.text.contains("weft: ready") }, "the server did not start: \(output.text)")
        let line = output.text.split(separator: "\n").first { $0.contains("weft: ready") }.map(String.init) ?? ""
        let port = try XCTUnwrap(line.range(of: #":(\d+) \("#, options: .regularExpression)
            .flatMap { Int(line[$0].dropFirst().prefix { $0.isNumber }) }, line)
        let stream = try HTTPClient(port: port, timeout: 60, host: address)
            .openStream("/v1/completions", ["prompt": [1, 2, 3], "max_tokens": 1500, "temperature": 0, "stream": true, "ignore_eos": true])
        XCTAssertNotNil(try stream.nextEvent())
        XCTAssertEqual(try shell(["ip", "link", "set", "wtestv1", "down"]).status, 0)
        var events: [String] = []
        do {
            while let event = try stream.nextEvent() { events.append(event); if event == "[DONE]" { break } }
        } catch {
            XCTFail("the stream did not end with an error event: \(error)")
        }
        let error = events.first { $0.contains(#""error""#) }
        XCTAssertTrue(error?.contains("rank 1 stopped responding") == true, "\(events.suffix(2))")
        XCTAssertEqual(try shell(["ip", "link", "set", "wtestv1", "up"]).status, 0)
        XCTAssertTrue(wait { !process.isRunning }, "the job did not end once the link was back")
        XCTAssertNotEqual(process.terminationStatus, 0)
        XCTAssertTrue(output.finish().contains("error: rank 0: rank 1 stopped responding"), output.text)
        try assertNothingLeft("wtest")
    }

    func testFailingRunLeavesNothingBehind() throws {
        let outcome = try shell([Self.script, "run", "--hosts", "2", "--name", "wtest", "--",
                                 MPIRun.weft.path, "logits", "--model", "/nonexistent", "--tokens", "1,2"])
        XCTAssertNotEqual(outcome.status, 0)
        XCTAssertTrue(outcome.output.contains("no such model folder"), outcome.output)
        try assertNothingLeft("wtest")
    }

    func testNameInUseIsRefused() throws {
        XCTAssertEqual(try shell(["ip", "netns", "add", "wtesth0"]).status, 0)
        defer { _ = try? shell(["ip", "netns", "del", "wtesth0"]) }
        let outcome = try shell([Self.script, "run", "--hosts", "2", "--name", "wtest", "--", "true"])
        XCTAssertNotEqual(outcome.status, 0)
        XCTAssertTrue(outcome.output.contains("wtesth0 already exists"), outcome.output)
        // Only the pre-existing namespace remains; nothing of the refused cluster.
        let links = try shell(["ip", "-o", "link", "show"]).output
        XCTAssertFalse(links.contains("wtestbr"), links)
    }

    /// Each simulated host owns its own cores: no rank of one host may run on
    /// a core of another (Open MPI alone binds every host's first rank to
    /// core 0, which made two "machines" share one core).
    func testHostsGetDisjointCores() throws {
        let cpus = allowedCPUCount()
        guard cpus >= 2 else { throw XCTSkip("needs 2 CPUs for 2 hosts with a core each, this process has \(cpus)") }
        let probe = #"echo "rank=$OMPI_COMM_WORLD_RANK host=$(ip netns identify $$) cores=$(grep Cpus_allowed_list /proc/self/status | cut -f2)""#
        let outcome = try shell([Self.script, "run", "--hosts", "2", "--slots", "2", "--name", "wtest", "--mca", "rmaps_base_oversubscribe", "1",
                                 "--", "sh", "-c", probe])
        XCTAssertEqual(outcome.status, 0, outcome.output)
        var coresOfHost: [String: Set<Int>] = [:]
        var ranks = Set<String>()
        for line in outcome.output.split(separator: "\n") where line.hasPrefix("rank=") {
            let fields = Dictionary(uniqueKeysWithValues: line.split(separator: " ").map { field -> (String, String) in
                let parts = field.split(separator: "=", maxSplits: 1)
                return (String(parts[0]), parts.count > 1 ? String(parts[1]) : "")
            })
            ranks.insert(fields["rank"] ?? "")
            let host = try XCTUnwrap(fields["host"])
            XCTAssertTrue(host.hasPrefix("wtesth"), "rank not inside a simulated host: \(line)")
            coresOfHost[host, default: []].formUnion(Self.parseCPUList(fields["cores"] ?? ""))
        }
        XCTAssertEqual(ranks, ["0", "1", "2", "3"], outcome.output)
        XCTAssertEqual(coresOfHost.count, 2, outcome.output)
        let sets = Array(coresOfHost.values)
        XCTAssertFalse(sets.contains { $0.isEmpty }, outcome.output)
        XCTAssertTrue(sets[0].isDisjoint(with: sets[1]), "hosts share cores: \(coresOfHost)")
        try assertNothingLeft("wtest")
    }

    /// A layout needing more cores than this process may use is refused in one
    /// line; --share-cores runs it anyway.
    func testLayoutBeyondTheCoresIsRefused() throws {
        let hosts = allowedCPUCount() + 1
        guard hosts <= 200 else { throw XCTSkip("more than 199 CPUs") }
        let outcome = try shell([Self.script, "run", "--hosts", String(hosts), "--name", "wtest", "--", "true"])
        XCTAssertEqual(outcome.status, 2, outcome.output)
        XCTAssertTrue(outcome.output.contains("need \(hosts) cores, but only \(hosts - 1) are available"), outcome.output)
        let shared = try shell([Self.script, "run", "--hosts", "2", "--share-cores", "--name", "wtest", "--", "true"])
        XCTAssertEqual(shared.status, 0, shared.output)
        try assertNothingLeft("wtest")
    }

    /// "0-2,5" → [0, 1, 2, 5].
    static func parseCPUList(_ list: String) -> Set<Int> {
        var result = Set<Int>()
        for piece in list.split(separator: ",") {
            let ends = piece.split(separator: "-").compactMap { Int($0.trimmingCharacters(in: .whitespaces)) }
            if ends.count == 2, ends[0] <= ends[1] { result.formUnion(ends[0]...ends[1]) } else if ends.count == 1 { result.insert(ends[0]) }
        }
        return result
    }

    func testBadArgumentsAreRefused() throws {
        let outcome = try shell([Self.script, "run", "--hosts", "0", "--", "true"])
        XCTAssertEqual(outcome.status, 2)
        XCTAssertTrue(outcome.output.contains("--hosts must be 1..200"), outcome.output)
        let cores = try shell([Self.script, "run", "--cores-per-host", "0", "--", "true"])
        XCTAssertEqual(cores.status, 2)
        XCTAssertTrue(cores.output.contains("--cores-per-host must be 1..4096"), cores.output)
    }
}

/// CPUs in this process's affinity mask (from /proc/self/status).
func allowedCPUCount() -> Int {
    let status = (try? String(contentsOfFile: "/proc/self/status", encoding: .utf8)) ?? ""
    guard let line = status.split(separator: "\n").first(where: { $0.hasPrefix("Cpus_allowed_list:") }) else {
        return ProcessInfo.processInfo.activeProcessorCount
    }
    return SimulatedClusterTests.parseCPUList(String(line.dropFirst("Cpus_allowed_list:".count))).count
}
