import Foundation

final class Namespace {
    var keys: [String] = []
    var vals: [String: Value] = [:]
    func set(_ k: String, _ v: Value) { if vals.updateValue(v, forKey: k) == nil { keys.append(k) } }
    var asObject: Value { .object(keys, vals) }
}

final class Callable {
    let name: String
    let fn: (_ args: [Value], _ kwargs: [(String, Value)], _ pos: Pos) throws -> Value
    init(_ name: String, _ fn: @escaping ([Value], [(String, Value)], Pos) throws -> Value) { self.name = name; self.fn = fn }
}

/// Runtime value: TemplateValue plus jinja-only kinds.
indirect enum Value {
    case undefined(String)  // message used when the undefined is misused
    case none, bool(Bool), int(Int), double(Double), string(String)
    case array([Value])
    case object([String], [String: Value])
    case namespace(Namespace)
    case callable(Callable)

    init(_ t: TemplateValue) {
        switch t {
        case .null: self = .none
        case .bool(let b): self = .bool(b)
        case .int(let i): self = .int(i)
        case .double(let d): self = .double(d)
        case .string(let s): self = .string(s)
        case .array(let a): self = .array(a.map(Value.init))
        case .object(let o): self = .object(o.keys, o.storage.mapValues(Value.init))
        }
    }
    var isUndefined: Bool { if case .undefined = self { return true }; return false }
    var truthy: Bool {
        switch self {
        case .undefined, .none: return false
        case .bool(let b): return b
        case .int(let i): return i != 0
        case .double(let d): return d != 0
        case .string(let s): return !s.isEmpty
        case .array(let a): return !a.isEmpty
        case .object(let k, _): return !k.isEmpty
        case .namespace, .callable: return true
        }
    }
    var typeName: String {
        switch self {
        case .undefined: return "Undefined"
        case .none: return "NoneType"
        case .bool: return "bool"
        case .int: return "int"
        case .double: return "float"
        case .string: return "str"
        case .array: return "list"
        case .object: return "dict"
        case .namespace: return "Namespace"
        case .callable: return "function"
        }
    }
}

struct Interrupt: Error { let isBreak: Bool }

final class Scope {
    var vars: [String: Value] = [:]
    let parent: Scope?
    init(parent: Scope?) { self.parent = parent }
    func lookup(_ n: String) -> Value? {
        var s: Scope? = self
        while let c = s { if let v = c.vars[n] { return v }; s = c.parent }
        return nil
    }
}

func pyRepr(_ v: Value) -> String {
    switch v {
    case .string(let s):
        let q: Character = s.contains("'") && !s.contains("\"") ? "\"" : "'"
        var out = String(q)
        for c in s.unicodeScalars {
            switch c {
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\t": out += "\\t"
            case "\r": out += "\\r"
            default:
                if Character(c) == q { out += "\\" + String(q) } else { out.unicodeScalars.append(c) }
            }
        }
        return out + String(q)
    default: return pyStr(v)
    }
}

func formatDouble(_ d: Double) -> String {
    if d.isNaN { return "nan" }
    if d.isInfinite { return d < 0 ? "-inf" : "inf" }
    if d == d.rounded(), abs(d) < 1e16 { return String(format: "%.1f", d) }
    var s = "\(d)"  // shortest repr
    if let e = s.firstIndex(of: "e") {
        let mant = s[..<e], exp = s[s.index(after: e)...]
        var expStr = String(exp)
        var sign = "+"
        if expStr.hasPrefix("-") { sign = "-"; expStr.removeFirst() } else if expStr.hasPrefix("+") { expStr.removeFirst() }
        if expStr.count < 2 { expStr = "0" + expStr }
        var m = String(mant)
        if m.hasSuffix(".0") { m.removeLast(2) }
        s = m + "e" + sign + expStr
    }
    return s
}

func pyStr(_ v: Value) -> String {
    switch v {
    case .undefined: return ""
    case .none: return "None"
    case .bool(let b): return b ? "True" : "False"
    case .int(let i): return String(i)
    case .double(let d): return formatDouble(d)
    case .string(let s): return s
    case .array(let a): return "[" + a.map(pyRepr).joined(separator: ", ") + "]"
    case .object(let keys, let d): return "{" + keys.map { pyRepr(.string($0)) + ": " + pyRepr(d[$0]!) }.joined(separator: ", ") + "}"
    case .namespace(let ns): return "<Namespace " + pyStr(ns.asObject) + ">"
    case .callable(let c): return "<function \(c.name)>"
    }
}

func jsonEscape(_ s: String) -> String {
    var out = "\""
    for c in s.unicodeScalars {
        switch c {
        case "\"": out += "\\\""
        case "\\": out += "\\\\"
        case "\n": out += "\\n"
        case "\r": out += "\\r"
        case "\t": out += "\\t"
        case "\u{08}": out += "\\b"
        case "\u{0C}": out += "\\f"
        default:
            if c.value < 0x20 { out += String(format: "\\u%04x", c.value) } else { out.unicodeScalars.append(c) }
        }
    }
    return out + "\""
}

/// Python json.dumps(x, ensure_ascii=False, indent=indent).
func toJSON(_ v: Value, indent: Int?, level: Int, pos: Pos) throws -> String {
    let nl = indent.map { "\n" + String(repeating: " ", count: $0 * (level + 1)) }
    let close = indent.map { "\n" + String(repeating: " ", count: $0 * level) } ?? ""
    let sep = indent == nil ? ", " : ","
    switch v {
    case .none: return "null"
    case .bool(let b): return b ? "true" : "false"
    case .int(let i): return String(i)
    case .double(let d):
        if d.isNaN { return "NaN" }
        if d.isInfinite { return d < 0 ? "-Infinity" : "Infinity" }
        return formatDouble(d)
    case .string(let s): return jsonEscape(s)
    case .array(let a):
        if a.isEmpty { return "[]" }
        let items = try a.map { try (nl ?? "") + toJSON($0, indent: indent, level: level + 1, pos: pos) }
        return "[" + items.joined(separator: sep) + close + "]"
    case .object(let keys, let d):
        if keys.isEmpty { return "{}" }
        let items = try keys.map { try (nl ?? "") + jsonEscape($0) + ": " + toJSON(d[$0]!, indent: indent, level: level + 1, pos: pos) }
        return "{" + items.joined(separator: sep) + close + "}"
    case .namespace(let ns): return try toJSON(ns.asObject, indent: indent, level: level, pos: pos)
    case .undefined, .callable:
        throw ChatTemplateError(message: "Object of type \(v.typeName) is not JSON serializable", line: pos.line, column: pos.column)
    }
}

func pyEqual(_ a: Value, _ b: Value) -> Bool {
    switch (a, b) {
    case (.undefined, .undefined), (.none, .none): return true
    case (.bool(let x), .bool(let y)): return x == y
    case (.string(let x), .string(let y)): return x == y
    case (.array(let x), .array(let y)): return x.count == y.count && zip(x, y).allSatisfy { pyEqual($0, $1) }
    case (.object(let kx, let x), .object(let ky, let y)):
        return kx.count == ky.count && kx.allSatisfy { k in y[k].map { pyEqual(x[k]!, $0) } ?? false }
    case (.namespace(let x), .namespace(let y)): return x === y
    case (.callable(let x), .callable(let y)): return x === y
    default:
        if let x = numeric(a), let y = numeric(b) { return x == y }
        return false
    }
}
func numeric(_ v: Value) -> Double? {
    switch v {
    case .int(let i): return Double(i)
    case .double(let d): return d
    case .bool(let b): return b ? 1 : 0
    default: return nil
    }
}
func intLike(_ v: Value) -> Int? {
    switch v {
    case .int(let i): return i
    case .bool(let b): return b ? 1 : 0
    default: return nil
    }
}
func scalars(_ s: String) -> [Unicode.Scalar] { Array(s.unicodeScalars) }
func strOf(_ sc: ArraySlice<Unicode.Scalar>) -> String { String(String.UnicodeScalarView(sc)) }
func strOf(_ sc: [Unicode.Scalar]) -> String { String(String.UnicodeScalarView(sc)) }

func pyStrip(_ s: String, _ chars: String?, left: Bool, right: Bool) -> String {
    let sc = scalars(s)
    let set = chars.map { Set($0.unicodeScalars) }
    func strip(_ c: Unicode.Scalar) -> Bool { set.map { $0.contains(c) } ?? c.properties.isWhitespace }
    var lo = 0, hi = sc.count
    if left { while lo < hi, strip(sc[lo]) { lo += 1 } }
    if right { while hi > lo, strip(sc[hi - 1]) { hi -= 1 } }
    return strOf(sc[lo..<hi])
}
func pyTitle(_ s: String) -> String {
    var out = ""; var prevCased = false
    for ch in s {
        let cased = ch.isLetter
        if cased { out += prevCased ? ch.lowercased() : ch.uppercased() } else { out.append(ch) }
        prevCased = cased
    }
    return out
}
func pyCapitalize(_ s: String) -> String {
    guard let f = s.first else { return s }
    return f.uppercased() + s.dropFirst().lowercased()
}
func pySplit(_ s: String, _ sep: String?, _ maxsplit: Int) -> [Value] {
    if let sep, !sep.isEmpty {
        var parts: [String] = []
        var rest = Substring(s)
        while maxsplit < 0 || parts.count < maxsplit, let r = rest.range(of: sep) {
            parts.append(String(rest[..<r.lowerBound])); rest = rest[r.upperBound...]
        }
        parts.append(String(rest))
        return parts.map { .string($0) }
    }
    var parts: [String] = []
    var curr = String.UnicodeScalarView(); var inWord = false
    let sc = scalars(s); var idx = 0
    while idx < sc.count {
        let c = sc[idx]
        if c.properties.isWhitespace {
            if inWord { parts.append(String(curr)); curr = String.UnicodeScalarView(); inWord = false }
            if maxsplit >= 0, parts.count == maxsplit {
                var j = idx; while j < sc.count, sc[j].properties.isWhitespace { j += 1 }
                if j < sc.count { parts.append(strOf(sc[j...]).trimmingTrailingWhitespace()) }
                return parts.map { .string($0) }
            }
        } else { curr.append(c); inWord = true }
        idx += 1
    }
    if inWord { parts.append(String(curr)) }
    return parts.map { .string($0) }
}
extension String {
    func trimmingTrailingWhitespace() -> String { pyStrip(self, nil, left: false, right: true) }
}

func sliceIndices(count n: Int, _ start: Int?, _ stop: Int?, _ step: Int) -> [Int] {
    var out: [Int] = []
    if step > 0 {
        var lo = start ?? 0, hi = stop ?? n
        if lo < 0 { lo = max(0, lo + n) }; if hi < 0 { hi = max(0, hi + n) }
        lo = min(lo, n); hi = min(hi, n)
        var i = lo; while i < hi { out.append(i); i += step }
    } else {
        var lo = start ?? n - 1, hi = stop ?? -n - 1
        if lo < 0 { lo += n }; if lo >= n { lo = n - 1 }
        if stop != nil, hi < 0 { hi = max(-1, hi + n) } else if stop == nil { hi = -1 }
        var i = lo; while i > hi, i >= 0 { out.append(i); i += step }
    }
    return out
}
