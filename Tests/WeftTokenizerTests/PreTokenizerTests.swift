import Foundation
import XCTest

@testable import WeftTokenizer

final class PreTokenizerTests: XCTestCase {
    func split(_ pattern: TextPattern, _ text: String) -> [String] {
        let bytes = Array(text.utf8)
        return SplitBehavior.isolated.pieces(matches: pattern.matches(in: bytes), count: bytes.count)
            .map { String(decoding: bytes[$0], as: UTF8.self) }
    }

    func assertSplits(
        _ pattern: TextPattern, _ cases: [(String, [String])], file: StaticString = #filePath, line: UInt = #line
    ) {
        for (text, expected) in cases {
            let got = split(pattern, text)
            // Compare code points exactly (String == is canonical equivalence).
            XCTAssertEqual(
                got.map { Array($0.unicodeScalars) }, expected.map { Array($0.unicodeScalars) },
                "\(text.debugDescription): \(got)", file: file, line: line)
        }
    }

    // Expected pieces from Hugging Face tokenizers (Split(Regex(pattern), "isolated")).

    func testGPT2SplitMatchesHF() {
        assertSplits(
            .gpt2,
            [
                ("Hello world", ["Hello", " world"]),
                ("  leading  ", [" ", " leading", "  "]),
                ("a\u{A}\u{A}\u{A}b", ["a", "\u{A}\u{A}", "\u{A}", "b"]),
                ("x  \u{A}  y", ["x", "  \u{A} ", " y"]),
                ("I'M YOU'RE '\u{17F} don't", ["I", "'", "M", " YOU", "'", "RE", " '", "\u{17F}", " don", "'t"]),
                ("1234567 \u{BD}\u{B2} \u{663}\u{663}", ["1234567", " \u{BD}\u{B2}", " \u{663}\u{663}"]),
                ("\u{A0}\u{3000}x\u{2028}", ["\u{A0}", "\u{3000}", "x", "\u{2028}"]),
                (" ,.\u{A}\u{A}(x", [" ,.", "\u{A}", "\u{A}", "(", "x"]),
                ("e\u{301} caf\u{E9}", ["e", "\u{301}", " caf\u{E9}"]),
                ("\u{6771}\u{4EAC}\u{1F680}\u{2728}", ["\u{6771}\u{4EAC}", "\u{1F680}\u{2728}"]),
                ("\u{D}\u{A}\u{D}\u{A} ", ["\u{D}\u{A}\u{D}\u{A} "]),
                ("tabs\u{9}\u{9}x", ["tabs", "\u{9}", "\u{9}", "x"]),
                ("'hello", ["'", "hello"]),
                ("$100.00!!\u{A}", ["$", "100", ".", "00", "!!", "\u{A}"]),
                ("IT'\u{17F}'S x'Ll", ["IT", "'", "\u{17F}", "'", "S", " x", "'", "Ll"]),
                ("", []),
            ])
    }

    func testLlama3SplitMatchesHF() {
        assertSplits(
            .llama3(maxDigits: 3, foldsLongS: true),
            [
                ("Hello world", ["Hello", " world"]),
                ("  leading  ", [" ", " leading", "  "]),
                ("a\u{A}\u{A}\u{A}b", ["a", "\u{A}\u{A}\u{A}", "b"]),
                ("x  \u{A}  y", ["x", "  \u{A}", " ", " y"]),
                ("I'M YOU'RE '\u{17F} don't", ["I", "'M", " YOU", "'RE", " '", "\u{17F}", " don", "'t"]),
                ("1234567 \u{BD}\u{B2} \u{663}\u{663}", ["123", "456", "7", " ", "\u{BD}\u{B2}", " ", "\u{663}\u{663}"]),
                ("\u{A0}\u{3000}x\u{2028}", ["\u{A0}", "\u{3000}x", "\u{2028}"]),
                (" ,.\u{A}\u{A}(x", [" ,.\u{A}\u{A}", "(x"]),
                ("e\u{301} caf\u{E9}", ["e", "\u{301}", " caf\u{E9}"]),
                ("\u{6771}\u{4EAC}\u{1F680}\u{2728}", ["\u{6771}\u{4EAC}", "\u{1F680}\u{2728}"]),
                ("\u{D}\u{A}\u{D}\u{A} ", ["\u{D}\u{A}\u{D}\u{A}", " "]),
                ("tabs\u{9}\u{9}x", ["tabs", "\u{9}", "\u{9}x"]),
                ("'hello", ["'hello"]),
                ("$100.00!!\u{A}", ["$", "100", ".", "00", "!!\u{A}"]),
                // Oniguruma case folding: (?i:'s) also matches 'ſ (U+017F).
                ("IT'\u{17F}'S x'Ll", ["IT", "'\u{17F}", "'S", " x", "'Ll"]),
                ("x'\u{17F}E it'\u{17F}t", ["x", "'\u{17F}", "E", " it", "'\u{17F}", "t"]),
            ])
    }

    func testQwen2SplitMatchesHF() {
        assertSplits(
            .llama3(maxDigits: 1, foldsLongS: true),
            [
                ("x  \u{A}  y", ["x", "  \u{A}", " ", " y"]),
                (
                    "1234567 \u{BD}\u{B2} \u{663}\u{663}",
                    ["1", "2", "3", "4", "5", "6", "7", " ", "\u{BD}", "\u{B2}", " ", "\u{663}", "\u{663}"]
                ),
                ("$100.00!!\u{A}", ["$", "1", "0", "0", ".", "0", "0", "!!\u{A}"]),
                ("I'M YOU'RE '\u{17F} don't", ["I", "'M", " YOU", "'RE", " '", "\u{17F}", " don", "'t"]),
            ])
    }

    func testWellKnownPatternsAreRecognised() throws {
        let node = JSONNode(root: .null, file: "tokenizer.json")
        guard case .gpt2 = try TextPattern.fromRegex(gpt2SplitPattern, node: node) else { return XCTFail("gpt2") }
        guard case .llama3(3, true) = try TextPattern.fromRegex(llama3SplitPattern, node: node) else {
            return XCTFail("llama3")
        }
        guard case .llama3(1, true) = try TextPattern.fromRegex(qwen2SplitPattern, node: node) else {
            return XCTFail("qwen2")
        }
        guard case .regex = try TextPattern.fromRegex(#"\p{N}+"#, node: node) else { return XCTFail("regex") }
    }

    /// The hand-written splitters against Swift's regex engine running the same
    /// patterns on code points, over many random strings. (Strings containing
    /// ſ are skipped: Swift's case-insensitive matching does not fold it to s,
    /// Oniguruma does; the hand-written splitter follows Oniguruma, see above.)
    func testHandWrittenSplittersAgreeWithRegexEngine() throws {
        let alphabet: [String] = [
            "a", "Z", "s", "S", "t", "T", "r", "e", "E", "v", "m", "l", "L", "d", "'", "'s", "'LL", "'re", "'Ve", "0", "7",
            " ", " ", "  ", "\t", "\n", "\r", "\r\n", "\u{B}", "\u{C}", "\u{85}", "\u{A0}", "\u{2028}", "\u{3000}",
            "\u{200B}", "\u{FEFF}", ".", ",", "!", "-", "(", "\"", "$", "é", "e\u{301}", "\u{301}", "東", "京", "🚀",
            "✨", "👍🏽", "П", "ß", "İ", "ǅ", "Ⅷ", "½", "٣", "²", "𝟎", "\u{1F}", "\u{7F}", "—", "…", "ا",
        ]
        var rng = SplitMix64(seed: 0x5EED)
        let patterns: [(TextPattern, CompiledRegex)] = [
            (.gpt2, try CompiledRegex(pattern: gpt2SplitPattern)),
            (.llama3(maxDigits: 3, foldsLongS: true), try CompiledRegex(pattern: llama3SplitPattern)),
            (.llama3(maxDigits: 1, foldsLongS: true), try CompiledRegex(pattern: qwen2SplitPattern)),
        ]
        var compared = 0
        for _ in 0..<600 {
            let length = Int(rng.next() % 24)
            var text = ""
            for _ in 0..<length { text += alphabet[Int(rng.next() % UInt64(alphabet.count))] }
            for (fast, regex) in patterns {
                let fastPieces = split(fast, text)
                let regexPieces = split(.regex(regex), text)
                XCTAssertEqual(
                    fastPieces.map { Array($0.unicodeScalars) }, regexPieces.map { Array($0.unicodeScalars) },
                    "\(text.debugDescription)")
                XCTAssertEqual(fastPieces.joined().unicodeScalars.count, text.unicodeScalars.count)
                compared += 1
            }
        }
        XCTAssertEqual(compared, 1800)
    }

    func testSplitBehaviorsMatchHF() {
        // HF: pre_tokenizers.Split("-", behavior, invert) on "a-b--c-" and "-x".
        let cases: [(SplitBehavior, Bool, [String], [String])] = [
            (.removed, false, ["a", "b", "c"], ["x"]),
            (.removed, true, ["-", "-", "-", "-"], ["-"]),
            (.isolated, false, ["a", "-", "b", "-", "-", "c", "-"], ["-", "x"]),
            (.isolated, true, ["a", "-", "b", "-", "-", "c", "-"], ["-", "x"]),
            (.mergedWithPrevious, false, ["a-", "b-", "-", "c-"], ["-", "x"]),
            (.mergedWithPrevious, true, ["a", "-b", "-", "-c", "-"], ["-x"]),
            (.mergedWithNext, false, ["a", "-b", "-", "-c", "-"], ["-x"]),
            (.mergedWithNext, true, ["a-", "b-", "-", "c-"], ["-", "x"]),
            (.contiguous, false, ["a", "-", "b", "--", "c", "-"], ["-", "x"]),
            (.contiguous, true, ["a", "-", "b", "--", "c", "-"], ["-", "x"]),
        ]
        for (behavior, invert, first, second) in cases {
            for (text, expected) in [("a-b--c-", first), ("-x", second)] {
                let bytes = Array(text.utf8)
                let got = behavior.pieces(
                    matches: TextPattern.literal([UInt8(ascii: "-")]).matches(in: bytes), count: bytes.count,
                    invert: invert
                ).map { String(decoding: bytes[$0], as: UTF8.self) }
                XCTAssertEqual(got, expected, "\(behavior) invert=\(invert) \(text)")
            }
        }
    }

    func testMetaspaceAndByteLevelPreTokenizers() {
        let metaspace = PreTokenizer.metaspace(replacement: Array("▁".utf8), prependScheme: .first, split: true)
        let pieces = metaspace.apply([PreToken(bytes: Array("Hey  friend".utf8), atStart: true)])
        XCTAssertEqual(pieces.map { String(decoding: $0.bytes, as: UTF8.self) }, ["▁Hey", "▁", "▁friend"])
        let later = metaspace.apply([PreToken(bytes: Array("Hey".utf8), atStart: false)])
        XCTAssertEqual(later.map { String(decoding: $0.bytes, as: UTF8.self) }, ["Hey"])
        let never = PreTokenizer.metaspace(replacement: Array("▁".utf8), prependScheme: .never, split: false)
        XCTAssertEqual(
            never.apply([PreToken(bytes: Array("a b".utf8), atStart: true)]).map { String(decoding: $0.bytes, as: UTF8.self) },
            ["a▁b"])

        let byteLevel = PreTokenizer.byteLevel(addPrefixSpace: true, useRegex: true)
        let out = byteLevel.apply([PreToken(bytes: Array("Hi  東".utf8), atStart: true)])
        XCTAssertEqual(
            out.map { String(decoding: $0.bytes, as: UTF8.self) },
            ["ĠHi", "Ġ", TestSupport.byteLevel(" 東")])

        let digits = PreTokenizer.digits(individual: false)
        XCTAssertEqual(
            digits.apply([PreToken(bytes: Array("ab123c4".utf8), atStart: true)]).map {
                String(decoding: $0.bytes, as: UTF8.self)
            }, ["ab", "123", "c", "4"])
    }
}

/// Deterministic random numbers for the randomized tests.
struct SplitMix64 {
    var state: UInt64

    init(seed: UInt64) { state = seed }

    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
