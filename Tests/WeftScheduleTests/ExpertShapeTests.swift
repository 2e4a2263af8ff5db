import Foundation
import WeftComm
import WeftModel
@testable import WeftSchedule
import WeftTensor
import XCTest

/// What a mixture-of-experts model tells the split planner, and how it
/// travels to every rank.
final class ExpertShapeTests: XCTestCase {
    static let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fixtures")

    /// Rank `rank` of `size`'s model (its weights only: the shapes are read, nothing runs).
    func model(_ fixture: String, rank: Int, size: Int, placement: TensorParallelPlan.MoEPlacement) throws -> LlamaModel {
        let directory = Self.fixtures.appendingPathComponent(fixture)
        let config = try ModelConfig.load(directory: directory)
        let plan = try TensorParallelPlan(config: config, rank: rank, size: size, moePlacement: placement)
        let pool = try ComputePool(threads: 1, pin: false)
        let weights = try LlamaWeights(config: config, plan: plan, source: try CheckpointSource(directory: directory), pool: pool,
                                       node: nil, format: nil)
        let cache = PagedKVCache(layerCount: config.layerCount, blockSize: 4, blockCount: 4,
                                 kvWidth: plan.kvHeads.count * config.headDim, node: nil)
        return LlamaModel(weights: weights, communicator: DecoderRunnerTests.world, pool: pool, cache: cache)
    }

    /// tiny-mixtral: hidden 128, 8 experts of intermediate 192, 2 per token,
    /// 2 layers, both sparse; tiny-qwen2moe adds a shared expert of 160.
    func testModelsDescribeTheirExperts() throws {
        let tp = try model("tiny-mixtral", rank: 0, size: 2, placement: .tensorParallel)
        XCTAssertEqual(tp.expertLayers, ExpertLayerShape(count: 8, perToken: 2, held: 8, weightsPerExpert: 3 * 128 * 96,
                                                         sharedWeights: 8 * 128, layers: 2))
        XCTAssertEqual(tp.layerWeights.mlp, 0, "no dense layer")
        let ep = try model("tiny-mixtral", rank: 1, size: 2, placement: .expertParallel)
        XCTAssertEqual(ep.expertLayers, ExpertLayerShape(count: 8, perToken: 2, held: 4, weightsPerExpert: 3 * 128 * 192,
                                                         sharedWeights: 8 * 128, layers: 2))
        XCTAssertEqual(ep.layerWeights.attention, 128 * (64 + 2 * 32) + 128 * 64, "attention split as ever: 4 of 8 heads, 2 of 4 KV heads, 16 wide")
        // The shared expert's slice (3 × 128 × 80) and its one-row gate, and the router, every token multiplies.
        let qwen = try model("tiny-qwen2moe", rank: 0, size: 2, placement: .tensorParallel)
        XCTAssertEqual(qwen.expertLayers, ExpertLayerShape(count: 8, perToken: 2, held: 8, weightsPerExpert: 3 * 128 * 48,
                                                           sharedWeights: 8 * 128 + 3 * 128 * 80 + 128, layers: 2))
        let dense = try model("tiny-llama", rank: 0, size: 1, placement: .tensorParallel)
        XCTAssertNil(dense.expertLayers)
        XCTAssertGreaterThan(dense.layerWeights.mlp, 0)

        // Calibration times an expert's GEMM at 1…64 rows for a sparse model only.
        let curve = try XCTUnwrap(try tp.measureComputeRates(rows: 8, repeats: 1).expertSecondsPerWeight)
        XCTAssertEqual(curve.count, ComputeRates.expertRows.count)
        XCTAssertTrue(curve.allSatisfy { $0 > 0 && $0.isFinite }, "\(curve)")
        XCTAssertNil(try dense.measureComputeRates(rows: 8, repeats: 1).expertSecondsPerWeight)
    }

    func testCalibrationCarriesTheExpertsBitForBit() throws {
        let dense = CostModel(gemmFlopsPerSecond: 1.5e11, weightBytesPerSecond: 2e10, attentionPairsPerSecond: 3e9,
                              collectiveLatency: 2e-5, collectiveSecondsPerRow: 1e-6, collectiveOverlapsCompute: false)
        var sparse = dense
        sparse.expertSecondsPerWeight = [2.5e-10, 1.25e-10, 0.1e-10, 5e-324, .infinity, 3.0000000000000004e-11, -0.0]
        let experts = ExpertLayerShape(count: 128, perToken: 8, held: 64, weightsPerExpert: 3 * 4096 * 1536,
                                       sharedWeights: 1 << 33, layers: 47)
        for (costs, shape) in [(sparse, LayerShape(attentionWeights: 1 << 40, mlpWeights: 0, layerCount: 48, experts: experts)),
                               (dense, LayerShape(attentionWeights: 12, mlpWeights: 34, layerCount: 5))] {
            let calibration = Calibration(costs: costs, shape: shape)
            let again = try Calibration(encoded: calibration.encoded)
            XCTAssertEqual(again, calibration)
            XCTAssertEqual(again.costs.expertSecondsPerWeight?.map(\.bitPattern), costs.expertSecondsPerWeight?.map(\.bitPattern))
            XCTAssertEqual(calibration.encoded.count, 2 * (Calibration.costFields + 3 + Calibration.expertFields), "one length for every model")
            XCTAssertEqual(try calibration.broadcast(over: DecoderRunnerTests.world), calibration, "one rank: its own")
            XCTAssertThrowsError(try Calibration(encoded: Array(calibration.encoded.dropLast(2))))
        }
    }
}
