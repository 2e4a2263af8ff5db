import Foundation
import Hummingbird
import NIOCore
import Logging
import ServiceLifecycle
import Synchronization
import WeftChatTemplate
import WeftRuntime
import WeftTokenizer

/// Where and how the HTTP server listens.
public struct ServerConfiguration: Sendable {
    /// Address to bind; loopback unless told otherwise.
    public var host = "127.0.0.1"
    /// Port; 0 picks a free one (reported through `onListening`).
    public var port = 8000
    /// When set, /v1/*, /tokenize and /detokenize need `Authorization: Bearer <key>`.
    public var apiKey: String?
    /// Largest request body accepted, bytes.
    public var maxBodyBytes = 4 << 20
    /// The model name clients use (`model` field, /v1/models).
    public var modelName: String
    /// On SIGTERM/SIGINT: seconds in-flight requests may run before they are cancelled.
    public var drainSeconds: Double = 5
    /// A connection that sends nothing (no complete request head, no body
    /// part) and awaits no answer for this long is closed, seconds. Bounds
    /// idle keep-alive connections and clients that never finish a header.
    public var idleTimeoutSeconds: Double = 30
    /// What rendering the model's chat template may cost per request (it
    /// comes with the model folder, so it is not trusted).
    public var templateLimits = ChatTemplate.Limits.default

    public init(modelName: String) {
        self.modelName = modelName
    }
}

/// OpenAI-compatible HTTP front end of a `ServingEngine`, on rank 0.
///
/// The server listens before the model is loaded (`/health` answers 503
/// until `attach` hands it the engine). SIGTERM or SIGINT stop it gracefully:
/// new requests get 503, in-flight ones may finish for `drainSeconds`, then
/// the engine is shut down on every rank and `run` returns.
public final class OpenAIServer: Sendable {
    public let configuration: ServerConfiguration
    let metrics = ServerMetrics()
    private let state = Mutex<State>(State())
    private let logger: Logger

    struct State {
        var engine: ServingEngine?
        var template: ChatTemplate?
        var templateError: String?
        var shutdownRequested = false
        var group: ServiceGroup?
    }

    public init(configuration: ServerConfiguration, logger: Logger = Logger(label: "weft.server")) {
        self.configuration = configuration
        self.logger = logger
    }

    /// Makes the server ready: requests now go to `engine`.
    public func attach(_ engine: ServingEngine) {
        var template: ChatTemplate?
        var templateError: String?
        if let source = engine.tokenizer?.chatTemplate {
            do { template = try ChatTemplate(source) } catch { templateError = "the model's chat_template does not parse: \(error)" }
        }
        let shutdown = state.withLock { state in
            state.engine = engine
            state.template = template
            state.templateError = templateError
            return state.shutdownRequested
        }
        if shutdown { engine.shutdown(drain: 0) }
    }

    /// Asks the server to stop (as SIGTERM does).
    public func stop() {
        let group = state.withLock { state -> ServiceGroup? in
            state.shutdownRequested = true
            return state.group
        }
        if let group { Task { await group.triggerGracefulShutdown() } }
    }

    /// Serves until SIGTERM/SIGINT or `stop()`. `onListening` receives the port.
    public func run(onListening: @escaping @Sendable (Int) -> Void = { _ in }) async throws {
        let router = Router()
        addRoutes(to: router)
        let idle = TimeAmount.nanoseconds(Int64(min(max(configuration.idleTimeoutSeconds, 0.001), 86_400) * 1e9))
        let app = Application(router: router,
                              server: .http1(configuration: .init(idleTimeout: idle)),
                              configuration: .init(address: .hostname(configuration.host, port: configuration.port), serverName: "weft"),
                              onServerRunning: { channel in onListening(channel.localAddress?.port ?? 0) },
                              logger: logger)
        let group = ServiceGroup(configuration: .init(services: [.init(service: app), .init(service: EngineDrain(server: self))],
                                                      gracefulShutdownSignals: [.sigterm, .sigint, .sigusr1], logger: logger))
        let stopNow = state.withLock { state -> Bool in
            state.group = group
            return state.shutdownRequested
        }
        if stopNow { await group.triggerGracefulShutdown() }
        try await group.run()
    }

    /// Shut down before the HTTP server (services stop in reverse order): the
    /// engine drains while the server still answers (new requests get 503).
    struct EngineDrain: Service {
        let server: OpenAIServer
        func run() async throws {
            try? await gracefulShutdown()
            await server.drainEngine()
        }
    }

    func drainEngine() async {
        let engine = state.withLock { state -> ServingEngine? in
            state.shutdownRequested = true
            return state.engine
        }
        guard let engine else { return }   // still loading: `attach` shuts it down
        engine.shutdown(drain: configuration.drainSeconds)
        while !engine.hasStopped { try? await Task.sleep(for: .milliseconds(20)) }
    }

    // MARK: Routes

    private func addRoutes(to router: Router<BasicRequestContext>) {
        router.get("/health") { [self] _, _ -> Response in
            let (engine, stopping) = state.withLock { ($0.engine, $0.shutdownRequested) }
            func unavailable(_ text: String) -> Response {
                Response(status: .serviceUnavailable, headers: [.contentType: "text/plain"], body: .init(byteBuffer: ByteBuffer(string: text + "\n")))
            }
            guard let engine else { return unavailable(stopping ? "shutting down" : "loading") }
            switch engine.health {
            case .ready:
                return stopping ? unavailable("shutting down")
                    : Response(status: .ok, headers: [.contentType: "text/plain"], body: .init(byteBuffer: ByteBuffer(string: "ok\n")))
            case .stalled(let seconds):
                return unavailable(String(format: "stalled: the current step has run %.0f s (a rank stopped advancing)", seconds))
            case .failed(let message): return unavailable("failed: \(message)")
            case .stopped: return unavailable("shutting down")
            }
        }
        router.get("/metrics") { [self] _, _ -> Response in
            let engine = state.withLock { $0.engine }
            return Response(status: .ok, headers: [.contentType: "text/plain; version=0.0.4"],
                            body: .init(byteBuffer: ByteBuffer(bytes: metrics.render(engine: engine))))
        }
        router.get("/v1/models") { [self] request, _ -> Response in
            await handle("models", request) { engine, _, _ in
                JSON.response(ModelList(data: [.init(id: configuration.modelName, created: Int(Date().timeIntervalSince1970),
                                                     max_model_len: engine.maxModelLength)]))
            }
        }
        router.post("/v1/completions") { [self] request, context -> Response in
            await handle("completions", request) { engine, body, watch in try await completions(engine, body, watch) }
        }
        router.post("/v1/chat/completions") { [self] request, context -> Response in
            await handle("chat_completions", request) { engine, body, watch in try await chatCompletions(engine, body, watch) }
        }
        router.post("/tokenize") { [self] request, context -> Response in
            await handle("tokenize", request) { engine, body, _ in try await tokenize(engine, body) }
        }
        router.post("/detokenize") { [self] request, context -> Response in
            await handle("detokenize", request) { engine, body, _ in try detokenize(engine, body) }
        }
    }

    /// Common steps of every API request: authentication, readiness, the
    /// body (size-limited), and turning any error into an OpenAI error object.
    private func handle(_ endpoint: String, _ request: Request,
                        _ body: (ServingEngine, Data, DisconnectWatch) async throws -> Response) async -> Response {
        let response: Response
        do {
            if let key = configuration.apiKey {
                let given = request.headers[.authorization] ?? ""
                guard constantTimeEqual(given, "Bearer \(key)") else { throw APIError.unauthorized() }
            }
            let engine = try state.withLock { state -> ServingEngine in
                if state.shutdownRequested { throw APIError.unavailable("the server is shutting down", retryAfter: 5) }
                guard let engine = state.engine else { throw APIError.unavailable("the model is still loading", retryAfter: 5) }
                return engine
            }
            if engine.hasStopped { throw APIError.unavailable("the engine has stopped", retryAfter: 5) }
            if let length = request.headers[.contentLength].flatMap(Int.init), length > configuration.maxBodyBytes {
                throw APIError.bodyTooLarge(limit: configuration.maxBodyBytes)
            }
            let limit = configuration.maxBodyBytes
            func read(_ body: RequestBody) async throws -> Data {
                do {
                    return Data(buffer: try await body.collect(upTo: limit))
                } catch is NIOTooManyBytesError {
                    throw APIError.bodyTooLarge(limit: limit)
                } catch {
                    // A malformed chunked encoding and the like: the client's fault.
                    throw APIError.badRequest("the request body could not be read: \(error)")
                }
            }
            let watch = DisconnectWatch()
            if request.method == .post {
                // The connection is watched while the handler runs, so a
                // client that leaves before its (non-streamed) answer cancels
                // its request; streamed answers notice when a write fails.
                response = try await request.body.consumeWithInboundCloseHandler { requestBody in
                    try await body(engine, try await read(requestBody), watch)
                } onInboundClosed: {
                    watch.close()
                }
            } else {
                response = try await body(engine, Data(), watch)
            }
        } catch let error as APIError {
            response = error.response()
        } catch let error as ServingError {
            response = APIError(error).response()
        } catch {
            response = APIError.internalError(String(describing: error)).response()
        }
        metrics.countRequest(endpoint: endpoint, status: Int(response.status.code))
        return response
    }

    private func decode<T: Decodable>(_ type: T.Type, _ data: Data) throws -> T { try Self.decode(type, data) }

    static func decode<T: Decodable>(_ type: T.Type, _ data: Data) throws -> T {
        guard !data.isEmpty else { throw APIError.badRequest("the request body is empty: send a JSON object") }
        do { return try JSONDecoder().decode(type, from: data) } catch { throw APIError(decoding: error) }
    }

    // MARK: Completions

    private func completions(_ engine: ServingEngine, _ data: Data, _ watch: DisconnectWatch) async throws -> Response {
        let input = try decode(CompletionRequest.self, data)
        let fields = input.sampling
        let prompt: [Int]
        switch input.prompt {
        case .tokens(let tokens): prompt = tokens
        case .text(let text):
            guard let tokenizer = engine.tokenizer else {
                throw APIError.badRequest("this model has no tokenizer: send the prompt as token ids", param: "prompt")
            }
            guard !text.isEmpty else { throw APIError.badRequest("prompt is empty", param: "prompt") }
            prompt = tokenizer.encode(text)
        }
        return try await answer(engine, fields, prompt: prompt, defaultMaxTokens: 16, watch: watch) { context in
            AnswerShape(
                chunk: { output in
                    CompletionResponse(id: context.id, created: context.created, model: context.model,
                                       choices: [CompletionChoice(text: output.text, finish_reason: output.finishReason?.rawValue,
                                                                  token_ids: context.returnIDs ? [output.token] : nil)])
                },
                usageChunk: { usage in
                    CompletionResponse(id: context.id, created: context.created, model: context.model, choices: [], usage: usage)
                },
                whole: { text, tokens, last in
                    CompletionResponse(id: context.id, created: context.created, model: context.model,
                                       choices: [CompletionChoice(text: text, finish_reason: last.finishReason?.rawValue,
                                                                  token_ids: context.returnIDs ? tokens : nil)],
                                       usage: Usage(prompt: prompt.count, completion: tokens.count),
                                       prompt_token_ids: context.returnIDs ? prompt : nil)
                })
        }
    }

    private func chatCompletions(_ engine: ServingEngine, _ data: Data, _ watch: DisconnectWatch) async throws -> Response {
        let chat = try decode(ChatRequest.self, data)
        let fields = chat.sampling
        let (_, prompt) = try await renderChat(engine, chat.messages, addGenerationPrompt: chat.add_generation_prompt ?? true)
        return try await answer(engine, fields, prompt: prompt, defaultMaxTokens: nil, watch: watch, idPrefix: "chatcmpl") { context in
            AnswerShape(
                firstChunk: ChatResponse(id: context.id, object: "chat.completion.chunk", created: context.created, model: context.model,
                                         choices: [ChatChoice(delta: AssistantMessage(role: "assistant", content: ""))]),
                chunk: { output in
                    ChatResponse(id: context.id, object: "chat.completion.chunk", created: context.created, model: context.model,
                                 choices: [ChatChoice(delta: AssistantMessage(content: output.text), finish_reason: output.finishReason?.rawValue,
                                                      token_ids: context.returnIDs ? [output.token] : nil)])
                },
                usageChunk: { usage in
                    ChatResponse(id: context.id, object: "chat.completion.chunk", created: context.created, model: context.model,
                                 choices: [], usage: usage)
                },
                whole: { text, tokens, last in
                    ChatResponse(id: context.id, object: "chat.completion", created: context.created, model: context.model,
                                 choices: [ChatChoice(message: AssistantMessage(role: "assistant", content: text),
                                                      finish_reason: last.finishReason?.rawValue, token_ids: context.returnIDs ? tokens : nil)],
                                 usage: Usage(prompt: prompt.count, completion: tokens.count),
                                 prompt_token_ids: context.returnIDs ? prompt : nil)
                })
        }
    }

    /// What a response needs to name itself.
    struct AnswerContext: Sendable {
        let id: String
        let created: Int
        let model: String
        let returnIDs: Bool
    }

    /// How an endpoint shapes its answer: streamed chunks (an optional first
    /// one, one per output, the usage) or one whole response.
    struct AnswerShape<Chunk: Encodable & Sendable, Whole: Encodable> {
        var firstChunk: Chunk? = nil
        let chunk: @Sendable (GenerationOutput) -> Chunk
        let usageChunk: @Sendable (Usage) -> Chunk
        let whole: (String, [Int], GenerationOutput) -> Whole
    }

    /// The flow both generating endpoints share: the engine request, submit,
    /// then a server-sent-events stream or one JSON response.
    private func answer<Chunk: Encodable & Sendable, Whole: Encodable>(
        _ engine: ServingEngine, _ fields: SamplingFields, prompt: [Int], defaultMaxTokens: Int?, watch: DisconnectWatch,
        idPrefix: String = "cmpl", shape makeShape: (AnswerContext) -> AnswerShape<Chunk, Whole>
    ) async throws -> Response {
        let request = try Self.generationRequest(fields, prompt: prompt, limits: engine.requestLimits, modelName: configuration.modelName,
                                                 defaultMaxTokens: defaultMaxTokens)
        let context = AnswerContext(id: "\(idPrefix)-\(UUID().uuidString.lowercased())", created: Int(Date().timeIntervalSince1970),
                                    model: configuration.modelName, returnIDs: fields.return_token_ids == true)
        let shape = makeShape(context)
        let generation = try engine.submit(request)
        let arrival = ContinuousClock.now
        if fields.stream == true {
            let includeUsage = fields.stream_options?.include_usage == true
            let usageChunk = shape.usageChunk
            return streamResponse(engine: engine, generation: generation, arrival: arrival, firstChunk: shape.firstChunk,
                                  chunk: shape.chunk) { last in
                guard includeUsage, let last else { return [] }
                return [usageChunk(Usage(prompt: last.promptTokenCount, completion: last.completionTokenCount))]
            }
        }
        watch.onClose { engine.cancel(id: generation.id) }
        let (text, tokens, last) = try await collect(generation, arrival: arrival)
        return JSON.response(shape.whole(text, tokens, last))
    }

    /// Renders messages with the model's chat template; returns the text and its tokens.
    func renderChat(_ engine: ServingEngine, _ messages: [ChatMessage], addGenerationPrompt: Bool) async throws -> (String, [Int]) {
        guard !messages.isEmpty else { throw APIError.badRequest("messages is empty: give at least one message", param: "messages") }
        guard let tokenizer = engine.tokenizer else {
            throw APIError.badRequest("this model has no tokenizer, so no chat template: use /v1/completions with token ids", param: "messages")
        }
        let (template, problem) = state.withLock { ($0.template, $0.templateError) }
        guard let template else {
            throw APIError.badRequest(problem ?? "this model's tokenizer_config.json has no chat_template: use /v1/completions", param: "messages")
        }
        let values: [[String: TemplateValue]] = messages.map { message in
            ["role": .string(message.role), "content": message.content.map(TemplateValue.string) ?? .null]
        }
        let text: String
        do {
            let limits = configuration.templateLimits
            let (bos, eos) = (tokenizer.bosToken, tokenizer.eosToken)
            text = try await offEventLoop { [self] cancelled in
                try template.render(messages: values, addGenerationPrompt: addGenerationPrompt, bosToken: bos, eosToken: eos,
                                    limits: limits, shouldCancel: { cancelled() || self.state.withLock { $0.shutdownRequested } })
            }
        } catch let error as ChatTemplateError where error.isRaisedByTemplate {
            throw APIError.badRequest("messages: \(error.message)", param: "messages")
        } catch {
            // A template that hit a limit (time, size, depth) or failed: the
            // model folder's fault, reported without taking the server down.
            throw APIError.internalError("chat template failed: \(error)")
        }
        // As transformers' apply_chat_template: the template writes any special
        // tokens itself, so none are added.
        return (text, tokenizer.encode(text, addSpecialTokens: false))
    }

    /// The engine request from the sampling fields, with OpenAI's defaults
    /// (temperature 1, top_p 1) and refusals of what Weft does not do.
    static func generationRequest(_ fields: SamplingFields, prompt: [Int], limits: RequestLimits, modelName: String,
                                  defaultMaxTokens: Int?) throws -> GenerationRequest {
        if let model = fields.model, model != modelName {
            throw APIError.modelNotFound(model, served: modelName)
        }
        if let n = fields.n, n != 1 { throw APIError.badRequest("n must be 1 (one choice per request), got \(n)", param: "n") }
        if let logprobs = fields.logprobs, !logprobs.isNull && !logprobs.isFalse {
            throw APIError.badRequest("logprobs are not supported", param: "logprobs")
        }
        if fields.echo == true { throw APIError.badRequest("echo is not supported", param: "echo") }
        if let stops = fields.stop?.strings, stops.count > 4 {
            throw APIError.badRequest("stop takes at most 4 strings, got \(stops.count)", param: "stop")
        }
        let maxTokens = fields.max_completion_tokens ?? fields.max_tokens ?? defaultMaxTokens ?? max(limits.maxModelLength - prompt.count, 1)
        var request = GenerationRequest(prompt: prompt, maxTokens: maxTokens)
        request.temperature = fields.temperature ?? 1
        request.topP = fields.top_p ?? 1
        // vLLM's -1 means "all tokens", as 0 does here.
        request.topK = fields.top_k == -1 ? 0 : (fields.top_k ?? 0)
        request.seed = fields.seed.map { UInt64(bitPattern: Int64($0)) }
        request.stop = fields.stop?.strings ?? []
        request.stopTokenIDs = fields.stop_token_ids ?? []
        request.ignoreEOS = fields.ignore_eos ?? false
        try limits.validate(request)
        return request
    }

    /// Waits for the whole generation (non-streaming responses).
    private func collect(_ generation: ServingEngine.Generation, arrival: ContinuousClock.Instant) async throws
        -> (String, [Int], GenerationOutput) {
        var text = "", tokens: [Int] = [], last: GenerationOutput?
        var previous = arrival
        for try await output in generation.outputs {
            let now = ContinuousClock.now
            if last == nil { metrics.recordFirstToken(after: now - arrival) } else { metrics.recordInterToken(now - previous) }
            previous = now
            text += output.text
            tokens.append(output.token)
            last = output
        }
        guard let last else { throw APIError(status: .init(code: 499), message: "the client closed the connection", type: "invalid_request_error", param: nil, code: "client_closed") }
        return (text, tokens, last)
    }

    /// A server-sent-events response: one `data:` chunk per output, optional
    /// final chunks (usage), then `data: [DONE]`. An engine error mid-stream
    /// becomes an error event; a client that goes away cancels the request.
    private func streamResponse<Chunk: Encodable & Sendable>(
        engine: ServingEngine, generation: ServingEngine.Generation, arrival: ContinuousClock.Instant,
        firstChunk: Chunk? = nil, chunk: @escaping @Sendable (GenerationOutput) -> Chunk,
        finalChunks: @escaping @Sendable (GenerationOutput?) -> [Chunk]
    ) -> Response {
        let metrics = self.metrics
        let body = ResponseBody { writer in
            func send(_ bytes: [UInt8]) async throws {
                do {
                    try await writer.write(ByteBuffer(bytes: Array("data: ".utf8) + bytes + Array("\n\n".utf8)))
                } catch {
                    engine.cancel(id: generation.id)   // the client went away
                    throw error
                }
            }
            if let firstChunk { try await send(JSON.encode(firstChunk)) }
            var last: GenerationOutput?
            var previous = arrival
            var iterator = generation.outputs.makeAsyncIterator()
            while true {
                let output: GenerationOutput?
                do {
                    output = try await iterator.next()
                } catch {
                    let apiError = (error as? ServingError).map(APIError.init) ?? APIError.internalError(String(describing: error))
                    try await send(JSON.encode(apiError.body))
                    break
                }
                guard let output else { break }
                let now = ContinuousClock.now
                if last == nil { metrics.recordFirstToken(after: now - arrival) } else { metrics.recordInterToken(now - previous) }
                previous = now
                last = output
                try await send(JSON.encode(chunk(output)))
            }
            for final in finalChunks(last) { try await send(JSON.encode(final)) }
            try await send(Array("[DONE]".utf8))
            try await writer.finish(nil)
        }
        return Response(status: .ok, headers: [.contentType: "text/event-stream", .cacheControl: "no-cache"], body: body)
    }

    // MARK: Tokenizer endpoints

    struct TokenizeResponse: Encodable {
        var tokens: [Int]
        var count: Int
        var max_model_len: Int
        /// The rendered chat prompt (when `messages` was given).
        var prompt: String?
    }

    private func tokenize(_ engine: ServingEngine, _ data: Data) async throws -> Response {
        let input = try decode(TokenizeRequest.self, data)
        guard let tokenizer = engine.tokenizer else { throw APIError.badRequest("this model has no tokenizer") }
        if let messages = input.messages {
            guard input.prompt == nil else { throw APIError.badRequest("give either prompt or messages, not both", param: "prompt") }
            let (text, tokens) = try await renderChat(engine, messages, addGenerationPrompt: input.add_generation_prompt ?? true)
            return JSON.response(TokenizeResponse(tokens: tokens, count: tokens.count, max_model_len: engine.maxModelLength, prompt: text))
        }
        guard let prompt = input.prompt else { throw APIError.badRequest("missing required field 'prompt' (or 'messages')", param: "prompt") }
        let tokens = tokenizer.encode(prompt, addSpecialTokens: input.add_special_tokens ?? true)
        return JSON.response(TokenizeResponse(tokens: tokens, count: tokens.count, max_model_len: engine.maxModelLength))
    }

    struct DetokenizeResponse: Encodable { var prompt: String }

    private func detokenize(_ engine: ServingEngine, _ data: Data) throws -> Response {
        let input = try decode(DetokenizeRequest.self, data)
        guard let tokenizer = engine.tokenizer else { throw APIError.badRequest("this model has no tokenizer") }
        if let problem = engine.modelConfig.vocabularyProblem(input.tokens) { throw APIError.badRequest(problem, param: "tokens") }
        return JSON.response(DetokenizeResponse(prompt: tokenizer.decode(input.tokens, skipSpecialTokens: false)))
    }
}

/// Runs `work` on a thread of its own (with a stack that fits the template
/// engine's depth limits) so a slow chat template never holds one of the few
/// Swift-concurrency threads the HTTP server and `/health` run on. `work`
/// gets a check that turns true when the calling task is cancelled.
func offEventLoop<T: Sendable>(_ work: @escaping @Sendable (_ cancelled: @escaping @Sendable () -> Bool) throws -> T) async throws -> T {
    let cancelled = Mutex(false)
    return try await withTaskCancellationHandler {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<T, Error>) in
            let thread = Thread {
                continuation.resume(with: Result { try work({ cancelled.withLock { $0 } }) })
            }
            thread.stackSize = 8 << 20
            thread.name = "weft-template"
            thread.start()
        }
    } onCancel: {
        cancelled.withLock { $0 = true }
    }
}

/// Runs an action when the client's connection closes (at most once; at
/// once if it closed before the action was set).
final class DisconnectWatch: Sendable {
    private let state = Mutex<(closed: Bool, action: (@Sendable () -> Void)?)>((false, nil))

    func onClose(_ action: @escaping @Sendable () -> Void) {
        let closed = state.withLock { state -> Bool in
            if !state.closed { state.action = action }
            return state.closed
        }
        if closed { action() }
    }

    func close() {
        let action = state.withLock { state -> (@Sendable () -> Void)? in
            state.closed = true
            defer { state.action = nil }
            return state.action
        }
        action?()
    }
}

/// Compares secrets without an early exit that would leak their prefix length.
func constantTimeEqual(_ a: String, _ b: String) -> Bool {
    let x = Array(a.utf8), y = Array(b.utf8)
    var difference = UInt8(x.count == y.count ? 0 : 1)
    for i in 0..<max(x.count, y.count) {
        difference |= (i < x.count ? x[i] : 0) ^ (i < y.count ? y[i] : 0)
    }
    return difference == 0
}
