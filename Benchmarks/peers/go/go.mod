module gmppeers

go 1.19

// Benchmarks/Driver.swift builds with a copy of this file that replaces the
// module by Debian's golang-github-gorilla-websocket-dev when it is installed
// (no network needed); otherwise `go` fetches it.
require github.com/gorilla/websocket v1.5.0
