import Foundation
import XCTest

/// Faults injected into running jobs: a rank stopped (SIGSTOP: alive to the
/// operating system, silent to its peers), a rank killed, and a clean stop
/// from a terminal through `weft launch`. Every surviving rank must name the
/// failed rank (within the peer timeout plus the monitor's grace), clients get
/// an error event or a closed connection, never silence, and nothing is left
/// running. (A link taken down on the simulated cluster: SimulatedClusterTests.)
final class FaultInjectionTests: XCTestCase {
    /// --comm-timeout of these jobs, seconds.
    static let timeout = "3"
    /// How long a test waits for something that should take the timeout plus a
    /// few seconds, before calling it a hang (not a timing assertion: a bound).
    static let hang: TimeInterval = 120

    /// A `weft generate` job under mpirun in the background, each rank in the
    /// wrapper that reports its exit code; output readable while it runs.
    final class Job {
        let process = Process()
        /// A --seed value that tells this job's processes from others.
        let marker = String(UInt32.random(in: 1_000_000...UInt32.max))
        let out = LiveOutput(), err = LiveOutput()

        init(ranks: Int, _ arguments: [String], letAllRanksFinish: Bool) throws {
            process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
            process.arguments = ["mpirun", "--allow-run-as-root", "--oversubscribe", "-q", "--mca", "btl", "self,vader",
                                 "--mca", "orte_abort_on_non_zero_status", letAllRanksFinish ? "0" : "1",
                                 "-np", String(ranks), "/bin/sh", "-c", MPIRun.rankWrapper, MPIRun.weft.path,
                                 "generate", "--model", MPIRun.fixture.path, "--threads", "1", "--tokens", "1,2,3",
                                 "--max-tokens", "2000", "--comm-timeout", FaultInjectionTests.timeout, "--seed", marker] + arguments
            process.environment = MPIRun.launcherEnvironment()
            process.standardOutput = out.pipe
            process.standardError = err.pipe
            try process.run()
        }

        func rankPIDs() -> [Int: Int32] { ServerProcess.rankPIDs(executable: MPIRun.weft, marker: marker) }

        /// Waits until rank 0 has printed some tokens (the job is mid-generation).
        func waitUntilGenerating() -> Bool {
            wait { self.out.text.count > 8 }
        }

        func wait(_ condition: () -> Bool) -> Bool {
            let deadline = Date().addingTimeInterval(FaultInjectionTests.hang)
            while Date() < deadline {
                if condition() { return true }
                if !process.isRunning { return condition() }
                usleep(50_000)
            }
            return false
        }

        /// Waits for mpirun (killing every rank after the hang bound).
        func finish() -> (status: Int32, exits: [Int: Int32], hung: Bool) {
            let ended = wait { !process.isRunning }
            if !ended {
                for pid in rankPIDs().values { kill(pid, SIGKILL) }
                process.terminate()
            }
            process.waitUntilExit()
            return (process.terminationStatus, MPIRun.rankExits(err.finish()), !ended)
        }

        deinit {
            for pid in rankPIDs().values { kill(pid, SIGKILL) }
            if process.isRunning { process.terminate() }
        }
    }

    /// A pipe whose output so far can be read while the process runs.
    final class LiveOutput: @unchecked Sendable {
        let pipe = Pipe()
        private let lock = NSLock()
        private var data = Data()
        private let done = DispatchSemaphore(value: 0)

        init() {
            let handle = pipe.fileHandleForReading
            Thread.detachNewThread { [self] in
                while true {
                    let chunk = handle.availableData
                    if chunk.isEmpty { break }
                    lock.lock()
                    data.append(chunk)
                    lock.unlock()
                }
                done.signal()
            }
        }

        var text: String {
            lock.lock()
            defer { lock.unlock() }
            return String(decoding: data, as: UTF8.self)
        }

        func finish() -> String {
            done.wait()
            return text
        }
    }

    /// Four ranks over MPI (the inter-node transport), rank 2 stopped: ranks
    /// 0, 1 and 3 each print one error line naming rank 2 and exit 1.
    func testAStoppedRankIsNamedByEverySurvivingRank() throws {
        let job = try Job(ranks: 4, ["--comm-transport", "mpi"], letAllRanksFinish: true)
        XCTAssertTrue(job.waitUntilGenerating(), "generation did not start: \(job.err.text)")
        let stopped = try XCTUnwrap(job.rankPIDs()[2])
        kill(stopped, SIGSTOP)
        let reported = job.wait { [0, 1, 3].allSatisfy { job.err.text.contains("weft-rank-exit \($0) ") } }
        kill(stopped, SIGKILL)   // it cannot end by itself; mpirun waits for it
        let (_, exits, hung) = job.finish()
        XCTAssertTrue(reported, "the surviving ranks did not all give up: \(job.err.text)")
        XCTAssertFalse(hung)
        let stderr = job.err.text
        for rank in [0, 1, 3] {
            XCTAssertEqual(exits[rank], 1, stderr)
            XCTAssertTrue(stderr.contains("error: rank \(rank): rank 2 stopped responding"), "rank \(rank) did not name rank 2: \(stderr)")
        }
        XCTAssertEqual(job.rankPIDs(), [:], "a rank outlived the job")
    }

    /// Two ranks on shared memory, as users run mpirun (a failing rank ends
    /// the job): rank 0 names rank 1, mpirun ends the stopped rank and exits
    /// non-zero by itself.
    func testAStoppedRankEndsTheJobOnSharedMemory() throws {
        let job = try Job(ranks: 2, [], letAllRanksFinish: false)
        XCTAssertTrue(job.waitUntilGenerating(), "generation did not start: \(job.err.text)")
        kill(try XCTUnwrap(job.rankPIDs()[1]), SIGSTOP)
        let (status, _, hung) = job.finish()
        XCTAssertFalse(hung, "the job hung with a stopped rank: \(job.err.text)")
        XCTAssertNotEqual(status, 0)
        // Named by the shared-memory flag it did not raise, or by the monitor if
        // rank 0 was waiting in an MPI collective (the logits' gather) instead.
        let stderr = job.err.text
        XCTAssertTrue(stderr.contains("error: rank 0: rank 1 did not reach") || stderr.contains("error: rank 0: rank 1 stopped responding"),
                      stderr)
        XCTAssertEqual(job.rankPIDs(), [:], "a rank outlived the job")
    }

    func testAKilledRankEndsTheJob() throws {
        let job = try Job(ranks: 2, [], letAllRanksFinish: false)
        XCTAssertTrue(job.waitUntilGenerating(), "generation did not start: \(job.err.text)")
        kill(try XCTUnwrap(job.rankPIDs()[1]), SIGKILL)
        let (status, _, hung) = job.finish()
        XCTAssertFalse(hung, "the job hung after a rank died: \(job.err.text)")
        XCTAssertNotEqual(status, 0)
        XCTAssertEqual(job.rankPIDs(), [:], "a rank outlived the job")
    }

    /// `weft serve` with a stopped rank: /health turns 503 ("stalled") while
    /// the step waits, the open stream ends with an error event naming the
    /// rank, and the job ends non-zero with nothing left.
    func testAStoppedRankFailsServeWithAnErrorEventAndAnUnhealthyHealth() throws {
        // The MPI transport: past the timeout the monitor waits up to its grace
        // for the silent rank, the window in which the step is visibly stalled.
        let server = try ServerProcess(["--comm-timeout", Self.timeout, "--comm-transport", "mpi"])
        let stream = try server.client.openStream("/v1/completions", ["prompt": [1, 2, 3], "max_tokens": 1500, "temperature": 0,
                                                                     "stream": true, "ignore_eos": true])
        XCTAssertNotNil(try stream.nextEvent())
        let stopped = try XCTUnwrap(server.rankPIDs()[1])
        kill(stopped, SIGSTOP)
        defer { kill(stopped, SIGKILL) }
        // /health, polled until the server goes away: at some point 503 "stalled".
        final class Seen: @unchecked Sendable { var statuses: [Int: String] = [:] }
        let seen = Seen()
        let poller = Thread { [port = server.port] in
            let deadline = Date().addingTimeInterval(FaultInjectionTests.hang)
            while Date() < deadline {
                guard let response = try? HTTPClient(port: port, timeout: 5).send("GET", "/health") else { break }
                seen.statuses[response.status] = response.text
                usleep(100_000)
            }
        }
        poller.start()
        var events: [String] = []
        do {
            while let event = try stream.nextEvent() { events.append(event); if event == "[DONE]" { break } }
        } catch {
            XCTFail("the stream did not end with an error event: \(error) after \(events.suffix(2))")
        }
        let error = events.first { $0.contains(#""error""#) }
        XCTAssertNotNil(error, "no error event: \(events.suffix(3))")
        XCTAssertTrue(error?.contains("rank 1") == true, error ?? "")
        let exit = server.waitForExit(timeout: Self.hang)
        while poller.isExecuting { usleep(50_000) }
        XCTAssertFalse(exit.timedOut)
        XCTAssertNotEqual(exit.status, 0)
        XCTAssertTrue(server.stderr.contains("error: rank 0: rank 1 stopped responding"), server.stderr)
        XCTAssertTrue(seen.statuses[503]?.contains("stalled") == true || seen.statuses[503]?.contains("failed") == true,
                      "health never reported the stall: \(seen.statuses)")
        kill(stopped, SIGKILL)
        usleep(500_000)
        XCTAssertEqual(server.rankPIDs(), [:], "a rank outlived the job")
    }

    /// `weft launch` stands between a terminal (or a service manager) and
    /// mpirun: SIGINT to it drains and every rank and mpirun exit 0.
    func testLaunchTurnsSIGINTIntoACleanStop() throws {
        // No exit-code wrapper: mpirun forwards SIGUSR1 to its direct children.
        // mpirun's own exit status 0 says every rank exited 0.
        let server = try ServerProcess(launcher: [MPIRun.weft.path, "launch"], wrapRanks: false)
        let stream = try server.client.openStream("/v1/completions", ["prompt": [1, 2, 3], "max_tokens": 8, "temperature": 0,
                                                                     "stream": true])
        kill(server.process.processIdentifier, SIGINT)
        var last: String?
        while let event = try stream.nextEvent() { last = event; if event == "[DONE]" { break } }
        XCTAssertEqual(last, "[DONE]", "the in-flight request was not drained")
        let exit = server.waitForExit(timeout: Self.hang)
        XCTAssertFalse(exit.timedOut)
        XCTAssertEqual(exit.status, 0, server.stderr)
        XCTAssertTrue(server.stdout.contains("weft: stopped"), server.stdout)
        XCTAssertEqual(server.rankPIDs(), [:])
    }
}
