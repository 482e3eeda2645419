// WebSocket: HTTP/1.1 and RFC 6455 over NetPoller connections (issue #5, not built yet).
@_exported import NetPoller
