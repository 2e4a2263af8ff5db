import Foundation
import WeftComm
import WeftModel
import WeftTokenizer

/// The embeddable serving engine: continuous batching over a tensor-parallel
/// model, across all MPI ranks.
///
/// Every rank creates it and calls `run()` (which blocks until `shutdown`);
/// rank 0's `run()` schedules steps and broadcasts each step plan, the other
/// ranks follow the plans. On rank 0, any thread or task may `submit`
/// requests and read their outputs as an `AsyncThrowingStream`; ending the
/// iteration early (or cancelling the task) cancels the request and frees its
/// KV blocks on every rank. `ServingJob` does all of this for a program
/// (start-up on every rank, errors, exit).
///
/// ```swift
/// let engine = try ServingEngine(configuration: config, communicator: try Communicator.world())
/// if engine.isRoot { Task { for try await out in try engine.submit(request) { print(out.text, terminator: "") } } }
/// try engine.run()
/// ```
///
/// The engine is three parts: the request intake (admission, validation,
/// queue limits; `RequestIntake`), the engine loop (scheduling and running
/// each step on every rank; `ServingEngineLoop`) and output processing
/// (detokenizing, stop strings, streams; `GenerationStream`).
///
/// The loop, and the model in it, is used only by the thread that created
/// the engine and then calls `run()` (its compute pool pins that thread);
/// everything else here is immutable or synchronized, so the class is safe
/// to share.
public final class ServingEngine: @unchecked Sendable {
    public let communicator: Communicator
    public let configuration: ServingConfiguration
    public var isRoot: Bool { communicator.isRoot }
    public let modelConfig: ModelConfig
    public let tokenizer: Tokenizer?
    public let loadSeconds: Double
    /// Longest prompt + completion, in tokens.
    public var maxModelLength: Int { requestLimits.maxModelLength }
    public var kvBlocks: Int { requestLimits.scheduler.kvBlocks }
    /// What a request may ask of this engine (immutable: any thread may use it).
    public var requestLimits: RequestLimits { intake.limits }

    private let intake: RequestIntake
    private let monitor: ServingMonitor
    /// Confined to the thread that created the engine (see above).
    private let loop: ServingEngineLoop

    /// Loads the model on every rank (errors are agreed across ranks).
    public init(configuration: ServingConfiguration, communicator: Communicator) throws {
        try configuration.validate()
        let engine = try Engine(configuration: configuration.engine, communicator: communicator) { model, engine in
            try configuration.size(&engine, for: model)
        }
        self.communicator = communicator
        self.configuration = configuration
        modelConfig = engine.config
        tokenizer = engine.tokenizer
        loadSeconds = engine.loadSeconds
        let blocks = engine.model.cache.blockCount
        let scheduler = BatchScheduler.Limits(maxRunning: configuration.maxRunningSequences, maxBatchTokens: configuration.maxBatchTokens,
                                              kvBlocks: blocks, kvBlockSize: engine.configuration.kvBlockSize,
                                              prefixCaching: configuration.prefixCaching)
        let maxModelLength = engine.configuration.maxSequenceLength ?? engine.config.maxPositionEmbeddings   // set by `size`
        intake = RequestIntake(limits: RequestLimits(maxModelLength: maxModelLength, vocabularySize: engine.config.vocabularySize,
                                                     scheduler: scheduler),
                               admissionLimit: configuration.admissionLimit)
        monitor = ServingMonitor(kvBlocksTotal: blocks)
        loop = ServingEngineLoop(engine: engine, scheduler: scheduler, budget: try StepBudget.make(configuration: configuration, engine: engine),
                                 intake: intake, monitor: monitor)
    }

    // MARK: Rank 0 API

    /// Checks a request against the model and the engine's limits.
    public func validate(_ request: GenerationRequest) throws {
        try requestLimits.validate(request)
    }

    /// A submitted request: its id (for `cancel`) and its outputs.
    public struct Generation: Sendable {
        public let id: Int
        public let outputs: AsyncThrowingStream<GenerationOutput, Error>
    }

    /// Queues a request (rank 0 only). Outputs arrive as the engine generates
    /// them; the stream finishes after the output with a `finishReason`, or
    /// throws `ServingError` if the engine stops first. Cancelling the task
    /// that iterates, or `cancel(id)`, ends the request.
    public func submit(_ request: GenerationRequest) throws -> Generation {
        guard isRoot else {
            throw ServingError.invalidRequest(parameter: nil, message: "requests are submitted on rank 0 (this is rank \(communicator.rank))")
        }
        let (id, outputs) = try intake.submit(request)
        return Generation(id: id, outputs: outputs)
    }

    /// Cancels a request: its stream finishes and its KV blocks are freed on
    /// every rank at the next step. Unknown or finished ids are ignored.
    public func cancel(id: Int) {
        intake.cancel(id: id)
    }

    /// Stops accepting requests; in-flight ones may finish until `drain`
    /// seconds have passed, then are cancelled (their streams throw
    /// `ServingError.shuttingDown`). `run()` then returns on every rank.
    public func shutdown(drain: Double = 0) {
        intake.shutdown(drain: drain)
    }

    /// The engine's state as `/health` reports it.
    public enum Health: Sendable, Equatable {
        case ready
        /// A step has run longer than the peer timeout: a rank has stopped
        /// advancing (the step fails once the peer monitor has named it).
        case stalled(seconds: Double)
        case failed(String)
        case stopped
    }

    public var health: Health {
        switch intake.currentPhase {
        case .failed(let message): return .failed(message)
        case .stopped: return .stopped
        case .open, .draining:
            if let seconds = monitor.currentStepSeconds, seconds > configuration.engine.commTimeout { return .stalled(seconds: seconds) }
            return .ready
        }
    }

    /// Whether `run()` has ended (after a shutdown or a failure).
    public var hasStopped: Bool {
        switch intake.currentPhase {
        case .stopped, .failed: return true
        case .open, .draining: return false
        }
    }

    public var statistics: ServingStats {
        var stats = monitor.stats
        stats.waitingRequests += intake.queuedCount
        return stats
    }

    // MARK: The engine loop (every rank)

    /// Runs steps until `shutdown` (on rank 0) ends them; call on every rank,
    /// from the thread that created the engine. Throws if a step fails in a
    /// way the ranks cannot recover from together (then every in-flight
    /// request's stream throws `ServingError.engineFailed`).
    public func run() throws {
        try loop.run()
    }
}
