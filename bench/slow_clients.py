#!/usr/bin/env python3
"""Holds N HTTP connections to a server, each sending a request head one byte at a time, and
reports the server's resident memory and open file handles: idle, while they are held, and
after they are closed (by the server's timeout, or by this script after MAX seconds).

    slow_clients.py PID PORT N EVERY_SECONDS MAX_SECONDS

Prints one line of `key=value` pairs. Bounded: N connections, MAX_SECONDS of trickling.
"""
import os
import socket
import sys
import time

pid, port, count, every, limit = (int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]),
                                   float(sys.argv[4]), float(sys.argv[5]))
HEAD = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 10_000


def rss_mib():
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def fds():
    return len(os.listdir(f"/proc/{pid}/fd"))


def is_closed(sock):
    try:
        while True:
            data = sock.recv(4096)
            if not data:
                return True
    except BlockingIOError:
        return False
    except OSError:
        return True


idle = (rss_mib(), fds())
started = time.monotonic()
socks = []
for _ in range(count):
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.sendall(HEAD[:1])
    sock.setblocking(False)
    socks.append(sock)
opened_in = time.monotonic() - started
time.sleep(1)
held = (rss_mib(), fds())
peak = held
sent = 1
last = time.monotonic()
open_socks = list(socks)
while open_socks and time.monotonic() - started < limit:
    if time.monotonic() - last >= every:
        for sock in open_socks:
            try:
                sock.send(HEAD[sent:sent + 1])
            except OSError:
                pass
        sent += 1
        last = time.monotonic()
    open_socks = [s for s in open_socks if not is_closed(s)]
    peak = (max(peak[0], rss_mib()), max(peak[1], fds()))
    time.sleep(0.1)
closed_in = time.monotonic() - started
still_open = len(open_socks)
for sock in socks:
    sock.close()
time.sleep(2)
after = (rss_mib(), fds())
print(f"idle_rss_mib={idle[0]:.1f} idle_fds={idle[1]} opened_in_s={opened_in:.1f} "
      f"held_rss_mib={held[0]:.1f} held_fds={held[1]} peak_rss_mib={peak[0]:.1f} "
      f"peak_fds={peak[1]} still_open_at_end={still_open} "
      f"{'closed_by_server_in_s' if still_open == 0 else 'gave_up_after_s'}={closed_in:.1f} "
      f"after_rss_mib={after[0]:.1f} after_fds={after[1]}")
