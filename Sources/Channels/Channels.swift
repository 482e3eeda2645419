// Channels: Go's channels and select on the GMP runtime (issue #3, not built yet).
@_exported import GMP
