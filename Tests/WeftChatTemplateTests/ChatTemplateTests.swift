import Foundation
import XCTest
@testable import WeftChatTemplate

private let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .appendingPathComponent("Fixtures")

private func r(_ src: String, _ ctx: [String: TemplateValue] = [:]) throws -> String { try ChatTemplate(src).render(ctx) }

final class RealTemplateTests: XCTestCase {
    func testTinyLlamaFixtureChatCases() throws {
        let dir = fixtures.appendingPathComponent("tiny-llama")
        let config = try TemplateValue(json: String(contentsOf: dir.appendingPathComponent("tokenizer_config.json"), encoding: .utf8))
        guard case .object(let c) = config, case .string(let src)? = c["chat_template"] else { return XCTFail("no chat_template") }
        let tpl = try ChatTemplate(src)
        let ref = try TemplateValue(json: String(contentsOf: dir.appendingPathComponent("tokenizer_reference.json"), encoding: .utf8))
        guard case .object(let r) = ref, case .array(let cases)? = r["chat_cases"] else { return XCTFail("no chat_cases") }
        XCTAssertEqual(cases.count, 2)
        for case .object(let cc) in cases {
            guard case .array(let msgs)? = cc["messages"], case .bool(let agp)? = cc["add_generation_prompt"],
                  case .string(let expected)? = cc["rendered"] else { return XCTFail("bad case") }
            let out = try tpl.render(["messages": .array(msgs), "add_generation_prompt": .bool(agp), "bos_token": "<|begin_of_text|>"])
            XCTAssertEqual(out, expected)
        }
    }

    func testRealTemplatesMatchJinja2() throws {
        let dir = fixtures.appendingPathComponent("chat-templates")
        let exp = try TemplateValue(json: String(contentsOf: dir.appendingPathComponent("expected.json"), encoding: .utf8))
        guard case .object(let root) = exp, case .array(let cases)? = root["cases"] else { return XCTFail("bad expected.json") }
        XCTAssertGreaterThanOrEqual(cases.count, 40)
        var templates: [String: ChatTemplate] = [:]
        for case .object(let c) in cases {
            guard case .string(let file)? = c["template"], case .string(let name)? = c["name"], case .object(let ctx)? = c["context"] else { return XCTFail() }
            if templates[file] == nil {
                templates[file] = try ChatTemplate(String(contentsOf: dir.appendingPathComponent(file), encoding: .utf8))
            }
            let context = Dictionary(uniqueKeysWithValues: ctx.keys.map { ($0, ctx[$0]!) })
            if case .string(let expected)? = c["expected"] {
                XCTAssertEqual(try templates[file]!.render(context), expected, "\(file) \(name)")
            } else if case .string(let msg)? = c["error"] {
                XCTAssertThrowsError(try templates[file]!.render(context), "\(file) \(name)") { e in
                    guard let e = e as? ChatTemplateError else { return XCTFail("wrong error type") }
                    XCTAssertTrue(e.isRaisedByTemplate)
                    XCTAssertEqual(e.message, msg)
                    XCTAssertTrue(e.description.contains(msg))
                }
            }
        }
    }

    func testConvenienceRenderMatchesFixture() throws {
        let dir = fixtures.appendingPathComponent("chat-templates")
        let t = try ChatTemplate(String(contentsOf: dir.appendingPathComponent("qwen2.5-instruct.jinja"), encoding: .utf8))
        let out = try t.render(messages: [["role": "user", "content": "Hello!"]], addGenerationPrompt: true, bosToken: nil, eosToken: "<|im_end|>")
        XCTAssertEqual(out, "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n<|im_start|>user\nHello!<|im_end|>\n<|im_start|>assistant\n")
    }
}

final class EvaluatorTests: XCTestCase {
    func testWhitespaceControl() throws {
        XCTAssertEqual(try r("a  {{- 'b' -}}  c"), "abc")
        XCTAssertEqual(try r("x\n  {% if true %}\n  y\n  {% endif %}\nz"), "x\n  y\nz")  // trim_blocks + lstrip_blocks
        XCTAssertEqual(try r("x {% if true %}y{% endif %} z"), "x y z")
        XCTAssertEqual(try r("a\n{# comment #}\nb"), "a\nb")
        XCTAssertEqual(try r("  {{ 'v' }}\n"), "  v")  // lstrip only for blocks; trailing newline dropped
        XCTAssertEqual(try r("{%+ if true %}a{% endif +%}\n"), "a")
    }

    func testLoops() throws {
        XCTAssertEqual(try r("{% for x in xs %}{{ loop.index }}{{ loop.index0 }}{{ loop.first }}{{ loop.last }}{{ loop.length }};{% endfor %}", ["xs": [1, 2]]),
                       "10TrueFalse2;21FalseTrue2;")
        XCTAssertEqual(try r("{% for x in xs %}{{ x }}{% else %}none{% endfor %}", ["xs": []]), "none")
        XCTAssertEqual(try r("{% for x in [1,2,3,4] if x is even %}{{ x }}/{{ loop.length }} {% endfor %}"), "2/2 4/2 ")
        XCTAssertEqual(try r("{% for k, v in d.items() %}{{ k }}={{ v }},{% endfor %}", ["d": ["b": 1, "a": 2]]), "b=1,a=2,")
        XCTAssertEqual(try r("{% for x in range(10) %}{% if x == 1 %}{% continue %}{% endif %}{% if x > 3 %}{% break %}{% endif %}{{ x }}{% endfor %}"), "023")
        XCTAssertEqual(try r("{% for m in ms|selectattr('role','equalto','user') %}{{ m.content }}{% endfor %}",
                             ["ms": [["role": "user", "content": "a"], ["role": "bot", "content": "b"], ["role": "user", "content": "c"]]]), "ac")
        XCTAssertEqual(try r("{% set c = 0 %}{% for i in range(3) %}{% set c = c + 1 %}{{ c }}{% endfor %}{{ c }}"), "1110")
    }

    func testNamespaceAndSet() throws {
        XCTAssertEqual(try r("{% set ns = namespace(x=1) %}{% for i in range(3) %}{% set ns.x = ns.x + i %}{% endfor %}{{ ns.x }}"), "4")
        XCTAssertEqual(try r("{% set ns = namespace() %}{% set ns.found = true %}{{ ns.found }}"), "True")
        XCTAssertEqual(try r("{% set t %}in{{ 1 }}{% endset %}[{{ t }}]"), "[in1]")
        XCTAssertEqual(try r("{% macro m(a, b='x') %}{{ a }}-{{ b }}{% endmacro %}{{ m(1) }} {{ m(2, b='y') }}"), "1-x 2-y")
        XCTAssertEqual(try r("{% macro w() %}<{{ caller() }}>{% endmacro %}{% call w() %}in{% endcall %}"), "<in>")
    }

    func testFilters() throws {
        XCTAssertEqual(try r("{{ '  a b  '|trim }}|{{ 'ab'|upper }}|{{ 'hello world'|title }}|{{ 'hELLO'|capitalize }}"), "a b|AB|Hello World|Hello")
        XCTAssertEqual(try r("{{ [1,2,3]|length }}{{ 'héllo'|count }}{{ [1,2]|first }}{{ [1,2]|last }}"), "35" + "12")
        XCTAssertEqual(try r("{{ x|default('d') }}{{ ''|default('e', true) }}{{ [1,'a']|join(', ') }}"), "de1, a")
        XCTAssertEqual(try r("{{ {'a': [1, 2.5, none, true], 'é': 'ü\"'}|tojson }}"), "{\"a\": [1, 2.5, null, true], \"é\": \"ü\\\"\"}")
        XCTAssertEqual(try r("{{ {'a': [1], 'b': {}}|tojson(indent=2) }}"), "{\n  \"a\": [\n    1\n  ],\n  \"b\": {}\n}")
        XCTAssertEqual(try r("{{ '12'|int + 1 }} {{ 'x'|int }} {{ '1.5'|float }} {{ 3|string ~ 'a' }} {{ 'ab'|list }}"), "13 0 1.5 3a ['a', 'b']")
        XCTAssertEqual(try r("{{ 'aXbX'|replace('X', '-') }} {{ ms|map(attribute='r')|join }} {{ ['a','b']|reject('equalto','a')|list }}",
                             ["ms": [["r": "p"], ["r": "q"]]]), "a-b- pq ['b']")
        XCTAssertEqual(try r("{{ 'a\nb'|indent(2) }}|{{ '<&>'|escape }}|{{ 'x'|safe }}"), "a\n  b|&lt;&amp;&gt;|x")
    }

    func testExpressionsAndSlicing() throws {
        XCTAssertEqual(try r("{{ xs[1:] }}{{ xs[::-1] }}{{ xs[-1] }}{{ 'abc'[:2] }}", ["xs": [1, 2, 3]]), "[2, 3][3, 2, 1]3ab")
        XCTAssertEqual(try r("{{ 7 // 2 }} {{ -7 % 3 }} {{ 10 / 4 }} {{ 2 ** 3 }} {{ 1 ~ 2 }} {{ 'a' if false else 'b' }} {{ 3 in [1,3] }} {{ 'x' not in 'abc' }}"),
                       "3 2 2.5 8 12 b True True")
        XCTAssertEqual(try r("{{ m.role }}{{ m['role'] }}{{ m.get('x', 'dflt') }}{{ m.keys()|list }}", ["m": ["role": "u"]]), "uudflt['role']")
        XCTAssertEqual(try r("{{ ' a '.strip() }}|{{ 'a,b'.split(',') }}|{{ 'abc'.startswith('ab') }}|{{ 'x y'.split() }}|{{ 'ab'.endswith('c') }}"),
                       "a|['a', 'b']|True|['x', 'y']|False")
        XCTAssertEqual(try r("{{ x is defined }}{{ none is none }}{{ 'a' is string }}{{ {} is mapping }}{{ 1 is iterable }}{{ x is not none }}"),
                       "FalseTrueTrueTrueFalseTrue")
    }

    func testUndefinedSemantics() throws {
        XCTAssertEqual(try r("[{{ x }}]{% if x %}yes{% else %}no{% endif %}{% for a in x %}z{% endfor %}{{ x|length }}"), "[]no0")
        XCTAssertEqual(try r("[{{ m.missing }}]{{ m.missing is defined }}", ["m": [:]]), "[]False")
        // jinja2's default Undefined raises on attribute access, arithmetic and calls.
        XCTAssertThrowsError(try r("{{ x.y }}"))
        XCTAssertThrowsError(try r("{{ x + 'a' }}"))
        XCTAssertThrowsError(try r("{{ x() }}"))
    }

    func testErrorsHaveLineAndColumn() throws {
        XCTAssertThrowsError(try ChatTemplate("ok\n{% if x %}never closed")) { e in
            let e = e as! ChatTemplateError
            XCTAssertEqual(e.line, 2); XCTAssertTrue(e.description.hasPrefix("chat_template line 2, column 1: "), e.description)
        }
        XCTAssertThrowsError(try ChatTemplate("line1\n  {{ 'a' | nofilter }}")) { e in
            let e = e as! ChatTemplateError
            XCTAssertEqual(e.line, 2); XCTAssertEqual(e.column, 12); XCTAssertTrue(e.message.contains("nofilter"))
        }
        XCTAssertThrowsError(try ChatTemplate("{{ 1 + }}")) { e in XCTAssertEqual((e as! ChatTemplateError).line, 1) }
        XCTAssertThrowsError(try ChatTemplate("{{ x is frobbed }}"))
        XCTAssertThrowsError(try ChatTemplate("{% for a in b %}{{ a }}"))
        XCTAssertThrowsError(try ChatTemplate("{% endif %}"))
        XCTAssertThrowsError(try r("x\n{{ raise_exception('bad roles') }}")) { e in
            let e = e as! ChatTemplateError
            XCTAssertTrue(e.isRaisedByTemplate); XCTAssertEqual(e.message, "bad roles"); XCTAssertEqual(e.line, 2)
            XCTAssertEqual(e.description, "chat_template line 2, column 19: bad roles")  // column of the call's "("
        }
    }

    func testStrftimeNow() throws {
        XCTAssertEqual(try r("{{ strftime_now('%Y')|length }}"), "4")
    }
}
