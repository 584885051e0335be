import Testing

@testable import Proxy

/// The parts of a list query Depot reads itself when it pages over images it owes Glance.
@Suite struct ImageListQueryTests {
    /// `sort=:` names no key: an invalid sort (Glance answers 400), where indexing its parts trapped.
    @Test func aSortItemWithoutAKeyIsInvalid() {
        #expect(ImageListQuery(query: "sort=:").sort == nil)
        #expect(ImageListQuery(query: "sort=name:asc,:").sort == nil)
        #expect(ImageListQuery(query: "sort=name:asc").sort?.first?.key == "name")
    }

    /// A negative limit reads as 0 (Glance refuses it before Depot pages; a prefix of
    /// negative length traps), a huge one as itself.
    @Test func aLimitIsNeverNegative() {
        #expect(ImageListQuery(query: "limit=-1").limit == 0)
        #expect(ImageListQuery(query: "limit=9223372036854775807").limit == Int.max)
        #expect(ImageListQuery(query: "limit=3").limit == 3)
        #expect(ImageListQuery(query: "limit=x").limit == nil)
    }
}
