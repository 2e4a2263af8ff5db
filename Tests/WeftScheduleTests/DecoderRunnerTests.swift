import Foundation
import WeftComm
import WeftModel
@_spi(Benchmarks) import WeftSchedule
import WeftTensor
import XCTest

/// An architecture that is not Llama, written against `DecoderLayers` alone:
/// its "attention" averages the keys of every earlier row of the batch (one
/// causal sequence) from a cache of its own, so a chunk that ran before an
/// earlier chunk had written its keys would change the result.
final class ToyLayers: DecoderLayers {
    let hiddenSize = 8, layerCount = 3
    let rmsNormEps: Float = 1e-5
    let pool: ComputePool
    /// input norm of layer 0, post-attention norm of layer 0, input norm of layer 1, …, the final norm.
    let norms: [FloatBuffer]
    /// Each layer's keys by batch row (the toy's KV cache).
    var keys: [[Float]] = []

    init(pool: ComputePool) {
        self.pool = pool
        var norms: [FloatBuffer] = []
        for n in 0...(2 * 3) {
            var weight: [Float] = []
            for j in 0..<8 { weight.append(0.5 + Float((j * 5 + n * 3) % 7) / 7) }
            norms.append(FloatBuffer(weight))
        }
        self.norms = norms
    }

    func inputNorm(layer: Int) -> FloatBuffer { norms[2 * layer] }
    func postAttentionNorm(layer: Int) -> FloatBuffer { norms[2 * layer + 1] }

    func validate(_ batch: FlatBatch) throws {
        if let bad = batch.tokens.first(where: { $0 < 0 }) { throw ModelError.input("token \(bad) is negative") }
    }

    func beginPass(_ batch: FlatBatch, buffers: PassBuffers) throws -> any DecoderPass {
        keys = Array(repeating: Array(repeating: 0, count: batch.count * hiddenSize), count: layerCount)
        return Pass(layers: self, batch: batch, buffers: buffers)
    }

    var layerWeights: (attention: Int, mlp: Int) { (2 * 64, 3 * 64) }

    func measureComputeRates(rows: Int, repeats: Int) throws -> ComputeRates {
        ComputeRates(gemmFlopsPerSecond: 1e9, weightBytesPerSecond: 1e9, attentionPairsPerSecond: 1e9)
    }

    struct Pass: DecoderPass {
        let layers: ToyLayers
        let batch: FlatBatch
        let buffers: PassBuffers
        var h: Int { layers.hiddenSize }

        func embed() {
            for (row, token) in batch.tokens.enumerated() {
                for j in 0..<h { buffers.partials[row * h + j] = sin(Float(Int(token) * h + j)) }
            }
        }

        func attention(_ rows: Range<Int>, layer: Int) {
            for r in rows { for j in 0..<h { layers.keys[layer][r * h + j] = buffers.normed[r * h + j] } }
            for r in rows {
                for j in 0..<h {
                    let sum = (0...r).reduce(Float(0)) { $0 + layers.keys[layer][$1 * h + j] }
                    buffers.partials[r * h + j] = 0.5 * sum / Float(r + 1)
                }
            }
        }

        func mlp(_ rows: Range<Int>, layer: Int) {
            for r in rows { for j in 0..<h { buffers.partials[r * h + j] = tanh(buffers.normed[r * h + j] * Float(layer + 1)) } }
        }

        func logits() -> [Float] { batch.logitRows.flatMap { row in (0..<h).map { buffers.normed[row * h + $0] } } }
    }
}

/// The runner runs any architecture: every schedule gives the baseline's
/// result on one rank, and the stagger runs each phase chunk by chunk.
final class DecoderRunnerTests: XCTestCase {
    nonisolated(unsafe) static let world: Communicator = try! Communicator.world()

    func batch() -> FlatBatch {
        var batch = FlatBatch()
        batch.append(sequence: 0, tokens: (0..<7).map { Int32($0 * 3 + 1) }, firstPosition: 0, logits: .all)
        return batch
    }

    func testEveryScheduleMatchesTheBaseline() throws {
        let layers = ToyLayers(pool: try ComputePool(threads: 1, pin: false))
        let collective = try FusedResidualNorm(communicator: Self.world, hidden: layers.hiddenSize, transport: nil)
        defer { collective.close() }
        let runner = DecoderRunner(layers: layers, communicator: Self.world, collective: collective)
        let baseline = try runner.forward(batch(), schedule: .baseline)
        XCTAssertEqual(baseline.count, 7 * 8)
        XCTAssertEqual(try runner.forward(batch(), schedule: .skipReductions(BenchmarkOnly())), baseline, "one rank: nothing to sum")
        let schedules: [Schedule] = [.fused, .overlap(try Schedule.Cuts([3], rows: 7)), .overlap(try Schedule.Cuts(chunkRows: [2, 2, 3])),
                                     .overlap(try Schedule.Cuts(chunkRows: [1, 1, 1, 1, 1, 1, 1]))]
        for schedule in schedules {
            let result = try runner.forward(batch(), schedule: schedule)
            XCTAssertEqual(result.count, baseline.count)
            for (a, b) in zip(result, baseline) { XCTAssertEqual(a, b, accuracy: 1e-5, "\(schedule)") }
        }
        // A causal mix that ignored earlier chunks would differ from the baseline: the test can fail.
        let alone = try runner.forward({ var b = FlatBatch(); b.append(sequence: 0, tokens: [10, 13, 16, 19], firstPosition: 0, logits: .all); return b }())
        XCTAssertNotEqual(Array(alone.prefix(8)), Array(baseline[(3 * 8)..<(4 * 8)]))
    }

    func testTheStaggerRunsEachPhaseChunkByChunk() throws {
        let layers = ToyLayers(pool: try ComputePool(threads: 1, pin: false))
        let collective = try FusedResidualNorm(communicator: Self.world, hidden: layers.hiddenSize, transport: nil)
        defer { collective.close() }
        let runner = DecoderRunner(layers: layers, communicator: Self.world, collective: collective)
        let recorder = TraceRecorder()
        runner.trace = recorder
        _ = try runner.forward(batch(), schedule: .overlap(try Schedule.Cuts([3], rows: 7)))
        runner.trace = nil
        let compute = recorder.recorded.filter { $0.lane == TraceRecorder.Lane.compute.rawValue }.map(\.name)
        let layersSteps = (0..<3).flatMap { l in ["attention A L\(l)", "attention B L\(l)", "mlp A L\(l)", "mlp B L\(l)"] }
        XCTAssertEqual(compute, ["embed"] + layersSteps + ["logits"])
    }

    func testRefusals() throws {
        let layers = ToyLayers(pool: try ComputePool(threads: 1, pin: false))
        let bare = DecoderRunner(layers: layers, communicator: Self.world)
        XCTAssertThrowsError(try bare.forward(batch(), schedule: .fused), "no fused collective")
        XCTAssertThrowsError(try bare.forward(batch(), schedule: .overlap(try Schedule.Cuts([3], rows: 8))), "cut for another batch")
        var negative = FlatBatch()
        negative.append(sequence: 0, tokens: [1, -2], firstPosition: 0, logits: .last)
        XCTAssertThrowsError(try bare.forward(negative), "the architecture's own validation runs first")
        XCTAssertEqual(try bare.forward(FlatBatch()), [], "an empty batch computes nothing")
    }
}
