"""Interop: two headless Chromium sessions (Debian's chromium and
chromium-driver, driven by selenium) chat through ChatApp's page: messages,
/nick, a room of their own, history for a third tab that joins it, and a
connection the server drops (/debug/drop) that the page restores with
`since`, showing every message exactly once.
Usage: browser_chat.py PATH_TO_CHATAPP. Prints 'N passed, M failed'.
"""
import sys
import urllib.request

from common import Tally, start_chat_app
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

tally.finish()
