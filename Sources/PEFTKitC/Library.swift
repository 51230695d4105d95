// Version, last error and process-wide settings.

import CPEFTKit
import PEFTKit

nonisolated(unsafe) private let versionCString = permanentCString("\(PEFTKIT_VERSION_MAJOR).\(PEFTKIT_VERSION_MINOR).\(PEFTKIT_VERSION_PATCH)")

@c @implementation
public func peftkit_version() -> UnsafePointer<CChar>? {
    versionCString
}

@c @implementation
public func peftkit_last_error() -> UnsafePointer<CChar>? {
    lastErrorPointer()
}

@c @implementation
public func peftkit_set_num_threads(_ n: Int32) -> peftkit_status {
    setNumThreads(Int(n))
    return PEFTKIT_OK
}

@c @implementation
public func peftkit_version_number() -> Int32 {
    PEFTKIT_VERSION_MAJOR * 10000 + PEFTKIT_VERSION_MINOR * 100 + PEFTKIT_VERSION_PATCH
}

/// The descriptions of peftkit_status_string, made once (static strings for the caller).
nonisolated(unsafe) private let statusStrings: [Int32: UnsafePointer<CChar>] = [
    PEFTKIT_OK: permanentCString("ok"),
    PEFTKIT_ERR_INVALID_ARGUMENT: permanentCString("invalid argument"),
    PEFTKIT_ERR_IO: permanentCString("I/O error"),
    PEFTKIT_ERR_FORMAT: permanentCString("malformed file"),
    PEFTKIT_ERR_UNSUPPORTED: permanentCString("not supported"),
    PEFTKIT_ERR_NOT_FOUND: permanentCString("not found"),
    PEFTKIT_ERR_NUMERICAL: permanentCString("NaN or infinity in the computation"),
    PEFTKIT_ERR_STATE: permanentCString("not allowed in the current state"),
    PEFTKIT_ERR_OUT_OF_MEMORY: permanentCString("out of memory"),
    PEFTKIT_ERR_BUFFER_TOO_SMALL: permanentCString("buffer too small"),
    PEFTKIT_ERR_INTERNAL: permanentCString("internal error"),
    PEFTKIT_ERR_BUSY: permanentCString("model in use by another call"),
    PEFTKIT_ERR_CANCELLED: permanentCString("cancelled"),
]
nonisolated(unsafe) private let unknownStatus = permanentCString("unknown status")

@c @implementation
public func peftkit_status_string(_ status: peftkit_status) -> UnsafePointer<CChar>? {
    statusStrings[status] ?? unknownStatus
}
