import Dispatch
import Synchronization
import WeftModel

/// A snapshot of the engine's load, for metrics.
public struct ServingStats: Sendable {
    public var waitingRequests = 0
    public var runningSequences = 0
    /// Blocks held by running sequences, and blocks holding a cached prefix
    /// (held or kept for reuse; the two overlap by the shared ones).
    public var kvBlocksInUse = 0
    public var kvBlocksCached = 0
    public var kvBlocksTotal = 0
    /// Prompt tokens looked up in the prefix cache at admission (a preempted
    /// sequence's recompute included) and the part found there.
    public var prefixQueriedTokens = 0
    public var prefixHitTokens = 0
    /// Sequences preempted (blocks freed, requeued to compute again).
    public var preemptions = 0
    public var steps = 0
    /// Seconds in model steps, and the part of them spent in (not hidden
    /// behind) the per-layer reductions.
    public var stepSeconds = 0.0
    public var communicationSeconds = 0.0
    public var promptTokens = 0
    public var generatedTokens = 0
    /// Routed-expert load of a mixture-of-experts model (nil: dense).
    public var moe: ExpertLoadStats?

    public init() {}
}

/// How a mixture-of-experts model's routed tokens fell on experts and
/// ranks since start, and how uneven each step was. A routed token is one
/// (token, chosen expert) pair in one sparse layer, summed over the sparse
/// layers; routing is the same on every rank, so rank 0 counts for all.
public struct ExpertLoadStats: Sendable, Equatable {
    /// Upper bounds of the per-step imbalance histogram (the last bucket is +Inf).
    public static let imbalanceBuckets: [Double] = [1, 1.05, 1.1, 1.25, 1.5, 2, 3, 4]

    public var placement: TensorParallelPlan.MoEPlacement
    public var ranks: Int
    public var routedPerExpert: [Int]
    /// Routed tokens each rank computed: its own experts' under expert
    /// parallelism, every routed token (a slice of each) with tensor-parallel experts.
    public var routedPerRank: [Int]
    /// Steps that routed at least one token, and their imbalances (each
    /// sparse-layer pass's busiest rank's routed tokens, summed, over the
    /// mean rank's: `ExpertLoad.imbalance`): the last, the sum, and
    /// how many fell at or below each of `imbalanceBuckets` (cumulative, as
    /// Prometheus counts buckets).
    public var steps = 0
    /// Over every sparse-layer pass since start: the busiest rank's routed
    /// tokens and every rank's (`ExpertLoad`'s critical-path counts).
    public var busiestRankRouted = 0
    public var allRanksRouted = 0
    public var lastStepImbalance = 1.0
    public var imbalanceSum = 0.0
    public var imbalanceBucketCounts: [Int]

    public init(expertCount: Int, ranks: Int, placement: TensorParallelPlan.MoEPlacement) {
        self.placement = placement
        self.ranks = ranks
        routedPerExpert = [Int](repeating: 0, count: expertCount)
        routedPerRank = [Int](repeating: 0, count: ranks)
        imbalanceBucketCounts = [Int](repeating: 0, count: Self.imbalanceBuckets.count)
    }

    /// Adds one step's load.
    public mutating func add(_ load: ExpertLoad) {
        guard load.perExpert.count == routedPerExpert.count, load.perExpert.contains(where: { $0 > 0 }) else { return }
        for (e, n) in load.perExpert.enumerated() { routedPerExpert[e] += n }
        for (r, n) in load.perRank(size: ranks, placement: placement).enumerated() { routedPerRank[r] += n }
        let imbalance = load.imbalance(size: ranks, placement: placement)
        busiestRankRouted += load.busiestRankRouted
        allRanksRouted += load.allRanksRouted
        steps += 1
        lastStepImbalance = imbalance
        imbalanceSum += imbalance
        for (i, bound) in Self.imbalanceBuckets.enumerated() where imbalance <= bound { imbalanceBucketCounts[i] += 1 }
    }

    /// The imbalance of everything routed since start: each layer pass's
    /// busiest rank summed, over the mean rank's sum (1: balanced).
    public var overallImbalance: Double {
        allRanksRouted > 0 ? Double(busiestRankRouted) * Double(ranks) / Double(allRanksRouted) : 1
    }
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

    /// A mixture-of-experts model: its load is reported from the start (zeros until the first step).
    func expectExperts(count: Int, ranks: Int, placement: TensorParallelPlan.MoEPlacement) {
        state.withLock { $0.stats.moe = ExpertLoadStats(expertCount: count, ranks: ranks, placement: placement) }
    }

    /// One step's routed-expert load (rank 0's count, which is every rank's routing).
    func routed(_ load: ExpertLoad) {
        state.withLock { $0.stats.moe?.add(load) }
    }

    func admitted(promptTokens: Int) {
        state.withLock { $0.stats.promptTokens += promptTokens }
    }

    func generated(tokens: Int) {
        state.withLock { $0.stats.generatedTokens += tokens }
    }

    /// The batch after a step: sequences waiting in and running from the
    /// scheduler, blocks in use and cached, and the scheduler's counters.
    func load(waiting: Int, running: Int, kvBlocksInUse: Int, kvBlocksCached: Int, scheduling: BatchScheduler.Statistics) {
        state.withLock {
            $0.stats.waitingRequests = waiting
            $0.stats.runningSequences = running
            $0.stats.kvBlocksInUse = kvBlocksInUse
            $0.stats.kvBlocksCached = kvBlocksCached
            $0.stats.prefixQueriedTokens = scheduling.queriedTokens
            $0.stats.prefixHitTokens = scheduling.hitTokens
            $0.stats.preemptions = scheduling.preemptions
        }
    }
}
