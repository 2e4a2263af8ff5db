import Foundation

/// Source position (1-based).
struct Pos: Sendable { var line: Int; var column: Int }

// MARK: - AST

indirect enum Expr: Sendable {
    case literal(TemplateValue)
    case name(String, Pos)
    case list([Expr])
    case dict([(Expr, Expr)])
    case attr(Expr, String, Pos)
    case item(Expr, Expr, Pos)
    case slice(Expr, Expr?, Expr?, Expr?, Pos)
    case call(Expr, [Expr], [(String, Expr)], Pos)
    case filter(Expr, String, [Expr], [(String, Expr)], Pos)
    case test(Expr, String, [Expr], Bool, Pos)
    case neg(Expr, Pos)
    case not(Expr)
    case and(Expr, Expr)
    case or(Expr, Expr)
    case binary(String, Expr, Expr, Pos)
    case cond(Expr, Expr, Expr?)
}

indirect enum Node: Sendable {
    case text(String)
    case output(Expr, Pos)
    case ifs([(Expr, [Node])], [Node])
    case loop(targets: [String], iter: Expr, filter: Expr?, body: [Node], orElse: [Node], pos: Pos)
    case set(name: String, attr: String?, value: Expr, pos: Pos)
    case setBlock(name: String, body: [Node])
    case macro(name: String, params: [(String, Expr?)], body: [Node])
    case callBlock(call: Expr, params: [(String, Expr?)], body: [Node], pos: Pos)
    case breakLoop, continueLoop
}

extension Expr {
    var pos: Pos? {
        switch self {
        case .name(_, let p), .attr(_, _, let p), .item(_, _, let p), .slice(_, _, _, _, let p), .call(_, _, _, let p),
             .filter(_, _, _, _, let p), .test(_, _, _, _, let p), .neg(_, let p), .binary(_, _, _, let p): return p
        case .literal, .list, .dict, .not, .and, .or, .cond: return nil
        }
    }
}
extension Node {
    var pos: Pos? {
        switch self {
        case .output(_, let p), .loop(_, _, _, _, _, let p), .set(_, _, _, let p), .callBlock(_, _, _, let p): return p
        case .text, .ifs, .setBlock, .macro, .breakLoop, .continueLoop: return nil
        }
    }
}

// MARK: - Template lexer (text / tags, whitespace control)

enum Tok: Equatable, Sendable {
    case name(String), int(Int), double(Double), string(String), op(String), end
}
struct PTok: Sendable { var tok: Tok; var pos: Pos }

enum Segment: Sendable {
    case text(String)
    case output([PTok], Pos)
    case block([PTok], Pos)
}

let knownFilters: Set<String> = [
    "trim", "length", "count", "upper", "lower", "title", "capitalize", "default", "d", "first", "last", "join",
    "tojson", "string", "int", "float", "list", "replace", "selectattr", "rejectattr", "select", "reject", "map",
    "indent", "safe", "escape", "e", "items", "reverse", "sort", "unique", "abs", "round", "sum", "min", "max",
    "dictsort", "wordcount", "center", "striptags", "bool", "forceescape",
]
let knownTests: Set<String> = [
    "defined", "undefined", "none", "string", "number", "integer", "float", "mapping", "iterable", "sequence",
    "boolean", "true", "false", "callable", "equalto", "eq", "==", "ne", "!=", "in", "odd", "even", "divisibleby",
    "lower", "upper", "gt", "lt", "ge", "le", ">", "<", ">=", "<=", "greaterthan", "lessthan", "sameas", "escaped", "filter", "test",
]

struct Lexer {
    let s: [Unicode.Scalar]
    /// Offsets where each line starts, so a position is a binary search, not a rescan.
    let lineStarts: [Int]

    init(_ source: String) {
        // "\r\n" -> "\n" (on scalars: Foundation's replacingOccurrences is slow on large input)
        var sc = Array(source.unicodeScalars)
        if sc.contains("\r") { sc = sc.indices.filter { sc[$0] != "\r" || $0 + 1 == sc.count || sc[$0 + 1] != "\n" }.map { sc[$0] } }
        if sc.last == "\n" { sc.removeLast() }  // jinja2 keep_trailing_newline=False
        s = sc
        lineStarts = [0] + sc.indices.filter { sc[$0] == "\n" }.map { $0 + 1 }
    }

    func at(_ k: Int) -> Unicode.Scalar? { k < s.count ? s[k] : nil }
    func starts(_ str: String, _ k: Int) -> Bool {
        var j = k
        for c in str.unicodeScalars { guard j < s.count, s[j] == c else { return false }; j += 1 }
        return true
    }
    func posOf(_ k: Int) -> Pos {
        var lo = 0, hi = lineStarts.count  // the last line start <= k
        while hi - lo > 1 { let mid = (lo + hi) / 2; if lineStarts[mid] <= k { lo = mid } else { hi = mid } }
        return Pos(line: lo + 1, column: k - lineStarts[lo] + 1)
    }
    func err(_ msg: String, _ k: Int) -> ChatTemplateError {
        let p = posOf(k); return ChatTemplateError(message: msg, line: p.line, column: p.column)
    }
    // ASCII fast paths: Unicode property lookups dominate lexing time otherwise.
    static func isWS(_ c: Unicode.Scalar) -> Bool { c.isASCII ? c == " " || (0x09...0x0D).contains(c.value) : c.properties.isWhitespace }
    static func isNameStart(_ c: Unicode.Scalar) -> Bool {
        c.isASCII ? c == "_" || ("a"..."z").contains(c) || ("A"..."Z").contains(c) : c.properties.isAlphabetic
    }

    mutating func segments() throws -> [Segment] {
        var out: [Segment] = []
        var text = String.UnicodeScalarView()
        var lineStarting = true
        var k = 0
        var textStart = 0
        func flushText(_ t: inout String.UnicodeScalarView, _ out: inout [Segment]) {
            if !t.isEmpty { out.append(.text(String(t))); t = String.UnicodeScalarView() }
        }
        while k < s.count {
            let c = s[k]
            if c == "{", let n = at(k + 1), n == "{" || n == "%" || n == "#" {
                let sign = at(k + 2)
                // whitespace control on the text before the tag
                var t = Array(text)
                if sign == "-" {
                    while let last = t.last, Lexer.isWS(last) { t.removeLast() }
                } else if sign != "+", n != "{" {
                    // lstrip_blocks
                    let lastNL = t.lastIndex(of: "\n")
                    let from = lastNL.map { $0 + 1 } ?? 0
                    if lastNL != nil || (lineStarting && textStart == (k - t.count)) {
                        let tail = t[from...]
                        if tail.allSatisfy({ $0 == " " || $0 == "\t" }) { t.removeSubrange(from...) }
                    }
                }
                text = String.UnicodeScalarView(t)
                flushText(&text, &out)
                var j = k + 2
                if sign == "-" || sign == "+" { j += 1 }
                let tagPos = posOf(k)
                if n == "#" {
                    // comment: find #}
                    var e = j
                    while e < s.count, !starts("#}", e) { e += 1 }
                    if e >= s.count { throw err("unclosed comment", k) }
                    let stripAfter = e > j && s[e - 1] == "-"
                    let plusAfter = e > j && s[e - 1] == "+"
                    j = e + 2
                    if stripAfter { while j < s.count, Lexer.isWS(s[j]) { j += 1 } }
                    else if !plusAfter, j < s.count, s[j] == "\n" { j += 1 }
                } else {
                    let closer = n == "{" ? "}}" : "%}"
                    var toks: [PTok] = []
                    var endMark = -1
                    var stripAfter = false, plusAfter = false
                    var depth = 0  // bracket balance: '}}' inside a dict literal does not close the tag (as jinja2)
                    while true {
                        while j < s.count, Lexer.isWS(s[j]) { j += 1 }
                        if j >= s.count {
                            throw err(n == "{" ? "unexpected end of template, expected '}}'" : "unexpected end of template, expected '%}'", k)
                        }
                        if depth == 0 {
                            if s[j] == "-", starts(closer, j + 1) { stripAfter = true; endMark = j + 3; break }
                            if s[j] == "+", starts(closer, j + 1), n == "%" { plusAfter = true; endMark = j + 3; break }
                            if starts(closer, j) { endMark = j + 2; break }
                        }
                        let (t, nj) = try lexToken(j)
                        if case .op(let o) = t {
                            if o == "(" || o == "[" || o == "{" { depth += 1 }
                            if o == ")" || o == "]" || o == "}" { depth = max(0, depth - 1) }
                        }
                        toks.append(PTok(tok: t, pos: posOf(j)))
                        j = nj
                    }
                    toks.append(PTok(tok: .end, pos: posOf(j)))
                    j = endMark
                    if stripAfter { while j < s.count, Lexer.isWS(s[j]) { j += 1 } }
                    else if n == "%", !plusAfter, j < s.count, s[j] == "\n" { j += 1 }
                    out.append(n == "{" ? .output(toks, tagPos) : .block(toks, tagPos))
                }
                lineStarting = j > 0 && s[j - 1] == "\n"
                k = j
                textStart = k
                continue
            }
            text.append(c)
            k += 1
        }
        flushText(&text, &out)
        return out
    }

    func lexToken(_ start: Int) throws -> (Tok, Int) {
        var j = start
        let c = s[j]
        if Lexer.isNameStart(c) {
            while j < s.count, Lexer.isNameStart(s[j]) || ("0"..."9").contains(s[j]) { j += 1 }
            return (.name(String(String.UnicodeScalarView(s[start..<j]))), j)
        }
        if ("0"..."9").contains(c) {
            var isFloat = false
            while j < s.count, ("0"..."9").contains(s[j]) || s[j] == "_" { j += 1 }
            if j + 1 < s.count, s[j] == ".", ("0"..."9").contains(s[j + 1]) {
                isFloat = true; j += 1
                while j < s.count, ("0"..."9").contains(s[j]) || s[j] == "_" { j += 1 }
            }
            if j < s.count, s[j] == "e" || s[j] == "E" {
                var m = j + 1
                if m < s.count, s[m] == "+" || s[m] == "-" { m += 1 }
                if m < s.count, ("0"..."9").contains(s[m]) {
                    isFloat = true; j = m
                    while j < s.count, ("0"..."9").contains(s[j]) { j += 1 }
                }
            }
            let text = String(String.UnicodeScalarView(s[start..<j].filter { $0 != "_" }))
            if isFloat { return (.double(Double(text) ?? 0), j) }
            guard let v = Int(text) else { throw err("integer literal out of range", start) }
            return (.int(v), j)
        }
        if c == "'" || c == "\"" {
            j += 1
            var out = String.UnicodeScalarView()
            while true {
                guard j < s.count else { throw err("unterminated string literal", start) }
                let ch = s[j]
                if ch == c { j += 1; break }
                if ch == "\\", j + 1 < s.count {
                    let e = s[j + 1]; j += 2
                    switch e {
                    case "n": out.append("\n"); case "t": out.append("\t"); case "r": out.append("\r")
                    case "\\": out.append("\\"); case "'": out.append("'"); case "\"": out.append("\"")
                    case "0": out.append("\0"); case "a": out.append("\u{07}"); case "b": out.append("\u{08}")
                    case "f": out.append("\u{0C}"); case "v": out.append("\u{0B}")
                    case "\n": break
                    case "x", "u", "U":
                        let len = e == "x" ? 2 : (e == "u" ? 4 : 8)
                        guard j + len <= s.count, let v = UInt32(String(String.UnicodeScalarView(s[j..<j + len])), radix: 16),
                              let sc = Unicode.Scalar(v) else { throw err("bad escape in string literal", j) }
                        out.append(sc); j += len
                    default: out.append("\\"); out.append(e)
                    }
                    continue
                }
                out.append(ch); j += 1
            }
            return (.string(String(out)), j)
        }
        if let n = at(j + 1) {
            switch (c, n) {
            case ("/", "/"), ("*", "*"), ("=", "="), ("!", "="), ("<", "="), (">", "="):
                return (.op(String(String.UnicodeScalarView([c, n]))), j + 2)
            default: break
            }
        }
        switch c {
        case "+", "-", "*", "/", "%", "~", "(", ")", "[", "]", "{", "}", ",", ".", ":", "|", "=", "<", ">": return (.op(String(c)), j + 1)
        default: break
        }
        throw err("unexpected character '\(c)'", start)
    }
}

// MARK: - Parser

struct Parser {
    var segs: [Segment]
    var si = 0
    // expression token stream of current tag
    var toks: [PTok] = []
    var ti = 0
    var tagPos = Pos(line: 1, column: 1)
    /// Nesting of the production being parsed (blocks, then expression levels), at most `maxDepth`,
    /// so a hostile template cannot overflow the stack of this recursive-descent parser (or, later,
    /// of the evaluator walking the tree it builds).
    var depth = 0
    let maxDepth: Int

    init(_ segs: [Segment], maxDepth: Int) { self.segs = segs; self.maxDepth = maxDepth }

    func err(_ msg: String, _ p: Pos) -> ChatTemplateError { ChatTemplateError(message: msg, line: p.line, column: p.column) }

    /// One level deeper; callers undo it (`defer { depth -= 1 }`, or restore a saved depth after a loop
    /// that nests once per iteration, since `a + b + c` builds `(a + b) + c`).
    mutating func nest() throws {
        depth += 1
        if depth > maxDepth { throw err("template nesting exceeds \(maxDepth) levels (Limits.maxNestingDepth)", curPos) }
    }

    // --- token helpers
    var cur: Tok { toks[ti].tok }
    var curPos: Pos { toks[ti].pos }
    mutating func advance() -> Tok { let t = toks[ti].tok; if ti < toks.count - 1 { ti += 1 }; return t }
    func isOp(_ o: String) -> Bool { cur == .op(o) }
    func isName(_ n: String) -> Bool { cur == .name(n) }
    mutating func expectOp(_ o: String) throws {
        guard isOp(o) else { throw err("expected '\(o)', got \(describe(cur))", curPos) }
        _ = advance()
    }
    mutating func expectName() throws -> String {
        guard case .name(let n) = cur else { throw err("expected a name, got \(describe(cur))", curPos) }
        _ = advance(); return n
    }
    mutating func expectEnd() throws {
        guard cur == .end else { throw err("expected end of tag, got \(describe(cur))", curPos) }
    }
    func describe(_ t: Tok) -> String {
        switch t {
        case .name(let n): return "'\(n)'"
        case .int(let v): return "'\(v)'"
        case .double(let v): return "'\(v)'"
        case .string(let s): return "string '\(s)'"
        case .op(let o): return "'\(o)'"
        case .end: return "end of tag"
        }
    }

    // --- statements
    /// Parses nodes until a block tag whose keyword is in `until`; returns the nodes and that keyword (tokens positioned after it).
    mutating func parseBody(until: Set<String>, opener: (String, Pos)?) throws -> ([Node], String?) {
        var nodes: [Node] = []
        while si < segs.count {
            let seg = segs[si]; si += 1
            switch seg {
            case .text(let t): nodes.append(.text(t))
            case .output(let ts, let p):
                toks = ts; ti = 0; tagPos = p
                if cur == .end { throw err("expected an expression", p) }
                let e = try parseExpr()
                try expectEnd()
                nodes.append(.output(e, p))
            case .block(let ts, let p):
                toks = ts; ti = 0; tagPos = p
                let kwPos = curPos
                guard case .name(let kw) = cur else { throw err("expected a statement name", p) }
                if until.contains(kw) { _ = advance(); return (nodes, kw) }
                _ = advance()
                nodes.append(try parseStatement(kw, kwPos, p))
            }
        }
        if let (name, p) = opener {
            let expected = until.sorted().map { "'\($0)'" }.joined(separator: " or ")
            throw err("unexpected end of template: unclosed '\(name)' block (expected \(expected))", p)
        }
        return (nodes, nil)
    }

    /// Dispatches only (as `Renderer.eval`), so nested blocks take little stack.
    mutating func parseStatement(_ kw: String, _ kwPos: Pos, _ p: Pos) throws -> Node {
        try nest(); defer { depth -= 1 }
        switch kw {
        case "if": return try parseIf(p)
        case "for": return try parseFor(p)
        case "set": return try parseSet(p)
        case "macro": return try parseMacro(p)
        case "call": return try parseCallBlock(p)
        case "break": try expectEnd(); return .breakLoop
        case "continue": try expectEnd(); return .continueLoop
        case "generation", "endgeneration": try expectEnd(); return .text("")
        default:
            throw err("unknown statement '\(kw)'", kwPos)
        }
    }
    mutating func parseIf(_ p: Pos) throws -> Node {
        var branches: [(Expr, [Node])] = []
        var cond = try parseExpr(); try expectEnd()
        while true {
            let (body, end) = try parseBody(until: ["elif", "else", "endif"], opener: ("if", p))
            branches.append((cond, body))
            if end == "elif" { cond = try parseExpr(); try expectEnd(); continue }
            if end == "else" {
                try expectEnd()
                let (eb, _) = try parseBody(until: ["endif"], opener: ("if", p))
                try expectEnd()
                return .ifs(branches, eb)
            }
            try expectEnd()
            return .ifs(branches, [])
        }
    }
    mutating func parseFor(_ p: Pos) throws -> Node {
        var targets = [try expectName()]
        while isOp(",") { _ = advance(); targets.append(try expectName()) }
        guard isName("in") else { throw err("expected 'in' in for loop", curPos) }
        _ = advance()
        let iter = try parseExpr(allowCond: false)
        var filter: Expr? = nil
        if isName("if") { _ = advance(); filter = try parseExpr() }
        if isName("recursive") { throw err("recursive loops are not supported", curPos) }
        try expectEnd()
        let (body, end) = try parseBody(until: ["else", "endfor"], opener: ("for", p))
        var orElse: [Node] = []
        try expectEnd()
        if end == "else" {
            (orElse, _) = try parseBody(until: ["endfor"], opener: ("for", p))
            try expectEnd()
        }
        return .loop(targets: targets, iter: iter, filter: filter, body: body, orElse: orElse, pos: p)
    }
    mutating func parseSet(_ p: Pos) throws -> Node {
        let name = try expectName()
        var attr: String? = nil
        if isOp(".") { _ = advance(); attr = try expectName() }
        if cur == .end, attr == nil {
            let (body, _) = try parseBody(until: ["endset"], opener: ("set", p))
            try expectEnd()
            return .setBlock(name: name, body: body)
        }
        if isOp(",") { throw err("tuple assignment in 'set' is not supported", curPos) }
        try expectOp("=")
        let v = try parseExpr()
        try expectEnd()
        return .set(name: name, attr: attr, value: v, pos: p)
    }
    mutating func parseMacro(_ p: Pos) throws -> Node {
        let name = try expectName()
        let params = try parseParams()
        try expectEnd()
        let (body, _) = try parseBody(until: ["endmacro"], opener: ("macro", p))
        try expectEnd()
        return .macro(name: name, params: params, body: body)
    }
    mutating func parseCallBlock(_ p: Pos) throws -> Node {
        var params: [(String, Expr?)] = []
        if isOp("(") { params = try parseParams() }
        let callPos = curPos
        let c = try parseExpr()
        guard case .call = c else { throw err("expected a call expression", callPos) }
        try expectEnd()
        let (body, _) = try parseBody(until: ["endcall"], opener: ("call", p))
        try expectEnd()
        return .callBlock(call: c, params: params, body: body, pos: p)
    }

    mutating func parseParams() throws -> [(String, Expr?)] {
        try expectOp("(")
        var params: [(String, Expr?)] = []
        while !isOp(")") {
            let n = try expectName()
            var d: Expr? = nil
            if isOp("=") { _ = advance(); d = try parseExpr() }
            params.append((n, d))
            if isOp(",") { _ = advance() } else { break }
        }
        try expectOp(")")
        return params
    }

    // --- expressions
    mutating func parseExpr(allowCond: Bool = true) throws -> Expr {
        try nest(); defer { depth -= 1 }
        let e = try parseBinary(1)
        if allowCond, isName("if") {
            _ = advance()
            let c = try parseBinary(1)
            var other: Expr? = nil
            if isName("else") { _ = advance(); other = try parseExpr() }
            return .cond(c, e, other)
        }
        return e
    }

    /// Binary operators by precedence, loosest first (jinja2's parse_or ... parse_pow);
    /// prefix `not` sits between `and` and the comparisons.
    static let notLevel = 3
    func binaryOperator() -> (op: String, level: Int)? {
        switch cur {
        case .name("or"): return ("or", 1)
        case .name("and"): return ("and", 2)
        case .name("in"): return ("in", 4)
        case .name("not") where ti + 1 < toks.count && toks[ti + 1].tok == .name("in"): return ("not in", 4)
        case .op(let o):
            switch o {
            case "==", "!=", "<", ">", "<=", ">=": return (o, 4)
            case "+", "-": return (o, 5)
            case "~": return (o, 6)
            case "*", "/", "//", "%": return (o, 7)
            case "**": return (o, 8)
            default: return nil
            }
        default: return nil
        }
    }

    /// Precedence climbing: one function for every binary level, so a parenthesised
    /// expression costs a few stack frames, not one per precedence level. All operators
    /// are left-associative; each one applied nests the tree (and the depth count) once.
    mutating func parseBinary(_ minLevel: Int) throws -> Expr {
        let saved = depth; defer { depth = saved }
        var l: Expr
        if minLevel <= Parser.notLevel, isName("not") {
            try nest(); _ = advance()
            l = .not(try parseBinary(Parser.notLevel))
        } else {
            l = try parseUnary(withFilter: true)
        }
        while let (op, level) = binaryOperator(), level >= minLevel {
            try nest()
            let p = curPos
            _ = advance(); if op == "not in" { _ = advance() }
            let r = try parseBinary(level + 1)
            switch op {
            case "or": l = .or(l, r)
            case "and": l = .and(l, r)
            case "not in": l = .not(.binary("in", l, r, p))
            default: l = .binary(op, l, r, p)
            }
        }
        return l
    }
    mutating func parseUnary(withFilter: Bool) throws -> Expr {
        let p = curPos
        var node: Expr
        if isOp("-") || isOp("+") {
            try nest(); defer { depth -= 1 }
            let minus = isOp("-"); _ = advance()
            node = try parseUnary(withFilter: false)
            if minus { node = .neg(node, p) }
        } else { node = try parsePrimary() }
        node = try parsePostfix(node)
        if withFilter { node = try parseFilterExpr(node) }
        return node
    }
    mutating func parsePrimary() throws -> Expr {
        if isOp("(") { return try parseParenthesized() }
        if isOp("[") { return try parseList() }
        if isOp("{") { return try parseDict() }
        return try parseAtom()
    }
    mutating func parseAtom() throws -> Expr {
        let p = curPos
        switch cur {
        case .name(let n):
            _ = advance()
            switch n {
            case "true", "True": return .literal(.bool(true))
            case "false", "False": return .literal(.bool(false))
            case "none", "None": return .literal(.null)
            default: return .name(n, p)
            }
        case .string(var s):
            _ = advance()
            while case .string(let more) = cur { s += more; _ = advance() }
            return .literal(.string(s))
        case .int(let v): _ = advance(); return .literal(.int(v))
        case .double(let v): _ = advance(); return .literal(.double(v))
        default:
            throw err("unexpected \(describe(cur))", p)
        }
    }
    // Bracketed forms, each in its own function to keep parsePrimary's frame small.
    mutating func parseParenthesized() throws -> Expr {
        _ = advance()
        if isOp(")") { _ = advance(); return .list([]) }
        let e = try parseExpr()
        if isOp(",") {
            var items = [e]
            while isOp(",") { _ = advance(); if isOp(")") { break }; items.append(try parseExpr()) }
            try expectOp(")")
            return .list(items)
        }
        try expectOp(")")
        return e
    }
    mutating func parseList() throws -> Expr {
        _ = advance()
        var items: [Expr] = []
        while !isOp("]") {
            items.append(try parseExpr())
            if isOp(",") { _ = advance() } else { break }
        }
        try expectOp("]")
        return .list(items)
    }
    mutating func parseDict() throws -> Expr {
        _ = advance()
        var items: [(Expr, Expr)] = []
        while !isOp("}") {
            let k = try parseExpr(); try expectOp(":")
            items.append((k, try parseExpr()))
            if isOp(",") { _ = advance() } else { break }
        }
        try expectOp("}")
        return .dict(items)
    }
    mutating func parseArgs() throws -> ([Expr], [(String, Expr)]) {
        try expectOp("(")
        var args: [Expr] = [], kwargs: [(String, Expr)] = []
        while !isOp(")") {
            if case .name(let n) = cur, ti + 1 < toks.count, toks[ti + 1].tok == .op("=") {
                _ = advance(); _ = advance()
                kwargs.append((n, try parseExpr()))
            } else {
                if !kwargs.isEmpty { throw err("positional argument after keyword argument", curPos) }
                args.append(try parseExpr())
            }
            if isOp(",") { _ = advance() } else { break }
        }
        try expectOp(")")
        return (args, kwargs)
    }
    mutating func parsePostfix(_ base: Expr) throws -> Expr {
        let saved = depth; defer { depth = saved }
        var node = base
        while true {
            let p = curPos
            if isOp(".") || isOp("[") || isOp("(") { try nest() }
            if isOp(".") {
                _ = advance()
                switch cur {
                case .name(let n): _ = advance(); node = .attr(node, n, p)
                case .int(let i): _ = advance(); node = .item(node, .literal(.int(i)), p)
                default: throw err("expected attribute name after '.'", curPos)
                }
            } else if isOp("[") {
                node = try parseSubscript(node, p)
            } else if isOp("(") {
                let (a, k) = try parseArgs()
                node = .call(node, a, k, p)
            } else { return node }
        }
    }
    mutating func parseSubscript(_ node: Expr, _ p: Pos) throws -> Expr {
        _ = advance()
        var parts: [Expr?] = [nil]
        var isSlice = false
        while !isOp("]") {
            if isOp(":") { isSlice = true; _ = advance(); parts.append(nil); continue }
            if parts[parts.count - 1] != nil { throw err("expected ']'", curPos) }
            parts[parts.count - 1] = try parseExpr()
        }
        try expectOp("]")
        if isSlice {
            if parts.count > 3 { throw err("invalid slice", p) }
            while parts.count < 3 { parts.append(nil) }
            return .slice(node, parts[0], parts[1], parts[2], p)
        } else {
            guard let idx = parts[0] else { throw err("expected subscript expression", p) }
            return .item(node, idx, p)
        }
    }
    mutating func parseFilterExpr(_ base: Expr) throws -> Expr {
        let saved = depth; defer { depth = saved }
        var node = base
        while true {
            if isOp("|") || isName("is") || isOp("(") { try nest() }
            if isOp("|") {
                node = try parseFilter(node)
            } else if isName("is") {
                node = try parseTest(node)
            } else if isOp("(") {
                let p = curPos
                let (a, k) = try parseArgs()
                node = .call(node, a, k, p)
            } else { return node }
        }
    }
    mutating func parseFilter(_ node: Expr) throws -> Expr {
        _ = advance()
        let p = curPos
        let name = try expectName()
        guard knownFilters.contains(name) else { throw err("no filter named '\(name)'", p) }
        var a: [Expr] = [], k: [(String, Expr)] = []
        if isOp("(") { (a, k) = try parseArgs() }
        return .filter(node, name, a, k, p)
    }
    mutating func parseTest(_ node: Expr) throws -> Expr {
        _ = advance()
        var negated = false
        if isName("not") { _ = advance(); negated = true }
        let p = curPos
        var name: String
        switch cur {
        case .name(let n): name = n; _ = advance()
        case .op(let o) where ["==", "!=", "<", ">", "<=", ">="].contains(o): name = o; _ = advance()
        default: throw err("expected a test name", p)
        }
        if name == "none" || name == "None" { name = "none" }
        if name == "true" || name == "True" { name = "true" }
        if name == "false" || name == "False" { name = "false" }
        guard knownTests.contains(name) else { throw err("no test named '\(name)'", p) }
        var a: [Expr] = []
        if isOp("(") { (a, _) = try parseArgs() }
        else if startsPrimary() { a = [try parseUnary(withFilter: false)] }
        return .test(node, name, a, negated, p)
    }
    func startsPrimary() -> Bool {
        switch cur {
        case .string, .int, .double: return true
        case .name(let n): return !["and", "or", "else", "if", "in", "not", "is", "recursive"].contains(n)
        case .op(let o): return o == "[" || o == "{" || o == "-"
        case .end: return false
        }
    }
}
