import ArgumentParser
import Foundation

/// `weft launch ARGS…`: runs `mpirun ARGS…` so that stopping it from a
/// terminal or a service manager is a clean stop with exit status 0.
///
/// mpirun treats SIGTERM and SIGINT as an abort: it kills the ranks after
/// about a second and exits 1 even when every rank drained and exited 0.
/// It forwards SIGUSR1 to the ranks without aborting, and `weft serve`
/// drains on SIGUSR1 as on SIGTERM. So this wrapper starts mpirun in a process
/// group of its own (a terminal's Ctrl-C reaches only the wrapper), turns the
/// first SIGINT/SIGTERM/SIGHUP into SIGUSR1 for mpirun, a second one into
/// SIGTERM (mpirun's abort), and exits with mpirun's status.
struct Launch: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run mpirun with the given arguments; SIGINT/SIGTERM become a clean drain (exit 0), not an abort.",
        discussion: """
        Example: weft launch -np 2 --bind-to socket weft serve --model DIR. The first SIGINT \
        (Ctrl-C), SIGTERM or SIGHUP is forwarded as SIGUSR1, on which `weft serve` drains and \
        every rank exits 0; a second one aborts the job. mpirun's standard input is /dev/null. \
        The mpirun run is $WEFT_MPIRUN if set, else `mpirun` from PATH.
        """)

    @Argument(parsing: .captureForPassthrough, help: "Arguments for mpirun.")
    var arguments: [String] = []

    func validate() throws {
        if arguments.isEmpty { throw ValidationError("give mpirun's arguments, e.g. weft launch -np 2 weft serve --model DIR") }
    }

    func run() throws {
        let mpirun = ProcessInfo.processInfo.environment["WEFT_MPIRUN"].flatMap { $0.isEmpty ? nil : $0 } ?? "mpirun"
        for signalNumber in [SIGINT, SIGTERM, SIGHUP, SIGUSR1] { signal(signalNumber, SIG_IGN) }
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        posix_spawnattr_setpgroup(&attributes, 0)
        // The child starts with default signal dispositions (the wrapper ignores them).
        var defaults = sigset_t()
        sigemptyset(&defaults)
        for signalNumber in [SIGINT, SIGTERM, SIGHUP, SIGUSR1] { sigaddset(&defaults, signalNumber) }
        posix_spawnattr_setsigdefault(&attributes, &defaults)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGDEF))
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)

        let argv = ([mpirun] + arguments).map { strdup($0) } + [nil]
        defer { for pointer in argv { free(pointer) } }
        var child: pid_t = 0
        let rc = posix_spawnp(&child, mpirun, &actions, &attributes, argv, environ)
        guard rc == 0 else { throw ValidationError("cannot start \(mpirun): \(String(cString: strerror(rc)))") }

        // Signals become events on a queue; the main thread waits for mpirun.
        let forwarded = Atomic(0)
        let queue = DispatchQueue(label: "weft.launch.signals")
        let sources = [SIGINT, SIGTERM, SIGHUP].map { signalNumber -> DispatchSourceSignal in
            let source = DispatchSource.makeSignalSource(signal: signalNumber, queue: queue)
            source.setEventHandler {
                let count = forwarded.add()
                kill(child, count == 1 ? SIGUSR1 : SIGTERM)
            }
            source.resume()
            return source
        }
        var status: Int32 = 0
        while waitpid(child, &status, 0) < 0 && errno == EINTR {}
        sources.forEach { $0.cancel() }
        // WIFEXITED / WEXITSTATUS / WTERMSIG, which Swift does not import.
        let signalled = status & 0x7f
        Foundation.exit(signalled == 0 ? (status >> 8) & 0xff : 128 + signalled)
    }
}

/// A counter the signal handler's queue and the main thread share.
final class Atomic: @unchecked Sendable {
    private let lock = NSLock()
    private var value: Int
    init(_ value: Int) { self.value = value }
    func add() -> Int {
        lock.lock()
        defer { lock.unlock() }
        value += 1
        return value
    }
}
