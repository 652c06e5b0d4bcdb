#!/usr/bin/env python3
"""Helpers for contrib/bench/http-bench (Python 3 standard library only).

  idle_conns.py hold --port P [--host 127.0.0.1] [-n 1000] [--hold 120]
      Open N TCP connections to HOST:PORT, send one keep-alive
      `GET / HTTP/1.1` on each and read its whole response, then keep all
      of them open and idle.  Prints `ready N` on stdout once every
      connection has had its response, then waits for SIGTERM/SIGINT (or
      --hold seconds, or stdin closing when --stdin is given).  On the way
      out it counts the connections the server has not closed and prints
      `alive N`.  Exit 0 when all N were opened and answered, 1 otherwise
      (a line `error ...` says why).

  idle_conns.py freeport [-n 2]
      Print N distinct free TCP ports on 127.0.0.1, one per line.

  idle_conns.py nginx-return BODYFILE
      Print an nginx `return 200 ...;` directive whose text is exactly the
      bytes of BODYFILE (quotes, backslashes and `$` escaped; `$` becomes
      the variable ${relay_bench_dollar}, which the caller must define).
"""

import argparse
import os
import resource
import select
import signal
import socket
import sys
import time


def raise_nofile(want):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY:
        want = min(want, hard)
    if soft == resource.RLIM_INFINITY or soft >= want:
        return
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    except (ValueError, OSError):
        pass


def read_response(sock, deadline):
    """Read one HTTP/1.1 response; return its status code.  Raise on error."""
    buf = b""

    def more():
        nonlocal buf
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("timed out reading the response")
        sock.settimeout(remaining)
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("server closed the connection mid-response")
        buf += chunk

    while b"\r\n\r\n" not in buf:
        more()
        if len(buf) > 1 << 20:
            raise ValueError("response header too large")
    head, _, rest = buf.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    parts = lines[0].split()
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1."):
        raise ValueError("bad status line %r" % lines[0][:80])
    status = int(parts[1])
    length = None
    chunked = False
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        value = value.strip()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
        elif name == b"connection" and b"close" in value.lower():
            raise ConnectionError("server answered with Connection: close")
    buf = rest
    if chunked:
        # Good enough for a small body: wait for the last-chunk marker.
        while not (buf.endswith(b"0\r\n\r\n")):
            more()
    elif length is not None:
        while len(buf) < length:
            more()
    elif status not in (204, 304) and not (100 <= status < 200):
        raise ValueError("response has neither Content-Length nor chunked body")
    return status


def still_open(sock):
    """True when the peer has not closed SOCK (nothing readable, or data)."""
    try:
        r, _, _ = select.select([sock], [], [], 0)
        if not r:
            return True
        sock.setblocking(False)
        data = sock.recv(1, socket.MSG_PEEK)
        return bool(data)
    except (BlockingIOError, InterruptedError):
        return True
    except OSError:
        return False


def cmd_hold(args):
    raise_nofile(args.n + 64)
    stop = {"flag": False}

    def on_signal(signum, frame):
        stop["flag"] = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    request = ("GET / HTTP/1.1\r\nHost: %s:%d\r\nUser-Agent: relay-bench-idle\r\n"
               "Accept: */*\r\n\r\n" % (args.host, args.port)).encode()
    socks = []
    ok = True
    try:
        for i in range(args.n):
            if stop["flag"]:
                raise InterruptedError("interrupted")
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            socks.append(s)
            deadline = time.monotonic() + args.timeout
            s.settimeout(args.timeout)
            s.connect((args.host, args.port))
            s.sendall(request)
            status = read_response(s, deadline)
            if not 200 <= status < 300:
                raise ValueError("connection %d: HTTP status %d" % (i + 1, status))
    except Exception as e:  # report and still count what is held
        ok = False
        print("error connection %d of %d: %s: %s"
              % (len(socks), args.n, type(e).__name__, e), flush=True)
    held = len(socks) if ok else max(0, len(socks) - 1)
    print("ready %d" % held, flush=True)

    deadline = time.monotonic() + args.hold
    while not stop["flag"] and time.monotonic() < deadline:
        if args.stdin:
            r, _, _ = select.select([sys.stdin], [], [], 0.2)
            if r and not sys.stdin.buffer.read1(4096):
                break
        else:
            time.sleep(0.05)
    alive = sum(1 for s in socks[:held] if still_open(s))
    print("alive %d" % alive, flush=True)
    for s in socks:
        try:
            s.close()
        except OSError:
            pass
    return 0 if ok else 1


def cmd_freeport(args):
    socks, ports = [], []
    try:
        while len(ports) < args.n:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
            port = s.getsockname()[1]
            if port not in ports:
                ports.append(port)
    finally:
        for s in socks:
            s.close()
    for p in ports:
        print(p)
    return 0


def cmd_nginx_return(args):
    with open(args.bodyfile, "rb") as f:
        body = f.read()
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        print("body is not UTF-8; nginx `return` cannot reproduce it",
              file=sys.stderr)
        return 1
    out = []
    for ch in text:
        if ch in ("\\", "'"):
            out.append("\\" + ch)
        elif ch == "$":
            out.append("${relay_bench_dollar}")
        else:
            out.append(ch)  # newlines are fine inside a quoted nginx string
    sys.stdout.write("return 200 '%s';\n" % "".join(out))
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    h = sub.add_parser("hold", help="open and hold idle keep-alive connections")
    h.add_argument("--host", default="127.0.0.1")
    h.add_argument("--port", type=int, required=True)
    h.add_argument("-n", type=int, default=1000)
    h.add_argument("--hold", type=float, default=120.0,
                   help="seconds to hold at most (default 120)")
    h.add_argument("--timeout", type=float, default=5.0,
                   help="seconds per connection to connect and get a response")
    h.add_argument("--stdin", action="store_true",
                   help="also stop when standard input closes")
    f = sub.add_parser("freeport", help="print free ports on 127.0.0.1")
    f.add_argument("-n", type=int, default=1)
    r = sub.add_parser("nginx-return", help="nginx return directive for a body")
    r.add_argument("bodyfile")
    args = ap.parse_args()
    if args.cmd == "hold":
        if args.host not in ("127.0.0.1", "localhost", "::1"):
            ap.error("only loopback targets are allowed")
        return cmd_hold(args)
    if args.cmd == "freeport":
        return cmd_freeport(args)
    return cmd_nginx_return(args)


if __name__ == "__main__":
    sys.exit(main())
