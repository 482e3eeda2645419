// Channels: Go's channels and select on the GMP runtime: `Chan` (Chan.swift),
// `select` (Select.swift), `SelectSet` (SelectSet.swift) and the async forms
// for Swift tasks (AsyncChan.swift). Importing Channels imports GMP too.
@_exported import GMP
