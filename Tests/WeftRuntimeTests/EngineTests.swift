import Foundation
import WeftComm
import WeftModel
import WeftTensor
import XCTest
@testable import WeftRuntime
@testable import WeftSchedule

/// The runtime names its own parameters (what an embedder set), never the
/// `weft` CLI's flags; the CLI maps the names to flags where it prints errors.
final class ParameterNameTests: XCTestCase {
    func parameter(_ body: () throws -> Void) -> InvalidParameter? {
        do { try body(); return nil } catch {
            XCTAssertFalse("\(error)".contains("--"), "\(error)")
            return (error as? ParameterError)?.parameter
        }
    }

    func testSamplerNamesItsParameters() {
        XCTAssertEqual(parameter { try Sampler.validate(temperature: -1, topP: 1) }?.name, "Sampler.temperature")
        XCTAssertEqual(parameter { try Sampler.validate(temperature: .nan, topP: 1) }?.name, "Sampler.temperature")
        XCTAssertEqual(parameter { try Sampler.validate(temperature: 1, topP: 0) },
                       InvalidParameter("Sampler.topP", "must be in (0, 1], got 0.0"))
        XCTAssertNil(parameter { try Sampler.validate(temperature: 0.7, topP: 0.9) })
    }

    func testEngineConfigurationNamesItsParameters() {
        var configuration = EngineConfiguration(weights: .random(shape: URL(fileURLWithPath: "/nonexistent"), seed: 1))
        func blocks() throws { _ = try Engine.kvBlocks(configuration: configuration, length: 64, layers: 2, kvWidth: 64) }
        XCTAssertNil(parameter(blocks))
        configuration.kvBlockSize = 0
        XCTAssertEqual(parameter(blocks), InvalidParameter("EngineConfiguration.kvBlockSize", "must be 1...65536 positions, got 0"))
        configuration.kvBlockSize = 16
        configuration.kvBlocks = 0
        XCTAssertEqual(parameter(blocks)?.name, "EngineConfiguration.kvBlocks")
        configuration.kvBlocks = Int(Int32.max)
        XCTAssertEqual(parameter(blocks)?.name, "EngineConfiguration.kvBlocks", "a cache larger than the machine's memory")
        XCTAssertNil(RuntimeError.invalidInput("the prompt is empty").parameter)
    }

    /// One MPI world per test process (a singleton job: one rank).
    nonisolated(unsafe) static let world: Communicator = try! Communicator.world()
    static let tinyLlama = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fixtures/tiny-llama")

    /// The engine reads the model's config once and hands it to `resolve`,
    /// whose choices size the cache; what `resolve` throws is the load's error.
    func testEngineHandsTheConfigItReadToResolve() throws {
        let mask = ComputePool.affinityCPUs()
        defer { XCTAssertEqual(ComputePool.affinityCPUs(), mask, "the test process's main thread must keep its CPUs") }
        try Self.onOwnThread {
            var configuration = EngineConfiguration(weights: .checkpoint(Self.tinyLlama), threads: 1)
            configuration.commMode = .baseline
            configuration.kvBlockSize = 4
            var seen: [Int] = []
            let engine = try Engine(configuration: configuration, communicator: Self.world) { config, resolved in
                seen.append(config.maxPositionEmbeddings)
                resolved.maxSequenceLength = 10
            }
            XCTAssertEqual(seen, [engine.config.maxPositionEmbeddings])
            XCTAssertEqual(engine.configuration.maxSequenceLength, 10)
            XCTAssertEqual(engine.model.cache.blockCount, 3, "10 positions in blocks of 4")
            XCTAssertThrowsError(try Engine(configuration: configuration, communicator: Self.world) { _, _ in
                throw RuntimeError.invalidParameter("Caller.length", "too long")
            }) { XCTAssertEqual("\($0)", "Caller.length: too long") }
        }
    }

    /// Runs `body` on a thread of its own and waits for it. An engine's
    /// compute pool pins the thread that creates it (as a rank's compute
    /// thread should be); on the test process's main thread that mask would
    /// stay, and every process a later test starts (mpirun, simulated
    /// clusters) would inherit one core.
    static func onOwnThread(_ body: @escaping @Sendable () throws -> Void) throws {
        final class Outcome: @unchecked Sendable { var error: Error? }
        let outcome = Outcome(), done = DispatchSemaphore(value: 0)
        let thread = Thread {
            do { try body() } catch { outcome.error = error }
            done.signal()
        }
        thread.start()
        done.wait()
        if let error = outcome.error { throw error }
    }

    func testBlocksPerSequence() {
        XCTAssertEqual([0, 1, 4, 5, 8, 9].map { PagedKVCache.blocksNeeded(forLength: $0, blockSize: 4) }, [0, 1, 1, 2, 2, 3])
        XCTAssertEqual(PagedKVCache.blocksNeeded(forLength: Int.max, blockSize: 1), Int.max)
        XCTAssertEqual(PagedKVCache.blocksNeeded(forLength: Int.max, blockSize: 1 << 16), (Int.max >> 16) + 1)
    }
}

/// Calibration travels as one value in one broadcast, bit-exact.
final class CalibrationTests: XCTestCase {
    func testCalibrationSurvivesItsEncodingBitForBit() throws {
        let costs = CostModel(gemmFlopsPerSecond: 1.234567890123e11, weightBytesPerSecond: .infinity, attentionPairsPerSecond: 5e-324,
                              collectiveLatency: -0.0, collectiveSecondsPerRow: 3.0000000000000004e-7, collectiveOverlapsCompute: true)
        let calibration = Calibration(costs: costs, shape: LayerShape(attentionWeights: 1 << 40, mlpWeights: 12_345_678, layerCount: 126))
        let again = try Calibration(encoded: calibration.encoded)
        XCTAssertEqual(again, calibration)
        XCTAssertEqual(again.costs.collectiveLatency.sign, .minus)
        XCTAssertEqual(again.costs.encoded.map(\.bitPattern), costs.encoded.map(\.bitPattern))
        XCTAssertEqual(try calibration.broadcast(over: ParameterNameTests.world), calibration, "one rank: its own")
        XCTAssertThrowsError(try Calibration(encoded: Array(calibration.encoded.dropLast())))
    }
}
