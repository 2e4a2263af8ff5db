import WeftModel
import XCTest
@testable import WeftRuntime

/// Prefix caching, preemption and the block ledger's invariants, on the
/// scheduler alone (the end-to-end tests check the tokens on real ranks).
final class PrefixCachingSchedulerTests: XCTestCase {
    func scheduler(blocks: Int, tokens: Int = 64, running: Int = 8, caching: Bool = true) -> BatchScheduler {
        BatchScheduler(limits: .init(maxRunning: running, maxBatchTokens: tokens, kvBlocks: blocks, kvBlockSize: 4, prefixCaching: caching))
    }

    /// Runs steps (sampling token `7` for every logits row) until `id` has
    /// `count` generated tokens; returns the plans.
    @discardableResult
    func run(_ scheduler: inout BatchScheduler, steps: Int, token: Int32 = 7, mirror: PagedKVCache? = nil) throws -> [StepPlan] {
        var plans: [StepPlan] = []
        for _ in 0..<steps {
            let plan = scheduler.nextStep()
            if let mirror { try mirror.apply(releases: plan.releases, allocations: plan.allocations.map { ($0.sequence, $0.blocks) }) }
            for span in plan.batch.spans where span.logits != .none { scheduler.append(token: token, to: span.sequence) }
            XCTAssertNil(scheduler.violation())
            plans.append(plan)
        }
        return plans
    }

    func testASharedPrefixIsReusedAfterItsRequestEnds() throws {
        var s = scheduler(blocks: 16)
        let system: [Int32] = Array(1...8)   // two full blocks
        s.enqueue(id: 0, prompt: system + [20, 21, 22], maxNewTokens: 4)
        let first = s.nextStep()
        let blocksOfFirst = first.allocations[0].blocks
        s.append(token: 5, to: 0)
        _ = s.nextStep()   // registers the computed blocks
        s.finish(id: 0)
        XCTAssertEqual(s.cachedBlocks, 3, "every full computed block stays cached: the prompt's and the one the first new token filled")
        XCTAssertEqual(s.usedBlocks, 0)

        s.enqueue(id: 1, prompt: system + [30, 31], maxNewTokens: 4)
        let plan = s.nextStep()
        XCTAssertEqual(plan.releases, [0])
        XCTAssertEqual(Array(plan.allocations[0].blocks.prefix(2)), Array(blocksOfFirst.prefix(2)), "the same physical blocks")
        XCTAssertEqual(plan.batch.spans.map(\.firstPosition), [8], "only the new tokens are computed")
        XCTAssertEqual(plan.batch.count, 2)
        XCTAssertEqual(s.statistics.hitTokens, 8)
        XCTAssertEqual(s.statistics.queriedTokens, 11 + 10)
        XCTAssertNil(s.violation())
    }

    func testConcurrentRequestsShareBlocksAndTheLastTokenIsAlwaysComputed() throws {
        var s = scheduler(blocks: 16)
        let mirror = PagedKVCache(layerCount: 1, blockSize: 4, blockCount: 16, kvWidth: 1, node: nil)
        let prompt: [Int32] = Array(1...8)
        s.enqueue(id: 0, prompt: prompt, maxNewTokens: 8)
        try run(&s, steps: 2, mirror: mirror)
        // Same 8 tokens: at most the first block is reused, so the last
        // token (position 7) is computed into a block of its own.
        s.enqueue(id: 1, prompt: prompt, maxNewTokens: 8)
        let plan = try run(&s, steps: 1, mirror: mirror)[0]
        let span = plan.batch.spans.first { $0.sequence == 1 }!
        XCTAssertEqual(span.firstPosition, 4)
        XCTAssertEqual(span.rows.count, 4)
        let table0 = s.running.first { $0.id == 0 }!.blocks, table1 = s.running.first { $0.id == 1 }!.blocks
        XCTAssertEqual(table0[0], table1[0], "the first block is shared while both run")
        XCTAssertNotEqual(table0[1], table1[1])
        XCTAssertEqual(s.ledger.references[Int(table0[0])], 2)
        XCTAssertEqual(mirror.table(of: 0)!, table0)
        XCTAssertEqual(mirror.table(of: 1)!, table1)
    }

    func testWithoutPrefixCachingNothingIsReused() {
        var s = scheduler(blocks: 16, caching: false)
        s.enqueue(id: 0, prompt: Array(1...9), maxNewTokens: 2)
        _ = s.nextStep()
        s.append(token: 1, to: 0)
        _ = s.nextStep()
        s.finish(id: 0)
        s.enqueue(id: 1, prompt: Array(1...9), maxNewTokens: 2)
        XCTAssertEqual(s.nextStep().batch.spans.map(\.firstPosition), [0])
        XCTAssertEqual(s.cachedBlocks, 0)
        XCTAssertEqual(s.statistics.queriedTokens, 0)
    }

    func testUnusedCachedBlocksAreEvictedLeastRecentlyReleasedFirstTailBeforeHead() {
        var s = scheduler(blocks: 6)
        // A: 2 full blocks + 1 partial, released first; B: the same later.
        s.enqueue(id: 0, prompt: Array(1...9), maxNewTokens: 1)
        _ = s.nextStep()
        s.finish(id: 0)
        s.enqueue(id: 1, prompt: Array(101...109), maxNewTokens: 1)
        _ = s.nextStep()
        s.finish(id: 1)
        XCTAssertEqual(s.cachedBlocks, 4)
        // C needs 3 blocks: 2 free, then the oldest parked: A's tail block.
        s.enqueue(id: 2, prompt: Array(201...209), maxNewTokens: 1)
        _ = s.nextStep()
        XCTAssertEqual(s.cachedBlocks, 3)
        s.finish(id: 2)
        // A's head block is still cached (its tail is gone): 4 tokens reused.
        // D's second block evicts the next oldest: B's tail.
        s.enqueue(id: 3, prompt: Array(1...9), maxNewTokens: 1)
        XCTAssertEqual(s.nextStep().batch.spans.map(\.firstPosition), [4])
        s.finish(id: 3)
        s.enqueue(id: 4, prompt: Array(101...109), maxNewTokens: 1)
        XCTAssertEqual(s.nextStep().batch.spans.map(\.firstPosition), [4], "B's head block survived its tail")
        XCTAssertNil(s.violation())
    }

    func testTheNewestSequenceIsPreemptedAndResumesWithItsTokens() throws {
        // 4 blocks of 4: two sequences of 6 prompt tokens (2 blocks each)
        // fill the cache; the older one's next block must come from the newer.
        var s = scheduler(blocks: 4, caching: false)
        let mirror = PagedKVCache(layerCount: 1, blockSize: 4, blockCount: 4, kvWidth: 1, node: nil)
        s.enqueue(id: 0, prompt: [1, 2, 3, 4, 5, 6], maxNewTokens: 10)
        s.enqueue(id: 1, prompt: [9, 9, 9, 9, 9, 9], maxNewTokens: 10)
        var plans = try run(&s, steps: 1, mirror: mirror)
        // 1 starts with one block's worth (one of the two free is kept free).
        XCTAssertEqual(plans[0].batch.spans.map(\.sequence), [0, 1])
        XCTAssertEqual(plans[0].batch.spans.map(\.rows.count), [6, 4])
        // Position 8 of sequence 0 (step 4) needs a fifth block: 1, the newest, is preempted.
        plans = try run(&s, steps: 3, mirror: mirror)
        XCTAssertEqual(s.statistics.preemptions, 1)
        let preempting = plans.first { $0.releases.contains(1) }!
        XCTAssertEqual(preempting.batch.spans.map(\.sequence), [0])
        XCTAssertNil(mirror.table(of: 1), "every rank drops the preempted table")
        XCTAssertEqual(s.waiting.map(\.id), [1])
        let generatedBefore = s.waiting[0].generatedCount
        XCTAssertGreaterThan(generatedBefore, 0)
        // 0 finishes; 1 is computed again from all its tokens, logits at the end.
        s.finish(id: 0)
        let resumed = try run(&s, steps: 1, mirror: mirror)[0]
        let span = resumed.batch.spans.first { $0.sequence == 1 }!
        XCTAssertEqual(span.firstPosition, 0)
        XCTAssertEqual(span.rows.count, 6 + generatedBefore)
        XCTAssertEqual(span.logits, .last)
        XCTAssertEqual(Array(resumed.batch.tokens[span.rows]), [9, 9, 9, 9, 9, 9] + Array(repeating: 7, count: generatedBefore))
        XCTAssertEqual(s.running.first!.generatedCount, generatedBefore + 1, "the token after the recompute is the next one")
    }

    func testAPreemptedSequenceRecomputesFromTheCache() throws {
        var s = scheduler(blocks: 4)
        s.enqueue(id: 0, prompt: [1, 2, 3, 4, 5, 6], maxNewTokens: 10)
        s.enqueue(id: 1, prompt: [9, 9, 9, 9, 9, 9], maxNewTokens: 10)
        try run(&s, steps: 5)
        XCTAssertEqual(s.statistics.preemptions, 1)
        XCTAssertEqual(s.statistics.queriedTokens, 12)
        s.finish(id: 0)
        try run(&s, steps: 1)
        XCTAssertEqual(s.statistics.hitTokens, 4, "the preempted sequence's full block stayed cached")
    }

    func testCancellingAPreemptedSequenceFreesEverything() throws {
        var s = scheduler(blocks: 4, caching: false)
        let mirror = PagedKVCache(layerCount: 1, blockSize: 4, blockCount: 4, kvWidth: 1, node: nil)
        s.enqueue(id: 0, prompt: [1, 2, 3, 4, 5, 6], maxNewTokens: 10)
        s.enqueue(id: 1, prompt: [9, 9, 9, 9, 9, 9], maxNewTokens: 10)
        try run(&s, steps: 5, mirror: mirror)
        XCTAssertEqual(s.waiting.map(\.id), [1], "preempted")
        XCTAssertTrue(s.finish(id: 1))
        XCTAssertTrue(s.finish(id: 0))
        try run(&s, steps: 1, mirror: mirror)
        XCTAssertTrue(s.isIdle)
        XCTAssertEqual(s.usedBlocks, 0)
        XCTAssertEqual(mirror.sequenceCount, 0)
        XCTAssertNil(s.violation())
    }

    /// Random traffic on a small cache: after every step the ledger agrees
    /// with the tables, a follower's tables equal the scheduler's, no token
    /// is written into a block another sequence holds, and every request
    /// ends with the tokens a run without contention gives it.
    func testInvariantsUnderRandomTraffic() throws {
        for caching in [true, false] {
            var rng = SplitMix64(seed: caching ? 1 : 2)   // the sampler's generator
            var s = scheduler(blocks: 12, tokens: 12, running: 4, caching: caching)
            let mirror = PagedKVCache(layerCount: 1, blockSize: 4, blockCount: 12, kvWidth: 1, node: nil)
            var nextID = 0
            var want: [Int: Int] = [:]   // id -> tokens to generate
            var ended = 0
            let prefixes: [[Int32]] = [Array(1...8), Array(50...53)]
            for step in 0..<5000 {
                if step >= 300 && want.isEmpty { break }
                if step < 300 && rng.next() % 3 == 0 {
                    let prefix = prefixes[Int(rng.next() % 3) % 2]
                    let tail = (0..<Int(rng.next() % 6)).map { _ in Int32(100 + rng.next() % 5) }
                    let prompt = (rng.next() % 4 == 0 ? [] : prefix) + tail + [Int32(nextID % 7 + 1)]
                    let count = 1 + Int(rng.next() % 12)
                    s.enqueue(id: nextID, prompt: prompt, maxNewTokens: count)
                    want[nextID] = count
                    nextID += 1
                }
                if rng.next() % 17 == 0, let victim = want.keys.sorted().first(where: { _ in rng.next() % 2 == 0 }) {
                    s.finish(id: victim)
                    want[victim] = nil
                    ended += 1
                }
                let plan = s.nextStep()
                try mirror.apply(releases: plan.releases, allocations: plan.allocations.map { ($0.sequence, $0.blocks) })
                for sequence in s.running { XCTAssertEqual(mirror.table(of: sequence.id) ?? [], sequence.blocks, "step \(step)") }
                XCTAssertEqual(mirror.sequenceCount, s.running.filter { !$0.blocks.isEmpty }.count)
                for span in plan.batch.spans {
                    let table = mirror.table(of: span.sequence)!
                    for position in span.firstPosition..<span.firstPosition + span.rows.count {
                        XCTAssertEqual(s.ledger.references[Int(table[position / 4])], 1, "step \(step): a write into a shared block")
                    }
                }
                XCTAssertNil(s.violation(), "step \(step)")
                for span in plan.batch.spans where span.logits != .none {
                    let sequence = s.running.first { $0.id == span.sequence }!
                    s.append(token: Int32(200 + sequence.generatedCount), to: span.sequence)
                    if sequence.generatedCount + 1 == want[span.sequence] {
                        s.finish(id: span.sequence)
                        want[span.sequence] = nil
                        ended += 1
                    }
                }
            }
            XCTAssertTrue(want.isEmpty, "every request ended (\(want.count) left)")
            XCTAssertEqual(ended, nextID)
            _ = s.nextStep().releases.map { mirror.release(sequence: $0) }
            XCTAssertEqual(s.usedBlocks, 0)
            XCTAssertEqual(mirror.sequenceCount, 0)
            if caching { XCTAssertGreaterThan(s.statistics.hitTokens, 0) } else { XCTAssertEqual(s.cachedBlocks, 0) }
            XCTAssertGreaterThan(s.statistics.preemptions, 0, "the cache is small enough to preempt")
        }
    }
}
