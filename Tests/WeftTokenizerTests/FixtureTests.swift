import Foundation
import XCTest

@testable import WeftTokenizer

/// Checks against Tests/Fixtures/tiny-llama/tokenizer_reference.json, produced
/// by Hugging Face tokenizers/transformers for the tiny-llama tokenizer.
final class FixtureTests: XCTestCase {
    struct Reference: Decodable {
        struct TokenizerCase: Decodable {
            let text: String
            let ids_with_special: [Int]
            let ids_without_special: [Int]
            let decoded_without_special: String
            let pieces: [String]
        }
        struct ChatCase: Decodable {
            let rendered: String
            let ids: [Int]
        }
        let tokenizer_cases: [TokenizerCase]
        let chat_cases: [ChatCase]
    }

    static func reference() throws -> Reference {
        let url = TestSupport.fixtureDirectory("tiny-llama").appendingPathComponent("tokenizer_reference.json")
        return try JSONDecoder().decode(Reference.self, from: Data(contentsOf: url))
    }

    func testReferenceTokenizerCases() throws {
        let tokenizer = try TestSupport.tinyLlama()
        let reference = try Self.reference()
        XCTAssertEqual(reference.tokenizer_cases.count, 9)
        for c in reference.tokenizer_cases {
            let label = c.text.debugDescription
            XCTAssertEqual(tokenizer.encode(c.text, addSpecialTokens: true), c.ids_with_special, label)
            XCTAssertEqual(tokenizer.encode(c.text, addSpecialTokens: false), c.ids_without_special, label)
            XCTAssertEqual(tokenizer.encode(c.text), c.ids_with_special, "default adds special tokens: \(label)")
            XCTAssertEqual(tokenizer.decode(c.ids_without_special), c.decoded_without_special, label)
            XCTAssertEqual(tokenizer.decode(c.ids_with_special), c.decoded_without_special, "BOS skipped: \(label)")
            XCTAssertEqual(c.ids_without_special.map { tokenizer.token(for: $0) }, c.pieces.map { Optional($0) }, label)
            XCTAssertEqual(c.pieces.map { tokenizer.id(for: $0) }, c.ids_without_special.map { Optional($0) }, label)
        }
    }

    func testReferenceChatCases() throws {
        let tokenizer = try TestSupport.tinyLlama()
        let reference = try Self.reference()
        XCTAssertEqual(reference.chat_cases.count, 2)
        for c in reference.chat_cases {
            // The rendered template already starts with BOS as text; it is matched
            // as an added token, so the reference ids contain it exactly once.
            XCTAssertTrue(c.rendered.hasPrefix("<|begin_of_text|>"))
            XCTAssertEqual(c.ids.first, 4094)
            XCTAssertEqual(c.ids.filter { $0 == 4094 }.count, 1)
            XCTAssertEqual(tokenizer.encode(c.rendered, addSpecialTokens: false), c.ids)
            // Like HF, asking for special tokens on top adds a second BOS.
            XCTAssertEqual(tokenizer.encode(c.rendered, addSpecialTokens: true), [4094] + c.ids)
            XCTAssertEqual(tokenizer.decode(c.ids, skipSpecialTokens: false), c.rendered)
        }
    }

    func testMetadata() throws {
        let tokenizer = try TestSupport.tinyLlama()
        XCTAssertEqual(tokenizer.vocabularySize, 4096)
        XCTAssertEqual(tokenizer.bosTokenID, 4094)
        XCTAssertEqual(tokenizer.bosToken, "<|begin_of_text|>")
        XCTAssertEqual(tokenizer.eosToken, "<|end_of_text|>")
        XCTAssertEqual(tokenizer.eosTokenIDs, [4095])
        XCTAssertEqual(tokenizer.specialTokenIDs, [4094, 4095])
        XCTAssertEqual(tokenizer.token(for: 4094), "<|begin_of_text|>")
        XCTAssertEqual(tokenizer.token(for: 4095), "<|end_of_text|>")
        XCTAssertEqual(tokenizer.id(for: "<|end_of_text|>"), 4095)
        XCTAssertEqual(tokenizer.id(for: "Ġworld"), 3163)
        XCTAssertNil(tokenizer.token(for: 4096))
        XCTAssertNil(tokenizer.token(for: -1))
        XCTAssertNil(tokenizer.id(for: "no such token"))
        let template = try XCTUnwrap(tokenizer.chatTemplate)
        XCTAssertTrue(template.hasPrefix("{{ bos_token }}{% for message in messages %}"))
        XCTAssertTrue(template.contains("<|start|>assistant<|sep|>"))
    }

    func testDecodeSpecialTokensAndUnknownIDs() throws {
        let tokenizer = try TestSupport.tinyLlama()
        let ids = [4094, 39, 483, 417, 3163, 4095]
        XCTAssertEqual(tokenizer.decode(ids), "Hello world")
        XCTAssertEqual(tokenizer.decode(ids, skipSpecialTokens: false), "<|begin_of_text|>Hello world<|end_of_text|>")
        // Ids outside the vocabulary are ignored, as in HF.
        XCTAssertEqual(tokenizer.decode([39, 99_999, -5, 483]), "Hel")
        XCTAssertEqual(tokenizer.decode([]), "")
    }

    func testInvalidUTF8BecomesReplacementCharacterLikeHF() throws {
        let tokenizer = try TestSupport.tinyLlama()
        // Single-byte tokens of the fixture (expected strings from HF tokenizers).
        let byteID: [UInt8: Int] = [
            0xE6: 162, 0x97: 245, 0xA5: 98, 0xF0: 172, 0x9F: 253, 0x9A: 248, 0x80: 222, 0xFF: 187,
            0xED: 169, 0xA0: 254, 0xC0: 124, 0x41: 32,
        ]
        for (b, id) in byteID { XCTAssertEqual(tokenizer.token(for: id), TestSupport.byteToCharacter[b]) }
        let cases: [([UInt8], String)] = [
            ([0xE6], "\u{FFFD}"),
            ([0xE6, 0x97], "\u{FFFD}"),
            ([0xE6, 0x97, 0xA5], "日"),
            ([0xF0, 0x9F, 0x9A], "\u{FFFD}"),
            ([0xFF, 0x41], "\u{FFFD}A"),
            ([0xED, 0xA0, 0x80], "\u{FFFD}\u{FFFD}\u{FFFD}"),
            ([0xC0, 0x80, 0x41], "\u{FFFD}\u{FFFD}A"),
            ([0x41, 0xE6, 0x41, 0xF0, 0x9F], "A\u{FFFD}A\u{FFFD}"),
        ]
        for (bytes, expected) in cases {
            XCTAssertEqual(tokenizer.decode(bytes.map { byteID[$0]! }), expected, "\(bytes)")
        }
    }

    func testStreamingDecoderHoldsBackIncompleteCharacters() throws {
        let tokenizer = try TestSupport.tinyLlama()
        let text = "Café é au 東京 — 🚀 launch ✨ naïve"
        let ids = tokenizer.encode(text, addSpecialTokens: false)
        // The test is only meaningful if some characters are split across tokens.
        let splitTokens = ids.filter { tokenizer.decode([$0]).contains("\u{FFFD}") }
        XCTAssertGreaterThan(splitTokens.count, 5)

        var stream = StreamingDecoder(tokenizer: tokenizer)
        var output = ""
        var emptyPushes = 0
        for id in ids {
            let piece = stream.push(id)
            XCTAssertFalse(piece.unicodeScalars.contains("\u{FFFD}"), "partial character emitted after id \(id)")
            if piece.isEmpty { emptyPushes += 1 }
            output += piece
            XCTAssertTrue(text.unicodeScalars.starts(with: output.unicodeScalars), "output so far: \(output)")
        }
        output += stream.flush()
        XCTAssertEqual(output, text)
        XCTAssertGreaterThan(emptyPushes, 0, "some pushes must have been held back")
    }

    func testStreamingDecoderSkipsSpecialTokensAndFlushesIncompleteTail() throws {
        let tokenizer = try TestSupport.tinyLlama()
        var stream = StreamingDecoder(tokenizer: tokenizer)
        var output = stream.push(4094)  // BOS, skipped
        output += stream.push(contentsOf: tokenizer.encode("Hi 🚀", addSpecialTokens: false))
        output += stream.push(4095)
        output += stream.flush()
        XCTAssertEqual(output, "Hi 🚀")

        var raw = StreamingDecoder(tokenizer: tokenizer, skipSpecialTokens: false)
        var rawOutput = raw.push(4094) + raw.push(contentsOf: tokenizer.encode("Hi", addSpecialTokens: false))
        rawOutput += raw.push(4095) + raw.flush()
        XCTAssertEqual(rawOutput, "<|begin_of_text|>Hi<|end_of_text|>")

        // A stream cut in the middle of a character: held back, then flushed as U+FFFD.
        var cut = StreamingDecoder(tokenizer: tokenizer)
        XCTAssertEqual(cut.push(39), "H")
        XCTAssertEqual(cut.push(162), "")  // 0xE6, first byte of a 3-byte character
        XCTAssertEqual(cut.flush(), "\u{FFFD}")
        XCTAssertEqual(cut.push(39), "H", "flush resets the stream")
    }

    func testStreamingDecoderMatchesDecodeOnReferenceCases() throws {
        let tokenizer = try TestSupport.tinyLlama()
        for c in try Self.reference().tokenizer_cases {
            var stream = StreamingDecoder(tokenizer: tokenizer)
            var output = ""
            for id in c.ids_with_special {
                let piece = stream.push(id)
                XCTAssertFalse(piece.contains("\u{FFFD}"))
                output += piece
            }
            output += stream.flush()
            XCTAssertEqual(output, c.decoded_without_special)
        }
    }

    func testLongInputRoundTripsQuickly() throws {
        let tokenizer = try TestSupport.tinyLlama()
        let paragraph = """
            The quick brown fox jumps over the lazy dog. Numbers: 12345 67 8.9 and 1,000,000!
            def main():\n    return 42\n\tÜnïcödé — naïve café, 東京, Привет мир, 🚀✨ I'm you're he'll

            """
        var text = ""
        var i = 0
        while text.utf8.count < 60_000 {
            text += paragraph + "Paragraph \(i) with words like token\(i % 97) and x\(i * 7919 % 1000).\n"
            i += 1
        }
        let start = Date()
        let ids = tokenizer.encode(text, addSpecialTokens: false)
        let decoded = tokenizer.decode(ids)
        let elapsed = Date().timeIntervalSince(start)
        XCTAssertEqual(decoded, text)
        XCTAssertGreaterThan(ids.count, 10_000)
        // Generous bound (debug build, shared 2-core machine); catches quadratic behaviour.
        XCTAssertLessThan(elapsed, 30, "encode+decode of \(text.count) characters took \(elapsed)s")
    }

    func testConcurrentEncodingIsConsistent() async throws {
        let tokenizer = try TestSupport.tinyLlama()
        let texts = (0..<32).map { "Request \($0): the quick brown fox \($0 * 31) 東京 🚀 jumps" }
        let expected = texts.map { tokenizer.encode($0) }
        let results = await withTaskGroup(of: (Int, [Int]).self) { group in
            for (i, text) in texts.enumerated() {
                group.addTask { (i, tokenizer.encode(text)) }
            }
            var out = [[Int]](repeating: [], count: texts.count)
            for await (i, ids) in group { out[i] = ids }
            return out
        }
        XCTAssertEqual(results, expected)
    }
}
