// Progress reports and cancellation of long calls (loading a model, a train step). The host's handler runs on the
// calling thread between two pieces of work; returning false stops the call, which then throws
// `PEFTKitError.cancelled` from a point where it has changed nothing.

/// Where a long call is: `done` of `total` units of work (the call says which unit: weight tensors read, micro-batch
/// passes and layers of a train step). `0 <= done <= total`, `total >= 1`; the last report has `done == total`.
public struct ProgressReport: Sendable, Equatable {
    public var done: Int
    public var total: Int
    /// `done / total`, in [0, 1].
    public var fraction: Double { Double(done) / Double(total) }

    public init(done: Int, total: Int) {
        self.done = done
        self.total = total
    }
}

/// A progress handler: return `true` to go on, `false` to cancel the call.
public typealias ProgressHandler = (ProgressReport) -> Bool

/// Counts the units of one call and asks the handler whether to go on.
struct ProgressCounter {
    let handler: ProgressHandler?
    let what: String
    private(set) var total: Int
    private(set) var done = 0

    init(_ handler: ProgressHandler?, total: Int, what: String) {
        self.handler = handler
        self.total = max(1, total)
        self.what = what
    }

    /// Records `units` more units of finished work and reports; throws `cancelled` when the handler says stop.
    mutating func advance(_ units: Int = 1) throws {
        try reach(done + units)
    }

    /// Records that `done` units are finished (out of `total`, when the call learns it only now) and reports.
    mutating func reach(_ done: Int, total: Int? = nil) throws {
        if let total { self.total = max(1, total) }
        self.done = min(self.total, max(self.done, done))
        guard let handler else { return }
        guard handler(ProgressReport(done: self.done, total: self.total)) else {
            throw PEFTKitError.cancelled("\(what) was cancelled by the progress handler (at \(self.done) of \(self.total))")
        }
    }
}
