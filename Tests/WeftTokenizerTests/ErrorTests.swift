import Foundation
import XCTest

@testable import WeftTokenizer

final class ErrorTests: XCTestCase {
    /// Loads a tokenizer from `files` written to a temporary directory and returns the error.
    func loadError(_ files: [String: String], file: StaticString = #filePath, line: UInt = #line) throws
        -> TokenizerError
    {
        let dir = try TestSupport.temporaryDirectory(self)
        for (name, contents) in files {
            try contents.write(to: dir.appendingPathComponent(name), atomically: true, encoding: .utf8)
        }
        do {
            _ = try Tokenizer(directory: dir)
        } catch let error as TokenizerError {
            XCTAssertFalse(error.description.contains("\n"), "one line: \(error.description)", file: file, line: line)
            return error
        }
        XCTFail("expected a TokenizerError", file: file, line: line)
        throw TokenizerError(kind: .invalidField, file: "test", message: "no error")
    }

    static let minimalModel = """
        {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2}, "merges": ["a b"]}
        """

    static func tokenizerJSON(model: String = minimalModel, extra: String = "") -> String {
        """
        {"version": "1.0", "added_tokens": [], "normalizer": null, "pre_tokenizer": null,
         "post_processor": null, "decoder": null, \(extra) "model": \(model)}
        """
    }

    func testMinimalTokenizerLoads() throws {
        let dir = try TestSupport.temporaryDirectory(self)
        try Self.tokenizerJSON().write(to: dir.appendingPathComponent("tokenizer.json"), atomically: true, encoding: .utf8)
        let t = try Tokenizer(directory: dir)
        XCTAssertEqual(t.encode("abba"), [2, 1, 0])
        XCTAssertEqual(t.decode([2, 1, 0]), "ab b a", "no decoder: tokens joined with spaces, as in HF")
        XCTAssertNil(t.bosTokenID)
        XCTAssertEqual(t.eosTokenIDs, [])
    }

    func testMissingFile() throws {
        let dir = try TestSupport.temporaryDirectory(self)
        XCTAssertThrowsError(try Tokenizer(directory: dir.appendingPathComponent("nope"))) { error in
            let e = error as? TokenizerError
            XCTAssertEqual(e?.kind, .fileNotFound)
            XCTAssertEqual(e?.file, "tokenizer.json")
            XCTAssertTrue(e?.description.hasPrefix("tokenizer.json: file not found at ") == true, "\(error)")
            XCTAssertTrue(e?.description.contains("nope/tokenizer.json") == true, "\(error)")
        }
    }

    func testMalformedJSON() throws {
        let e = try loadError(["tokenizer.json": "{\"model\": {\"type\": \"BPE\",\n \"vocab\": {\"a\": 0,}}}"])
        XCTAssertEqual(e.kind, .malformedJSON)
        XCTAssertEqual(e.file, "tokenizer.json")
        XCTAssertTrue(e.description.hasPrefix("tokenizer.json: malformed JSON: "), e.description)
        XCTAssertTrue(e.description.contains("line 2"), e.description)

        let truncated = try loadError(["tokenizer.json": "{\"model\": {\"type\": \"BP"])
        XCTAssertEqual(truncated.kind, .malformedJSON)

        let config = try loadError([
            "tokenizer.json": Self.tokenizerJSON(), "tokenizer_config.json": "{\"bos_token\": <s>}",
        ])
        XCTAssertEqual(config.kind, .malformedJSON)
        XCTAssertEqual(config.file, "tokenizer_config.json")
    }

    func testUnsupportedModelType() throws {
        let e = try loadError(["tokenizer.json": Self.tokenizerJSON(model: #"{"type": "WordPiece", "vocab": {}}"#)])
        XCTAssertEqual(e.kind, .unsupported)
        XCTAssertEqual(e.field, "model.type")
        XCTAssertEqual(e.description, #"tokenizer.json: model.type: unsupported model type "WordPiece" (supported: BPE)"#)
    }

    func testBadMerges() throws {
        let badShape = try loadError([
            "tokenizer.json": Self.tokenizerJSON(model: #"{"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2}, "merges": ["a b", 7]}"#)
        ])
        XCTAssertEqual(badShape.description, #"tokenizer.json: model.merges[1]: expected "a b" or ["a","b"]"#)

        let twoSpaces = try loadError([
            "tokenizer.json": Self.tokenizerJSON(model: #"{"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2}, "merges": ["a b c"]}"#)
        ])
        XCTAssertEqual(twoSpaces.field, "model.merges[0]")

        // A "#version" header line is skipped, as HF does.
        let dir = try TestSupport.temporaryDirectory(self)
        try Self.tokenizerJSON(
            model: ##"{"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2}, "merges": ["#version: 0.2", "a b"]}"##
        ).write(to: dir.appendingPathComponent("tokenizer.json"), atomically: true, encoding: .utf8)
        XCTAssertEqual(try Tokenizer(directory: dir).encode("ab"), [2])

        let noSpace = try loadError([
            "tokenizer.json": Self.tokenizerJSON(model: #"{"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2}, "merges": ["ab"]}"#)
        ])
        XCTAssertEqual(noSpace.field, "model.merges[0]")

        let unknown = try loadError([
            "tokenizer.json": Self.tokenizerJSON(model: #"{"type": "BPE", "vocab": {"a": 0, "b": 1}, "merges": [["a", "b"]]}"#)
        ])
        XCTAssertEqual(unknown.description, #"tokenizer.json: model.merges[0]: token "ab" is not in model.vocab"#)
    }

    func testBadFieldsAndUnsupportedComponents() throws {
        let vocab = try loadError([
            "tokenizer.json": Self.tokenizerJSON(model: #"{"type": "BPE", "vocab": {"a": "zero"}, "merges": []}"#)
        ])
        XCTAssertEqual(vocab.field, "model.vocab.a")
        XCTAssertEqual(vocab.kind, .invalidField)

        let pre = try loadError([
            "tokenizer.json": Self.tokenizerJSON().replacingOccurrences(
                of: "\"pre_tokenizer\": null",
                with: #""pre_tokenizer": {"type": "Sequence", "pretokenizers": [{"type": "ByteLevel"}, {"type": "BertPreTokenizer"}]}"#)
        ])
        XCTAssertEqual(pre.kind, .unsupported)
        XCTAssertEqual(pre.field, "pre_tokenizer.pretokenizers[1].type")
        XCTAssertTrue(pre.description.contains("unsupported pre-tokenizer \"BertPreTokenizer\""), pre.description)

        let normalizer = try loadError([
            "tokenizer.json": Self.tokenizerJSON().replacingOccurrences(
                of: "\"normalizer\": null", with: #""normalizer": {"type": "Precompiled", "precompiled_charsmap": ""}"#)
        ])
        XCTAssertEqual(normalizer.field, "normalizer.type")

        let decoder = try loadError([
            "tokenizer.json": Self.tokenizerJSON().replacingOccurrences(
                of: "\"decoder\": null", with: #""decoder": {"type": "WordPiece"}"#)
        ])
        XCTAssertEqual(decoder.field, "decoder.type")

        let dropout = try loadError([
            "tokenizer.json": Self.tokenizerJSON(model: #"{"type": "BPE", "dropout": 0.1, "vocab": {}, "merges": []}"#)
        ])
        XCTAssertEqual(dropout.field, "model.dropout")

        let split = try loadError([
            "tokenizer.json": Self.tokenizerJSON().replacingOccurrences(
                of: "\"pre_tokenizer\": null",
                with: #""pre_tokenizer": {"type": "Split", "pattern": {"Regex": "(unclosed"}, "behavior": "Isolated", "invert": false}"#)
        ])
        XCTAssertEqual(split.field, "pre_tokenizer.pattern.Regex")
        XCTAssertEqual(split.kind, .unsupported)

        let missingModel = try loadError(["tokenizer.json": #"{"added_tokens": []}"#])
        XCTAssertEqual(missingModel.description, "tokenizer.json: model: missing field")

        let notObject = try loadError(["tokenizer.json": "[1, 2]"])
        XCTAssertEqual(notObject.kind, .invalidField)

        let badConfig = try loadError([
            "tokenizer.json": Self.tokenizerJSON(), "tokenizer_config.json": #"{"add_bos_token": "yes"}"#,
        ])
        XCTAssertEqual(badConfig.description, "tokenizer_config.json: add_bos_token: expected a boolean, found a string")
    }

    func testDescriptionIsOneLine() {
        let e = TokenizerError(kind: .invalidField, file: "tokenizer.json", field: "model", message: "bad\nthing")
        XCTAssertEqual(e.description, "tokenizer.json: model: bad thing")
        let noField = TokenizerError(kind: .fileNotFound, file: "tokenizer.json", message: "file not found at /x")
        XCTAssertEqual(noField.description, "tokenizer.json: file not found at /x")
    }
}
