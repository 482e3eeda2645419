"""Interop: two headless Chromium sessions (Debian's chromium and
chromium-driver, driven by selenium) chat through ChatApp's page.
Usage: browser_chat.py PATH_TO_CHATAPP. Prints 'N passed, M failed'.
"""
import sys

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


proc, port = start_chat_app(sys.argv[1])
a = b = None
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
except Exception as e:  # any wait that timed out
    check(f"browser chat ({type(e).__name__}: {e})", False)
finally:
    for d in (a, b):
        if d is not None:
            d.quit()
    proc.terminate()
    proc.wait(timeout=10)

tally.finish()
