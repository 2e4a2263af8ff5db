import Foundation
import WeftModel

/// One generation request (token ids in, token ids and text out).
public struct GenerationRequest: Sendable {
    public var prompt: [Int]
    public var maxTokens: Int
    /// 0 is greedy.
    public var temperature: Double = 0
    public var topP: Double = 1
    /// 0 keeps every token.
    public var topK: Int = 0
    /// nil: a random seed.
    public var seed: UInt64?
    /// Generation ends before any of these strings; the string is not returned.
    public var stop: [String] = []
    /// Generation ends after any of these tokens (besides the model's end-of-sequence ids).
    public var stopTokenIDs: [Int] = []
    /// Keep generating past end-of-sequence tokens (benchmarks).
    public var ignoreEOS = false

    public init(prompt: [Int], maxTokens: Int) {
        self.prompt = prompt
        self.maxTokens = maxTokens
    }
}

/// Errors of the serving API; `parameter` names the request field at fault.
public enum ServingError: Error, CustomStringConvertible, Equatable {
    case invalidRequest(parameter: String?, message: String)
    /// The queue is full: try again later.
    case overloaded(String)
    /// The engine is shutting down (new requests refused, in-flight ones cancelled).
    case shuttingDown
    /// The engine stopped after an error (a rank failed).
    case engineFailed(String)

    public var description: String {
        switch self {
        case .invalidRequest(_, let message): return message
        case .overloaded(let message): return message
        case .shuttingDown: return "the server is shutting down"
        case .engineFailed(let message): return "the engine failed: \(message)"
        }
    }
}

/// What a request may ask of a serving engine: checks requests from outside
/// (every number range-checked before arithmetic) without touching the engine.
public struct RequestLimits: Sendable {
    /// Longest prompt + completion, in tokens.
    public var maxModelLength: Int
    public var vocabularySize: Int
    public var scheduler: BatchScheduler.Limits

    public init(maxModelLength: Int, vocabularySize: Int, scheduler: BatchScheduler.Limits) {
        self.maxModelLength = maxModelLength
        self.vocabularySize = vocabularySize
        self.scheduler = scheduler
    }

    /// Why the first token id outside the vocabulary is refused, if any.
    public func vocabularyProblem(_ tokens: [Int]) -> String? {
        ModelConfig.vocabularyProblem(tokens, vocabularySize: vocabularySize)
    }

    public func validate(_ request: GenerationRequest) throws {
        guard !request.prompt.isEmpty else {
            throw ServingError.invalidRequest(parameter: "prompt", message: "prompt is empty: give at least one token")
        }
        if let problem = ModelConfig.vocabularyProblem(request.prompt, vocabularySize: vocabularySize) {
            throw ServingError.invalidRequest(parameter: "prompt", message: problem)
        }
        guard request.maxTokens >= 1 else {
            throw ServingError.invalidRequest(parameter: "max_tokens", message: "max_tokens must be at least 1, got \(request.maxTokens)")
        }
        guard request.prompt.count < maxModelLength else {
            throw ServingError.invalidRequest(parameter: "prompt", message: "the prompt has \(request.prompt.count) tokens; this server's context is \(maxModelLength) tokens")
        }
        // Compared without adding: max_tokens comes from a request and may be near Int.max.
        guard request.maxTokens <= maxModelLength - request.prompt.count else {
            throw ServingError.invalidRequest(parameter: "max_tokens", message: "max_tokens \(request.maxTokens) + \(request.prompt.count) prompt tokens exceeds this server's context of \(maxModelLength) tokens")
        }
        guard request.temperature.isFinite, request.temperature >= 0, request.temperature <= 2 else {
            throw ServingError.invalidRequest(parameter: "temperature", message: "temperature must be between 0 and 2, got \(request.temperature)")
        }
        guard request.topP > 0, request.topP <= 1 else {
            throw ServingError.invalidRequest(parameter: "top_p", message: "top_p must be in (0, 1], got \(request.topP)")
        }
        guard request.topK >= 0 else {
            throw ServingError.invalidRequest(parameter: "top_k", message: "top_k must be >= 0, got \(request.topK)")
        }
        if let problem = ModelConfig.vocabularyProblem(request.stopTokenIDs, vocabularySize: vocabularySize) {
            throw ServingError.invalidRequest(parameter: "stop_token_ids", message: "stop_token_ids: \(problem)")
        }
        // Both counts are now within the context, so the scheduler's sums cannot overflow.
        guard scheduler.fits(promptTokens: request.prompt.count, maxNewTokens: request.maxTokens) else {
            throw ServingError.invalidRequest(parameter: "max_tokens", message: "prompt + max_tokens needs more KV cache than this server has (\(scheduler.kvBlocks) blocks)")
        }
    }
}

/// A request admitted by the intake, waiting for the engine loop to take it.
struct AdmittedRequest: Sendable {
    let id: Int
    let request: GenerationRequest
    let continuation: AsyncThrowingStream<GenerationOutput, Error>.Continuation
}

/// Request intake (rank 0): admission, validation and queue limits, and the
/// hand-off of arrivals, cancellations and shutdown to the engine loop.
///
/// Submitters on any thread and the engine loop meet only here, under one
/// lock; the loop blocks in `take` while it has nothing to do.
final class RequestIntake: @unchecked Sendable {
    /// Where the intake is in its life; only `open` admits requests.
    enum Phase: Equatable {
        case open
        /// Shutting down: in-flight requests may run until the deadline.
        case draining(until: Date)
        /// The engine loop has ended after a shutdown.
        case stopped
        /// The engine loop has ended after an error.
        case failed(String)
    }

    /// What the engine loop takes at a step boundary.
    struct Work {
        var arrivals: [AdmittedRequest]
        var cancellations: [Int]
        /// Set once a shutdown was asked for: in-flight requests end by then.
        var drainDeadline: Date?
    }

    let limits: RequestLimits
    private let admissionLimit: Int

    // Under `condition`.
    private let condition = NSCondition()
    private var phase = Phase.open
    private var inbox: [AdmittedRequest] = []
    private var cancellations: [Int] = []
    /// Requests admitted and not yet ended (queued, waiting or running).
    private var outstanding = 0
    private var nextID = 0

    init(limits: RequestLimits, admissionLimit: Int) {
        self.limits = limits
        self.admissionLimit = admissionLimit
    }

    // MARK: Submitters (any thread)

    /// Validates and queues a request; its outputs go to the returned stream.
    func submit(_ request: GenerationRequest) throws -> (id: Int, outputs: AsyncThrowingStream<GenerationOutput, Error>) {
        try limits.validate(request)
        let (stream, continuation) = AsyncThrowingStream<GenerationOutput, Error>.makeStream()
        condition.lock()
        defer { condition.unlock() }
        switch phase {
        case .open: break
        case .failed(let message): throw ServingError.engineFailed(message)
        case .draining, .stopped: throw ServingError.shuttingDown
        }
        guard outstanding < admissionLimit else {
            throw ServingError.overloaded("\(outstanding) requests are running or queued (limit \(admissionLimit)); retry later")
        }
        let id = nextID
        nextID += 1
        outstanding += 1
        inbox.append(AdmittedRequest(id: id, request: request, continuation: continuation))
        continuation.onTermination = { [weak self] termination in
            if case .cancelled = termination { self?.cancel(id: id) }
        }
        condition.signal()
        return (id, stream)
    }

    /// Asks the loop to end a request at the next step; unknown ids are ignored there.
    func cancel(id: Int) {
        condition.lock()
        cancellations.append(id)
        condition.signal()
        condition.unlock()
    }

    /// Stops admitting; in-flight requests may run for `drain` seconds.
    func shutdown(drain: Double) {
        condition.lock()
        let deadline = Date().addingTimeInterval(max(drain, 0))
        switch phase {
        case .open: phase = .draining(until: deadline)
        case .draining(let until) where deadline < until: phase = .draining(until: deadline)
        case .draining, .stopped, .failed: break
        }
        condition.signal()
        condition.unlock()
    }

    var currentPhase: Phase {
        condition.lock()
        defer { condition.unlock() }
        return phase
    }

    /// Requests admitted but not yet taken by the engine loop.
    var queuedCount: Int {
        condition.lock()
        defer { condition.unlock() }
        return inbox.count
    }

    // MARK: The engine loop

    /// What arrived since the last call; with `waitIfIdle`, blocks until there
    /// is something (an arrival, a cancellation or a shutdown).
    func take(waitIfIdle: Bool) -> Work {
        condition.lock()
        defer { condition.unlock() }
        while waitIfIdle && inbox.isEmpty && cancellations.isEmpty && phase == .open {
            condition.wait()
        }
        let work = Work(arrivals: inbox, cancellations: cancellations, drainDeadline: drainDeadline)
        inbox.removeAll()
        cancellations.removeAll()
        return work
    }

    private var drainDeadline: Date? {
        if case .draining(let until) = phase { return until }
        return nil
    }

    /// A request taken by the loop has ended (its slot is free for admission).
    func ended() {
        condition.lock()
        outstanding -= 1
        condition.unlock()
    }

    /// The engine loop has ended: nothing more is admitted. After a failure,
    /// returns the requests it never took (their streams must be failed).
    func close(failure: String?) -> [AdmittedRequest] {
        condition.lock()
        defer { condition.unlock() }
        switch (failure, phase) {
        case (let failure?, _): phase = .failed(failure)
        case (nil, .failed): break   // a failure stays the reason
        case (nil, _): phase = .stopped
        }
        let untaken = inbox
        inbox.removeAll()
        return untaken
    }
}
