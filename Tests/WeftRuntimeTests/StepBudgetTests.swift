import Foundation
import WeftTensor
import WeftModel
import WeftSchedule
import XCTest
@testable import WeftRuntime

/// The step budget against a hand-made cost model: where its prediction puts
/// the chunk, and the bounds it never leaves.
final class StepBudgetTests: XCTestCase {
    /// A ~1B-shaped layer on one rank of 2 (as in TokenSplitPlannerTests).
    static let shape = LayerShape(attentionWeights: 2048 * 1536 + 1024 * 2048, mlpWeights: 3 * 2048 * 4096, layerCount: 16)
    /// A machine like the one in Docs/Serving.md: 65 GFLOP/s, 12 GB/s, so a
    /// GEMM turns compute-bound at 2 · 65e9 / 12e9 ≈ 10.8 rows (2·rows flops
    /// per weight against streaming its 4 bytes once).
    static let costs = CostModel(gemmFlopsPerSecond: 65e9, weightBytesPerSecond: 12e9, attentionPairsPerSecond: 2e9,
                                 collectiveLatency: 20e-6, collectiveSecondsPerRow: 1e-7, collectiveOverlapsCompute: false)
    static let crossover = 65e9 * 4 / (2 * 12e9)
    let planner = TokenSplitPlanner(costs: StepBudgetTests.costs, shape: StepBudgetTests.shape, granule: 4)

    func budget(_ target: StepTimeTarget = .default, maxBatchTokens: Int = 256, kvBlockSize: Int = 16,
                planner: TokenSplitPlanner? = nil) -> StepBudget {
        StepBudget(target: target, maxBatchTokens: maxBatchTokens, kvBlockSize: kvBlockSize, planner: planner ?? self.planner)
    }

    /// `d` decodes at positions spread over 100..<600.
    func decodes(_ d: Int) -> [Int32] { (0..<d).map { Int32(100 + ($0 * 37) % 500) } }

    func testNothingDecodingGetsTheWholeCeiling() {
        XCTAssertEqual(budget().promptTokens(decodePositions: []), 256)
        XCTAssertEqual(budget(.adaptive(ratio: 1)).promptTokens(decodePositions: []), 256)
        XCTAssertEqual(budget(maxBatchTokens: 7).promptTokens(decodePositions: []), 7)
    }

    func testFixedIsTheCeilingAndNeedsNoPlanner() {
        let fixed = budget(.fixed)
        XCTAssertNil(fixed.planner)
        for d in [0, 1, 16, 100, 255, 256, 300] {
            XCTAssertEqual(fixed.promptTokens(decodePositions: decodes(d)), max(0, 256 - d), "\(d) decodes")
        }
    }

    /// Whatever the decodes, the chunk is the largest whose predicted step
    /// stays within the target, clamped to floor...ceiling; checked against the
    /// prediction itself, for a dense and a mixture-of-experts shape.
    func testChosenChunkIsTheLargestWithinTheTarget() {
        let moe = TokenSplitPlanner(costs: Self.costs,
                                    shape: LayerShape(attentionWeights: 4096 * 1536, mlpWeights: 0, layerCount: 4,
                                                      experts: ExpertLayerShape(count: 8, perToken: 2, held: 8, weightsPerExpert: 3 * 4096 * 7168,
                                                                                sharedWeights: 4096 * 8, layers: 4)),
                                    granule: 4)
        for planner in [planner, moe] {
            for ratio in [1.0, 1.5, 2, 4] {
                var budget = self.budget(.adaptive(ratio: ratio), planner: planner)
                if ratio == 2 { budget = StepBudget(target: .adaptive(ratio: 2), maxBatchTokens: 256, planner: planner, headWeights: 128_256 * 1024) }
                for d in [1, 2, 5, 10, 11, 16, 32, 64, 100, 200, 240, 250, 256, 260] {
                    let positions = decodes(d)
                    let n = budget.promptTokens(decodePositions: positions)
                    let ceiling = max(0, 256 - d), floor = min(16, ceiling)
                    let target = ratio * budget.predictedSeconds(decodePositions: positions, promptTokens: 0)
                    let context = "ratio \(ratio), \(d) decodes, chunk \(n)"
                    XCTAssertGreaterThanOrEqual(n, floor, context)
                    XCTAssertLessThanOrEqual(n, ceiling, context)
                    if n > floor {
                        XCTAssertLessThanOrEqual(budget.predictedSeconds(decodePositions: positions, promptTokens: n), target, context)
                    }
                    if n < ceiling {
                        XCTAssertGreaterThan(budget.predictedSeconds(decodePositions: positions, promptTokens: n + 1), target, context)
                    }
                }
            }
        }
    }

    /// Below the crossover a decode step is bound by streaming the weights and
    /// extra rows are nearly free, so the chunk is what fills the step up to
    /// ratio × crossover rows, shrinking as decodes take those rows. Past it
    /// every row costs the same and the chunk grows as (ratio − 1) × decodes.
    func testChunkShrinksUntilTheCrossoverThenGrowsWithTheDecodes() {
        let budget = self.budget(.adaptive(ratio: 2), maxBatchTokens: 4096)
        let chunks = (1...200).map { budget.promptTokens(decodePositions: decodes($0)) }
        let crossover = Int(Self.crossover)
        for d in 1..<crossover {
            XCTAssertGreaterThanOrEqual(chunks[d - 1], chunks[d], "non-increasing below the crossover (\(d) → \(d + 1) decodes)")
        }
        XCTAssertGreaterThan(chunks[0], chunks[crossover - 1])
        for d in (2 * crossover)..<200 {
            XCTAssertLessThanOrEqual(chunks[d - 1], chunks[d], "non-decreasing past the crossover (\(d) → \(d + 1) decodes)")
        }
        // Compute-bound: the chunk is about as many tokens as the decodes
        // (attention and collectives make prompt rows a little cheaper here).
        XCTAssertEqual(Double(chunks[199]), 200, accuracy: 20)
        // A plain decode step of one stream may grow to about 2 × crossover rows.
        XCTAssertEqual(Double(chunks[0] + 1), 2 * Self.crossover, accuracy: 2)
    }

    func testALargerRatioNeverGivesLess() {
        for d in [1, 8, 16, 64, 128] {
            let chunks = [1.0, 1.25, 1.5, 2, 3, 8].map { budget(.adaptive(ratio: $0)).promptTokens(decodePositions: decodes(d)) }
            XCTAssertEqual(chunks, chunks.sorted(), "\(d) decodes")
        }
        // Large enough, the ceiling decides.
        XCTAssertEqual(budget(.adaptive(ratio: 1000)).promptTokens(decodePositions: decodes(16)), 240)
    }

    func testTheFloorKeepsPrefillMovingAndTheCeilingBoundsIt() {
        // Ratio 1 with a compute-bound decode batch: nothing fits but the floor.
        XCTAssertEqual(budget(.adaptive(ratio: 1)).promptTokens(decodePositions: decodes(64)), 16)
        XCTAssertEqual(budget(.adaptive(ratio: 1), kvBlockSize: 32).promptTokens(decodePositions: decodes(64)), 32,
                       "the floor is at least one KV block")
        XCTAssertEqual(budget(.adaptive(ratio: 1), kvBlockSize: 4).floor, StepBudget.minimumFloor)
        XCTAssertEqual(StepBudget(target: .adaptive(ratio: 1), maxBatchTokens: 256, floor: 5, planner: planner)
            .promptTokens(decodePositions: decodes(64)), 5)
        // The ceiling below the floor: the ceiling; no room at all: nothing.
        XCTAssertEqual(budget(.adaptive(ratio: 1), maxBatchTokens: 72).promptTokens(decodePositions: decodes(64)), 8)
        XCTAssertEqual(budget(maxBatchTokens: 64).promptTokens(decodePositions: decodes(64)), 0)
        XCTAssertEqual(budget(maxBatchTokens: 64).promptTokens(decodePositions: decodes(70)), 0)
        // A prefill burst under 16 compute-bound decodes, where the fixed
        // ceiling cut in 240 tokens: about 16 (the step doubles).
        XCTAssertEqual(Double(budget().promptTokens(decodePositions: decodes(16))), 16, accuracy: 2)
    }

    /// The output projection costs a decode-only step what it costs the step
    /// with a chunk: counting it makes the chunk's share smaller, so the chunk larger.
    func testTheOutputProjectionCountsInTheDecodeOnlyStep() {
        let head = 128_256 * 2048 / 2   // Llama-3.2-1B's on one rank of 2
        let withHead = StepBudget(target: .default, maxBatchTokens: 4096, planner: planner, headWeights: head)
        let without = budget(maxBatchTokens: 4096)
        XCTAssertEqual(without.headWeights, 0)
        XCTAssertGreaterThan(withHead.predictedSeconds(decodePositions: decodes(8), promptTokens: 0),
                             without.predictedSeconds(decodePositions: decodes(8), promptTokens: 0))
        for d in [1, 8, 16, 64, 200] {
            XCTAssertGreaterThanOrEqual(withHead.promptTokens(decodePositions: decodes(d)), without.promptTokens(decodePositions: decodes(d)), "\(d) decodes")
        }
        XCTAssertGreaterThan(withHead.promptTokens(decodePositions: decodes(16)), without.promptTokens(decodePositions: decodes(16)))
    }

    func testAdaptiveWithoutAPlannerFallsBackToTheCeiling() {
        let unplanned = StepBudget(target: .default, maxBatchTokens: 256, planner: nil)
        XCTAssertEqual(unplanned.promptTokens(decodePositions: decodes(16)), 240)
    }

    func testTheConfigurationNamesItsTarget() throws {
        let engine = EngineConfiguration(weights: .random(shape: ServingConfigurationTests.shape, seed: 1))
        var configuration = ServingConfiguration(engine: engine)
        XCTAssertEqual(configuration.stepTimeTarget, .adaptive(ratio: 2))
        XCTAssertTrue(configuration.prefixCaching)
        XCTAssertNoThrow(try configuration.validate())
        for ratio in [0.5, 0, -1, .nan, .infinity, 1001] {
            configuration.stepTimeTarget = .adaptive(ratio: ratio)
            XCTAssertThrowsError(try configuration.validate(), "ratio \(ratio)") {
                XCTAssertEqual(($0 as? ParameterError)?.parameter?.name, "ServingConfiguration.stepTimeTarget")
                XCTAssertFalse("\($0)".contains("\n"))
            }
        }
        for target in [StepTimeTarget.fixed, .adaptive(ratio: 1), .adaptive(ratio: 1000)] {
            configuration.stepTimeTarget = target
            XCTAssertNoThrow(try configuration.validate(), "\(target)")
        }
    }

    /// `make` on a real engine (one rank): auto reuses the engine's planner,
    /// fused and baseline calibrate one of their own, fixed calibrates nothing.
    func testMakeTakesOrCalibratesAPlannerForEveryMode() throws {
        try ParameterNameTests.onOwnThread {
            for mode in [CommMode.auto, .fused, .baseline] {
                var engineConfiguration = EngineConfiguration(weights: .checkpoint(ParameterNameTests.tinyLlama), threads: 1)
                engineConfiguration.commMode = mode
                engineConfiguration.kvBlockSize = 4
                var configuration = ServingConfiguration(engine: engineConfiguration)
                configuration.maxModelLength = 64
                configuration.maxRunningSequences = 2
                let engine = try Engine(configuration: configuration.engine, communicator: ParameterNameTests.world) { model, resolved in
                    try configuration.size(&resolved, for: model)
                }
                defer { engine.close() }
                let budget = try StepBudget.make(configuration: configuration, engine: engine)
                XCTAssertNotNil(budget.planner, "\(mode)")
                if mode == .auto { XCTAssertEqual(budget.planner?.costs, engine.planner?.costs) }
                XCTAssertEqual(budget.floor, 16)
                let wholeHead = Double(engine.config.vocabularySize * engine.config.hiddenSize)
                XCTAssertEqual(Double(budget.headWeights), wholeHead, accuracy: 0.05 * wholeHead, "one rank holds the whole head")
                XCTAssertEqual(budget.promptTokens(decodePositions: []), 256)
                let n = budget.promptTokens(decodePositions: [3, 9])
                XCTAssertTrue((16...254).contains(n), "\(mode): \(n)")
                configuration.stepTimeTarget = .fixed
                let fixed = try StepBudget.make(configuration: configuration, engine: engine)
                XCTAssertNil(fixed.planner)
                XCTAssertEqual(fixed.promptTokens(decodePositions: [3, 9]), 254)
            }
        }
    }
}
