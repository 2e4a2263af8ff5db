import Foundation
import WeftTensor
import XCTest
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

    func parameter(_ configuration: ServingConfiguration, file: StaticString = #filePath, line: UInt = #line) -> InvalidParameter? {
        do {
            try configuration.validate()
            _ = try configuration.engineConfiguration()
            return nil
        } catch {
            XCTAssertFalse("\(error)".contains("--"), "\(error)", file: file, line: line)
            return (error as? ParameterError)?.parameter
        }
    }

    func testEachLimitIsNamedAsTheConfigurationSpellsIt() {
        XCTAssertNil(parameter(configuration { _ in }))
        XCTAssertEqual(parameter(configuration { $0.maxRunningSequences = 0 }),
                       InvalidParameter("ServingConfiguration.maxRunningSequences", "must be at least 1, got 0"))
        XCTAssertEqual(parameter(configuration { $0.maxBatchTokens = -1 })?.name, "ServingConfiguration.maxBatchTokens")
        XCTAssertEqual(parameter(configuration { $0.maxQueuedRequests = -1 })?.name, "ServingConfiguration.maxQueuedRequests")
        XCTAssertEqual(parameter(configuration { $0.maxModelLength = 1 })?.name, "ServingConfiguration.maxModelLength")
        XCTAssertEqual(parameter(configuration { $0.kvBlocks = 0 })?.name, "ServingConfiguration.kvBlocks")
    }

    func testALengthBeyondTheModelIsRefusedBeforeLoading() throws {
        XCTAssertEqual(parameter(configuration { $0.maxModelLength = 513 }),
                       InvalidParameter("ServingConfiguration.maxModelLength", "513 exceeds the model's max_position_embeddings 512"))
        let sized = try configuration { $0.maxModelLength = 512; $0.maxRunningSequences = 3 }.engineConfiguration()
        XCTAssertEqual(sized.maxSequenceLength, 512)
        XCTAssertEqual(sized.maxSequences, 3)
        // Unset: the model's length, at most 4096.
        XCTAssertEqual(try configuration { _ in }.engineConfiguration().maxSequenceLength, 512)
    }
}
