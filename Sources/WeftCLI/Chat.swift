import ArgumentParser
import Foundation
import Synchronization
import WeftChatTemplate
import WeftComm
import WeftModel
import WeftRuntime
import WeftTokenizer

/// `weft chat`: an interactive terminal chat (as llama.cpp's `llama-cli -cnv`).
///
/// Rank 0 reads lines from standard input, keeps the conversation as
/// messages, renders it through the model's chat template (as
/// `/v1/chat/completions` does) and prints each answer as it is produced.
/// Every rank runs the same forward steps: before each one rank 0 broadcasts
/// the step's plan (the tokens to feed and their first position), and a plan
/// saying "quit" ends the followers' loop. Followers keep no conversation
/// state, so `/reset`, a stopped answer or a refused message need no message
/// to them. The KV cache of the one sequence is kept between turns: a turn
/// feeds only the tokens after the longest prefix it shares with what the
/// cache already holds.
struct Chat: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Chat with the model in the terminal (multi-turn, through the model's chat template).",
        discussion: """
        Type a message and press Enter; the answer streams as it is produced. Commands: /reset \
        (start a new conversation, keeping --system), /help, /quit. Ctrl-C stops the answer being \
        written; Ctrl-C twice at the prompt, or Ctrl-D, quits; so does the end of piped input. \
        Run it under mpirun as any command (`mpirun -np 2 weft chat --model M`): only rank 0 \
        reads and prints. In a terminal the chat reads keys itself (the terminal's Ctrl-C would \
        otherwise reach mpirun, which ends the job); with piped input, SIGINT to rank 0 or \
        SIGUSR1 to mpirun (which forwards it) stops an answer.
        """)

    @OptionGroup var options: ModelOptions

    @Option(help: "System prompt: the conversation's first message (kept by /reset).")
    var system: String?

    @Option(help: "Most tokens per answer.")
    var maxTokens: Int = 512

    @OptionGroup var sampling: SamplingOptions

    @Option(help: "Longest conversation in tokens (rendered prompt plus answers; default: the model's max_position_embeddings, at most 4096).")
    var ctxSize: Int?

    func validate() throws {
        if maxTokens < 1 { throw ValidationError("--max-tokens must be at least 1, got \(maxTokens)") }
        if let ctxSize, !(2...(1 << 24)).contains(ctxSize) { throw ValidationError("--ctx-size must be 2...\(1 << 24), got \(ctxSize)") }
        _ = try options.parsedMode(allowing: options.allowedModes)
    }

    func run() throws {
        Session.run { communicator in
            let engine = try Engine(configuration: options.engineConfiguration(maxSequenceLength: ctxSize ?? 4096),
                                    communicator: communicator)
            // Every rank checks the template (they load the same tokenizer), so
            // a model without one fails everywhere alike.
            let renderer = try ChatRenderer(tokenizer: engine.tokenizer, model: options.model ?? options.randomWeights ?? "")
            let steps = ChatSteps(engine: engine)
            guard engine.isRoot else {
                // Rank 0 decides when to stop (its SIGINT stops an answer, not
                // the job), and mpirun forwards SIGUSR1 to every rank.
                signal(SIGINT, SIG_IGN)
                signal(SIGUSR1, SIG_IGN)
                try steps.follow()
                engine.close()
                return
            }
            var session = ChatSession(engine: engine, steps: steps, renderer: renderer, system: system,
                                      maxTokens: maxTokens, sampler: sampling.sampler())
            defer { engine.close() }
            try session.run()
        }
    }
}

/// Renders a conversation with the model's chat template into prompt tokens,
/// the way `/v1/chat/completions` does: `bos_token`/`eos_token` from the
/// tokenizer, `add_generation_prompt`, and no special tokens added when
/// encoding (the template writes them).
struct ChatRenderer {
    let tokenizer: Tokenizer
    let template: ChatTemplate

    init(tokenizer: Tokenizer?, model: String) throws {
        guard let tokenizer else {
            throw RuntimeError.invalidOption("--model", "\(model) has no tokenizer, so no chat template (give --tokenizer DIR for a GGUF file without one)")
        }
        guard let source = tokenizer.chatTemplate else {
            throw RuntimeError.invalidOption("--model", "\(model) has no chat template (tokenizer_config.json chat_template, or the GGUF's tokenizer.chat_template)")
        }
        do {
            template = try ChatTemplate(source)
        } catch {
            throw RuntimeError.invalidOption("--model", "the chat template of \(model) does not parse: \(error)")
        }
        self.tokenizer = tokenizer
    }

    /// (role, content) pairs, rendered with the generation prompt appended.
    func render(_ messages: [(role: String, content: String)]) throws -> (text: String, tokens: [Int]) {
        let values: [[String: TemplateValue]] = messages.map { ["role": .string($0.role), "content": .string($0.content)] }
        let text: String
        do {
            text = try template.render(messages: values, addGenerationPrompt: true,
                                       bosToken: tokenizer.bosToken, eosToken: tokenizer.eosToken)
        } catch {
            throw RuntimeError.invalidInput("the chat template: \(error)")
        }
        return (text, tokenizer.encode(text, addSpecialTokens: false))
    }
}

/// The forward steps of the chat's one sequence, run alike on every rank.
/// Plans (Int32, broadcast from rank 0): `[1, firstPosition, tokens…]` runs a
/// step; `[0]` ends the followers' loop.
struct ChatSteps {
    let engine: Engine
    let sequence: Int

    init(engine: Engine) {
        self.engine = engine
        sequence = engine.newSequence()
    }

    /// Positions the conversation may fill: the model's and the KV cache's.
    var contextLimit: Int { engine.contextLength }

    /// Rank 0: runs `tokens` at `position` on every rank; returns the logits of the last.
    func step(tokens: [Int], position: Int) throws -> [Float] {
        var plan: [Int32] = [1, Int32(position)] + tokens.map { Int32($0) }
        try engine.communicator.broadcastWhenReady(&plan)
        return try forward(tokens: plan[2...].map { $0 }, position: position)
    }

    /// Rank 0: ends the followers' loop.
    func quit() throws {
        var plan: [Int32] = [0]
        try engine.communicator.broadcastWhenReady(&plan)
    }

    /// The other ranks: run rank 0's plans until it says quit. Waits for the
    /// next plan as long as rank 0 answers (a person may think for minutes).
    func follow() throws {
        while true {
            var plan: [Int32] = []
            try engine.communicator.broadcastWhenReady(&plan)
            guard let kind = plan.first, kind != 0 else { return }
            guard kind == 1, plan.count >= 3 else { throw RuntimeError.invalidInput("chat: rank 0 sent a step plan this rank cannot read (\(plan.prefix(4)))") }
            _ = try forward(tokens: Array(plan[2...]), position: Int(plan[1]))
        }
    }

    private func forward(tokens: [Int32], position: Int) throws -> [Float] {
        var batch = FlatBatch()
        batch.append(sequence: sequence, tokens: tokens, firstPosition: position, logits: .last)
        let local = try engine.forwardLocal(batch)
        return try engine.model.gatherLogits(local, rowCount: 1)
    }
}

/// Counts SIGINT/SIGUSR1 on rank 0 and wakes a reader waiting at the prompt
/// (through a pipe it polls beside standard input).
final class ChatInterrupts: Sendable {
    private let count = Mutex(0)
    let wakeRead: Int32, wakeWrite: Int32
    nonisolated(unsafe) private var sources: [DispatchSourceSignal] = []

    init() {
        var fds: [Int32] = [-1, -1]
        if pipe(&fds) == 0 {
            _ = fcntl(fds[0], F_SETFL, fcntl(fds[0], F_GETFL) | O_NONBLOCK)
            _ = fcntl(fds[1], F_SETFL, fcntl(fds[1], F_GETFL) | O_NONBLOCK)
        }
        (wakeRead, wakeWrite) = (fds[0], fds[1])
        let queue = DispatchQueue(label: "weft.chat.signals")
        sources = [SIGINT, SIGUSR1].map { number in
            signal(number, SIG_IGN)   // the dispatch source receives it instead
            let source = DispatchSource.makeSignalSource(signal: number, queue: queue)
            source.setEventHandler { [self] in self.raise() }
            source.resume()
            return source
        }
    }

    /// What a signal does (also callable directly).
    func raise() {
        count.withLock { $0 += 1 }
        var byte: UInt8 = 1
        _ = write(wakeWrite, &byte, 1)
    }

    /// Interrupts since the last `take()`, and forgets them.
    func take() -> Int {
        var byte = [UInt8](repeating: 0, count: 64)
        while read(wakeRead, &byte, byte.count) > 0 {}
        return count.withLock { value in defer { value = 0 }; return value }
    }

    var pending: Bool { count.withLock { $0 > 0 } }
}

/// The terminal a person types into, when there is one: rank 0's own
/// standard input, or under mpirun the terminal mpirun reads (mpirun passes
/// its standard input on to rank 0 as it arrives). The chat puts it in raw
/// mode (no line discipline, no echo, no signals) and edits the line itself,
/// so Ctrl-C arrives as a byte on rank 0's standard input even under mpirun,
/// where the terminal's SIGINT would go to mpirun, which ends the job.
enum ChatTerminal {
    nonisolated(unsafe) private static var saved: (fd: Int32, settings: termios)?

    /// Enters raw mode if a person types into a terminal; false otherwise (a
    /// pipe or file: lines are read as they are, and only signals stop an answer).
    static func enterRawMode() -> Bool {
        var fd: Int32 = -1
        if isatty(0) != 0 {
            fd = 0
        } else if ProcessInfo.processInfo.environment["OMPI_COMM_WORLD_RANK"] != nil
                    || ProcessInfo.processInfo.environment["PMIX_RANK"] != nil {
            // mpirun is the parent; its standard input is what it passes on.
            let input = open("/proc/\(getppid())/fd/0", O_RDWR | O_NOCTTY)
            guard input >= 0 else { return false }
            guard isatty(input) != 0 else {
                close(input)
                return false
            }
            fd = input
        }
        guard fd >= 0 else { return false }
        // A process outside the terminal's foreground group (a rank under
        // mpirun) may change its settings only while ignoring SIGTTOU.
        signal(SIGTTOU, SIG_IGN)
        var settings = termios()
        guard tcgetattr(fd, &settings) == 0 else { return false }
        var raw = settings
        raw.c_lflag &= ~tcflag_t(ICANON | ECHO | ISIG | IEXTEN)
        withUnsafeMutableBytes(of: &raw.c_cc) { cc in
            cc[Int(VMIN)] = 1
            cc[Int(VTIME)] = 0
        }
        guard tcsetattr(fd, TCSANOW, &raw) == 0 else { return false }
        saved = (fd, settings)
        atexit { ChatTerminal.restore() }
        // mpirun ends a failed job with SIGTERM: leave the terminal usable.
        for number in [SIGTERM, SIGHUP] {
            signal(number) { number in
                ChatTerminal.restore()
                signal(number, SIG_DFL)
                raise(number)
            }
        }
        return true
    }

    static func restore() {
        guard var (fd, settings) = saved else { return }
        _ = tcsetattr(fd, TCSANOW, &settings)
    }
}

/// Lines from standard input, waiting in poll(2) so an interrupt can end the
/// wait. With `editing` (a terminal in raw mode) it echoes and edits the line
/// itself: Enter, Backspace, Ctrl-U, Ctrl-C (an interrupt), Ctrl-D on an
/// empty line (end of input); escape sequences (arrow keys) are ignored.
struct LineReader {
    enum Event: Equatable { case line(String), endOfInput, interrupt }
    let editing: Bool
    private var bytes: [UInt8] = []   // read, not yet used
    private var line: [UInt8] = []    // editing: the line typed so far
    private var escape = 0            // 1: after ESC, 2: inside a control sequence
    private var ended = false

    init(editing: Bool) { self.editing = editing }

    mutating func next(interrupts: ChatInterrupts) -> Event {
        while true {
            if editing {
                if let event = edit() { return event }
                if ended { return .endOfInput }
            } else {
                if let newline = bytes.firstIndex(of: UInt8(ascii: "\n")) {
                    let text = String(decoding: bytes[..<newline], as: UTF8.self)
                    bytes.removeSubrange(...newline)
                    return .line(text.hasSuffix("\r") ? String(text.dropLast()) : text)
                }
                if ended {
                    guard !bytes.isEmpty else { return .endOfInput }
                    defer { bytes.removeAll() }
                    return .line(String(decoding: bytes, as: UTF8.self))
                }
            }
            if fill(wait: true, interrupts: interrupts) { return .interrupt }
        }
    }

    /// Between the steps of an answer: reads what was typed meanwhile; true
    /// if it holds a Ctrl-C (dropped with what came before it; the rest is
    /// kept for the next prompt).
    mutating func typedInterrupt() -> Bool {
        guard editing, !ended else { return false }
        _ = fill(wait: false, interrupts: nil)
        guard let index = bytes.lastIndex(of: 3) else { return false }
        bytes.removeSubrange(...index)
        return true
    }

    /// Reads what standard input has (waiting for it, or not); true if an
    /// interrupt ended the wait instead.
    private mutating func fill(wait: Bool, interrupts: ChatInterrupts?) -> Bool {
        while true {
            var fds = [pollfd(fd: 0, events: Int16(POLLIN), revents: 0),
                       pollfd(fd: interrupts?.wakeRead ?? -1, events: Int16(POLLIN), revents: 0)]
            let ready = poll(&fds, nfds_t(fds.count), wait ? -1 : 0)
            if ready < 0 {
                if errno == EINTR { continue }
                ended = true
                return false
            }
            if let interrupts, fds[1].revents != 0, interrupts.pending { return true }
            if fds[0].revents != 0 {
                var chunk = [UInt8](repeating: 0, count: 4096)
                let count = read(0, &chunk, chunk.count)
                if count > 0 {
                    bytes += chunk[..<count]
                } else if count == 0 || (errno != EINTR && errno != EAGAIN) {
                    ended = true
                }
                return false
            }
            if !wait { return false }
        }
    }

    private mutating func edit() -> Event? {
        while !bytes.isEmpty {
            let byte = bytes.removeFirst()
            if escape == 1 {
                escape = byte == UInt8(ascii: "[") || byte == UInt8(ascii: "O") ? 2 : 0
                continue
            }
            if escape == 2 {
                if (0x40...0x7e).contains(byte) { escape = 0 }
                continue
            }
            switch byte {
            case 0x1b:
                escape = 1
            case 0x0d, 0x0a:
                defer { line = [] }
                Output.write("\n")
                return .line(String(decoding: line, as: UTF8.self))
            case 0x03:
                line = []
                Output.write("^C")
                return .interrupt
            case 0x04:
                if line.isEmpty { return .endOfInput }
            case 0x7f, 0x08:
                if eraseCharacter() { Output.write("\u{8} \u{8}") }
            case 0x15:
                var erased = 0
                while eraseCharacter() { erased += 1 }
                Output.write(String(repeating: "\u{8} \u{8}", count: erased))
            case 0x09, 0x20...:
                line.append(byte)
                FileHandle.standardOutput.write(Data([byte]))
            default:
                break
            }
        }
        return nil
    }

    /// Drops the line's last character (one UTF-8 sequence); false when empty.
    private mutating func eraseCharacter() -> Bool {
        guard !line.isEmpty else { return false }
        while let last = line.last, last & 0xc0 == 0x80 { line.removeLast() }
        if !line.isEmpty { line.removeLast() }
        return true
    }
}

/// Rank 0's side of the chat: the conversation, the prompt loop and the answers.
struct ChatSession {
    let engine: Engine
    let steps: ChatSteps
    let renderer: ChatRenderer
    let system: String?
    let maxTokens: Int
    var sampler: Sampler
    let stops: Set<Int>
    let interrupts = ChatInterrupts()
    var reader = LineReader(editing: false)

    var messages: [(role: String, content: String)] = []
    /// Tokens whose keys and values the cache holds, positions 0..<count.
    var cached: [Int] = []

    init(engine: Engine, steps: ChatSteps, renderer: ChatRenderer, system: String?, maxTokens: Int, sampler: Sampler) {
        self.engine = engine
        self.steps = steps
        self.renderer = renderer
        self.system = system
        self.maxTokens = maxTokens
        self.sampler = sampler
        stops = Set(engine.config.eosTokenIDs + renderer.tokenizer.eosTokenIDs)
        reset()
    }

    static let help = """
        Type a message and press Enter. Commands:
          /reset   start a new conversation (keeps the --system prompt)
          /help    this text
          /quit    leave (as Ctrl-D)
        Ctrl-C stops the answer being written; Ctrl-C twice at the prompt quits.

        """

    mutating func reset() {
        messages = system.map { [(role: "system", content: $0)] } ?? []
    }

    mutating func run() throws {
        let ranks = engine.communicator.size
        FileHandle.standardError.write(Data("weft chat: \(ranks) rank\(ranks == 1 ? "" : "s"), context \(steps.contextLimit) tokens. /help for commands, Ctrl-C stops an answer, Ctrl-D quits.\n".utf8))
        reader = LineReader(editing: ChatTerminal.enterRawMode())
        defer { ChatTerminal.restore() }
        var interruptsAtPrompt = 0
        prompting: while true {
            Output.write("> ")
            switch reader.next(interrupts: interrupts) {
            case .endOfInput:
                Output.write("\n")
                break prompting
            case .interrupt:
                interruptsAtPrompt += max(1, interrupts.take())
                if interruptsAtPrompt >= 2 {
                    Output.write("\n")
                    break prompting
                }
                Output.write("\n(Ctrl-C again or Ctrl-D to quit)\n")
            case .line(let line):
                interruptsAtPrompt = 0
                let text = line.trimmingCharacters(in: .whitespaces)
                switch text {
                case "": continue
                case "/quit", "/exit": break prompting
                case "/reset":
                    reset()
                    Output.write("weft: new conversation\n")
                case "/help": Output.write(ChatSession.help)
                default:
                    if text.hasPrefix("/") && !text.contains(" ") {
                        Output.write("weft: unknown command \(text); /help lists them\n")
                    } else {
                        try answer(line)
                    }
                }
            }
        }
        try steps.quit()
    }

    /// One turn: the user's message, the model's answer streamed.
    mutating func answer(_ message: String) throws {
        let limit = steps.contextLimit
        messages.append((role: "user", content: message))
        let prompt: [Int]
        do {
            prompt = try renderer.render(messages).tokens
        } catch {
            messages.removeLast()
            Output.write("weft: \(ParameterFlags.message(for: error)); the message was dropped (/reset starts over)\n")
            return
        }
        guard !prompt.isEmpty else {
            messages.removeLast()
            Output.write("weft: the chat template rendered the conversation as no tokens; the message was dropped\n")
            return
        }
        if let problem = engine.config.vocabularyProblem(prompt) {
            messages.removeLast()
            Output.write("weft: \(problem); the message was dropped\n")
            return
        }
        guard prompt.count < limit else {
            messages.removeLast()
            Output.write("weft: the conversation would be \(prompt.count) tokens with this message, more than the context of \(limit) (leaving room for an answer); the message was dropped: /reset starts over\(limit < engine.config.maxPositionEmbeddings ? ", --ctx-size gives a longer context" : "")\n")
            return
        }
        // Feed what the cache does not already hold (at least one token, for the logits).
        var shared = zip(cached, prompt).prefix(while: { $0 == $1 }).count
        if shared == prompt.count { shared -= 1 }
        cached = Array(prompt[..<shared])
        var pending = Array(prompt[shared...])
        _ = interrupts.take()
        var decoder = StreamingDecoder(tokenizer: renderer.tokenizer)
        var generated: [Int] = []
        var note = ""
        while true {
            if interrupts.pending || reader.typedInterrupt() {
                note = " [stopped]"
                break
            }
            guard cached.count + pending.count <= limit else {
                note = " [the context of \(limit) tokens is full: the answer stops here; /reset starts over]"
                break
            }
            let logits = try steps.step(tokens: pending, position: cached.count)
            cached += pending
            let token = sampler.sample(logits[...])
            if stops.contains(token) { break }
            generated.append(token)
            Output.write(decoder.push(token))
            if generated.count >= maxTokens { break }
            pending = [token]
        }
        Output.write(decoder.flush() + note + "\n")
        _ = interrupts.take()
        messages.append((role: "assistant", content: renderer.tokenizer.decode(generated)))
    }
}
