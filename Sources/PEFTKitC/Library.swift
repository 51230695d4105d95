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
