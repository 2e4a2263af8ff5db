import ArgumentParser
import Foundation
import Logging
import Synchronization
import WeftComm
import WeftRuntime
import WeftServer

struct Serve: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Serve the model over an OpenAI-compatible HTTP API (rank 0 listens; every rank computes).",
        discussion: """
        Run as `mpirun -np N weft serve --model DIR`. Endpoints: POST /v1/completions, \
        POST /v1/chat/completions (both with stream: true), GET /v1/models, GET /health, \
        GET /metrics, POST /tokenize, POST /detokenize. SIGTERM or SIGINT to the ranks \
        (or to mpirun, which forwards it) drains in-flight requests for --drain-timeout \
        seconds, then every rank exits 0; mpirun kills ranks 1 s after forwarding unless \
        started with --mca odls_base_sigkill_timeout SECONDS.
        """)

    @OptionGroup var options: ModelOptions

    @Option(help: "Address to listen on (default: loopback only).")
    var host = "127.0.0.1"

    @Option(help: "Port to listen on (0: any free port; the chosen one is printed).")
    var port = 8000

    @Option(help: "Require `Authorization: Bearer KEY` on /v1/*, /tokenize and /detokenize (default: $WEFT_API_KEY if set).")
    var apiKey: String?

    @Option(help: "Model name clients send and /v1/models lists (default: the model folder's name).")
    var servedModelName: String?

    @Option(help: "Most sequences in the running batch.")
    var maxNumSeqs = 16

    @Option(help: "Most tokens per step (decodes plus prompt chunks).")
    var maxBatchTokens = 256

    @Option(help: "Longest prompt + completion (default: the model's max_position_embeddings, at most 4096).")
    var maxModelLen: Int?

    @Option(help: "Requests that may wait for a slot before new ones get 503.")
    var maxQueue = 256

    @Option(help: "KV cache blocks (default: enough for --max-num-seqs sequences of --max-model-len).")
    var kvBlocks: Int?

    @Option(help: "How many prompt tokens a step that also decodes may carry: adaptive (as many as keep the cost model's predicted step within --step-time-ratio times the decode-only step, at least 16 or the KV block size; the whole --max-batch-tokens when nothing decodes) or fixed (always up to --max-batch-tokens: faster prefill, but decoding streams stall while a long prompt is cut in).")
    var stepBudget = "adaptive"

    @Option(help: "With --step-budget adaptive: the longest predicted step with prompt chunks, as a multiple of the decode-only step (1...1000; default 2).")
    var stepTimeRatio: Double?

    @Flag(help: "Turn off automatic prefix caching (full KV blocks kept after a request ends and reused by later requests with the same prefix).")
    var noPrefixCache = false

    @Option(help: "Largest request body, bytes.")
    var maxBodyBytes = 4 << 20

    @Option(help: "Seconds in-flight requests may finish after SIGTERM/SIGINT before they are cancelled.")
    var drainTimeout: Double = 5

    @Option(help: "Seconds a connection may stay idle (keep-alive, or a request head or body not arriving) before it is closed.")
    var idleTimeout: Double = 30

    @Option(help: "Seconds one chat-template rendering may take (the template comes with the model folder).")
    var templateTimeout: Double = 2

    func validate() throws {
        if !(0...65535).contains(port) { throw ValidationError("--port must be 0...65535, got \(port)") }
        if !(1...65536).contains(maxNumSeqs) { throw ValidationError("--max-num-seqs must be 1...65536, got \(maxNumSeqs)") }
        if !(1...(1 << 20)).contains(maxBatchTokens) { throw ValidationError("--max-batch-tokens must be 1...\(1 << 20), got \(maxBatchTokens)") }
        if let maxModelLen, !(2...(1 << 24)).contains(maxModelLen) { throw ValidationError("--max-model-len must be 2...\(1 << 24), got \(maxModelLen)") }
        if !(0...(1 << 20)).contains(maxQueue) { throw ValidationError("--max-queue must be 0...\(1 << 20), got \(maxQueue)") }
        if let kvBlocks, !(1...Int(Int32.max)).contains(kvBlocks) { throw ValidationError("--kv-blocks must be 1...\(Int32.max), got \(kvBlocks)") }
        if !(1024...(1 << 30)).contains(maxBodyBytes) { throw ValidationError("--max-body-bytes must be 1024...\(1 << 30), got \(maxBodyBytes)") }
        if !(drainTimeout >= 0 && drainTimeout <= 86_400) { throw ValidationError("--drain-timeout must be 0...86400 seconds, got \(drainTimeout)") }
        if !(idleTimeout > 0 && idleTimeout <= 86_400) { throw ValidationError("--idle-timeout must be > 0 and <= 86400 seconds, got \(idleTimeout)") }
        if !(templateTimeout > 0 && templateTimeout <= 3_600) { throw ValidationError("--template-timeout must be > 0 and <= 3600 seconds, got \(templateTimeout)") }
        _ = try parsedStepTimeTarget()
        if let apiKey, apiKey.isEmpty { throw ValidationError("--api-key must not be empty") }
        _ = try options.parsedMode(allowing: options.allowedModes)
    }

    func parsedStepTimeTarget() throws -> StepTimeTarget {
        switch stepBudget {
        case "fixed":
            if stepTimeRatio != nil { throw ValidationError("--step-time-ratio needs --step-budget adaptive") }
            return .fixed
        case "adaptive":
            let target = stepTimeRatio.map { StepTimeTarget.adaptive(ratio: $0) } ?? .default
            do { try target.check() } catch { throw ParameterFlags.asOption(error) }
            return target
        default:
            throw ValidationError("--step-budget must be adaptive or fixed, got \(stepBudget)")
        }
    }

    func run() throws {
        var serving = ServingConfiguration(engine: try options.engineConfiguration())
        serving.maxRunningSequences = maxNumSeqs
        serving.maxBatchTokens = maxBatchTokens
        serving.maxModelLength = maxModelLen
        serving.maxQueuedRequests = maxQueue
        serving.kvBlocks = kvBlocks
        serving.stepTimeTarget = try parsedStepTimeTarget()
        serving.prefixCaching = !noPrefixCache
        let modelName = servedModelName
            ?? options.model.map { URL(fileURLWithPath: $0).standardizedFileURL.lastPathComponent }
            ?? URL(fileURLWithPath: options.randomWeights!).deletingPathExtension().lastPathComponent
        var server = ServerConfiguration(modelName: modelName)
        server.host = host
        server.port = port
        server.apiKey = apiKey ?? ProcessInfo.processInfo.environment["WEFT_API_KEY"].flatMap { $0.isEmpty ? nil : $0 }
        server.maxBodyBytes = maxBodyBytes
        server.drainSeconds = drainTimeout
        server.idleTimeoutSeconds = idleTimeout
        server.templateLimits.timeout = .milliseconds(Int64(templateTimeout * 1000))
        let frontEnd = HTTPFrontEnd(configuration: server)
        Session.run { communicator in
            try ServingJob.serve(serving, communicator: communicator, frontEnd: frontEnd)
        }
    }
}

/// Rank 0's OpenAI server in front of the engine, with the lines `weft serve`
/// prints as it starts and stops.
final class HTTPFrontEnd: ServingFrontEnd {
    let configuration: ServerConfiguration
    private var modelName: String { configuration.modelName }
    private var host: String { configuration.host }
    /// Set by `prepare`.
    private var http: OpenAIServer?
    private var running: HTTPServerRun?
    private var listeningPort = 0

    init(configuration: ServerConfiguration) {
        self.configuration = configuration
    }

    /// Listens before the model loads (so /health answers 503 while loading);
    /// a port in use fails every rank after the load.
    func prepare() throws {
        var logger = Logger(label: "weft.server")
        logger.logLevel = .warning
        let http = OpenAIServer(configuration: configuration, logger: logger)
        let running = HTTPServerRun(http)
        (self.http, self.running) = (http, running)
        let listening = running.waitUntilListening()
        if let error = listening.error {
            throw RuntimeError.invalidOption("--port", "cannot listen on \(host):\(configuration.port): \(error)")
        }
        listeningPort = listening.port
        Output.write("weft: listening on http://\(host):\(listening.port) (loading \(modelName); /health answers 503 until ready)\n")
    }

    func start(_ engine: ServingEngine) throws {
        http?.attach(engine)
        let ranks = engine.communicator.size
        Output.write("weft: ready: serving \(modelName) on http://\(host):\(listeningPort) (\(ranks) rank\(ranks == 1 ? "" : "s"), loaded in \(String(format: "%.1f", engine.loadSeconds)) s)\n")
    }

    func stopped(error: Error?) {
        http?.stop()
        if error != nil {
            // Let clients receive their error events before the job ends.
            running?.wait(seconds: 3)
        } else {
            running?.wait(seconds: 30)
            Output.write("weft: stopped\n")
        }
    }
}

/// The HTTP server running on Swift concurrency threads while the calling
/// thread runs the engine loop.
final class HTTPServerRun: Sendable {
    struct Listening: Sendable {
        var port = 0
        var error: String?
    }

    private let listening = Mutex<Listening?>(nil)
    private let started = DispatchSemaphore(value: 0)
    private let finished = DispatchSemaphore(value: 0)

    init(_ server: OpenAIServer) {
        Task.detached { [self] in
            do {
                try await server.run { port in
                    self.listening.withLock { $0 = Listening(port: port) }
                    self.started.signal()
                }
            } catch {
                let first = listening.withLock { state -> Bool in
                    guard state == nil else { return false }
                    state = Listening(error: String(describing: error))
                    return true
                }
                if first { started.signal() }
            }
            finished.signal()
        }
    }

    func waitUntilListening() -> Listening {
        started.wait()
        return listening.withLock { $0 ?? Listening(error: "the server did not start") }
    }

    func wait(seconds: Double) {
        _ = finished.wait(timeout: .now() + seconds)
    }
}
