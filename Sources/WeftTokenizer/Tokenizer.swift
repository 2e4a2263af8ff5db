import Foundation

/// A byte-level BPE tokenizer loaded from a Hugging Face `tokenizer.json`,
/// producing the same ids and text as the Hugging Face `tokenizers` library.
///
/// Supported components:
/// - model: `BPE` (string or pair merges, `byte_fallback`, `unk_token`, `fuse_unk`,
///   `ignore_merges`, `continuing_subword_prefix`, `end_of_word_suffix`; no dropout);
/// - normalizers: `NFC`, `NFD`, `NFKC`, `NFKD`, `Lowercase`, `Strip`, `Prepend`, `Replace`, `Sequence`;
/// - pre-tokenizers: `ByteLevel`, `Split`, `Metaspace`, `Digits`, `Sequence`;
/// - post-processors: `TemplateProcessing` (single sequence), `ByteLevel`, `BertProcessing`,
///   `RobertaProcessing`, `Sequence`;
/// - decoders: `ByteLevel`, `ByteFallback`, `Fuse`, `Replace`, `Strip`, `Metaspace`, `Sequence`.
///
/// The value is immutable and safe to share between tasks.
public struct Tokenizer: Sendable {
    let model: BPEModel
    let normalizer: Normalizer?
    let preTokenizer: PreTokenizer?
    let decoder: TokenDecoder?
    /// What `encode(_:addSpecialTokens: true)` adds around the sequence.
    let postProcessor: PostProcessor
    private let addedByID: [Int: AddedToken]
    private let addedByContent: [[UInt8]: Int]
    private let rawMatcher: AddedTokenMatcher
    private let normalizedMatcher: AddedTokenMatcher

    /// Number of ids: the largest id (added tokens included) plus one.
    public let vocabularySize: Int
    /// `bos_token` from tokenizer_config.json (or special_tokens_map.json), e.g. for chat templates.
    public let bosToken: String?
    /// `eos_token` from tokenizer_config.json (or special_tokens_map.json), e.g. for chat templates.
    public let eosToken: String?
    /// The id of `bos_token` from tokenizer_config.json (or special_tokens_map.json,
    /// or generation_config.json's `bos_token_id`), if any.
    public let bosTokenID: Int?
    /// End-of-sequence ids: tokenizer_config.json's `eos_token`, then
    /// generation_config.json's `eos_token_id` (an int or an array), without duplicates.
    public let eosTokenIDs: [Int]
    /// The Jinja chat template: tokenizer_config.json's `chat_template` (a string, or the
    /// entry named "default" of an array of `{name, template}`), else `chat_template.jinja`.
    public let chatTemplate: String?
    /// Ids of the added tokens marked `special` (skipped by `decode(_:skipSpecialTokens: true)`).
    public let specialTokenIDs: Set<Int>

    /// Loads `tokenizer.json` from `directory`, plus, when present,
    /// `tokenizer_config.json`, `special_tokens_map.json`, `generation_config.json`
    /// and `chat_template.jinja`.
    ///
    /// - Throws: `TokenizerError` naming the file and field at fault.
    public init(directory: URL) throws {
        let tokenizerJSON = try JSONNode.load(
            url: directory.appendingPathComponent("tokenizer.json"), file: "tokenizer.json")
        func optional(_ name: String) throws -> JSONNode? {
            let url = directory.appendingPathComponent(name)
            guard FileManager.default.fileExists(atPath: url.path) else { return nil }
            return try JSONNode.load(url: url, file: name)
        }
        let config = try optional("tokenizer_config.json")
        let specialMap = try optional("special_tokens_map.json")
        let generation = try optional("generation_config.json")
        var templateFile: String? = nil
        let jinja = directory.appendingPathComponent("chat_template.jinja")
        if FileManager.default.fileExists(atPath: jinja.path) {
            let data = try JSONNode.readFile(url: jinja, file: "chat_template.jinja")
            templateFile = String(decoding: data, as: UTF8.self)
        }
        try self.init(
            tokenizerJSON: tokenizerJSON, config: config, specialTokensMap: specialMap,
            generationConfig: generation, chatTemplateFile: templateFile)
    }

    /// Builds a tokenizer from the contents of its files (as `init(directory:)`
    /// reads them), e.g. for tokenizers held in memory and for the fuzzers.
    ///
    /// - Throws: `TokenizerError` naming the file and field at fault.
    public init(
        tokenizerJSON: Data, tokenizerConfig: Data? = nil, specialTokensMap: Data? = nil,
        generationConfig: Data? = nil, chatTemplate: String? = nil
    ) throws {
        try self.init(
            tokenizerJSON: try JSONNode.parse(data: tokenizerJSON, file: "tokenizer.json"),
            config: try tokenizerConfig.map { try JSONNode.parse(data: $0, file: "tokenizer_config.json") },
            specialTokensMap: try specialTokensMap.map { try JSONNode.parse(data: $0, file: "special_tokens_map.json") },
            generationConfig: try generationConfig.map { try JSONNode.parse(data: $0, file: "generation_config.json") },
            chatTemplateFile: chatTemplate)
    }

    init(
        tokenizerJSON root: JSONNode, config: JSONNode?, specialTokensMap: JSONNode?,
        generationConfig: JSONNode?, chatTemplateFile: String?
    ) throws {
        guard root.isObject() else { throw root.error("expected a JSON object at the top level") }
        guard root["model"].exists, !root["model"].isNull else { throw root["model"].error("missing field") }
        let model = try BPEModel(node: root["model"])
        let normalizer = try Normalizer.parse(root["normalizer"])
        let preTokenizer = try PreTokenizer.parse(root["pre_tokenizer"])
        let decoder = try TokenDecoder.parse(root["decoder"])
        let filePostProcessor = try PostProcessor.parse(root["post_processor"])

        // Added tokens, registered like HF's `AddedVocabulary::add_tokens`: a content
        // already known keeps its id (added tokens first, then the model vocabulary);
        // a new content gets the next id after the model vocabulary / previous added
        // tokens. For consistent files this is the `id` written in the file.
        var addedByID: [Int: AddedToken] = [:]
        var addedByContent: [[UInt8]: Int] = [:]
        var specialContents = Set<[UInt8]>()
        var listed: [AddedToken] = []
        if !root["added_tokens"].isNull {
            let modelSize = model.vocabularyCount
            var maxAddedID: Int? = nil
            for item in try root["added_tokens"].array() {
                guard var token = try AddedToken.parse(item) else { continue }
                let bytes = Array(token.content.utf8)
                if token.special { specialContents.insert(bytes) }
                let newID: Int
                if let known = addedByContent[bytes] ?? model.id(for: bytes) {
                    newID = known
                } else if let maxAddedID {
                    newID = (maxAddedID >= modelSize || modelSize == 0) ? maxAddedID + 1 : modelSize
                } else {
                    newID = modelSize
                }
                // HF re-registers added tokens and only warns when the id in the file
                // differs; a differing id means the file is inconsistent (two contents
                // for one id, or ids the model's embedding rows do not follow), so it
                // is refused, as is a new id that a different vocab token already has.
                if let other = model.token(for: newID), Array(other.utf8) != bytes {
                    throw item["id"].error(
                        "token \(token.content.debugDescription) would get id \(newID), which is already token \(other.debugDescription) in model.vocab")
                }
                if token.id >= 0, token.id != newID {
                    let owner = addedByID[token.id]?.content ?? model.token(for: token.id)
                    throw item["id"].error(
                        "id \(token.id) for \(token.content.debugDescription), but "
                            + (owner.map { "id \(token.id) is token \($0.debugDescription)" } ?? "the token gets id \(newID)")
                            + " (added tokens take their vocab id, else the next id after model.vocab and earlier added tokens)")
                }
                // An identical entry (same content and flags) is ignored.
                let definition = AddedToken.Definition(token)
                if let existing = addedByContent[bytes], let current = addedByID[existing],
                    AddedToken.Definition(current) == definition
                {
                    continue
                }
                token.id = newID
                maxAddedID = max(maxAddedID ?? newID, newID)
                addedByContent[bytes] = newID
                addedByID[newID] = token
                listed.append(token)
            }
        }
        var specialIDs = Set<Int>()
        for content in specialContents {
            if let id = addedByContent[content] { specialIDs.insert(id) }
            if let id = model.id(for: content) { specialIDs.insert(id) }
        }
        let vocabularySize = Self.vocabularySize(model: model, addedIDs: addedByID.keys)

        // Every id that comes from a file (rather than from the vocabulary) must
        // name a token: the post-processor's and generation_config.json's.
        func checkID(_ id: Int, _ node: JSONNode) throws {
            guard id >= 0, id < vocabularySize, addedByID[id] != nil || model.token(for: id) != nil else {
                throw node.error("token id \(id) is not in the vocabulary (ids 0...\(vocabularySize - 1) of tokenizer.json)")
            }
        }
        for (id, node) in filePostProcessor?.sources ?? [] { try checkID(id, node) }

        // Special tokens from tokenizer_config.json (falling back to
        // special_tokens_map.json): a named token must be in the vocabulary
        // (else BOS/EOS would silently go missing).
        func specialToken(_ key: String) throws -> (content: String, id: Int)? {
            let node: JSONNode
            if let config, config[key].exists {
                node = config[key]
            } else if let specialTokensMap {
                node = specialTokensMap[key]
            } else {
                return nil
            }
            guard let content = try Self.tokenContent(node) else { return nil }
            let bytes = Array(content.utf8)
            guard let id = addedByContent[bytes] ?? model.id(for: bytes) else {
                throw node.error(
                    "token \(content.debugDescription) is not in the vocabulary (model.vocab or added_tokens of tokenizer.json)")
            }
            return (content, id)
        }
        let bos = try specialToken("bos_token")
        let eos = try specialToken("eos_token")
        let bosID = bos?.id
        let eosID = eos?.id
        var generationBOS: Int? = nil
        var generationEOS: [Int] = []
        if let generationConfig {
            let bosNode = generationConfig["bos_token_id"]
            generationBOS = try bosNode.optionalInt()
            if let id = generationBOS { try checkID(id, bosNode) }
            let eosNode = generationConfig["eos_token_id"]
            if case .array? = eosNode.value {
                generationEOS = try eosNode.array().map { node in
                    let id = try node.int()
                    try checkID(id, node)
                    return id
                }
            } else if let id = try eosNode.optionalInt() {
                try checkID(id, eosNode)
                generationEOS = [id]
            }
        }
        var eosIDs: [Int] = []
        for id in (eosID.map { [$0] } ?? []) + generationEOS where !eosIDs.contains(id) { eosIDs.append(id) }

        // What addSpecialTokens adds. As in transformers' TokenizersBackend: explicit
        // add_bos_token / add_eos_token in tokenizer_config.json (or a missing
        // post-processor) replace the post-processor by `[bos] $A [eos]`.
        let addBOS = try config?["add_bos_token"].isNull == false ? config!["add_bos_token"].bool() : nil
        let addEOS = try config?["add_eos_token"].isNull == false ? config!["add_eos_token"].bool() : nil
        var postProcessor = PostProcessor()
        if addBOS != nil || addEOS != nil || filePostProcessor == nil {
            if addBOS == true, let bosID { postProcessor.prefix = [bosID] }
            if addEOS == true, let eosID { postProcessor.suffix = [eosID] }
        } else {
            postProcessor = filePostProcessor!
        }

        // Chat template.
        var template: String? = nil
        if let node = config?["chat_template"], !node.isNull {
            switch node.value {
            case .string(let s)?:
                template = s
            case .array?:
                for item in try node.array() where try item["name"].optionalString() == "default" {
                    template = try item["template"].string()
                    break
                }
            default:
                throw node.error("expected a string or an array of {\"name\", \"template\"}")
            }
        }
        self.init(
            model: model, normalizer: normalizer, preTokenizer: preTokenizer, decoder: decoder,
            addedTokens: listed, specialTokenIDs: specialIDs, postProcessor: postProcessor,
            bosToken: bos?.content, eosToken: eos?.content, bosTokenID: bosID ?? generationBOS,
            eosTokenIDs: eosIDs, chatTemplate: template ?? chatTemplateFile)
    }

    /// The tokenizer from validated parts, shared by the tokenizer.json and GGUF
    /// sources. `addedTokens` are in registration order with their final ids (a
    /// later entry for the same content or id replaces an earlier one).
    init(
        model: BPEModel, normalizer: Normalizer?, preTokenizer: PreTokenizer?, decoder: TokenDecoder?,
        addedTokens listed: [AddedToken], specialTokenIDs: Set<Int>, postProcessor: PostProcessor,
        bosToken: String?, eosToken: String?, bosTokenID: Int?, eosTokenIDs: [Int], chatTemplate: String?
    ) {
        var addedByID: [Int: AddedToken] = [:]
        var addedByContent: [[UInt8]: Int] = [:]
        for token in listed {
            addedByContent[Array(token.content.utf8)] = token.id
            addedByID[token.id] = token
        }
        // Matchers: special tokens first, then the others (HF's order); the flags
        // used are those finally registered for the id.
        var rawPatterns: [(bytes: [UInt8], token: AddedToken)] = []
        var normalizedPatterns: [(bytes: [UInt8], token: AddedToken)] = []
        var seen = Set<[UInt8]>()
        for token in listed.filter({ $0.special }) + listed.filter({ !$0.special }) {
            let bytes = Array(token.content.utf8)
            guard seen.insert(bytes).inserted, let id = addedByContent[bytes], let current = addedByID[id] else {
                continue
            }
            if token.normalized {
                normalizedPatterns.append((normalizer?.apply(bytes) ?? bytes, current))
            } else {
                rawPatterns.append((bytes, current))
            }
        }
        self.model = model
        self.normalizer = normalizer
        self.preTokenizer = preTokenizer
        self.decoder = decoder
        self.postProcessor = postProcessor
        self.addedByID = addedByID
        self.addedByContent = addedByContent
        self.rawMatcher = AddedTokenMatcher(tokens: rawPatterns)
        self.normalizedMatcher = AddedTokenMatcher(tokens: normalizedPatterns)
        self.specialTokenIDs = specialTokenIDs
        self.vocabularySize = Self.vocabularySize(model: model, addedIDs: addedByID.keys)
        self.bosToken = bosToken
        self.eosToken = eosToken
        self.bosTokenID = bosTokenID
        self.eosTokenIDs = eosTokenIDs
        self.chatTemplate = chatTemplate
    }

    /// The largest id (model vocabulary or added token) plus one.
    private static func vocabularySize<C: Collection>(model: BPEModel, addedIDs: C) -> Int where C.Element == Int {
        max(model.maxID, addedIDs.max() ?? -1) + 1
    }

    /// `"<s>"` or `{"content": "<s>", ...}` or null.
    private static func tokenContent(_ node: JSONNode) throws -> String? {
        if node.isNull { return nil }
        if case .string(let s)? = node.value { return s }
        if node.isObject() { return try node["content"].string() }
        throw node.error("expected a string or an object with \"content\"")
    }

    // MARK: - Encoding

    /// Encodes `text` into token ids.
    ///
    /// Added tokens (e.g. `<|begin_of_text|>`) written in the text are matched
    /// first and map straight to their ids. With `addSpecialTokens`, the
    /// post-processor's tokens (typically BOS) are added around the result.
    public func encode(_ text: String, addSpecialTokens: Bool = true) -> [Int] {
        let bytes = Array(text.utf8)
        var ids: [Int] = []
        ids.reserveCapacity(bytes.count / 3 + 4)
        for segment in rawMatcher.split(bytes) {
            switch segment {
            case .token(let id):
                ids.append(id)
            case .text(let range):
                encodeText(Array(bytes[range]), atStart: range.lowerBound == 0, into: &ids)
            }
        }
        return addSpecialTokens ? postProcessor.apply(ids) : ids
    }

    private func encodeText(_ bytes: [UInt8], atStart: Bool, into ids: inout [Int]) {
        let normalized = normalizer?.apply(bytes) ?? bytes
        if normalized.isEmpty { return }
        let segments: [Segment] =
            normalizedMatcher.isEmpty ? [.text(0..<normalized.count)] : normalizedMatcher.split(normalized)
        for segment in segments {
            switch segment {
            case .token(let id):
                ids.append(id)
            case .text(let range):
                let piece = PreToken(
                    bytes: range.count == normalized.count ? normalized : Array(normalized[range]),
                    atStart: atStart && range.lowerBound == 0)
                if let preTokenizer {
                    for p in preTokenizer.apply([piece]) { model.tokenize(p.bytes, into: &ids) }
                } else {
                    model.tokenize(piece.bytes, into: &ids)
                }
            }
        }
    }

    // MARK: - Decoding

    /// Decodes ids into text. Unknown ids are ignored; with `skipSpecialTokens`,
    /// special added tokens are left out. Bytes of byte-level tokens are joined
    /// before UTF-8 decoding; invalid UTF-8 becomes U+FFFD.
    public func decode(_ ids: [Int], skipSpecialTokens: Bool = true) -> String {
        var tokens: [String] = []
        tokens.reserveCapacity(ids.count)
        for id in ids {
            guard let token = token(for: id) else { continue }
            if skipSpecialTokens && specialTokenIDs.contains(id) { continue }
            tokens.append(token)
        }
        if let decoder { return decoder.decode(tokens) }
        return tokens.joined(separator: " ")
    }

    // MARK: - Vocabulary

    /// The token string for `id` as stored in tokenizer.json (e.g. `"Ġworld"`), or nil.
    public func token(for id: Int) -> String? {
        if let added = addedByID[id] { return added.content }
        return model.token(for: id)
    }

    /// The id of a token string as stored in tokenizer.json (added tokens first), or nil.
    public func id(for token: String) -> Int? {
        let bytes = Array(token.utf8)
        return addedByContent[bytes] ?? model.id(for: bytes)
    }
}
