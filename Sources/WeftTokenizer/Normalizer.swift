import Foundation

/// The supported normalizers. They operate on UTF-8 bytes.
indirect enum Normalizer: Sendable {
    case nfc, nfd, nfkc, nfkd
    case lowercase
    case strip(left: Bool, right: Bool)
    case prepend([UInt8])
    case replace(pattern: TextPattern, content: [UInt8])
    case sequence([Normalizer])

    static let supported = "NFC, NFD, NFKC, NFKD, Lowercase, Strip, Prepend, Replace, Sequence"

    static func parse(_ node: JSONNode) throws -> Normalizer? {
        if node.isNull { return nil }
        let type = try node["type"].string()
        switch type {
        case "NFC": return .nfc
        case "NFD": return .nfd
        case "NFKC": return .nfkc
        case "NFKD": return .nfkd
        case "Lowercase": return .lowercase
        case "Strip":
            return .strip(
                left: try node["strip_left"].bool(default: true), right: try node["strip_right"].bool(default: true))
        case "Prepend":
            return .prepend(Array(try node["prepend"].string().utf8))
        case "Replace":
            return .replace(
                pattern: try TextPattern.parse(node["pattern"]), content: Array(try node["content"].string().utf8))
        case "Sequence":
            let items = try node["normalizers"].array()
            return .sequence(try items.map { item in
                guard let n = try parse(item) else { throw item.error("expected a normalizer") }
                return n
            })
        default:
            throw node["type"].error(
                "unsupported normalizer \(type.debugDescription) (supported: \(supported))", kind: .unsupported)
        }
    }

    func apply(_ bytes: [UInt8]) -> [UInt8] {
        switch self {
        case .nfc:
            return Array(String(decoding: bytes, as: UTF8.self).precomposedStringWithCanonicalMapping.utf8)
        case .nfd:
            return Array(String(decoding: bytes, as: UTF8.self).decomposedStringWithCanonicalMapping.utf8)
        case .nfkc:
            return Array(String(decoding: bytes, as: UTF8.self).precomposedStringWithCompatibilityMapping.utf8)
        case .nfkd:
            return Array(String(decoding: bytes, as: UTF8.self).decomposedStringWithCompatibilityMapping.utf8)
        case .lowercase:
            // Per code point, like Rust's `char::to_lowercase` (no context-sensitive rules).
            var out: [UInt8] = []
            out.reserveCapacity(bytes.count)
            for scalar in String(decoding: bytes, as: UTF8.self).unicodeScalars {
                if scalar.isASCII {
                    let v = UInt8(scalar.value)
                    out.append(v >= 0x41 && v <= 0x5A ? v + 0x20 : v)
                } else {
                    out.append(contentsOf: scalar.properties.lowercaseMapping.utf8)
                }
            }
            return out
        case .strip(let left, let right):
            let table = ScalarTable(bytes)
            var lo = 0
            var hi = table.codes.count
            if left { while lo < hi && CharClass.isWhitespace(table.codes[lo]) { lo += 1 } }
            if right { while hi > lo && CharClass.isWhitespace(table.codes[hi - 1]) { hi -= 1 } }
            return Array(bytes[table.offsets[lo]..<table.offsets[hi]])
        case .prepend(let prefix):
            return bytes.isEmpty ? bytes : prefix + bytes
        case .replace(let pattern, let content):
            return pattern.replace(in: bytes, with: content)
        case .sequence(let items):
            var current = bytes
            for item in items { current = item.apply(current) }
            return current
        }
    }
}
