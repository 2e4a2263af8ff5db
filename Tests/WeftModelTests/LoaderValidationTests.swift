import Foundation
import XCTest

@testable import WeftModel

/// Numbers from safetensors headers and config.json are range-checked before
/// any arithmetic (issue 9): each case below trapped or was accepted silently
/// before, and must now be one error line naming the file, tensor or field.
final class LoaderValidationTests: XCTestCase {
    /// A safetensors image: 8-byte length (or `length`), the header, `dataBytes` zero bytes.
    static func image(_ header: String, dataBytes: Int = 64, length: UInt64? = nil) -> [UInt8] {
        let json = Array(header.utf8)
        var out = withUnsafeBytes(of: (length ?? UInt64(json.count)).littleEndian) { Array($0) }
        out += json
        out += [UInt8](repeating: 0, count: dataBytes)
        return out
    }

    static func parseError(_ bytes: [UInt8]) -> String {
        do {
            let tensors = try bytes.withUnsafeBytes { try SafetensorsHeader.parse($0, fileLength: bytes.count, path: "m.safetensors") }
            return "no error (\(tensors.count) tensors)"
        } catch {
            return "\(error)"
        }
    }

    func testValidHeaderParses() throws {
        let header = #"{"__metadata__": {"format": "pt"}, "a": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}, "b": {"dtype": "BF16", "shape": [3], "data_offsets": [16, 22]}, "e": {"dtype": "F16", "shape": [0, 5], "data_offsets": [8, 8]}}"#
        let bytes = Self.image(header, dataBytes: 22)
        let tensors = try bytes.withUnsafeBytes { try SafetensorsHeader.parse($0, fileLength: bytes.count, path: "m") }
        XCTAssertEqual(tensors.count, 3)
        XCTAssertEqual(tensors["b"]?.byteOffset, 8 + header.utf8.count + 16)
        XCTAssertEqual(tensors["b"]?.elementCount, 3)
        XCTAssertEqual(tensors["e"]?.elementCount, 0)
    }

    func testHeaderLengthAbove2To63() {
        let e = Self.parseError(Self.image("{}", length: 1 << 63))
        XCTAssertEqual(e, "m.safetensors: truncated or corrupt: header length 9223372036854775808 but the file has 74 bytes")
        XCTAssertTrue(Self.parseError(Self.image("{}", length: .max)).contains("header length 18446744073709551615 "))
    }

    func testShapeWhoseElementCountOverflows() {
        let e = Self.parseError(Self.image(#"{"w": {"dtype": "F32", "shape": [4294967296, 4294967296], "data_offsets": [0, 16]}}"#))
        XCTAssertEqual(e, #"m.safetensors: tensor "w": shape [4294967296, 4294967296] has too many elements to address"#)
        // Elements fit but bytes do not.
        let bytes = Self.parseError(Self.image(#"{"w": {"dtype": "F32", "shape": [4611686018427387904], "data_offsets": [0, 16]}}"#))
        XCTAssertEqual(bytes, #"m.safetensors: tensor "w": shape [4611686018427387904] of F32 has too many bytes to address"#)
        // A zero dimension does not hide an overflowing product of the others.
        XCTAssertTrue(Self.parseError(Self.image(#"{"w": {"dtype": "F16", "shape": [0, 4294967296, 4294967296], "data_offsets": [0, 0]}}"#)).contains("too many elements"))
    }

    func testOffsetsNear2To64AreReportedAsWritten() {
        let e = Self.parseError(Self.image(#"{"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 18446744073709551600]}}"#))
        XCTAssertEqual(e, #"m.safetensors: tensor "w": data_offsets[1]: expected a non-negative integer byte offset, found 18446744073709551600"#)
        let big = Self.parseError(Self.image(#"{"w": {"dtype": "F32", "shape": [4], "data_offsets": [9223372036854775800, 9223372036854775807]}}"#))
        XCTAssertEqual(big, #"m.safetensors: truncated: tensor "w" ends at data offset 9223372036854775807 but the data section has 64 bytes (file 169 bytes)"#)
        XCTAssertTrue(Self.parseError(Self.image(#"{"w": {"dtype": "F32", "shape": [4], "data_offsets": [-16, 0]}}"#)).contains("data_offsets[0]: expected a non-negative integer byte offset, found -16"))
        XCTAssertTrue(Self.parseError(Self.image(#"{"w": {"dtype": "F32", "shape": [2.5], "data_offsets": [0, 10]}}"#)).contains("shape[0]: expected a non-negative integer, found 2.5"))
        XCTAssertTrue(Self.parseError(Self.image(#"{"w": {"dtype": "F32", "shape": [4], "data_offsets": [16, 0]}}"#)).contains("end before begin"))
    }

    func testOverlappingTensorsAreRefused() {
        let e = Self.parseError(Self.image(#"{"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}, "b": {"dtype": "F32", "shape": [4], "data_offsets": [12, 28]}}"#))
        XCTAssertEqual(e, #"m.safetensors: tensor "b": data_offsets [12, 28] overlap tensor "a" at [0, 16]"#)
        // The same range twice.
        XCTAssertTrue(Self.parseError(Self.image(#"{"a": {"dtype": "F16", "shape": [2], "data_offsets": [4, 8]}, "b": {"dtype": "F16", "shape": [2], "data_offsets": [4, 8]}}"#)).contains("overlap tensor \"a\""))
    }

    /// A JSON decoder keeps one of two equal keys, so the other entry would go
    /// unchecked: a tensor named twice (also through an escape) is refused.
    func testATensorNamedTwiceIsRefused() {
        let twice = Self.parseError(Self.image(#"{"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}, "a": {"dtype": "F32", "shape": [4], "data_offsets": [16, 32]}}"#))
        XCTAssertEqual(twice, #"m.safetensors: corrupt: the header names tensor "a" twice"#)
        let escaped = Self.parseError(Self.image(#"{"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}, "w": {"dtype": "F32", "shape": [4], "data_offsets": [16, 32]}}"#))
        XCTAssertEqual(escaped, #"m.safetensors: corrupt: the header names tensor "w" twice"#)
        // Equal keys inside entries (or in __metadata__) are the decoder's business, not duplicates of tensors.
        XCTAssertNil(SafetensorsHeader.duplicateTopLevelKey(Data(#"{"a": {"x": {"k": 1}, "y": {"k": "a"}}, "b": "a,"a""}"#.utf8), decodedCount: 2))
    }

    func testFractionalOffsetsAreRefused() {
        let e = Self.parseError(Self.image(#"{"a": {"dtype": "F32", "shape": [2], "data_offsets": [2, 10]}}"#))
        XCTAssertEqual(e, #"m.safetensors: tensor "a": data_offsets [2, 10]: begin is not a multiple of the F32 size 4"#)
    }

    func testHeaderErrorsThroughTheFile() throws {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("weft-st-\(UUID().uuidString).safetensors")
        defer { try? FileManager.default.removeItem(at: url) }
        try Data(Self.image(#"{"a": {"dtype": "F32", "shape": [2], "data_offsets": [2, 10]}}"#)).write(to: url)
        XCTAssertThrowsError(try SafetensorsFile(path: url.path)) { error in
            XCTAssertEqual("\(error)", #"\#(url.path): tensor "a": data_offsets [2, 10]: begin is not a multiple of the F32 size 4"#)
        }
    }

    // MARK: - config.json

    static let base = #""architectures":["LlamaForCausalLM"],"hidden_size":64,"intermediate_size":128,"num_hidden_layers":1,"num_attention_heads":4,"vocab_size":100"#

    static func configError(_ extra: String) -> String {
        let json = "{\(base)\(extra.isEmpty ? "" : ",")\(extra)}"
        do { _ = try ModelConfig.parse(Data(json.utf8), file: "m/config.json"); return "no error" } catch { return "\(error)" }
    }

    func testHugeConfigNumbersAreFieldErrors() {
        XCTAssertEqual(Self.configError(""), "no error")
        XCTAssertEqual(Self.configError(#""max_position_embeddings":1000000000000000000"#),
                       #"m/config.json: field "max_position_embeddings": expected an integer in 1...16777216, found 1000000000000000000"#)
        let cases: [(String, String)] = [
            ("hidden_size", "1000000000000000000"), ("intermediate_size", "1e18"), ("num_hidden_layers", "1e12"),
            ("num_attention_heads", "9007199254740992"), ("vocab_size", "1e15"), ("head_dim", "1e9"),
            ("num_key_value_heads", "8"), ("max_position_embeddings", "-1"), ("max_position_embeddings", "0"),
        ]
        for (field, value) in cases {
            let e = Self.configError("\"\(field)\":\(value)")
            XCTAssertTrue(e.hasPrefix("m/config.json: field \"\(field)\": expected an integer in "), "\(field)=\(value): \(e)")
        }
        // Beyond Int's range a number is not an integer here: a type error, still naming the field.
        XCTAssertTrue(Self.configError(#""hidden_size":1e300"#).hasPrefix(#"m/config.json: field "hidden_size": expected a value of type integer, found "#))
        XCTAssertTrue(Self.configError(#""vocab_size":18446744073709551615"#).hasPrefix(#"m/config.json: field "vocab_size": expected a value of type integer"#))
    }

    func testFloatConfigNumbersMustBeFiniteAndInRange() {
        for (field, value) in [("rms_norm_eps", "0"), ("rms_norm_eps", "-1e-6"), ("rms_norm_eps", "2"),
                               ("rope_theta", "1e300"), ("rope_theta", "-10000"), ("rope_theta", "0")] {
            let e = Self.configError("\"\(field)\":\(value)")
            XCTAssertTrue(e.hasPrefix("m/config.json: field \"\(field)\": expected a finite number greater than 0"), "\(field)=\(value): \(e)")
        }
        let big = Self.configError(#""rope_theta":"big""#)
        XCTAssertTrue(big.contains(#"field "rope_theta": expected a value of type number, found big"#), big)
        // NaN and infinity cannot be written in JSON, but a config built in code is validated the same way.
        var config = ModelConfig(architecture: .llama, hiddenSize: 64, intermediateSize: 128, layerCount: 1,
                                 headCount: 4, kvHeadCount: 4, vocabularySize: 100)
        XCTAssertNoThrow(try config.validate(file: "c"))
        config.rmsNormEps = .nan
        XCTAssertThrowsError(try config.validate(file: "c")) { XCTAssertTrue("\($0)".contains("rms_norm_eps"), "\($0)") }
        config.rmsNormEps = 1e-5
        config.ropeTheta = .infinity
        XCTAssertThrowsError(try config.validate(file: "c")) { XCTAssertTrue("\($0)".contains("rope_theta"), "\($0)") }
        let scaling = #""rope_scaling":{"rope_type":"llama3","factor":1e300,"low_freq_factor":1,"high_freq_factor":4,"original_max_position_embeddings":8192}"#
        XCTAssertTrue(Self.configError(scaling).hasPrefix(#"m/config.json: field "rope_scaling.factor": expected a finite number"#))
        let original = #""rope_scaling":{"rope_type":"llama3","factor":8,"low_freq_factor":1,"high_freq_factor":4,"original_max_position_embeddings":1e18}"#
        XCTAssertTrue(Self.configError(original).hasPrefix(#"m/config.json: field "rope_scaling.original_max_position_embeddings": expected an integer in 1...16777216"#))
    }

    func testSizesThatFitEachLimitButNotTogether() {
        let e = Self.configError(#""hidden_size":131072,"intermediate_size":1048576,"num_hidden_layers":4096,"num_attention_heads":128"#)
        XCTAssertTrue(e.hasPrefix("m/config.json: the shape (hidden_size 131072, intermediate_size 1048576, num_hidden_layers 4096"), e)
        XCTAssertTrue(e.hasSuffix("has more than 4398046511104 parameters"), e)
    }

    func testTokenIDsInConfig() {
        XCTAssertEqual(Self.configError(#""bos_token_id":100"#), #"m/config.json: field "bos_token_id": expected an integer in 0...99 (below vocab_size), found 100"#)
        XCTAssertTrue(Self.configError(#""eos_token_id":[1,-2]"#).contains(#"field "eos_token_id": expected an integer in 0...99"#))
        XCTAssertTrue(Self.configError(#""eos_token_id":"</s>""#).contains(#"field "eos_token_id": expected a value of type integer"#))
        XCTAssertTrue(Self.configError(#""eos_token_id":[1,"x"]"#).contains(#"field "eos_token_id": expected a value of type array of integers"#))
        XCTAssertEqual(Self.configError(#""bos_token_id":null,"eos_token_id":[1,2]"#), "no error")
    }
}

import WeftTensor

final class WeightMemoryTests: XCTestCase {
    /// Llama 3.1 405B's shape is within every config limit, but its float32
    /// weights (1.6 TB) fit no test host: refused before any allocation
    /// (random weights validate any shape, so nothing else stops it).
    func testAModelLargerThanTheHostIsRefusedBeforeAllocating() throws {
        let config = ModelConfig(architecture: .llama, hiddenSize: 16384, intermediateSize: 53248, layerCount: 126,
                                 headCount: 128, kvHeadCount: 8, vocabularySize: 128256)
        XCTAssertNoThrow(try config.validate(file: "405b"))
        let plan = try TensorParallelPlan(config: config, rank: 0, size: 2)
        let pool = try ComputePool(threads: 1, pin: false)
        XCTAssertThrowsError(try LlamaWeights(config: config, plan: plan, source: RandomWeightSource(), pool: pool, node: nil)) { error in
            let message = "\(error)"
            XCTAssertTrue(message.hasPrefix("the model's weights need "), message)
            XCTAssertTrue(message.contains("per rank at tensor-parallel degree 2 (\(config.parameterCount) parameters), more than this host's "), message)
        }
    }
}
