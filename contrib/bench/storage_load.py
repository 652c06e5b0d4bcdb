#!/usr/bin/env python3
"""Load generator for contrib/bench/storage-bench (Python 3 standard library only).

  storage_load.py insert --port P -c CLIENTS -d SECONDS [-n 200]
      CLIENTS threads, each with one keep-alive connection to 127.0.0.1:P,
      post `/bench/insert?n=N` back to back until SECONDS have passed (a
      request under way at the deadline is finished and counted).  The
      clock starts once every connection is open.  Prints
          inserted R seconds S rows_per_s X requests Q errors E
      where R sums the "inserted" of every answer (failed answers included:
      the bench plugin reports the rows it committed before the failure) and
      S runs from the start to the last answer.  Then, for a failure, one
      line per distinct kind: `error COUNT x <status> <body>` (or the
      exception).  Exit 0 when at least one request succeeded.

  storage_load.py jobs --port P -n TOTAL [-b BATCH] [--timeout 120]
      Posts `/bench/jobs?n=BATCH` until TOTAL jobs are enqueued, then polls
      `GET /bench/jobs/done` every 20 ms until TOTAL more jobs than before
      are done.  Prints
          jobs N enqueue_s E seconds S jobs_per_s X done D
      (S from the first post to the poll that saw them all done).  Exit 1
      on a failed request or when the timeout passes first (then D < N and
      `error ...` says so).

  storage_load.py get --port P PATH KEY
      Prints the member KEY of the JSON object GET PATH answers.
"""

import argparse
import http.client
import json
import sys
import threading
import time

HOST = "127.0.0.1"


def request(conn, method, path):
    conn.request(method, path, body=b"" if method == "POST" else None)
    resp = conn.getresponse()
    data = resp.read()
    return resp.status, data


def cmd_insert(args):
    path = "/bench/insert?n=%d" % args.n
    lock = threading.Lock()
    totals = {"inserted": 0, "requests": 0, "errors": 0, "ok": 0}
    errors = {}  # kind -> count
    clock = {}
    ends = []
    start = threading.Barrier(args.clients + 1)

    def note(kind, inserted):
        with lock:
            totals["errors"] += 1
            totals["inserted"] += inserted
            errors[kind] = errors.get(kind, 0) + 1

    def client():
        conn = http.client.HTTPConnection(HOST, args.port, timeout=args.timeout)
        try:
            conn.connect()
        except OSError as e:
            note("connect: %s" % e, 0)
            conn = None
        try:
            start.wait()
        except threading.BrokenBarrierError:
            return
        deadline = clock["deadline"]
        inserted = requests = ok = 0
        failures_in_a_row = 0
        while conn is not None and time.monotonic() < deadline:
            try:
                status, data = request(conn, "POST", path)
            except (OSError, http.client.HTTPException) as e:
                note("%s: %s" % (type(e).__name__, e), 0)
                conn.close()
                failures_in_a_row += 1
                if failures_in_a_row >= 5:
                    break
                conn = http.client.HTTPConnection(HOST, args.port, timeout=args.timeout)
                continue
            requests += 1
            try:
                doc = json.loads(data)
            except ValueError:
                doc = None
            if status == 200 and isinstance(doc, dict) and doc.get("inserted") == args.n:
                inserted += args.n
                ok += 1
                failures_in_a_row = 0
                continue
            got = 0
            if isinstance(doc, dict):
                err = doc.get("error")
                if isinstance(err, dict) and isinstance(err.get("inserted"), int):
                    got = err["inserted"]
                elif isinstance(doc.get("inserted"), int):
                    got = doc["inserted"]
            text = data.decode("utf-8", "replace").strip()
            note("%d %s" % (status, text[:300]), got)
            failures_in_a_row += 1
            if failures_in_a_row >= 50:
                break
        end = time.monotonic()
        with lock:
            totals["inserted"] += inserted
            totals["requests"] += requests
            totals["ok"] += ok
            ends.append(end)
        if conn is not None:
            conn.close()

    threads = [threading.Thread(target=client, daemon=True) for _ in range(args.clients)]
    for t in threads:
        t.start()
    # the barrier opens once every client has connected (or failed to)
    t0 = time.monotonic()
    clock["deadline"] = t0 + args.seconds
    start.wait()
    for t in threads:
        t.join(args.seconds + args.timeout + 30)
    alive = sum(t.is_alive() for t in threads)
    elapsed = (max(ends) if ends else time.monotonic()) - t0
    rate = totals["inserted"] / elapsed if elapsed > 0 else 0.0
    print("inserted %d seconds %.3f rows_per_s %.1f requests %d errors %d"
          % (totals["inserted"], elapsed, rate, totals["requests"], totals["errors"]))
    for kind, count in sorted(errors.items(), key=lambda kv: -kv[1]):
        print("error %d x %s" % (count, kind))
    if alive:
        print("error %d client threads still waiting for an answer" % alive)
    return 0 if totals["ok"] > 0 else 1


def get_json(conn, path):
    status, data = request(conn, "GET", path)
    if status != 200:
        raise RuntimeError("GET %s: %d %s" % (path, status, data.decode("utf-8", "replace")[:300]))
    return json.loads(data)


def cmd_jobs(args):
    conn = http.client.HTTPConnection(HOST, args.port, timeout=30)
    try:
        before = get_json(conn, "/bench/jobs/done")["done"]
        t0 = time.monotonic()
        left = args.total
        while left > 0:
            n = min(args.batch, left)
            status, data = request(conn, "POST", "/bench/jobs?n=%d" % n)
            if status != 200:
                print("error POST /bench/jobs?n=%d: %d %s" % (n, status, data.decode("utf-8", "replace")[:300]))
                return 1
            left -= n
        t_enq = time.monotonic() - t0
        deadline = t0 + args.timeout
        done = 0
        while True:
            done = get_json(conn, "/bench/jobs/done")["done"] - before
            now = time.monotonic()
            if done >= args.total or now > deadline:
                break
            time.sleep(0.02)
        elapsed = now - t0
    except (OSError, http.client.HTTPException, RuntimeError, ValueError, KeyError) as e:
        print("error %s: %s" % (type(e).__name__, e))
        return 1
    print("jobs %d enqueue_s %.3f seconds %.3f jobs_per_s %.1f done %d"
          % (args.total, t_enq, elapsed, done / elapsed if elapsed > 0 else 0.0, done))
    if done < args.total:
        print("error only %d of %d jobs done after %.0f s" % (done, args.total, args.timeout))
        return 1
    return 0


def cmd_get(args):
    conn = http.client.HTTPConnection(HOST, args.port, timeout=30)
    try:
        doc = get_json(conn, args.path)
        print(doc[args.key])
    except (OSError, http.client.HTTPException, RuntimeError, ValueError, KeyError) as e:
        print("storage_load.py: %s: %s" % (type(e).__name__, e), file=sys.stderr)
        return 1
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    i = sub.add_parser("insert", help="concurrent POST /bench/insert")
    i.add_argument("--port", type=int, required=True)
    i.add_argument("-c", "--clients", type=int, required=True)
    i.add_argument("-d", "--seconds", type=float, required=True)
    i.add_argument("-n", type=int, default=200, help="rows (transactions) per request")
    i.add_argument("--timeout", type=float, default=30, help="socket timeout per request")
    j = sub.add_parser("jobs", help="enqueue no-op jobs and wait until they are done")
    j.add_argument("--port", type=int, required=True)
    j.add_argument("-n", "--total", type=int, required=True)
    j.add_argument("-b", "--batch", type=int, default=1000)
    j.add_argument("--timeout", type=float, default=120)
    g = sub.add_parser("get", help="print one member of a JSON answer")
    g.add_argument("--port", type=int, required=True)
    g.add_argument("path")
    g.add_argument("key")
    args = ap.parse_args()
    if args.cmd == "insert":
        if args.clients < 1 or args.seconds <= 0 or args.n < 1:
            ap.error("clients, seconds and n must be positive")
        return cmd_insert(args)
    if args.cmd == "jobs":
        if args.total < 1 or args.batch < 1:
            ap.error("total and batch must be positive")
        return cmd_jobs(args)
    return cmd_get(args)


if __name__ == "__main__":
    sys.exit(main())
