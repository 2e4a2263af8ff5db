import Foundation
import XCTest

/// `weft chat` driven through a pipe (lines in, then end of input) with and
/// without mpirun, and `weft generate --chat`, against `weft generate
/// --tokens` on prompts rendered by jinja2 from the fixture's chat template.
final class ChatTests: XCTestCase {
    static let model = MPIRun.fixture.path
    static let common = ["--threads", "1", "--kv-dtype", "f32", "--comm-mode", "fused"]

    struct GenerateOutput: Decodable { let prompt_tokens: [Int]; let completion_tokens: [Int]; let text: String }

    /// The model's chat template (tokenizer_config.json's, or a GGUF file's
    /// tokenizer.chat_template read with the gguf package) rendered by jinja2,
    /// as transformers' apply_chat_template does, with the generation prompt.
    func jinjaRender(_ messages: [[String: String]], model: String = ChatTests.model) throws -> String {
        let script = """
        import json, sys, jinja2.sandbox
        path = sys.argv[1]
        if path.endswith(".gguf"):
            import gguf
            reader = gguf.GGUFReader(path)
            def field(name):
                f = reader.fields.get(name)
                return None if f is None else f.parts[f.data[0]]
            template = bytes(field("tokenizer.chat_template")).decode()
            tokens = reader.fields["tokenizer.ggml.tokens"]
            def token(key):
                value = field(key)
                return None if value is None else bytes(tokens.parts[tokens.data[int(value[0])]]).decode()
            bos, eos = token("tokenizer.ggml.bos_token_id"), token("tokenizer.ggml.eos_token_id")
        else:
            config = json.load(open(path + "/tokenizer_config.json"))
            template, bos, eos = config["chat_template"], config["bos_token"], config["eos_token"]
        env = jinja2.sandbox.ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        sys.stdout.write(env.from_string(template).render(messages=json.loads(sys.argv[2]), add_generation_prompt=True,
                                                          bos_token=bos, eos_token=eos))
        """
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        let json = String(decoding: try JSONSerialization.data(withJSONObject: messages), as: UTF8.self)
        process.arguments = ["python3", "-c", script, model, json]
        let out = Pipe()
        process.standardOutput = out
        try process.run()
        let data = out.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        XCTAssertEqual(process.terminationStatus, 0, "python3 with jinja2 (and gguf) renders the template")
        return String(decoding: data, as: UTF8.self)
    }

    /// Token ids of `text` with the model's tokenizer, no special tokens added.
    func tokenize(_ text: String, model: String = ChatTests.model) throws -> [Int] {
        let outcome = try MPIRun.run(ranks: 0, ["tokenize", "--model", model, "--text", text, "--no-special", "--json"])
        XCTAssertEqual(outcome.status, 0, outcome.stderr)
        struct IDs: Decodable { let ids: [Int] }
        return try JSONDecoder().decode(IDs.self, from: Data(outcome.stdout.utf8)).ids
    }

    /// `weft generate --tokens` of the jinja2-rendered conversation.
    func reference(_ messages: [[String: String]], maxTokens: Int, model: String = ChatTests.model,
                   options: [String] = ChatTests.common, ranks: Int = 0) throws -> GenerateOutput {
        let tokens = try tokenize(try jinjaRender(messages, model: model), model: model)
        let outcome = try MPIRun.run(ranks: ranks, ["generate", "--model", model] + options +
                                     ["--tokens", tokens.map(String.init).joined(separator: ","), "--max-tokens", String(maxTokens), "--json"])
        XCTAssertEqual(outcome.status, 0, outcome.stderr)
        return try JSONDecoder().decode(GenerateOutput.self, from: Data(outcome.stdout.utf8))
    }

    func chat(ranks: Int, input: String, _ extra: [String] = [], model: String = ChatTests.model,
              options: [String] = ChatTests.common) throws -> MPIRun.Outcome {
        let process = try ChatProcess(ranks: ranks, ["--model", model] + options + extra)
        process.send(input)
        process.closeInput()
        return process.finish()
    }

    /// Every rank exits 0 (with mpirun the wrapper reports each rank's code).
    func assertCleanExit(_ outcome: MPIRun.Outcome, ranks: Int, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertFalse(outcome.timedOut, "chat did not end at end of input", file: file, line: line)
        XCTAssertEqual(outcome.status, 0, outcome.stderr, file: file, line: line)
        XCTAssertEqual(outcome.rankExits, Dictionary(uniqueKeysWithValues: (0..<max(ranks, 1)).map { ($0, Int32(0)) }),
                       outcome.stderr, file: file, line: line)
    }

    /// Two turns (the second answered with the first in its prompt), /reset,
    /// a third turn as a fresh conversation, end of input: the same stdout at
    /// 1 and 2 ranks, each answer equal to generate on the rendered prompt.
    func checkTurns(ranks: Int) throws {
        let first = "Hello world", second = "Tell me more please", third = "Tell me more please"
        let answer1 = try reference([["role": "user", "content": first]], maxTokens: 8)
        let answer2 = try reference([["role": "user", "content": first], ["role": "assistant", "content": answer1.text],
                                     ["role": "user", "content": second]], maxTokens: 8)
        let answer3 = try reference([["role": "user", "content": third]], maxTokens: 8)
        // The second message alone gets another answer, so equality above shows the first turn was seen.
        XCTAssertNotEqual(answer2.completion_tokens, answer3.completion_tokens, "pick messages whose answers differ with and without the first turn")
        let outcome = try chat(ranks: ranks, input: "\(first)\n\(second)\n/reset\n\(third)\n", ["--max-tokens", "8"])
        assertCleanExit(outcome, ranks: ranks)
        XCTAssertEqual(outcome.stdout, "> \(answer1.text)\n> \(answer2.text)\n> weft: new conversation\n> \(answer3.text)\n> \n")
    }

    func testTwoTurnsResetAndEndOfInputWithoutMPIRun() throws { try checkTurns(ranks: 0) }
    func testTwoTurnsResetAndEndOfInputTP1() throws { try checkTurns(ranks: 1) }
    func testTwoTurnsResetAndEndOfInputTP2() throws { try checkTurns(ranks: 2) }

    /// A system prompt is the first message, and /reset keeps it.
    func testSystemPromptStaysAfterReset() throws {
        let system = "You are terse.", message = "Hello world"
        let answer = try reference([["role": "system", "content": system], ["role": "user", "content": message]], maxTokens: 6)
        let outcome = try chat(ranks: 2, input: "\(message)\n/reset\n\(message)\n", ["--max-tokens", "6", "--system", system])
        assertCleanExit(outcome, ranks: 2)
        XCTAssertEqual(outcome.stdout, "> \(answer.text)\n> weft: new conversation\n> \(answer.text)\n> \n")
    }

    /// A message that does not fit is dropped with a message naming the
    /// context; an answer that fills the context stops with a note; the chat
    /// goes on (and the dropped message is not part of the conversation).
    func testContextOverflowIsReportedAndTheChatGoesOn() throws {
        let short = "Hello world"
        let long = String(repeating: "many words here ", count: 20)
        let prompt = try tokenize(try jinjaRender([["role": "user", "content": short]]))
        let context = 48   // three KV blocks of 16
        XCTAssertLessThan(prompt.count, context - 4, "the short message leaves room for a few answer tokens")
        // Positions 0..<context hold the prompt and all answer tokens but the last.
        let fits = try reference([["role": "user", "content": short]], maxTokens: context - prompt.count + 1)
        for ranks in [1, 2] {
            let outcome = try chat(ranks: ranks, input: "\(long)\n\(short)\n\(short)\n/reset\n\(short)\n",
                                   ["--max-tokens", "100", "--ctx-size", String(context)])
            assertCleanExit(outcome, ranks: ranks)
            let turns = outcome.stdout.components(separatedBy: "> ")
            XCTAssertEqual(turns.count, 7, outcome.stdout)
            guard turns.count == 7 else { continue }
            // 1: the long message is refused, naming sizes and what to do.
            XCTAssertTrue(turns[1].hasPrefix("weft: the conversation would be "), turns[1])
            XCTAssertTrue(turns[1].contains("more than the context of \(context)"), turns[1])
            XCTAssertTrue(turns[1].contains("the message was dropped"), turns[1])
            // 2: the short one answers until the context is full (the fixture
            // does not stop on its own): what generate gives with room for
            // exactly the positions left (the last sampled token needs none).
            let cut = " [the context of \(context) tokens is full: the answer stops here; /reset starts over]\n"
            XCTAssertEqual(turns[2], fits.text + cut)
            XCTAssertEqual(fits.completion_tokens.count, context - prompt.count + 1)
            // 3: the conversation no longer has room for another message.
            XCTAssertTrue(turns[3].hasPrefix("weft: the conversation would be "), turns[3])
            XCTAssertEqual(turns[4], "weft: new conversation\n")
            XCTAssertEqual(turns[5], fits.text + cut)
            XCTAssertEqual(turns[6], "\n")   // end of input
        }
    }

    /// `generate --chat` runs on the rendered prompt: the same tokens as
    /// generate --tokens of jinja2's rendering, at 1 and 2 ranks.
    func testGenerateChatEqualsTheRenderedPrompt() throws {
        let message = "What is the capital of France?"
        let expected = try reference([["role": "user", "content": message]], maxTokens: 10)
        for ranks in [1, 2] {
            let outcome = try MPIRun.run(ranks: ranks, ["generate", "--model", Self.model] + Self.common +
                                         ["--prompt", message, "--chat", "--max-tokens", "10", "--json"])
            XCTAssertEqual(outcome.status, 0, outcome.stderr)
            let output = try JSONDecoder().decode(GenerateOutput.self, from: Data(outcome.stdout.utf8))
            XCTAssertEqual(output.prompt_tokens, expected.prompt_tokens)
            XCTAssertEqual(output.completion_tokens, expected.completion_tokens)
        }
        let noPrompt = try MPIRun.run(ranks: 0, ["generate", "--model", Self.model, "--tokens", "1,2", "--chat"])
        XCTAssertNotEqual(noPrompt.status, 0)
        XCTAssertTrue(noPrompt.stderr.contains("--chat needs --prompt"), noPrompt.stderr)
    }

    /// A template that raises, or renders nothing, costs the message, not the chat.
    func testTemplateErrorsDropTheMessageAndTheChatGoesOn() throws {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("weft-chat-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: folder) }
        for name in ["config.json", "generation_config.json", "model.safetensors", "special_tokens_map.json", "tokenizer.json"] {
            try FileManager.default.createSymbolicLink(at: folder.appendingPathComponent(name),
                                                       withDestinationURL: MPIRun.fixture.appendingPathComponent(name))
        }
        let configURL = MPIRun.fixture.appendingPathComponent("tokenizer_config.json")
        var config = try JSONSerialization.jsonObject(with: Data(contentsOf: configURL)) as! [String: Any]
        config["chat_template"] = "{% if messages|length > 1 %}{{ raise_exception('one message at a time') }}{% endif %}"
            + "{% if messages[0]['content'] != 'empty' %}{{ bos_token }}<|start|>{{ messages[0]['content'] }}<|end|>{% endif %}"
        try JSONSerialization.data(withJSONObject: config).write(to: folder.appendingPathComponent("tokenizer_config.json"))
        let outcome = try chat(ranks: 2, input: "Hello world\nagain\n/reset\nempty\nHello world\n", ["--max-tokens", "4"], model: folder.path)
        assertCleanExit(outcome, ranks: 2)
        let turns = outcome.stdout.components(separatedBy: "> ")
        XCTAssertEqual(turns.count, 7, outcome.stdout)
        guard turns.count == 7 else { return }
        XCTAssertFalse(turns[1].hasPrefix("weft:"), turns[1])
        XCTAssertTrue(turns[2].hasPrefix("weft: the chat template: "), turns[2])
        XCTAssertTrue(turns[2].contains("one message at a time"), turns[2])
        XCTAssertTrue(turns[2].hasSuffix("the message was dropped (/reset starts over)\n"), turns[2])
        XCTAssertEqual(turns[3], "weft: new conversation\n")
        XCTAssertEqual(turns[4], "weft: the chat template rendered the conversation as no tokens; the message was dropped\n")
        XCTAssertEqual(turns[5], turns[1], "after the refusals the conversation is the first message alone again")
    }

    /// Commands, blank lines and a model without a chat template.
    func testHelpUnknownCommandsAndQuit() throws {
        let outcome = try chat(ranks: 2, input: "/help\n\n/nonsense\n/quit\nnot read\n", ["--max-tokens", "4"])
        assertCleanExit(outcome, ranks: 2)
        XCTAssertTrue(outcome.stdout.contains("/reset   start a new conversation"), outcome.stdout)
        XCTAssertTrue(outcome.stdout.contains("weft: unknown command /nonsense; /help lists them\n"), outcome.stdout)
        XCTAssertTrue(outcome.stdout.hasSuffix("> > weft: unknown command /nonsense; /help lists them\n> "), outcome.stdout)

        let shape = MPIRun.fixture.appendingPathComponent("config.json").path
        let none = try MPIRun.run(ranks: 2, ["chat", "--random-weights", shape, "--threads", "1"])
        XCTAssertEqual(none.rankExits, [0: 1, 1: 1], none.stderr)
        XCTAssertTrue(none.stderr.contains("error: --model: \(shape) has no tokenizer, so no chat template"), none.stderr)
    }

    /// SIGINT to the chat (no mpirun) or SIGUSR1 to mpirun (which forwards it
    /// to every rank) stops the answer being written, not the program; two
    /// at the prompt end it cleanly. Each signal is sent once the answer has
    /// begun to stream, and the answer could not end on its own before.
    func checkInterrupt(ranks: Int) throws {
        let process = try ChatProcess(ranks: ranks, ["--model", Self.model] + Self.common + ["--max-tokens", "1900"], wrapRanks: false)
        process.send("Hello world\n")
        // The first answer token follows the prompt marker.
        XCTAssertTrue(process.waitForOutput { $0.count > 3 }, "the answer starts")
        process.interrupt()
        XCTAssertTrue(process.waitForOutput { $0.hasSuffix(" [stopped]\n> ") }, "the answer stops: \(process.output.suffix(200))")
        // The chat goes on: another message gets an answer (stopped too).
        process.send("Hello again\n")
        XCTAssertTrue(process.waitForOutput { $0.components(separatedBy: "> ").count == 3 && !$0.hasSuffix("> ") }, "the second answer starts")
        process.interrupt()
        XCTAssertTrue(process.waitForOutput { $0.components(separatedBy: " [stopped]\n> ").count == 3 }, "the second answer stops")
        process.interrupt()
        XCTAssertTrue(process.waitForOutput { $0.hasSuffix("(Ctrl-C again or Ctrl-D to quit)\n> ") })
        process.interrupt()
        let outcome = process.finish()
        XCTAssertFalse(outcome.timedOut)
        XCTAssertEqual(outcome.status, 0, outcome.stderr)
        let answers = outcome.stdout.components(separatedBy: " [stopped]\n")
        XCTAssertEqual(answers.count, 3, outcome.stdout)
        XCTAssertLessThan(answers[0].count, 1900 * 4, "the first answer was cut short")
    }

    func testInterruptStopsTheAnswerWithoutMPIRun() throws { try checkInterrupt(ranks: 0) }
    func testInterruptStopsTheAnswerTP2() throws { try checkInterrupt(ranks: 2) }

    /// The real model (SmolLM2-135M-Instruct, its GGUF's tokenizer and ChatML
    /// template): `generate --chat` runs on jinja2's rendering of the GGUF's
    /// template, and a two-turn chat at TP 2 answers as generate does on the
    /// rendered conversations (the answers end at <|im_end|>).
    func testRealModelChatAndGenerateChat() throws {
        let model = try RealModel.smolLM2()
        let options = ["--threads", "1", "--comm-mode", "fused"]
        let first = "What is the capital of France?", second = "And of Italy?"
        let answer1 = try reference([["role": "user", "content": first]], maxTokens: 12, model: model, options: options, ranks: 2)
        let rendered = try jinjaRender([["role": "user", "content": first]], model: model)
        XCTAssertTrue(rendered.hasPrefix("<|im_start|>system\n"), "the GGUF's ChatML template adds its default system prompt: \(rendered)")
        XCTAssertTrue(rendered.hasSuffix("<|im_start|>user\n\(first)<|im_end|>\n<|im_start|>assistant\n"), rendered)
        let generated = try MPIRun.run(ranks: 2, ["generate", "--model", model] + options +
                                       ["--prompt", first, "--chat", "--max-tokens", "12", "--json"])
        XCTAssertEqual(generated.status, 0, generated.stderr)
        let output = try JSONDecoder().decode(GenerateOutput.self, from: Data(generated.stdout.utf8))
        XCTAssertEqual(output.prompt_tokens, answer1.prompt_tokens)
        XCTAssertEqual(output.completion_tokens, answer1.completion_tokens)

        let answer2 = try reference([["role": "user", "content": first], ["role": "assistant", "content": answer1.text],
                                     ["role": "user", "content": second]], maxTokens: 12, model: model, options: options, ranks: 2)
        let outcome = try chat(ranks: 2, input: "\(first)\n\(second)\n", ["--max-tokens", "12"], model: model, options: options)
        assertCleanExit(outcome, ranks: 2)
        XCTAssertEqual(outcome.stdout, "> \(answer1.text)\n> \(answer2.text)\n> \n")
    }

    /// In a terminal (a pseudo-terminal from util-linux `script`) under
    /// mpirun, keys are read by the chat: a typed line is edited (Backspace),
    /// and Ctrl-C stops the answer. Were the terminal left in its usual mode,
    /// Ctrl-C would send SIGINT to mpirun, which ends the job (exit status 1).
    func testCtrlCTypedInATerminalUnderMPIRun() throws {
        let script = "/usr/bin/script"
        guard FileManager.default.isExecutableFile(atPath: script) else { throw XCTSkip("needs util-linux script for a pseudo-terminal") }
        let expected = try reference([["role": "user", "content": "Hello world"]], maxTokens: 8)
        func quoted(_ word: String) -> String { "'" + word.replacingOccurrences(of: "'", with: "'\\''") + "'" }
        let mpirun = ["mpirun", "--allow-run-as-root", "--oversubscribe", "-q", "--mca", "btl", "self,vader", "-np", "2",
                      MPIRun.weft.path, "chat", "--model", Self.model] + Self.common + ["--max-tokens", "1900"]
        let process = try ChatProcess(command: [script, "-qefc", mpirun.map(quoted).joined(separator: " "), "/dev/null"], ranks: 2)
        XCTAssertTrue(process.waitForOutput { $0.contains("> ") }, "the prompt appears")
        process.send("Hello worlx\u{7f}d\r")
        // Wait until the answer is past the reference's 8 tokens (so the line was "Hello world").
        XCTAssertTrue(process.waitForOutput { $0.replacingOccurrences(of: "\r", with: "").contains("\n" + expected.text) },
                      "the answer to the edited line streams: \(process.output.suffix(300))")
        process.send("\u{03}")
        XCTAssertTrue(process.waitForOutput { $0.contains(" [stopped]\r\n> ") }, "Ctrl-C stops the answer: \(process.output.suffix(300))")
        process.send("\u{03}")
        XCTAssertTrue(process.waitForOutput { $0.hasSuffix("(Ctrl-C again or Ctrl-D to quit)\r\n> ") }, process.output.suffix(300).description)
        process.send("\u{04}")
        let outcome = process.finish()
        XCTAssertFalse(outcome.timedOut)
        XCTAssertEqual(outcome.status, 0, "Ctrl-D ends the chat and every rank exits 0: \(outcome.stdout.suffix(300))")
    }
}

/// `weft chat` with a pipe as its standard input (mpirun hands its standard
/// input to rank 0) and its standard output read as it comes.
final class ChatProcess: @unchecked Sendable {
    let process = Process()
    let ranks: Int
    private let input = Pipe()
    private let lock = NSLock()
    private var collected = Data()
    private let outputDone = DispatchSemaphore(value: 0)
    private let err: MPIRun.DataCollector

    /// `ranks` 0 runs weft without mpirun. `wrapRanks` false runs the ranks
    /// without the exit-code wrapper, so signals reach weft itself.
    convenience init(ranks: Int, _ arguments: [String], wrapRanks: Bool = true) throws {
        let weft = MPIRun.weft.path
        let wrapper = wrapRanks ? ["/bin/sh", "-c", MPIRun.rankWrapper] : []
        if ranks == 0 {
            try self.init(command: wrapper + [weft, "chat"] + arguments, ranks: 0)
        } else {
            try self.init(command: ["mpirun", "--allow-run-as-root", "--oversubscribe", "-q", "--mca", "btl", "self,vader",
                                    "--mca", "orte_abort_on_non_zero_status", "0", "-np", String(ranks)] + wrapper + [weft, "chat"] + arguments,
                          ranks: ranks)
        }
    }

    /// Any command (run through env); `ranks` says where `interrupt()` sends its signal.
    init(command: [String], ranks: Int) throws {
        self.ranks = ranks
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = command
        process.environment = MPIRun.launcherEnvironment()
        let out = Pipe(), errPipe = Pipe()
        process.standardInput = input
        process.standardOutput = out
        process.standardError = errPipe
        err = MPIRun.DataCollector(errPipe.fileHandleForReading)
        try process.run()
        let handle = out.fileHandleForReading
        Thread.detachNewThread { [self] in
            while true {
                let chunk = handle.availableData
                if chunk.isEmpty { break }
                lock.lock(); collected.append(chunk); lock.unlock()
            }
            outputDone.signal()
        }
    }

    var output: String {
        lock.lock(); defer { lock.unlock() }
        return String(decoding: collected, as: UTF8.self)
    }

    func send(_ text: String) { input.fileHandleForWriting.write(Data(text.utf8)) }
    func closeInput() { try? input.fileHandleForWriting.close() }

    /// SIGINT to weft without mpirun; SIGUSR1 to mpirun, which forwards it
    /// (a SIGINT to mpirun ends the job).
    func interrupt() { kill(process.processIdentifier, ranks == 0 ? SIGINT : SIGUSR1) }

    /// Waits (up to two minutes) until the output so far satisfies `condition`.
    func waitForOutput(_ condition: (String) -> Bool) -> Bool {
        let deadline = Date().addingTimeInterval(120)
        while Date() < deadline {
            if condition(output) { return true }
            if !process.isRunning { return condition(output) }
            usleep(10_000)
        }
        return false
    }

    /// Waits for the job to end (killing it after `timeout` seconds).
    func finish(timeout: TimeInterval = 180) -> MPIRun.Outcome {
        let deadline = Date().addingTimeInterval(timeout)
        var timedOut = false
        while process.isRunning {
            if Date() > deadline {
                timedOut = true
                process.terminate()
                break
            }
            usleep(20_000)
        }
        process.waitUntilExit()
        outputDone.wait()
        closeInput()
        let stderr = err.finish()
        return MPIRun.Outcome(status: process.terminationStatus, stdout: output, stderr: stderr,
                              rankExits: MPIRun.rankExits(stderr), timedOut: timedOut)
    }
}
