import Foundation
import XCTest
@testable import WeftRuntime

/// Request intake and output processing, without a model: admission and its
/// limits, the phases of a shutdown, and how tokens end a request.
final class ServingIntakeTests: XCTestCase {
    let limits = RequestLimits(maxModelLength: 64, vocabularySize: 100,
                               scheduler: BatchScheduler.Limits(maxRunning: 1, maxBatchTokens: 16, kvBlocks: 4, kvBlockSize: 16))

    func testAdmissionStopsAtTheLimitAndEndedRequestsFreeTheirPlace() throws {
        let intake = RequestIntake(limits: limits, admissionLimit: 2)
        let request = GenerationRequest(prompt: [1, 2], maxTokens: 4)
        XCTAssertEqual(try intake.submit(request).id, 0)
        XCTAssertEqual(try intake.submit(request).id, 1)
        XCTAssertThrowsError(try intake.submit(request)) { error in
            guard case ServingError.overloaded = error else { return XCTFail("\(error)") }
        }
        let work = intake.take(waitIfIdle: false)
        XCTAssertEqual(work.arrivals.map(\.id), [0, 1])
        XCTAssertNil(work.drainDeadline)
        intake.ended()
        XCTAssertEqual(try intake.submit(request).id, 2)
    }

    func testBadRequestsAreRefusedBeforeTheyQueue() {
        let intake = RequestIntake(limits: limits, admissionLimit: 2)
        XCTAssertThrowsError(try intake.submit(GenerationRequest(prompt: [1, 200], maxTokens: 4))) { error in
            guard case ServingError.invalidRequest(let parameter, _) = error else { return XCTFail("\(error)") }
            XCTAssertEqual(parameter, "prompt")
        }
        XCTAssertEqual(intake.queuedCount, 0)
    }

    func testShutdownDrainsThenStopsAndAFailureFailsWhatWasNeverTaken() throws {
        let intake = RequestIntake(limits: limits, admissionLimit: 8)
        let request = GenerationRequest(prompt: [1], maxTokens: 1)
        _ = try intake.submit(request)
        intake.shutdown(drain: 60)
        intake.shutdown(drain: 0)   // the earlier deadline wins
        XCTAssertThrowsError(try intake.submit(request)) { XCTAssertEqual($0 as? ServingError, .shuttingDown) }
        let work = intake.take(waitIfIdle: true)   // does not wait: a shutdown is work
        XCTAssertEqual(work.arrivals.count, 1)
        XCTAssertLessThanOrEqual(try XCTUnwrap(work.drainDeadline), Date())

        let failing = RequestIntake(limits: limits, admissionLimit: 8)
        let untaken = try failing.submit(request)
        XCTAssertEqual(failing.close(failure: "rank 1 died").map(\.id), [untaken.id])
        XCTAssertEqual(failing.currentPhase, .failed("rank 1 died"))
        XCTAssertEqual(failing.close(failure: nil).count, 0)
        XCTAssertEqual(failing.currentPhase, .failed("rank 1 died"), "a later clean close keeps the failure")
        XCTAssertThrowsError(try failing.submit(request)) { XCTAssertEqual($0 as? ServingError, .engineFailed("rank 1 died")) }
    }

    func testAnAbandonedStreamCancelsItsRequest() throws {
        let intake = RequestIntake(limits: limits, admissionLimit: 8)
        var generation: (id: Int, outputs: AsyncThrowingStream<GenerationOutput, Error>)? = try intake.submit(GenerationRequest(prompt: [1], maxTokens: 1))
        let id = try XCTUnwrap(generation?.id)
        generation = nil   // the stream is dropped: its termination is a cancellation
        XCTAssertEqual(intake.take(waitIfIdle: false).cancellations, [id])
    }

    func testStopTokensEndTheStreamUnlessEndOfSequenceIsIgnored() throws {
        let intake = RequestIntake(limits: limits, admissionLimit: 8)
        var request = GenerationRequest(prompt: [1], maxTokens: 3)
        request.stopTokenIDs = [7]
        _ = try intake.submit(request)
        request.ignoreEOS = true
        _ = try intake.submit(request)
        let arrivals = intake.take(waitIfIdle: false).arrivals
        var stops = GenerationStream(arrivals[0], tokenizer: nil, endOfSequence: [2])
        XCTAssertNil(stops.accept(5).finishReason)
        XCTAssertEqual(stops.accept(2).finishReason, .stop)
        var ignores = GenerationStream(arrivals[1], tokenizer: nil, endOfSequence: [2])
        XCTAssertNil(ignores.accept(2).finishReason)
        let last = ignores.accept(5)
        XCTAssertNil(last.finishReason)
        XCTAssertEqual(ignores.accept(7).finishReason, .stop, "its own stop tokens still count")
        var length = GenerationStream(arrivals[1], tokenizer: nil, endOfSequence: [2])
        _ = length.accept(5)
        _ = length.accept(5)
        let third = length.accept(5)
        XCTAssertEqual(third.finishReason, .length)
        XCTAssertEqual(third.completionTokenCount, 3)
        XCTAssertEqual(third.promptTokenCount, 1)
    }
}
