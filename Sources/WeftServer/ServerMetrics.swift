import Foundation
import Prometheus
import Synchronization
import WeftRuntime

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
    private let stepSeconds: Gauge
    private let steps: Gauge
    private let communicationSeconds: Gauge
    private let communicationShare: Gauge
    /// Token totals already added to the counters (counters only go up).
    private let countedTokens = Mutex<(prompt: Int, generated: Int)>((0, 0))

    init() {
        promptTokens = registry.makeCounter(name: "weft_prompt_tokens_total", help: "Prompt tokens of admitted requests.")
        generatedTokens = registry.makeCounter(name: "weft_generation_tokens_total", help: "Tokens generated.")
        let latencyBuckets: [Duration] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30].map { .milliseconds(Int64($0 * 1000)) }
        timeToFirstToken = registry.makeDurationHistogram(name: "weft_time_to_first_token_seconds", buckets: latencyBuckets,
                                                          help: "Time from request arrival to its first generated token.")
        interTokenLatency = registry.makeDurationHistogram(name: "weft_inter_token_latency_seconds", buckets: latencyBuckets,
                                                           help: "Time between consecutive generated tokens of a request.")
        queueDepth = registry.makeGauge(name: "weft_queue_depth", help: "Requests waiting for a running slot or KV blocks.")
        runningBatch = registry.makeGauge(name: "weft_running_sequences", help: "Sequences in the running batch.")
        kvBlocksInUse = registry.makeGauge(name: "weft_kv_blocks_in_use", help: "KV cache blocks holding sequences (rank 0; every rank holds the same).")
        kvBlocksTotal = registry.makeGauge(name: "weft_kv_blocks_total", help: "KV cache blocks.")
        steps = registry.makeGauge(name: "weft_steps_total", help: "Model steps run (each a flattened batch on every rank).")
        stepSeconds = registry.makeGauge(name: "weft_step_seconds_total", help: "Seconds spent in model steps.")
        communicationSeconds = registry.makeGauge(name: "weft_step_communication_seconds_total",
                                                  help: "Seconds of model steps spent in, or waiting for, the per-layer reductions (communication not hidden by overlap).")
        communicationShare = registry.makeGauge(name: "weft_step_communication_share",
                                                help: "Share of step time spent in communication since start (0-1).")
    }

    /// Counts a finished request by endpoint and HTTP status.
    func countRequest(endpoint: String, status: Int) {
        let key = "\(endpoint) \(status)"
        let counter = requestCounters.withLock { counters in
            if let counter = counters[key] { return counter }
            let counter = registry.makeCounter(name: "weft_requests_total", labels: [("endpoint", endpoint), ("status", String(status))],
                                               help: "HTTP requests by endpoint and status.")
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
            stepSeconds.set(stats.stepSeconds)
            steps.set(Double(stats.steps))
            communicationSeconds.set(stats.communicationSeconds)
            communicationShare.set(stats.stepSeconds > 0 ? stats.communicationSeconds / stats.stepSeconds : 0)
            countedTokens.withLock { counted in
                promptTokens.increment(by: Int64(max(stats.promptTokens - counted.prompt, 0)))
                generatedTokens.increment(by: Int64(max(stats.generatedTokens - counted.generated, 0)))
                counted = (max(stats.promptTokens, counted.prompt), max(stats.generatedTokens, counted.generated))
            }
        }
        return registry.emitToBuffer()
    }
}
