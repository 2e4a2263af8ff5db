import Foundation

/// A tokenizer as a GGUF file's metadata describes it: the values of the
/// `tokenizer.ggml.*` keys and `tokenizer.chat_template`, as plain values
/// (WeftRuntime's `Tokenizer(gguf: GGUFFile)` reads them from a file).
///
/// `Tokenizer(gguf:)` builds the tokenizer llama.cpp builds from the same keys
/// (src/llama-vocab.cpp): `gpt2` (byte-level BPE with the pre-tokenizer named
/// by `pre`) or `llama` (SentencePiece-style BPE over scores with byte fallback).
public struct GGUFVocabulary: Sendable {
    /// `tokenizer.ggml.token_type` values.
    public enum TokenType: Int32, Sendable {
        case normal = 1, unknown = 2, control = 3, userDefined = 4, unused = 5, byte = 6
    }

    /// The GGUF keys, for error messages and readers.
    public enum Key {
        public static let model = "tokenizer.ggml.model"
        public static let pre = "tokenizer.ggml.pre"
        public static let tokens = "tokenizer.ggml.tokens"
        public static let scores = "tokenizer.ggml.scores"
        public static let tokenTypes = "tokenizer.ggml.token_type"
        public static let merges = "tokenizer.ggml.merges"
        public static let bosID = "tokenizer.ggml.bos_token_id"
        public static let eosID = "tokenizer.ggml.eos_token_id"
        public static let eotID = "tokenizer.ggml.eot_token_id"
        public static let eomID = "tokenizer.ggml.eom_token_id"
        public static let unknownID = "tokenizer.ggml.unknown_token_id"
        public static let paddingID = "tokenizer.ggml.padding_token_id"
        public static let sepID = "tokenizer.ggml.seperator_token_id"
        public static let addBOS = "tokenizer.ggml.add_bos_token"
        public static let addEOS = "tokenizer.ggml.add_eos_token"
        public static let addSpacePrefix = "tokenizer.ggml.add_space_prefix"
        public static let chatTemplate = "tokenizer.chat_template"
    }

    /// `tokenizer.ggml.model`: `gpt2` or `llama`.
    public var model: String
    /// `tokenizer.ggml.pre` (gpt2 only; missing means llama.cpp's `default`).
    public var pre: String?
    public var tokens: [String]
    public var scores: [Float]?
    /// `TokenType` raw values, one per token (missing: all normal).
    public var tokenTypes: [Int32]?
    /// `"left right"` lines, highest priority first (gpt2).
    public var merges: [String]?
    public var bosID: Int?
    public var eosID: Int?
    public var eotID: Int?
    public var eomID: Int?
    public var unknownID: Int?
    public var paddingID: Int?
    public var sepID: Int?
    public var addBOS: Bool?
    public var addEOS: Bool?
    public var addSpacePrefix: Bool?
    public var chatTemplate: String?
    /// Where the values came from (e.g. the file name), the first part of error messages.
    public var source: String

    public init(
        model: String, pre: String? = nil, tokens: [String], scores: [Float]? = nil, tokenTypes: [Int32]? = nil,
        merges: [String]? = nil, bosID: Int? = nil, eosID: Int? = nil, eotID: Int? = nil, eomID: Int? = nil,
        unknownID: Int? = nil, paddingID: Int? = nil, sepID: Int? = nil, addBOS: Bool? = nil, addEOS: Bool? = nil,
        addSpacePrefix: Bool? = nil, chatTemplate: String? = nil, source: String = "GGUF"
    ) {
        self.model = model
        self.pre = pre
        self.tokens = tokens
        self.scores = scores
        self.tokenTypes = tokenTypes
        self.merges = merges
        self.bosID = bosID
        self.eosID = eosID
        self.eotID = eotID
        self.eomID = eomID
        self.unknownID = unknownID
        self.paddingID = paddingID
        self.sepID = sepID
        self.addBOS = addBOS
        self.addEOS = addEOS
        self.addSpacePrefix = addSpacePrefix
        self.chatTemplate = chatTemplate
        self.source = source
    }
}

/// The `tokenizer.ggml.pre` pre-tokenizers Weft implements: llama.cpp's regex
/// list for the name (each regex splits every piece further, keeping the text
/// between matches), then the GPT-2 byte-to-character mapping.
struct LlamaCppPreTokenizer {
    let splits: [TextPattern]
    /// A word that is itself a token is not merged (llama.cpp's `ignore_merges`).
    let ignoreMerges: Bool
    /// llama.cpp's `add_bos` when tokenizer.ggml.add_bos_token is missing.
    let addBOS: Bool

    private static let groups: [(names: [String], pre: LlamaCppPreTokenizer)] = [
        (["default"], .init(
            splits: [.runs(.punctuationAndOperators, length: nil), .gpt2, .runs(.number, length: nil),
                     .runs(.asciiDigit, length: 3)],
            ignoreMerges: false, addBOS: false)),
        (["gpt-2", "phi-2", "mpt", "olmo", "jais", "gigachat", "exaone4", "trillion", "granite-docling",
          "mellum", "a.x-4.0"],
         .init(splits: [.gpt2], ignoreMerges: false, addBOS: false)),
        (["llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1", "pixtral", "midm-2.0", "lfm2", "jina-v5-nano"],
         .init(splits: [.llama3(maxDigits: 3, foldsLongS: false)], ignoreMerges: true, addBOS: true)),
        (["dbrx", "smaug-bpe"],
         .init(splits: [.llama3(maxDigits: 3, foldsLongS: false)], ignoreMerges: false, addBOS: false)),
        (["qwen2", "deepseek-r1-qwen", "kormo", "f2llmv2", "megrez", "stablelm2", "hunyuan", "solar-open"],
         .init(splits: [.llama3(maxDigits: 1, foldsLongS: false)], ignoreMerges: false, addBOS: false)),
        (["smollm", "starcoder", "refact", "command-r", "codeshell", "exaone", "minerva-7b", "mellum2"],
         .init(splits: [.runs(.number, length: 1), .gpt2], ignoreMerges: false, addBOS: false)),
        (["tekken"], .init(splits: [.tekken(contractions: false, maxDigits: 1)], ignoreMerges: true, addBOS: true)),
        (["gpt-4o", "llama4", "kanana2", "talkie", "minimax-m2"],
         .init(splits: [.tekken(contractions: true, maxDigits: 3)], ignoreMerges: false, addBOS: false)),
    ]

    static let knownNames: [String] = groups.flatMap(\.names)

    /// The pre-tokenizer for a `tokenizer.ggml.pre` value (nil: missing, llama.cpp's `default`).
    static func named(_ name: String?) -> LlamaCppPreTokenizer? {
        let name = name ?? "default"
        return groups.first(where: { $0.names.contains(name) })?.pre
    }

    var preTokenizer: PreTokenizer {
        .sequence(
            splits.map { .split(pattern: $0, behavior: .isolated, invert: false) }
                + [.byteLevel(addPrefixSpace: false, useRegex: false)])
    }
}

extension Tokenizer {
    /// Builds the tokenizer a GGUF file's tokenizer metadata describes, as
    /// llama.cpp does (src/llama-vocab.cpp):
    ///
    /// - `gpt2`: byte-level BPE from `tokens` and `merges`, pre-tokenized with
    ///   llama.cpp's regexes for `pre`;
    /// - `llama`: SentencePiece-style BPE: the adjacent pair whose concatenation is
    ///   the highest-scoring token merges first (ties: leftmost), characters without
    ///   a token become `<0xXX>` byte tokens, spaces are `▁`, and each text piece
    ///   gets a leading `▁` when `addSpacePrefix` (default true).
    ///
    /// Control, user-defined and unknown tokens written in the text are matched
    /// whole; control and unknown tokens are special (left out by
    /// `decode(_:skipSpecialTokens: true)`). `encode(_:addSpecialTokens: true)`
    /// adds BOS / EOS per `addBOS` / `addEOS` (defaults as llama.cpp's).
    /// `eosTokenIDs` is llama.cpp's end-of-generation set.
    ///
    /// - Throws: `TokenizerError` (one line: source, GGUF key, problem) for
    ///   anything Weft cannot tokenize exactly as described.
    public init(gguf v: GGUFVocabulary) throws {
        typealias Key = GGUFVocabulary.Key
        func fail(_ key: String, _ message: String, _ kind: TokenizerError.Kind = .invalidField) -> TokenizerError {
            TokenizerError(kind: kind, file: v.source, field: key, message: message)
        }
        func quoted(_ s: String) -> String {
            "'" + s.unicodeScalars.map { $0.escaped(asASCII: false) }.joined() + "'"
        }

        // Tokens, scores and types: one entry per id.
        let count = v.tokens.count
        guard count > 0 else { throw fail(Key.tokens, "no tokens") }
        guard count < Int(Int32.max) else { throw fail(Key.tokens, "\(count) tokens, more than token ids can hold") }
        if let scores = v.scores {
            guard scores.count == count else {
                throw fail(Key.scores, "\(scores.count) scores for \(count) tokens in \(Key.tokens)")
            }
            if let bad = scores.firstIndex(where: { !$0.isFinite }) {
                throw fail("\(Key.scores)[\(bad)]", "\(scores[bad]) is not a finite score")
            }
        }
        var types = [GGUFVocabulary.TokenType](repeating: .normal, count: count)
        if let raw = v.tokenTypes {
            guard raw.count == count else {
                throw fail(Key.tokenTypes, "\(raw.count) token types for \(count) tokens in \(Key.tokens)")
            }
            for (id, value) in raw.enumerated() {
                guard let type = GGUFVocabulary.TokenType(rawValue: value) else {
                    throw fail(
                        "\(Key.tokenTypes)[\(id)]",
                        "\(value) is not a token type Weft knows (1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte)")
                }
                types[id] = type
            }
        }
        var vocab: [ByteKey: Int32] = [:]
        vocab.reserveCapacity(count)
        var texts: [String] = []
        texts.reserveCapacity(count)
        for (id, token) in v.tokens.enumerated() {
            // llama.cpp names empty tokens so that they stay distinct.
            let text = token.isEmpty ? "[EMPTY_\(id)]" : token
            if let earlier = vocab.updateValue(Int32(id), forKey: ByteKey(Array(text.utf8))) {
                throw fail("\(Key.tokens)[\(id)]", "\(quoted(text)) is also token \(earlier) (each token must be unique)")
            }
            texts.append(text)
        }

        // Ids named by keys must be tokens.
        func checkedID(_ id: Int?, _ key: String) throws -> Int? {
            guard let id else { return nil }
            guard id >= 0 && id < count else {
                throw fail(key, "token id \(id) is not in the vocabulary (ids 0...\(count - 1) of \(Key.tokens))")
            }
            return id
        }
        var bosID = try checkedID(v.bosID, Key.bosID)
        var eosID = try checkedID(v.eosID, Key.eosID)
        let eotID = try checkedID(v.eotID, Key.eotID)
        let eomID = try checkedID(v.eomID, Key.eomID)
        var unknownID = try checkedID(v.unknownID, Key.unknownID)
        _ = try checkedID(v.paddingID, Key.paddingID)
        _ = try checkedID(v.sepID, Key.sepID)

        let model: BPEModel
        let normalizer: Normalizer?
        let preTokenizer: PreTokenizer?
        let decoder: TokenDecoder
        let addBOS: Bool
        let addEOS = v.addEOS ?? false
        switch v.model {
        case "gpt2":
            guard let pre = LlamaCppPreTokenizer.named(v.pre) else {
                throw fail(
                    Key.pre,
                    "\(quoted(v.pre ?? "")) is not a pre-tokenizer Weft knows (known: \(LlamaCppPreTokenizer.knownNames.joined(separator: ", ")))",
                    .unsupported)
            }
            if v.addSpacePrefix == true {
                throw fail(Key.addSpacePrefix, "true is not supported for the gpt2 tokenizer", .unsupported)
            }
            guard let lines = v.merges else {
                throw fail(Key.merges, "missing (the gpt2 tokenizer merges by these)")
            }
            var merges: [UInt64: UInt64] = [:]
            merges.reserveCapacity(lines.count)
            for (rank, line) in lines.enumerated() {
                let field = "\(Key.merges)[\(rank)]"
                let u = Array(line.utf8)
                guard let space = u.firstIndex(of: 0x20), space > 0, space < u.count - 1,
                    !u[(space + 1)...].contains(0x20)
                else {
                    throw fail(field, "\(quoted(line)) is not two tokens separated by one space")
                }
                let left = Array(u[..<space])
                let right = Array(u[(space + 1)...])
                func id(_ bytes: [UInt8]) throws -> Int32 {
                    guard let id = vocab[ByteKey(bytes)] else {
                        throw fail(field, "\(quoted(String(decoding: bytes, as: UTF8.self))) is not in \(Key.tokens)")
                    }
                    return id
                }
                let a = try id(left), b = try id(right), merged = try id(left + right)
                guard merges.updateValue(BPEModel.mergeValue(rank: rank, newID: merged), forKey: BPEModel.mergeKey(a, b))
                    == nil
                else {
                    throw fail(field, "\(quoted(line)) is listed twice")
                }
            }
            model = BPEModel(
                vocab: vocab, idToToken: texts, merges: merges, unkID: nil, fuseUnk: false, byteFallback: false,
                ignoreMerges: pre.ignoreMerges)
            normalizer = nil
            preTokenizer = pre.preTokenizer
            decoder = .byteLevel
            addBOS = v.addBOS ?? pre.addBOS

        case "llama":
            guard let scores = v.scores else {
                throw fail(Key.scores, "missing (the llama tokenizer merges by these)")
            }
            // llama.cpp's defaults for SentencePiece vocabularies, when in range.
            if v.bosID == nil && count > 1 { bosID = 1 }
            if v.eosID == nil && count > 2 { eosID = 2 }
            if v.unknownID == nil { unknownID = 0 }
            model = BPEModel(
                vocab: vocab, idToToken: texts,
                merges: Self.sentencePieceMerges(vocab: vocab, tokens: texts, scores: scores, types: types),
                unkID: unknownID.map { Int32($0) }, fuseUnk: false, byteFallback: true, ignoreMerges: false)
            let spacePrefix = v.addSpacePrefix ?? true
            let space: [UInt8] = [0x20], metaspace = Array("\u{2581}".utf8)
            let escape = Normalizer.replace(pattern: .literal(space), content: metaspace)
            normalizer = spacePrefix ? .sequence([.prepend(metaspace), escape]) : escape
            preTokenizer = nil
            var steps: [TokenDecoder] = [.replace(pattern: .literal(metaspace), content: space), .byteFallback, .fuse]
            if spacePrefix { steps.append(.strip(content: " ", start: 1, stop: 0)) }
            decoder = .sequence(steps)
            addBOS = v.addBOS ?? true

        default:
            throw fail(Key.model, "\(quoted(v.model)) is not a tokenizer model Weft knows (known: gpt2, llama)", .unsupported)
        }
        if addBOS && bosID == nil {
            throw fail(Key.bosID, "missing, but \(Key.addBOS) asks for a BOS token")
        }
        if addEOS && eosID == nil {
            throw fail(Key.eosID, "missing, but \(Key.addEOS) asks for an EOS token")
        }

        // End of generation and control tokens, by llama.cpp's rules.
        let eog = LlamaCppSpecialTokens.endOfGeneration(
            tokens: texts, types: &types, eos: eosID, eot: eotID, eom: eomID)

        // Tokens matched whole in the input (llama.cpp's special-token cache).
        var added: [AddedToken] = []
        var special = Set<Int>()
        for (id, type) in types.enumerated() where type == .control || type == .userDefined || type == .unknown {
            let isSpecial = type != .userDefined
            if isSpecial { special.insert(id) }
            added.append(
                AddedToken(
                    id: id, content: texts[id], singleWord: false, lstrip: false, rstrip: false,
                    normalized: false, special: isSpecial))
        }
        var post = PostProcessor()
        if addBOS, let bosID { post.prefix = [bosID] }
        if addEOS, let eosID { post.suffix = [eosID] }
        self.init(
            model: model, normalizer: normalizer, preTokenizer: preTokenizer, decoder: decoder,
            addedTokens: added, specialTokenIDs: special, postProcessor: post,
            bosToken: bosID.map { texts[$0] }, eosToken: eosID.map { texts[$0] }, bosTokenID: bosID,
            eosTokenIDs: eog, chatTemplate: v.chatTemplate)
    }

    /// SentencePiece BPE as merges: every way to write a token as two tokens is a
    /// merge into it, ranked by the token's score (higher first; equal scores share a
    /// rank, so the leftmost pair merges first, as in llama.cpp and sentencepiece).
    /// Only normal and user-defined tokens take part (sentencepiece's rule).
    static func sentencePieceMerges(
        vocab: [ByteKey: Int32], tokens: [String], scores: [Float], types: [GGUFVocabulary.TokenType]
    ) -> [UInt64: UInt64] {
        func mergeable(_ id: Int32) -> Bool { types[Int(id)] == .normal || types[Int(id)] == .userDefined }
        var ranks: [Float: Int] = [:]
        for (rank, score) in Set(scores).sorted(by: >).enumerated() { ranks[score] = rank }
        var merges: [UInt64: UInt64] = [:]
        for (id, token) in tokens.enumerated() where mergeable(Int32(id)) {
            let bytes = Array(token.utf8)
            var cut = 0
            while true {
                cut += 1
                while cut < bytes.count && bytes[cut] & 0xC0 == 0x80 { cut += 1 }
                guard cut < bytes.count else { break }
                guard let a = vocab[ByteKey(Array(bytes[..<cut]))], let b = vocab[ByteKey(Array(bytes[cut...]))],
                    mergeable(a), mergeable(b)
                else { continue }
                merges[BPEModel.mergeKey(a, b)] = BPEModel.mergeValue(rank: ranks[scores[id]]!, newID: Int32(id))
            }
        }
        return merges
    }
}

/// llama.cpp's name-based special-token rules (src/llama-vocab.cpp, `load`).
enum LlamaCppSpecialTokens {
    /// Texts llama.cpp treats as end of generation.
    static let endOfGenerationTexts: Set<String> = [
        "<|eot_id|>", "<|im_end|>", "<|end|>", "<|return|>", "<|call|>", "<|flush|>", "<|calls|>",
        "<end_of_turn>", "<|endoftext|>", "</s>", "<|eom_id|>", "<EOT>", "_<EOT>", "[EOT]", "[EOS]",
        "<|end_of_text|>", "<end_of_utterance>", "<eos>", "<turn|>", "<|tool_response>",
        "<\u{FF5C}end\u{2581}of\u{2581}sentence\u{FF5C}>", "[e~[",
    ]
    /// Fill-in-the-middle token texts per kind (prefix, suffix, middle, pad,
    /// repository, file separator); llama.cpp makes them control tokens, and the
    /// pad, repository and separator ones end generation.
    static let fillInTheMiddleTexts: [(texts: [String], endsGeneration: Bool)] = [
        (["<|fim_prefix|>", "<fim-prefix>", "<fim_prefix>", "<\u{FF5C}fim\u{2581}begin\u{FF5C}>", "<PRE>",
          "\u{2581}<PRE>", "<|code_prefix|>", "<|prefix|>"], false),
        (["<|fim_suffix|>", "<fim-suffix>", "<fim_suffix>", "<\u{FF5C}fim\u{2581}hole\u{FF5C}>", "<SUF>",
          "\u{2581}<SUF>", "<|code_suffix|>", "<|suffix|>"], false),
        (["<|fim_middle|>", "<fim-middle>", "<fim_middle>", "<\u{FF5C}fim\u{2581}end\u{FF5C}>", "<MID>",
          "\u{2581}<MID>", "<|code_middle|>", "<|middle|>"], false),
        (["<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]"], true),
        (["<|fim_repo|>", "<|repo_name|>", "<fim-repo>", "<REPO>", "<reponame>"], true),
        (["<|file_sep|>"], true),
    ]
    /// gpt-oss tokens llama.cpp always renders (user-defined).
    static let renderedTexts: Set<String> = ["<|channel|>", "<|message|>", "<|start|>", "<|constrain|>"]

    /// The end-of-generation ids (EOS first, then ascending). Tokens that end
    /// generation or mark fill-in-the-middle by their text become control tokens,
    /// as in llama.cpp.
    static func endOfGeneration(
        tokens: [String], types: inout [GGUFVocabulary.TokenType], eos: Int?, eot: Int?, eom: Int?
    ) -> [Int] {
        var set = Set<Int>()
        for kind in fillInTheMiddleTexts {
            // llama.cpp takes one token per kind.
            guard let id = tokens.indices.first(where: { kind.texts.contains(tokens[$0]) }) else { continue }
            types[id] = .control
            if kind.endsGeneration { set.insert(id) }
        }
        for (id, text) in tokens.enumerated() where endOfGenerationTexts.contains(text) {
            set.insert(id)
            if types[id] != .control { types[id] = .control }
        }
        for (id, text) in tokens.enumerated() where renderedTexts.contains(text) { types[id] = .userDefined }
        for id in [eos, eot, eom].compactMap({ $0 }) { set.insert(id) }
        // gpt-oss / solar-open: `<|end|>` does not end generation when these are present.
        let texts = Set(set.map { tokens[$0] })
        if let end = set.first(where: { tokens[$0] == "<|end|>" }),
            (texts.contains("<|return|>") && (texts.contains("<|call|>") || texts.contains("<|calls|>")))
                || ((texts.contains("<|call|>") || texts.contains("<|calls|>")) && texts.contains("<|flush|>"))
        {
            set.remove(end)
            types[end] = .userDefined
        }
        // Gemma 4 and PLaMo: `</s>` is an ordinary token there.
        if let s = set.first(where: { tokens[$0] == "</s>" }),
            texts.contains("<|tool_response>") || texts.contains("<|plamo:eos|>")
        {
            set.remove(s)
            types[s] = .normal
        }
        var ids = set.sorted()
        if let eos, let index = ids.firstIndex(of: eos) {
            ids.remove(at: index)
            ids.insert(eos, at: 0)
        }
        return ids
    }
}
