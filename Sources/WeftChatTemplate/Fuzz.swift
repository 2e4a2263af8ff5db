/// Entry point for the fuzzing harness: any bytes, as a template, must parse or fail with a
/// `ChatTemplateError`, and render (or fail) within tight limits, never trap.
public enum ChatTemplateFuzz {
    static let context: [String: TemplateValue] = [
        "messages": [
            ["role": "system", "content": "You are terse."],
            ["role": "user", "content": "Hi <b>&'\"\n  there"],
            ["role": "assistant", "content": "Hello.", "tool_calls": [["type": "function", "function": ["name": "f", "arguments": ["x": 1]]]]],
            ["role": "user", "content": ""],
        ],
        "add_generation_prompt": true,
        "bos_token": "<s>",
        "eos_token": "</s>",
        "tools": [["type": "function", "function": ["name": "f", "description": "d", "parameters": ["type": "object", "properties": ["x": ["type": "integer"]]]]]],
    ]
    static let limits = ChatTemplate.Limits(maxOutputBytes: 64 << 10, maxAllocatedBytes: 1 << 20, maxLoopIterations: 10_000,
                                            timeout: .milliseconds(200))

    public static func run(_ data: [UInt8]) {
        guard let template = try? ChatTemplate(String(decoding: data, as: UTF8.self)) else { return }
        _ = try? template.render(context, limits: limits)
    }
}
