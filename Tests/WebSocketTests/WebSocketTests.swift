import Testing
@testable import WebSocket
import GMP

// The WebSocket module is a placeholder until its issue is done; this checks that
// it builds and links against the runtime.
@Test func WebSocketModuleLinksRuntime() {
    #expect(GMP.procs >= 1)
}
