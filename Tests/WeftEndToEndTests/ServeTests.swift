import Foundation
import XCTest

/// `mpirun -np 2 weft serve` on loopback with the fixture model, driven over HTTP.
final class ServeTests: XCTestCase {
    struct ChatCase: Decodable {
        struct Message: Decodable { let role: String; let content: String }
        let messages: [Message]
        let add_generation_prompt: Bool
        let rendered: String
    }
    struct Reference: Decodable {
        struct GreedyCase: Decodable { let prompt_tokens: [Int]; let continuation: [Int]; let top1_top2_margin: [Float] }
        let greedy_cases: [GreedyCase]
        let chat_cases: [ChatCase]
    }
    static let reference: Reference = try! JSONDecoder().decode(
        Reference.self, from: Data(contentsOf: MPIRun.fixture.appendingPathComponent("reference.json")))
}

/// Helpers other end-to-end suites call too (PrefixCachingServeTests).
extension XCTestCase {
    /// Token ids of a non-streaming completion.
    func complete(_ client: HTTPClient, prompt: [Int], maxTokens: Int, extra: [String: Any] = [:], headers: [String: String] = [:],
                  file: StaticString = #filePath, line: UInt = #line) throws -> (tokens: [Int], text: String) {
        var body: [String: Any] = ["prompt": prompt, "max_tokens": maxTokens, "temperature": 0, "return_token_ids": true]
        body.merge(extra) { $1 }
        let response = try client.postJSON("/v1/completions", body, headers: headers)
        XCTAssertEqual(response.status, 200, response.text, file: file, line: line)
        let json = try response.json()
        let choice = (json["choices"] as? [[String: Any]])?.first ?? [:]
        let usage = json["usage"] as? [String: Any] ?? [:]
        let tokens = choice["token_ids"] as? [Int] ?? []
        XCTAssertEqual(usage["completion_tokens"] as? Int, tokens.count, file: file, line: line)
        XCTAssertEqual(usage["prompt_tokens"] as? Int, prompt.count, file: file, line: line)
        return (tokens, choice["text"] as? String ?? "")
    }

    /// Token ids and text of a streamed completion; checks the SSE framing.
    func stream(_ client: HTTPClient, prompt: [Int], maxTokens: Int,
                file: StaticString = #filePath, line: UInt = #line) throws -> (tokens: [Int], text: String) {
        let stream = try client.openStream("/v1/completions", ["prompt": prompt, "max_tokens": maxTokens, "temperature": 0,
                                                               "stream": true, "return_token_ids": true,
                                                               "stream_options": ["include_usage": true]])
        XCTAssertEqual(stream.status, 200, file: file, line: line)
        XCTAssertEqual(stream.headers["content-type"], "text/event-stream", file: file, line: line)
        var tokens: [Int] = [], text = "", sawDone = false, usage: [String: Any]?, finish: String?
        while let event = try stream.nextEvent() {
            if event == "[DONE]" { sawDone = true; break }
            let json = try JSONSerialization.jsonObject(with: Data(event.utf8)) as! [String: Any]
            XCTAssertNil(json["error"], event, file: file, line: line)
            if let choice = (json["choices"] as? [[String: Any]])?.first {
                tokens += choice["token_ids"] as? [Int] ?? []
                text += choice["text"] as? String ?? ""
                if let reason = choice["finish_reason"] as? String { finish = reason }
            }
            if let u = json["usage"] as? [String: Any] { usage = u }
        }
        XCTAssertTrue(sawDone, "stream ended without [DONE]", file: file, line: line)
        XCTAssertNotNil(finish, file: file, line: line)
        XCTAssertEqual(usage?["completion_tokens"] as? Int, tokens.count, file: file, line: line)
        return (tokens, text)
    }
}

extension ServeTests {
    func testGreedyCompletionsEqualGenerateStreamedAndNot() throws {
        // A float32 KV cache: the reference's smallest margins are below f16's rounding.
        let server = try ServerProcess(ranks: 2, ["--kv-dtype", "f32"])
        defer { server.stop() }
        for (index, reference) in Self.reference.greedy_cases.enumerated() {
            let n = reference.continuation.count
            let generate = try MPIRun.run(ranks: 2, ["generate", "--model", MPIRun.fixture.path, "--threads", "1", "--json", "--kv-dtype", "f32",
                                                     "--tokens", reference.prompt_tokens.map(String.init).joined(separator: ","),
                                                     "--max-tokens", String(n)])
            XCTAssertEqual(generate.status, 0, generate.stderr)
            let expected = try JSONSerialization.jsonObject(with: Data(generate.stdout.utf8)) as! [String: Any]
            let expectedTokens = expected["completion_tokens"] as! [Int]
            let plain = try complete(server.client, prompt: reference.prompt_tokens, maxTokens: n)
            let streamed = try stream(server.client, prompt: reference.prompt_tokens, maxTokens: n)
            XCTAssertEqual(plain.tokens, expectedTokens, "case \(index): completion vs weft generate")
            XCTAssertEqual(streamed.tokens, expectedTokens, "case \(index): streamed completion vs weft generate")
            XCTAssertEqual(plain.text, expected["text"] as? String)
            XCTAssertEqual(streamed.text, plain.text)
            // And Hugging Face's continuation, up to the first near-tie.
            for (step, token) in reference.continuation.enumerated() where step < plain.tokens.count {
                guard reference.top1_top2_margin[step] > 1e-3 else { break }
                XCTAssertEqual(plain.tokens[step], token, "case \(index) step \(step) vs transformers")
            }
        }
    }

    func testChatPromptsRenderAsTheReference() throws {
        let server = try ServerProcess()
        defer { server.stop() }
        for (index, chat) in Self.reference.chat_cases.enumerated() {
            let messages = chat.messages.map { ["role": $0.role, "content": $0.content] }
            let rendered = try server.client.postJSON("/tokenize", ["messages": messages, "add_generation_prompt": chat.add_generation_prompt])
            XCTAssertEqual(rendered.status, 200, rendered.text)
            let json = try rendered.json()
            XCTAssertEqual(json["prompt"] as? String, chat.rendered, "chat case \(index)")
            let tokens = json["tokens"] as? [Int] ?? []
            // The chat completion runs on exactly that prompt.
            let response = try server.client.postJSON("/v1/chat/completions", ["messages": messages, "max_tokens": 4, "temperature": 0,
                                                                              "return_token_ids": true])
            XCTAssertEqual(response.status, 200, response.text)
            let body = try response.json()
            XCTAssertEqual(body["prompt_token_ids"] as? [Int], tokens)
            XCTAssertEqual(body["object"] as? String, "chat.completion")
            let message = ((body["choices"] as? [[String: Any]])?.first?["message"]) as? [String: Any]
            XCTAssertEqual(message?["role"] as? String, "assistant")
            // Same tokens as a plain completion of the rendered prompt.
            let plain = try complete(server.client, prompt: tokens, maxTokens: 4)
            XCTAssertEqual(((body["choices"] as? [[String: Any]])?.first?["token_ids"]) as? [Int], plain.tokens)
        }
        // Streaming chat: a role chunk, content chunks, [DONE].
        let stream = try server.client.openStream("/v1/chat/completions", ["messages": [["role": "user", "content": "Hello!"]],
                                                                          "max_tokens": 3, "stream": true])
        let events = try stream.allEvents()
        XCTAssertEqual(events.last, "[DONE]")
        let first = try JSONSerialization.jsonObject(with: Data(events[0].utf8)) as! [String: Any]
        XCTAssertEqual(first["object"] as? String, "chat.completion.chunk")
        XCTAssertEqual((((first["choices"] as? [[String: Any]])?.first?["delta"]) as? [String: Any])?["role"] as? String, "assistant")
        XCTAssertEqual(events.count, 1 + 3 + 1)
    }

    /// The default model served at 2 ranks with nothing but its GGUF file: the
    /// chat template and the tokenizer come from the file's metadata. The
    /// rendering is jinja2's of the file's template and the ids are llama.cpp's
    /// (`llama-tokenize` on the same file); the answer is llama.cpp's greedy
    /// answer on the same file (`llama-simple`).
    func testTheDefaultModelServesThroughItsOwnTemplateAndTokenizer() throws {
        let model = try RealModel.smolLM2()
        let server = try ServerProcess(ranks: 2, ["--threads", "1"], model: model)
        defer { server.stop() }
        let messages = [["role": "user", "content": "What is the capital of France? Answer in one sentence."]]
        let rendered = try server.client.postJSON("/tokenize", ["messages": messages, "add_generation_prompt": true])
        XCTAssertEqual(rendered.status, 200, rendered.text)
        let json = try rendered.json()
        XCTAssertEqual(json["prompt"] as? String, "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
                       + "<|im_start|>user\nWhat is the capital of France? Answer in one sentence.<|im_end|>\n<|im_start|>assistant\n")
        XCTAssertEqual(json["tokens"] as? [Int], [1, 9690, 198, 2683, 359, 253, 5356, 5646, 11173, 3365, 3511, 308, 34519, 28, 7018, 411, 407,
                                                  19712, 8182, 2, 198, 1, 4093, 198, 1780, 314, 260, 3575, 282, 4649, 47, 19842, 281, 582,
                                                  6330, 30, 2, 198, 1, 520, 9531, 198])
        let response = try server.client.postJSON("/v1/chat/completions", ["messages": messages, "max_tokens": 32, "temperature": 0])
        XCTAssertEqual(response.status, 200, response.text)
        let choice = (try response.json()["choices"] as? [[String: Any]])?.first
        XCTAssertEqual((choice?["message"] as? [String: Any])?["content"] as? String, "The capital of France is Paris.")
        XCTAssertEqual(choice?["finish_reason"] as? String, "stop", "ends on <|im_end|>, an end-of-generation token of the file")
    }

    func testSixteenConcurrentStreamsGiveTheSameTokensAsOneAtATime() throws {
        let server = try ServerProcess(["--max-num-seqs", "16", "--max-batch-tokens", "64"])
        defer { server.stop() }
        let base = Self.reference.greedy_cases[0].prompt_tokens
        let prompts = (0..<16).map { i in base + Array(repeating: 100 + i * 13, count: 1 + i % 5) }
        let maxTokens = 12
        // One at a time first.
        var expected: [[Int]] = []
        for prompt in prompts { expected.append(try complete(server.client, prompt: prompt, maxTokens: maxTokens).tokens) }
        let stepsBefore = try XCTUnwrap(try server.metric("weft_steps_total"))
        // Then all 16 at once, streaming.
        final class Results: @unchecked Sendable {
            let lock = NSLock()
            var tokens: [Int: [Int]] = [:]
            var errors: [String] = []
        }
        let results = Results()
        let client = server.client
        let start = DispatchSemaphore(value: 0)
        let group = DispatchGroup()
        for (i, prompt) in prompts.enumerated() {
            group.enter()
            Thread.detachNewThread {
                defer { group.leave() }
                start.wait()
                do {
                    let stream = try client.openStream("/v1/completions", ["prompt": prompt, "max_tokens": maxTokens, "temperature": 0,
                                                                           "stream": true, "return_token_ids": true])
                    var tokens: [Int] = []
                    while let event = try stream.nextEvent(), event != "[DONE]" {
                        let json = try JSONSerialization.jsonObject(with: Data(event.utf8)) as! [String: Any]
                        tokens += ((json["choices"] as? [[String: Any]])?.first?["token_ids"] as? [Int]) ?? []
                    }
                    results.lock.lock(); results.tokens[i] = tokens; results.lock.unlock()
                } catch {
                    results.lock.lock(); results.errors.append("request \(i): \(error)"); results.lock.unlock()
                }
            }
        }
        for _ in prompts { start.signal() }
        XCTAssertEqual(group.wait(timeout: .now() + 300), .success)
        XCTAssertEqual(results.errors, [])
        for i in prompts.indices {
            XCTAssertEqual(results.tokens[i], expected[i], "request \(i) differs when batched")
        }
        // They ran as one batch: far fewer steps than tokens (one at a time, each token is a step).
        let steps = try XCTUnwrap(try server.metric("weft_steps_total")) - stepsBefore
        XCTAssertLessThan(steps, Double(prompts.count * maxTokens / 2))
        XCTAssertEqual(try server.metric("weft_generation_tokens_total"), Double(2 * prompts.count * maxTokens))
    }
}

/// Helpers other end-to-end suites call too (PrefixCachingServeTests).
extension XCTestCase {
    /// Polls /metrics until `name` reaches `value` (at most 10 s).
    func waitForMetric(_ server: ServerProcess, _ name: String, _ value: Double, line: UInt = #line) throws {
        var current: Double?
        for _ in 0..<200 {
            current = try server.metric(name)
            if current == value { return }
            usleep(50_000)
        }
        let shown = current.map { "\($0)" } ?? "absent"
        XCTFail("\(name) is \(shown), expected \(value)", line: line)
    }

    /// Every labelled sample of `name` in /metrics, by the value of `label`.
    func labelledMetric(_ server: ServerProcess, _ name: String, label: String) throws -> [String: Double] {
        var values: [String: Double] = [:]
        for line in try server.client.send("GET", "/metrics").text.split(separator: "\n") where line.hasPrefix(name + "{") {
            guard let range = line.range(of: label + "=\""), let value = line.split(separator: " ").last.flatMap({ Double($0) }) else { continue }
            values[String(line[range.upperBound...].prefix { $0 != "\"" })] = value
        }
        return values
    }
}

extension ServeTests {
    /// A mixture-of-experts model with expert parallelism: /metrics counts
    /// the tokens routed to each expert and rank and each step's imbalance.
    /// On tiny-mixtral-skewed (layer 0 sends every token to expert 6, none
    /// to 0, 1 and 4) the greedy reference case's counts are known exactly:
    /// the reference's per-layer expert counts over the prompt and the
    /// continuation's tokens but the last, summed over the layers.
    func testExpertLoadMetrics() throws {
        struct SkewedReference: Decodable {
            struct Greedy: Decodable { let tokens: [Int]; let continuation: [Int]; let expert_counts: [[Int]] }
            let greedy: Greedy
        }
        let folder = MPIRun.fixture.deletingLastPathComponent().appendingPathComponent("tiny-mixtral-skewed")
        let reference = try JSONDecoder().decode(SkewedReference.self, from: Data(contentsOf: folder.appendingPathComponent("reference.json")))
        let server = try ServerProcess(["--moe-placement", "ep", "--kv-dtype", "f32"], model: folder.path)
        defer { server.stop() }
        // Reported from the start, zero before any step.
        XCTAssertEqual(try labelledMetric(server, "weft_moe_routed_tokens_total", label: "expert"),
                       Dictionary(uniqueKeysWithValues: (0..<8).map { (String($0), 0.0) }))
        XCTAssertEqual(try labelledMetric(server, "weft_moe_placement_info", label: "placement"), ["ep": 1])
        XCTAssertEqual(try server.metric("weft_moe_step_load_imbalance_count"), 0)

        let greedy = reference.greedy
        let result = try complete(server.client, prompt: greedy.tokens, maxTokens: greedy.continuation.count, extra: ["ignore_eos": true])
        XCTAssertEqual(result.tokens, greedy.continuation)
        let expected = (0..<8).map { e in greedy.expert_counts.reduce(0) { $0 + $1[e] } }
        XCTAssertEqual(expected.reduce(0, +), (greedy.tokens.count + greedy.continuation.count - 1) * 2 * 2, "tokens × k × layers")
        let perExpert = try labelledMetric(server, "weft_moe_routed_tokens_total", label: "expert")
        XCTAssertEqual(perExpert, Dictionary(uniqueKeysWithValues: expected.enumerated().map { (String($0.offset), Double($0.element)) }))
        let perRank = try labelledMetric(server, "weft_moe_rank_routed_tokens_total", label: "rank")
        XCTAssertEqual(perRank, ["0": Double(expected[0..<4].reduce(0, +)), "1": Double(expected[4..<8].reduce(0, +))])
        // One histogram sample per step (each routed tokens), every one at least 1.
        let steps = try XCTUnwrap(try server.metric("weft_steps_total"))
        XCTAssertEqual(steps, Double(greedy.continuation.count), "one prefill step, then one per fed-back token")
        XCTAssertEqual(try server.metric("weft_moe_step_load_imbalance_count"), steps)
        XCTAssertEqual(try labelledMetric(server, "weft_moe_step_load_imbalance_bucket", label: "le")["+Inf"], steps)
        let sum = try XCTUnwrap(try server.metric("weft_moe_step_load_imbalance_sum"))
        XCTAssertGreaterThan(sum, steps, "expert 6 on rank 1 takes most tokens")
        XCTAssertLessThanOrEqual(sum, 2 * steps)
        let last = try XCTUnwrap(try server.metric("weft_moe_load_imbalance"))
        XCTAssertTrue((1...2).contains(last), "\(last)")
    }

    func testDisconnectedClientsFreeTheirKVBlocksOnEveryRank() throws {
        // 4 blocks of 16 positions: one request of 8 + 55 tokens takes the whole cache.
        let server = try ServerProcess(["--kv-blocks", "4", "--kv-block-size", "16", "--max-model-len", "64"])
        defer { server.stop() }
        let prompt = Array(1...8)
        let whole: [String: Any] = ["prompt": prompt, "max_tokens": 55, "temperature": 0, "ignore_eos": true]
        XCTAssertEqual(try server.metric("weft_kv_blocks_in_use"), 0)
        XCTAssertEqual(try server.metric("weft_kv_blocks_total"), 4)

        // A streaming client that goes away mid-stream.
        let stream = try server.client.openStream("/v1/completions", whole.merging(["stream": true]) { $1 })
        for _ in 0..<3 { XCTAssertNotNil(try stream.nextEvent()) }
        XCTAssertGreaterThan(try XCTUnwrap(try server.metric("weft_kv_blocks_in_use")), 0)
        XCTAssertEqual(try server.metric("weft_running_sequences"), 1)
        stream.close()
        try waitForMetric(server, "weft_kv_blocks_in_use", 0)
        try waitForMetric(server, "weft_running_sequences", 0)

        // A non-streaming client that goes away while it waits.
        let body = try JSONSerialization.data(withJSONObject: whole)
        let connection = try HTTPSocketConnection(port: server.port, timeout: 30)
        var head = "POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        head += "Content-Length: \(body.count)\r\n\r\n"
        try connection.exchange(Data(head.utf8) + body) { }
        try waitForMetric(server, "weft_running_sequences", 1)
        connection.close()
        try waitForMetric(server, "weft_running_sequences", 0)
        try waitForMetric(server, "weft_kv_blocks_in_use", 0)

        // Every rank freed the blocks: a request needing the whole cache runs
        // (a rank still holding blocks would fail to reserve them).
        let full = try complete(server.client, prompt: prompt, maxTokens: 55, extra: ["ignore_eos": true])
        XCTAssertEqual(full.tokens.count, 55)
    }

    func testRequestsWaitWhenKVMemoryIsShortAndStillGetTheirTokens() throws {
        // Two requests of 3 blocks each, 4 blocks in all: the second waits for the first.
        let server = try ServerProcess(["--kv-blocks", "4", "--kv-block-size", "16", "--max-model-len", "64"])
        defer { server.stop() }
        let prompts = [Array(1...8), Array(20...27)]
        let expected = try prompts.map { try complete(server.client, prompt: $0, maxTokens: 30, extra: ["ignore_eos": true]).tokens }
        let first = try server.client.openStream("/v1/completions", ["prompt": prompts[0], "max_tokens": 30, "temperature": 0,
                                                                    "stream": true, "ignore_eos": true, "return_token_ids": true])
        XCTAssertNotNil(try first.nextEvent())
        let second = try server.client.openStream("/v1/completions", ["prompt": prompts[1], "max_tokens": 30, "temperature": 0,
                                                                     "stream": true, "ignore_eos": true, "return_token_ids": true])
        try waitForMetric(server, "weft_queue_depth", 1)
        XCTAssertEqual(try server.metric("weft_running_sequences"), 1)
        for (stream, tokens) in zip([first, second], expected) {
            var got: [Int] = []
            while let event = try stream.nextEvent(), event != "[DONE]" {
                let json = try JSONSerialization.jsonObject(with: Data(event.utf8)) as! [String: Any]
                got += ((json["choices"] as? [[String: Any]])?.first?["token_ids"] as? [Int]) ?? []
            }
            if stream === first { XCTAssertEqual(got, Array(tokens.dropFirst())) } else { XCTAssertEqual(got, tokens) }
        }
        try waitForMetric(server, "weft_queue_depth", 0)
    }

    func testSeedTopKAndStopStrings() throws {
        let server = try ServerProcess()
        defer { server.stop() }
        let prompt = Self.reference.greedy_cases[0].prompt_tokens
        let sampled = { (seed: Int) in try self.complete(server.client, prompt: prompt, maxTokens: 16,
                                                         extra: ["temperature": 1.0, "seed": seed, "ignore_eos": true]).tokens }
        let a = try sampled(7), b = try sampled(7), c = try sampled(8)
        XCTAssertEqual(a, b, "same seed, same tokens")
        XCTAssertNotEqual(a, c, "another seed, other tokens")
        // top_k 1 is greedy whatever the temperature.
        let greedy = try complete(server.client, prompt: prompt, maxTokens: 8)
        XCTAssertEqual(try complete(server.client, prompt: prompt, maxTokens: 8, extra: ["temperature": 1.5, "top_k": 1, "seed": 3]).tokens,
                       greedy.tokens)
        // A stop string ends the text before it, streamed or not.
        let cut = greedy.text.index(greedy.text.startIndex, offsetBy: greedy.text.count / 2)
        let stop = String(greedy.text[cut...].prefix(3))
        let before = String(greedy.text[..<greedy.text.range(of: stop)!.lowerBound])
        let response = try server.client.postJSON("/v1/completions", ["prompt": prompt, "max_tokens": 8, "temperature": 0, "stop": [stop, "zzzz"]])
        let choice = try XCTUnwrap((try response.json()["choices"] as? [[String: Any]])?.first)
        XCTAssertEqual(choice["text"] as? String, before)
        XCTAssertEqual(choice["finish_reason"] as? String, "stop")
        let events = try server.client.openStream("/v1/completions", ["prompt": prompt, "max_tokens": 8, "temperature": 0, "stop": stop,
                                                                     "stream": true]).allEvents()
        var text = "", finish: String?
        for event in events where event != "[DONE]" {
            let json = try JSONSerialization.jsonObject(with: Data(event.utf8)) as! [String: Any]
            let choice = (json["choices"] as? [[String: Any]])?.first
            text += choice?["text"] as? String ?? ""
            finish = choice?["finish_reason"] as? String ?? finish
        }
        XCTAssertEqual(text, before)
        XCTAssertEqual(finish, "stop")
        // Without stop strings: finish_reason length.
        XCTAssertEqual(((try server.client.postJSON("/v1/completions", ["prompt": prompt, "max_tokens": 3, "temperature": 0]).json()["choices"]
                         as? [[String: Any]])?.first?["finish_reason"]) as? String, "length")
    }

    func testBadInputGetsOpenAIErrorsAndTheServerKeepsServing() throws {
        let server = try ServerProcess(["--api-key", "sesame", "--max-body-bytes", "4096", "--max-model-len", "64"])
        defer { server.stop() }
        let auth = ["Authorization": "Bearer sesame"]
        let client = server.client
        func check(_ body: Data?, _ status: Int, param: String? = nil, contains: String, path: String = "/v1/completions",
                   headers: [String: String]? = nil, line: UInt = #line) throws {
            let response = try client.send("POST", path, headers: (headers ?? auth).merging(["Content-Type": "application/json"]) { $1 }, body: body)
            XCTAssertEqual(response.status, status, response.text, line: line)
            let error = try response.json()["error"] as? [String: Any]
            XCTAssertNotNil(error?["type"] as? String, response.text, line: line)
            let message = error?["message"] as? String ?? ""
            XCTAssertTrue(message.contains(contains), "\(message) should mention \(contains)", line: line)
            XCTAssertFalse(message.contains("\n"), "one line: \(message)", line: line)
            if let param { XCTAssertEqual(error?["param"] as? String, param, line: line) }
        }
        func json(_ object: Any) -> Data { try! JSONSerialization.data(withJSONObject: object) }
        let model = server.marker
        try check(Data("{not json".utf8), 400, contains: "not valid JSON")
        try check(nil, 400, contains: "empty")
        try check(json(["max_tokens": 4]), 400, param: "prompt", contains: "prompt")
        try check(json(["prompt": [1, 2], "max_tokens": "four"]), 400, param: "max_tokens", contains: "max_tokens")
        try check(json(["prompt": 12]), 400, param: "prompt", contains: "prompt")
        try check(json(["prompt": [1, 2], "model": "gpt-4"]), 404, param: "model", contains: "gpt-4")
        try check(json(["prompt": "", "model": model]), 400, param: "prompt", contains: "empty")
        try check(json(["prompt": [Int]()]), 400, param: "prompt", contains: "empty")
        try check(json(["prompt": Array(repeating: 5, count: 80)]), 400, param: "prompt", contains: "context")
        try check(json(["prompt": [1, 2], "max_tokens": 0]), 400, param: "max_tokens", contains: "max_tokens")
        try check(json(["prompt": [1, 2], "max_tokens": 100]), 400, param: "max_tokens", contains: "context")
        try check(json(["prompt": [1, 2], "temperature": 3]), 400, param: "temperature", contains: "temperature")
        try check(json(["prompt": [1, 2], "top_p": 0]), 400, param: "top_p", contains: "top_p")
        try check(json(["prompt": [1, 999_999]]), 400, param: "prompt", contains: "999999")
        try check(json(["prompt": [1, -1]]), 400, param: "prompt", contains: "-1")
        try check(json(["prompt": [1, 2], "n": 3]), 400, param: "n", contains: "n must be 1")
        try check(json(["messages": [] as [Any]]), 400, param: "messages", contains: "messages", path: "/v1/chat/completions")
        try check(json(["messages": [["content": "hi"]]]), 400, param: "messages[0].role", contains: "role", path: "/v1/chat/completions")
        try check(json(["tokens": [1, 5_000_000]]), 400, param: "tokens", contains: "5000000", path: "/detokenize")
        // Numbers near 2^63 are range-checked, not added (they trapped rank 0).
        let huge = Int(Int64.max - 5)
        try check(json(["prompt": [1, 2], "max_tokens": huge]), 400, param: "max_tokens", contains: "context")
        try check(json(["prompt": [1, 2], "max_completion_tokens": huge]), 400, param: "max_tokens", contains: "context")
        try check(json(["messages": [["role": "user", "content": "hi"]], "max_tokens": huge]), 400, param: "max_tokens",
                  contains: "context", path: "/v1/chat/completions")
        let extremes = try client.send("POST", "/v1/completions", headers: auth.merging(["Content-Type": "application/json"]) { $1 },
                                       body: json(["prompt": [1, 2], "top_k": huge, "seed": Int(Int64.min), "max_tokens": 1]))
        XCTAssertEqual(extremes.status, 200, extremes.text)
        // A malformed chunked body is the client's fault: 400, not 500.
        let chunked = try client.sendRaw(Data(("POST /v1/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer sesame\r\n"
                                               + "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
                                               + "zz\r\n{\"prompt\": [1]}\r\n0\r\n\r\n").utf8))
        XCTAssertEqual(chunked.status, 400, chunked.text)
        try check(Data(repeating: 0x20, count: 10_000), 413, contains: "4096")
        try check(json(["prompt": [1, 2]]), 401, contains: "API key", headers: [:])
        try check(json(["prompt": [1, 2]]), 401, contains: "API key", headers: ["Authorization": "Bearer wrong"])
        // A streaming request with a bad field gets the error as JSON, not a stream.
        try check(json(["prompt": [1, 2], "stream": true, "max_tokens": -5]), 400, param: "max_tokens", contains: "max_tokens")
        // Open endpoints need no key; the model list names the served model.
        XCTAssertEqual(try client.send("GET", "/health").status, 200)
        XCTAssertEqual(try client.send("GET", "/v1/models").status, 401)
        let models = try client.send("GET", "/v1/models", headers: auth).json()
        XCTAssertEqual(((models["data"] as? [[String: Any]])?.first?["id"]) as? String, model)
        // Every rank is still in step: a request after all that gives the right tokens.
        let tokens = try complete(client, prompt: Self.reference.greedy_cases[0].prompt_tokens, maxTokens: 4, extra: [:],
                                  headers: auth)
        XCTAssertEqual(tokens.tokens, Array(Self.reference.greedy_cases[0].continuation.prefix(4)))
        // Errors were counted by status.
        let metrics = try client.send("GET", "/metrics").text
        XCTAssertTrue(metrics.contains(#"weft_requests_total{endpoint="completions",status="400"}"#), metrics)
        XCTAssertFalse(metrics.contains("weft_moe_"), "a dense model has no expert metrics")
    }

    /// A model folder whose chat template would run for hours or build
    /// gigabytes: each chat request fails alone (HTTP 500 naming the limit)
    /// within the template's time limit, /health keeps answering meanwhile,
    /// and completions are unaffected.
    func testAHostileChatTemplateFailsItsRequestsAndNothingElse() throws {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("weft-hostile-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: folder) }
        for name in try FileManager.default.contentsOfDirectory(atPath: MPIRun.fixture.path) where name != "tokenizer_config.json" {
            try FileManager.default.createSymbolicLink(at: folder.appendingPathComponent(name),
                                                       withDestinationURL: MPIRun.fixture.appendingPathComponent(name))
        }
        var config = try JSONSerialization.jsonObject(with: Data(contentsOf: MPIRun.fixture.appendingPathComponent("tokenizer_config.json")))
            as! [String: Any]
        // Which template runs is chosen by the last message's content.
        config["chat_template"] = """
        {%- set m = messages[-1]['content'] -%}
        {%- if m == 'loop' -%}{%- for i in range(100000) -%}{%- for j in range(100000) -%}x{%- endfor -%}{%- endfor -%}
        {%- elif m == 'big' -%}{{ 'x' * 100000000 }}
        {%- elif m == 'power' -%}{{ 9223372036854775807 * 2 }}
        {%- elif m == 'recurse' -%}{%- macro f(n) -%}{{ f(n + 1) }}{%- endmacro -%}{{ f(0) }}
        {%- else -%}{{ m }}{%- endif -%}
        """
        try JSONSerialization.data(withJSONObject: config).write(to: folder.appendingPathComponent("tokenizer_config.json"))
        let server = try ServerProcess(["--template-timeout", "1"], model: folder.path)
        defer { server.stop() }
        // Whichever limit comes first (a debug build reaches the time limit
        // before the loop limit), the request names one of its kind.
        for (content, limits) in [("loop", ["loop", "time limit"]), ("big", ["size"]), ("power", ["overflow"]),
                                  ("recurse", ["depth", "deeply"])] {
            final class Health: @unchecked Sendable { var status = 0 }
            let health = Health()
            let probe = Thread { [port = server.port] in health.status = (try? HTTPClient(port: port, timeout: 10).send("GET", "/health").status) ?? -1 }
            probe.start()
            let response = try server.client.postJSON("/v1/chat/completions", ["messages": [["role": "user", "content": content]],
                                                                               "max_tokens": 2])
            XCTAssertEqual(response.status, 500, "\(content): \(response.text)")
            XCTAssertTrue(response.text.contains("chat template"), response.text)
            XCTAssertTrue(limits.contains { response.text.lowercased().contains($0) }, "\(content) should hit a \(limits) limit: \(response.text)")
            while probe.isExecuting { usleep(10_000) }
            XCTAssertEqual(health.status, 200, "/health while rendering '\(content)'")
        }
        let fine = try server.client.postJSON("/v1/chat/completions", ["messages": [["role": "user", "content": "hello"]], "max_tokens": 2])
        XCTAssertEqual(fine.status, 200, fine.text)
        XCTAssertEqual(try complete(server.client, prompt: [1, 2, 3], maxTokens: 2).tokens.count, 2)
    }

    /// A client that opens a connection and never finishes its request head is
    /// disconnected after --idle-timeout.
    func testIdleConnectionsAreClosed() throws {
        let server = try ServerProcess(["--idle-timeout", "1"])
        defer { server.stop() }
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        XCTAssertGreaterThanOrEqual(fd, 0)
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(server.port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        XCTAssertEqual(connected, 0)
        _ = "GET /health HTTP/1.1\r\nHo".withCString { send(fd, $0, 24, 0) }
        var timeout = timeval(tv_sec: 20, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var buffer = [UInt8](repeating: 0, count: 256)
        let read = recv(fd, &buffer, buffer.count, 0)
        XCTAssertEqual(read, 0, "the server should close the idle connection (got \(read), errno \(errno))")
        XCTAssertEqual(try server.client.send("GET", "/health").status, 200)
    }

    func testFullQueueAnswers503AndSIGTERMStopsEveryRankCleanly() throws {
        let server = try ServerProcess(["--max-num-seqs", "1", "--max-queue", "0", "--drain-timeout", "0.5"])
        let stream = try server.client.openStream("/v1/completions", ["prompt": [1, 2, 3], "max_tokens": 1500, "temperature": 0,
                                                                     "stream": true, "ignore_eos": true])
        XCTAssertNotNil(try stream.nextEvent())
        let refused = try server.client.postJSON("/v1/completions", ["prompt": [1, 2], "max_tokens": 2])
        XCTAssertEqual(refused.status, 503, refused.text)
        XCTAssertNotNil(refused.headers["retry-after"])
        // SIGTERM: the in-flight stream is cancelled after the drain time with
        // an error event, and every rank exits 0.
        server.signalRanks(SIGTERM)
        var last: String?
        while let event = try stream.nextEvent() { last = event; if event == "[DONE]" { break } }
        let exit = server.waitForExit()
        XCTAssertFalse(exit.timedOut)
        XCTAssertEqual(exit.status, 0, server.stderr)
        XCTAssertEqual(exit.rankExits, [0: 0, 1: 0], server.stderr)
        XCTAssertEqual(last, "[DONE]")
        XCTAssertTrue(server.stdout.contains("weft: stopped"), server.stdout)
        XCTAssertEqual(server.rankPIDs(), [:], "a rank outlived the job")
    }

    func testHealthIs503WhileLoadingAndTokenPromptsWorkWithoutATokenizer() throws {
        // Random weights of a shape with a large vocabulary take a few seconds to
        // make in a debug build; the server listens meanwhile.
        let shape = FileManager.default.temporaryDirectory.appendingPathComponent("weft-serve-shape-\(UUID().uuidString).json")
        try Data(#"""
        {"architectures": ["LlamaForCausalLM"], "hidden_size": 256, "intermediate_size": 512, "num_hidden_layers": 2,
         "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 8000, "rms_norm_eps": 1e-5,
         "max_position_embeddings": 256, "tie_word_embeddings": false}
        """#.utf8).write(to: shape)
        defer { try? FileManager.default.removeItem(at: shape) }
        let server = try ServerProcess(["--random-weights", shape.path], model: nil, waitUntilReady: false)
        defer { server.stop() }
        let loading = try server.client.send("GET", "/health")
        XCTAssertEqual(loading.status, 503, "expected 503 while the model loads")
        let early = try server.client.postJSON("/v1/completions", ["prompt": [1, 2], "max_tokens": 2])
        XCTAssertEqual(early.status, 503)
        XCTAssertNotNil(early.headers["retry-after"])
        var status = 0
        for _ in 0..<1200 {
            status = try server.client.send("GET", "/health").status
            if status == 200 { break }
            usleep(100_000)
        }
        XCTAssertEqual(status, 200)
        XCTAssertEqual(try complete(server.client, prompt: [1, 2, 3], maxTokens: 3, extra: ["ignore_eos": true]).tokens.count, 3)
        let text = try server.client.postJSON("/v1/completions", ["prompt": "Hello", "max_tokens": 2])
        XCTAssertEqual(text.status, 400)
        XCTAssertTrue(text.text.contains("token ids"), text.text)
    }

    func testSIGINTToRankZeroAloneStopsEveryRank() throws {
        let server = try ServerProcess()
        XCTAssertEqual(try complete(server.client, prompt: [1, 2, 3], maxTokens: 2).tokens.count, 2)
        kill(try XCTUnwrap(server.rankPIDs()[0]), SIGINT)
        let exit = server.waitForExit()
        XCTAssertFalse(exit.timedOut)
        XCTAssertEqual(exit.status, 0, server.stderr)
        XCTAssertEqual(exit.rankExits, [0: 0, 1: 0], server.stderr)
        XCTAssertEqual(server.rankPIDs(), [:])
    }

    func testADeadRankFailsTheServerFast() throws {
        let server = try ServerProcess()
        let stream = try server.client.openStream("/v1/completions", ["prompt": [1, 2, 3], "max_tokens": 1500, "temperature": 0,
                                                                     "stream": true, "ignore_eos": true])
        XCTAssertNotNil(try stream.nextEvent())
        let pids = server.rankPIDs()
        XCTAssertEqual(pids.count, 2)
        kill(pids[1]!, SIGKILL)
        // The client's stream ends (an error event or a closed connection), never hangs.
        var ended = false
        do {
            while let event = try stream.nextEvent() { if event == "[DONE]" { break } }
            ended = true
        } catch HTTPClientError.timeout {
            XCTFail("the stream hung after a rank died")
        } catch {
            ended = true
        }
        XCTAssertTrue(ended)
        let exit = server.waitForExit(timeout: 60)
        XCTAssertFalse(exit.timedOut, "the job hung after a rank died")
        XCTAssertNotEqual(exit.status, 0)
        XCTAssertEqual(server.rankPIDs(), [:], "a rank outlived the job")
    }
}

/// Docs/Embedding.md's app: the code in the document is the example target's
/// source, and the example, run under mpirun, serves what `weft generate` does.
final class EmbeddingExampleTests: XCTestCase {
    static let root = MPIRun.fixture.deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    func testTheDocumentShowsTheExampleSource() throws {
        let source = try String(contentsOf: Self.root.appendingPathComponent("Sources/WeftEmbeddingExample/main.swift"), encoding: .utf8)
        let document = try String(contentsOf: Self.root.appendingPathComponent("Docs/Embedding.md"), encoding: .utf8)
        XCTAssertTrue(document.contains("```swift\n" + source + "```"), "Docs/Embedding.md must include Sources/WeftEmbeddingExample/main.swift verbatim")
    }

    func testTheExampleAppServesUnderMPIRun() throws {
        let example = MPIRun.weft.deletingLastPathComponent().appendingPathComponent("weft-embedding-example")
        let server = try ServerProcess(executable: example, ranks: 2, marker: nil, waitUntilReady: false,
                                       arguments: [MPIRun.fixture.path, "0"])
        let response = try server.client.send("POST", "/generate", body: Data("Hello world".utf8))
        XCTAssertEqual(response.status, 200, response.text)
        let generate = try MPIRun.run(ranks: 2, ["generate", "--model", MPIRun.fixture.path, "--threads", "1", "--json",
                                                 "--prompt", "Hello world", "--max-tokens", "32"])
        let expected = try JSONSerialization.jsonObject(with: Data(generate.stdout.utf8)) as! [String: Any]
        XCTAssertEqual(response.text, expected["text"] as? String)
        XCTAssertEqual(try server.client.send("POST", "/generate", body: Data()).status, 400)
        server.stop()
    }
}

/// The start-up both serving programs share (`ServingJob`): a model that
/// cannot load fails every rank with one error line and a non-zero exit,
/// under mpirun, in `weft serve` and in the embedding example alike.
final class ServingStartupTests: XCTestCase {
    static let missing = "/nonexistent/weft-model"

    func checkFailedOnEveryRank(_ outcome: MPIRun.Outcome, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertFalse(outcome.timedOut, "the job hung", file: file, line: line)
        XCTAssertEqual(outcome.rankExits, [0: 1, 1: 1], outcome.stderr, file: file, line: line)
        let errors = outcome.stderr.split(separator: "\n").filter { $0.hasPrefix("error:") }
        XCTAssertEqual(errors.count, 1, "one report (by rank 0) of an error every rank shares: \(outcome.stderr)", file: file, line: line)
        XCTAssertTrue(errors.first?.contains(Self.missing) == true, "names the model path: \(outcome.stderr)", file: file, line: line)
    }

    func testServeWithAMissingModelFailsEveryRank() throws {
        checkFailedOnEveryRank(try MPIRun.run(ranks: 2, ["serve", "--model", Self.missing, "--threads", "1", "--port", "0"], timeout: 120))
    }

    func testTheExampleWithAMissingModelFailsEveryRank() throws {
        let example = MPIRun.weft.deletingLastPathComponent().appendingPathComponent("weft-embedding-example")
        checkFailedOnEveryRank(try Self.run(example, ranks: 2, [Self.missing, "0"]))
    }

    /// `MPIRun.run` for another executable: every rank in the exit-code
    /// wrapper, every rank allowed to finish.
    static func run(_ executable: URL, ranks: Int, _ arguments: [String], timeout: TimeInterval = 120) throws -> MPIRun.Outcome {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["mpirun", "--allow-run-as-root", "--oversubscribe", "-q", "--mca", "btl", "self,vader",
                             "--mca", "orte_abort_on_non_zero_status", "0", "-np", String(ranks),
                             "/bin/sh", "-c", MPIRun.rankWrapper, executable.path] + arguments
        process.environment = MPIRun.launcherEnvironment()
        let out = Pipe(), err = Pipe()
        process.standardOutput = out
        process.standardError = err
        let outData = MPIRun.DataCollector(out.fileHandleForReading), errData = MPIRun.DataCollector(err.fileHandleForReading)
        try process.run()
        let deadline = Date().addingTimeInterval(timeout)
        var timedOut = false
        while process.isRunning && !timedOut {
            timedOut = Date() > deadline
            usleep(20_000)
        }
        if timedOut { process.terminate() }
        process.waitUntilExit()
        let stderr = errData.finish()
        return MPIRun.Outcome(status: process.terminationStatus, stdout: outData.finish(), stderr: stderr,
                              rankExits: MPIRun.rankExits(stderr), timedOut: timedOut)
    }
}

extension ServingStartupTests {
    /// The library names `ServingConfiguration.maxModelLength`; `weft serve`
    /// names the flag its user typed.
    func testServeNamesTheFlagOfALengthBeyondTheModel() throws {
        let outcome = try MPIRun.run(ranks: 2, ["serve", "--model", MPIRun.fixture.path, "--threads", "1", "--port", "0",
                                                "--max-model-len", "4096"], timeout: 120)
        XCTAssertEqual(outcome.rankExits, [0: 1, 1: 1], outcome.stderr)
        let errors = outcome.stderr.split(separator: "\n").filter { $0.hasPrefix("error:") }
        XCTAssertEqual(errors, ["error: --max-model-len: 4096 exceeds the model's max_position_embeddings 2048"], outcome.stderr)
    }
}
