import Foundation
import XCTest

@testable import WeftTokenizer

/// Small tokenizers written by the tests. Every expected id list below was
/// worked out by hand and checked against Hugging Face `tokenizers` 0.23.3
/// with the same tokenizer.json.
final class SyntheticTokenizerTests: XCTestCase {
    static let llama3Pattern =
        #"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"#

    static func addedToken(_ id: Int, _ content: String, special: Bool = true) -> [String: Any] {
        [
            "id": id, "content": content, "single_word": false, "lstrip": false, "rstrip": false,
            "normalized": false, "special": special,
        ]
    }

    // MARK: - Llama 3 style: Split(regex) + ByteLevel(use_regex: false), ignore_merges

    /// Byte-level vocabulary: the character of byte b has id b; then "ello" (256)
    /// and one token per merge (257...268). Added tokens get `addedIDs`.
    static func llama3Style(addedIDs: (Int, Int) = (269, 270), templateID: Int = 269, ignoreMerges: Bool = true)
        -> [String: Any]
    {
        let bl = TestSupport.byteLevel
        var vocab: [String: Int] = [:]
        for b in 0..<256 { vocab[TestSupport.byteToCharacter[UInt8(b)]!] = b }
        vocab["ello"] = 256
        let east = bl("東")  // "æĿ±"
        let eastScalars = Array(east.unicodeScalars).map { String($0) }
        let merges: [(String, String)] = [
            (bl(" "), "t"), ("h", "e"), (bl(" t"), "he"), ("l", "l"), ("'", "s"), ("1", "2"), ("12", "3"),
            (bl("\n"), bl("\n")), (eastScalars[0], eastScalars[1]), (eastScalars[0] + eastScalars[1], eastScalars[2]),
            (bl(" "), east), ("h", "ello"),
        ]
        for (a, b) in merges where vocab[a + b] == nil { vocab[a + b] = vocab.count }
        return [
            "version": "1.0", "truncation": NSNull(), "padding": NSNull(),
            "added_tokens": [addedToken(addedIDs.0, "<|begin_of_text|>"), addedToken(addedIDs.1, "<|eot_id|>")],
            "normalizer": NSNull(),
            "pre_tokenizer": [
                "type": "Sequence",
                "pretokenizers": [
                    ["type": "Split", "pattern": ["Regex": llama3Pattern], "behavior": "Isolated", "invert": false],
                    ["type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false],
                ],
            ],
            "post_processor": [
                "type": "TemplateProcessing",
                "single": [
                    ["SpecialToken": ["id": "<|begin_of_text|>", "type_id": 0]], ["Sequence": ["id": "A", "type_id": 0]],
                ],
                "pair": [],
                "special_tokens": [
                    "<|begin_of_text|>": ["id": "<|begin_of_text|>", "ids": [templateID], "tokens": ["<|begin_of_text|>"]]
                ],
            ],
            "decoder": ["type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true],
            "model": [
                "type": "BPE", "dropout": NSNull(), "unk_token": NSNull(), "continuing_subword_prefix": NSNull(),
                "end_of_word_suffix": NSNull(), "fuse_unk": false, "byte_fallback": false, "ignore_merges": ignoreMerges,
                "vocab": vocab, "merges": merges.map { [$0.0, $0.1] },
            ] as [String: Any],
        ]
    }

    func makeTokenizer(_ json: [String: Any], config: [String: Any]? = nil) throws -> Tokenizer {
        let dir = try TestSupport.temporaryDirectory(self)
        try TestSupport.writeJSON(json, to: dir, name: "tokenizer.json")
        if let config { try TestSupport.writeJSON(config, to: dir, name: "tokenizer_config.json") }
        return try Tokenizer(directory: dir)
    }

    func testLlama3StyleSplitAndByteLevel() throws {
        let t = try makeTokenizer(
            Self.llama3Style(), config: ["bos_token": "<|begin_of_text|>", "eos_token": ["content": "<|eot_id|>"]])
        XCTAssertEqual(t.vocabularySize, 271)
        XCTAssertEqual(t.bosTokenID, 269)
        XCTAssertEqual(t.eosTokenIDs, [270])
        XCTAssertNil(t.chatTemplate)

        // "the" | " cat" | "'s" | " " | "123" | "4" | "\n\n" | "he"
        let text = "the cat's 1234\n\nhe"
        XCTAssertEqual(t.encode(text), [269, 116, 258, 32, 99, 97, 116, 261, 32, 263, 52, 264, 258])
        XCTAssertEqual(t.encode(text, addSpecialTokens: false), [116, 258, 32, 99, 97, 116, 261, 32, 263, 52, 264, 258])
        XCTAssertEqual(t.decode(t.encode(text)), text)

        // Added tokens in the text; " 東京" is one piece: "Ġ東" merges, "京" stays as bytes.
        let chat = "<|begin_of_text|>Hello 東京<|eot_id|>"
        let ids = t.encode(chat)
        XCTAssertEqual(ids, [269, 269, 72, 101, 260, 111, 267, 228, 186, 172, 270])
        XCTAssertEqual(t.decode(ids), "Hello 東京")
        XCTAssertEqual(t.decode(ids, skipSpecialTokens: false), "<|begin_of_text|>" + chat)
        XCTAssertEqual(t.token(for: 267), "Ġ" + TestSupport.byteLevel("東"))

        // Case-insensitive contractions split "HE" | "'LL"; byte-level \r\n.
        XCTAssertEqual(
            t.encode("HE'LL hello ello", addSpecialTokens: false), [72, 69, 39, 76, 76, 32, 258, 260, 111, 32, 101, 260, 111])
        XCTAssertEqual(t.encode("héllo\r\n", addSpecialTokens: false), [104, 195, 169, 260, 111, 13, 10])
        XCTAssertEqual(t.encode(" 東東", addSpecialTokens: false), [267, 266])
        XCTAssertEqual(t.encode(""), [269])
        XCTAssertEqual(t.encode("", addSpecialTokens: false), [])
    }

    func testIgnoreMerges() throws {
        let t = try makeTokenizer(Self.llama3Style())
        // "ello" and "hello" are whole-word vocabulary entries that merges cannot reach.
        XCTAssertEqual(t.encode("ello", addSpecialTokens: false), [256])
        XCTAssertEqual(t.encode("hello 東京", addSpecialTokens: false), [268, 267, 228, 186, 172])
        let plain = try makeTokenizer(Self.llama3Style(ignoreMerges: false))
        XCTAssertEqual(plain.encode("ello", addSpecialTokens: false), [101, 260, 111])
        XCTAssertEqual(plain.encode("hello 東京", addSpecialTokens: false), [258, 260, 111, 267, 228, 186, 172])
    }

    func testAddedTokenIDsThatDifferFromHFsAreRefused() throws {
        // The file claims ids 300/301, leaving a gap after the 269-entry vocabulary;
        // HF would re-register them right after the vocabulary (269, 270) and only
        // warn, leaving the template's literal 300 outside the vocabulary. The file
        // is inconsistent, so it is refused with the field named.
        XCTAssertThrowsError(try makeTokenizer(Self.llama3Style(addedIDs: (300, 301), templateID: 300))) { error in
            XCTAssertEqual(
                "\(error)",
                #"tokenizer.json: added_tokens[0].id: id 300 for "<|begin_of_text|>", but the token gets id 269 (added tokens take their vocab id, else the next id after model.vocab and earlier added tokens)"#)
        }
        // Consistent ids, but the template names an id beyond the vocabulary.
        XCTAssertThrowsError(try makeTokenizer(Self.llama3Style(templateID: 300))) { error in
            XCTAssertTrue("\(error)".hasPrefix("tokenizer.json: post_processor.special_tokens.<|begin_of_text|>.ids[0]: token id 300 is not in the vocabulary"), "\(error)")
        }
        let t = try makeTokenizer(Self.llama3Style())
        XCTAssertEqual(t.id(for: "<|eot_id|>"), 270)
        XCTAssertEqual(t.vocabularySize, 271)
    }

    func testConfigAddBosAndEosReplaceThePostProcessor() throws {
        // As transformers does: explicit add_bos_token/add_eos_token rebuild the template.
        let both = try makeTokenizer(
            Self.llama3Style(),
            config: ["bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>", "add_bos_token": true, "add_eos_token": true])
        XCTAssertEqual(both.encode("he"), [269, 258, 270])
        let none = try makeTokenizer(
            Self.llama3Style(), config: ["bos_token": "<|begin_of_text|>", "add_bos_token": false])
        XCTAssertEqual(none.encode("he"), [258])
        // Without the flags the file's post-processor is used (BOS once).
        let file = try makeTokenizer(Self.llama3Style(), config: ["bos_token": "<|begin_of_text|>"])
        XCTAssertEqual(file.encode("he"), [269, 258])
        // No post-processor and no flags: nothing is added.
        var json = Self.llama3Style()
        json["post_processor"] = NSNull()
        let bare = try makeTokenizer(json, config: ["bos_token": "<|begin_of_text|>"])
        XCTAssertEqual(bare.encode("he"), [258])
        let flagged = try makeTokenizer(json, config: ["bos_token": "<|begin_of_text|>", "add_bos_token": true])
        XCTAssertEqual(flagged.encode("he"), [269, 258])
    }

    func testChatTemplateForms() throws {
        let named = try makeTokenizer(
            Self.llama3Style(),
            config: ["chat_template": [["name": "tool_use", "template": "T"], ["name": "default", "template": "D"]]])
        XCTAssertEqual(named.chatTemplate, "D")
        let plain = try makeTokenizer(Self.llama3Style(), config: ["chat_template": "{{ messages }}"])
        XCTAssertEqual(plain.chatTemplate, "{{ messages }}")

        let dir = try TestSupport.temporaryDirectory(self)
        try TestSupport.writeJSON(Self.llama3Style(), to: dir, name: "tokenizer.json")
        try "{{ jinja }}".write(to: dir.appendingPathComponent("chat_template.jinja"), atomically: true, encoding: .utf8)
        try TestSupport.writeJSON(["eos_token_id": [270, 4, 270], "bos_token_id": 269], to: dir, name: "generation_config.json")
        let fromFiles = try Tokenizer(directory: dir)
        XCTAssertEqual(fromFiles.chatTemplate, "{{ jinja }}")
        XCTAssertEqual(fromFiles.eosTokenIDs, [270, 4])
        XCTAssertEqual(fromFiles.bosTokenID, 269)
    }

    // MARK: - SentencePiece style: byte_fallback, ▁, Prepend+Replace or Metaspace

    /// `<unk>`=0 `<s>`=1 `</s>`=2, `<0x00>`...`<0xFF>` = 3...258, then ▁=259 a b c h e l o w r d é
    /// ▁h ▁he ll ▁hell ▁hello ▁w or ▁wor ▁worl ▁world 東 (260...281).
    static func sentencePieceStyle(metaspace: Bool = false, byteFallback: Bool = true) -> [String: Any] {
        var vocab: [String: Int] = ["<unk>": 0, "<s>": 1, "</s>": 2]
        for b in 0..<256 { vocab[String(format: "<0x%02X>", b)] = vocab.count }
        for token in [
            "▁", "a", "b", "c", "h", "e", "l", "o", "w", "r", "d", "é", "▁h", "▁he", "ll", "▁hell", "▁hello", "▁w", "or",
            "▁wor", "▁worl", "▁world", "東",
        ] {
            vocab[token] = vocab.count
        }
        let merges = ["▁ h", "▁h e", "l l", "▁he ll", "▁hell o", "▁ w", "o r", "▁w or", "▁wor l", "▁worl d"]
        var json: [String: Any] = [
            "version": "1.0", "truncation": NSNull(), "padding": NSNull(),
            "added_tokens": [addedToken(0, "<unk>"), addedToken(1, "<s>"), addedToken(2, "</s>")],
            "normalizer": [
                "type": "Sequence",
                "normalizers": [
                    ["type": "Prepend", "prepend": "▁"],
                    ["type": "Replace", "pattern": ["String": " "], "content": "▁"],
                ],
            ],
            "pre_tokenizer": NSNull(),
            "post_processor": [
                "type": "TemplateProcessing",
                "single": [["SpecialToken": ["id": "<s>", "type_id": 0]], ["Sequence": ["id": "A", "type_id": 0]]],
                "pair": [],
                "special_tokens": ["<s>": ["id": "<s>", "ids": [1], "tokens": ["<s>"]]],
            ],
            "decoder": [
                "type": "Sequence",
                "decoders": [
                    ["type": "Replace", "pattern": ["String": "▁"], "content": " "],
                    ["type": "ByteFallback"],
                    ["type": "Fuse"],
                    ["type": "Strip", "content": " ", "start": 1, "stop": 0],
                ],
            ],
            "model": [
                "type": "BPE", "dropout": NSNull(), "unk_token": "<unk>", "continuing_subword_prefix": NSNull(),
                "end_of_word_suffix": NSNull(), "fuse_unk": true, "byte_fallback": byteFallback, "ignore_merges": false,
                "vocab": vocab, "merges": merges,
            ] as [String: Any],
        ]
        if metaspace {
            json["normalizer"] = NSNull()
            json["pre_tokenizer"] = ["type": "Metaspace", "replacement": "▁", "prepend_scheme": "first", "split": true]
            json["decoder"] = [
                "type": "Sequence",
                "decoders": [
                    ["type": "Metaspace", "replacement": "▁", "prepend_scheme": "first", "split": true],
                    ["type": "ByteFallback"],
                    ["type": "Fuse"],
                ],
            ]
        }
        return json
    }

    func testSentencePieceByteFallbackWithPrependAndReplace() throws {
        let t = try makeTokenizer(Self.sentencePieceStyle(), config: ["bos_token": "<s>", "eos_token": "</s>"])
        XCTAssertEqual(t.token(for: 231), "<0xE4>")
        let cases: [(String, [Int])] = [
            ("hello world", [1, 275, 280]),
            // 京 is not in the vocabulary: its UTF-8 bytes E4 BA AC fall back to <0xE4> <0xBA> <0xAC>.
            ("hello 東京", [1, 275, 259, 281, 231, 189, 175]),
            // "f" falls back to <0x66>.
            ("café", [1, 259, 262, 260, 105, 270]),
            // Prepend gives "▁▁hi"; "i" falls back to <0x69>.
            (" hi", [1, 259, 271, 108]),
            ("<s>hello world", [1, 1, 275, 280]),
            ("hello  xyz world", [1, 275, 259, 259, 123, 124, 125, 280]),
            ("", [1]),
        ]
        for (text, expected) in cases {
            XCTAssertEqual(t.encode(text), expected, text)
            XCTAssertEqual(t.encode(text, addSpecialTokens: false), Array(expected.dropFirst()), text)
            // Replace ▁ -> " ", bytes fused back into UTF-8, leading space stripped.
            XCTAssertEqual(t.decode(expected), text.hasPrefix("<s>") ? String(text.dropFirst(3)) : text, text)
        }
        // A lone continuation byte cannot be decoded: one U+FFFD per byte (HF ByteFallback).
        XCTAssertEqual(t.decode([275, 231, 189, 280]), "hello\u{FFFD}\u{FFFD} world")
    }

    func testStreamingDecoderWithByteFallbackTokens() throws {
        for metaspace in [false, true] {
            let t = try makeTokenizer(Self.sentencePieceStyle(metaspace: metaspace))
            let text = "hello 東京 world café 🚀"
            let ids = t.encode(text)
            XCTAssertTrue(ids.contains(231), "京 must go through <0xE4> <0xBA> <0xAC>")
            var stream = StreamingDecoder(tokenizer: t)
            var pieces: [String] = []
            for id in ids { pieces.append(stream.push(id)) }
            pieces.append(stream.flush())
            XCTAssertFalse(pieces.joined().contains("\u{FFFD}"))
            XCTAssertEqual(pieces.joined(), text)
            XCTAssertEqual(pieces.joined(), t.decode(ids))
            XCTAssertTrue(pieces.contains("京"), "京 comes out whole: \(pieces)")
        }
    }

    func testSentencePieceMetaspacePrependFirst() throws {
        let t = try makeTokenizer(Self.sentencePieceStyle(metaspace: true))
        XCTAssertEqual(t.encode("hello world"), [1, 275, 280])
        XCTAssertEqual(t.encode("hello 東京"), [1, 275, 259, 281, 231, 189, 175])
        // The text already starts with ▁ after replacing the space: nothing prepended.
        XCTAssertEqual(t.encode(" hi"), [1, 271, 108])
        // prepend_scheme "first": no ▁ before text that follows an added token.
        XCTAssertEqual(t.encode("<s>hello world"), [1, 1, 263, 264, 273, 266, 280])
        XCTAssertEqual(t.decode([1, 275, 280]), "hello world")
        XCTAssertEqual(t.decode([1, 275, 259, 281, 231, 189, 175]), "hello 東京")
        XCTAssertEqual(t.decode([1, 271, 108]), "hi")
    }

    func testUnknownCharactersAreFusedIntoOneUnk() throws {
        let t = try makeTokenizer(Self.sentencePieceStyle(byteFallback: false))
        XCTAssertEqual(t.encode("hello 東京"), [1, 275, 259, 281, 0])
        XCTAssertEqual(t.encode("café"), [1, 259, 262, 260, 0, 270])
        XCTAssertEqual(t.encode("hello  xyz world"), [1, 275, 259, 259, 0, 280])
        XCTAssertEqual(t.decode([1, 275, 259, 259, 0, 280]), "hello   world")
    }

    // MARK: - Added token options

    func testAddedTokenStripSingleWordAndLongestMatch() throws {
        let url = TestSupport.fixtureDirectory("tiny-llama").appendingPathComponent("tokenizer.json")
        var json = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(contentsOf: url)) as? [String: Any])
        var added = try XCTUnwrap(json["added_tokens"] as? [[String: Any]])
        var tool = Self.addedToken(4096, "<tool>", special: false)
        tool["lstrip"] = true
        tool["rstrip"] = true
        var word = Self.addedToken(4097, "word", special: false)
        word["single_word"] = true
        added += [tool, word, Self.addedToken(4098, "<|end")]
        json["added_tokens"] = added
        let t = try makeTokenizer(json)

        let cases: [(String, [Int], String)] = [
            // lstrip/rstrip swallow the surrounding spaces.
            ("a  <tool>  b", [64, 4096, 65], "a<tool>b"),
            ("<tool><tool>", [4096, 4096], "<tool><tool>"),
            // single_word: only when not inside a word (\w).
            ("word", [4097], "word"),
            ("a word, b", [64, 220, 4097, 11, 333], "a word, b"),
            ("sword words", [2406, 1934, 320, 3014], "sword words"),
            ("word_x", [86, 1934, 62, 87], "word_x"),
            ("東京word", [162, 251, 109, 160, 118, 105, 86, 1934], "東京word"),
            // Longest match: "<|end_of_text|>" wins over "<|end".
            ("x<|end_of_text|>y<|endz", [87, 4095, 88, 4098, 89], "xyz"),
        ]
        for (text, expected, decoded) in cases {
            XCTAssertEqual(t.encode(text, addSpecialTokens: false), expected, text)
            XCTAssertEqual(t.decode(expected), decoded, text)
        }
        XCTAssertEqual(t.decode([87, 4095, 88, 4098, 89], skipSpecialTokens: false), "x<|end_of_text|>y<|endz")
    }
}
