/// The effect of a post-processor on a single sequence: ids placed before and after it.
struct PostProcessor: Sendable, Equatable {
    var prefix: [Int] = []
    var suffix: [Int] = []

    static let supported = "TemplateProcessing, ByteLevel, BertProcessing, RobertaProcessing, Sequence"

    func apply(_ ids: [Int]) -> [Int] {
        if prefix.isEmpty && suffix.isEmpty { return ids }
        return prefix + ids + suffix
    }

    /// `self` applied to the output of `inner`.
    func wrapping(_ inner: PostProcessor) -> PostProcessor {
        PostProcessor(prefix: prefix + inner.prefix, suffix: inner.suffix + suffix)
    }

    static func parse(_ node: JSONNode) throws -> PostProcessor? {
        if node.isNull { return nil }
        let type = try node["type"].string()
        switch type {
        case "ByteLevel":
            return PostProcessor()
        case "TemplateProcessing":
            return try parseTemplate(node)
        case "BertProcessing", "RobertaProcessing":
            return PostProcessor(prefix: [try pairID(node["cls"])], suffix: [try pairID(node["sep"])])
        case "Sequence":
            var result = PostProcessor()
            for item in try node["processors"].array() {
                if let p = try parse(item) { result = p.wrapping(result) }
            }
            return result
        default:
            throw node["type"].error(
                "unsupported post-processor \(type.debugDescription) (supported: \(supported))", kind: .unsupported)
        }
    }

    /// `["[CLS]", 101]` -> 101.
    private static func pairID(_ node: JSONNode) throws -> Int {
        let items = try node.array()
        guard items.count == 2 else { throw node.error("expected [token, id]") }
        return try items[1].int()
    }

    private static func parseTemplate(_ node: JSONNode) throws -> PostProcessor {
        // special_tokens: { name: { "id": name, "ids": [..], "tokens": [..] } }
        var specials: [String: [Int]] = [:]
        let specialNode = node["special_tokens"]
        if !specialNode.isNull {
            for entry in try specialNode.objectEntries() {
                let child = specialNode.child(key: entry.key, value: entry.value)
                specials[entry.key] = try child["ids"].array().map { try $0.int() }
            }
        }
        var result = PostProcessor()
        var seenSequence = false
        for item in try node["single"].array() {
            if item["SpecialToken"].exists {
                let name = try item["SpecialToken"]["id"].string()
                // Dictionary lookup by exact code points.
                guard let ids = specials.first(where: { $0.key.unicodeScalars.elementsEqual(name.unicodeScalars) })?.value
                else {
                    throw item["SpecialToken"]["id"].error(
                        "special token \(name.debugDescription) is not in post_processor.special_tokens")
                }
                if seenSequence { result.suffix += ids } else { result.prefix += ids }
            } else if item["Sequence"].exists {
                let id = try item["Sequence"]["id"].string()
                guard id == "A" else {
                    throw item["Sequence"]["id"].error("a single-sequence template can only refer to sequence \"A\"")
                }
                guard !seenSequence else { throw item.error("sequence \"A\" appears twice") }
                seenSequence = true
            } else {
                throw item.error(#"expected {"SpecialToken": ...} or {"Sequence": ...}"#)
            }
        }
        guard seenSequence else { throw node["single"].error("template has no sequence \"A\"") }
        return result
    }
}
