import Foundation

final class Renderer {
    let root: Scope
    /// Every limit check goes through this (see `ChatTemplate.Limits`).
    let budget: Budget
    /// Scopes holding a macro, which holds the scope: cleared after the render to break the cycle.
    var macroScopes: [Scope] = []
    init(globals: [String: Value], budget: Budget) { root = Scope(parent: nil); root.vars = globals; self.budget = budget }
    deinit { for s in macroScopes { s.vars = [:] } }

    func fail(_ msg: String, _ p: Pos) -> ChatTemplateError { ChatTemplateError(message: msg, line: p.line, column: p.column) }

    // MARK: statements
    func run(_ nodes: [Node], _ scope: Scope, _ out: inout String) throws {
        for n in nodes { try exec(n, scope, &out) }
    }

    /// Like `eval`, only dispatches (see there), so nested blocks take little stack.
    func exec(_ node: Node, _ scope: Scope, _ out: inout String) throws {
        try budget.enter(node.pos)
        switch node {
        case .text(let t): try budget.emit(t, into: &out)
        case .output(let e, _): try budget.emit(try text(try eval(e, scope)), into: &out)
        case .ifs(let branches, let orElse):
            for (c, body) in branches where try eval(c, scope).truthy { try run(body, scope, &out); return }
            try run(orElse, scope, &out)
        case .loop: try execLoop(node, scope, &out)
        case .set: try execSet(node, scope)
        case .setBlock(let name, let body):
            var s = ""; try run(body, Scope(parent: scope), &s); scope.vars[name] = .string(s)
        case .macro(let name, let params, let body):
            scope.vars[name] = .callable(makeMacro(name, params, body, defScope: scope))
            macroScopes.append(scope)
        case .callBlock: try execCallBlock(node, scope, &out)
        case .breakLoop: throw Interrupt(isBreak: true)
        case .continueLoop: throw Interrupt(isBreak: false)
        }
    }

    func execLoop(_ node: Node, _ scope: Scope, _ out: inout String) throws {
        guard case .loop(let targets, let iterE, let filter, let body, let orElse, let pos) = node else { return }
        let seq = try iterate(try eval(iterE, scope), pos)
        var items: [Value] = []
        for item in seq {
            try budget.loopIteration()
            if let filter {
                let s = Scope(parent: scope); try bind(targets, item, s, pos)
                if !(try eval(filter, s).truthy) { continue }
            }
            items.append(item)
        }
        if items.isEmpty { try run(orElse, scope, &out); return }
        let n = items.count
        for (i, item) in items.enumerated() {
            let s = Scope(parent: scope)
            try bind(targets, item, s, pos)
            var keys = ["index", "index0", "revindex", "revindex0", "first", "last", "length", "depth", "depth0"]
            var d: [String: Value] = ["index": .int(i + 1), "index0": .int(i), "revindex": .int(n - i), "revindex0": .int(n - i - 1),
                                      "first": .bool(i == 0), "last": .bool(i == n - 1), "length": .int(n), "depth": .int(1), "depth0": .int(0)]
            if i > 0 { d["previtem"] = items[i - 1]; keys.append("previtem") }
            if i < n - 1 { d["nextitem"] = items[i + 1]; keys.append("nextitem") }
            d["cycle"] = .callable(Callable("cycle") { args, _, _ in args.isEmpty ? .undefined("cycle") : args[i % args.count] })
            keys.append("cycle")
            s.vars["loop"] = .object(keys, d)
            do { try run(body, s, &out) } catch let b as Interrupt {
                if b.isBreak { break } else { continue }
            }
        }
    }

    func execSet(_ node: Node, _ scope: Scope) throws {
        guard case .set(let name, let attr, let valueE, let pos) = node else { return }
        let v = try eval(valueE, scope)
        if let attr {
            guard case .namespace(let ns)? = scope.lookup(name) else {
                throw fail("cannot assign attribute on non-namespace object '\(name)'", pos)
            }
            try checkNamespaceValue(v, pos)
            ns.set(attr, v)
        } else {
            scope.vars[name] = v
        }
    }

    func execCallBlock(_ node: Node, _ scope: Scope, _ out: inout String) throws {
        guard case .callBlock(let call, let params, let body, let pos) = node,
              case .call(let fnE, let argEs, let kwEs, _) = call else { return }
        let caller = makeMacro("caller", params, body, defScope: scope)
        let fn = try eval(fnE, scope)
        let args = try argEs.map { try eval($0, scope) }
        var kw = try kwEs.map { ($0.0, try eval($0.1, scope)) }
        kw.append(("caller", .callable(caller)))
        try budget.emit(try text(try callValue(fn, args, kw, pos)), into: &out)
    }

    func nsGet(_ ns: Namespace, _ k: String) -> Value? { ns.vals[k] }

    /// A namespace attribute may hold anything but a namespace (directly or inside a list or dict),
    /// so namespaces never form cycles that printing would follow forever; its nesting is bounded.
    func checkNamespaceValue(_ v: Value, _ p: Pos) throws {
        func holdsNamespace(_ v: Value) -> Bool {
            switch v {
            case .namespace: return true
            case .array(let a): return a.contains(where: holdsNamespace)
            case .object(_, let d): return d.values.contains(where: holdsNamespace)
            default: return false
            }
        }
        try budget.checkNesting(CollectionOfOne(v))
        if holdsNamespace(v) { throw fail("a namespace attribute cannot hold a namespace", p) }
    }

    /// Python `str(v)`, refusing (before building it) text longer than the size limit.
    func text(_ v: Value) throws -> String {
        switch v {
        case .array, .object, .namespace:
            let limit = budget.limits.maxOutputBytes
            guard reprSizeBound(v, limit: limit) <= limit else { throw budget.tooLarge("string") }
            let s = pyStr(v)
            try budget.reserve(bytes: s.utf8.count)
            return s
        default: return pyStr(v)
        }
    }

    /// `sep.join(items)` (as text), its size checked before it is built.
    func join(_ items: [Value], _ sep: String) throws -> String {
        var parts: [String] = []
        var size = 0
        for item in items {
            let t = try text(item)
            size = satAdd(size, satAdd(t.utf8.count, parts.isEmpty ? 0 : sep.utf8.count))
            if size > budget.limits.maxOutputBytes { try budget.reserve(bytes: size) }
            parts.append(t)
        }
        try budget.reserve(bytes: size)
        return parts.joined(separator: sep)
    }

    func makeMacro(_ name: String, _ params: [(String, Expr?)], _ body: [Node], defScope: Scope) -> Callable {
        Callable(name) { [unowned self] args, kwargs, _ in
            try self.callMacro(name, params, body, defScope, args, kwargs)
        }
    }

    func callMacro(_ name: String, _ params: [(String, Expr?)], _ body: [Node], _ defScope: Scope,
                   _ args: [Value], _ kwargs: [(String, Value)]) throws -> Value {
        try budget.enterCall(name); defer { budget.leaveCall() }
        let s = Scope(parent: defScope)
        var extra: [Value] = []
        for (i, a) in args.enumerated() { if i < params.count { s.vars[params[i].0] = a } else { extra.append(a) } }
        var extraKw: [String] = [], extraKwD: [String: Value] = [:]
        for (k, v) in kwargs {
            if params.contains(where: { $0.0 == k }) || k == "caller" { s.vars[k] = v } else { extraKw.append(k); extraKwD[k] = v }
        }
        for (i, p) in params.enumerated() where s.vars[p.0] == nil && i >= args.count {
            s.vars[p.0] = try p.1.map { try eval($0, s) } ?? .undefined("parameter '\(p.0)' was not provided")
        }
        try budget.checkNesting(extra); try budget.checkNesting(extraKwD.values)
        s.vars["varargs"] = .array(extra)
        s.vars["kwargs"] = .object(extraKw, extraKwD)
        var o = ""
        try run(body, s, &o)
        return .string(o)
    }

    func bind(_ targets: [String], _ item: Value, _ s: Scope, _ pos: Pos) throws {
        if targets.count == 1 { s.vars[targets[0]] = item; return }
        let parts = try iterate(item, pos)
        guard parts.count == targets.count else {
            throw fail("cannot unpack \(parts.count) values into \(targets.count) loop variables", pos)
        }
        for (t, v) in zip(targets, parts) { s.vars[t] = v }
    }

    func iterate(_ v: Value, _ pos: Pos) throws -> [Value] {
        switch v {
        case .undefined: return []
        case .array(let a): return a
        case .object(let keys, _): return keys.map { .string($0) }
        case .string(let s):
            try budget.reserve(elements: s.unicodeScalars.count)
            return s.unicodeScalars.map { .string(String($0)) }
        case .namespace(let ns): return ns.keys.map { .string($0) }
        default: throw fail("'\(v.typeName)' object is not iterable", pos)
        }
    }

    // MARK: expressions
    /// Evaluation recurses through here once per tree level, so it only dispatches: the cases
    /// with many locals live in their own functions, keeping this frame small (a debug build
    /// gives every local of every case its own stack slot).
    func eval(_ e: Expr, _ scope: Scope) throws -> Value {
        try budget.enter(e.pos)
        switch e {
        case .literal(let t): return Value(t)
        case .name(let n, _): return scope.lookup(n) ?? undefinedName(n)
        case .list, .dict: return try evalCollection(e, scope)
        case .attr(let base, let name, let p): return try getAttr(try eval(base, scope), name, p)
        case .item(let base, let idx, let p): return try getItem(try eval(base, scope), try eval(idx, scope), p)
        case .slice: return try evalSlice(e, scope)
        case .call: return try evalCall(e, scope)
        case .filter, .test: return try evalFilterOrTest(e, scope)
        case .neg(let x, let p): return try negate(try eval(x, scope), p)
        case .not(let x): return .bool(!(try eval(x, scope).truthy))
        case .and(let l, let r):
            let lv = try eval(l, scope); return lv.truthy ? try eval(r, scope) : lv
        case .or(let l, let r):
            let lv = try eval(l, scope); return lv.truthy ? lv : try eval(r, scope)
        case .cond(let c, let t, let f):
            if try eval(c, scope).truthy { return try eval(t, scope) }
            guard let f else { return Value.undefined("the inline if-expression evaluated to false and no else section was defined") }
            return try eval(f, scope)
        case .binary(let op, let l, let r, let p):
            return try binary(op, try eval(l, scope), try eval(r, scope), p)
        }
    }

    func undefinedName(_ n: String) -> Value { .undefined("'\(n)' is undefined") }

    func evalCollection(_ e: Expr, _ scope: Scope) throws -> Value {
        if case .list(let items) = e {
            let vs = try items.map { try eval($0, scope) }
            try budget.reserve(elements: vs.count); try budget.checkNesting(vs)
            return .array(vs)
        }
        guard case .dict(let pairs) = e else { return .none }
        var keys: [String] = [], d: [String: Value] = [:]
        for (ke, ve) in pairs {
            let k = try text(try eval(ke, scope))
            if d[k] == nil { keys.append(k) }
            d[k] = try eval(ve, scope)
        }
        try budget.reserve(elements: keys.count); try budget.checkNesting(d.values)
        return .object(keys, d)
    }

    func evalSlice(_ e: Expr, _ scope: Scope) throws -> Value {
        guard case .slice(let base, let a, let b, let c, let p) = e else { return .none }
        let v = try eval(base, scope)
        func opt(_ x: Expr?) throws -> Int? {
            guard let x else { return nil }
            let r = try eval(x, scope)
            if case .none = r { return nil }
            guard let i = intLike(r) else { throw fail("slice indices must be integers", p) }
            return i
        }
        let step = try opt(c) ?? 1
        if step == 0 { throw fail("slice step cannot be zero", p) }
        let start = try opt(a), stop = try opt(b)
        switch v {
        case .array(let arr): return .array(sliceIndices(count: arr.count, start, stop, step).map { arr[$0] })
        case .string(let s):
            let sc = scalars(s)
            return .string(strOf(sliceIndices(count: sc.count, start, stop, step).map { sc[$0] }))
        case .undefined(let m): throw fail(m, p)
        default: throw fail("'\(v.typeName)' object is not subscriptable", p)
        }
    }

    func evalCall(_ e: Expr, _ scope: Scope) throws -> Value {
        guard case .call(let fnE, let argEs, let kwEs, let p) = e else { return .none }
        let args = try argEs.map { try eval($0, scope) }
        let kw = try kwEs.map { ($0.0, try eval($0.1, scope)) }
        if case .attr(let baseE, let method, let mp) = fnE {
            let base = try eval(baseE, scope)
            if let r = try callMethod(base, method, args, kw, mp) { return r }
        }
        return try callValue(try eval(fnE, scope), args, kw, p)
    }

    func evalFilterOrTest(_ e: Expr, _ scope: Scope) throws -> Value {
        switch e {
        case .filter(let base, let name, let argEs, let kwEs, let p):
            let v = try eval(base, scope)
            let args = try argEs.map { try eval($0, scope) }
            let kw = try kwEs.map { ($0.0, try eval($0.1, scope)) }
            return try applyFilter(name, v, args, kw, p)
        case .test(let base, let name, let argEs, let negated, let p):
            let v = try eval(base, scope)
            let args = try argEs.map { try eval($0, scope) }
            let r = try applyTest(name, v, args, p)
            return .bool(negated ? !r : r)
        default: return .none
        }
    }

    func negate(_ v: Value, _ p: Pos) throws -> Value {
        switch v {
        case .int(let i): return .int(try checked("unary -", (0).subtractingReportingOverflow(i)))
        case .double(let d): return .double(-d)
        case .bool(let b): return .int(b ? -1 : 0)
        case .undefined(let m): throw fail(m, p)
        default: throw fail("bad operand type for unary -: '\(v.typeName)'", p)
        }
    }

    func binary(_ op: String, _ a: Value, _ b: Value, _ p: Pos) throws -> Value {
        switch op {
        case "==": return .bool(pyEqual(a, b))
        case "!=": return .bool(!pyEqual(a, b))
        case "~":
            let x = try text(a), y = try text(b)
            try budget.reserve(bytes: satAdd(x.utf8.count, y.utf8.count))
            return .string(x + y)
        case "in": return .bool(try contains(b, a, p))
        default: break
        }
        if case .undefined(let m) = a { throw fail(m, p) }
        if case .undefined(let m) = b { throw fail(m, p) }
        switch op {
        case "<", ">", "<=", ">=":
            let c: Int
            if let x = numeric(a), let y = numeric(b) { c = x < y ? -1 : (x > y ? 1 : 0) }
            else if case .string(let x) = a, case .string(let y) = b {
                try budget.spend(1 + min(x.utf8.count, y.utf8.count) >> 10)
                c = x.unicodeScalars.lexicographicallyPrecedes(y.unicodeScalars) ? -1
                    : (y.unicodeScalars.lexicographicallyPrecedes(x.unicodeScalars) ? 1 : 0)
            } else { throw fail("'\(op)' not supported between instances of '\(a.typeName)' and '\(b.typeName)'", p) }
            switch op { case "<": return .bool(c < 0); case ">": return .bool(c > 0); case "<=": return .bool(c <= 0); default: return .bool(c >= 0) }
        case "+":
            switch (a, b) {
            case (.string(let x), .string(let y)):
                try budget.reserve(bytes: satAdd(x.utf8.count, y.utf8.count)); return .string(x + y)
            case (.array(let x), .array(let y)):
                try budget.reserve(elements: satAdd(x.count, y.count)); return .array(x + y)
            default: break
            }
        case "*":
            if case .string(let s) = a, let n = intLike(b) { return .string(try repeated(s, n)) }
            if case .string(let s) = b, let n = intLike(a) { return .string(try repeated(s, n)) }
            if case .array(let s) = a, let n = intLike(b) {
                try budget.reserve(elements: satMul(s.count, max(0, n)))
                return .array(Array((0..<max(0, n)).map { _ in s }.joined()))
            }
        default: break
        }
        guard numeric(a) != nil, numeric(b) != nil else {
            throw fail("unsupported operand type(s) for \(op): '\(a.typeName)' and '\(b.typeName)'", p)
        }
        if let x = intLike(a), let y = intLike(b) {
            switch op {
            case "+": return .int(try checked(op, x.addingReportingOverflow(y)))
            case "-": return .int(try checked(op, x.subtractingReportingOverflow(y)))
            case "*": return .int(try checked(op, x.multipliedReportingOverflow(by: y)))
            case "/": if y == 0 { throw fail("division by zero", p) }; return .double(Double(x) / Double(y))
            case "//": if y == 0 { throw fail("integer division or modulo by zero", p) }
                let q = try checked(op, x.dividedReportingOverflow(by: y))  // Int.min // -1
                return .int((x % y != 0 && (x < 0) != (y < 0)) ? q - 1 : q)
            case "%": if y == 0 { throw fail("integer division or modulo by zero", p) }
                if y == -1 { return .int(0) }  // Int.min % -1 overflows in Swift; Python gives 0
                let m = x % y; return .int(m != 0 && (m < 0) != (y < 0) ? m + y : m)
            case "**":
                if y < 0 { return .double(pow(Double(x), Double(y))) }
                var r = 1, base = x, e = y  // by squaring: O(log y), overflow is an error
                while e > 0 {
                    if e & 1 == 1 { r = try checked(op, r.multipliedReportingOverflow(by: base)) }
                    e >>= 1
                    if e > 0 { base = try checked(op, base.multipliedReportingOverflow(by: base)) }
                }
                return .int(r)
            default: break
            }
        }
        let x = numeric(a)!, y = numeric(b)!
        switch op {
        case "+": return .double(x + y)
        case "-": return .double(x - y)
        case "*": return .double(x * y)
        case "/": if y == 0 { throw fail("float division by zero", p) }; return .double(x / y)
        case "//": if y == 0 { throw fail("float divmod()", p) }; return .double((x / y).rounded(.down))
        case "%": if y == 0 { throw fail("float modulo", p) }; let m = x.truncatingRemainder(dividingBy: y); return .double(m != 0 && (m < 0) != (y < 0) ? m + y : m)
        case "**": return .double(pow(x, y))
        default: throw fail("unknown operator \(op)", p)
        }
    }

    func checked(_ op: String, _ r: (partialValue: Int, overflow: Bool)) throws -> Int {
        if r.overflow { throw budget.fail("integer overflow in '\(op)'") }
        return r.partialValue
    }

    /// A float truncated to an integer (Python `int(x)`); overflow is an error.
    func integer(_ d: Double) throws -> Int {
        guard let i = Int(exactly: d.rounded(.towardZero)) else { throw budget.fail("integer overflow in 'int'") }
        return i
    }

    /// `s * n` (Python: empty for n <= 0), its size checked first.
    func repeated(_ s: String, _ n: Int) throws -> String {
        try budget.reserve(bytes: satMul(s.utf8.count, max(0, n)))
        return String(repeating: s, count: max(0, n))
    }

    func contains(_ container: Value, _ v: Value, _ p: Pos) throws -> Bool {
        switch container {
        case .string(let s):
            guard case .string(let sub) = v else { throw fail("'in <string>' requires string as left operand, not \(v.typeName)", p) }
            return sub.isEmpty || ByteSearch(sub).firstMatch(in: Array(s.utf8)) != nil
        case .array(let a): return a.contains { pyEqual($0, v) }
        case .object(_, let d): if case .string(let k) = v { return d[k] != nil }; return false
        case .undefined: return false
        case .namespace(let ns): if case .string(let k) = v { return nsGet(ns, k) != nil }; return false
        default: throw fail("argument of type '\(container.typeName)' is not iterable", p)
        }
    }

    static let dictMethods: Set<String> = ["items", "keys", "values", "get"]
    static let strMethods: Set<String> = ["strip", "lstrip", "rstrip", "split", "startswith", "endswith", "upper", "lower",
                                          "title", "capitalize", "replace", "find", "count", "join", "format", "splitlines"]

    func getAttr(_ v: Value, _ name: String, _ p: Pos) throws -> Value {
        switch v {
        case .undefined(let m): throw fail(m, p)
        case .object(_, let d):
            if Renderer.dictMethods.contains(name) { return .callable(boundMethod(v, name)) }
            return d[name] ?? .undefined("'dict object' has no attribute '\(name)'")
        case .namespace(let ns): return nsGet(ns, name) ?? .undefined("'Namespace' object has no attribute '\(name)'")
        case .string where Renderer.strMethods.contains(name): return .callable(boundMethod(v, name))
        default: return .undefined("'\(v.typeName) object' has no attribute '\(name)'")
        }
    }

    func getItem(_ v: Value, _ idx: Value, _ p: Pos) throws -> Value {
        switch (v, idx) {
        case (.undefined(let m), _): throw fail(m, p)
        case (.array(let a), _):
            guard let i = intLike(idx) else { return .undefined("list indices must be integers") }
            let j = i < 0 ? i + a.count : i
            return j >= 0 && j < a.count ? a[j] : .undefined("list object has no element \(i)")
        case (.string(let s), _):
            guard let i = intLike(idx) else { return .undefined("string indices must be integers") }
            let sc = scalars(s); let j = i < 0 ? i + sc.count : i
            return j >= 0 && j < sc.count ? .string(String(sc[j])) : .undefined("str object has no element \(i)")
        case (.object(_, let d), .string(let k)):
            if let r = d[k] { return r }
            if Renderer.dictMethods.contains(k) { return .callable(boundMethod(v, k)) }
            return .undefined("'dict object' has no attribute '\(k)'")
        case (.namespace, .string(let k)): return try getAttr(v, k, p)
        default: return .undefined("'\(v.typeName) object' has no attribute '\(try text(idx))'")
        }
    }

    func boundMethod(_ base: Value, _ name: String) -> Callable {
        Callable(name) { [unowned self] args, kw, p in
            guard let r = try self.callMethod(base, name, args, kw, p) else { throw self.fail("'\(base.typeName)' has no method '\(name)'", p) }
            return r
        }
    }

    func str(_ v: Value?, _ what: String, _ p: Pos) throws -> String? {
        guard let v else { return nil }
        if case .none = v { return nil }
        guard case .string(let s) = v else { throw fail("\(what) must be a string, not \(v.typeName)", p) }
        return s
    }

    /// Python str/dict methods; nil when `base` has no such method (fall back to attribute call).
    func callMethod(_ base: Value, _ name: String, _ args: [Value], _ kw: [(String, Value)], _ p: Pos) throws -> Value? {
        switch base {
        case .string(let s):
            switch name {
            case "strip": return .string(pyStrip(s, try str(args.first, "strip arg", p), left: true, right: true))
            case "lstrip": return .string(pyStrip(s, try str(args.first, "lstrip arg", p), left: true, right: false))
            case "rstrip": return .string(pyStrip(s, try str(args.first, "rstrip arg", p), left: false, right: true))
            // Results at most a small constant times an input already within the limits are charged after.
            case "upper": return try charged(s.uppercased())
            case "lower": return try charged(s.lowercased())
            case "title": return try charged(pyTitle(s))
            case "capitalize": return try charged(pyCapitalize(s))
            case "split":
                let sep = try str(args.first ?? kw.first(where: { $0.0 == "sep" })?.1, "sep", p)
                let maxs = args.count > 1 ? intLike(args[1]) ?? -1 : (kw.first(where: { $0.0 == "maxsplit" }).flatMap { intLike($0.1) } ?? -1)
                let most = maxs < 0 ? Int.max : maxs
                try budget.reserve(elements: 1 + (sep.map { occurrences(of: $0, in: s, limit: most) } ?? min(most, wordCount(s))))
                return .array(pySplit(s, sep, maxs))
            case "splitlines":
                try budget.reserve(elements: occurrences(of: "\n", in: s) + 1)
                return .array(s.split(separator: "\n", omittingEmptySubsequences: false).map { .string(String($0)) }.dropLast(s.hasSuffix("\n") ? 1 : 0))
            case "startswith", "endswith":
                var cands: [String] = []
                if case .array(let a)? = args.first { cands = a.compactMap { if case .string(let x) = $0 { return x }; return nil } }
                else if let x = try str(args.first, name + " arg", p) { cands = [x] }
                return .bool(cands.contains { name == "startswith" ? s.unicodeScalars.starts(with: $0.unicodeScalars) : s.unicodeScalars.reversed().starts(with: $0.unicodeScalars.reversed()) })
            case "replace":
                guard args.count >= 2, let a = try str(args[0], "old", p), let b = try str(args[1], "new", p) else { throw fail("replace() takes 2 arguments", p) }
                return .string(try replaced(s, a, b, args.count > 2 ? intLike(args[2]) ?? -1 : -1))
            case "find":
                guard let sub = try str(args.first, "sub", p) else { throw fail("find() takes 1 argument", p) }
                let hay = Array(s.utf8)
                if sub.isEmpty { return .int(0) }
                guard let m = ByteSearch(sub).firstMatch(in: hay) else { return .int(-1) }
                return .int(hay[..<m].reduce(0) { $0 + ($1 & 0xC0 != 0x80 ? 1 : 0) })  // scalars before the match
            case "count":
                guard let sub = try str(args.first, "sub", p) else { throw fail("count() takes 1 argument", p) }
                return .int(sub.isEmpty ? s.unicodeScalars.count + 1 : occurrences(of: sub, in: s))
            case "join":
                guard let a = args.first else { throw fail("join() takes 1 argument", p) }
                return .string(try join(try iterate(a, p), s))
            default: return nil
            }
        case .object(let keys, let d):
            if name == "items" || name == "keys" || name == "values" { try budget.reserve(elements: keys.count) }
            switch name {
            case "items": return .array(keys.map { .array([.string($0), d[$0]!]) })
            case "keys": return .array(keys.map { .string($0) })
            case "values": return .array(keys.map { d[$0]! })
            case "get":
                guard let k = args.first else { throw fail("get() takes at least 1 argument", p) }
                if case .string(let ks) = k, let v = d[ks] { return v }
                return args.count > 1 ? args[1] : .none
            default: return nil
            }
        default: return nil
        }
    }

    func charged(_ s: String) throws -> Value {
        try budget.reserve(bytes: s.utf8.count)
        return .string(s)
    }

    /// Non-overlapping occurrences of `sub` in `s`, at most `limit` (none when `sub` is empty).
    func occurrences(of sub: String, in s: String, limit: Int = .max) -> Int {
        ByteSearch(sub).count(in: Array(s.utf8), limit: limit)
    }

    /// `s.replace(a, b, count)`, its size checked before it is built.
    func replaced(_ s: String, _ a: String, _ b: String, _ count: Int) throws -> String {
        if a.isEmpty { return s }
        let n = occurrences(of: a, in: s, limit: count < 0 ? .max : count)
        try budget.reserve(bytes: satAdd(s.utf8.count, satMul(n, max(0, b.utf8.count - a.utf8.count))))
        return pyReplace(s, a, b, count)
    }

    func pyReplace(_ s: String, _ a: String, _ b: String, _ count: Int) -> String {
        let hay = Array(s.utf8), with = Array(b.utf8), search = ByteSearch(a)
        var out: [UInt8] = [], last = 0
        search.forEachMatch(in: hay, limit: count < 0 ? .max : count) { m in
            out += hay[last..<m]; out += with; last = m + search.needle.count
        }
        return last == 0 && out.isEmpty ? s : String(decoding: out + hay[last...], as: UTF8.self)
    }

    func callValue(_ fn: Value, _ args: [Value], _ kw: [(String, Value)], _ p: Pos) throws -> Value {
        switch fn {
        case .callable(let c): return try c.fn(args, kw, p)
        case .undefined(let m): throw fail(m, p)
        default: throw fail("'\(fn.typeName)' object is not callable", p)
        }
    }
}
