import Foundation
import WeftComm
import WeftModel

/// One rank's part of an MPI program, start to exit: starts MPI, runs the
/// body, and turns errors into one line on stderr and a non-zero exit on
/// every rank (no rank is left waiting in a collective for one that gave up).
public enum RankStartup {
    /// Runs `body` with the world communicator, then ends MPI and the
    /// process: exit 0 if it returned, 1 if it threw. An error every rank
    /// shares (see `isSharedByAllRanks`) is reported once, by rank 0; an error
    /// of one rank is reported by that rank, naming it.
    ///
    /// `describe` words errors for the user (a front end may, for example,
    /// name its own options where the libraries name their parameters).
    public static func run(describe: (Error) -> String = { String(describing: $0) },
                           _ body: (Communicator) throws -> Void) -> Never {
        let communicator: Communicator
        do {
            communicator = try Communicator.world()
        } catch {
            report("error: \(describe(error))")
            exit(1)
        }
        do {
            try body(communicator)
            Communicator.finalize()
            exit(0)
        } catch let error as CommError where error.isPeerFailure {
            // A peer is gone or stuck: MPI can no longer end collectively
            // (MPI_Finalize and MPI_Abort would wait on it or end the ranks
            // that are still reporting), so every surviving rank says what
            // it saw and exits on its own; mpirun then ends the rest.
            report("error: rank \(communicator.rank): \(describe(error))")
            exit(1)
        } catch {
            if communicator.size == 1 || isSharedByAllRanks(error) {
                // Every rank raised this same error: rank 0 reports it once
                // and all ranks leave cleanly.
                if communicator.isRoot { report("error: \(describe(error))") }
                Communicator.finalize()
                exit(1)
            }
            // Only this rank failed: the others may be inside a collective
            // waiting for it, so end the whole job rather than leave them hanging.
            report("error: rank \(communicator.rank): \(describe(error))")
            Communicator.abort(code: 1)
        }
    }

    /// Errors that every rank raises identically: those agreed through
    /// `Communicator.agree`, and checks of replicated inputs (configuration,
    /// prompt tokens, batch layout), which each rank evaluates on the same data.
    public static func isSharedByAllRanks(_ error: Error) -> Bool {
        switch error {
        case is RuntimeError, is ModelError: return true
        case let error as CommError:
            if case .failedOnRank = error { return true }
            return false
        default: return false
        }
    }

    private static func report(_ line: String) {
        FileHandle.standardError.write(Data((line + "\n").utf8))
    }
}
