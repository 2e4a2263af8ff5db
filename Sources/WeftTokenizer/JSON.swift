import Foundation

// A small, strict JSON reader.
//
// We do not use JSONSerialization because it produces `[String: Any]`
// dictionaries keyed by Swift `String`, whose equality is Unicode canonical
// equivalence: two vocabulary entries that differ only in normalization form
// (e.g. "é" and "e\u{301}") would collide. Objects here keep every key, in
// file order, exactly as written.

indirect enum JSONValue: Sendable {
    case null
    case bool(Bool)
    case int(Int)
    case double(Double)
    case string(String)
    case array([JSONValue])
    case object([(key: String, value: JSONValue)])

    /// A short rendering for error messages (numbers and strings as written).
    var description: String {
        switch self {
        case .int(let i): return "\(i)"
        case .double(let d): return "\(d)"
        case .string(let s): return s.debugDescription
        default: return typeName
        }
    }

    var typeName: String {
        switch self {
        case .null: return "null"
        case .bool: return "a boolean"
        case .int, .double: return "a number"
        case .string: return "a string"
        case .array: return "an array"
        case .object: return "an object"
        }
    }
}

struct JSONParser {
    struct Failure: Error {
        let message: String
    }

    private let bytes: [UInt8]
    private var pos = 0

    private init(bytes: [UInt8]) {
        self.bytes = bytes
    }

    static func parse(_ data: Data) throws(Failure) -> JSONValue {
        var parser = JSONParser(bytes: [UInt8](data))
        // Skip a UTF-8 byte order mark.
        if parser.bytes.starts(with: [0xEF, 0xBB, 0xBF]) { parser.pos = 3 }
        parser.skipWhitespace()
        let value = try parser.parseValue(depth: 0)
        parser.skipWhitespace()
        if parser.pos != parser.bytes.count {
            throw parser.failure("unexpected trailing characters")
        }
        return value
    }

    private func failure(_ message: String) -> Failure {
        var line = 1
        var column = 1
        var i = 0
        let end = min(pos, bytes.count)
        while i < end {
            if bytes[i] == 0x0A {
                line += 1
                column = 1
            } else if bytes[i] & 0xC0 != 0x80 {
                column += 1
            }
            i += 1
        }
        return Failure(message: "\(message) at line \(line), column \(column)")
    }

    private mutating func skipWhitespace() {
        while pos < bytes.count {
            switch bytes[pos] {
            case 0x20, 0x0A, 0x0D, 0x09: pos += 1
            default: return
            }
        }
    }

    private mutating func parseValue(depth: Int) throws(Failure) -> JSONValue {
        guard depth < 512 else { throw failure("nesting too deep") }
        guard pos < bytes.count else { throw failure("unexpected end of input") }
        switch bytes[pos] {
        case UInt8(ascii: "{"): return try parseObject(depth: depth)
        case UInt8(ascii: "["): return try parseArray(depth: depth)
        case UInt8(ascii: "\""): return .string(try parseString())
        case UInt8(ascii: "t"): try expectLiteral("true"); return .bool(true)
        case UInt8(ascii: "f"): try expectLiteral("false"); return .bool(false)
        case UInt8(ascii: "n"): try expectLiteral("null"); return .null
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): return try parseNumber()
        default: throw failure("unexpected character '\(printable(bytes[pos]))'")
        }
    }

    private func printable(_ byte: UInt8) -> String {
        if byte >= 0x20 && byte < 0x7F { return String(UnicodeScalar(byte)) }
        return String(format: "\\x%02X", byte)
    }

    private mutating func expectLiteral(_ literal: StaticString) throws(Failure) {
        let count = literal.utf8CodeUnitCount
        let matches = literal.withUTF8Buffer { buffer -> Bool in
            guard pos + count <= bytes.count else { return false }
            for i in 0..<count where bytes[pos + i] != buffer[i] { return false }
            return true
        }
        guard matches else { throw failure("invalid literal") }
        pos += count
    }

    private mutating func parseObject(depth: Int) throws(Failure) -> JSONValue {
        pos += 1  // {
        var entries: [(key: String, value: JSONValue)] = []
        skipWhitespace()
        if pos < bytes.count && bytes[pos] == UInt8(ascii: "}") {
            pos += 1
            return .object(entries)
        }
        while true {
            skipWhitespace()
            guard pos < bytes.count, bytes[pos] == UInt8(ascii: "\"") else {
                throw failure("expected a string key")
            }
            let key = try parseString()
            skipWhitespace()
            guard pos < bytes.count, bytes[pos] == UInt8(ascii: ":") else { throw failure("expected ':'") }
            pos += 1
            skipWhitespace()
            let value = try parseValue(depth: depth + 1)
            entries.append((key, value))
            skipWhitespace()
            guard pos < bytes.count else { throw failure("unexpected end of input in object") }
            if bytes[pos] == UInt8(ascii: ",") {
                pos += 1
                continue
            }
            if bytes[pos] == UInt8(ascii: "}") {
                pos += 1
                return .object(entries)
            }
            throw failure("expected ',' or '}'")
        }
    }

    private mutating func parseArray(depth: Int) throws(Failure) -> JSONValue {
        pos += 1  // [
        var items: [JSONValue] = []
        skipWhitespace()
        if pos < bytes.count && bytes[pos] == UInt8(ascii: "]") {
            pos += 1
            return .array(items)
        }
        while true {
            skipWhitespace()
            items.append(try parseValue(depth: depth + 1))
            skipWhitespace()
            guard pos < bytes.count else { throw failure("unexpected end of input in array") }
            if bytes[pos] == UInt8(ascii: ",") {
                pos += 1
                continue
            }
            if bytes[pos] == UInt8(ascii: "]") {
                pos += 1
                return .array(items)
            }
            throw failure("expected ',' or ']'")
        }
    }

    private mutating func parseNumber() throws(Failure) -> JSONValue {
        let start = pos
        var isInteger = true
        if bytes[pos] == UInt8(ascii: "-") { pos += 1 }
        guard pos < bytes.count, bytes[pos] >= 0x30, bytes[pos] <= 0x39 else { throw failure("invalid number") }
        if bytes[pos] == 0x30 {
            pos += 1
        } else {
            while pos < bytes.count, bytes[pos] >= 0x30, bytes[pos] <= 0x39 { pos += 1 }
        }
        if pos < bytes.count, bytes[pos] == UInt8(ascii: ".") {
            isInteger = false
            pos += 1
            guard pos < bytes.count, bytes[pos] >= 0x30, bytes[pos] <= 0x39 else { throw failure("invalid number") }
            while pos < bytes.count, bytes[pos] >= 0x30, bytes[pos] <= 0x39 { pos += 1 }
        }
        if pos < bytes.count, bytes[pos] == UInt8(ascii: "e") || bytes[pos] == UInt8(ascii: "E") {
            isInteger = false
            pos += 1
            if pos < bytes.count, bytes[pos] == UInt8(ascii: "+") || bytes[pos] == UInt8(ascii: "-") { pos += 1 }
            guard pos < bytes.count, bytes[pos] >= 0x30, bytes[pos] <= 0x39 else { throw failure("invalid number") }
            while pos < bytes.count, bytes[pos] >= 0x30, bytes[pos] <= 0x39 { pos += 1 }
        }
        let text = String(decoding: bytes[start..<pos], as: UTF8.self)
        if isInteger, let value = Int(text) { return .int(value) }
        guard let value = Double(text) else { throw failure("invalid number") }
        return .double(value)
    }

    private mutating func parseHex4() throws(Failure) -> UInt32 {
        guard pos + 4 <= bytes.count else { throw failure("truncated \\u escape") }
        var value: UInt32 = 0
        for _ in 0..<4 {
            let b = bytes[pos]
            let digit: UInt32
            switch b {
            case 0x30...0x39: digit = UInt32(b - 0x30)
            case 0x41...0x46: digit = UInt32(b - 0x41 + 10)
            case 0x61...0x66: digit = UInt32(b - 0x61 + 10)
            default: throw failure("invalid \\u escape")
            }
            value = value << 4 | digit
            pos += 1
        }
        return value
    }

    private mutating func parseString() throws(Failure) -> String {
        pos += 1  // opening quote
        let start = pos
        // Fast path: no escapes.
        while pos < bytes.count {
            let b = bytes[pos]
            if b == UInt8(ascii: "\"") {
                let s = String(decoding: bytes[start..<pos], as: UTF8.self)
                pos += 1
                return s
            }
            if b == UInt8(ascii: "\\") { break }
            if b < 0x20 { throw failure("control character in string") }
            pos += 1
        }
        var buffer = [UInt8](bytes[start..<pos])
        while pos < bytes.count {
            let b = bytes[pos]
            if b == UInt8(ascii: "\"") {
                pos += 1
                return String(decoding: buffer, as: UTF8.self)
            }
            if b < 0x20 { throw failure("control character in string") }
            if b != UInt8(ascii: "\\") {
                buffer.append(b)
                pos += 1
                continue
            }
            pos += 1
            guard pos < bytes.count else { break }
            let escape = bytes[pos]
            pos += 1
            switch escape {
            case UInt8(ascii: "\""): buffer.append(0x22)
            case UInt8(ascii: "\\"): buffer.append(0x5C)
            case UInt8(ascii: "/"): buffer.append(0x2F)
            case UInt8(ascii: "b"): buffer.append(0x08)
            case UInt8(ascii: "f"): buffer.append(0x0C)
            case UInt8(ascii: "n"): buffer.append(0x0A)
            case UInt8(ascii: "r"): buffer.append(0x0D)
            case UInt8(ascii: "t"): buffer.append(0x09)
            case UInt8(ascii: "u"):
                var code = try parseHex4()
                if code >= 0xD800 && code < 0xDC00 {
                    // High surrogate: must be followed by a low surrogate.
                    if pos + 6 <= bytes.count, bytes[pos] == UInt8(ascii: "\\"), bytes[pos + 1] == UInt8(ascii: "u") {
                        let save = pos
                        pos += 2
                        let low = try parseHex4()
                        if low >= 0xDC00 && low < 0xE000 {
                            code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00)
                        } else {
                            pos = save
                            code = 0xFFFD
                        }
                    } else {
                        code = 0xFFFD
                    }
                } else if code >= 0xDC00 && code < 0xE000 {
                    code = 0xFFFD
                }
                appendUTF8(code, to: &buffer)
            default:
                throw failure("invalid escape '\\\(printable(escape))'")
            }
        }
        throw failure("unterminated string")
    }
}

/// Appends the UTF-8 encoding of a scalar value to `buffer`.
@inline(__always)
func appendUTF8(_ code: UInt32, to buffer: inout [UInt8]) {
    switch code {
    case 0..<0x80:
        buffer.append(UInt8(code))
    case 0x80..<0x800:
        buffer.append(UInt8(0xC0 | (code >> 6)))
        buffer.append(UInt8(0x80 | (code & 0x3F)))
    case 0x800..<0x10000:
        buffer.append(UInt8(0xE0 | (code >> 12)))
        buffer.append(UInt8(0x80 | ((code >> 6) & 0x3F)))
        buffer.append(UInt8(0x80 | (code & 0x3F)))
    default:
        buffer.append(UInt8(0xF0 | (code >> 18)))
        buffer.append(UInt8(0x80 | ((code >> 12) & 0x3F)))
        buffer.append(UInt8(0x80 | ((code >> 6) & 0x3F)))
        buffer.append(UInt8(0x80 | (code & 0x3F)))
    }
}

/// A view of a JSON value that remembers where it came from, so that every
/// error can name the file and the field.
struct JSONNode: Sendable {
    let value: JSONValue?  // nil: the field is absent
    let path: String
    let file: String

    init(root: JSONValue, file: String) {
        self.value = root
        self.path = ""
        self.file = file
    }

    init(value: JSONValue?, path: String, file: String) {
        self.value = value
        self.path = path
        self.file = file
    }

    /// Loads and parses a JSON file. `file` is the name used in errors.
    static func load(url: URL, file: String) throws -> JSONNode {
        let data = try readFile(url: url, file: file)
        return try parse(data: data, file: file)
    }

    static func parse(data: Data, file: String) throws -> JSONNode {
        do {
            return JSONNode(root: try JSONParser.parse(data), file: file)
        } catch {
            throw TokenizerError(kind: .malformedJSON, file: file, message: "malformed JSON: \(error.message)")
        }
    }

    static func readFile(url: URL, file: String) throws -> Data {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: url.path, isDirectory: &isDirectory) else {
            throw TokenizerError(kind: .fileNotFound, file: file, message: "file not found at \(url.path)")
        }
        if isDirectory.boolValue {
            throw TokenizerError(kind: .unreadableFile, file: file, message: "\(url.path) is a directory")
        }
        do {
            return try Data(contentsOf: url)
        } catch {
            throw TokenizerError(
                kind: .unreadableFile, file: file,
                message: "cannot read \(url.path): \(error.localizedDescription)")
        }
    }

    var isNull: Bool {
        switch value {
        case nil, .null?: return true
        default: return false
        }
    }

    var exists: Bool { value != nil }

    subscript(key: String) -> JSONNode {
        let childPath = path.isEmpty ? key : "\(path).\(key)"
        guard case .object(let entries)? = value else {
            return JSONNode(value: nil, path: childPath, file: file)
        }
        for entry in entries where entry.key == key {
            return JSONNode(value: entry.value, path: childPath, file: file)
        }
        return JSONNode(value: nil, path: childPath, file: file)
    }

    func error(_ message: String, kind: TokenizerError.Kind = .invalidField) -> TokenizerError {
        TokenizerError(kind: kind, file: file, field: path.isEmpty ? nil : path, message: message)
    }

    private func typeError(_ expected: String) -> TokenizerError {
        switch value {
        case nil: return error("missing field, expected \(expected)")
        case let v?: return error("expected \(expected), found \(v.typeName)")
        }
    }

    func string() throws -> String {
        guard case .string(let s)? = value else { throw typeError("a string") }
        return s
    }

    /// A string, or nil when absent or null.
    func optionalString() throws -> String? {
        if isNull { return nil }
        return try string()
    }

    func bool() throws -> Bool {
        guard case .bool(let b)? = value else { throw typeError("a boolean") }
        return b
    }

    func bool(default defaultValue: Bool) throws -> Bool {
        if isNull { return defaultValue }
        return try bool()
    }

    func int() throws -> Int {
        switch value {
        case .int(let i)?: return i
        case .double(let d)? where d == d.rounded() && abs(d) < 1e15: return Int(d)
        default: throw typeError("an integer")
        }
    }

    func optionalInt() throws -> Int? {
        if isNull { return nil }
        return try int()
    }

    func double() throws -> Double {
        switch value {
        case .int(let i)?: return Double(i)
        case .double(let d)?: return d
        default: throw typeError("a number")
        }
    }

    func array() throws -> [JSONNode] {
        guard case .array(let items)? = value else { throw typeError("an array") }
        var result: [JSONNode] = []
        result.reserveCapacity(items.count)
        for (i, item) in items.enumerated() {
            result.append(JSONNode(value: item, path: "\(path)[\(i)]", file: file))
        }
        return result
    }

    /// Object entries in file order, without building child paths eagerly.
    func objectEntries() throws -> [(key: String, value: JSONValue)] {
        guard case .object(let entries)? = value else { throw typeError("an object") }
        return entries
    }

    func isObject() -> Bool {
        if case .object? = value { return true }
        return false
    }

    func child(key: String, value: JSONValue) -> JSONNode {
        JSONNode(value: value, path: path.isEmpty ? key : "\(path).\(key)", file: file)
    }

    func child(index: Int, value: JSONValue) -> JSONNode {
        JSONNode(value: value, path: "\(path)[\(index)]", file: file)
    }
}
