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

/// Python json.dumps(x, ensure_ascii=False, indent=indent), appended to `out`; throws `tooLarge()`
/// as soon as `out` passes `limit` bytes (each step adds at most one bounded string).
func toJSON(_ v: Value, indent: Int?, level: Int, pos: Pos, into out: inout String, limit: Int,
            tooLarge: () -> ChatTemplateError) throws {
    func put(_ s: String) throws {
        guard s.utf8.count <= limit - out.utf8.count else { throw tooLarge() }
        out += s
    }
    func newline(_ level: Int) throws {
        guard let indent else { return }
        let n = satMul(max(0, indent), level)  // Python: a negative indent means none
        if n > limit { throw tooLarge() }
        try put("\n" + String(repeating: " ", count: n))
    }
    let sep = indent == nil ? ", " : ","
    switch v {
    case .none: try put("null")
    case .bool(let b): try put(b ? "true" : "false")
    case .int(let i): try put(String(i))
    case .double(let d): try put(d.isNaN ? "NaN" : d.isInfinite ? (d < 0 ? "-Infinity" : "Infinity") : formatDouble(d))
    case .string(let s): try put(jsonEscape(s))
    case .array(let a):
        if a.isEmpty { try put("[]"); return }
        try put("[")
        for (i, x) in a.enumerated() {
            if i > 0 { try put(sep) }
            try newline(level + 1)
            try toJSON(x, indent: indent, level: level + 1, pos: pos, into: &out, limit: limit, tooLarge: tooLarge)
        }
        try newline(level); try put("]")
    case .object(let keys, let d):
        if keys.isEmpty { try put("{}"); return }
        try put("{")
        for (i, k) in keys.enumerated() {
            if i > 0 { try put(sep) }
            try newline(level + 1)
            try put(jsonEscape(k) + ": ")
            try toJSON(d[k]!, indent: indent, level: level + 1, pos: pos, into: &out, limit: limit, tooLarge: tooLarge)
        }
        try newline(level); try put("}")
    case .namespace(let ns): try toJSON(ns.asObject, indent: indent, level: level, pos: pos, into: &out, limit: limit, tooLarge: tooLarge)
    case .undefined, .callable:
        throw ChatTemplateError(message: "Object of type \(v.typeName) is not JSON serializable", line: pos.line, column: pos.column)
    }
}

/// An upper bound on `pyStr(v).utf8.count`, computed without building it; stops early once past `limit`.
func reprSizeBound(_ v: Value, limit: Int, inList: Bool = false) -> Int {
    switch v {
    case .undefined: return 0
    case .none: return 4
    case .bool: return 5
    case .int, .double: return 24
    case .string(let s): return satAdd(satMul(s.utf8.count, inList ? 2 : 1), 2)  // repr escapes at most double
    case .callable(let c): return satAdd(c.name.utf8.count, 12)
    case .array(let a):
        var n = 2
        for x in a where n <= limit { n = satAdd(n, satAdd(2, reprSizeBound(x, limit: limit, inList: true))) }
        return n
    case .object(let keys, let d):
        var n = 2
        for k in keys where n <= limit {
            n = satAdd(n, satAdd(satAdd(4, reprSizeBound(.string(k), limit: limit, inList: true)), reprSizeBound(d[k]!, limit: limit, inList: true)))
        }
        return n
    case .namespace(let ns): return satAdd(12, reprSizeBound(ns.asObject, limit: limit))
    }
}

/// Saturating arithmetic for sizes computed from template values (compared against limits).
func satAdd(_ a: Int, _ b: Int) -> Int { let (r, o) = a.addingReportingOverflow(b); return o ? .max : r }
func satMul(_ a: Int, _ b: Int) -> Int { let (r, o) = a.multipliedReportingOverflow(by: b); return o ? .max : r }

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
/// Number of whitespace-separated words in `s` (`len(s.split())`), without building them.
func wordCount(_ s: String) -> Int {
    var n = 0, inWord = false
    for c in s.unicodeScalars {
        let ws = c.properties.isWhitespace
        if !ws && !inWord { n += 1 }
        inWord = !ws
    }
    return n
}

/// Substring search on UTF-8 bytes with Knuth-Morris-Pratt: linear time whatever the input
/// (Foundation's `range(of:)` is quadratic on inputs like `'a' * n` vs `'a' * (n / 2) + 'b'`),
/// and Python's code-point semantics (a valid UTF-8 needle can only match on scalar boundaries).
struct ByteSearch {
    let needle: [UInt8]
    private var fail: [Int]
    init(_ sub: String) {
        needle = Array(sub.utf8)
        fail = [Int](repeating: 0, count: needle.count)
        var k = 0
        for i in needle.indices.dropFirst() {
            while k > 0, needle[i] != needle[k] { k = fail[k - 1] }
            if needle[i] == needle[k] { k += 1 }
            fail[i] = k
        }
    }
    /// Calls `body` with the start offset of each non-overlapping match in `hay`, at most `limit` times.
    /// An empty needle matches nothing.
    func forEachMatch(in hay: [UInt8], limit: Int = .max, _ body: (Int) throws -> Void) rethrows {
        guard !needle.isEmpty else { return }
        var k = 0, found = 0
        for (i, b) in hay.enumerated() where found < limit {
            while k > 0, b != needle[k] { k = fail[k - 1] }
            if b == needle[k] { k += 1 }
            if k == needle.count { try body(i + 1 - k); found += 1; k = 0 }
        }
    }
    func firstMatch(in hay: [UInt8]) -> Int? {
        var r: Int?
        forEachMatch(in: hay, limit: 1) { r = $0 }
        return r
    }
    func count(in hay: [UInt8], limit: Int = .max) -> Int {
        var n = 0
        forEachMatch(in: hay, limit: limit) { _ in n += 1 }
        return n
    }
    /// `hay` cut at (and without) the first `limit` matches.
    func split(_ hay: [UInt8], limit: Int = .max) -> [String] {
        var parts: [String] = [], last = 0
        forEachMatch(in: hay, limit: limit) { m in parts.append(String(decoding: hay[last..<m], as: UTF8.self)); last = m + needle.count }
        parts.append(String(decoding: hay[last...], as: UTF8.self))
        return parts
    }
}

func pySplit(_ s: String, _ sep: String?, _ maxsplit: Int) -> [Value] {
    if let sep, !sep.isEmpty {
        return ByteSearch(sep).split(Array(s.utf8), limit: maxsplit < 0 ? .max : maxsplit).map { .string($0) }
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
        var i = lo
        while i < hi {
            out.append(i)
            let (next, overflow) = i.addingReportingOverflow(step)
            if overflow { break }
            i = next
        }
    } else {
        var lo = start ?? n - 1, hi = stop ?? -n - 1
        if lo < 0 { lo += n }; if lo >= n { lo = n - 1 }
        if stop != nil, hi < 0 { hi = max(-1, hi + n) } else if stop == nil { hi = -1 }
        var i = lo; while i > hi, i >= 0 { out.append(i); i += step }
    }
    return out
}
