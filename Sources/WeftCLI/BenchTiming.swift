import Foundation
import WeftComm

/// Seconds `body` takes across the ranks: they start together (barrier) and
/// the time ends when the last one is done (barrier), so a step is as slow as
/// its slowest rank.
func secondsAcrossRanks(_ communicator: Communicator, _ body: () throws -> Void) throws -> Double {
    try communicator.barrier()
    let start = DispatchTime.now().uptimeNanoseconds
    try body()
    try communicator.barrier()
    return Double(DispatchTime.now().uptimeNanoseconds - start) * 1e-9
}

/// The median of benchmark samples (the upper one of an even count).
func median(_ samples: [Double]) -> Double {
    samples.sorted()[samples.count / 2]
}
