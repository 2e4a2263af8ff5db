import Foundation
import XCTest
@testable import WeftChatTemplate

// A chat template comes with a downloaded model: whatever it does, rendering must end in a
// ChatTemplateError naming the limit, not a trap, a stack overflow, a hang or gigabytes of memory.
// Without the limits, most of these cases trap (overflow, stack) or run for minutes.

private func render(_ src: String, _ ctx: [String: TemplateValue] = [:], limits: ChatTemplate.Limits = .default) throws -> String {
    try ChatTemplate(src, limits: limits).render(ctx, limits: limits)
}

/// The error message `src` fails with (parse or render), or nil when it renders.
private func failure(_ src: String, _ ctx: [String: TemplateValue] = [:], limits: ChatTemplate.Limits = .default) -> String? {
    do { _ = try render(src, ctx, limits: limits); return nil } catch let e as ChatTemplateError { return e.message } catch { return "\(error)" }
}

private func assertFails(_ src: String, _ ctx: [String: TemplateValue] = [:], limits: ChatTemplate.Limits = .default,
                         containing expected: String, file: StaticString = #filePath, line: UInt = #line) {
    guard let msg = failure(src, ctx, limits: limits) else { return XCTFail("rendered without error: \(src.prefix(80))", file: file, line: line) }
    XCTAssertTrue(msg.contains(expected), "'\(msg)' does not contain '\(expected)'", file: file, line: line)
}

private final class Box<T>: @unchecked Sendable { var value: T?; init() {} }

/// Runs `body` on a thread with a 512 KiB stack (a stack overflow there crashes the test run).
private func onSmallStack<T>(_ body: @escaping () -> T) -> T? {
    let box = Box<T>(), done = DispatchSemaphore(value: 0)
    nonisolated(unsafe) let body = body
    let thread = Thread { box.value = body(); done.signal() }
    thread.stackSize = 512 << 10
    thread.start()
    done.wait()
    return box.value
}

private let maxDepth = ChatTemplate.Limits.default.maxNestingDepth
private let intMax = "9223372036854775807", intMin = "(-9223372036854775807 - 1)"

final class IntegerOverflowTests: XCTestCase {
    func testArithmeticOverflowIsAnError() {
        assertFails("{{ \(intMax) + 1 }}", containing: "integer overflow in '+'")
        assertFails("{{ \(intMin) - 1 }}", containing: "integer overflow in '-'")
        assertFails("{{ \(intMax) * 2 }}", containing: "integer overflow in '*'")
        assertFails("{{ \(intMin) // -1 }}", containing: "integer overflow in '//'")
        assertFails("{{ -\(intMin) }}", containing: "integer overflow in 'unary -'")
        assertFails("{{ \(intMin)|abs }}", containing: "integer overflow in 'abs'")
        assertFails("{{ 2 ** 63 }}", containing: "integer overflow in '**'")
        assertFails("{{ 3 ** 100000000000 }}", containing: "integer overflow in '**'")
        assertFails("{{ 1e300|int }}", containing: "integer overflow in 'int'")
        assertFails("{{ '1e300'|int }}", containing: "integer overflow in 'int'")
        assertFails("{{ [1, \(intMax)]|sum }}", containing: "integer overflow in '+'")
    }

    func testEdgeResultsStillComputed() throws {
        XCTAssertEqual(try render("{{ \(intMin) % -1 }} {{ 7 % -1 }} {{ \(intMin) // 1 }} {{ \(intMax) + 0 }} {{ -\(intMax) }}"),
                       "0 0 -9223372036854775808 9223372036854775807 -9223372036854775807")
        XCTAssertEqual(try render("{{ 2 ** 62 }} {{ (-2) ** 63 }} {{ 1 ** \(intMax) }} {{ (-1) ** \(intMax) }} {{ 0 ** \(intMax) }} {{ 2 ** -1 }}"),
                       "4611686018427387904 -9223372036854775808 1 -1 0 0.5")
        XCTAssertEqual(try render("{{ \(intMin) is divisibleby(-1) }} {{ 9 is divisibleby(-3) }}"), "True True")
    }

    func testRangeSliceAndIndexArithmetic() throws {
        assertFails("{{ range(-\(intMax), \(intMax))|length }}", containing: "list exceeds the size limit")
        assertFails("{{ range(\(intMin), \(intMax), 2)|length }}", containing: "list exceeds the size limit")
        XCTAssertEqual(try render("{{ range(\(intMax) - 1, \(intMax), 5)|list }}"), "[9223372036854775806]")
        XCTAssertEqual(try render("{{ range(\(intMin), \(intMax), \(intMax))|list }}"), "[-9223372036854775808, -1, 9223372036854775806]")
        XCTAssertEqual(try render("{{ range(\(intMax), \(intMin), \(intMin))|list }}"), "[9223372036854775807, -1]")
        XCTAssertEqual(try render("{{ [1, 2, 3][1::\(intMax)] }}{{ 'abc'[2::\(intMax)] }}{{ 'abc'[::\(intMin)] }}{{ [1, 2, 3][\(intMin):\(intMax)] }}"),
                       "[2]cc[1, 2, 3]")
        XCTAssertEqual(try render("[{{ [1, 2][\(intMin)] }}{{ 'ab'[\(intMin)] }}{{ 'ab'[\(intMax)] }}]"), "[]")
    }

    func testRepetitionCounts() throws {
        assertFails("{{ 'x' * \(intMax) }}", containing: "string exceeds the size limit")
        assertFails("{{ \(intMax) * 'ab' }}", containing: "string exceeds the size limit")
        assertFails("{{ [1, 2] * \(intMax) }}", containing: "list exceeds the size limit")
        XCTAssertEqual(try render("[{{ 'ab' * -3 }}{{ [1] * \(intMin) }}]"), "[[]]")
    }
}

final class ResourceLimitTests: XCTestCase {
    func testHugeStringsAreRefusedBeforeBuilding() {
        assertFails("{{ 'x' * 100000000 }}", containing: "string exceeds the size limit of 8388608 bytes (Limits.maxOutputBytes)")
        assertFails("{% set s = 'x' * 8000000 %}{{ s ~ s }}", containing: "string exceeds the size limit")
        assertFails("{% set s = 'x' * 8000000 %}{{ s + s }}", containing: "string exceeds the size limit")
        assertFails("{{ (['x' * 1000000] * 100)|join }}", containing: "string exceeds the size limit")
        assertFails("{{ ''.join(['x' * 1000000] * 100) }}", containing: "string exceeds the size limit")
        assertFails("{{ ['x' * 1000000] * 100 }}", containing: "string exceeds the size limit")
        assertFails("{{ (['x' * 1000000] * 100)|tojson }}", containing: "string exceeds the size limit")
        assertFails("{{ [1, [2]]|tojson(indent=\(intMax)) }}", containing: "string exceeds the size limit")
        assertFails("{{ ('a' * 1000000)|replace('a', 'bbbbbbbbbb') }}", containing: "string exceeds the size limit")
        assertFails("{{ ('a' * 1000000).replace('a', 'bbbbbbbbbb') }}", containing: "string exceeds the size limit")
        assertFails("{{ 'a\nb'|indent(\(intMax)) }}", containing: "string exceeds the size limit")
        assertFails("{{ ('\n' * 1000000)|indent(100, true, true) }}", containing: "string exceeds the size limit")
        assertFails("{{ 'a'|center(\(intMax)) }}", containing: "string exceeds the size limit")
        assertFails("{{ ('a ' * 4000000).split()|length }}", containing: "list exceeds the size limit")
        assertFails("{{ ('a,' * 4000000).split(',')|length }}", containing: "list exceeds the size limit")
        assertFails("{{ ('x' * 4000000)|list|length }}", containing: "list exceeds the size limit")
    }

    func testPythonEdgeCasesOfThoseOperations() throws {
        XCTAssertEqual(try render("{{ [1]|tojson(indent=-1) }}|{{ 'a\nb'|indent(-3) }}|{{ ('ab' * 3).count('ab') }}|{{ 'a b  c'|wordcount }}"),
                       "[\n1\n]|a\nb|3|3")
        XCTAssertEqual(try render("{{ 'a b c'.split(none, 1) }}{{ 'a,b,c'.split(',', 1) }}{{ 'x\ny\n'.splitlines() }}"),
                       "['a', 'b c']['a', 'b,c']['x', 'y']")
    }

    func testLoopIterationLimit() {
        XCTAssertEqual(ChatTemplate.Limits.default.maxLoopIterations, 1_000_000)
        var limits = ChatTemplate.Limits.default
        limits.maxLoopIterations = 100_000  // the default takes a couple of seconds to reach in a debug build
        assertFails("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}", limits: limits,
                    containing: "loop iteration limit 100000 exceeded (Limits.maxLoopIterations)")
        limits.maxLoopIterations = 10
        XCTAssertEqual(failure("{% for i in range(10) %}{% endfor %}", limits: limits), nil)
        assertFails("{% for i in range(11) %}{% endfor %}", limits: limits, containing: "loop iteration limit 10 exceeded")
    }

    func testOutputLimit() {
        var limits = ChatTemplate.Limits.default
        limits.maxOutputBytes = 1000
        let xs: [String: TemplateValue] = ["xs": .array((0..<100).map { .int($0) }), "ys": .array((0..<101).map { .int($0) })]
        XCTAssertEqual(try? render("{% for i in xs %}0123456789{% endfor %}", xs, limits: limits).count, 1000)
        assertFails("{% for i in xs %}0123456789{% endfor %}!", xs, limits: limits, containing: "output exceeds 1000 bytes (Limits.maxOutputBytes)")
        assertFails("{% set s %}{% for i in ys %}0123456789{% endfor %}{% endset %}", xs, limits: limits, containing: "output exceeds 1000 bytes")
        assertFails("{% macro m() %}{{ 'x' * 600 }}{{ 'x' * 600 }}{% endmacro %}{% set y = m() %}", limits: limits, containing: "output exceeds 1000 bytes")
    }

    func testTotalAllocationLimit() {
        // Each string is small enough, but keeping a thousand of them would take a gigabyte.
        assertFails("{% set ns = namespace(l=[]) %}{% for i in range(1000) %}{% set ns.l = ns.l + ['x' * 1000000 ~ i] %}{% endfor %}",
                    containing: "render built more than 67108864 bytes in total (Limits.maxAllocatedBytes)")
        assertFails("{% set ns = namespace(s='x') %}{% for i in range(100) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}",
                    containing: "Limits.max")
    }

    func testDeadline() {
        var limits = ChatTemplate.Limits.default
        limits.timeout = .seconds(-1)  // already past: the first check fails
        assertFails("{{ 1 }}", limits: limits, containing: "render exceeded the time limit")
        // 10^12 iterations with the iteration limit lifted: only the deadline can stop it.
        limits.timeout = .milliseconds(100)
        limits.maxLoopIterations = .max
        assertFails(Self.endless, limits: limits, containing: "render exceeded the time limit of 0.1 seconds (Limits.timeout)")
        assertFails("{{ range(250000)|unique|length }}", limits: limits, containing: "time limit")
    }

    private static let endless = "{% for i in range(1000) %}{% for j in range(1000) %}{% for k in range(1000) %}{% for l in range(1000) %}"
        + "{{ '' }}{% endfor %}{% endfor %}{% endfor %}{% endfor %}"
    private static let noLimits = ChatTemplate.Limits(maxLoopIterations: .max, timeout: .seconds(60))

    func testShouldCancelStopsRender() throws {
        let t = try ChatTemplate(Self.endless)
        let calls = Box<Int>(); calls.value = 0
        XCTAssertThrowsError(try t.render([:], limits: Self.noLimits, shouldCancel: { calls.value! += 1; return calls.value! > 3 })) { e in
            XCTAssertEqual((e as? ChatTemplateError)?.message, "render cancelled")
        }
        XCTAssertEqual(calls.value, 4)
    }

    func testTaskCancellationStopsRender() async throws {
        let t = try ChatTemplate(Self.endless)
        let limits = Self.noLimits
        let task = Task.detached { [t, limits] in try t.render([:], limits: limits) }
        task.cancel()
        let result = await task.result
        XCTAssertEqual(((try? result.get()) == nil ? "" : "rendered"), "")
        if case .failure(let e) = result { XCTAssertEqual((e as? ChatTemplateError)?.message, "render cancelled") }
    }

    func testValueNestingAndNamespaceCycles() {
        assertFails("{% set ns = namespace(x=1) %}{% for i in range(100000) %}{% set ns.x = [ns.x] %}{% endfor %}{{ ns.x }}",
                    containing: "lists and dicts nested deeper than \(maxDepth) (Limits.maxNestingDepth)")
        assertFails("{% set ns = namespace(x=1) %}{% for i in range(100000) %}{% set ns.x = {'a': ns.x} %}{% endfor %}{{ ns.x }}",
                    containing: "nested deeper than \(maxDepth)")
        assertFails("{% set ns = namespace(x=1) %}{% for i in range(100000) %}{% set ns.x = dict(a=ns.x) %}{% endfor %}{{ ns.x }}",
                    containing: "nested deeper than \(maxDepth)")
        assertFails("{% macro m() %}{% if varargs|length %}{{ m(varargs) }}{% endif %}{% endmacro %}{{ m(1) }}", containing: "Limits.max")
        assertFails("{% set ns = namespace() %}{% set ns.me = ns %}{{ ns }}", containing: "a namespace attribute cannot hold a namespace")
        assertFails("{% set ns = namespace() %}{% set ns.l = [1, {'a': ns}] %}{{ ns|tojson }}", containing: "cannot hold a namespace")
        assertFails("{% set ns = namespace() %}{% set o = namespace(x=ns) %}", containing: "cannot hold a namespace")
        XCTAssertEqual(try render("{% set ns = namespace(a=[1]) %}{% set ns.a = ns.a + [{'b': 2}] %}{{ ns.a }}"), "[1, {'b': 2}]")
    }
}

final class NestingDepthTests: XCTestCase {
    /// Templates wrapping an inner expression in `k` levels of one construct: `k + 1` nesting
    /// levels, except that a call or subscript argument costs two (one for the postfix chain, one
    /// for the expression inside), so those get `k / 2`.
    static func nested(_ k: Int) -> [(String, String)] {
        func rep(_ s: String, _ n: Int) -> String { String(repeating: s, count: n) }
        return [
            ("parentheses", "{{ " + rep("(", k) + "1" + rep(")", k) + " }}"),
            ("brackets", "{{ " + rep("[", k) + "1" + rep("]", k) + " }}"),
            ("braces", "{{ " + rep("{'a': ", k) + "1" + rep("}", k) + " }}"),
            ("call arguments", "{{ " + rep("f(", k / 2) + "1" + rep(")", k / 2) + " }}"),
            ("subscripts", "{{ x" + rep("[x", k / 2) + rep("]", k / 2) + " }}"),
            ("not chain", "{{ " + rep("not ", k) + "1 }}"),
            ("minus chain", "{{ " + rep("- ", k) + "1 }}"),
            ("plus operators", "{{ 1" + rep(" + 1", k) + " }}"),
            ("concatenation", "{{ 'a'" + rep(" ~ 'a'", k) + " }}"),
            ("and chain", "{{ 1" + rep(" and 1", k) + " }}"),
            ("comparisons", "{{ 1" + rep(" == 1", k) + " }}"),
            ("filters", "{{ 'a'" + rep("|trim", k) + " }}"),
            ("tests", "{{ 1" + rep(" is number", k) + " }}"),
            ("attributes", "{{ x" + rep(".a", k) + " }}"),
            ("calls", "{{ x" + rep("()", k) + " }}"),
            ("conditional expressions", "{{ 1" + rep(" if 1 else 1", k) + " }}"),
            ("if blocks", rep("{% if 1 %}", k) + "{{ 1 }}" + rep("{% endif %}", k)),
            ("for blocks", rep("{% for a in x %}", k) + "{{ 1 }}" + rep("{% endfor %}", k)),
            ("macro blocks", rep("{% macro m() %}", k) + "{{ 1 }}" + rep("{% endmacro %}", k)),
        ]
    }

    /// Parse results (nil: parsed) for every construct at nesting `k + 1`, on a 512 KiB stack.
    static func parseOnSmallStack(_ k: Int) -> [String: String?] {
        onSmallStack {
            var r: [String: String?] = [:]
            for (name, src) in nested(k) {
                do { _ = try ChatTemplate(src); r[name] = .some(nil) } catch let e as ChatTemplateError { r[name] = e.message } catch { r[name] = "\(error)" }
            }
            return r
        } ?? [:]
    }

    func testDepthAtLimitParsesAndOneMoreFails() {
        let atLimit = Self.parseOnSmallStack(maxDepth - 1)
        XCTAssertEqual(atLimit.count, 19)
        for (name, err) in atLimit { XCTAssertNil(err, name) }
        for (name, err) in Self.parseOnSmallStack(maxDepth) {
            XCTAssertEqual(err, "template nesting exceeds \(maxDepth) levels (Limits.maxNestingDepth)", name)
        }
    }

    func testVeryDeepFailsCleanlyOnSmallStack() {
        // 20 000 levels of each construct (the lexer makes 100 000 of all of them slow in a debug build) ...
        let results = Self.parseOnSmallStack(20_000)
        XCTAssertEqual(results.count, 19)
        for (name, err) in results { XCTAssertEqual(err, "template nesting exceeds \(maxDepth) levels (Limits.maxNestingDepth)", name) }
        // ... and 100 000 of the two recursions: expressions and blocks.
        let deepest: [String?] = onSmallStack {
            Self.nested(100_000).filter { ["parentheses", "if blocks"].contains($0.0) }.map { failure($0.1) }
        } ?? []
        XCTAssertEqual(deepest, Array(repeating: "template nesting exceeds \(maxDepth) levels (Limits.maxNestingDepth)", count: 2))
    }

    func testDeepestTemplatesRenderOnSmallStack() {
        let k = maxDepth - 1
        let x = (0..<k).reduce(TemplateValue.string("leaf")) { v, _ in ["a": v] }
        let cases = ["parentheses": "1", "brackets": String(repeating: "[", count: k) + "1" + String(repeating: "]", count: k),
                     "minus chain": k % 2 == 0 ? "1" : "-1", "not chain": k % 2 == 0 ? "True" : "False", "plus operators": "\(k + 1)",
                     "filters": "a", "attributes": "leaf", "if blocks": "1", "for blocks": "1", "macro blocks": "", "tests": "True"]
        let results: [String: String] = onSmallStack {
            var r: [String: String] = [:]
            for (name, src) in Self.nested(k) where cases[name] != nil {
                do { r[name] = try ChatTemplate(src).render(["x": x]) } catch { r[name] = "error: \(error)" }
            }
            return r
        } ?? [:]
        XCTAssertEqual(results.count, cases.count)
        for (name, out) in results { XCTAssertEqual(out, cases[name], name) }
    }

    static let recursive = [
        "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}",
        "{% macro f() %}{% call f() %}x{% endcall %}{% endmacro %}{{ f() }}",
        "{% macro f() %}{{ caller() }}{% endmacro %}{% macro g() %}{% call f() %}{{ g() }}{% endcall %}{% endmacro %}{{ g() }}",
        // Deep blocks and expressions in the recursion: more stack per call.
        "{% macro f(n) %}{{ " + String(repeating: "- ", count: 40) + "f(n + 1) }}{% endmacro %}{{ f(0) }}",
        "{% macro f(n) %}{{ " + String(repeating: "(", count: 40) + "f(n + 1)" + String(repeating: "|string)", count: 40) + " }}{% endmacro %}{{ f(0) }}",
        "{% macro f(n) %}" + String(repeating: "{% if 1 %}", count: 40) + "{{ f(n) }}" + String(repeating: "{% endif %}", count: 40)
            + "{% endmacro %}{{ f(0) }}",
    ]

    func testMacroRecursionHitsTheCallDepthLimit() {
        var limits = ChatTemplate.Limits.default
        limits.maxCallDepth = 10
        for src in Self.recursive.prefix(3) {
            assertFails(src, limits: limits, containing: "call depth exceeds 10 (Limits.maxCallDepth) calling ")
        }
        XCTAssertEqual(try render("{% macro f(n) %}{% if n %}{{ n }}{{ f(n - 1) }}{% endif %}{% endmacro %}{{ f(9) }}", limits: limits),
                       "987654321")
    }

    func testEvaluationStackIsBoundedOnSmallStack() {
        // With the call depth lifted, only the stack budget stops the recursion.
        var limits = ChatTemplate.Limits.default
        limits.maxCallDepth = .max
        let lifted: [String?] = onSmallStack { Self.recursive.map { failure($0, limits: limits) } } ?? []
        XCTAssertEqual(lifted.count, Self.recursive.count)
        for r in lifted {
            XCTAssertTrue(r?.contains("evaluation used more than 262144 bytes of stack (Limits.maxStackBytes)") == true, r ?? "nil")
        }
        // Defaults: whichever limit comes first (the frames' sizes depend on the build), never a crash.
        let defaults: [String?] = onSmallStack { Self.recursive.map { failure($0) } } ?? []
        XCTAssertEqual(defaults.count, Self.recursive.count)
        for r in defaults {
            XCTAssertTrue(r?.contains("(Limits.maxCallDepth)") == true || r?.contains("(Limits.maxStackBytes)") == true, r ?? "nil")
        }
    }
}

final class FuzzEntryTests: XCTestCase {
    func testFuzzEntrySwallowsErrorsAndLimits() {
        let inputs = [
            "", "{{", "{% for %}", "\u{FF}\u{FE}{{ x", "{{ messages[0].content }}",
            "{% for m in messages %}{{ m.role }}{% endfor %}{{ tools|tojson }}",
            "{{ 'x' * 100000000 }}", "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
            "{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}",
            "{{ \(intMax) + 1 }}", "{{ raise_exception('no') }}", "{{ " + String(repeating: "(", count: 100_000),
        ]
        for s in inputs { ChatTemplateFuzz.run(Array(s.utf8)) }
        ChatTemplateFuzz.run([0xC3, 0x28, 0x7B, 0x7B, 0xFF, 0x7D, 0x7D])  // invalid UTF-8
    }
}
