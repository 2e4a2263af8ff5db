import Dispatch
import Synchronization

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

/// What the engine loop reports as it runs: the statistics, and when the
/// step now running began (for `/health`). Written by the loop, read by
/// anyone.
final class ServingMonitor: Sendable {
    private struct State {
        var stats = ServingStats()
        /// When the step now running began (nil between steps).
        var stepStarted: DispatchTime?
    }

    private let state: Mutex<State>

    init(kvBlocksTotal: Int) {
        var stats = ServingStats()
        stats.kvBlocksTotal = kvBlocksTotal
        state = Mutex(State(stats: stats))
    }

    var stats: ServingStats { state.withLock { $0.stats } }

    /// Seconds the step now running has taken so far (nil between steps).
    var currentStepSeconds: Double? {
        state.withLock { state in
            // Read under the lock: the start was stored before, so this is later.
            state.stepStarted.map { Double(DispatchTime.now().uptimeNanoseconds - $0.uptimeNanoseconds) * 1e-9 }
        }
    }

    func stepBegan(at time: DispatchTime) {
        state.withLock { $0.stepStarted = time }
    }

    func stepEnded(seconds: Double, communicationSeconds: Double) {
        state.withLock {
            $0.stepStarted = nil
            $0.stats.steps += 1
            $0.stats.stepSeconds += seconds
            $0.stats.communicationSeconds += communicationSeconds
        }
    }

    func admitted(promptTokens: Int) {
        state.withLock { $0.stats.promptTokens += promptTokens }
    }

    func generated(tokens: Int) {
        state.withLock { $0.stats.generatedTokens += tokens }
    }

    /// The batch after a step: sequences waiting in and running from the scheduler, blocks in use.
    func load(waiting: Int, running: Int, kvBlocksInUse: Int) {
        state.withLock {
            $0.stats.waitingRequests = waiting
            $0.stats.runningSequences = running
            $0.stats.kvBlocksInUse = kvBlocksInUse
        }
    }
}
