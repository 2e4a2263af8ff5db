import Foundation

extension Renderer {
    func kwarg(_ kw: [(String, Value)], _ name: String) -> Value? { kw.first { $0.0 == name }?.1 }
    func arg(_ args: [Value], _ kw: [(String, Value)], _ i: Int, _ name: String) -> Value? {
        i < args.count ? args[i] : kwarg(kw, name)
    }

    func applyFilter(_ name: String, _ v: Value, _ args: [Value], _ kw: [(String, Value)], _ p: Pos) throws -> Value {
        func s() throws -> String {
            if case .undefined = v, ["upper", "lower", "title", "capitalize", "trim", "replace", "indent", "string", "escape", "e"].contains(name) { return "" }
            return try text(v)
        }
        switch name {
        case "trim": return .string(pyStrip(try s(), try str(arg(args, kw, 0, "chars"), "chars", p), left: true, right: true))
        // Results at most a small constant times an input already within the limits are charged after.
        case "upper": return try charged(try s().uppercased())
        case "lower": return try charged(try s().lowercased())
        case "title": return try charged(pyTitle(try s()))
        case "capitalize": return try charged(pyCapitalize(try s()))
        case "string": return .string(try s())
        case "safe": return v
        case "escape", "e", "forceescape":
            var o = ""
            for c in try s() {
                switch c { case "&": o += "&amp;"; case "<": o += "&lt;"; case ">": o += "&gt;"; case "\"": o += "&#34;"; case "'": o += "&#39;"; default: o.append(c) }
            }
            return try charged(o)
        case "length", "count":
            switch v {
            case .string(let x): return .int(x.unicodeScalars.count)
            case .array(let a): return .int(a.count)
            case .object(let k, _): return .int(k.count)
            case .undefined: return .int(0)
            case .namespace(let ns): return .int(ns.keys.count)
            default: throw fail("object of type '\(v.typeName)' has no len()", p)
            }
        case "default", "d":
            let dv = arg(args, kw, 0, "default_value") ?? .string("")
            let boolean = arg(args, kw, 1, "boolean")?.truthy ?? false
            if v.isUndefined || (boolean && !v.truthy) { return dv }
            return v
        case "first":
            let items = try iterate(v, p); return items.first ?? .undefined("No first item, sequence was empty.")
        case "last":
            let items = try iterate(v, p); return items.last ?? .undefined("No last item, sequence was empty.")
        case "join":
            var items = try iterate(v, p)
            if let a = arg(args, kw, 1, "attribute") { items = try items.map { try getAttrOrItem($0, a, p) } }
            let sep = try arg(args, kw, 0, "d").map(text) ?? ""
            return .string(try join(items, sep))
        case "tojson":
            var indent: Int? = nil
            if let i = arg(args, kw, 0, "indent") { if case .none = i {} else { indent = intLike(i) } }
            var out = ""
            try toJSON(v, indent: indent, level: 0, pos: p, into: &out, limit: budget.limits.maxOutputBytes) { self.budget.tooLarge("string") }
            return try charged(out)
        case "int":
            let dflt = arg(args, kw, 0, "default") ?? .int(0)
            switch v {
            case .int: return v
            case .bool(let b): return .int(b ? 1 : 0)
            case .double(let d): return d.isFinite ? .int(try integer(d)) : dflt
            case .string(let x):
                let t = pyStrip(x, nil, left: true, right: true).replacingOccurrences(of: "_", with: "")
                if let i = Int(t) { return .int(i) }
                if let d = Double(t), d.isFinite { return .int(try integer(d)) }
                return dflt
            default: return dflt
            }
        case "float":
            let dflt = arg(args, kw, 0, "default") ?? .double(0)
            switch v {
            case .double: return v
            case .int(let i): return .double(Double(i))
            case .bool(let b): return .double(b ? 1 : 0)
            case .string(let x): return Double(pyStrip(x, nil, left: true, right: true)).map { .double($0) } ?? dflt
            default: return dflt
            }
        case "bool": return .bool(v.truthy)
        case "abs":
            switch v { case .int(let i): return .int(try checked("abs", i < 0 ? (0).subtractingReportingOverflow(i) : (i, false))); case .double(let d): return .double(abs(d)); default: throw fail("bad operand type for abs(): '\(v.typeName)'", p) }
        case "round":
            guard let d = numeric(v) else { throw fail("round requires a number", p) }
            let prec = arg(args, kw, 0, "precision").flatMap(intLike) ?? 0
            let method = try arg(args, kw, 1, "method").map(text) ?? "common"
            let f = pow(10.0, Double(prec))
            let r: Double = method == "ceil" ? (d * f).rounded(.up) / f : method == "floor" ? (d * f).rounded(.down) / f : (d * f).rounded(.toNearestOrAwayFromZero) / f
            return .double(r)
        case "list": return .array(try iterate(v, p))
        case "items":
            if case .object(let k, _) = v { try budget.reserve(elements: k.count) }
            if case .namespace(let ns) = v { try budget.reserve(elements: ns.keys.count) }
            switch v {
            case .object(let k, let d): return .array(k.map { .array([.string($0), d[$0]!]) })
            case .namespace(let ns): return .array(ns.keys.map { .array([.string($0), ns.vals[$0]!]) })
            case .undefined: return .array([])
            default: throw fail("items filter requires a mapping, got \(v.typeName)", p)
            }
        case "reverse":
            if case .string(let x) = v { return .string(String(String.UnicodeScalarView(x.unicodeScalars.reversed()))) }
            return .array(try iterate(v, p).reversed())
        case "unique":
            var out: [Value] = []
            for x in try iterate(v, p) {
                try budget.spend(out.count)  // quadratic: keep it under the deadline
                if !out.contains(where: { pyEqual($0, x) }) { out.append(x) }
            }
            return .array(out)
        case "sort", "dictsort":
            var items = try name == "dictsort" ? applyFilter("items", v, [], [], p).arrayValue : iterate(v, p)
            let reverse = arg(args, kw, name == "sort" ? 0 : 2, "reverse")?.truthy ?? false
            let attr = name == "sort" ? arg(args, kw, 2, "attribute") : nil
            var failure: ChatTemplateError?
            items.sort { a, b in
                if failure != nil { return false }
                do {
                    var x = a, y = b
                    if let attr { x = try getAttrOrItem(a, attr, p); y = try getAttrOrItem(b, attr, p) }
                    if name == "dictsort", case .array(let xa) = x, case .array(let ya) = y { x = xa[0]; y = ya[0] }
                    let lt = try binary("<", x, y, p).truthy
                    let gt = try binary(">", x, y, p).truthy
                    return reverse ? gt : lt
                } catch { failure = error as? ChatTemplateError; return false }
            }
            if let failure { throw failure }
            return .array(items)
        case "sum":
            var total: Value = arg(args, kw, 1, "start") ?? .int(0)
            let attr = arg(args, kw, 0, "attribute")
            for x in try iterate(v, p) { total = try binary("+", total, attr.map { try getAttrOrItem(x, $0, p) } ?? x, p) }
            return total
        case "min", "max":
            let items = try iterate(v, p)
            guard var best = items.first else { return .undefined("No aggregated item, sequence was empty.") }
            for x in items.dropFirst() where try binary(name == "min" ? "<" : ">", x, best, p).truthy { best = x }
            return best
        case "wordcount": return .int(wordCount(try s()))
        case "center":
            let w = arg(args, kw, 0, "width").flatMap(intLike) ?? 80
            let x = try s(); let n = x.unicodeScalars.count
            if n >= w { return .string(x) }
            try budget.reserve(bytes: satAdd(x.utf8.count, w - n))
            let left = (w - n) / 2 + ((w - n) & w & 1)
            return .string(String(repeating: " ", count: left) + x + String(repeating: " ", count: w - n - left))
        case "striptags": return .string(try s())
        case "replace":
            guard args.count >= 2 else { throw fail("replace filter takes 2 arguments", p) }
            return .string(try replaced(try s(), try text(args[0]), try text(args[1]), args.count > 2 ? intLike(args[2]) ?? -1 : (kwarg(kw, "count").flatMap(intLike) ?? -1)))
        case "indent":
            let widthV = arg(args, kw, 0, "width") ?? .int(4)
            let pad: String
            if case .string(let x) = widthV { pad = x } else { pad = try repeated(" ", intLike(widthV) ?? 4) }
            let first = arg(args, kw, 1, "first")?.truthy ?? false
            let blank = arg(args, kw, 2, "blank")?.truthy ?? false
            var text = try s()
            try budget.reserve(bytes: satAdd(text.utf8.count, satMul(occurrences(of: "\n", in: text) + 1, pad.utf8.count)))
            var lines = text.components(separatedBy: "\n")
            var trailing = ""
            if text.hasSuffix("\n") { trailing = "\n"; lines.removeLast() }
            guard !lines.isEmpty else { return .string(text) }
            for i in lines.indices where i > 0 || first {
                if blank || !lines[i].isEmpty { lines[i] = pad + lines[i] }
            }
            text = lines.joined(separator: "\n") + trailing
            return .string(text)
        case "selectattr", "rejectattr", "select", "reject":
            let isAttr = name.hasSuffix("attr")
            let keep = name.hasPrefix("select")
            var out: [Value] = []
            let attrV = isAttr ? args.first : nil
            if isAttr && attrV == nil { throw fail("\(name) requires an attribute name", p) }
            let testIdx = isAttr ? 1 : 0
            let testName = testIdx < args.count ? try text(args[testIdx]) : nil
            let testArgs = Array(args.dropFirst(testIdx + 1))
            if let t = testName, !knownTests.contains(t) { throw fail("no test named '\(t)'", p) }
            for item in try iterate(v, p) {
                let x = try attrV.map { try getAttrOrItem(item, $0, p) } ?? item
                let r = try testName.map { try applyTest($0, x, testArgs, p) } ?? x.truthy
                if r == keep { out.append(item) }
            }
            return .array(out)
        case "map":
            let items = try iterate(v, p)
            if let a = kwarg(kw, "attribute") {
                let dflt = kwarg(kw, "default")
                return .array(try items.map { x in
                    let r = try getAttrOrItem(x, a, p)
                    if r.isUndefined, let dflt { return dflt }
                    return r
                })
            }
            guard let f = args.first else { throw fail("map requires a filter name or attribute=", p) }
            let fname = try text(f)
            guard knownFilters.contains(fname) else { throw fail("no filter named '\(fname)'", p) }
            return .array(try items.map { try applyFilter(fname, $0, Array(args.dropFirst()), kw, p) })
        default: throw fail("no filter named '\(name)'", p)
        }
    }

    /// `attribute` lookup used by map/selectattr/sort: supports dotted paths and integer parts.
    func getAttrOrItem(_ v: Value, _ attr: Value, _ p: Pos) throws -> Value {
        if let i = intLike(attr) { return try getItem(v, .int(i), p) }
        var cur = v
        for part in try text(attr).split(separator: ".") {
            if let i = Int(part) { cur = try getItem(cur, .int(i), p) } else { cur = try getItem(cur, .string(String(part)), p) }
            if cur.isUndefined { return cur }
        }
        return cur
    }

    func applyTest(_ name: String, _ v: Value, _ args: [Value], _ p: Pos) throws -> Bool {
        func a0() throws -> Value { guard let x = args.first else { throw fail("test '\(name)' requires an argument", p) }; return x }
        switch name {
        case "defined": return !v.isUndefined
        case "undefined": return v.isUndefined
        case "none": if case .none = v { return true }; return false
        case "string": if case .string = v { return true }; return false
        case "boolean": if case .bool = v { return true }; return false
        case "true": if case .bool(true) = v { return true }; return false
        case "false": if case .bool(false) = v { return true }; return false
        case "integer": if case .int = v { return true }; return false
        case "float": if case .double = v { return true }; return false
        case "number": switch v { case .int, .double, .bool: return true; default: return false }
        case "mapping": switch v { case .object: return true; default: return false }
        case "iterable": switch v { case .string, .array, .object, .undefined, .namespace: return true; default: return false }
        case "sequence": switch v { case .string, .array, .object: return true; default: return false }
        case "callable": if case .callable = v { return true }; return false
        case "equalto", "eq", "==", "sameas": return pyEqual(v, try a0())
        case "ne", "!=": return !pyEqual(v, try a0())
        case "in": return try contains(try a0(), v, p)
        case "gt", ">", "greaterthan": return try binary(">", v, try a0(), p).truthy
        case "lt", "<", "lessthan": return try binary("<", v, try a0(), p).truthy
        case "ge", ">=": return try binary(">=", v, try a0(), p).truthy
        case "le", "<=": return try binary("<=", v, try a0(), p).truthy
        case "odd", "even":
            guard let i = intLike(v) else { throw fail("test '\(name)' requires an integer", p) }
            return (i % 2 != 0) == (name == "odd")
        case "divisibleby":
            guard let i = intLike(v), let d = intLike(try a0()), d != 0 else { throw fail("divisibleby requires non-zero integers", p) }
            return d == -1 || i % d == 0  // Int.min % -1 overflows
        case "lower": if case .string(let s) = v { return s == s.lowercased() }; return false
        case "upper": if case .string(let s) = v { return s == s.uppercased() }; return false
        case "escaped": return false
        case "filter": return knownFilters.contains(try text(v))
        case "test": return knownTests.contains(try text(v))
        default: throw fail("no test named '\(name)'", p)
        }
    }
}

extension Value {
    var arrayValue: [Value] { if case .array(let a) = self { return a }; return [] }
}
