import Foundation
import WeftComm
import WeftModel
import WeftRuntime

/// The MPI lifetime of one command: starts MPI, runs the body, and turns
/// errors into one line on stderr and a non-zero exit on every rank.
enum Session {
    static func run(_ body: (Communicator) throws -> Void) -> Never {
        let communicator: Communicator
        do {
            communicator = try Communicator.world()
        } catch {
            FileHandle.standardError.write(Data("error: \(ParameterFlags.message(for: error))\n".utf8))
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
            FileHandle.standardError.write(Data("error: rank \(communicator.rank): \(error)\n".utf8))
            exit(1)
        } catch {
            if communicator.size == 1 || isSharedByAllRanks(error) {
                // Every rank raised this same error: rank 0 reports it once
                // and all ranks leave cleanly.
                if communicator.isRoot { FileHandle.standardError.write(Data("error: \(ParameterFlags.message(for: error))\n".utf8)) }
                Communicator.finalize()
                exit(1)
            }
            // Only this rank failed: the others may be inside a collective
            // waiting for it, so end the whole job rather than leave them hanging.
            FileHandle.standardError.write(Data("error: rank \(communicator.rank): \(ParameterFlags.message(for: error))\n".utf8))
            Communicator.abort(code: 1)
        }
    }

    /// Errors that every rank raises identically: those agreed through
    /// `Communicator.agree`, and checks of replicated inputs (options, prompt
    /// tokens, batch layout), which each rank evaluates on the same data.
    static func isSharedByAllRanks(_ error: Error) -> Bool {
        switch error {
        case is RuntimeError, is ModelError: return true
        case let error as CommError:
            if case .failedOnRank = error { return true }
            return false
        default: return false
        }
    }
}

/// Standard output for rank 0: each write goes straight to the file
/// descriptor (no buffering), so streamed tokens appear as they come.
enum Output {
    static func write(_ text: String) {
        FileHandle.standardOutput.write(Data(text.utf8))
    }
}
