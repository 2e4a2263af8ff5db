import Foundation

/// The thread that owns MPI on a rank. Every MPI call of the process runs
/// here (MPI is initialized here too, at `MPI_THREAD_FUNNELED`), so compute
/// threads never enter MPI: they submit work and wait for it.
///
/// Work items are polled state machines run strictly one after another in
/// submission order (so every rank executes its collectives in the same
/// order, and items may share staging buffers): `step()` of the oldest item is
/// called repeatedly until it returns true. A nonblocking collective issues
/// its `MPI_I*` call on the first step and tests it on later ones, so it keeps
/// progressing while the compute threads run — Open MPI 4 has no asynchronous
/// progress of its own.
final class CommThread: @unchecked Sendable {
    final class Work: @unchecked Sendable {
        let step: () -> Bool
        fileprivate var finished = false
        init(_ step: @escaping () -> Bool) { self.step = step }
    }

    private let condition = NSCondition()
    private var pending: [Work] = []
    private var stopping = false
    private var thread: Thread?
    /// Called on the comm thread between polls and every 20 ms while idle (the
    /// peer monitor answers other ranks' pings here). Set on the comm thread.
    var service: (() -> Void)?

    init(name: String) {
        let thread = Thread { [unowned self] in self.loop() }
        thread.name = name
        self.thread = thread
        thread.start()
    }

    /// Queues `step` (called on the comm thread until it returns true).
    @discardableResult
    func submit(_ step: @escaping () -> Bool) -> Work {
        let work = Work(step)
        condition.lock()
        pending.append(work)
        condition.broadcast()
        condition.unlock()
        return work
    }

    /// Blocks the caller until `work` has finished.
    func wait(_ work: Work) {
        // Short collectives finish within microseconds: check before sleeping.
        for _ in 0..<200 {
            condition.lock()
            let done = work.finished
            condition.unlock()
            if done { return }
            sched_yield()
        }
        condition.lock()
        while !work.finished { condition.wait() }
        condition.unlock()
    }

    func isFinished(_ work: Work) -> Bool {
        condition.lock()
        defer { condition.unlock() }
        return work.finished
    }

    /// Runs `body` once on the comm thread and returns its result.
    func run<T>(_ body: @escaping () throws -> T) throws -> T {
        let box = ResultBox<T>()
        let work = submit {
            do { box.value = try body() } catch { box.error = error }
            return true
        }
        wait(work)
        if let error = box.error { throw error }
        return box.value!
    }

    func stop() {
        condition.lock()
        stopping = true
        condition.broadcast()
        condition.unlock()
    }

    private final class ResultBox<T>: @unchecked Sendable {
        var value: T?
        var error: Error?
    }

    private func loop() {
        var active: [Work] = []
        var idleRounds = 0
        var lastService = DispatchTime.now().uptimeNanoseconds
        while true {
            condition.lock()
            while active.isEmpty && pending.isEmpty && !stopping {
                guard let service else { condition.wait(); continue }
                _ = condition.wait(until: Date().addingTimeInterval(0.02))
                if active.isEmpty && pending.isEmpty && !stopping {
                    condition.unlock()
                    service()
                    condition.lock()
                }
            }
            if stopping && active.isEmpty && pending.isEmpty {
                condition.unlock()
                return
            }
            active += pending
            pending.removeAll()
            condition.unlock()

            if let service {
                let now = DispatchTime.now().uptimeNanoseconds
                if now &- lastService > 1_000_000 { service(); lastService = now }
            }
            var progressed = false
            while let work = active.first, work.step() {
                active.removeFirst()
                condition.lock()
                work.finished = true
                condition.broadcast()
                condition.unlock()
                progressed = true
            }
            // Nothing finished: back off so a polling comm thread does not take
            // a whole core from compute on a fully subscribed node.
            if progressed || active.isEmpty {
                idleRounds = 0
            } else {
                idleRounds += 1
                // After about a second without progress (an idle server rank
                // waiting for the next step plan) poll only every millisecond.
                if idleRounds > 20_000 { usleep(1000) }
                else if idleRounds > 64 { usleep(idleRounds > 1024 ? 50 : 5) } else { sched_yield() }
            }
        }
    }
}
