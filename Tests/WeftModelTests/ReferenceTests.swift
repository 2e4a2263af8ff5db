import WeftModel
import XCTest

/// The forward pass against Hugging Face transformers' own outputs.
final class ReferenceTests: XCTestCase {
    func testLogitsMatchTransformersAtEveryPosition() throws {
        let model = try Fixtures.model()
        for (index, reference) in Fixtures.reference.logits_cases.enumerated() {
            var batch = FlatBatch()
            batch.append(sequence: 100 + index, tokens: reference.tokens.map { Int32($0) }, firstPosition: 0, logits: .all)
            let logits = try model.forward(batch)
            model.cache.release(sequence: 100 + index)
            Fixtures.assertClose(logits, reference.logits.flatMap { $0 }, "logits case \(index)")
        }
    }

    /// Greedy decoding one token at a time through the KV cache.
    func testGreedyContinuationsMatchTransformers() throws {
        let model = try Fixtures.model()
        for (index, reference) in Fixtures.reference.greedy_cases.enumerated() {
            let sequence = 200 + index
            var pending = reference.prompt_tokens.map { Int32($0) }
            var position = 0
            var generated: [Int] = []
            for _ in reference.continuation {
                var batch = FlatBatch()
                batch.append(sequence: sequence, tokens: pending, firstPosition: position, logits: .last)
                let logits = try model.forward(batch)
                position += pending.count
                var best = 0
                for i in logits.indices where logits[i] > logits[best] { best = i }
                generated.append(best)
                pending = [Int32(best)]
            }
            model.cache.release(sequence: sequence)
            // Compare up to the first step where the reference itself is a near tie;
            // after a legitimately different pick the sequences diverge.
            for (step, expected) in reference.continuation.enumerated() {
                guard reference.top1_top2_margin[step] > 1e-3 else { break }
                XCTAssertEqual(generated[step], expected, "greedy case \(index), step \(step)")
                if generated[step] != expected { break }
            }
        }
    }
}
