import Foundation
import WeftComm
import WeftModel
import WeftTokenizer

/// How a serving engine batches and how much it admits.
public struct ServingConfiguration: Sendable {
    /// The model, its placement and communication mode.
    public var engine: EngineConfiguration
    /// Most sequences decoding together (the running batch).
    public var maxRunningSequences = 16
    /// Most tokens per step: decodes plus chunks of prompts (chunked prefill).
    public var maxBatchTokens = 256
    /// Longest sequence (prompt + generated); nil: the model's
    /// max_position_embeddings, at most 4096.
    public var maxModelLength: Int?
    /// Requests that may wait for a running slot before new ones are refused.
    public var maxQueuedRequests = 256
    /// KV cache blocks; nil: enough for `maxRunningSequences` sequences of
    /// `maxModelLength` positions.
    public var kvBlocks: Int?

    public init(engine: EngineConfiguration) {
        self.engine = engine
    }
}

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

public enum FinishReason: String, Sendable {
    /// An end-of-sequence token, a stop token or a stop string.
    case stop
    /// `maxTokens` reached.
    case length
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

/// One step's output for a request: the token generated and the text it completed.
public struct GenerationOutput: Sendable {
    public var token: Int
    /// Text released by this token: may be empty (an incomplete character, or
    /// text held back because it could start a stop string).
    public var text: String
    /// Set on the last output of the stream.
    public var finishReason: FinishReason?
    public var promptTokenCount: Int
    /// Tokens generated so far, this one included.
    public var completionTokenCount: Int
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

/// A snapshot of the engine's load, for metrics.
public struct ServingStats: Sendable {
    public var waitingRequests = 0
    public var runningSequences = 0
    public var kvBlocksInUse = 0
    public var kvBlocksTotal = 0
    public var steps = 0
    /// Seconds in model steps, and the part of them spent in (not hidden
    /// behind) the per-layer reductions.
    public var stepSeconds = 0.0
    public var communicationSeconds = 0.0
    public var promptTokens = 0
    public var generatedTokens = 0

    public init() {}
}

/// The embeddable serving engine: continuous batching over a tensor-parallel
/// model, across all MPI ranks.
///
/// Every rank creates it and calls `run()` (which blocks until `shutdown`);
/// rank 0's `run()` schedules steps and broadcasts each step plan, the other
/// ranks follow the plans. On rank 0, any thread or task may `submit`
/// requests and read their outputs as an `AsyncThrowingStream`; ending the
/// iteration early (or cancelling the task) cancels the request and frees its
/// KV blocks on every rank.
///
/// ```swift
/// let engine = try ServingEngine(configuration: config, communicator: try Communicator.world())
/// if engine.isRoot { Task { for try await out in try engine.submit(request) { print(out.text, terminator: "") } } }
/// try engine.run()
/// ```
///
/// The engine's model is used only by the thread that created it and then
/// calls `run()` (its compute pool pins that thread); the rest of the state
/// is behind one lock, so the class is safe to share.
public final class ServingEngine: @unchecked Sendable {
    public let communicator: Communicator
    public let configuration: ServingConfiguration
    public var isRoot: Bool { communicator.isRoot }
    public var modelConfig: ModelConfig { engine.config }
    public var tokenizer: Tokenizer? { engine.tokenizer }
    /// Longest prompt + completion, in tokens.
    public let maxModelLength: Int
    public var kvBlocks: Int { limits.kvBlocks }

    private let engine: Engine
    private let eosTokenIDs: Set<Int>

    // Shared with submitters (under `condition`).
    private let condition = NSCondition()
    private var inbox: [RequestState] = []
    private var cancellations: [Int] = []
    private var outstanding = 0
    private var shutdownDeadline: Date?
    private var stopped = false
    private var failure: String?
    private var stats = ServingStats()
    private var nextID = 0
    /// When the step now running began (nil between steps).
    private var stepStarted: DispatchTime?

    private let limits: BatchScheduler.Limits

    // Owned by the engine thread (rank 0).
    private var scheduler: BatchScheduler
    private var live: [Int: RequestState] = [:]

    /// Loads the model on every rank (errors are agreed across ranks).
    public init(configuration: ServingConfiguration, communicator: Communicator) throws {
        guard configuration.maxRunningSequences > 0 else {
            throw RuntimeError.invalidOption("--max-num-seqs", "must be at least 1, got \(configuration.maxRunningSequences)")
        }
        guard configuration.maxBatchTokens > 0 else {
            throw RuntimeError.invalidOption("--max-batch-tokens", "must be at least 1, got \(configuration.maxBatchTokens)")
        }
        guard configuration.maxQueuedRequests >= 0 else {
            throw RuntimeError.invalidOption("--max-queue", "must be >= 0, got \(configuration.maxQueuedRequests)")
        }
        if let length = configuration.maxModelLength, length < 2 {
            throw RuntimeError.invalidOption("--max-model-len", "must be at least 2, got \(length)")
        }
        if let blocks = configuration.kvBlocks, blocks < 1 {
            throw RuntimeError.invalidOption("--kv-blocks", "must be at least 1, got \(blocks)")
        }
        self.communicator = communicator
        self.configuration = configuration
        var engineConfiguration = configuration.engine
        // The model's length is known only once its config is read, so size the
        // cache in two passes: peek at the config first (cheap, agreed by Engine).
        let modelMax = ServingEngine.peekMaxPositions(configuration.engine.weights)
        if let requested = configuration.maxModelLength, let modelMax, requested > modelMax {
            throw RuntimeError.invalidOption("--max-model-len", "\(requested) exceeds the model's max_position_embeddings \(modelMax)")
        }
        let length = min(configuration.maxModelLength ?? min(modelMax ?? 4096, 4096), modelMax ?? Int.max)
        let blockSize = engineConfiguration.kvBlockSize
        // The engine sizes the cache (checked against overflow and memory).
        engineConfiguration.kvBlocks = configuration.kvBlocks
        engineConfiguration.maxSequences = configuration.maxRunningSequences
        engineConfiguration.maxSequenceLength = length
        engine = try Engine(configuration: engineConfiguration, communicator: communicator)
        let blocks = engine.model.cache.blockCount
        maxModelLength = min(length, engine.config.maxPositionEmbeddings)
        eosTokenIDs = Set(engine.config.eosTokenIDs + (engine.tokenizer?.eosTokenIDs ?? []))
        limits = BatchScheduler.Limits(maxRunning: configuration.maxRunningSequences, maxBatchTokens: configuration.maxBatchTokens,
                                       kvBlocks: blocks, kvBlockSize: blockSize)
        scheduler = BatchScheduler(limits: limits)
        stats.kvBlocksTotal = blocks
    }

    private static func peekMaxPositions(_ weights: EngineConfiguration.Weights) -> Int? {
        let file: URL
        switch weights {
        case .checkpoint(let directory): file = directory.appendingPathComponent("config.json")
        case .random(let shape, _): file = shape
        }
        guard let data = try? Data(contentsOf: file), let config = try? ModelConfig.parse(data, file: file.path) else {
            return nil   // Engine reports the problem with its own message on every rank.
        }
        return config.maxPositionEmbeddings
    }

    public var loadSeconds: Double { engine.loadSeconds }

    // MARK: Rank 0 API

    /// Checks a request against the model and the engine's limits.
    public func validate(_ request: GenerationRequest) throws {
        try requestLimits.validate(request)
    }

    /// What a request may ask of this engine (immutable: any thread may use it).
    public var requestLimits: RequestLimits {
        RequestLimits(maxModelLength: maxModelLength, vocabularySize: engine.config.vocabularySize, scheduler: limits)
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
        try validate(request)
        let (stream, continuation) = AsyncThrowingStream<GenerationOutput, Error>.makeStream()
        condition.lock()
        defer { condition.unlock() }
        if let failure { throw ServingError.engineFailed(failure) }
        guard shutdownDeadline == nil, !stopped else { throw ServingError.shuttingDown }
        guard outstanding < configuration.maxRunningSequences + configuration.maxQueuedRequests else {
            throw ServingError.overloaded("\(outstanding) requests are running or queued (limit \(configuration.maxRunningSequences + configuration.maxQueuedRequests)); retry later")
        }
        let id = nextID
        nextID += 1
        outstanding += 1
        let state = RequestState(id: id, request: request, continuation: continuation, tokenizer: engine.tokenizer,
                                 stopTokens: request.ignoreEOS ? Set(request.stopTokenIDs) : eosTokenIDs.union(request.stopTokenIDs))
        inbox.append(state)
        continuation.onTermination = { [weak self] termination in
            if case .cancelled = termination { self?.cancel(id: id) }
        }
        condition.signal()
        return Generation(id: id, outputs: stream)
    }

    /// Cancels a request: its stream finishes and its KV blocks are freed on
    /// every rank at the next step. Unknown or finished ids are ignored.
    public func cancel(id: Int) {
        condition.lock()
        cancellations.append(id)
        condition.signal()
        condition.unlock()
    }

    /// Stops accepting requests; in-flight ones may finish until `drain`
    /// seconds have passed, then are cancelled (their streams throw
    /// `ServingError.shuttingDown`). `run()` then returns on every rank.
    public func shutdown(drain: Double = 0) {
        condition.lock()
        let deadline = Date().addingTimeInterval(max(drain, 0))
        if shutdownDeadline == nil || deadline < shutdownDeadline! { shutdownDeadline = deadline }
        condition.signal()
        condition.unlock()
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
        condition.lock()
        defer { condition.unlock() }
        if let failure { return .failed(failure) }
        if stopped { return .stopped }
        if let stepStarted {
            let seconds = Double(DispatchTime.now().uptimeNanoseconds - stepStarted.uptimeNanoseconds) * 1e-9
            if seconds > configuration.engine.commTimeout { return .stalled(seconds: seconds) }
        }
        return .ready
    }

    /// Whether `run()` has ended (after a shutdown or a failure).
    public var hasStopped: Bool {
        condition.lock()
        defer { condition.unlock() }
        return stopped
    }

    public var statistics: ServingStats {
        condition.lock()
        defer { condition.unlock() }
        return stats
    }

    // MARK: The engine loop (every rank)

    /// Runs steps until `shutdown` (on rank 0) ends them; call on every rank,
    /// from the thread that created the engine. Throws if a step fails in a
    /// way the ranks cannot recover from together (then every in-flight
    /// request's stream throws `ServingError.engineFailed`).
    public func run() throws {
        do {
            if isRoot { try runRoot() } else { try runFollower() }
            // Every rank is here after the same stop plan: release MPI
            // resources together now (the engine object may outlive MPI on
            // rank 0, where the HTTP server still holds it).
            engine.close()
        } catch {
            failAll(String(describing: error))
            throw error
        }
    }

    private func runFollower() throws {
        while true {
            var encoded: [Int32] = []
            try communicator.broadcastWhenReady(&encoded)
            let plan = try StepPlan(encoded: encoded)
            _ = try execute(plan)
            if plan.stop { return }
        }
    }

    private func runRoot() throws {
        while true {
            let plan = nextPlan()
            var encoded = plan.encoded()
            try communicator.broadcastWhenReady(&encoded)
            switch try execute(plan) {
            case .logits(let rows): sample(rows, batch: plan.batch)
            case .failed(let error): failBatch(plan.batch, error: error)
            case .nothing: break
            }
            publishStats()
            if plan.stop {
                condition.lock()
                stopped = true
                condition.unlock()
                return
            }
        }
    }

    private enum StepResult {
        case nothing
        case logits([[Float]])
        /// An error every rank raised identically (bad batch, cache full): the
        /// ranks are still in step; the batch's requests fail.
        case failed(Error)
    }

    private func execute(_ plan: StepPlan) throws -> StepResult {
        for id in plan.releases { engine.release(sequence: id) }
        guard !plan.batch.isEmpty else { return .nothing }
        let started = DispatchTime.now()
        let start = started.uptimeNanoseconds
        let commBefore = engine.model.communicationSeconds
        condition.lock()
        stepStarted = started
        condition.unlock()
        defer {
            let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) * 1e-9
            condition.lock()
            stepStarted = nil
            stats.steps += 1
            stats.stepSeconds += seconds
            stats.communicationSeconds += engine.model.communicationSeconds - commBefore
            condition.unlock()
        }
        do {
            return .logits(try engine.forward(plan.batch))
        } catch let error as ModelError {
            return .failed(error)
        } catch let error as RuntimeError {
            return .failed(error)
        }
    }

    /// Waits for work, then lets the scheduler form the next step.
    private func nextPlan() -> StepPlan {
        condition.lock()
        while inbox.isEmpty && cancellations.isEmpty && scheduler.isIdle && shutdownDeadline == nil {
            condition.wait()
        }
        let arrivals = inbox, cancelled = cancellations, deadline = shutdownDeadline
        inbox.removeAll()
        cancellations.removeAll()
        condition.unlock()

        condition.lock()
        stats.promptTokens += arrivals.reduce(0) { $0 + $1.request.prompt.count }
        condition.unlock()
        for state in arrivals {
            live[state.id] = state
            scheduler.enqueue(id: state.id, prompt: state.request.prompt.map { Int32($0) }, maxNewTokens: state.request.maxTokens)
        }
        for id in cancelled where live[id] != nil { end(id) }
        if let deadline {
            if Date() >= deadline {
                for id in Array(live.keys).sorted() { end(id, error: ServingError.shuttingDown) }
            }
        }
        var plan = scheduler.nextStep()
        if deadline != nil && live.isEmpty { plan.stop = true }
        return plan
    }

    /// Samples each sequence's next token and sends the outputs.
    private func sample(_ rows: [[Float]], batch: FlatBatch) {
        let spans = batch.spans.filter { $0.logits != .none }
        var outputs: [(RequestState, GenerationOutput)] = []
        for (span, row) in zip(spans, rows) {
            guard let state = live[span.sequence] else { continue }
            let token = state.sampler.sample(row[...])
            scheduler.append(token: Int32(token), to: state.id)
            outputs.append((state, state.accept(token)))
        }
        // Counted before the outputs go out, so a client that has its last
        // token also sees it in the statistics.
        condition.lock()
        stats.generatedTokens += outputs.count
        condition.unlock()
        for (state, output) in outputs {
            state.continuation.yield(output)
            if output.finishReason != nil { end(state.id) }
        }
    }

    /// Ends a request: frees its slot (and its blocks on every rank in the
    /// next step) and finishes its stream, with `error` if given.
    private func end(_ id: Int, error: Error? = nil) {
        scheduler.finish(id: id)
        guard let state = live.removeValue(forKey: id) else { return }
        state.continuation.finish(throwing: error)
        condition.lock()
        outstanding -= 1
        condition.unlock()
    }

    private func failBatch(_ batch: FlatBatch, error: Error) {
        for id in Set(batch.spans.map(\.sequence)).sorted() {
            end(id, error: ServingError.engineFailed(String(describing: error)))
        }
    }

    private func failAll(_ message: String) {
        condition.lock()
        failure = message
        stopped = true
        let pending = inbox
        inbox.removeAll()
        condition.unlock()
        for state in pending + live.values { state.continuation.finish(throwing: ServingError.engineFailed(message)) }
        live.removeAll()
    }

    private func publishStats() {
        condition.lock()
        stats.waitingRequests = scheduler.waiting.count + inbox.count
        stats.runningSequences = scheduler.running.count
        stats.kvBlocksInUse = engine.model.cache.usedBlockCount
        condition.unlock()
    }
}

/// Rank 0's view of one request: sampling, detokenizing and stop conditions.
final class RequestState: @unchecked Sendable {
    let id: Int
    let request: GenerationRequest
    let continuation: AsyncThrowingStream<GenerationOutput, Error>.Continuation
    var sampler: Sampler
    var decoder: StreamingDecoder?
    var stopFilter: StopStringFilter
    let stopTokens: Set<Int>
    var completionTokens = 0

    init(id: Int, request: GenerationRequest, continuation: AsyncThrowingStream<GenerationOutput, Error>.Continuation,
         tokenizer: Tokenizer?, stopTokens: Set<Int>) {
        self.id = id
        self.request = request
        self.continuation = continuation
        sampler = Sampler(temperature: request.temperature, topP: request.topP, topK: request.topK,
                          seed: request.seed ?? UInt64.random(in: 0...UInt64.max))
        decoder = tokenizer.map { StreamingDecoder(tokenizer: $0) }
        stopFilter = StopStringFilter(stops: request.stop)
        self.stopTokens = stopTokens
    }

    /// Takes the sampled token; returns its output (with a finish reason if
    /// the request is done).
    func accept(_ token: Int) -> GenerationOutput {
        completionTokens += 1
        var output = GenerationOutput(token: token, text: "", finishReason: nil,
                                      promptTokenCount: request.prompt.count, completionTokenCount: completionTokens)
        if stopTokens.contains(token) {
            // The stop token's own text is not returned (it is special anyway).
            output.text = stopFilter.flush() + (decoder.map { var d = $0; return d.flush() } ?? "")
            output.finishReason = .stop
        } else {
            let (release, stopped) = stopFilter.push(decoder?.push(token) ?? "")
            output.text = release
            if stopped {
                output.finishReason = .stop
            } else if completionTokens >= request.maxTokens {
                let tail = decoder?.flush() ?? ""
                output.text += stopFilter.push(tail).release + stopFilter.flush()
                output.finishReason = .length
            }
        }
        return output
    }
}
