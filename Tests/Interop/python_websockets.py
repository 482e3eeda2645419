"""Interop: Python's `websockets` package (an independent implementation)
talks to the ChatApp binary. Usage: python_websockets.py PATH_TO_CHATAPP

Checks: the handshake, masked text frames from the client, broadcasts to
every client, gorilla's newline cleaning, a ping answered with a pong, a
large message refused with close 1009, and close 1012 on SIGTERM (the drain).
Prints 'N passed, M failed' and exits non-zero on any failure.
"""
import asyncio
import signal
import sys

import websockets

from common import Tally, start_chat_app

tally = Tally()
check = tally.check


async def main(binary):
    proc, port = start_chat_app(binary)
    try:
        url = f"ws://127.0.0.1:{port}/ws?format=text"
        async with websockets.connect(url) as a, websockets.connect(url) as b:
            await a.send(" hello\nfrom python ")
            got_a = await asyncio.wait_for(a.recv(), 5)
            got_b = await asyncio.wait_for(b.recv(), 5)
            check("broadcast reaches the sender", got_a == "hello from python")
            check("broadcast reaches the other client", got_b == "hello from python")
            pong = await a.ping(b"are you there")
            await asyncio.wait_for(pong, 5)
            check("ping answered", True)
            await b.send("x" * 600)  # over the 512-byte limit
            try:
                await asyncio.wait_for(b.recv(), 5)
                check("oversized message closes with 1009", False)
            except websockets.ConnectionClosed as e:
                check("oversized message closes with 1009", e.rcvd is not None and e.rcvd.code == 1009)
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(a.recv(), 5)
                check("SIGTERM closes clients with 1012", False)
            except websockets.ConnectionClosed as e:
                check("SIGTERM closes clients with 1012", e.rcvd is not None and e.rcvd.code == 1012)
        check("server exits 0 after SIGTERM", proc.wait(timeout=10) == 0)
    finally:
        if proc.poll() is None:
            proc.kill()


asyncio.run(main(sys.argv[1]))
tally.finish()
