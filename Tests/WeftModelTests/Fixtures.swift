import Foundation
import WeftComm
import WeftModel
import WeftSchedule
import WeftTensor
import XCTest

/// The tiny Llama checkpoint and Hugging Face reference outputs shipped in Tests/Fixtures.
enum Fixtures {
    static let tinyLlama = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fixtures/tiny-llama")

    struct LogitsCase: Decodable {
        let tokens: [Int]
        let logits: [[Float]]
    }
    struct GreedyCase: Decodable {
        let prompt_tokens: [Int]
        let continuation: [Int]
        let top1_top2_margin: [Float]
    }
    struct Reference: Decodable {
        let logits_cases: [LogitsCase]
        let greedy_cases: [GreedyCase]
    }

    static let reference: Reference = {
        let data = try! Data(contentsOf: tinyLlama.appendingPathComponent("reference.json"))
        return try! JSONDecoder().decode(Reference.self, from: data)
    }()

    /// One MPI world per test process (a singleton job: one rank).
    nonisolated(unsafe) static let world: Communicator = try! Communicator.world()

    /// Loads the tiny model on this single rank.
    static func model(threads: Int = 2, blocks: Int = 64, blockSize: Int = 4, source: WeightSource? = nil,
                      config: ModelConfig? = nil, transport: CommTransport? = nil, format: WeightFormat? = nil,
                      directory: URL = tinyLlama) throws -> TestDecoder {
        let config = try config ?? ModelConfig.load(directory: directory)
        let plan = try TensorParallelPlan(config: config, rank: 0, size: 1)
        let pool = try ComputePool(threads: threads, pin: false)
        let weights = try LlamaWeights(config: config, plan: plan, source: source ?? CheckpointSource(directory: directory),
                                       pool: pool, node: nil, format: format)
        let cache = PagedKVCache(layerCount: config.layerCount, blockSize: blockSize, blockCount: blocks,
                                 kvWidth: plan.kvHeads.count * config.headDim, node: nil)
        let collective = try FusedResidualNorm(communicator: world, hidden: config.hiddenSize, transport: transport)
        return TestDecoder(LlamaModel(weights: weights, communicator: world, pool: pool, cache: cache), collective: collective)
    }

    /// Asserts every element within `relative` × max|reference| of the reference.
    static func assertClose(_ actual: [Float], _ expected: [Float], relative: Float = 1e-4,
                            _ message: String, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(actual.count, expected.count, message, file: file, line: line)
        let scale = expected.map { abs($0) }.max() ?? 1
        var worst: Float = 0
        for (a, e) in zip(actual, expected) { worst = max(worst, abs(a - e)) }
        XCTAssertLessThanOrEqual(worst, relative * scale, "\(message): max error \(worst), allowed \(relative * scale)", file: file, line: line)
    }
}

/// A model and the runner over it, paired as the engine pairs them, on this single rank.
final class TestDecoder {
    let model: LlamaModel
    let runner: DecoderRunner
    var cache: PagedKVCache { model.cache }
    var config: ModelConfig { model.config }
    var weights: LlamaWeights { model.weights }
    var pool: ComputePool { model.pool }

    init(_ model: LlamaModel, collective: FusedResidualNorm? = nil) {
        self.model = model
        runner = DecoderRunner(layers: model, communicator: Fixtures.world, collective: collective)
    }

    func forward(_ batch: FlatBatch, schedule: Schedule = .baseline) throws -> [Float] {
        try runner.forward(batch, schedule: schedule)
    }
}
