import WeftComm
import WeftModel
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

    func run(_ model: LlamaModel, mode: CommMode, split: Int? = nil, cuts: [Int]? = nil, offset: Int) throws -> [Float] {
        let b = batch(offset: offset)
        defer { for s in b.spans { model.cache.release(sequence: s.sequence) } }
        return try model.forward(b, mode: mode, split: split, cuts: cuts)
    }

    func testModesAndTransportsMatchBaseline() throws {
        for transport in CommTransport.allCases {
            let model = try Fixtures.model(threads: 2, blocks: 128, transport: transport)
            let baseline = try run(model, mode: .baseline, offset: 0)
            XCTAssertEqual(try run(model, mode: .nocomm, offset: 10), baseline, "one rank: nocomm is exact")
            Fixtures.assertClose(try run(model, mode: .fused, offset: 20), baseline, relative: 1e-5, "fused \(transport)")
            // 41 = end of the first span; 20 cuts the first prefill; 1 and 52 are extreme.
            for split in [41, 20, 1, 52] {
                Fixtures.assertClose(try run(model, mode: .overlap, split: split, offset: 30 + split), baseline,
                                     relative: 1e-5, "overlap \(transport) split \(split)")
            }
            // Three, four and five chunks, cuts inside and at span ends.
            for (i, cuts) in [[20, 41], [1, 20, 52], [10, 30, 41, 50]].enumerated() {
                Fixtures.assertClose(try run(model, mode: .overlap, cuts: cuts, offset: 90 + 5 * i), baseline,
                                     relative: 1e-5, "overlap \(transport) cuts \(cuts)")
            }
            XCTAssertThrowsError(try run(model, mode: .overlap, split: 0, offset: 99))
            XCTAssertThrowsError(try run(model, mode: .overlap, cuts: [20, 20], offset: 99), "cuts must increase")
            XCTAssertThrowsError(try run(model, mode: .overlap, cuts: [20, 53], offset: 99), "cuts inside the batch")
            XCTAssertEqual(model.cache.usedBlockCount, 0)
        }
    }
}
