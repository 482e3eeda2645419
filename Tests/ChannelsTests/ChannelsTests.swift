import Testing
@testable import Channels

// The Channels module is a placeholder until its issue is done; this checks that
// it builds and links against the runtime.
@Test func ChannelsModuleLinksRuntime() {
    #expect(GMP.procs >= 1)
}
