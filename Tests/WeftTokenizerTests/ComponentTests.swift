import Foundation
import XCTest

@testable import WeftTokenizer

final class ComponentTests: XCTestCase {
    // MARK: JSON

    func testJSONParserKeepsCanonicallyEquivalentKeysApart() throws {
        // "é" (U+00E9) and "e\u{301}" are equal as Swift Strings but are two vocabulary entries.
        let json = #"{"model": {"type": "BPE", "vocab": {"\u00e9": 0, "e\u0301": 1, "e": 2, "\u0301": 3}, "merges": []}}"#
        let dir = try TestSupport.temporaryDirectory(self)
        try json.write(to: dir.appendingPathComponent("tokenizer.json"), atomically: true, encoding: .utf8)
        let t = try Tokenizer(directory: dir)
        XCTAssertEqual(t.encode("\u{E9}"), [0])
        XCTAssertEqual(t.encode("e\u{301}"), [2, 3])
        XCTAssertEqual(t.id(for: "e\u{301}"), 1)
        XCTAssertEqual(t.id(for: "\u{E9}"), 0)
        XCTAssertEqual(t.token(for: 1).map { Array($0.unicodeScalars) }, Array("e\u{301}".unicodeScalars))
    }

    func testJSONParserValues() throws {
        let text = #"""
            {"s": "a\"b\\c\/d\n\t\u00e9\ud83d\ude80\ud800x", "n": [-1, 0, 2.5, 1e3, 12345678901], "b": [true, false, null],
             "o": {}, "a": [], "dup": 1, "dup": 2}
            """#
        let root = try JSONNode.parse(data: Data(text.utf8), file: "x.json")
        XCTAssertEqual(
            Array(try root["s"].string().unicodeScalars),
            Array("a\"b\\c/d\n\t\u{E9}\u{1F680}\u{FFFD}x".unicodeScalars))
        XCTAssertEqual(try root["n"].array().count, 5)
        XCTAssertEqual(try root["n"].array()[0].int(), -1)
        XCTAssertEqual(try root["n"].array()[2].double(), 2.5)
        XCTAssertEqual(try root["n"].array()[3].int(), 1000)
        XCTAssertEqual(try root["n"].array()[4].int(), 12_345_678_901)
        XCTAssertEqual(try root["b"].array()[0].bool(), true)
        XCTAssertTrue(try root["b"].array()[2].isNull)
        XCTAssertTrue(root["missing"].isNull)
        XCTAssertFalse(root["missing"].exists)
        XCTAssertEqual(try root["o"].objectEntries().count, 0)
        XCTAssertEqual(try root["dup"].int(), 1)
        XCTAssertThrowsError(try root["s"].int()) { error in
            XCTAssertEqual("\(error)", "x.json: s: expected an integer, found a string")
        }
        XCTAssertThrowsError(try root["n"].array()[2].int()) { error in
            XCTAssertEqual("\(error)", "x.json: n[2]: expected an integer, found a number")
        }
        for bad in ["", "{", "[1,]", "{\"a\" 1}", "tru", "\"\\x\"", "01", "{} x", "\"a\nb\""] {
            XCTAssertThrowsError(try JSONNode.parse(data: Data(bad.utf8), file: "x.json"), bad) { error in
                XCTAssertEqual((error as? TokenizerError)?.kind, .malformedJSON, bad)
            }
        }
    }

    // MARK: Decoders (expected values from HF tokenizers' decoders)

    func testByteFallbackDecoder() {
        let decoder = TokenDecoder.byteFallback
        XCTAssertEqual(
            decoder.decode(["<0xE6>", "<0x97>", "a", "<0xE6>", "<0x97>", "<0xA5>", "b", "<0x41>"]),
            "\u{FFFD}\u{FFFD}a日bA")
        XCTAssertEqual(decoder.decode(["<0x4>", "<0xZZ>", "<0x41"]), "<0x4><0xZZ><0x41")
    }

    func testStripReplaceFuseAndMetaspaceDecoders() {
        XCTAssertEqual(TokenDecoder.strip(content: " ", start: 2, stop: 1).decode(["  a  "]), "a ")
        XCTAssertEqual(TokenDecoder.strip(content: " ", start: 1, stop: 0).decode([" a", " b"]), "ab")
        XCTAssertEqual(
            TokenDecoder.replace(pattern: .literal(Array("▁".utf8)), content: [0x20]).decodeChain(["▁a▁", "b"]),
            [" a ", "b"])
        XCTAssertEqual(TokenDecoder.fuse.decodeChain(["a", "b", "c"]), ["abc"])
        XCTAssertEqual(
            TokenDecoder.metaspace(replacement: "▁", prependScheme: .always).decode(["▁▁Hey", "▁there", "▁▁"]),
            "Hey there  ")
        XCTAssertEqual(
            TokenDecoder.metaspace(replacement: "▁", prependScheme: .never).decode(["▁▁Hey", "▁x"]), "  Hey x")
        // ByteLevel: tokens that are not byte-level strings are taken as raw UTF-8.
        XCTAssertEqual(TokenDecoder.byteLevel.decode(["Hello", "Ġworld", "my tok", "Ċ"]), "Hello worldmy tok\n")
    }

    // MARK: Normalizers

    func testNormalizers() {
        func apply(_ n: Normalizer, _ s: String) -> [Unicode.Scalar] {
            Array(String(decoding: n.apply(Array(s.utf8)), as: UTF8.self).unicodeScalars)
        }
        XCTAssertEqual(apply(.nfc, "e\u{301}"), ["\u{E9}"])
        XCTAssertEqual(apply(.nfd, "\u{E9}"), ["e", "\u{301}"])
        XCTAssertEqual(apply(.nfkc, "ﬁ①"), Array("fi1".unicodeScalars))
        XCTAssertEqual(apply(.lowercase, "ÀB Σ"), Array("àb σ".unicodeScalars))
        XCTAssertEqual(apply(.strip(left: true, right: false), " \u{3000}a "), Array("a ".unicodeScalars))
        XCTAssertEqual(apply(.prepend(Array("▁".utf8)), "a"), Array("▁a".unicodeScalars))
        XCTAssertEqual(apply(.prepend(Array("▁".utf8)), ""), [])
        XCTAssertEqual(
            apply(.sequence([.prepend(Array("▁".utf8)), .replace(pattern: .literal([0x20]), content: Array("▁".utf8))]), "a b"),
            Array("▁a▁b".unicodeScalars))
    }

    // MARK: Byte-level table

    func testByteLevelMappingIsGPT2s() {
        for b in 0..<256 {
            let expected = TestSupport.byteToCharacter[UInt8(b)]!
            XCTAssertEqual(String(decoding: ByteLevelMapping.encode([UInt8(b)]), as: UTF8.self), expected)
            XCTAssertEqual(ByteLevelMapping.decode(expected), [UInt8(b)])
        }
        XCTAssertEqual(TestSupport.byteLevel(" \n"), "ĠĊ")
        XCTAssertNil(ByteLevelMapping.decode("a b"))
    }
}
