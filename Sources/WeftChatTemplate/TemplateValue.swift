import Foundation

/// An insertion-ordered string-keyed map, so `tojson`, `items()` and dict
/// iteration keep the key order the caller gave (as Python dicts do).
public struct TemplateObject: Sendable, Equatable, ExpressibleByDictionaryLiteral {
    public private(set) var keys: [String] = []
    public private(set) var storage: [String: TemplateValue] = [:]

    public init() {}
    /// From a Swift dictionary (no inherent order): keys are sorted.
    public init(_ dictionary: [String: TemplateValue]) {
        for k in dictionary.keys.sorted() { self[k] = dictionary[k] }
    }
    public init(dictionaryLiteral elements: (String, TemplateValue)...) {
        for (k, v) in elements { self[k] = v }
    }
    public subscript(key: String) -> TemplateValue? {
        get { storage[key] }
        set {
            if let newValue {
                if storage.updateValue(newValue, forKey: key) == nil { keys.append(key) }
            } else if storage.removeValue(forKey: key) != nil {
                keys.removeAll { $0 == key }
            }
        }
    }
    public var count: Int { keys.count }
    public static func == (a: TemplateObject, b: TemplateObject) -> Bool { a.storage == b.storage }
}

/// A JSON-like value passed into a template (messages, tools, flags, ...).
public enum TemplateValue: Sendable, Equatable {
    case null
    case bool(Bool)
    case int(Int)
    case double(Double)
    case string(String)
    case array([TemplateValue])
    case object(TemplateObject)

    /// Builds an object from a Swift dictionary (keys sorted, since a dictionary has no order).
    public static func dictionary(_ d: [String: TemplateValue]) -> TemplateValue { .object(TemplateObject(d)) }

    /// Parses JSON text, preserving object key order. Throws `ChatTemplateError` on malformed input.
    public init(json: String) throws {
        var p = JSONReader(Array(json.unicodeScalars))
        self = try p.parseDocument()
    }
}

extension TemplateValue: ExpressibleByNilLiteral, ExpressibleByBooleanLiteral, ExpressibleByIntegerLiteral,
    ExpressibleByFloatLiteral, ExpressibleByStringLiteral, ExpressibleByArrayLiteral, ExpressibleByDictionaryLiteral {
    public init(nilLiteral: ()) { self = .null }
    public init(booleanLiteral value: Bool) { self = .bool(value) }
    public init(integerLiteral value: Int) { self = .int(value) }
    public init(floatLiteral value: Double) { self = .double(value) }
    public init(stringLiteral value: String) { self = .string(value) }
    public init(arrayLiteral elements: TemplateValue...) { self = .array(elements) }
    public init(dictionaryLiteral elements: (String, TemplateValue)...) {
        var o = TemplateObject()
        for (k, v) in elements { o[k] = v }
        self = .object(o)
    }
}

/// Minimal order-preserving JSON reader (RFC 8259).
struct JSONReader {
    let s: [Unicode.Scalar]
    var i = 0
    init(_ s: [Unicode.Scalar]) { self.s = s }

    func fail(_ msg: String) -> ChatTemplateError {
        ChatTemplateError(message: "JSON: \(msg) at offset \(i)", line: 0, column: 0)
    }
    mutating func ws() { while i < s.count, [" ", "\n", "\r", "\t"].contains(s[i]) { i += 1 } }
    mutating func parseDocument() throws -> TemplateValue {
        let v = try value(); ws()
        if i != s.count { throw fail("trailing characters") }
        return v
    }
    mutating func lit(_ word: String, _ v: TemplateValue) throws -> TemplateValue {
        let w = Array(word.unicodeScalars)
        guard i + w.count <= s.count, Array(s[i..<i + w.count]) == w else { throw fail("bad literal") }
        i += w.count; return v
    }
    mutating func value() throws -> TemplateValue {
        ws()
        guard i < s.count else { throw fail("unexpected end") }
        switch s[i] {
        case "n": return try lit("null", .null)
        case "t": return try lit("true", .bool(true))
        case "f": return try lit("false", .bool(false))
        case "\"": return .string(try string())
        case "[":
            i += 1; var a: [TemplateValue] = []; ws()
            if i < s.count, s[i] == "]" { i += 1; return .array(a) }
            while true {
                a.append(try value()); ws()
                guard i < s.count else { throw fail("unterminated array") }
                if s[i] == "," { i += 1; continue }
                if s[i] == "]" { i += 1; return .array(a) }
                throw fail("expected , or ]")
            }
        case "{":
            i += 1; var o = TemplateObject(); ws()
            if i < s.count, s[i] == "}" { i += 1; return .object(o) }
            while true {
                ws()
                guard i < s.count, s[i] == "\"" else { throw fail("expected key") }
                let k = try string(); ws()
                guard i < s.count, s[i] == ":" else { throw fail("expected :") }
                i += 1
                o[k] = try value(); ws()
                guard i < s.count else { throw fail("unterminated object") }
                if s[i] == "," { i += 1; continue }
                if s[i] == "}" { i += 1; return .object(o) }
                throw fail("expected , or }")
            }
        default:
            let start = i
            while i < s.count, "+-0123456789.eE".unicodeScalars.contains(s[i]) { i += 1 }
            let text = String(String.UnicodeScalarView(s[start..<i]))
            if let n = Int(text) { return .int(n) }
            if let d = Double(text), !text.isEmpty { return .double(d) }
            throw fail("bad number")
        }
    }
    mutating func hex4() throws -> UInt32 {
        guard i + 4 <= s.count, let v = UInt32(String(String.UnicodeScalarView(s[i..<i + 4])), radix: 16) else { throw fail("bad \\u escape") }
        i += 4; return v
    }
    mutating func string() throws -> String {
        i += 1
        var out = String.UnicodeScalarView()
        while true {
            guard i < s.count else { throw fail("unterminated string") }
            let c = s[i]; i += 1
            if c == "\"" { return String(out) }
            if c != "\\" { out.append(c); continue }
            guard i < s.count else { throw fail("bad escape") }
            let e = s[i]; i += 1
            switch e {
            case "n": out.append("\n"); case "t": out.append("\t"); case "r": out.append("\r")
            case "b": out.append("\u{08}"); case "f": out.append("\u{0C}")
            case "u":
                var v = try hex4()
                if v >= 0xD800, v < 0xDC00, i + 6 <= s.count, s[i] == "\\", s[i + 1] == "u" {
                    i += 2; let lo = try hex4()
                    v = 0x10000 + ((v - 0xD800) << 10) + (lo - 0xDC00)
                }
                out.append(Unicode.Scalar(v) ?? "\u{FFFD}")
            default: out.append(e)
            }
        }
    }
}
