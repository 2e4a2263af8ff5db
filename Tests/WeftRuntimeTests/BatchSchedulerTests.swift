import WeftModel
import XCTest
@testable import WeftRuntime

final class BatchSchedulerTests: XCTestCase {
    func limits(running: Int = 4, tokens: Int = 8, blocks: Int = 16, blockSize: Int = 4) -> BatchScheduler.Limits {
        .init(maxRunning: running, maxBatchTokens: tokens, kvBlocks: blocks, kvBlockSize: blockSize)
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

    func testAdmissionReservesTheWorstCaseAndRequestsWaitForBlocks() {
        // 4 blocks of 4 positions: 16 positions in all.
        var scheduler = BatchScheduler(limits: limits(tokens: 64, blocks: 4))
        scheduler.enqueue(id: 0, prompt: [1, 2, 3, 4, 5], maxNewTokens: 6)   // 5 + 5 fed back = 10 positions: 3 blocks
        scheduler.enqueue(id: 1, prompt: [1, 2], maxNewTokens: 4)            // 5 positions: 2 blocks
        var plan = scheduler.nextStep()
        XCTAssertEqual(plan.batch.spans.map(\.sequence), [0])
        XCTAssertEqual(scheduler.reservedBlocks, 3)
        XCTAssertEqual(scheduler.waiting.map(\.id), [1])
        scheduler.append(token: 9, to: 0)
        plan = scheduler.nextStep()
        XCTAssertEqual(plan.batch.spans.map(\.sequence), [0], "still no room for sequence 1")
        // Sequence 0 ends: its blocks are released on every rank by the next plan, and 1 is admitted.
        XCTAssertTrue(scheduler.finish(id: 0))
        plan = scheduler.nextStep()
        XCTAssertEqual(plan.releases, [0])
        XCTAssertEqual(plan.batch.spans.map(\.sequence), [1])
        XCTAssertEqual(scheduler.reservedBlocks, 2)
        XCTAssertFalse(scheduler.fits(promptTokens: 16, maxNewTokens: 2))
        XCTAssertTrue(scheduler.fits(promptTokens: 15, maxNewTokens: 2))
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
        var scheduler = BatchScheduler(limits: limits(tokens: 64, blocks: 4))
        scheduler.enqueue(id: 0, prompt: [1, 2, 3, 4, 5, 6, 7, 8], maxNewTokens: 1)  // 2 blocks
        scheduler.enqueue(id: 1, prompt: Array(repeating: 1, count: 12), maxNewTokens: 1)  // 3 blocks: must wait
        scheduler.enqueue(id: 2, prompt: [1], maxNewTokens: 1)  // would fit, but arrived after 1
        let plan = scheduler.nextStep()
        XCTAssertEqual(plan.batch.spans.map(\.sequence), [0])
        XCTAssertEqual(scheduler.waiting.map(\.id), [1, 2])
    }

    func testStepPlanRoundTrips() throws {
        var batch = FlatBatch()
        batch.append(sequence: 3, tokens: [5, 6, 7], firstPosition: 10, logits: .none)
        batch.append(sequence: 9, tokens: [1], firstPosition: 0, logits: .last)
        let plan = StepPlan(releases: [1, 2], batch: batch, stop: false)
        XCTAssertEqual(try StepPlan(encoded: plan.encoded()), plan)
        let stop = StepPlan(releases: [4], stop: true)
        XCTAssertEqual(try StepPlan(encoded: stop.encoded()), stop)
        XCTAssertThrowsError(try StepPlan(encoded: [0, 5, 1]))
        XCTAssertThrowsError(try StepPlan(encoded: [7, 0, 0]))
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
