import Foundation
import WeftComm
import WeftModel
import WeftTokenizer

/// The engine loop: every rank runs the same steps. Rank 0 takes work from
/// the intake, lets the scheduler form each step, broadcasts its plan,
/// samples the logits and hands tokens to each request's output stream; the
/// other ranks run the plans they receive.
///
/// Owned by the thread that created the engine (its compute pool pins that
/// thread): nothing here is shared except through `intake` and `monitor`.
final class ServingEngineLoop {
    private let engine: Engine
    private let communicator: Communicator
    private let intake: RequestIntake
    private let monitor: ServingMonitor
    private let endOfSequence: Set<Int>
    /// How many prompt tokens a step may carry besides its decodes.
    private let budget: StepBudget

    // Rank 0's requests.
    private var scheduler: BatchScheduler
    private var live: [Int: LiveRequest] = [:]

    /// A request in the scheduler: its sampler and its output stream.
    private struct LiveRequest {
        var sampler: Sampler
        var stream: GenerationStream
    }

    init(engine: Engine, scheduler: BatchScheduler.Limits, budget: StepBudget, intake: RequestIntake, monitor: ServingMonitor) {
        self.engine = engine
        self.budget = budget
        communicator = engine.communicator
        self.intake = intake
        self.monitor = monitor
        self.scheduler = BatchScheduler(limits: scheduler)
        endOfSequence = Set(engine.config.eosTokenIDs + (engine.tokenizer?.eosTokenIDs ?? []))
        if let moe = engine.config.moe {
            monitor.expectExperts(count: moe.expertCount, ranks: communicator.size, placement: engine.model.plan.moePlacement)
        }
    }

    /// Runs steps until rank 0's stop plan (see `ServingEngine.run`).
    func run() throws {
        do {
            if communicator.isRoot { try runRoot() } else { try runFollower() }
            // Every rank is here after the same stop plan: release MPI
            // resources together now (the engine object may outlive MPI on
            // rank 0, where the HTTP server still holds it).
            engine.close()
            // Nothing is admitted while draining, so normally none are left.
            for admitted in intake.close(failure: nil) { admitted.continuation.finish(throwing: ServingError.shuttingDown) }
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
            if plan.stop { return try checkDrained() }
        }
    }

    /// After the stop plan every request has ended, so no rank's cache may
    /// still list a sequence: a leak (or a plan a rank applied differently)
    /// fails the job on that rank instead of passing unnoticed.
    private func checkDrained() throws {
        let left = engine.model.cache.sequenceCount
        guard left == 0 else {
            throw RuntimeError.invalidInput("rank \(communicator.rank): the KV cache still holds \(left) sequences after every request ended")
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
            monitor.load(waiting: scheduler.waiting.count, running: scheduler.running.count,
                         kvBlocksInUse: scheduler.usedBlocks, kvBlocksCached: scheduler.cachedBlocks,
                         scheduling: scheduler.statistics)
            if plan.stop {
                if let problem = scheduler.violation() { throw RuntimeError.invalidInput("scheduler: \(problem)") }
                return try checkDrained()
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
        try engine.model.cache.apply(releases: plan.releases, allocations: plan.allocations.map { ($0.sequence, $0.blocks) })
        guard !plan.batch.isEmpty else { return .nothing }
        let started = DispatchTime.now()
        let commBefore = engine.runner.communicationSeconds
        monitor.stepBegan(at: started)
        defer {
            // Every rank resets its count; rank 0's is every rank's routing.
            if let load = engine.model.takeExpertLoad(), communicator.isRoot { monitor.routed(load) }
            monitor.stepEnded(seconds: Double(DispatchTime.now().uptimeNanoseconds - started.uptimeNanoseconds) * 1e-9,
                              communicationSeconds: engine.runner.communicationSeconds - commBefore)
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
        let work = intake.take(waitIfIdle: scheduler.isIdle)
        monitor.admitted(promptTokens: work.arrivals.reduce(0) { $0 + $1.request.prompt.count })
        for admitted in work.arrivals {
            let request = admitted.request
            live[admitted.id] = LiveRequest(
                sampler: Sampler(temperature: request.temperature, topP: request.topP, topK: request.topK,
                                 seed: request.seed ?? UInt64.random(in: 0...UInt64.max)),
                stream: GenerationStream(admitted, tokenizer: engine.tokenizer, endOfSequence: endOfSequence))
            scheduler.enqueue(id: admitted.id, prompt: request.prompt.map { Int32($0) }, maxNewTokens: request.maxTokens)
        }
        for id in work.cancellations where live[id] != nil { end(id) }
        if let deadline = work.drainDeadline, Date() >= deadline {
            for id in live.keys.sorted() { end(id, error: ServingError.shuttingDown) }
        }
        var plan = scheduler.nextStep(promptBudget: budget.promptTokens(decodePositions: scheduler.decodePositions))
        if work.drainDeadline != nil && live.isEmpty { plan.stop = true }
        return plan
    }

    /// Samples each sequence's next token and sends the outputs.
    private func sample(_ rows: [[Float]], batch: FlatBatch) {
        let spans = batch.spans.filter { $0.logits != .none }
        var outputs: [(id: Int, output: GenerationOutput)] = []
        for (span, row) in zip(spans, rows) {
            let id = span.sequence
            guard live[id] != nil else { continue }
            let token = live[id]!.sampler.sample(row[...])
            scheduler.append(token: Int32(token), to: id)
            outputs.append((id, live[id]!.stream.accept(token)))
        }
        // Counted before the outputs go out, so a client that has its last
        // token also sees it in the statistics.
        monitor.generated(tokens: outputs.count)
        for (id, output) in outputs {
            live[id]?.stream.send(output)
            if output.finishReason != nil { end(id) }
        }
    }

    /// Ends a request: frees its slot (and its blocks on every rank in the
    /// next step) and finishes its stream, with `error` if given.
    private func end(_ id: Int, error: Error? = nil, cacheable: Bool = true) {
        scheduler.finish(id: id, cacheable: cacheable)
        guard let request = live.removeValue(forKey: id) else { return }
        request.stream.finish(throwing: error)
        intake.ended()
    }

    private func failBatch(_ batch: FlatBatch, error: Error) {
        for id in Set(batch.spans.map(\.sequence)).sorted() {
            end(id, error: ServingError.engineFailed(String(describing: error)), cacheable: false)
        }
    }

    /// The loop cannot go on: every request, taken or not, fails.
    private func failAll(_ message: String) {
        let failure = ServingError.engineFailed(message)
        for admitted in intake.close(failure: message) { admitted.continuation.finish(throwing: failure) }
        for request in live.values { request.stream.finish(throwing: failure) }
        live.removeAll()
    }
}
