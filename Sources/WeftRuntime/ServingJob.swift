import Foundation
import WeftComm

/// Rank 0's side of a serving program: what takes requests to the engine
/// (an HTTP server, a queue consumer, ...). `ServingJob` calls it on the
/// thread that runs the job; the engine loop runs on that thread between
/// `start` and `stopped`, so `start` must return once requests can flow
/// (run the server on other threads or tasks).
public protocol ServingFrontEnd {
    /// Before the model loads, e.g. to start listening so that health checks
    /// can answer "loading". If it throws, the job fails on every rank once
    /// the model has loaded (the other ranks cannot be told earlier).
    func prepare() throws
    /// The model has loaded on every rank: take requests for `engine` from
    /// now on (`submit` on any thread or task) and return. `engine.shutdown`
    /// ends the job on every rank. If it throws, the job fails on every rank.
    func start(_ engine: ServingEngine) throws
    /// The engine loop has ended on this rank (called only after `start`):
    /// `error` is nil after a shutdown, else why the engine failed (every
    /// stream has then thrown). If the model fails to load or `start` throws,
    /// the job ends without this call (`ServingJob.run` then exits).
    func stopped(error: Error?)
}

extension ServingFrontEnd {
    public func prepare() throws {}
    public func stopped(error: Error?) {}
}

/// A serving engine as an MPI program: every rank loads its shard of the
/// model and runs the engine loop; rank 0 also runs the front end, which
/// submits the requests. The start-up `weft serve` and embedding programs
/// share.
///
/// ```swift
/// ServingJob.run(configuration, frontEnd: MyHTTPApp(port: 8080))   // every rank; exits
/// ```
public enum ServingJob {
    /// This process's rank of the job, start to exit (see `RankStartup.run`):
    /// exit 0 after `shutdown`; on an error (a bad model path, a front end
    /// that cannot start, a failed rank) one line on stderr and a non-zero
    /// exit on every rank.
    public static func run(_ configuration: ServingConfiguration, frontEnd: some ServingFrontEnd,
                           describe: (Error) -> String = { String(describing: $0) }) -> Never {
        RankStartup.run(describe: describe) { communicator in
            try serve(configuration, communicator: communicator, frontEnd: frontEnd)
        }
    }

    /// The job on an existing communicator (for programs that manage MPI
    /// themselves): returns on every rank after `shutdown`, throws on every
    /// rank if the model cannot load, the front end cannot start or the
    /// engine fails (errors agreed across ranks, as `RankStartup` expects).
    ///
    /// Ranks other than 0 ignore SIGTERM, SIGINT and SIGUSR1: rank 0 decides
    /// when to stop (its front end calls `shutdown`) and tells every rank
    /// through the step plans, so a signal to the whole job cannot stop one
    /// rank on its own.
    public static func serve(_ configuration: ServingConfiguration, communicator: Communicator,
                             frontEnd: some ServingFrontEnd) throws {
        let isRoot = communicator.isRoot
        if !isRoot {
            for signalNumber in [SIGTERM, SIGINT, SIGUSR1] { signal(signalNumber, SIG_IGN) }
        }
        let prepared: Result<Void, Error> = isRoot ? Result { try frontEnd.prepare() } : .success(())
        let engine = try ServingEngine(configuration: configuration, communicator: communicator)
        try communicator.agree {
            try prepared.get()
            if isRoot { try frontEnd.start(engine) }
        }
        do {
            try engine.run()
        } catch {
            if isRoot { frontEnd.stopped(error: error) }
            throw error
        }
        if isRoot { frontEnd.stopped(error: nil) }
    }
}
