import Foundation
import WeftTensor
import XCTest
import WeftModel
@testable import WeftRuntime

/// A serving configuration's problems name its own properties (what an
/// embedder set), never the `weft serve` flags.
final class ServingConfigurationTests: XCTestCase {
    static let shape = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fixtures/shapes/random-12h.json")   // max_position_embeddings 512

    func configuration(_ change: (inout ServingConfiguration) -> Void) -> ServingConfiguration {
        var configuration = ServingConfiguration(engine: EngineConfiguration(weights: .random(shape: Self.shape, seed: 1)))
        change(&configuration)
        return configuration
    }

    /// The shape's config, as `Engine` hands it to `ServingConfiguration.size`.
    func model() throws -> ModelConfig {
        try ModelConfig.parse(try Data(contentsOf: Self.shape), file: Self.shape.path)
    }

    func parameter(_ configuration: ServingConfiguration, file: StaticString = #filePath, line: UInt = #line) throws -> InvalidParameter? {
        let model = try model()
        do {
            try configuration.validate()
            var engine = configuration.engine
            try configuration.size(&engine, for: model)
            return nil
        } catch {
            XCTAssertFalse("\(error)".contains("--"), "\(error)", file: file, line: line)
            return (error as? ParameterError)?.parameter
        }
    }

    func testEachLimitIsNamedAsTheConfigurationSpellsIt() throws {
        XCTAssertNil(try parameter(configuration { _ in }))
        XCTAssertEqual(try parameter(configuration { $0.maxRunningSequences = 0 }),
                       InvalidParameter("ServingConfiguration.maxRunningSequences", "must be at least 1, got 0"))
        XCTAssertEqual(try parameter(configuration { $0.maxBatchTokens = -1 })?.name, "ServingConfiguration.maxBatchTokens")
        XCTAssertEqual(try parameter(configuration { $0.maxQueuedRequests = -1 })?.name, "ServingConfiguration.maxQueuedRequests")
        XCTAssertEqual(try parameter(configuration { $0.maxModelLength = 1 })?.name, "ServingConfiguration.maxModelLength")
        XCTAssertEqual(try parameter(configuration { $0.kvBlocks = 0 })?.name, "ServingConfiguration.kvBlocks")
    }

    func testTheModelsLengthBoundsTheContext() throws {
        XCTAssertEqual(try parameter(configuration { $0.maxModelLength = 513 }),
                       InvalidParameter("ServingConfiguration.maxModelLength", "513 exceeds the model's max_position_embeddings 512"))
        var engine = configuration { _ in }.engine
        try configuration { $0.maxModelLength = 512; $0.maxRunningSequences = 3; $0.kvBlocks = 7 }.size(&engine, for: try model())
        XCTAssertEqual(engine.maxSequenceLength, 512)
        XCTAssertEqual(engine.maxSequences, 3)
        XCTAssertEqual(engine.kvBlocks, 7)
        // Unset: the model's length, at most 4096.
        try configuration { _ in }.size(&engine, for: try model())
        XCTAssertEqual(engine.maxSequenceLength, 512)
    }
}
