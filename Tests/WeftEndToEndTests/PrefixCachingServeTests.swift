import Foundation
import XCTest

/// Automatic prefix caching and preemption (issue #14) end to end: real
/// `mpirun` jobs of `weft serve` on the tiny-llama fixture, driven over HTTP.
///
/// Reusing cached KV blocks and recomputing a preempted sequence are pure
/// optimizations: a request must get exactly the tokens it gets without
/// them, greedy or seeded. Each test therefore compares against a server (or
/// a run) where the mechanism cannot act, and checks from /metrics that it
/// did act where it should — a comparison of two runs that both skipped it
/// would prove nothing.
///
/// Every server here uses blocks of 4 positions, so prompts of a few dozen
/// tokens span several blocks and a cache of 16-24 blocks is small enough
/// for 4 concurrent generations to outgrow it.
final class PrefixCachingServeTests: XCTestCase {
    static let blockSize = 4
    static let smallBlocks = ["--kv-block-size", String(blockSize)]

    /// A shared "system prompt" of 6 blocks (ids well inside the fixture's
    /// vocabulary of 4096, away from its BOS/EOS ids 4094 and 4095).
    static let system = (0..<24).map { ($0 * 37) % 4000 + 1 }

    /// Greedy decoding and seeded sampling. Every request runs to
    /// max_tokens, so runs are compared over their whole length.
    ///
    /// Seeded sampling keeps the 5 likeliest tokens: a recomputed position's
    /// logits come from a prefill chunk, the original's from a decode, and the
    /// two agree only to ~1e-5 (FlatBatchTests); over the fixture's whole
    /// vocabulary of near-equal probabilities such a difference reorders
    /// neighbours and moves a draw to another token (about 1 request in 10
    /// after preemptions). Among 5 tokens it does not, while a draw lost or
    /// repeated across a preemption would still change most tokens.
    static var modes: [(name: String, fields: [String: Any])] {
        [("greedy", ["temperature": 0, "ignore_eos": true]),
         ("seeded", ["temperature": 1.0, "top_k": 5, "seed": 1234, "ignore_eos": true])]
    }

    /// 4 distinct prompts of 10 tokens (3 blocks; no two share a first block).
    static let shortPrompts = (0..<4).map { k in (0..<10).map { i in (i * 37 + k * 101) % 4000 + 1 } }

    // MARK: 1. Reused prefixes

    /// Requests sharing a 6-block prefix, sent one after another, get the
    /// same tokens from a caching server as from one started with
    /// --no-prefix-cache; the caching server's hit counter grows by exactly
    /// the reusable full blocks (never the block holding the last prompt
    /// token), the other's never moves. The last case is a second turn:
    /// the first turn's prompt + its completion + more, which reuses the
    /// blocks the first turn's generated tokens filled.
    func testReusedPrefixesGiveTheSameTokensAsNoCache() throws {
        let cached = try ServerProcess(Self.smallBlocks)
        defer { cached.stop() }
        let uncached = try ServerProcess(Self.smallBlocks + ["--no-prefix-cache"])
        defer { uncached.stop() }
        let maxTokens = 12
        let tails = [[100, 101, 102], [200, 201], [300, 301, 302, 303], []]
        // Hit tokens per request on the caching server: the first request
        // finds nothing; later ones the 6 system blocks, or 5 when the prompt
        // is exactly those 6 blocks (its last token must be computed); the
        // second turn the 9 full blocks of turn one's 27 prompt and 11 fed-back tokens.
        let expectedHits = ["greedy": [0, 24, 24, 20, 24, 36], "seeded": [24, 24, 24, 20, 24, 36]]
        for mode in Self.modes {
            var withCache: [[Int]] = []
            for (s, server) in [cached, uncached].enumerated() {
                var hits: [Double] = []
                var answers: [[Int]] = []
                func ask(_ prompt: [Int]) throws -> [Int] {
                    let before = try Self.counter(server, "weft_prefix_cache_hit_tokens_total")
                    let tokens = try complete(server.client, prompt: prompt, maxTokens: maxTokens, extra: mode.fields).tokens
                    XCTAssertEqual(tokens.count, maxTokens)
                    hits.append(try Self.counter(server, "weft_prefix_cache_hit_tokens_total") - before)
                    answers.append(tokens)
                    return tokens
                }
                for tail in tails { _ = try ask(Self.system + tail) }
                let turn1 = Self.system + [500, 501, 502]
                let reply = try ask(turn1)
                _ = try ask(turn1 + reply + [600, 601])
                if s == 0 {
                    XCTAssertEqual(hits, expectedHits[mode.name]!.map(Double.init), "\(mode.name): prefix cache hits per request")
                    withCache = answers
                } else {
                    XCTAssertEqual(hits, Array(repeating: 0, count: answers.count), "\(mode.name): --no-prefix-cache must not reuse")
                    for (index, (reused, computed)) in zip(withCache, answers).enumerated() {
                        XCTAssertEqual(reused, computed, "\(mode.name) request \(index): reused prefix vs computed")
                    }
                }
            }
        }
        XCTAssertGreaterThan(try Self.counter(cached, "weft_prefix_cache_hit_rate"), 0)
        XCTAssertGreaterThan(try Self.counter(cached, "weft_prefix_cache_blocks"), 0)
        XCTAssertEqual(try cached.metric("weft_kv_blocks_in_use"), 0, "cached blocks nobody holds are not in use")
        XCTAssertEqual(try uncached.metric("weft_prefix_cache_queried_tokens_total"), 0)
        XCTAssertEqual(try uncached.metric("weft_prefix_cache_blocks"), 0)
        try Self.stopCleanly(cached, ranks: 2)
        try Self.stopCleanly(uncached, ranks: 2)
    }

    // MARK: 2. Preemption

    /// 4 generations of 10 + 40 tokens (13 blocks each) at once in a cache
    /// of 16 blocks: sequences are preempted and recompute their tokens
    /// (from the prefix cache, or from scratch with --no-prefix-cache), and
    /// still get the tokens the same requests get on a server with room for
    /// all, greedy and seeded.
    func testPreemptedSequencesGiveTheSameTokensAsUnpreempted() throws {
        let maxTokens = 40
        func bodies(_ fields: [String: Any]) -> [[String: Any]] {
            Self.shortPrompts.enumerated().map { k, prompt in
                var body: [String: Any] = ["prompt": prompt, "max_tokens": maxTokens, "return_token_ids": true]
                body.merge(fields) { $1 }
                if body["seed"] != nil { body["seed"] = 1000 + k }   // a seed of its own
                return body
            }
        }
        let ample = try ServerProcess(Self.smallBlocks + ["--no-prefix-cache"])
        defer { ample.stop() }
        var expected: [String: [[Int]]] = [:]
        for mode in Self.modes { expected[mode.name] = try Self.completeConcurrently(ample.client, bodies(mode.fields)) }
        XCTAssertEqual(try ample.metric("weft_preemptions_total"), 0, "the reference server must have room for all")
        try Self.stopCleanly(ample, ranks: 2)

        for caching in [true, false] {
            let label = caching ? "prefix cache" : "no prefix cache"
            let small = try ServerProcess(Self.smallBlocks + ["--kv-blocks", "16", "--max-model-len", "64"]
                                          + (caching ? [] : ["--no-prefix-cache"]))
            defer { small.stop() }
            for mode in Self.modes {
                let before = try Self.counter(small, "weft_preemptions_total")
                let got = try Self.completeConcurrently(small.client, bodies(mode.fields))
                XCTAssertGreaterThan(try Self.counter(small, "weft_preemptions_total"), before,
                                     "\(label), \(mode.name): nothing was preempted, so this proves nothing")
                for (index, (tokens, reference)) in zip(got, expected[mode.name]!).enumerated() {
                    XCTAssertEqual(tokens.count, maxTokens)
                    XCTAssertEqual(tokens, reference, "\(label), \(mode.name) request \(index): preempted vs not")
                }
            }
            let hits = try Self.counter(small, "weft_prefix_cache_hit_tokens_total")
            if caching { XCTAssertGreaterThan(hits, 0, "recomputes should find their blocks cached") } else { XCTAssertEqual(hits, 0) }
            XCTAssertEqual(try small.metric("weft_kv_blocks_in_use"), 0)
            try Self.stopCleanly(small, ranks: 2)
        }
    }

    // MARK: 3. Cancellation

    /// On a cache too small for 4 concurrent generations: a client that
    /// leaves while its request is preempted (waiting to recompute) and one
    /// that leaves while its stream runs are cancelled; the others still get
    /// their tokens; every block comes back (weft_kv_blocks_in_use 0); a
    /// request needing most of the cache then runs; and SIGTERM stops every
    /// rank with exit 0, none finding a sequence left in its KV cache.
    func testCancellingPreemptedAndRunningRequestsFreesEveryBlock() throws {
        // 8 + 80 tokens: 22 of the 24 blocks each.
        let server = try ServerProcess(Self.smallBlocks + ["--kv-blocks", "24", "--max-model-len", "96"])
        defer { server.stop() }
        let maxTokens = 80
        let prompts = Self.shortPrompts.map { Array($0.prefix(8)) }
        func body(_ k: Int) -> [String: Any] {
            ["prompt": prompts[k], "max_tokens": maxTokens, "temperature": 0, "ignore_eos": true, "return_token_ids": true]
        }
        // Each alone first: nothing to preempt.
        let alone = try prompts.map { try complete(server.client, prompt: $0, maxTokens: maxTokens, extra: ["ignore_eos": true]).tokens }
        XCTAssertEqual(try server.metric("weft_preemptions_total"), 0)

        // Non-streamed requests, admitted in order 0...3 (each is in the
        // scheduler before the next is sent). The newest running sequence is
        // the one preempted, so once one waits after a preemption, 3 does.
        var pending: [PendingCompletion] = []
        for k in 0..<4 {
            pending.append(try PendingCompletion(port: server.port, body: body(k)))
            XCTAssertTrue(try Self.poll { try Self.live(server) == Double(k + 1) }, "request \(k) did not reach the scheduler")
        }
        let preemptionsBefore = try Self.counter(server, "weft_preemptions_total")
        XCTAssertTrue(try Self.poll { try Self.counter(server, "weft_preemptions_total") > preemptionsBefore
                                      && Self.counter(server, "weft_queue_depth") >= 1 },
                      "no request was preempted")
        pending[3].cancel()
        XCTAssertTrue(try Self.poll { try Self.live(server) <= 3 }, "the preempted request was not cancelled")
        for k in 0..<3 {
            XCTAssertEqual(try pending[k].tokens(), alone[k], "request \(k) after a preempted neighbour was cancelled")
        }
        try waitForMetric(server, "weft_kv_blocks_in_use", 0)
        try waitForMetric(server, "weft_queue_depth", 0)

        // Streams: the oldest leaves once it has tokens (it is running); the
        // newest leaves at once (running or preempted); the middle two finish.
        let streams = try (0..<4).map { k in try server.client.openStream("/v1/completions", body(k).merging(["stream": true]) { $1 }) }
        for _ in 0..<2 { XCTAssertNotNil(try streams[0].nextEvent()) }
        streams[0].close()
        streams[3].close()
        for k in 1...2 {
            var tokens: [Int] = []
            while let event = try streams[k].nextEvent(), event != "[DONE]" {
                let json = try JSONSerialization.jsonObject(with: Data(event.utf8)) as! [String: Any]
                XCTAssertNil(json["error"], event)
                tokens += ((json["choices"] as? [[String: Any]])?.first?["token_ids"] as? [Int]) ?? []
            }
            XCTAssertEqual(tokens, alone[k], "stream \(k) after its neighbours left")
        }
        try waitForMetric(server, "weft_running_sequences", 0)
        try waitForMetric(server, "weft_queue_depth", 0)
        try waitForMetric(server, "weft_kv_blocks_in_use", 0)
        XCTAssertGreaterThan(try Self.counter(server, "weft_preemptions_total"), preemptionsBefore)

        // Every block is free on every rank: a request taking 22 of the 24
        // blocks runs (evicting cached prefixes) and gets its tokens.
        let fresh = [7, 77, 777, 1777, 2777, 3777, 17, 27]
        let reference = try complete(server.client, prompt: fresh, maxTokens: maxTokens, extra: ["ignore_eos": true]).tokens
        XCTAssertEqual(reference.count, maxTokens)
        XCTAssertEqual(try complete(server.client, prompt: prompts[0], maxTokens: maxTokens, extra: ["ignore_eos": true]).tokens, alone[0])
        try Self.stopCleanly(server, ranks: 2)
    }

    // MARK: 4. One rank

    /// The same at one rank (rank 0 alone keeps the ledger and the cache):
    /// a repeated prompt reuses its blocks and gets the same tokens, and 4
    /// concurrent generations in a cache of 16 blocks are preempted and get
    /// the tokens each got alone.
    func testReuseAndPreemptionAtOneRank() throws {
        let server = try ServerProcess(ranks: 1, Self.smallBlocks + ["--kv-blocks", "16", "--max-model-len", "64"])
        defer { server.stop() }
        let maxTokens = 40
        let alone = try Self.shortPrompts.map { try complete(server.client, prompt: $0, maxTokens: maxTokens, extra: ["ignore_eos": true]).tokens }
        XCTAssertEqual(try server.metric("weft_prefix_cache_hit_tokens_total"), 0, "distinct first blocks: nothing to reuse")
        XCTAssertEqual(try server.metric("weft_preemptions_total"), 0)
        // The last prompt's blocks were released last, so they are still
        // cached: its 2 full blocks before the last token are reused.
        let again = try complete(server.client, prompt: Self.shortPrompts[3], maxTokens: maxTokens, extra: ["ignore_eos": true]).tokens
        XCTAssertEqual(try server.metric("weft_prefix_cache_hit_tokens_total"), Double(2 * Self.blockSize))
        XCTAssertEqual(again, alone[3], "reused blocks vs computed")
        let bodies = Self.shortPrompts.map { ["prompt": $0, "max_tokens": maxTokens, "temperature": 0, "ignore_eos": true,
                                              "return_token_ids": true] as [String: Any] }
        XCTAssertEqual(try Self.completeConcurrently(server.client, bodies), alone, "preempted vs alone")
        XCTAssertGreaterThan(try Self.counter(server, "weft_preemptions_total"), 0, "nothing was preempted, so this proves nothing")
        try waitForMetric(server, "weft_kv_blocks_in_use", 0)
        try Self.stopCleanly(server, ranks: 1)
    }

    // MARK: Helpers

    /// A metric that must be present.
    static func counter(_ server: ServerProcess, _ name: String) throws -> Double {
        try XCTUnwrap(try server.metric(name), "\(name) missing from /metrics")
    }

    /// Requests the scheduler holds: running or waiting (a preempted
    /// sequence waits until it can recompute).
    static func live(_ server: ServerProcess) throws -> Double {
        try counter(server, "weft_running_sequences") + counter(server, "weft_queue_depth")
    }

    /// Polls `condition` every 5 ms until it holds; false if it did not within `seconds`.
    static func poll(seconds: Double = 20, _ condition: () throws -> Bool) rethrows -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if try condition() { return true }
            usleep(5_000)
        }
        return try condition()
    }

    /// Sends every body to /v1/completions at once (a thread each) and
    /// returns each answer's token ids, in order.
    static func completeConcurrently(_ client: HTTPClient, _ bodies: [[String: Any]],
                                     file: StaticString = #filePath, line: UInt = #line) throws -> [[Int]] {
        final class Results: @unchecked Sendable {
            let lock = NSLock()
            var tokens: [Int: [Int]] = [:]
            var errors: [String] = []
            func record(_ i: Int, _ result: Result<[Int], Error>) {
                lock.lock(); defer { lock.unlock() }
                switch result {
                case .success(let t): tokens[i] = t
                case .failure(let e): errors.append("request \(i): \(e)")
                }
            }
        }
        let results = Results()
        let encoded = try bodies.map { try JSONSerialization.data(withJSONObject: $0) }
        let start = DispatchSemaphore(value: 0)
        let group = DispatchGroup()
        for (i, body) in encoded.enumerated() {
            group.enter()
            Thread.detachNewThread {
                defer { group.leave() }
                start.wait()
                results.record(i, Result<[Int], any Error>(catching: {
                    let response = try client.send("POST", "/v1/completions", headers: ["Content-Type": "application/json"], body: body)
                    guard response.status == 200 else { throw HTTPClientError.malformed("status \(response.status): \(response.text)") }
                    return try Self.tokenIDs(response)
                }))
            }
        }
        for _ in encoded { start.signal() }
        XCTAssertEqual(group.wait(timeout: .now() + 300), .success, "concurrent requests hung", file: file, line: line)
        XCTAssertEqual(results.errors, [], file: file, line: line)
        return encoded.indices.map { results.tokens[$0] ?? [] }
    }

    /// `choices[0].token_ids` of a non-streamed completion.
    static func tokenIDs(_ response: HTTPResponse) throws -> [Int] {
        guard let tokens = ((try response.json()["choices"] as? [[String: Any]])?.first?["token_ids"]) as? [Int] else {
            throw HTTPClientError.malformed("no token_ids: \(response.text.prefix(300))")
        }
        return tokens
    }

    /// SIGTERM to every rank, as `ServerProcess.stop` sends it, and more
    /// checks: each rank exited 0 and none reported a KV cache still
    /// holding a sequence after the drain.
    static func stopCleanly(_ server: ServerProcess, ranks: Int, file: StaticString = #filePath, line: UInt = #line) throws {
        server.signalRanks(SIGTERM)
        let exit = server.waitForExit()
        XCTAssertFalse(exit.timedOut, "the server did not stop on SIGTERM", file: file, line: line)
        XCTAssertEqual(exit.status, 0, server.stderr, file: file, line: line)
        XCTAssertEqual(exit.rankExits, Dictionary(uniqueKeysWithValues: (0..<ranks).map { ($0, Int32(0)) }), server.stderr, file: file, line: line)
        XCTAssertFalse(server.stderr.contains("still holds"), server.stderr, file: file, line: line)
        XCTAssertEqual(server.stderr.split(separator: "\n").filter { $0.hasPrefix("error") }, [], file: file, line: line)
    }
}

/// A non-streamed completion sent on a connection of its own without
/// waiting for the answer: `tokens()` reads the answer later; `cancel()`
/// closes the connection, a client that leaves (the server cancels the request).
final class PendingCompletion {
    private let connection: HTTPSocketConnection

    init(port: Int, body: [String: Any]) throws {
        let data = try JSONSerialization.data(withJSONObject: body)
        connection = try HTTPSocketConnection(port: port, timeout: 120)
        let head = "POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: \(data.count)\r\n\r\n"
        try connection.exchange(Data(head.utf8) + data) {}
    }

    func tokens() throws -> [Int] {
        let response = try connection.readResponse(method: "POST")
        guard response.status == 200 else { throw HTTPClientError.malformed("status \(response.status): \(response.text)") }
        return try PrefixCachingServeTests.tokenIDs(response)
    }

    func cancel() { connection.close() }
}
