/// Errors thrown by PEFTKit. Each case carries a message meant for a person.
///
/// The C ABI maps each case to a stable status code (see `include/peftkit.h`).
public enum PEFTKitError: Error, CustomStringConvertible, Equatable {
    /// A caller-supplied argument is out of range, inconsistent or missing.
    case invalidArgument(String)
    /// A file could not be opened, read, written or renamed.
    case io(String)
    /// A file was read but its contents are malformed or inconsistent.
    case format(String)
    /// The request is valid but not supported by this build or this model.
    case unsupported(String)
    /// A named thing (adapter, tensor) does not exist.
    case notFound(String)
    /// The computation produced NaN or Inf; nothing was updated.
    case numerical(String)
    /// The object is in a state where the call is not allowed (e.g. training with no active adapter).
    case state(String)
    /// An allocation could not be made or its size overflowed.
    case outOfMemory(String)
    /// The model is in use by another call that is still running (calls on one model must not overlap); nothing
    /// was changed and the same call may succeed once the other one has returned.
    case busy(String)
    /// A progress handler asked to stop; the call changed nothing.
    case cancelled(String)

    public var message: String {
        switch self {
        case .invalidArgument(let m), .io(let m), .format(let m), .unsupported(let m),
             .notFound(let m), .numerical(let m), .state(let m), .outOfMemory(let m), .busy(let m), .cancelled(let m):
            return m
        }
    }

    public var description: String { message }
}

@inline(__always)
func require(_ cond: Bool, _ message: @autoclosure () -> String) throws {
    if !cond { throw PEFTKitError.invalidArgument(message()) }
}
