// ChatApp: the hub chat server (issue #5). Not built yet: the runtime comes first.
#if canImport(Glibc)
import Glibc
#endif

let message = "ChatApp: the chat server is not implemented yet (see issue #5); the GMP runtime is.\n"
_ = message.withCString { write(2, $0, strlen($0)) }
exit(1)
