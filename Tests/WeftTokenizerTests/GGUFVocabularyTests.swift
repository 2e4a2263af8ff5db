import Foundation
import XCTest

@testable import WeftTokenizer

/// `Tokenizer(gguf:)` without a model file: the SentencePiece (`llama`) vocabulary
/// trained by Scripts/make_tokenizer_fixtures.py against sentencepiece and
/// llama.cpp, small synthetic vocabularies, and every refusal.
final class GGUFVocabularyTests: XCTestCase {
    /// A fixture, read with the module's own JSON reader (Foundation's drops a
    /// leading U+FEFF from strings, and some fixture strings start with one).
    static func fixture(_ name: String) throws -> JSONNode {
        try JSONNode.load(url: TestSupport.fixtureDirectory("tokenizer-gguf").appendingPathComponent(name), file: name)
    }

    static func strings() throws -> [String] {
        try fixture("strings.json")["strings"].array().map { try $0.string() }
    }

    static func ids(_ node: JSONNode) throws -> [Int] {
        try node.array().map { try $0.int() }
    }

    static func spmVocabulary() throws -> GGUFVocabulary {
        let object = try fixture("spm-vocab.json")
        return GGUFVocabulary(
            model: "llama",
            tokens: try object["tokens"].array().map { try $0.string() },
            scores: try object["scores"].array().map { Float(try $0.double()) },
            tokenTypes: try object["types"].array().map { Int32(try $0.int()) },
            bosID: 1, eosID: 2, unknownID: 0)
    }

    // MARK: - llama (SentencePiece)

    func testSentencePieceMatchesSentencepiece() throws {
        let strings = try Self.strings()
        let expected = try Self.fixture("spm-ids.json").array()
        XCTAssertEqual(strings.count, expected.count)
        let tokenizer = try Tokenizer(gguf: Self.spmVocabulary())
        var compared = 0
        var failures: [String] = []
        for (text, item) in zip(strings, expected) {
            if item.isNull { continue }
            let ids = try Self.ids(item)
            compared += 1
            let got = tokenizer.encode(text, addSpecialTokens: false)
            if got != ids { failures.append("\(text.debugDescription): \(got) != \(ids)") }
            XCTAssertEqual(tokenizer.encode(text), [1] + ids)
        }
        XCTAssertGreaterThan(compared, 2000)
        XCTAssertEqual(failures.count, 0, failures.prefix(5).joined(separator: "\n"))
    }

    func testSentencePieceMatchesLlamaCpp() throws {
        let strings = try Self.strings()
        let items = try Self.fixture("llama-cpp-ids.json")["llama"].array()
        let tokenizer = try Tokenizer(gguf: Self.spmVocabulary())
        XCTAssertGreaterThan(items.count, 50)
        for item in items {
            let text = strings[try item["index"].int()]
            XCTAssertEqual(tokenizer.encode(text), try Self.ids(item["ids"]), text.debugDescription)
        }
    }

    func testSentencePieceDecodes() throws {
        let tokenizer = try Tokenizer(gguf: Self.spmVocabulary())
        for text in try Self.strings() {
            let ids = tokenizer.encode(text)
            XCTAssertEqual(ids.first, 1)
            // BOS is skipped; the leading space the prefix added is stripped.
            XCTAssertEqual(tokenizer.decode(ids), text)
            var stream = StreamingDecoder(tokenizer: tokenizer)
            XCTAssertEqual(stream.push(contentsOf: ids) + stream.flush(), text, text.debugDescription)
        }
        XCTAssertEqual(tokenizer.decode([1, 2, 0], skipSpecialTokens: false), "<s></s><unk>")
        XCTAssertEqual(tokenizer.decode([1, 2, 0]), "")
    }

    func testSentencePieceParts() throws {
        let tokenizer = try Tokenizer(gguf: Self.spmVocabulary())
        XCTAssertEqual(tokenizer.bosTokenID, 1)
        XCTAssertEqual(tokenizer.bosToken, "<s>")
        XCTAssertEqual(tokenizer.eosToken, "</s>")
        XCTAssertEqual(tokenizer.eosTokenIDs, [2])
        XCTAssertEqual(tokenizer.eosTokenIDs, try Self.ids(Self.fixture("llama-cpp-ids.json")["eog"]["spm"]))
        XCTAssertEqual(tokenizer.specialTokenIDs, [0, 1, 2])
        XCTAssertNil(tokenizer.chatTemplate)
        // Characters without a token fall back to their UTF-8 bytes.
        let ids = tokenizer.encode("\u{10FFFD}", addSpecialTokens: false)
        XCTAssertEqual(ids.map { tokenizer.token(for: $0)! }, ["\u{2581}", "<0xF4>", "<0x8F>", "<0xBF>", "<0xBD>"])
        // Control tokens in the text are matched whole and the text after them gets
        // the space prefix again (llama.cpp; sentencepiece itself would not match them).
        let hello = tokenizer.encode("Hello", addSpecialTokens: false)
        XCTAssertEqual(tokenizer.encode("Hello</s>Hello", addSpecialTokens: false), hello + [2] + hello)
        // Without the space prefix.
        var vocabulary = try Self.spmVocabulary()
        vocabulary.addSpacePrefix = false
        vocabulary.addBOS = false
        vocabulary.addEOS = true
        let plain = try Tokenizer(gguf: vocabulary)
        XCTAssertEqual(plain.encode(" Hello"), hello + [2])
        XCTAssertNotEqual(plain.encode("Hello", addSpecialTokens: false), hello)
        XCTAssertEqual(plain.decode(plain.encode(" Hello world")), " Hello world")
    }

    // MARK: - Synthetic vocabularies

    /// Byte-level BPE over a few merges, every byte a token.
    static func byteLevelVocabulary(pre: String? = "gpt-2", extra: [(String, Int32)] = []) -> GGUFVocabulary {
        var tokens = (0..<256).map { TestSupport.byteToCharacter[UInt8($0)]! }
        var types = [Int32](repeating: 1, count: 256)
        let merges = ["h e", "l l", "he ll", "hell o", "Ġ w", "o r", "Ġw or", "Ġwor l", "Ġworl d"]
        for merge in merges { tokens.append(merge.replacingOccurrences(of: " ", with: "")) }
        types += [Int32](repeating: 1, count: merges.count)
        for (token, type) in extra {
            tokens.append(token)
            types.append(type)
        }
        return GGUFVocabulary(model: "gpt2", pre: pre, tokens: tokens, tokenTypes: types, merges: merges)
    }

    func testByteLevel() throws {
        let vocabulary = Self.byteLevelVocabulary(extra: [("<|im_end|>", 3), ("<tool>", 4), ("<|endoftext|>", 1)])
        let tokenizer = try Tokenizer(gguf: vocabulary)
        let hello = 256 + 3, world = 256 + 8, imEnd = 265, tool = 266, endOfText = 267
        XCTAssertEqual(tokenizer.token(for: hello), "hello")
        XCTAssertEqual(tokenizer.token(for: world), "Ġworld")
        XCTAssertEqual(tokenizer.encode("hello world"), [hello, world])
        XCTAssertEqual(tokenizer.encode("hello<|im_end|> world<tool>"), [hello, imEnd, world, tool])
        XCTAssertEqual(tokenizer.encode("<|endoftext|>"), [endOfText])
        XCTAssertEqual(tokenizer.decode([hello, imEnd, world, tool, endOfText]), "hello world<tool>")
        XCTAssertEqual(
            tokenizer.decode([hello, imEnd, world, tool, endOfText], skipSpecialTokens: false),
            "hello<|im_end|> world<tool><|endoftext|>")
        // `<|endoftext|>` ends generation, so llama.cpp makes it a control token.
        XCTAssertEqual(tokenizer.specialTokenIDs, [imEnd, endOfText])
        XCTAssertEqual(tokenizer.eosTokenIDs, [imEnd, endOfText])
        XCTAssertNil(tokenizer.bosTokenID)
        XCTAssertEqual(tokenizer.vocabularySize, 268)
    }

    func testEndOfGenerationSet() throws {
        let extra: [(String, Int32)] = [
            ("<|im_start|>", 3), ("<|im_end|>", 3), ("<|eot_id|>", 3), ("<|eom_id|>", 1), ("<reponame>", 3),
            ("<|fim_prefix|>", 1), ("<|file_sep|>", 3), ("<unused0>", 3),
        ]
        var vocabulary = Self.byteLevelVocabulary(extra: extra)
        vocabulary.bosID = 265
        vocabulary.eosID = 266
        vocabulary.addBOS = true
        let tokenizer = try Tokenizer(gguf: vocabulary)
        XCTAssertEqual(tokenizer.eosTokenIDs, [266, 267, 268, 269, 271])
        XCTAssertEqual(tokenizer.eosToken, "<|im_end|>")
        XCTAssertEqual(tokenizer.bosToken, "<|im_start|>")
        // The fill-in-the-middle prefix becomes a control token too.
        XCTAssertTrue(tokenizer.specialTokenIDs.contains(270))
        XCTAssertEqual(tokenizer.encode("hello"), [265, 259])
        XCTAssertEqual(tokenizer.encode("hello", addSpecialTokens: false), [259])
        // gpt-oss: `<|end|>` does not end generation next to `<|return|>` and `<|call|>`.
        let oss = try Tokenizer(gguf: Self.byteLevelVocabulary(extra: [("<|end|>", 3), ("<|return|>", 3), ("<|call|>", 3)]))
        XCTAssertEqual(oss.eosTokenIDs, [266, 267])
        XCTAssertFalse(oss.specialTokenIDs.contains(265))
    }

    func testPreTokenizerDefaults() throws {
        // llama3 and tekken add BOS when the key is missing; others do not.
        for (pre, addsBOS) in [("llama-bpe", true), ("tekken", true), ("qwen2", false), ("smollm", false), (nil, false)] {
            var vocabulary = Self.byteLevelVocabulary(pre: pre, extra: [("<s>", 3)])
            vocabulary.bosID = 265
            let tokenizer = try Tokenizer(gguf: vocabulary)
            XCTAssertEqual(tokenizer.encode("hello").first == 265, addsBOS, pre ?? "missing")
        }
    }

    func testSplitRules() {
        func pieces(_ pattern: TextPattern, _ text: String) -> [String] {
            let bytes = Array(text.utf8)
            let ranges = SplitBehavior.isolated.pieces(matches: pattern.matches(in: bytes), count: bytes.count)
            return ranges.map { String(decoding: bytes[$0], as: UTF8.self) }
        }
        let tekken = TextPattern.tekken(contractions: false, maxDigits: 1)
        XCTAssertEqual(pieces(tekken, "HelloWorld ÉCOLE helloÉcole"), ["Hello", "World", " É", "COLE", " helloÉcole"])
        XCTAssertEqual(pieces(tekken, "a/b//\n12 ..\n\n  x"), ["a", "/b", "//\n", "1", "2", " ..\n\n", " ", " x"])
        XCTAssertEqual(pieces(tekken, "It's"), ["It", "'s"])
        let gpt4o = TextPattern.tekken(contractions: true, maxDigits: 3)
        XCTAssertEqual(pieces(gpt4o, "It's WE'LL don'T 12345"), ["It's", " WE'LL", " don'T", " ", "123", "45"])
        XCTAssertEqual(pieces(.runs(.asciiDigit, length: 3), "1234567a12"), ["123", "456", "7a12"])
        XCTAssertEqual(pieces(.runs(.number, length: nil), "ab12³4 c"), ["ab", "12³4", " c"])
        XCTAssertEqual(pieces(.runs(.punctuationAndOperators, length: nil), "a+=b, «c»`d"), ["a", "+=", "b", ",", " ", "«", "c", "»", "`d"])
        XCTAssertEqual(pieces(.llama3(maxDigits: 3, foldsLongS: false), "'ſ 'S"), ["'ſ", " '", "S"])
        XCTAssertEqual(pieces(.llama3(maxDigits: 3, foldsLongS: false), "'ſx"), ["'ſx"])
        XCTAssertEqual(pieces(.llama3(maxDigits: 3, foldsLongS: true), "'ſx"), ["'ſ", "x"])
    }

    // MARK: - Refusals

    func assertRefused(
        _ vocabulary: GGUFVocabulary, _ message: String, file: StaticString = #filePath, line: UInt = #line
    ) {
        XCTAssertThrowsError(try Tokenizer(gguf: vocabulary), file: file, line: line) { error in
            let text = "\(error)"
            XCTAssertEqual(text, message, file: file, line: line)
            XCTAssertFalse(text.contains("\n"), file: file, line: line)
        }
    }

    func testRefusals() throws {
        let good = Self.byteLevelVocabulary()
        XCTAssertNoThrow(try Tokenizer(gguf: good))
        var v = good
        v.model = "bert"
        assertRefused(v, "GGUF: tokenizer.ggml.model: 'bert' is not a tokenizer model Weft knows (known: gpt2, llama)")
        v = good
        v.pre = "foo"
        assertRefused(
            v,
            "GGUF: tokenizer.ggml.pre: 'foo' is not a pre-tokenizer Weft knows (known: \(LlamaCppPreTokenizer.knownNames.joined(separator: ", ")))")
        v = good
        v.merges = nil
        assertRefused(v, "GGUF: tokenizer.ggml.merges: missing (the gpt2 tokenizer merges by these)")
        for (line, problem) in [("he ll o", "is not two tokens"), ("hell", "is not two tokens"), (" he", "is not two tokens"),
                                ("he ", "is not two tokens")] {
            v = good
            v.merges![3] = line
            assertRefused(v, "GGUF: tokenizer.ggml.merges[3]: '\(line)' \(problem) separated by one space")
        }
        v = good
        v.merges![0] = "x yz"
        assertRefused(v, "GGUF: tokenizer.ggml.merges[0]: 'yz' is not in tokenizer.ggml.tokens")
        v = good
        v.merges![1] = "h e"
        assertRefused(v, "GGUF: tokenizer.ggml.merges[1]: 'h e' is listed twice")
        v = good
        v.tokens[244] = "hello"
        assertRefused(v, "GGUF: tokenizer.ggml.tokens[259]: 'hello' is also token 244 (each token must be unique)")
        v = good
        v.tokens = []
        v.tokenTypes = nil
        assertRefused(v, "GGUF: tokenizer.ggml.tokens: no tokens")
        v = good
        v.tokenTypes!.removeLast()
        assertRefused(v, "GGUF: tokenizer.ggml.token_type: 264 token types for 265 tokens in tokenizer.ggml.tokens")
        v = good
        v.tokenTypes![7] = 9
        assertRefused(
            v,
            "GGUF: tokenizer.ggml.token_type[7]: 9 is not a token type Weft knows (1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte)")
        v = good
        v.scores = [0, 1]
        assertRefused(v, "GGUF: tokenizer.ggml.scores: 2 scores for 265 tokens in tokenizer.ggml.tokens")
        for (key, path) in [
            ("tokenizer.ggml.bos_token_id", \GGUFVocabulary.bosID), ("tokenizer.ggml.eos_token_id", \.eosID),
            ("tokenizer.ggml.eot_token_id", \.eotID), ("tokenizer.ggml.eom_token_id", \.eomID),
            ("tokenizer.ggml.unknown_token_id", \.unknownID), ("tokenizer.ggml.padding_token_id", \.paddingID),
            ("tokenizer.ggml.seperator_token_id", \.sepID),
        ] {
            for id in [265, -1] {
                v = good
                v[keyPath: path] = id
                assertRefused(v, "GGUF: \(key): token id \(id) is not in the vocabulary (ids 0...264 of tokenizer.ggml.tokens)")
            }
        }
        v = good
        v.addBOS = true
        assertRefused(v, "GGUF: tokenizer.ggml.bos_token_id: missing, but tokenizer.ggml.add_bos_token asks for a BOS token")
        v = good
        v.addEOS = true
        assertRefused(v, "GGUF: tokenizer.ggml.eos_token_id: missing, but tokenizer.ggml.add_eos_token asks for an EOS token")
        v = good
        v.addSpacePrefix = true
        assertRefused(v, "GGUF: tokenizer.ggml.add_space_prefix: true is not supported for the gpt2 tokenizer")

        var spm = try Self.spmVocabulary()
        XCTAssertNoThrow(try Tokenizer(gguf: spm))
        spm.scores = nil
        assertRefused(spm, "GGUF: tokenizer.ggml.scores: missing (the llama tokenizer merges by these)")
        spm = try Self.spmVocabulary()
        spm.scores![5] = .nan
        assertRefused(spm, "GGUF: tokenizer.ggml.scores[5]: nan is not a finite score")
        spm.source = "model.gguf"
        spm.scores![5] = 0
        spm.eosID = 4000
        assertRefused(spm, "model.gguf: tokenizer.ggml.eos_token_id: token id 4000 is not in the vocabulary (ids 0...3999 of tokenizer.ggml.tokens)")
    }
}
