import WeftModel
import XCTest
@testable import WeftRuntime

final class BatchSchedulerTests: XCTestCase {
    func limits(running: Int = 4, tokens: Int = 8, blocks: Int = 16, blockSize: Int = 4) -> BatchScheduler.Limits {
        .init(maxRunning: running, maxBatchTokens: tokens, kvBlocks: blocks, kvBlockSize: blockSize)
    }

    /// A follower rank's view: a cache that only applies plans.
    func follower(blocks: Int, blockSize: Int = 4) -> PagedKVCache {
        PagedKVCache(layerCount: 1, blockSize: blockSize, blockCount: blocks, kvWidth: 1, node: nil)
    }

    func apply(_ plan: StepPlan, to cache: PagedKVCache) throws {
        try cache.apply(releases: plan.releases, allocations: plan.allocations.map { ($0.sequence, $0.blocks) })
    }

    func spans(_ plan: StepPlan) -> [(Int, Int, Int, FlatBatch.Logits)] {
        plan.batch.spans.map { ($0.sequence, $0.firstPosition, $0.rows.count, $0.logits) }
    }

    func testLongPromptIsChunkedUnderTheBudgetAndDecodesGoFirst() {
        var scheduler = BatchScheduler(limits: limits(tokens: 8))
        scheduler.enqueue(id: 0, prompt: [1, 2, 3], maxNewTokens: 4)
        scheduler.enqueue(id: 1, prompt: Array(repeating: 7, count: 12), maxNewTokens: 2)
        // Step 1: all of prompt 0 (asks for logits), 5 tokens of prompt 1 (no logits).
        var plan = scheduler.nextStep()
        XCTAssertEqual(spans(plan).map(\.0), [0, 1])
        XCTAssertEqual(spans(plan).map(\.2), [3, 5])
        XCTAssertEqual(spans(plan).map(\.3), [.last, .none])
        XCTAssertEqual(plan.batch.count, 8)
        scheduler.append(token: 42, to: 0)
        // Step 2: sequence 0 decodes its token at position 3, then 7 more of prompt 1.
        plan = scheduler.nextStep()
        XCTAssertEqual(plan.batch.spans[0].sequence, 0)
        XCTAssertEqual(plan.batch.spans[0].firstPosition, 3)
        XCTAssertEqual(Array(plan.batch.tokens[0..<1]), [42])
        XCTAssertEqual(spans(plan)[1].1, 5)
        XCTAssertEqual(spans(plan)[1].2, 7)
        XCTAssertEqual(spans(plan)[1].3, .last)   // completes prompt 1
        XCTAssertEqual(plan.batch.count, 8)
    }

    func testAdmissionCountsTheBlocksUsedNowNotTheWorstCase() {
        // 4 blocks of 4 positions: 16 positions in all. Reserving the worst
        // case (10 + 15 positions) would run one of them at a time.
        var scheduler = BatchScheduler(limits: limits(tokens: 64, blocks: 4))
        scheduler.enqueue(id: 0, prompt: [1, 2, 3, 4, 5], maxNewTokens: 6)   // 2 blocks now, 3 at most
        scheduler.enqueue(id: 1, prompt: [1, 2], maxNewTokens: 14)           // 1 block now, 4 at most
        let plan = scheduler.nextStep()
        XCTAssertEqual(plan.batch.spans.map(\.sequence), [0, 1])
        XCTAssertEqual(scheduler.usedBlocks, 3)
        XCTAssertEqual(plan.allocations.map(\.sequence), [0, 1])
        XCTAssertEqual(plan.allocations.map(\.blocks.count), [2, 1])
        XCTAssertFalse(scheduler.fits(promptTokens: 16, maxNewTokens: 2))
        XCTAssertTrue(scheduler.fits(promptTokens: 15, maxNewTokens: 2))
        XCTAssertNil(scheduler.violation())
    }

    func testSequencesTakeBlocksAsTheyGrowAndReleasesComeFirst() throws {
        var scheduler = BatchScheduler(limits: limits(tokens: 64, blocks: 4))
        let mirror = follower(blocks: 4)
        scheduler.enqueue(id: 0, prompt: [1, 2, 3], maxNewTokens: 8)
        var plan = scheduler.nextStep()
        try apply(plan, to: mirror)
        XCTAssertEqual(plan.allocations.first?.blocks.count, 1)
        // Positions 3 (first block's last) then 4 (needs a second block).
        scheduler.append(token: 9, to: 0)
        plan = scheduler.nextStep()
        XCTAssertTrue(plan.allocations.isEmpty)
        scheduler.append(token: 9, to: 0)
        plan = scheduler.nextStep()
        XCTAssertEqual(plan.allocations.map(\.blocks.count), [1])
        XCTAssertEqual(plan.batch.positions, [4])
        try apply(plan, to: mirror)
        XCTAssertEqual(mirror.capacity(of: 0), 8)
        XCTAssertTrue(scheduler.finish(id: 0))
        XCTAssertEqual(scheduler.usedBlocks, 0, "blocks return to the ledger at once")
        plan = scheduler.nextStep()
        XCTAssertEqual(plan.releases, [0])
        try apply(plan, to: mirror)
        XCTAssertEqual(mirror.sequenceCount, 0)
        XCTAssertFalse(scheduler.finish(id: 0), "already gone")
    }

    func testRunningSlotsAreLimitedAndTheQueueIsFIFO() {
        var scheduler = BatchScheduler(limits: limits(running: 2, tokens: 64, blocks: 64))
        for id in 0..<4 { scheduler.enqueue(id: id, prompt: [1, 2], maxNewTokens: 3) }
        let plan = scheduler.nextStep()
        XCTAssertEqual(plan.batch.spans.map(\.sequence), [0, 1])
        XCTAssertEqual(scheduler.waiting.map(\.id), [2, 3])
        // Cancelling a waiting request needs no release on the ranks.
        scheduler.finish(id: 3)
        scheduler.finish(id: 0)
        let next = scheduler.nextStep()
        XCTAssertEqual(next.releases, [0])
        XCTAssertEqual(next.batch.spans.map(\.sequence), [2], "1 has no token yet; 2 joins")
        XCTAssertFalse(scheduler.finish(id: 3), "already gone")
    }

    func testTheHeadOfTheQueueIsNotOvertaken() {
        // 3 blocks: the first request holds 2; the last one is kept free
        // while others run, so both later requests wait, in order.
        var scheduler = BatchScheduler(limits: limits(tokens: 64, blocks: 3))
        scheduler.enqueue(id: 0, prompt: [1, 2, 3, 4, 5, 6, 7], maxNewTokens: 1)
        scheduler.enqueue(id: 1, prompt: Array(repeating: 1, count: 9), maxNewTokens: 1)
        scheduler.enqueue(id: 2, prompt: [1], maxNewTokens: 1)
        XCTAssertEqual(scheduler.nextStep().batch.spans.map(\.sequence), [0])
        XCTAssertEqual(scheduler.waiting.map(\.id), [1, 2])
        scheduler.finish(id: 0)
        XCTAssertEqual(scheduler.nextStep().batch.spans.map(\.sequence), [1], "the head first; 2 would need the kept block")
    }

    func testStepPlanRoundTrips() throws {
        var batch = FlatBatch()
        batch.append(sequence: 3, tokens: [5, 6, 7], firstPosition: 10, logits: .none)
        batch.append(sequence: 9, tokens: [1], firstPosition: 0, logits: .last)
        let plan = StepPlan(releases: [1, 2], allocations: [.init(sequence: 3, blocks: [7, 0, 2]), .init(sequence: 9, blocks: [])],
                            batch: batch, stop: false)
        XCTAssertEqual(try StepPlan(encoded: plan.encoded()), plan)
        let stop = StepPlan(releases: [4], stop: true)
        XCTAssertEqual(try StepPlan(encoded: stop.encoded()), stop)
        XCTAssertThrowsError(try StepPlan(encoded: [0, 5, 1]))
        XCTAssertThrowsError(try StepPlan(encoded: [7, 0, 0]))
        XCTAssertThrowsError(try StepPlan(encoded: [0, 0, 1, 3, 5, 1]), "5 blocks announced, 1 given")
        XCTAssertThrowsError(try StepPlan(encoded: [0, 0, 1, 3, 1, -4] + FlatBatch().encoded()), "negative block")
        XCTAssertThrowsError(try StepPlan(encoded: [0, 0, 1_000_000, 3]), "more allocations than integers")
    }
}

final class StopStringFilterTests: XCTestCase {
    func run(_ pieces: [String], stops: [String]) -> (String, Bool) {
        var filter = StopStringFilter(stops: stops)
        var out = ""
        for piece in pieces {
            let (release, stopped) = filter.push(piece)
            out += release
            if stopped { return (out, true) }
        }
        return (out + filter.flush(), false)
    }

    func testStopStringSplitAcrossTokensIsCaughtAndNotReturned() {
        XCTAssertEqual(run(["Hello", " wo", "rld", "!"], stops: ["world"]).0, "Hello ")
        XCTAssertTrue(run(["Hello", " wo", "rld", "!"], stops: ["world"]).1)
        XCTAssertEqual(run(["a", "b", "c"], stops: ["bc", "abx"]).0, "a")
    }

    func testTextThatOnlyLooksLikeAStopIsReleasedLater() {
        var filter = StopStringFilter(stops: ["</s>"])
        XCTAssertEqual(filter.push("x </").release, "x ")
        XCTAssertEqual(filter.push("b>").release, "</b>")
        XCTAssertEqual(run(["x </"], stops: ["</s>"]).0, "x </")
    }

    func testEarliestStopWinsAndNoStopsPassesThrough() {
        XCTAssertEqual(run(["one two three"], stops: ["three", "two"]).0, "one ")
        XCTAssertEqual(run(["abc", "def"], stops: []).0, "abcdef")
        XCTAssertEqual(run(["abc", "def"], stops: [""]).0, "abcdef")
    }
}
