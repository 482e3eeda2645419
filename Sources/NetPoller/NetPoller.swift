// NetPoller: epoll inside the scheduler, sockets whose I/O parks the G (issue #4, not built yet).
@_exported import GMP
