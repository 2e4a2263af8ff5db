import WeftComm
import WeftModel
import WeftSchedule
import WeftTensor
import XCTest

/// The tiny Llama with its KV cache in float32, f16 and bf16, against
/// Hugging Face transformers' float32 logits and greedy continuations.
final class KVDTypeTests: XCTestCase {
    /// Allowed max |Δlogit| / max |logit| per cache type. float32 is the
    /// reordering tolerance of every other reference test; 16-bit caches add
    /// one rounding (2^-11 relative for f16, 2^-8 for bf16) to every key and
    /// value, which moves the logits by a few times that.
    static let tolerance: [KVDType: Float] = [.f32: 1e-4, .f16: 1e-3, .bf16: 1e-2]

    static func model(dtype: KVDType, blockSize: Int = 4) throws -> TestDecoder {
        let config = try ModelConfig.load(directory: Fixtures.tinyLlama)
        let plan = try TensorParallelPlan(config: config, rank: 0, size: 1)
        let pool = try ComputePool(threads: 2, pin: false)
        let weights = try LlamaWeights(config: config, plan: plan, source: CheckpointSource(directory: Fixtures.tinyLlama),
                                       pool: pool, node: nil)
        let cache = PagedKVCache(layerCount: config.layerCount, blockSize: blockSize, blockCount: 64,
                                 kvWidth: plan.kvHeads.count * config.headDim, node: nil, dtype: dtype)
        return TestDecoder(LlamaModel(weights: weights, communicator: Fixtures.world, pool: pool, cache: cache))
    }

    /// Max |Δ| / max |reference| over every logits case, each computed as a
    /// prefill of all but the last 3 tokens and then 3 one-token decode steps
    /// (so the later rows read keys and values back from the cache).
    static func worstRelativeError(dtype: KVDType) throws -> Float {
        let model = try model(dtype: dtype)
        var worst: Float = 0
        for (index, reference) in Fixtures.reference.logits_cases.enumerated() {
            let tokens = reference.tokens.map { Int32($0) }
            let prefill = max(1, tokens.count - 3)
            var rows: [Float] = []
            var batch = FlatBatch()
            batch.append(sequence: index, tokens: Array(tokens[..<prefill]), firstPosition: 0, logits: .all)
            rows += try model.forward(batch)
            for p in prefill..<tokens.count {
                var step = FlatBatch()
                step.append(sequence: index, tokens: [tokens[p]], firstPosition: p, logits: .all)
                rows += try model.forward(step)
            }
            model.cache.release(sequence: index)
            let expected = reference.logits.flatMap { $0 }
            XCTAssertEqual(rows.count, expected.count, "\(dtype) case \(index)")
            let scale = expected.map { abs($0) }.max() ?? 1
            for (a, e) in zip(rows, expected) { worst = max(worst, abs(a - e) / scale) }
        }
        return worst
    }

    func testLogitsWithinToleranceForEveryCacheType() throws {
        var errors: [KVDType: Float] = [:]
        for dtype in KVDType.allCases {
            let worst = try Self.worstRelativeError(dtype: dtype)
            errors[dtype] = worst
            print("KV cache \(dtype.rawValue): max |Δlogit| / max |logit| = \(worst)")
            XCTAssertLessThanOrEqual(worst, Self.tolerance[dtype]!, "KV cache \(dtype.rawValue)")
        }
        // A 16-bit cache must actually round (else this test compares float32 with itself).
        XCTAssertGreaterThan(errors[.f16]!, errors[.f32]!)
        XCTAssertGreaterThan(errors[.bf16]!, errors[.f16]!)
    }

    /// Greedy decoding one token at a time through a 16-bit cache gives
    /// transformers' continuation (up to the reference's own near ties).
    func testGreedyContinuationsWith16BitCaches() throws {
        for dtype in [KVDType.f16, .bf16] {
            let model = try Self.model(dtype: dtype, blockSize: 3)
            for (index, reference) in Fixtures.reference.greedy_cases.enumerated() {
                var pending = reference.prompt_tokens.map { Int32($0) }
                var position = 0
                var generated: [Int] = []
                for _ in reference.continuation {
                    var batch = FlatBatch()
                    batch.append(sequence: index, tokens: pending, firstPosition: position, logits: .last)
                    let logits = try model.forward(batch)
                    position += pending.count
                    var best = 0
                    for i in logits.indices where logits[i] > logits[best] { best = i }
                    generated.append(best)
                    pending = [Int32(best)]
                }
                model.cache.release(sequence: index)
                for (step, expected) in reference.continuation.enumerated() {
                    guard reference.top1_top2_margin[step] > 1e-3 else { break }
                    XCTAssertEqual(generated[step], expected, "\(dtype) greedy case \(index), step \(step)")
                    if generated[step] != expected { break }
                }
            }
        }
    }

    func testSixteenBitCachesTakeHalfTheBytes() {
        let f32 = PagedKVCache(layerCount: 3, blockSize: 5, blockCount: 7, kvWidth: 9, node: nil)
        let f16 = PagedKVCache(layerCount: 3, blockSize: 5, blockCount: 7, kvWidth: 9, node: nil, dtype: .f16)
        let bf16 = PagedKVCache(layerCount: 3, blockSize: 5, blockCount: 7, kvWidth: 9, node: nil, dtype: .bf16)
        XCTAssertEqual(f32.byteCount, 2 * 3 * 5 * 7 * 9 * 4)
        XCTAssertEqual(f16.byteCount, f32.byteCount / 2)
        XCTAssertEqual(bf16.byteCount, f32.byteCount / 2)
        XCTAssertEqual(f32.dtype, .f32)
    }
}
