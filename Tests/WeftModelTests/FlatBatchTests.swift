import WeftModel
import XCTest

/// Several sequences in one forward pass must give what each gives alone.
final class FlatBatchTests: XCTestCase {
    func testMixedPrefillAndDecodeMatchSeparateRuns() throws {
        let model = try Fixtures.model(threads: 3, blocks: 128, blockSize: 4)
        let cases = Fixtures.reference.logits_cases
        let long = cases[2].tokens.map { Int32($0) }, short = cases[0].tokens.map { Int32($0) }, mid = cases[1].tokens.map { Int32($0) }

        // Alone: logits of every position of each sequence.
        func alone(_ tokens: [Int32], sequence: Int) throws -> [[Float]] {
            var batch = FlatBatch()
            batch.append(sequence: sequence, tokens: tokens, firstPosition: 0, logits: .all)
            let flat = try model.forward(batch)
            model.cache.release(sequence: sequence)
            let v = model.config.vocabularySize
            return (0..<tokens.count).map { Array(flat[$0 * v ..< ($0 + 1) * v]) }
        }
        let longAlone = try alone(long, sequence: 1), shortAlone = try alone(short, sequence: 2), midAlone = try alone(mid, sequence: 3)

        // Step 1: the first 30 tokens of `long` and the first 3 of `mid` prefill together.
        var step1 = FlatBatch()
        step1.append(sequence: 10, tokens: Array(long[0..<30]), firstPosition: 0, logits: .all)
        step1.append(sequence: 11, tokens: Array(mid[0..<3]), firstPosition: 0, logits: .last)
        // Step 2: the rest of `long` (prefill, continuing a cached prefix), one decode
        // token of `mid`, and all of `short` (a fresh prefill) in one batch.
        var step2 = FlatBatch()
        step2.append(sequence: 12, tokens: short, firstPosition: 0, logits: .all)
        step2.append(sequence: 11, tokens: [mid[3]], firstPosition: 3, logits: .last)
        step2.append(sequence: 10, tokens: Array(long[30...]), firstPosition: 30, logits: .all)
        let v = model.config.vocabularySize
        let out1 = try model.forward(step1)
        let out2 = try model.forward(step2)
        XCTAssertEqual(out1.count, 31 * v)
        XCTAssertEqual(out2.count, (short.count + 1 + long.count - 30) * v)
        func row(_ flat: [Float], _ i: Int) -> [Float] { Array(flat[i * v ..< (i + 1) * v]) }
        for i in 0..<30 { Fixtures.assertClose(row(out1, i), longAlone[i], relative: 1e-5, "long row \(i)") }
        Fixtures.assertClose(row(out1, 30), midAlone[2], relative: 1e-5, "mid row 2")
        for i in 0..<short.count { Fixtures.assertClose(row(out2, i), shortAlone[i], relative: 1e-5, "short row \(i)") }
        Fixtures.assertClose(row(out2, short.count), midAlone[3], relative: 1e-5, "mid decode row 3")
        for i in 30..<long.count {
            Fixtures.assertClose(row(out2, short.count + 1 + i - 30), longAlone[i], relative: 1e-5, "long row \(i)")
        }
        for s in 10...12 { model.cache.release(sequence: s) }
        XCTAssertEqual(model.cache.usedBlockCount, 0, "every block returns to the pool")
    }

    func testBatchEncodingRoundTrips() throws {
        var batch = FlatBatch()
        batch.append(sequence: 7, tokens: [1, 2, 3], firstPosition: 0, logits: .all)
        batch.append(sequence: 9, tokens: [4], firstPosition: 12, logits: .last)
        batch.append(sequence: 3, tokens: [5, 6], firstPosition: 2, logits: .none)
        let decoded = try FlatBatch(encoded: batch.encoded())
        XCTAssertEqual(decoded, batch)
        XCTAssertEqual(batch.logitRows, [0, 1, 2, 3])
        XCTAssertEqual(batch.positions, [0, 1, 2, 12, 2, 3])
        XCTAssertThrowsError(try FlatBatch(encoded: [1, 7, 0, 1, 5]))
    }

    func testOutOfRangeTokenIsRejected() throws {
        let model = try Fixtures.model()
        var batch = FlatBatch()
        batch.append(sequence: 1, tokens: [1, 4096], firstPosition: 0)
        XCTAssertThrowsError(try model.forward(batch)) { error in
            XCTAssertTrue("\(error)".contains("token id 4096"), "\(error)")
            XCTAssertTrue("\(error)".contains("4096 ids"), "\(error)")
        }
    }
}
