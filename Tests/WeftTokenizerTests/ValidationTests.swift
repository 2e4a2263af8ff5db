import Foundation
import XCTest

@testable import WeftTokenizer

/// Numbers and names in tokenizer files that must be refused with one line
/// naming the file and field (issue 9: each was accepted silently before).
final class ValidationTests: XCTestCase {
    func loadError(_ files: [String: String], file: StaticString = #filePath, line: UInt = #line) throws -> String {
        let dir = try TestSupport.temporaryDirectory(self)
        for (name, contents) in files {
            try contents.write(to: dir.appendingPathComponent(name), atomically: true, encoding: .utf8)
        }
        do {
            _ = try Tokenizer(directory: dir)
        } catch let error as TokenizerError {
            XCTAssertFalse(error.description.contains("\n"), "one line: \(error.description)", file: file, line: line)
            return error.description
        }
        XCTFail("expected a TokenizerError", file: file, line: line)
        return "no error"
    }

    /// tokenizer.json with vocabulary `vocab`, `added` tokens and a post-processor.
    static func tokenizer(vocab: String = #"{"a": 0, "b": 1, "ab": 2}"#, merges: String = #"["a b"]"#,
                          added: String = "[]", postProcessor: String = "null") -> String {
        """
        {"version": "1.0", "added_tokens": \(added), "normalizer": null, "pre_tokenizer": null,
         "post_processor": \(postProcessor), "decoder": null,
         "model": {"type": "BPE", "vocab": \(vocab), "merges": \(merges)}}
        """
    }

    static func added(_ id: Int, _ content: String) -> String {
        #"{"id": \#(id), "content": "\#(content)", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}"#
    }

    func testTheValidBaseLoads() throws {
        let dir = try TestSupport.temporaryDirectory(self)
        try Self.tokenizer(added: "[\(Self.added(3, "<s>"))]").write(
            to: dir.appendingPathComponent("tokenizer.json"), atomically: true, encoding: .utf8)
        try #"{"bos_token": "<s>", "eos_token": {"content": "ab"}, "add_bos_token": true}"#.write(
            to: dir.appendingPathComponent("tokenizer_config.json"), atomically: true, encoding: .utf8)
        let t = try Tokenizer(directory: dir)
        XCTAssertEqual(t.bosTokenID, 3)
        XCTAssertEqual(t.eosTokenIDs, [2])
        XCTAssertEqual(t.encode("ab"), [3, 2])
    }

    func testTwoVocabTokensWithOneID() throws {
        let e = try loadError(["tokenizer.json": Self.tokenizer(vocab: #"{"a": 0, "b": 1, "ab": 1}"#)])
        XCTAssertTrue(e.hasPrefix("tokenizer.json: model.vocab."), e)
        XCTAssertTrue(e.contains("id 1 is also the id of token"), e)
    }

    func testVocabTokenListedTwice() throws {
        let e = try loadError(["tokenizer.json": Self.tokenizer(vocab: #"{"a": 0, "b": 1, "ab": 2, "a": 3}"#)])
        XCTAssertEqual(e, "tokenizer.json: model.vocab.a: token listed twice (ids 0 and 3)")
    }

    func testVocabIDsOutOfRange() throws {
        for id in ["-1", "16777216", "1000000000000000000", "99999999999999999999", "1.5"] {
            let e = try loadError(["tokenizer.json": Self.tokenizer(vocab: #"{"a": 0, "b": \#(id), "ab": 2}"#)])
            XCTAssertTrue(e.hasPrefix("tokenizer.json: model.vocab.b: expected a token id in 0...16777215, found "), e)
        }
    }

    func testAddedTokenSharingAVocabIDWithOtherContent() throws {
        // "<s>" claims id 1, which is "b" in the vocabulary.
        let e = try loadError(["tokenizer.json": Self.tokenizer(added: "[\(Self.added(1, "<s>"))]")])
        XCTAssertEqual(e, #"tokenizer.json: added_tokens[0].id: id 1 for "<s>", but id 1 is token "b" (added tokens take their vocab id, else the next id after model.vocab and earlier added tokens)"#)
        // Two added tokens with different contents and one id.
        let twice = try loadError(["tokenizer.json": Self.tokenizer(added: "[\(Self.added(3, "<s>")), \(Self.added(3, "</s>"))]")])
        XCTAssertTrue(twice.hasPrefix(#"tokenizer.json: added_tokens[1].id: id 3 for "</s>", but id 3 is token "<s>""#), twice)
        // A vocabulary with a hole: the next free id (3 = vocab count) is already taken.
        let hole = try loadError(["tokenizer.json": Self.tokenizer(vocab: #"{"a": 0, "b": 1, "ab": 3}"#, added: "[\(Self.added(3, "<s>"))]")])
        XCTAssertTrue(hole.contains(#"would get id 3, which is already token "ab" in model.vocab"#), hole)
        let negative = try loadError(["tokenizer.json": Self.tokenizer(added: "[\(Self.added(-3, "<s>"))]")])
        XCTAssertTrue(negative.hasPrefix("tokenizer.json: added_tokens[0].id: expected a token id in 0..."), negative)
    }

    func testUnknownBosTokenIsAnError() throws {
        let e = try loadError(["tokenizer.json": Self.tokenizer(), "tokenizer_config.json": #"{"bos_token": "<s>", "add_bos_token": true}"#])
        XCTAssertEqual(e, #"tokenizer_config.json: bos_token: token "<s>" is not in the vocabulary (model.vocab or added_tokens of tokenizer.json)"#)
        let object = try loadError(["tokenizer.json": Self.tokenizer(), "tokenizer_config.json": #"{"eos_token": {"content": "</s>"}}"#])
        XCTAssertTrue(object.hasPrefix(#"tokenizer_config.json: eos_token: token "</s>" is not in the vocabulary"#), object)
        let map = try loadError(["tokenizer.json": Self.tokenizer(), "special_tokens_map.json": #"{"bos_token": "<s>"}"#])
        XCTAssertTrue(map.hasPrefix(#"special_tokens_map.json: bos_token: token "<s>" is not"#), map)
    }

    func testGenerationConfigIDsMustBeTokens() throws {
        for (json, field) in [(#"{"bos_token_id": 7}"#, "bos_token_id"), (#"{"eos_token_id": [2, -1]}"#, "eos_token_id[1]"),
                              (#"{"eos_token_id": 1000000000000}"#, "eos_token_id")] {
            let e = try loadError(["tokenizer.json": Self.tokenizer(), "generation_config.json": json])
            XCTAssertTrue(e.hasPrefix("generation_config.json: \(field): token id "), e)
            XCTAssertTrue(e.hasSuffix("is not in the vocabulary (ids 0...2 of tokenizer.json)"), e)
        }
    }

    func testPostProcessorIDsMustBeTokens() throws {
        let template = #"{"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}], "pair": [], "special_tokens": {"<s>": {"id": "<s>", "ids": [300], "tokens": ["<s>"]}}}"#
        let e = try loadError(["tokenizer.json": Self.tokenizer(postProcessor: template)])
        XCTAssertEqual(e, "tokenizer.json: post_processor.special_tokens.<s>.ids[0]: token id 300 is not in the vocabulary (ids 0...2 of tokenizer.json)")
        let bert = #"{"type": "BertProcessing", "cls": ["[CLS]", 0], "sep": ["[SEP]", -4]}"#
        let b = try loadError(["tokenizer.json": Self.tokenizer(postProcessor: bert)])
        XCTAssertEqual(b, "tokenizer.json: post_processor.sep[1]: token id -4 is not in the vocabulary (ids 0...2 of tokenizer.json)")
    }
}
