import Foundation
import XCTest

@testable import WeftTokenizer

enum TestSupport {
    /// `Tests/Fixtures/<name>`, found relative to this source file. Tries the
    /// path as compiled and, failing that, with symlinks resolved (so the tests
    /// also run from a scratch package that links these directories).
    static func fixtureDirectory(_ name: String, filePath: String = #filePath) -> URL {
        let source = URL(fileURLWithPath: filePath)
        let candidates = [source, source.resolvingSymlinksInPath()].map {
            $0.deletingLastPathComponent().deletingLastPathComponent()
                .appendingPathComponent("Fixtures").appendingPathComponent(name)
        }
        for url in candidates where FileManager.default.fileExists(atPath: url.appendingPathComponent("tokenizer.json").path) {
            return url
        }
        return candidates[0]
    }

    static func tinyLlama() throws -> Tokenizer {
        try Tokenizer(directory: fixtureDirectory("tiny-llama"))
    }

    /// A fresh temporary directory, removed at the end of the test.
    static func temporaryDirectory(_ testCase: XCTestCase) throws -> URL {
        let url = FileManager.default.temporaryDirectory
            .appendingPathComponent("weft-tokenizer-tests-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        testCase.addTeardownBlock { try? FileManager.default.removeItem(at: url) }
        return url
    }

    /// Writes `object` as JSON to `directory/name`.
    static func writeJSON(_ object: Any, to directory: URL, name: String) throws {
        let data = try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])
        try data.write(to: directory.appendingPathComponent(name))
    }

    /// GPT-2's byte -> character table, written out independently of the module's.
    static let byteToCharacter: [UInt8: String] = {
        var bytes = Array(0x21...0x7E) + Array(0xA1...0xAC) + Array(0xAE...0xFF)
        var chars = bytes
        var n = 0
        for b in 0..<256 where !bytes.contains(b) {
            bytes.append(b)
            chars.append(256 + n)
            n += 1
        }
        var table: [UInt8: String] = [:]
        for (b, c) in zip(bytes, chars) { table[UInt8(b)] = String(Character(Unicode.Scalar(UInt32(c))!)) }
        return table
    }()

    /// The byte-level spelling of `text` (e.g. " world" -> "Ġworld").
    static func byteLevel(_ text: String) -> String {
        text.utf8.map { byteToCharacter[$0]! }.joined()
    }
}
