// Crawler: a bounded parallel web crawler, with its own tiny web site.
//
// A local server serves a few pages linking to each other (HTTP/1.0 over our
// sockets: no network needed). The crawler starts a G per new URL, but a
// semaphore channel lets at most `maxFetches` of them fetch at once; the main
// G alone keeps the set of URLs seen, so each is fetched once.
import Channels
import Contexts
import GMP
import Glibc   // exit()
import NetPoller
import Synchronization
let site = ["/": ["/about", "/blog"], "/about": ["/", "/team"], "/blog": ["/blog/1", "/blog/2", "/about"],
            "/blog/1": ["/blog/2"], "/blog/2": ["/blog/1", "/gone"], "/team": ["/"]]
let maxFetches = 2
let inFlight = Atomic<Int>(0), peak = Atomic<Int>(0)   // to check the bound
/// The server's side: one request, one response, then close (HTTP/1.0).
func servePage(_ conn: Conn) {
    defer { conn.close() }
    guard let request = try? conn.read(max: 1024) else { return }
    let path = String(decoding: request, as: UTF8.self).split(separator: " ").dropFirst().first.map(String.init) ?? ""
    GMP.sleep(for: .milliseconds(20))                      // a slow server: fetches overlap
    let links = site[path]
    let body = (links ?? []).map { "<a href=\"\($0)\">\($0)</a>" }.joined(separator: "\n")
    try? conn.write("HTTP/1.0 \(links == nil ? "404 Not Found" : "200 OK")\r\n\r\n\(body)")
}

struct Page: Sendable { var url: String, status: String, links: [String] = [] }   // what a fetch found
/// Fetches `url`; `ctx` bounds the whole crawl (a read past its deadline fails).
func fetch(_ url: String, port: Int, _ ctx: Context) -> Page {
    do {
        let conn = try Conn.dial("127.0.0.1", port, timeout: .seconds(1))
        defer { conn.close() }
        try conn.write(Array("GET \(url) HTTP/1.0\r\n\r\n".utf8), context: ctx)
        var response: [UInt8] = []
        do { while true { response += try conn.read(max: 4096, context: ctx) } } catch .endOfStream {}
        let text = String(decoding: response, as: UTF8.self)           // "HTTP/1.0 200 OK\r\n\r\n<a href=...
        let status = String(text.prefix { !$0.isNewline }.dropFirst("HTTP/1.0 ".count))
        let links = text.split(separator: "href=\"").dropFirst().map { String($0.prefix { $0 != "\"" }) }
        return Page(url: url, status: status, links: links)
    } catch { return Page(url: url, status: "error: \(error)") }
}

/// The crawl, run as a G: starts the server, crawls it, returns the pages found.
func crawlSite() -> [Page] {
    let listener = try! Listener(port: 0)                   // any free port on 127.0.0.1
    go { while let conn = try? listener.accept() { go { servePage(conn) } } }
    let (ctx, cancel) = Context.withTimeout(.background, .seconds(5))   // the whole crawl: 5 s at most
    defer { cancel(); listener.close() }
    let semaphore = Chan<Void>(capacity: maxFetches)      // holds a token per fetch in progress
    let results = Chan<Page>()
    var seen: Set<String> = [], pending = 0, pages: [Page] = []

    func crawl(_ url: String) {
        guard seen.insert(url).inserted else { return }   // de-duplicate: only the main G touches `seen`
        pending += 1
        go {
            semaphore.send(())                            // acquire: waits while maxFetches are out
            peak.max(inFlight.add(1, ordering: .relaxed).newValue, ordering: .relaxed)
            let page = fetch(url, port: listener.port, ctx)
            inFlight.subtract(1, ordering: .relaxed)
            _ = semaphore.receive()                       // release
            results.send(page)
        }
    }
    crawl("/")                                            // the first page; links lead on
    while pending > 0, case .value(let page) = results.receive() {
        pending -= 1
        pages.append(page)
        page.links.forEach(crawl)
    }
    return pages.sorted { $0.url < $1.url }
}

let pages = GMP.run(crawlSite)
for page in pages {
    print("\(page.url) \(page.status)" + (page.links.isEmpty ? "" : " -> " + page.links.joined(separator: " ")))
}
print("\(pages.count) pages, at most \(maxFetches) fetches at once")
guard pages.count == 7, peak.load(ordering: .relaxed) <= maxFetches else { print("FAIL"); exit(1) }
