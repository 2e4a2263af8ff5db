import Foundation
import XCTest

/// A real `mpirun -np N weft serve` on loopback, as users start it: each
/// rank runs in a wrapper that reports its exit code, the port is chosen by
/// the server (`--port 0`) and read from its first line.
final class ServerProcess {
    let process = Process()
    let port: Int
    let executable: URL
    /// An argument that tells this job's processes from others.
    let marker: String
    private let out: MPIRun.DataCollector
    private let err: MPIRun.DataCollector
    private(set) var stdout = ""
    private(set) var stderr = ""
    var client: HTTPClient { HTTPClient(port: port) }

    /// `model` nil: `extra` names the weights (e.g. --random-weights).
    /// With `waitUntilReady`, returns once /health answers 200 (else as soon as it listens).
    /// `launcher`: what starts mpirun (e.g. `weft launch`); nil runs mpirun itself.
    /// `wrapRanks` false runs the ranks without the exit-code wrapper (a
    /// signal mpirun forwards then reaches weft itself, not the wrapper shell).
    convenience init(ranks: Int = 2, _ extra: [String] = [], model: String? = MPIRun.fixture.path, waitUntilReady: Bool = true,
                     launcher: [String]? = nil, wrapRanks: Bool = true) throws {
        let marker = "weft-test-\(UUID().uuidString.prefix(8))"
        try self.init(executable: MPIRun.weft, ranks: ranks, marker: marker, waitUntilReady: waitUntilReady,
                      arguments: ["serve"] + (model.map { ["--model", $0] } ?? []) + ["--threads", "1", "--port", "0",
                                                                                   "--served-model-name", marker] + extra,
                      launcher: launcher, wrapRanks: wrapRanks)
    }

    /// Any program that prints `http://127.0.0.1:PORT` in its first line.
    init(executable: URL, ranks: Int, marker: String?, waitUntilReady: Bool, arguments: [String], launcher: [String]? = nil,
         wrapRanks: Bool = true) throws {
        self.executable = executable
        self.marker = marker ?? executable.path
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = (launcher ?? ["mpirun"]) + ["--allow-run-as-root", "--oversubscribe", "-q", "--mca", "btl", "self,vader",
                             "-np", String(ranks)] + (wrapRanks ? ["/bin/sh", "-c", MPIRun.rankWrapper] : []) + [executable.path] + arguments
        process.environment = MPIRun.launcherEnvironment()
        let outPipe = Pipe(), errPipe = Pipe()
        process.standardOutput = outPipe
        process.standardError = errPipe
        // The first line names the port; read it before handing the pipe to the collector.
        try process.run()
        let handle = outPipe.fileHandleForReading
        final class LineReader: @unchecked Sendable {
            var line = Data()
            let done = DispatchSemaphore(value: 0)
        }
        let reader = LineReader()
        Thread.detachNewThread {
            while !reader.line.contains(UInt8(ascii: "\n")) {
                let byte = handle.readData(ofLength: 1)
                if byte.isEmpty { break }
                reader.line.append(byte)
            }
            reader.done.signal()
        }
        let arrived = reader.done.wait(timeout: .now() + 120) == .success
        if !arrived {
            ServerProcess.killJob(process, executable: executable, marker: self.marker)   // the reader thread ends when the pipe closes
        }
        out = MPIRun.DataCollector(handle)
        err = MPIRun.DataCollector(errPipe.fileHandleForReading)
        let line = arrived ? String(decoding: reader.line, as: UTF8.self) : ""
        guard let range = line.range(of: #"http://127\.0\.0\.1:(\d+)"#, options: .regularExpression),
              let port = Int(line[range].split(separator: ":").last!) else {
            ServerProcess.killJob(process, executable: executable, marker: self.marker)
            throw HTTPClientError.malformed("the server did not start: \(line) \(err.finish())")
        }
        self.port = port
        guard waitUntilReady else { return }
        for _ in 0..<1200 {
            if (try? HTTPClient(port: port, timeout: 10).send("GET", "/health").status) == 200 { return }
            guard process.isRunning else { break }
            usleep(50_000)
        }
        ServerProcess.killJob(process, executable: executable, marker: self.marker)
        throw HTTPClientError.malformed("the server did not become ready")
    }

    /// Ends the job at once (a failed start: no object will exist to clean up).
    private static func killJob(_ process: Process, executable: URL, marker: String) {
        for pid in rankPIDs(executable: executable, marker: marker).values { kill(pid, SIGKILL) }
        if process.isRunning { process.terminate() }
        process.waitUntilExit()
    }

    /// Process ids of the ranks (the weft processes, not their wrappers), by rank.
    func rankPIDs() -> [Int: Int32] { ServerProcess.rankPIDs(executable: executable, marker: marker) }

    static func rankPIDs(executable: URL, marker: String) -> [Int: Int32] {
        var result: [Int: Int32] = [:]
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
        for entry in entries {
            guard let pid = Int32(entry),
                  let command = try? Data(contentsOf: URL(fileURLWithPath: "/proc/\(entry)/cmdline")) else { continue }
            let parts = command.split(separator: 0).map { String(decoding: $0, as: UTF8.self) }
            guard parts.first == executable.path, parts.contains(marker),
                  let environ = try? Data(contentsOf: URL(fileURLWithPath: "/proc/\(entry)/environ")) else { continue }
            for variable in environ.split(separator: 0) {
                let text = String(decoding: variable, as: UTF8.self)
                if text.hasPrefix("OMPI_COMM_WORLD_RANK="), let rank = Int(text.dropFirst(21)) { result[rank] = pid }
            }
        }
        return result
    }

    /// Sends `signal` to every rank (as `kill` of the job's processes does).
    func signalRanks(_ signal: Int32) {
        for pid in rankPIDs().values { kill(pid, signal) }
    }

    struct Exit {
        var status: Int32
        var rankExits: [Int: Int32]
        var timedOut: Bool
    }

    /// Waits for mpirun to end (killing the job after `timeout`).
    @discardableResult
    func waitForExit(timeout: Double = 60) -> Exit {
        let deadline = Date().addingTimeInterval(timeout)
        var timedOut = false
        while process.isRunning {
            if Date() > deadline {
                timedOut = true
                for pid in rankPIDs().values { kill(pid, SIGKILL) }
                process.terminate()
                break
            }
            usleep(20_000)
        }
        process.waitUntilExit()
        stdout = out.finish()
        stderr = err.finish()
        return Exit(status: process.terminationStatus, rankExits: MPIRun.rankExits(stderr), timedOut: timedOut)
    }

    /// Stops the server with SIGTERM and checks every rank exited 0.
    func stop(file: StaticString = #filePath, line: UInt = #line) {
        guard process.isRunning else { return }
        signalRanks(SIGTERM)
        let exit = waitForExit()
        XCTAssertFalse(exit.timedOut, "server did not stop on SIGTERM", file: file, line: line)
        XCTAssertEqual(exit.status, 0, "mpirun: \(stderr)", file: file, line: line)
    }

    deinit {
        if process.isRunning {
            for pid in rankPIDs().values { kill(pid, SIGKILL) }
            process.terminate()
            process.waitUntilExit()
        }
    }

    /// A number from /metrics (first sample of `name`, labels included in `name` if any).
    func metric(_ name: String) throws -> Double? {
        let text = try client.send("GET", "/metrics").text
        for line in text.split(separator: "\n") where line.hasPrefix(name + " ") || line.hasPrefix(name + "{") {
            if let value = line.split(separator: " ").last.flatMap({ Double($0) }) { return value }
        }
        return nil
    }
}
