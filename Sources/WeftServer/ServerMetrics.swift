import Foundation
import Prometheus
import Synchronization
import WeftRuntime

/// `weft_<name>`, with its help text.
private func weft(_ name: String, _ help: String) -> MetricNameDescriptor {
    MetricNameDescriptor(namespace: "weft", metricName: name, unitName: "", helpText: help)
}

/// The server's Prometheus metrics (`GET /metrics`). Request-level numbers
/// are recorded as responses go out; engine gauges are read from the
/// engine's statistics at scrape time.
final class ServerMetrics: Sendable {
    let registry = PrometheusCollectorRegistry()
    private let requestCounters = Mutex<[String: Counter]>([:])
    private let promptTokens: Counter
    private let generatedTokens: Counter
    private let timeToFirstToken: DurationHistogram
    private let interTokenLatency: DurationHistogram
    private let queueDepth: Gauge
    private let runningBatch: Gauge
    private let kvBlocksInUse: Gauge
    private let kvBlocksTotal: Gauge
    private let prefixCachedBlocks: Gauge
    private let prefixQueriedTokens: Counter
    private let prefixHitTokens: Counter
    private let prefixHitRate: Gauge
    private let preemptions: Counter
    private let stepSeconds: Counter
    private let steps: Counter
    private let communicationSeconds: Counter
    private let communicationShare: Gauge
    /// The engine's totals already added to the counters (counters only go up).
    private let counted = Mutex(ServingStats())
    /// A mixture-of-experts model's metrics, made at the first scrape that has its load.
    private let expertMetrics = Mutex<ExpertMetrics?>(nil)

    /// `weft_moe_*`: routed tokens per expert and per rank (counters), the
    /// last step's imbalance (gauge) and the placement (info gauge); the
    /// per-step imbalance histogram is written from the engine's bucket
    /// counts (`expertHistogram`).
    private struct ExpertMetrics {
        let perExpert: [Counter]
        let perRank: [Counter]
        let imbalance: Gauge
        let placement: Gauge
    }

    init() {
        promptTokens = registry.makeCounter(descriptor: weft("prompt_tokens_total", "Prompt tokens of admitted requests."))
        generatedTokens = registry.makeCounter(descriptor: weft("generation_tokens_total", "Tokens generated."))
        let latencyBuckets: [Duration] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30].map { .milliseconds(Int64($0 * 1000)) }
        timeToFirstToken = registry.makeDurationHistogram(descriptor: weft("time_to_first_token_seconds", "Time from request arrival to its first generated token."), buckets: latencyBuckets)
        interTokenLatency = registry.makeDurationHistogram(descriptor: weft("inter_token_latency_seconds", "Time between consecutive generated tokens of a request."), buckets: latencyBuckets)
        queueDepth = registry.makeGauge(descriptor: weft("queue_depth", "Requests waiting for a running slot or KV blocks."))
        runningBatch = registry.makeGauge(descriptor: weft("running_sequences", "Sequences in the running batch."))
        kvBlocksInUse = registry.makeGauge(descriptor: weft("kv_blocks_in_use", "KV cache blocks holding sequences (rank 0; every rank holds the same)."))
        kvBlocksTotal = registry.makeGauge(descriptor: weft("kv_blocks_total", "KV cache blocks."))
        prefixCachedBlocks = registry.makeGauge(descriptor: weft("prefix_cache_blocks", "KV cache blocks holding a cached prefix (held by sequences or kept for reuse)."))
        prefixQueriedTokens = registry.makeCounter(descriptor: weft("prefix_cache_queried_tokens_total", "Tokens of admitted sequences looked up in the prefix cache (recomputes after preemption included)."))
        prefixHitTokens = registry.makeCounter(descriptor: weft("prefix_cache_hit_tokens_total", "Looked-up tokens found in the prefix cache (not computed again)."))
        prefixHitRate = registry.makeGauge(descriptor: weft("prefix_cache_hit_rate", "Share of looked-up tokens found in the prefix cache since start (0-1)."))
        preemptions = registry.makeCounter(descriptor: weft("preemptions_total", "Sequences preempted for KV blocks (freed and requeued to compute again)."))
        steps = registry.makeCounter(descriptor: weft("steps_total", "Model steps run (each a flattened batch on every rank)."))
        stepSeconds = registry.makeCounter(descriptor: weft("step_seconds_total", "Seconds spent in model steps."))
        communicationSeconds = registry.makeCounter(descriptor: weft("step_communication_seconds_total", "Seconds of model steps spent in, or waiting for, the per-layer reductions (communication not hidden by overlap)."))
        communicationShare = registry.makeGauge(descriptor: weft("step_communication_share", "Share of step time spent in communication since start (0-1)."))
    }

    /// Counts a finished request by endpoint and HTTP status.
    func countRequest(endpoint: String, status: Int) {
        let key = "\(endpoint) \(status)"
        let counter = requestCounters.withLock { counters in
            if let counter = counters[key] { return counter }
            let counter = registry.makeCounter(descriptor: weft("requests_total", "HTTP requests by endpoint and status."), labels: [("endpoint", endpoint), ("status", String(status))])
            counters[key] = counter
            return counter
        }
        counter.increment()
    }

    func recordFirstToken(after duration: Duration) { timeToFirstToken.record(duration) }
    func recordInterToken(_ duration: Duration) { interTokenLatency.record(duration) }

    /// Prometheus text, with the engine's gauges refreshed.
    func render(engine: ServingEngine?) -> [UInt8] {
        if let engine {
            let stats = engine.statistics
            queueDepth.set(Double(stats.waitingRequests))
            runningBatch.set(Double(stats.runningSequences))
            kvBlocksInUse.set(Double(stats.kvBlocksInUse))
            kvBlocksTotal.set(Double(stats.kvBlocksTotal))
            prefixCachedBlocks.set(Double(stats.kvBlocksCached))
            prefixHitRate.set(stats.prefixQueriedTokens > 0 ? Double(stats.prefixHitTokens) / Double(stats.prefixQueriedTokens) : 0)
            communicationShare.set(stats.stepSeconds > 0 ? stats.communicationSeconds / stats.stepSeconds : 0)
            // The engine keeps totals; counters take the growth since the last scrape.
            counted.withLock { last in
                promptTokens.increment(by: Int64(max(stats.promptTokens - last.promptTokens, 0)))
                generatedTokens.increment(by: Int64(max(stats.generatedTokens - last.generatedTokens, 0)))
                steps.increment(by: Int64(max(stats.steps - last.steps, 0)))
                prefixQueriedTokens.increment(by: Int64(max(stats.prefixQueriedTokens - last.prefixQueriedTokens, 0)))
                prefixHitTokens.increment(by: Int64(max(stats.prefixHitTokens - last.prefixHitTokens, 0)))
                preemptions.increment(by: Int64(max(stats.preemptions - last.preemptions, 0)))
                stepSeconds.increment(by: max(stats.stepSeconds - last.stepSeconds, 0))
                communicationSeconds.increment(by: max(stats.communicationSeconds - last.communicationSeconds, 0))
                if let moe = stats.moe { recordExperts(moe, since: last.moe) }
                last = stats
            }
            if let moe = stats.moe {
                var text = registry.emitToBuffer()
                text += Array(Self.expertHistogram(moe).utf8)
                return text
            }
        }
        return registry.emitToBuffer()
    }

    /// Adds the growth of the engine's expert counts since `last` (called under `counted`'s lock).
    private func recordExperts(_ moe: ExpertLoadStats, since last: ExpertLoadStats?) {
        let metrics = expertMetrics.withLock { metrics -> ExpertMetrics in
            if let metrics, metrics.perExpert.count == moe.routedPerExpert.count, metrics.perRank.count == moe.routedPerRank.count {
                return metrics
            }
            let made = ExpertMetrics(
                perExpert: moe.routedPerExpert.indices.map { e in
                    registry.makeCounter(descriptor: weft("moe_routed_tokens_total", "Tokens routed to each expert of a mixture-of-experts model: one per (token, chosen expert) pair in each sparse layer, summed over layers."),
                                         labels: [("expert", String(e))])
                },
                perRank: moe.routedPerRank.indices.map { r in
                    registry.makeCounter(descriptor: weft("moe_rank_routed_tokens_total", "Routed tokens each rank computed: those of its own experts under expert parallelism (placement ep), every routed token (a slice of each expert) under tensor-parallel experts (tp)."),
                                         labels: [("rank", String(r))])
                },
                imbalance: registry.makeGauge(descriptor: weft("moe_load_imbalance", "The last step's routed tokens on the critical path over a balanced step's: each sparse-layer pass's busiest rank, summed, over the mean rank's sum (1: balanced; always 1 with tensor-parallel experts).")),
                placement: registry.makeGauge(descriptor: weft("moe_placement_info", "The placement of routed experts (tp or ep) and the ranks they are spread over (value 1)."),
                                              labels: [("placement", moe.placement.rawValue), ("ranks", String(moe.ranks))]))
            metrics = made
            return made
        }
        let before = last?.routedPerExpert.count == moe.routedPerExpert.count ? last! : nil
        for (e, counter) in metrics.perExpert.enumerated() {
            counter.increment(by: Int64(max(moe.routedPerExpert[e] - (before?.routedPerExpert[e] ?? 0), 0)))
        }
        for (r, counter) in metrics.perRank.enumerated() {
            counter.increment(by: Int64(max(moe.routedPerRank[r] - (before?.routedPerRank[r] ?? 0), 0)))
        }
        metrics.imbalance.set(moe.lastStepImbalance)
        metrics.placement.set(1.0)
    }

    /// `weft_moe_step_load_imbalance`, a histogram of every step's imbalance,
    /// in Prometheus text from the engine's cumulative bucket counts.
    static func expertHistogram(_ moe: ExpertLoadStats) -> String {
        let name = "weft_moe_step_load_imbalance"
        var text = "# HELP \(name) Per step of a mixture-of-experts model that routed tokens: each sparse-layer pass's busiest rank's routed tokens, summed, over the mean rank's sum (1: balanced).\n"
        text += "# TYPE \(name) histogram\n"
        for (bound, count) in zip(ExpertLoadStats.imbalanceBuckets, moe.imbalanceBucketCounts) {
            text += "\(name)_bucket{le=\"\(bound)\"} \(count)\n"
        }
        text += "\(name)_bucket{le=\"+Inf\"} \(moe.steps)\n"
        text += "\(name)_sum \(moe.imbalanceSum)\n"
        text += "\(name)_count \(moe.steps)\n"
        return text
    }
}
