import WeftModel
import WeftTokenizer

extension Tokenizer {
    /// The tokenizer a GGUF file's metadata describes (`tokenizer.ggml.*` and
    /// `tokenizer.chat_template`), so that a GGUF model needs no tokenizer.json.
    ///
    /// - Throws: `ModelError` for a key of the wrong type, `TokenizerError` for
    ///   values Weft cannot tokenize by; both one line naming the file and key.
    public init(gguf file: GGUFFile) throws {
        try self.init(gguf: GGUFVocabulary(gguf: file.header))
    }
}

extension GGUFVocabulary {
    /// The tokenizer keys of a GGUF header, each read once with its typed accessor.
    public init(gguf header: GGUFHeader) throws {
        guard let model = try header.string(Key.model) else {
            throw TokenizerError(kind: .invalidField, file: header.path, field: Key.model, message: "missing (no tokenizer in the file)")
        }
        guard let tokens = try header.strings(Key.tokens) else {
            throw TokenizerError(kind: .invalidField, file: header.path, field: Key.tokens, message: "missing")
        }
        self.init(
            model: model,
            pre: try header.string(Key.pre),
            tokens: tokens,
            scores: try header.doubles(Key.scores)?.map { Float($0) },
            // Values outside Int32 are invalid types either way; clamped, they are refused as such.
            tokenTypes: try header.ints(Key.tokenTypes)?.map { Int32(clamping: $0) },
            merges: try header.strings(Key.merges),
            bosID: try header.int(Key.bosID),
            eosID: try header.int(Key.eosID),
            eotID: try header.int(Key.eotID),
            eomID: try header.int(Key.eomID),
            unknownID: try header.int(Key.unknownID),
            paddingID: try header.int(Key.paddingID),
            sepID: try header.int(Key.sepID),
            addBOS: try header.bool(Key.addBOS),
            addEOS: try header.bool(Key.addEOS),
            addSpacePrefix: try header.bool(Key.addSpacePrefix),
            chatTemplate: try header.string(Key.chatTemplate),
            source: header.path)
    }
}
