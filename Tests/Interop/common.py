"""Helpers shared by the interop scripts: a pass/fail tally, and starting
the ChatApp binary on a free port."""
import socket
import subprocess
import sys
import tempfile
import time


class Tally:
    """Counts checks; `finish` prints 'N passed, M failed' and exits."""

    def __init__(self):
        self.passed = self.failed = 0

    def check(self, name, ok):
        if ok:
            self.passed += 1
        else:
            self.failed += 1
            print(f"FAIL: {name}")

    def finish(self):
        print(f"{self.passed} passed, {self.failed} failed")
        sys.exit(1 if self.failed else 0)


def start_chat_app(binary, data_dir=None, port=None, extra=()):
    """Starts ChatApp on a free port (or `port`), its history in `data_dir`
    (a new temporary directory by default); waits (at most 10 s) until it
    accepts."""
    if port is None:
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
    data_dir = data_dir or tempfile.mkdtemp(prefix="chat-interop-")
    proc = subprocess.Popen([binary, "--addr", f"127.0.0.1:{port}", "--data-dir", data_dir, *extra],
                            stderr=subprocess.DEVNULL)
    wait_for_port(port)
    return proc, port


def wait_for_port(port, seconds=10):
    """Waits (at most `seconds`) until something accepts on 127.0.0.1:`port`."""
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
