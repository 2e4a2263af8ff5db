import Foundation
import XCTest

/// Runs the `weft` executable under `mpirun`, as users do, and collects what
/// every rank printed and how every rank exited.
enum MPIRun {
    struct Outcome {
        var status: Int32
        var stdout: String
        var stderr: String
        /// Exit code of each rank, from the wrapper each rank runs in.
        var rankExits: [Int: Int32]
        var timedOut: Bool
    }

    static let fixture = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fixtures/tiny-llama")

    /// The built `weft` executable, beside the test bundle.
    static var weft: URL {
        var directory = Bundle.main.bundleURL
        if directory.pathExtension == "xctest" { directory = directory.deletingLastPathComponent() }
        return directory.appendingPathComponent("weft")
    }

    /// Runs `weft ARGS` on `ranks` ranks (0 = without mpirun). Each rank runs in
    /// a small shell wrapper that reports its exit code on stderr.
    /// With `letAllRanksFinish` (the default) mpirun does not kill the other
    /// ranks when one exits non-zero, so every rank's own exit code is seen (and
    /// mpirun itself then exits 0); without it, mpirun behaves as users see it.
    static func run(ranks: Int, _ arguments: [String], timeout: TimeInterval = 180,
                    letAllRanksFinish: Bool = true) throws -> Outcome {
        let process = Process()
        let wrapper = rankWrapper
        if ranks == 0 {
            process.executableURL = URL(fileURLWithPath: "/bin/sh")
            process.arguments = ["-c", wrapper, weft.path] + arguments
        } else {
            process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
            // orte_abort_on_non_zero_status 0: let every rank finish and report
            // its own exit code instead of mpirun killing the rest at the first failure.
            process.arguments = ["mpirun", "--allow-run-as-root", "--oversubscribe", "-q",
                                 "--mca", "btl", "self,vader",
                                 "--mca", "orte_abort_on_non_zero_status", letAllRanksFinish ? "0" : "1",
                                 "-np", String(ranks),
                                 "/bin/sh", "-c", wrapper, weft.path] + arguments
        }
        process.environment = launcherEnvironment()
        let out = Pipe(), err = Pipe()
        process.standardOutput = out
        process.standardError = err
        let outData = DataCollector(out.fileHandleForReading), errData = DataCollector(err.fileHandleForReading)
        try process.run()
        let deadline = Date().addingTimeInterval(timeout)
        var timedOut = false
        while process.isRunning {
            if Date() > deadline {
                timedOut = true
                kill(-process.processIdentifier, SIGKILL)
                process.terminate()
                break
            }
            usleep(20_000)
        }
        process.waitUntilExit()
        let stderr = errData.finish()
        let exits = rankExits(stderr)
        return Outcome(status: process.terminationStatus, stdout: outData.finish(), stderr: stderr,
                       rankExits: exits, timedOut: timedOut)
    }

    /// The shell wrapper each rank runs in: it reports the rank's exit code on stderr.
    static let rankWrapper = "\"$0\" \"$@\"; code=$?; echo \"weft-rank-exit ${OMPI_COMM_WORLD_RANK:-0} $code\" >&2; exit $code"

    /// Each rank's exit code, from the lines `rankWrapper` printed.
    static func rankExits(_ stderr: String) -> [Int: Int32] {
        var exits: [Int: Int32] = [:]
        for line in stderr.split(separator: "\n") where line.hasPrefix("weft-rank-exit ") {
            let parts = line.split(separator: " ")
            if parts.count == 3, let rank = Int(parts[1]), let code = Int32(parts[2]) { exits[rank] = code }
        }
        return exits
    }

    /// The environment for a child mpirun. The test process may itself be an
    /// MPI singleton (the in-process model tests initialize MPI), which leaves
    /// launcher variables behind; a child mpirun must not inherit them.
    static func launcherEnvironment() -> [String: String] {
        var environment = ProcessInfo.processInfo.environment.filter { key, _ in
            !["OMPI_", "PMIX_", "ORTE_", "OPAL_", "PRTE_"].contains { key.hasPrefix($0) }
        }
        environment["OMPI_MCA_rmaps_base_oversubscribe"] = "1"
        return environment
    }

    /// Reads a pipe on a background thread so a chatty child never blocks.
    final class DataCollector: @unchecked Sendable {
        private var data = Data()
        private let done = DispatchSemaphore(value: 0)
        init(_ handle: FileHandle) {
            Thread.detachNewThread { [self] in
                data = handle.readDataToEndOfFile()
                done.signal()
            }
        }
        func finish() -> String {
            done.wait()
            return String(decoding: data, as: UTF8.self)
        }
    }
}
