import Foundation

/// An error raised while loading a tokenizer.
///
/// The `description` is always a single line of the form
/// `<file>: <field>: <message>` (the field part is omitted when the problem is
/// with the file as a whole), e.g.
/// `tokenizer.json: model.merges[12]: expected "a b" or ["a","b"]`.
public struct TokenizerError: Error, CustomStringConvertible, Sendable, Equatable {
    /// The broad category of the failure.
    public enum Kind: String, Sendable, Equatable {
        /// The file does not exist.
        case fileNotFound
        /// The file exists but could not be read.
        case unreadableFile
        /// The file is not valid JSON.
        case malformedJSON
        /// A field is missing or has the wrong type or value.
        case invalidField
        /// The file uses a component or option that this implementation does not support.
        case unsupported
    }

    /// The category of the failure.
    public let kind: Kind
    /// The file name (not the full path), e.g. `tokenizer.json`.
    public let file: String
    /// The JSON path of the offending field, e.g. `model.merges[12]`, or `nil`.
    public let field: String?
    /// A human readable explanation.
    public let message: String

    public init(kind: Kind, file: String, field: String? = nil, message: String) {
        self.kind = kind
        self.file = file
        self.field = field
        self.message = message
    }

    public var description: String {
        var parts = [file]
        if let field, !field.isEmpty { parts.append(field) }
        parts.append(message)
        let line = parts.joined(separator: ": ")
        // Guarantee a single line.
        return line.split(omittingEmptySubsequences: true, whereSeparator: { $0.isNewline }).joined(separator: " ")
    }
}
