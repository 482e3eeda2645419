"""Interop: two headless Chromium sessions (Debian's chromium and
chromium-driver, driven by selenium) chat through ChatApp's page: messages,
/nick, a room of their own, history for a third tab that joins it, and a
connection the server drops (/debug/drop) that the page restores with
`since`, showing every message exactly once; then a drain: two nodes through
one redis-server behind a small TCP proxy (a load balancer), the page on
node 1, which is sent SIGTERM: the page reconnects at once on close 1012
(no back-off), through the proxy to node 2, and shows every message once.
Then signed identities: a server with --auth-secret, a page opened with
its token in the address's fragment (#token=...) chats under the token's
name, and one opened without a token never connects.
Usage: browser_chat.py PATH_TO_CHATAPP. Prints 'N passed, M failed'.
"""
import base64
import hashlib
import hmac
import json
import os
import shutil
import signal
import tempfile
import time
import socket
import subprocess
import sys
import threading
import urllib.request

from common import Tally, start_chat_app, wait_for_port
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

tally = Tally()
check = tally.check


def browser():
    o = Options()
    o.add_argument("--headless=new")
    o.add_argument("--no-sandbox")
    o.add_argument("--disable-gpu")
    o.add_argument("--disable-dev-shm-usage")
    o.binary_location = "/usr/bin/chromium"
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=o)


def log_text(d):
    return d.find_element(By.ID, "log").text


def say(d, text):
    d.find_element(By.ID, "msg").send_keys(text)
    d.find_element(By.CSS_SELECTOR, "input[type=submit]").click()


def lines(d):
    return [e.text for e in d.find_elements(By.CSS_SELECTOR, "#log div")]


class Proxy:
    """A load balancer, as small as can be: a TCP proxy on a free port that
    sends each new connection to the port in `target` (which the test
    changes), bytes both ways, an end of stream passed on as a half close."""

    def __init__(self, target):
        self.target = target
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            try:
                u = socket.create_connection(("127.0.0.1", self.target))
            except OSError:
                c.close()  # the node is gone: the client sees the connection fail
                continue
            for a, b in ((c, u), (u, c)):
                threading.Thread(target=self.pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def pipe(src, dst):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        try:
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def close(self):
        self.sock.close()


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def drain_case(binary):
    """The page on node 1 (through the proxy), SIGTERM node 1: it reconnects at
    once on 1012, through the proxy to node 2, and misses nothing."""
    redis_server = shutil.which("redis-server")
    if redis_server is None:
        print("skipped the drain case: no redis-server (apt-get install redis-server)")
        return
    rport = free_port()
    redis = subprocess.Popen([redis_server, "--port", str(rport), "--bind", "127.0.0.1", "--save", "",
                              "--appendonly", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_port(rport)
    url = f"redis://127.0.0.1:{rport}"
    n1, p1 = start_chat_app(binary, extra=["--redis", url])
    n2, p2 = start_chat_app(binary, extra=["--redis", url])
    lb = Proxy(p1)
    d = e = None
    try:
        d, e = browser(), browser()
        d.get(f"http://127.0.0.1:{lb.port}/")  # through the load balancer: node 1
        e.get(f"http://127.0.0.1:{p2}/")  # the sender, on node 2
        for x in (d, e):
            WebDriverWait(x, 10).until(lambda x: "Connected." in log_text(x))
            say(x, "/join relay")
            WebDriverWait(x, 10).until(lambda x: "You are in relay." in log_text(x))
        for i in range(3):
            say(e, f"before {i}")
        WebDriverWait(d, 10).until(lambda x: "before 2" in log_text(x))
        # When the page's connection closes (and with what code), and when it opens the next.
        d.execute_script("""
            window.drain = {};
            conn.addEventListener("close", (ev) => { drain.code = ev.code; drain.closed = performance.now(); });
            const Original = window.WebSocket;
            window.WebSocket = class extends Original {
                constructor(u, p) { super(u, p); if (drain.opened === undefined) { drain.opened = performance.now(); drain.url = u; } }
            };
        """)
        lb.target = p2  # new connections go to node 2 from now on
        n1.send_signal(signal.SIGTERM)
        for i in range(3):
            say(e, f"while draining {i}")
        WebDriverWait(d, 20).until(lambda x: "while draining 2" in log_text(x))
        say(e, "after")
        WebDriverWait(d, 10).until(lambda x: "after" in lines(x)[-1])
        seen = d.execute_script("return window.drain;")
        check(f"node 1 closes the page's connection with 1012: {seen}", seen.get("code") == 1012)
        delay = seen.get("opened", 1e9) - seen.get("closed", 0)
        check(f"the page reconnects at once on 1012, without its back-off ({delay:.0f} ms)", 0 <= delay < 250)
        check(f"it asks with since: {seen.get('url')}", "since=" in (seen.get("url") or ""))
        check("the page says the server restarts", "The server is restarting; reconnecting..." in log_text(d))
        got = lines(d)
        want = [f"before {i}" for i in range(3)] + [f"while draining {i}" for i in range(3)] + ["after"]
        counts = [sum(1 for g in got if g.endswith(w)) for w in want]
        check(f"through node 2 it shows every message once: {list(zip(want, counts))}\n{got}", counts == [1] * len(want))
        check("node 1 exits 0 once the page has gone", n1.wait(timeout=15) == 0)
    except Exception as ex:  # any wait that timed out
        check(f"drain ({type(ex).__name__}: {ex})", False)
    finally:
        for x in (d, e):
            if x is not None:
                x.quit()
        lb.close()
        for p in (n1, n2):
            if p.poll() is None:
                p.terminate()
                p.wait(timeout=15)
        redis.kill()
        redis.wait()


def mint(name, secret):
    """An HS256 token for `name`, valid for an hour, as an application's
    backend would mint it (Python's standard library only)."""
    b = lambda d: base64.urlsafe_b64encode(d).rstrip(b"=").decode()
    s = b(b'{"alg":"HS256","typ":"JWT"}') + "." + b(json.dumps({"sub": name, "exp": int(time.time()) + 3600}).encode())
    return s + "." + b(hmac.new(secret, s.encode(), hashlib.sha256).digest())


def auth_case(binary):
    secret = os.urandom(32).hex().encode()
    fd, path = tempfile.mkstemp(prefix="chat-secret-")
    os.write(fd, secret + b"\n")
    os.close(fd)
    proc, port = start_chat_app(binary, extra=["--auth-secret", path])
    d = e = None
    try:
        d, e = browser(), browser()
        d.get(f"http://127.0.0.1:{port}/#token={mint('ann', secret)}")
        WebDriverWait(d, 10).until(lambda d: "Connected." in log_text(d))
        say(d, "signed hello")
        WebDriverWait(d, 10).until(lambda d: "ann: signed hello" in log_text(d))
        check("a page with a token in its fragment chats under the token's name", True)
        say(d, "/nick mallory")
        WebDriverWait(d, 10).until(lambda d: "/nick is off" in log_text(d))
        check("/nick is refused with auth on", "you are now mallory" not in log_text(d))
        e.get(f"http://127.0.0.1:{port}/")
        WebDriverWait(e, 10).until(lambda d: "Connection lost" in log_text(d))
        check("a page without a token does not connect", "Connected." not in log_text(e))
    except Exception as ex:  # any wait that timed out
        check(f"auth ({type(ex).__name__}: {ex})", False)
    finally:
        for x in (d, e):
            if x is not None:
                x.quit()
        proc.terminate()
        proc.wait(timeout=10)
        os.unlink(path)


proc, port = start_chat_app(sys.argv[1], extra=["--stats"])
a = b = c = None
try:
    a, b = browser(), browser()
    for d in (a, b):
        d.get(f"http://127.0.0.1:{port}/")
        WebDriverWait(d, 10).until(lambda d: "Connected." in log_text(d))
    check("both pages connect", True)
    box = a.find_element(By.ID, "msg")
    box.send_keys("hello from tab A")
    a.find_element(By.CSS_SELECTOR, "input[type=submit]").click()
    WebDriverWait(b, 10).until(lambda d: "hello from tab A" in log_text(d))
    check("tab B sees tab A's message", True)
    WebDriverWait(a, 10).until(lambda d: "hello from tab A" in log_text(d))
    check("tab A sees its own message", True)
    b.find_element(By.ID, "msg").send_keys("/nick bee")
    b.find_element(By.CSS_SELECTOR, "input[type=submit]").click()
    WebDriverWait(b, 10).until(lambda d: "you are now bee" in log_text(d))
    b.find_element(By.ID, "msg").send_keys("hi A")
    b.find_element(By.CSS_SELECTOR, "input[type=submit]").click()
    WebDriverWait(a, 10).until(lambda d: "bee: hi A" in log_text(d))
    check("named message reaches tab A", "you are now bee" not in log_text(a))
    # A long word wraps: the message pane never scrolls sideways.
    say(a, "x" * 400)
    WebDriverWait(a, 10).until(lambda d: "x" * 400 in log_text(d))
    wide = a.execute_script("const l = document.getElementById('log'); return [l.scrollWidth, l.clientWidth];")
    check(f"a long word wraps in the message pane (scroll width {wide[0]}, width {wide[1]})", wide[0] <= wide[1])
    # A room of their own: both join it; the room list and members follow.
    for d in (a, b):
        say(d, "/join den")
        WebDriverWait(d, 10).until(lambda d: d.find_element(By.ID, "room").text == "den"
                                   and "You are in den." in log_text(d))
    WebDriverWait(a, 15).until(lambda d: "bee" in d.find_element(By.ID, "members").text)
    check("both in room den; the page lists its members", "den (2)" in a.find_element(By.ID, "rooms").text)
    for i in range(3):
        say(a, f"before {i}")
    WebDriverWait(b, 10).until(lambda d: "before 2" in log_text(d))
    # The server drops tab B; tab A talks on while B is away; B comes back with since.
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/debug/drop?name=bee", timeout=5) as r:
        check("the server drops tab B", r.status == 200)
    WebDriverWait(b, 10).until(lambda d: "Connection lost" in log_text(d))
    for i in range(3):
        say(a, f"while away {i}")
    WebDriverWait(b, 20).until(lambda d: "while away 2" in log_text(d))
    say(a, "after")
    WebDriverWait(b, 10).until(lambda d: "after" in lines(d)[-1])
    got = lines(b)   # each message after its time
    want = [f"before {i}" for i in range(3)] + [f"while away {i}" for i in range(3)] + ["after"]
    counts = [sum(1 for g in got if g.endswith(w)) for w in want]
    check(f"tab B shows every message after its reconnect, once: {list(zip(want, counts))}\n{got}",
          counts == [1] * len(want))
    # A third tab that joins den gets its history.
    c = browser()
    c.get(f"http://127.0.0.1:{port}/")
    WebDriverWait(c, 10).until(lambda d: "Connected." in log_text(d))
    say(c, "/join den")
    WebDriverWait(c, 10).until(lambda d: "You are in den." in log_text(d))
    check("a tab joining den gets its history", all(w in log_text(c) for w in want))
    # Back to the lobby and into den again: the history comes again (the page forgets what it showed).
    say(c, "/leave")
    WebDriverWait(c, 10).until(lambda d: d.find_element(By.ID, "room").text == "lobby")
    say(c, "/join den")
    WebDriverWait(c, 10).until(lambda d: d.find_element(By.ID, "room").text == "den" and "You are in den." in log_text(d))
    check("a tab coming back to den gets its history again", all(w in log_text(c) for w in want))
except Exception as e:  # any wait that timed out
    check(f"browser chat ({type(e).__name__}: {e})", False)
finally:
    for d in (a, b, c):
        if d is not None:
            d.quit()
    proc.terminate()
    proc.wait(timeout=10)

drain_case(sys.argv[1])
auth_case(sys.argv[1])
tally.finish()
