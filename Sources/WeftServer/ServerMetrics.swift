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
    private let stepSeconds: Counter
    private let steps: Counter
    private let communicationSeconds: Counter
    private let communicationShare: Gauge
    /// The engine's totals already added to the counters (counters only go up).
    private let counted = Mutex(ServingStats())

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
            communicationShare.set(stats.stepSeconds > 0 ? stats.communicationSeconds / stats.stepSeconds : 0)
            // The engine keeps totals; counters take the growth since the last scrape.
            counted.withLock { last in
                promptTokens.increment(by: Int64(max(stats.promptTokens - last.promptTokens, 0)))
                generatedTokens.increment(by: Int64(max(stats.generatedTokens - last.generatedTokens, 0)))
                steps.increment(by: Int64(max(stats.steps - last.steps, 0)))
                stepSeconds.increment(by: max(stats.stepSeconds - last.stepSeconds, 0))
                communicationSeconds.increment(by: max(stats.communicationSeconds - last.communicationSeconds, 0))
                last = stats
            }
        }
        return registry.emitToBuffer()
    }
}
