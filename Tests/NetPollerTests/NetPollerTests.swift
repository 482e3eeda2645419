import Testing
@testable import NetPoller

// The NetPoller module is a placeholder until its issue is done; this checks that
// it builds and links against the runtime.
@Test func NetPollerModuleLinksRuntime() {
    #expect(GMP.procs >= 1)
}
