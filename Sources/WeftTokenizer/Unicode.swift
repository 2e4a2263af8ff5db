import Foundation

// Character classes on Unicode code points, as used by the Oniguruma regexes
// of Hugging Face tokenizers (`\p{L}`, `\p{N}`, `\s`) and by Rust's `char`
// predicates.

enum CharClass {
    /// General category L* (`\p{L}`).
    static let letter: UInt8 = 1
    /// General category N* (`\p{N}`).
    static let number: UInt8 = 2
    /// White_Space (`\s` in Oniguruma and Rust regex, `char::is_whitespace`).
    static let space: UInt8 = 4
    /// `\r` or `\n`.
    static let newline: UInt8 = 8

    private static let asciiTable: [UInt8] = {
        var table = [UInt8](repeating: 0, count: 128)
        for c in 0..<128 {
            let s = Unicode.Scalar(UInt8(c))
            table[c] = slowClassify(s.value)
        }
        return table
    }()

    @inline(__always)
    static func classify(_ code: UInt32) -> UInt8 {
        if code < 128 { return asciiTable[Int(code)] }
        return slowClassify(code)
    }

    static func isWhitespace(_ code: UInt32) -> Bool {
        switch code {
        case 0x09...0x0D, 0x20, 0x85, 0xA0, 0x1680, 0x2000...0x200A, 0x2028, 0x2029, 0x202F, 0x205F, 0x3000:
            return true
        default:
            return false
        }
    }

    private static func slowClassify(_ code: UInt32) -> UInt8 {
        var result: UInt8 = 0
        if isWhitespace(code) { result |= space }
        if code == 0x0A || code == 0x0D { result |= newline }
        guard let scalar = Unicode.Scalar(code) else { return result }
        switch scalar.properties.generalCategory {
        case .uppercaseLetter, .lowercaseLetter, .titlecaseLetter, .modifierLetter, .otherLetter:
            result |= letter
        case .decimalNumber, .letterNumber, .otherNumber:
            result |= number
        default:
            break
        }
        return result
    }

    /// Rust regex `\w`: Alphabetic, marks, decimal numbers, connector punctuation, join controls.
    static func isWordCharacter(_ code: UInt32) -> Bool {
        guard let scalar = Unicode.Scalar(code) else { return false }
        let props = scalar.properties
        if props.isAlphabetic || props.isJoinControl { return true }
        switch props.generalCategory {
        case .nonspacingMark, .spacingMark, .enclosingMark, .decimalNumber, .connectorPunctuation:
            return true
        default:
            return false
        }
    }

    /// Rust `char::is_numeric`: general categories Nd, Nl, No.
    static func isNumeric(_ code: UInt32) -> Bool {
        classify(code) & number != 0
    }
}

// MARK: - UTF-8 helpers (input is always valid UTF-8 produced from a Swift String)

/// Decodes the scalar starting at `i`; returns the code point and its length in bytes.
@inline(__always)
func decodeScalar(_ bytes: UnsafeBufferPointer<UInt8>, _ i: Int) -> (UInt32, Int) {
    let b0 = UInt32(bytes[i])
    if b0 < 0x80 { return (b0, 1) }
    if b0 < 0xE0 {
        return ((b0 & 0x1F) << 6 | UInt32(bytes[i + 1] & 0x3F), 2)
    }
    if b0 < 0xF0 {
        return ((b0 & 0x0F) << 12 | UInt32(bytes[i + 1] & 0x3F) << 6 | UInt32(bytes[i + 2] & 0x3F), 3)
    }
    return (
        (b0 & 0x07) << 18 | UInt32(bytes[i + 1] & 0x3F) << 12 | UInt32(bytes[i + 2] & 0x3F) << 6
            | UInt32(bytes[i + 3] & 0x3F), 4
    )
}

/// Length of a UTF-8 sequence from its lead byte.
@inline(__always)
func utf8Length(lead: UInt8) -> Int {
    if lead < 0x80 { return 1 }
    if lead < 0xE0 { return 2 }
    if lead < 0xF0 { return 3 }
    return 4
}

/// Code points of a valid UTF-8 buffer, with the byte offset of each, plus a
/// final sentinel offset equal to `bytes.count`.
struct ScalarTable {
    var codes: [UInt32] = []
    var offsets: [Int] = []

    init(_ bytes: [UInt8]) {
        codes.reserveCapacity(bytes.count)
        offsets.reserveCapacity(bytes.count + 1)
        bytes.withUnsafeBufferPointer { buf in
            var i = 0
            while i < buf.count {
                let (code, len) = decodeScalar(buf, i)
                codes.append(code)
                offsets.append(i)
                i += len
            }
        }
        offsets.append(bytes.count)
    }
}

/// Returns true if `haystack[at...]` starts with `needle`.
@inline(__always)
func bytesMatch(_ haystack: [UInt8], at: Int, _ needle: [UInt8]) -> Bool {
    if at + needle.count > haystack.count { return false }
    var k = 0
    while k < needle.count {
        if haystack[at + k] != needle[k] { return false }
        k += 1
    }
    return true
}

/// Non-overlapping, leftmost occurrences of `needle` in `haystack` (byte ranges).
func findOccurrences(of needle: [UInt8], in haystack: [UInt8]) -> [Range<Int>] {
    guard !needle.isEmpty, needle.count <= haystack.count else { return [] }
    var result: [Range<Int>] = []
    let first = needle[0]
    var i = 0
    let last = haystack.count - needle.count
    while i <= last {
        if haystack[i] == first && bytesMatch(haystack, at: i, needle) {
            result.append(i..<(i + needle.count))
            i += needle.count
        } else {
            i += 1
        }
    }
    return result
}

/// Replaces every non-overlapping occurrence of `needle` by `replacement`.
func replaceOccurrences(of needle: [UInt8], with replacement: [UInt8], in haystack: [UInt8]) -> [UInt8] {
    let ranges = findOccurrences(of: needle, in: haystack)
    if ranges.isEmpty { return haystack }
    var out: [UInt8] = []
    out.reserveCapacity(haystack.count + ranges.count * max(0, replacement.count - needle.count))
    var last = 0
    for r in ranges {
        out.append(contentsOf: haystack[last..<r.lowerBound])
        out.append(contentsOf: replacement)
        last = r.upperBound
    }
    out.append(contentsOf: haystack[last...])
    return out
}
