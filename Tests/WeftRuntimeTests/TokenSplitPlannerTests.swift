import WeftSchedule
import WeftRuntime
import XCTest

/// Invariants of the token split planner.
final class TokenSplitPlannerTests: XCTestCase {
    /// A ~1B-shaped layer on one rank of 2.
    let shape = LayerShape(attentionWeights: 2048 * 1536 + 1024 * 2048, mlpWeights: 3 * 2048 * 4096, layerCount: 16)

    func costs(commPerRow: Double, latency: Double = 20e-6, overlaps: Bool = true) -> CostModel {
        CostModel(gemmFlopsPerSecond: 150e9, weightBytesPerSecond: 20e9, attentionPairsPerSecond: 2e9,
                  collectiveLatency: latency, collectiveSecondsPerRow: commPerRow, collectiveOverlapsCompute: overlaps)
    }

    func prefill(_ n: Int, from start: Int = 0) -> [Int32] { (start..<start + n).map { Int32($0) } }

    func testCandidatesAreGranuleMultiplesWithBothHalvesNonEmpty() {
        let planner = TokenSplitPlanner(costs: costs(commPerRow: 1e-6), shape: shape, granule: 14)
        for t in [2, 13, 14, 15, 28, 29, 100, 1000] {
            let candidates = planner.candidates(count: t)
            XCTAssertFalse(candidates.isEmpty, "t = \(t)")
            for a in candidates {
                XCTAssertTrue(a > 0 && a < t, "both halves non-empty (t \(t), a \(a))")
                if t > 14 { XCTAssertEqual(a % 14, 0, "row-block aligned (t \(t), a \(a))") }
            }
        }
        XCTAssertTrue(planner.candidates(count: 1).isEmpty, "one token cannot be split")
        XCTAssertNil(planner.bestSplit(positions: [7]))
    }

    func testNoSplitWhenCommunicationIsFree() {
        let planner = TokenSplitPlanner(costs: costs(commPerRow: 0, latency: 0), shape: shape, granule: 14)
        guard case .unsplit = planner.decide(positions: prefill(2048)) else { return XCTFail("nothing to hide: do not split") }
    }

    func testNoSplitWhenCollectiveCannotOverlap() {
        let planner = TokenSplitPlanner(costs: costs(commPerRow: 20e-6, overlaps: false), shape: shape, granule: 14)
        guard case .unsplit = planner.decide(positions: prefill(2048)) else { return XCTFail("same cores do both: do not split") }
    }

    func testSplitWhenCommunicationIsCostlyAndDecodeBatchesStayWhole() {
        // A collective costing about as much per row as the compute.
        let planner = TokenSplitPlanner(costs: costs(commPerRow: 2e-4), shape: shape, granule: 14)
        guard case .split(let cuts, let predicted, let unsplit) = planner.decide(positions: prefill(2048)) else {
            return XCTFail("communication-bound prefill should split")
        }
        XCTAssertFalse(cuts.isEmpty)
        for cut in cuts { XCTAssertEqual(cut % 14, 0) }
        XCTAssertLessThan(predicted, unsplit)
        // Eight decode tokens: splitting re-reads every weight twice for nothing.
        let decode: [Int32] = [100, 230, 17, 512, 90, 300, 41, 77]
        let cheapComm = TokenSplitPlanner(costs: costs(commPerRow: 1e-6), shape: shape, granule: 14)
        guard case .unsplit = cheapComm.decide(positions: decode) else { return XCTFail("decode batch should not split") }
    }

    /// With a link about as slow per row as attention computes, two halves
    /// leave the reductions after attention exposed (each has only the other
    /// half's attention to hide behind); the planner then prefers more chunks,
    /// and its prediction sits between the bounds the stagger allows.
    func testMoreChunksWhenAttentionWindowsAreShort() {
        let planner = TokenSplitPlanner(costs: costs(commPerRow: 1.2e-4), shape: shape, granule: 8)
        let positions = prefill(512)
        let two = planner.predictSplit(positions, at: planner.bestSplit(positions: positions)!)
        guard case .split(let cuts, let predicted, let unsplit) = planner.decide(positions: positions) else {
            return XCTFail("communication-heavy prefill should split")
        }
        XCTAssertGreaterThanOrEqual(cuts.count, 2, "expected 3 or more chunks, got cuts \(cuts)")
        XCTAssertLessThan(predicted, two)
        XCTAssertLessThan(predicted, unsplit)
        // Never below the compute alone nor the reductions alone; never above both in sequence.
        var free = costs(commPerRow: 0, latency: 0)
        free.collectiveOverlapsCompute = true
        let computeOnly = TokenSplitPlanner(costs: free, shape: shape, granule: 8).predictUnsplit(positions)
        let commOnly = Double(2 * shape.layerCount + 1) * Double(positions.count) * planner.costs.collectiveSecondsPerRow
        XCTAssertGreaterThanOrEqual(predicted, max(computeOnly, commOnly) * 0.999)
        XCTAssertLessThanOrEqual(predicted, (computeOnly + commOnly) * 1.001 + Double(cuts.count * (2 * shape.layerCount + 1)) * planner.costs.collectiveLatency)
        // Chunks of about equal cost, cut on the granule, in order.
        for k in 3...4 {
            let cuts = planner.cuts(positions: positions, chunks: k)!
            XCTAssertEqual(cuts.count, k - 1)
            XCTAssertEqual(cuts, cuts.sorted())
            for cut in cuts { XCTAssertEqual(cut % 8, 0); XCTAssertTrue(cut > 0 && cut < 512) }
            // Causal attention makes later rows dearer: the first chunk is the longest.
            XCTAssertGreaterThanOrEqual(cuts[0], 512 / k - 8)
        }
        XCTAssertNil(planner.cuts(positions: prefill(20), chunks: 4), "fewer granules than chunks")
    }

    /// The chosen cut is the best candidate under the model, and the model
    /// charges causal attention: rows deep in a sequence cost more.
    func testChoiceIsTheArgminAndAttentionIsCharged() {
        var attentionHeavy = costs(commPerRow: 5e-4)
        attentionHeavy.attentionPairsPerSecond = 2e6
        let planner = TokenSplitPlanner(costs: attentionHeavy, shape: shape, granule: 8)
        for positions in [prefill(1000), prefill(300, from: 4000) + prefill(200), [Int32](repeating: 50, count: 64)] {
            let chosen = planner.bestSplit(positions: positions)!
            for a in planner.candidates(count: positions.count) {
                XCTAssertLessThanOrEqual(planner.predictSplit(positions, at: chosen), planner.predictSplit(positions, at: a))
            }
        }
        XCTAssertGreaterThan(planner.predictUnsplit(prefill(1000, from: 5000)), planner.predictUnsplit(prefill(1000)) * 2)
    }

    /// Each comm mode resolves to the schedule its description promises: the
    /// fixed ones without a planner, `overlap` at the best cuts whether or not
    /// they pay, `auto` only when they do, and nothing to run for a batch too
    /// small to cut.
    func testCommModesResolveIntoSchedules() throws {
        let positions = prefill(2048)
        XCTAssertEqual(CommMode.baseline.schedule(for: positions, planner: nil), .baseline)
        XCTAssertEqual(CommMode.fused.schedule(for: positions, planner: nil), .fused)
        XCTAssertNil(CommMode.overlap.schedule(for: positions, planner: nil), "overlap needs the planner's cuts")
        XCTAssertNil(CommMode.auto.schedule(for: positions, planner: nil), "auto needs the planner")

        let free = TokenSplitPlanner(costs: costs(commPerRow: 0, latency: 0), shape: shape, granule: 14)
        XCTAssertEqual(CommMode.auto.schedule(for: positions, planner: free), .fused, "nothing to hide: auto stays whole")
        let best = try XCTUnwrap(free.bestCuts(positions: positions)).cuts
        XCTAssertEqual(CommMode.overlap.schedule(for: positions, planner: free), .overlap(try Schedule.Cuts(best, rows: 2048)),
                       "overlap cuts even when it does not pay")
        XCTAssertNil(CommMode.overlap.schedule(for: [7], planner: free), "one token cannot be cut")
        XCTAssertNil(free.overlapSchedule(positions: prefill(20), chunks: 3), "three chunks of 14-row granules need 42 rows")
        guard case .overlap(let three) = free.overlapSchedule(positions: positions, chunks: 3) else { return XCTFail("three chunks of 2048") }
        XCTAssertEqual(three.chunks.count, 3)

        let costly = TokenSplitPlanner(costs: costs(commPerRow: 2e-4), shape: shape, granule: 14)
        guard case .split(let cuts, _, _) = costly.decide(positions: positions) else { return XCTFail("costly link should split") }
        XCTAssertEqual(CommMode.auto.schedule(for: positions, planner: costly), .overlap(try Schedule.Cuts(cuts, rows: 2048)))
    }
}
