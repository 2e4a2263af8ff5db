import WeftComm
import WeftModel
@_spi(Benchmarks) import WeftSchedule
import WeftTensor
import XCTest

/// Every communication mode and transport gives the baseline's logits on one
/// rank, for splits at a span boundary, inside a long prefill and near the ends.
/// (Several ranks are covered by the mpirun end-to-end tests.)
final class CommModeTests: XCTestCase {
    func batch(offset: Int) -> FlatBatch {
        let cases = Fixtures.reference.logits_cases
        var batch = FlatBatch()
        batch.append(sequence: offset + 0, tokens: cases[2].tokens.map { Int32($0) }, firstPosition: 0, logits: .all)
        batch.append(sequence: offset + 1, tokens: cases[0].tokens.map { Int32($0) }, firstPosition: 0, logits: .all)
        batch.append(sequence: offset + 2, tokens: cases[1].tokens.map { Int32($0) }, firstPosition: 0, logits: .last)
        return batch
    }

    func run(_ model: TestDecoder, _ schedule: Schedule, offset: Int) throws -> [Float] {
        let b = batch(offset: offset)
        defer { for s in b.spans { model.cache.release(sequence: s.sequence) } }
        return try model.forward(b, schedule: schedule)
    }

    /// The batch's chunks cut at `cuts`.
    func overlap(_ cuts: [Int]) throws -> Schedule { .overlap(try Schedule.Cuts(cuts, rows: batch(offset: 0).count)) }

    /// Cuts are valid by construction: increasing, inside the batch, from
    /// cuts or from chunk sizes alike; a pass cut for another batch size is refused.
    func testCutsAreValidByConstruction() throws {
        XCTAssertThrowsError(try Schedule.Cuts([], rows: 53), "no cut")
        XCTAssertThrowsError(try Schedule.Cuts([0], rows: 53), "empty first chunk")
        XCTAssertThrowsError(try Schedule.Cuts([20, 20], rows: 53), "cuts must increase")
        XCTAssertThrowsError(try Schedule.Cuts([20, 53], rows: 53), "cuts inside the batch")
        XCTAssertThrowsError(try Schedule.Cuts(chunkRows: [53]), "one chunk")
        XCTAssertThrowsError(try Schedule.Cuts(chunkRows: [20, 0, 33]), "empty chunk")
        let cuts = try Schedule.Cuts([20, 41], rows: 53)
        XCTAssertEqual(cuts, try Schedule.Cuts(chunkRows: [20, 21, 12]))
        XCTAssertEqual(cuts.chunks, [0..<20, 20..<41, 41..<53])
        XCTAssertEqual(cuts.cuts, [20, 41])
        XCTAssertEqual(cuts.rows, 53)
        let model = try Fixtures.model(threads: 2, blocks: 128)
        XCTAssertThrowsError(try run(model, .overlap(Schedule.Cuts([20], rows: 40)), offset: 0)) { error in
            XCTAssertTrue("\(error)".contains("cut for 40 tokens"), "\(error)")
        }
        XCTAssertEqual(model.cache.usedBlockCount, 0)
    }

    func testModesAndTransportsMatchBaseline() throws {
        for transport in CommTransport.allCases {
            let model = try Fixtures.model(threads: 2, blocks: 128, transport: transport)
            XCTAssertEqual(batch(offset: 0).count, 53)
            let baseline = try run(model, .baseline, offset: 0)
            XCTAssertEqual(try run(model, .skipReductions(BenchmarkOnly()), offset: 10), baseline, "one rank: skipping the reductions is exact")
            Fixtures.assertClose(try run(model, .fused, offset: 20), baseline, relative: 1e-5, "fused \(transport)")
            // 41 = end of the first span; 20 cuts the first prefill; 1 and 52 are extreme.
            for split in [41, 20, 1, 52] {
                Fixtures.assertClose(try run(model, overlap([split]), offset: 30 + split), baseline,
                                     relative: 1e-5, "overlap \(transport) split \(split)")
            }
            // Three, four and five chunks, cuts inside and at span ends.
            for (i, cuts) in [[20, 41], [1, 20, 52], [10, 30, 41, 50]].enumerated() {
                Fixtures.assertClose(try run(model, overlap(cuts), offset: 90 + 5 * i), baseline,
                                     relative: 1e-5, "overlap \(transport) cuts \(cuts)")
            }
            XCTAssertEqual(model.cache.usedBlockCount, 0)
        }
    }

    /// Every wire format on one rank: the MPI transport still sends the
    /// normalized rows through the all-gather in the wire format (to itself),
    /// so the format's rounding reaches the logits. f32 is the baseline's
    /// result; bf16, fp16 and q8_0 differ from it (the format is applied) by
    /// at most their bound relative to the largest logit. (Several ranks, the
    /// reduce-scatter's rounding too: Tests/WeftEndToEndTests/CommModeTests.)
    func testWireFormatsOnOneRank() throws {
        let config = try ModelConfig.load(directory: Fixtures.tinyLlama)
        let plan = try TensorParallelPlan(config: config, rank: 0, size: 1)
        let pool = try ComputePool(threads: 2, pin: false)
        let weights = try LlamaWeights(config: config, plan: plan, source: CheckpointSource(directory: Fixtures.tinyLlama),
                                       pool: pool, node: nil)
        // Measured worst |Δ| / max |logit| on this batch (printed below): f32 9.1e-7,
        // bf16 3.3e-3, fp16 4.1e-4, q8_0 9.8e-3 (only the all-gather rounds on one rank).
        let bound: [WireFormat: Float] = [.f32: 1e-5, .bf16: 1e-2, .fp16: 2e-3, .q8_0: 2e-2]
        var baseline: [Float] = []
        for (i, wire) in WireFormat.allCases.enumerated() {
            let cache = PagedKVCache(layerCount: config.layerCount, blockSize: 4, blockCount: 128,
                                     kvWidth: plan.kvHeads.count * config.headDim, node: nil)
            let collective = try FusedResidualNorm(communicator: Fixtures.world, hidden: config.hiddenSize, transport: .mpi, wire: wire)
            XCTAssertEqual(collective.wire, wire)
            let model = TestDecoder(LlamaModel(weights: weights, communicator: Fixtures.world, pool: pool, cache: cache), collective: collective)
            if i == 0 { baseline = try run(model, .baseline, offset: 0) }
            let fused = try run(model, .fused, offset: 10)
            let overlapped = try run(model, overlap([20, 41]), offset: 20)
            XCTAssertEqual(fused.count, baseline.count)
            let scale = baseline.map(abs).max() ?? 1
            for (label, result) in [("fused", fused), ("overlap", overlapped)] {
                let worst = zip(result, baseline).map { abs($0 - $1) }.max() ?? 0
                print("wire \(wire) one rank \(label): max |Δ| / max |logit| = \(worst / scale)")
                XCTAssertLessThanOrEqual(worst, bound[wire]! * scale, "\(wire) \(label): max |Δ| \(worst) of \(scale)")
                if wire != .f32 { XCTAssertGreaterThan(worst, 0, "\(wire) \(label): identical to f32, so the wire format was not applied") }
            }
            collective.close()
        }
    }
}
