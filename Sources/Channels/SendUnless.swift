import GMP

// Send unless quit: Go's
//
//     select {
//     case c <- v:
//     case <-quit:
//     }
//
// as one call. A G that hands work to another (a request to a hub, a batch
// back to its owner, a push to a consumer) must not wait for ever once the
// other side is going away; the other side says so by closing a channel
// (`quit`, `done`, `closing`). This is a `select` with the send and a
// receive per quit channel, nothing more: when several are ready at once,
// select's random poll order picks one (the send is not preferred), and a
// value sent on a quit channel (rather than closing it) is consumed by it.

extension Chan {
    /// Sends `value` on this channel unless a quit channel becomes ready
    /// first: waits until a receiver (or room in the buffer) takes the
    /// value, or `quit` (or one of `others`) can be received from, usually
    /// because it was closed.
    ///
    /// ```swift
    /// guard requests.send(r, unless: quit) else { return nil } // stopping
    /// _ = c.send(value, unless: closing, serverQuit)           // either ends the wait
    /// ```
    ///
    /// When both the send and a quit channel are ready, one of them is
    /// chosen at random, as `select` chooses: a closed `quit` does not stop a
    /// send that can go at once every time. A value sent on a quit channel
    /// (rather than a close) is received here and lost to its other readers:
    /// signal by closing. Sending on a closed channel traps, as `send` does.
    ///
    /// - Returns: true if the value was sent; false if a quit channel was
    ///   ready first (the value was not sent, and is dropped).
    /// - Complexity: one `select` over 1 + 1 + `others.count` cases: a lock
    ///   per distinct channel, and a sudog per case if it has to wait.
    public func send<Q: Sendable, each R: Sendable>(
        _ value: T, unless quit: Chan<Q>, _ others: repeat Chan<each R>
    ) -> Bool {
        var sent = false
        select { s in
            if s.send(self, value) { sent = true }
            _ = s.receive(quit)
            for other in repeat each others { _ = s.receive(other) }
        }
        return sent
    }
}
