import ArgumentParser
import Foundation
import WeftComm
import WeftRuntime

@main
struct Weft: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "weft",
        abstract: "Tensor-parallel LLM inference on CPU clusters, launched with mpirun.",
        discussion: """
        Run under `mpirun -np N weft ...` to split the model over N ranks (one per socket, \
        NUMA node or machine), or without mpirun for one rank. Output comes from rank 0.
        """,
        subcommands: [Generate.self, Chat.self, Serve.self, Logits.self, Tokenize.self, Bench.self, Launch.self])

    /// Parses on every rank but reports usage errors on rank 0 only, so a
    /// mistyped option gives one message, not one per rank.
    static func main() {
        let command: ParsableCommand
        do {
            command = try parseAsRoot()
        } catch {
            report(error)
        }
        do {
            var mutable = command
            try mutable.run()
        } catch {
            // Commands report their own errors through `Session`; what reaches
            // here comes before MPI starts (help, usage errors found late).
            report(error)
        }
    }

    static func report(_ error: Error) -> Never {
        let error = ParameterFlags.asOption(error)
        let code = exitCode(for: error)
        if launcherRank == 0 {
            let message = fullMessage(for: error)
            if code == .success { print(message) } else { FileHandle.standardError.write(Data((message + "\n").utf8)) }
        }
        Foundation.exit(code.rawValue)
    }

    /// This process's rank as the launcher announced it (before MPI starts).
    static var launcherRank: Int {
        let env = ProcessInfo.processInfo.environment
        return Int(env["OMPI_COMM_WORLD_RANK"] ?? env["PMIX_RANK"] ?? env["PMI_RANK"] ?? "0") ?? 0
    }
}
