/// Incremental detokenizer for generated ids (the algorithm of Hugging Face's
/// `DecodeStream`).
///
/// Each `push` returns only the text completed by that id. While the decoded
/// text ends in an incomplete UTF-8 sequence (a character split across
/// tokens), nothing is returned; the character comes out whole once its last
/// byte arrives. Concatenating all `push` results and the final `flush()`
/// gives `tokenizer.decode(allIDs, skipSpecialTokens:)`.
///
/// ```swift
/// var stream = StreamingDecoder(tokenizer: tokenizer)
/// for id in generated { print(stream.push(id), terminator: "") }
/// print(stream.flush())
/// ```
public struct StreamingDecoder: Sendable {
    public let tokenizer: Tokenizer
    public let skipSpecialTokens: Bool
    private var ids: [Int] = []
    private var prefix = ""
    private var prefixIndex = 0

    public init(tokenizer: Tokenizer, skipSpecialTokens: Bool = true) {
        self.tokenizer = tokenizer
        self.skipSpecialTokens = skipSpecialTokens
    }

    /// Adds one id; returns the newly completed text (possibly empty).
    public mutating func push(_ id: Int) -> String {
        ids.append(id)
        let string = tokenizer.decode(ids, skipSpecialTokens: skipSpecialTokens)
        let prefixCount = prefix.utf8.count
        guard string.utf8.count > prefixCount, string.unicodeScalars.last != "\u{FFFD}" else { return "" }
        let newText: String
        if string.utf8.starts(with: prefix.utf8) {
            newText = String(decoding: string.utf8.dropFirst(prefixCount), as: UTF8.self)
        } else {
            // The context decoded differently (should not happen with the supported
            // decoders): emit what follows the common prefix.
            let common = zip(string.utf8, prefix.utf8).prefix(while: { $0 == $1 }).count
            newText = String(decoding: string.utf8.dropFirst(common), as: UTF8.self)
        }
        let newPrefixIndex = ids.count - prefixIndex
        ids.removeFirst(prefixIndex)
        prefix = tokenizer.decode(ids, skipSpecialTokens: skipSpecialTokens)
        prefixIndex = newPrefixIndex
        return newText
    }

    /// Adds several ids; returns the newly completed text.
    public mutating func push<S: Sequence>(contentsOf ids: S) -> String where S.Element == Int {
        var out = ""
        for id in ids { out += push(id) }
        return out
    }

    /// Ends the stream: returns any text still held back (an incomplete
    /// character comes out as U+FFFD) and resets the decoder.
    public mutating func flush() -> String {
        let string = tokenizer.decode(ids, skipSpecialTokens: skipSpecialTokens)
        var out = ""
        if string.utf8.count > prefix.utf8.count {
            if string.utf8.starts(with: prefix.utf8) {
                out = String(decoding: string.utf8.dropFirst(prefix.utf8.count), as: UTF8.self)
            } else {
                let common = zip(string.utf8, prefix.utf8).prefix(while: { $0 == $1 }).count
                out = String(decoding: string.utf8.dropFirst(common), as: UTF8.self)
            }
        }
        ids = []
        prefix = ""
        prefixIndex = 0
        return out
    }
}
