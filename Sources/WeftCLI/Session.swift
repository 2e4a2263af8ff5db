import Foundation
import WeftComm
import WeftModel
import WeftRuntime

/// The MPI lifetime of one command (`RankStartup.run`): starts MPI, runs the
/// body, and turns errors into one line on stderr (library parameters shown
/// as the CLI's flags) and a non-zero exit on every rank.
enum Session {
    static func run(_ body: (Communicator) throws -> Void) -> Never {
        RankStartup.run(describe: ParameterFlags.message(for:), body)
    }
}

/// Standard output for rank 0: each write goes straight to the file
/// descriptor (no buffering), so streamed tokens appear as they come.
enum Output {
    static func write(_ text: String) {
        FileHandle.standardOutput.write(Data(text.utf8))
    }
}
