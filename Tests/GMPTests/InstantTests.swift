import GMP
import Testing

/// GMP.Instant: the one instant type (Instant.swift).
@Suite struct InstantTests {
    typealias I = GMP.Instant

    @Test("Arithmetic saturates: the distant future stays so whatever is added; overflow stops at the ends")
    func saturates() {
        let df = I.distantFuture
        #expect(df + .seconds(1) == df)
        #expect(df - .seconds(1) == df)
        #expect(df + .seconds(Int64.min) == df)
        #expect(I(nanoseconds: .max - 1) + .seconds(1) == df)
        #expect(I(nanoseconds: .min + 1) - .seconds(1) == I(nanoseconds: .min))
        #expect(I.now + .seconds(Int64.max) == df) // a duration too long for the clock: never
        #expect(I(nanoseconds: 5) + .nanoseconds(-7) == I(nanoseconds: -2))
    }

    @Test("duration(to:) and - are exact for any two instants, negative when the other is earlier")
    func differences() {
        let a = I(nanoseconds: -1), b = I.distantFuture
        #expect(a.duration(to: b) == .nanoseconds(Int64.max) + .nanoseconds(1))
        #expect(b.duration(to: a) == .zero - (.nanoseconds(Int64.max) + .nanoseconds(1)))
        #expect(I(nanoseconds: 1).duration(to: I(nanoseconds: .min)) < .zero)
        #expect(I(nanoseconds: 10) - I(nanoseconds: 3) == .nanoseconds(7))
        #expect(I(nanoseconds: 3) - I(nanoseconds: 10) == .nanoseconds(-7))
    }

    @Test("now moves forward; after(d) is about now + d; an instant passes; the description names the distant future")
    func clock() {
        let t0 = I.now
        let later = I.after(.seconds(3600))
        #expect(later > t0 && !later.hasPassed && later.remaining > .seconds(3500))
        #expect(I(nanoseconds: 0).hasPassed && I(nanoseconds: 0).remaining < .zero)
        #expect(I.now >= t0)
        #expect(I.distantFuture.description == "distantFuture")
        #expect(I(nanoseconds: 42).description == "42ns")
    }
}
