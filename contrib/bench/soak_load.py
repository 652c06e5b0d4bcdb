#!/usr/bin/env python3
"""The load generator of contrib/bench/soak (Python 3 standard library only).

  soak_load.py --port P --credentials FILE [--duration S] [--conns N]
               [--procs N] [--interval S] [--flood-conns N] [--mix SPEC]
               [--daemon-pid PID] [--sqlite PATH | --psql "ARGS"]
               [--drain S] [--results FILE]

Mixed RelaySync traffic from N keep-alive connections spread over PROCS
processes (asyncio, hand-written HTTP/1.1: no thread per connection, no
http.client), for DURATION seconds.  Each connection belongs to one of the
normal tenants of FILE ({"tenants": [{"id", "token"}...], "flood":
{"id", "token"}}) and draws its requests from the mix:

  create   POST /v1/records with a new Idempotency-Key       201
  replay   the same POST again (same key, same body)         201 + Idempotent-Replayed, same id
  read     GET /v1/records/:id of a record it made           200
  list     GET /v1/records?limit=50 (sometimes ?status=)     200
  patch    PATCH /v1/records/:id of its own, current causal  200
  feed     GET /v1/sync/changes?since=<its cursor>&limit=100 200
  push     POST /v1/sync/push: 3 creates + 1 update          200, every item applied
  delete   DELETE /v1/records/:id?causal= of its own         200

A connection only changes records it made, one request at a time, so no
409 is expected; the sync plugin's record.sync jobs mark records synced
meanwhile without changing their causal token.  FLOOD connections of one
more tenant send GET /v1/records?limit=10 as fast as they can: their 429s
are the intended ones.  Anything else (a status other than expected, a 429
for a normal tenant, a malformed answer, a connection error or timeout) is
an error.

Every INTERVAL seconds one line: requests/s, 2xx, intended 429, errors,
p50/p99/max latency of that interval, the daemon's VmRSS, its CPU and the
generator's CPU (shares of one CPU), and the outbound job backlog (queued
+ running jobs, read from the database).  At the end: a line per request
kind, the totals, the backlog drain, and the records created against
records_records.  --results FILE also writes tab-separated lines.
Exit 0 when the run happened (whatever the errors); 1 when it could not
be run (no connection at start, a worker process failed).
"""

import argparse
import array
import asyncio
import json
import multiprocessing as mp
import os
import random
import subprocess
import sys
import time

OPS = ("create", "replay", "read", "list", "patch", "feed", "push", "delete")
DEFAULT_MIX = "create=20,replay=5,read=25,list=10,patch=12,feed=12,push=8,delete=3"
TYPES = ("inspection", "repair", "survey", "photo")
SITES = ("alpha", "bravo", "charlie", None)
STATUSES = ("draft", "queued", "synced", "failed")
TIMEOUT = 30.0


def parse_mix(spec):
    weights = {}
    for part in spec.split(","):
        name, _, w = part.partition("=")
        name = name.strip()
        if name not in OPS or not w.strip().isdigit():
            raise SystemExit("soak_load: bad --mix item %r (kinds: %s)" % (part, ", ".join(OPS)))
        weights[name] = int(w)
    if not any(weights.values()):
        raise SystemExit("soak_load: --mix has no weight")
    return weights


class Answer:
    __slots__ = ("status", "headers", "body")

    def __init__(self, status, headers, body):
        self.status, self.headers, self.body = status, headers, body


class Conn:
    """One keep-alive connection (reconnects after a close).  CRED: a
    tenant's {"token"} (sent as a bearer token) or {"key"} (X-API-Key)."""

    def __init__(self, port, cred):
        self.port = port
        if cred.get("token"):
            self.auth = ("Authorization: Bearer %s\r\n" % cred["token"]).encode()
        else:
            self.auth = ("X-API-Key: %s\r\n" % cred["key"]).encode()
        self.reader = self.writer = None

    async def open(self):
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)

    def close(self):
        if self.writer:
            self.writer.close()
        self.reader = self.writer = None

    async def call(self, method, path, body=None, idem=None):
        if self.writer is None:
            await self.open()
        head = b"%s %s HTTP/1.1\r\nHost: soak\r\n" % (method.encode(), path.encode()) + self.auth
        if idem:
            head += b"Idempotency-Key: %s\r\n" % idem.encode()
        if body is not None:
            data = json.dumps(body, separators=(",", ":")).encode()
            head += b"Content-Type: application/json\r\nContent-Length: %d\r\n" % len(data)
        else:
            data = b""
        self.writer.write(head + b"\r\n" + data)
        raw = await self.reader.readuntil(b"\r\n\r\n")
        lines = raw.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            if line:
                k, _, v = line.partition(":")
                headers[k.strip().lower()] = v.strip()
        n = int(headers.get("content-length", "0"))
        payload = await self.reader.readexactly(n) if n else b""
        if headers.get("connection", "").lower() == "close":
            self.close()
        return Answer(status, headers, payload)


class Stats:
    """What one process saw in one interval."""

    def __init__(self):
        self.lat = {op: array.array("d") for op in OPS + ("flood",)}
        self.ok = dict.fromkeys(OPS + ("flood",), 0)
        self.limited = 0       # intended 429s (flood tenant)
        self.errors = {}       # (op, what) -> count
        self.examples = {}     # (op, what) -> one example
        self.created = 0       # records this interval created (POST 201 new + pushed creates)

    def error(self, op, what, example=""):
        key = (op, what)
        self.errors[key] = self.errors.get(key, 0) + 1
        self.examples.setdefault(key, example[:300])

    def dump(self):
        return {"lat": {op: a.tobytes() for op, a in self.lat.items()}, "ok": self.ok, "limited": self.limited,
                "errors": [[op, what, n, self.examples[(op, what)]] for (op, what), n in self.errors.items()],
                "created": self.created}


class Client:
    """A normal tenant's connection: its own records and feed cursor."""

    def __init__(self, port, tenant, weights, rnd, tag):
        self.conn = Conn(port, tenant)
        self.weights = weights
        self.kinds = [op for op in OPS if weights.get(op)]
        self.cum = []
        total = 0
        for op in self.kinds:
            total += weights[op]
            self.cum.append(total)
        self.total = total
        self.rnd, self.tag = rnd, tag
        self.own = []          # [id, causal] of live records it made
        self.recent = []       # (key, body, id) of recent creates, for replays
        self.cursor = None
        self.n = 0

    def pick(self):
        x = self.rnd.random() * self.total
        for op, c in zip(self.kinds, self.cum):
            if x < c:
                break
        if op in ("read", "patch", "delete") and not self.own:
            return "create"
        if op == "replay" and not self.recent:
            return "create"
        return op

    def new_record(self):
        self.n += 1
        body = {"title": "soak %s-%d" % (self.tag, self.n), "type": self.rnd.choice(TYPES),
                "payload": {"n": self.n, "reading": self.rnd.random(), "note": "x" * self.rnd.randrange(0, 400)}}
        site = self.rnd.choice(SITES)
        if site:
            body["site"] = site
        return "soak-%s-%d" % (self.tag, self.n), body

    async def step(self, op):
        """One request: (answer, problem or None, records created)."""
        c, rnd = self.conn, self.rnd
        created = 0
        if op == "create":
            key, body = self.new_record()
            a = await c.call("POST", "/v1/records", body, idem=key)
            if a.status != 201:
                return a, "status %d" % a.status, 0
            doc = json.loads(a.body)
            self.own.append([doc["id"], doc["causal"]])
            self.recent.append((key, body, doc["id"]))
            del self.recent[:-50]
            created = 1
        elif op == "replay":
            key, body, rid = rnd.choice(self.recent)
            a = await c.call("POST", "/v1/records", body, idem=key)
            if a.status != 201 or a.headers.get("idempotent-replayed") != "true":
                return a, "status %d replayed=%s" % (a.status, a.headers.get("idempotent-replayed")), 0
            if json.loads(a.body)["id"] != rid:
                return a, "replay with another id", 0
        elif op == "read":
            rid = rnd.choice(self.own)[0]
            a = await c.call("GET", "/v1/records/" + rid)
            if a.status != 200:
                return a, "status %d" % a.status, 0
        elif op == "list":
            path = "/v1/records?limit=50"
            if rnd.random() < 0.3:
                path += "&status=" + rnd.choice(STATUSES)
            a = await c.call("GET", path)
            if a.status != 200:
                return a, "status %d" % a.status, 0
        elif op == "patch":
            rec = rnd.choice(self.own)
            patch = {"payload": {"reading": rnd.random()}, "causal": rec[1]}
            if rnd.random() < 0.5:
                patch["status"] = rnd.choice(STATUSES)
            a = await c.call("PATCH", "/v1/records/" + rec[0], patch, idem="soak-%s-p%d" % (self.tag, self.n))
            self.n += 1
            if a.status != 200:
                return a, "status %d" % a.status, 0
            rec[1] = json.loads(a.body)["causal"]
        elif op == "feed":
            path = "/v1/sync/changes?limit=100"
            if self.cursor:
                path += "&since=" + self.cursor
            a = await c.call("GET", path)
            if a.status != 200:
                return a, "status %d" % a.status, 0
            self.cursor = json.loads(a.body)["next_cursor"]
        elif op == "push":
            items = []
            for _ in range(3):
                key, body = self.new_record()
                items.append({"op": "create", "idempotency_key": key, "record": body})
            upd = rnd.choice(self.own) if self.own else None
            if upd:
                items.append({"op": "update", "idempotency_key": "soak-%s-u%d" % (self.tag, self.n), "id": upd[0],
                              "causal": upd[1], "patch": {"payload": {"pushed": True}}})
            a = await c.call("POST", "/v1/sync/push", {"changes": items})
            if a.status != 200:
                return a, "status %d" % a.status, 0
            results = json.loads(a.body)["results"]
            bad = [r for r in results if r["outcome"] != "applied"]
            if bad:
                return a, "push item %s" % bad[0]["outcome"], 0
            for r, item in zip(results, items):
                if item["op"] == "create":
                    self.own.append([r["record"]["id"], r["record"]["causal"]])
                    created += 1
                else:
                    upd[1] = r["record"]["causal"]
        elif op == "delete":
            i = rnd.randrange(len(self.own))
            rid, causal = self.own[i]
            a = await c.call("DELETE", "/v1/records/%s?causal=%s" % (rid, causal))
            if a.status != 200:
                return a, "status %d" % a.status, 0
            self.own.pop(i)
        return a, None, created


async def flood_loop(port, cred, st_of, stop_at):
    conn = Conn(port, cred)
    while time.monotonic() < stop_at:
        t0 = time.monotonic()
        st = st_of(t0)
        try:
            a = await asyncio.wait_for(conn.call("GET", "/v1/records?limit=10"), TIMEOUT)
        except Exception as e:  # counted, and the connection starts over
            conn.close()
            st.error("flood", type(e).__name__, repr(e))
            await asyncio.sleep(0.05)
            continue
        t1 = time.monotonic()
        st = st_of(t1)
        if a.status == 200:
            st.ok["flood"] += 1
            st.lat["flood"].append(t1 - t0)
        elif a.status == 429 and a.headers.get("retry-after"):
            st.limited += 1
        else:
            st.error("flood", "status %d" % a.status, a.body.decode("utf-8", "replace"))
    conn.close()


async def client_loop(client, st_of, stop_at):
    while time.monotonic() < stop_at:
        op = client.pick()
        t0 = time.monotonic()
        try:
            a, problem, created = await asyncio.wait_for(client.step(op), TIMEOUT)
        except Exception as e:  # counted, and the connection starts over
            client.conn.close()
            st_of(time.monotonic()).error(op, type(e).__name__, repr(e))
            await asyncio.sleep(0.05)
            continue
        t1 = time.monotonic()
        st = st_of(t1)
        st.created += created
        if problem:
            what = problem if not (a.status == 429) else "429 (normal tenant)"
            st.error(op, what, a.body.decode("utf-8", "replace"))
        else:
            st.ok[op] += 1
            st.lat[op].append(t1 - t0)
    client.conn.close()


def worker(idx, args, creds, n_conns, n_flood, t0, queue):
    """One load process: N_CONNS normal connections and N_FLOOD flood ones."""
    try:
        rnd = random.Random(args.seed * 1000 + idx)
        weights = parse_mix(args.mix)
        stop_at = t0 + args.duration
        stats = {}
        loops = []

        last = max(0, int((args.duration + args.interval - 1e-9) // args.interval) - 1)

        def st_of(t):
            # what completes after the end (begun before it) counts in the last interval
            k = min(last, max(0, int((t - t0) // args.interval)))
            if k not in stats:
                stats[k] = Stats()
            return stats[k]

        async def reporter():
            sent = 0
            while True:
                now = time.monotonic()
                done_upto = int((now - t0) // args.interval)  # intervals before this one are closed
                while sent < min(done_upto, last) and t0 + sent * args.interval < stop_at:
                    queue.put(("interval", idx, sent, stats.pop(sent, Stats()).dump()))
                    sent += 1
                if now >= stop_at and all(t.done() for t in loops):
                    while t0 + sent * args.interval < stop_at:
                        queue.put(("interval", idx, sent, stats.pop(sent, Stats()).dump()))
                        sent += 1
                    return
                await asyncio.sleep(0.1)

        async def main():
            tenants = creds["tenants"]
            clients = [Client(args.port, tenants[(idx + i * args.procs) % len(tenants)], weights,
                              random.Random(rnd.random()), "%d.%d.%d" % (args.seed, idx, i))
                       for i in range(n_conns)]
            for c in clients:
                await c.conn.open()
            await asyncio.sleep(max(0.0, t0 - time.monotonic()))
            loops.extend(asyncio.ensure_future(client_loop(c, st_of, stop_at)) for c in clients)
            loops.extend(asyncio.ensure_future(flood_loop(args.port, creds["flood"], st_of, stop_at))
                         for _ in range(n_flood))
            await asyncio.gather(reporter(), *loops)

        asyncio.run(main())
        queue.put(("done", idx, None, None))
    except BaseException as e:
        queue.put(("failed", idx, repr(e), None))
        raise


# ------------------------------------------------------------------ readings

def proc_ticks(pids):
    total = 0
    for pid in pids:
        try:
            with open("/proc/%d/stat" % pid) as f:
                rest = f.read().rsplit(")", 1)[1].split()
            total += int(rest[11]) + int(rest[12])
        except (OSError, IndexError, ValueError):
            pass
    return total


def rss_mib(pid):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


def db_scalar(args, sql):
    try:
        if args.sqlite:
            import sqlite3
            con = sqlite3.connect("file:%s?mode=ro" % args.sqlite, uri=True, timeout=2)
            try:
                return int(con.execute(sql).fetchone()[0])
            finally:
                con.close()
        if args.psql:
            out = subprocess.run(["psql", "-X", "-q", "-A", "-t"] + args.psql.split() + ["-c", sql],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=10)
            return int(out.stdout.decode().strip()) if out.returncode == 0 else None
    except Exception:
        return None
    return None


BACKLOG_SQL = "SELECT COUNT(*) FROM relay_jobs WHERE state IN ('queued', 'running')"


def pct(sorted_values, p):
    if not sorted_values:
        return None
    i = min(len(sorted_values) - 1, max(0, int(round(p / 100.0 * len(sorted_values) + 0.5)) - 1))
    return sorted_values[i]


def ms(v):
    return "-" if v is None else ("%.1f" % (v * 1000) if v < 10 else "%.0f" % (v * 1000))


# -------------------------------------------------------------------- parent

def exchange(port, key):
    """A bearer token for the API key KEY (POST /v1/auth/token)."""
    import http.client
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("POST", "/v1/auth/token", body=json.dumps({"api_key": key}),
                     headers={"Content-Type": "application/json"})
        r = conn.getresponse()
        body = r.read()
        if r.status != 200:
            raise SystemExit("soak_load: POST /v1/auth/token answered %d: %r" % (r.status, body[:200]))
        return json.loads(body)["token"]
    finally:
        conn.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--credentials", required=True)
    ap.add_argument("--duration", type=float, default=180)
    ap.add_argument("--conns", type=int, default=64)
    ap.add_argument("--procs", type=int, default=1)
    ap.add_argument("--interval", type=float, default=5)
    ap.add_argument("--flood-conns", type=int, default=2)
    ap.add_argument("--mix", default=DEFAULT_MIX)
    ap.add_argument("--daemon-pid", type=int, default=0)
    ap.add_argument("--sqlite")
    ap.add_argument("--psql", help="psql connection arguments, e.g. '-h 127.0.0.1 -p 5432 -U relay -d postgres'")
    ap.add_argument("--drain", type=float, default=60, help="seconds to wait for the job backlog to drain")
    ap.add_argument("--auth", choices=("token", "key"), default="token",
                    help="token: bearer tokens from POST /v1/auth/token; key: the API keys (X-API-Key)")
    ap.add_argument("--seed", type=int, default=int(time.time()) % 100000)
    ap.add_argument("--results")
    args = ap.parse_args()
    parse_mix(args.mix)
    with open(args.credentials) as f:
        creds = json.load(f)
    if not creds.get("tenants") or not creds.get("flood"):
        raise SystemExit("soak_load: no tenants or no flood tenant in %s" % args.credentials)
    if args.auth == "token":
        for cred in creds["tenants"] + [creds["flood"]]:
            cred["token"] = exchange(args.port, cred["key"])
    procs = max(1, min(args.procs, args.conns))
    per = [args.conns // procs + (1 if i < args.conns % procs else 0) for i in range(procs)]
    flood = [args.flood_conns // procs + (1 if i < args.flood_conns % procs else 0) for i in range(procs)]

    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    t0 = time.monotonic() + 1.0 + 0.02 * args.conns  # connections open first, then everyone starts
    children = [ctx.Process(target=worker, args=(i, args, creds, per[i], flood[i], t0, queue), daemon=True)
                for i in range(procs)]
    for ch in children:
        ch.start()
    child_pids = [ch.pid for ch in children]
    hz = os.sysconf("SC_CLK_TCK")
    n_intervals = int((args.duration + args.interval - 1e-9) // args.interval)

    print("%6s %8s %8s %6s %6s %8s %8s %8s %8s %7s %7s %8s" % (
        "t(s)", "req/s", "2xx", "429", "errors", "p50 ms", "p99 ms", "max ms", "RSS MiB", "srv CPU", "gen CPU",
        "backlog"))
    sys.stdout.flush()
    while time.monotonic() < t0:
        time.sleep(0.01)
    srv0, gen0, tprev = proc_ticks([args.daemon_pid]), proc_ticks(child_pids), t0
    got = {}
    totals = {"lat": {op: array.array("d") for op in OPS + ("flood",)}, "ok": dict.fromkeys(OPS + ("flood",), 0),
              "limited": 0, "errors": {}, "examples": {}, "created": 0}
    rows, done, failed = [], set(), []
    printed = 0
    rss_series = []
    while printed < n_intervals:
        try:
            kind, idx, k, payload = queue.get(timeout=args.interval * 3 + TIMEOUT)
        except Exception:
            failed.append("no report from the load processes for %.0fs" % (args.interval * 3 + TIMEOUT))
            break
        if kind == "failed":
            failed.append("load process %d failed: %s" % (idx, k))
            break
        if kind == "done":
            done.add(idx)
            continue
        got.setdefault(k, []).append(payload)
        while printed < n_intervals and len(got.get(printed, [])) == procs:
            parts = got.pop(printed)
            now = time.monotonic()
            srv1, gen1 = proc_ticks([args.daemon_pid]), proc_ticks(child_pids)
            span = now - tprev
            srv_cpu = (srv1 - srv0) / hz / span * 100 if span > 0 else 0
            gen_cpu = (gen1 - gen0) / hz / span * 100 if span > 0 else 0
            srv0, gen0, tprev = srv1, gen1, now
            lat = array.array("d")
            ok = limited = errors = 0
            for p in parts:
                for op, raw in p["lat"].items():
                    a = array.array("d")
                    a.frombytes(raw)
                    lat.extend(a)
                    totals["lat"][op].extend(a)
                for op, n in p["ok"].items():
                    ok += n
                    totals["ok"][op] += n
                limited += p["limited"]
                totals["limited"] += p["limited"]
                totals["created"] += p["created"]
                for op, what, n, ex in p["errors"]:
                    errors += n
                    totals["errors"][(op, what)] = totals["errors"].get((op, what), 0) + n
                    totals["examples"].setdefault((op, what), ex)
            s = sorted(lat)
            width = min(args.interval, args.duration - printed * args.interval)
            rss = rss_mib(args.daemon_pid) if args.daemon_pid else None
            rss_series.append(rss)
            backlog = db_scalar(args, BACKLOG_SQL)
            row = {"t": (printed + 1) * args.interval if width == args.interval else args.duration,
                   "rps": (ok + limited + errors) / width, "ok": ok, "limited": limited, "errors": errors,
                   "p50": pct(s, 50), "p99": pct(s, 99), "max": s[-1] if s else None, "rss": rss,
                   "srv_cpu": srv_cpu, "gen_cpu": gen_cpu, "backlog": backlog}
            rows.append(row)
            print("%6.0f %8.0f %8d %6d %6d %8s %8s %8s %8s %6.0f%% %6.0f%% %8s" % (
                row["t"], row["rps"], ok, limited, errors, ms(row["p50"]), ms(row["p99"]), ms(row["max"]),
                "-" if rss is None else "%.1f" % rss, srv_cpu, gen_cpu, "-" if backlog is None else backlog))
            sys.stdout.flush()
            printed += 1
    for ch in children:
        ch.join(TIMEOUT)
    if failed:
        for f in failed:
            print("soak_load: error: " + f, file=sys.stderr)
        sys.exit(1)

    # ---- the drain: what the outbound queue still has to do
    t_end = time.monotonic()
    backlog = db_scalar(args, BACKLOG_SQL)
    drained = None
    while backlog and time.monotonic() - t_end < args.drain:
        time.sleep(0.5)
        backlog = db_scalar(args, BACKLOG_SQL)
    if backlog == 0:
        drained = time.monotonic() - t_end
    rss_after = rss_mib(args.daemon_pid) if args.daemon_pid else None

    # ---- per request kind
    print()
    print("%-8s %9s %8s %8s %8s %8s %8s" % ("request", "count", "req/s", "p50 ms", "p99 ms", "max ms", "errors"))
    err_by_op = {}
    for (op, what), n in totals["errors"].items():
        err_by_op[op] = err_by_op.get(op, 0) + n
    all_lat = array.array("d")
    tsv = []
    for op in OPS + ("flood",):
        s = sorted(totals["lat"][op])
        all_lat.extend(s)
        n = totals["ok"][op] + (totals["limited"] if op == "flood" else 0) + err_by_op.get(op, 0)
        if not n:
            continue
        label = op if op != "flood" else "flood*"
        print("%-8s %9d %8.0f %8s %8s %8s %8d" % (label, n, n / args.duration, ms(pct(s, 50)), ms(pct(s, 99)),
                                                  ms(s[-1] if s else None), err_by_op.get(op, 0)))
        tsv += ["%s\trps\t%.1f" % (op, n / args.duration), "%s\tp99_ms\t%s" % (op, ms(pct(s, 99))),
                "%s\terrors\t%d" % (op, err_by_op.get(op, 0))]
    s = sorted(all_lat)
    n_all = len(all_lat) + totals["limited"] + sum(err_by_op.values())
    print("%-8s %9d %8.0f %8s %8s %8s %8d" % ("all", n_all, n_all / args.duration, ms(pct(s, 50)), ms(pct(s, 99)),
                                              ms(s[-1] if s else None), sum(err_by_op.values())))
    print("  (* flood: the flooding tenant's GET /v1/records; its %d answers 429 are the intended ones,"
          " latencies are of its 200s)" % totals["limited"])
    rss_known = [r for r in rss_series if r is not None]
    if rss_known:
        print("RSS: first interval %.1f MiB, last %.1f MiB, peak %.1f MiB, after the drain %s MiB" % (
            rss_known[0], rss_known[-1], max(rss_known), "-" if rss_after is None else "%.1f" % rss_after))
    print("outbound backlog: %s" % ("drained %.1fs after the load" % drained if drained is not None else
                                    "%s jobs still queued or running %.0fs after the load" % (backlog, args.drain)))
    rows_now = db_scalar(args, "SELECT COUNT(*) FROM records_records")
    print("records: %d created with a 2xx; records_records holds %s rows%s" % (
        totals["created"], "-" if rows_now is None else rows_now,
        "" if rows_now is None or rows_now == totals["created"] else
        "  WRONG COUNT (errors above may explain: a create whose answer was lost)"))
    normal = sum(totals["ok"][op] for op in OPS) + sum(n for (op, _), n in totals["errors"].items() if op != "flood")
    print("tenants: %d normal ones at %.0f requests/s each on average (records and sync have a bucket each);"
          " the flooding one at %.0f/s" % (len(creds["tenants"]), normal / args.duration / len(creds["tenants"]),
                                          (totals["ok"]["flood"] + totals["limited"]) / args.duration))
    gen_cpu_avg = sum(r["gen_cpu"] for r in rows) / len(rows) if rows else 0
    srv_cpu_avg = sum(r["srv_cpu"] for r in rows) / len(rows) if rows else 0
    print("CPU: relay-server %.0f%%, load generator %.0f%% over %d process(es) (shares of one CPU, averaged)" % (
        srv_cpu_avg, gen_cpu_avg, procs))
    n_err = sum(err_by_op.values())
    if n_err:
        print("errors (other than the flooding tenant's 429s): %d" % n_err)
        for (op, what), n in sorted(totals["errors"].items(), key=lambda x: -x[1])[:20]:
            print("  %-7s %-28s %7d  e.g. %s" % (op, what, n, totals["examples"][(op, what)][:160]))
    else:
        print("errors: none (other than the flooding tenant's %d intended 429s)" % totals["limited"])
    if args.results:
        with open(args.results, "w") as f:
            for r in rows:
                for key in ("rps", "ok", "limited", "errors", "p50", "p99", "max", "rss", "srv_cpu", "gen_cpu",
                            "backlog"):
                    f.write("interval\t%.0f\t%s\t%s\n" % (r["t"], key, r[key]))
            for line in tsv:
                f.write("total\t" + line + "\n")
            f.write("total\tall\terrors\t%d\n" % n_err)
            f.write("total\tall\tlimited\t%d\n" % totals["limited"])
            f.write("total\tall\tdrain_s\t%s\n" % ("" if drained is None else "%.1f" % drained))
    print("SUMMARY errors=%d limited=%d rps=%.1f p99_ms=%s rss_first=%s rss_peak=%s gen_cpu=%.0f srv_cpu=%.0f" % (
        n_err, totals["limited"], n_all / args.duration, ms(pct(s, 99)),
        "%.1f" % rss_known[0] if rss_known else "-", "%.1f" % max(rss_known) if rss_known else "-",
        gen_cpu_avg, srv_cpu_avg))


if __name__ == "__main__":
    main()
