"""A webhook receiver for the webhooks e2e tests (stdlib only), run as its
own process so the daemon delivers over real sockets:

    python3 webhook_receiver.py PORTFILE [HOST]

It listens on HOST (127.0.0.1 by default; a free port, written to PORTFILE once it
listens), records every request to any path (method, path, headers,
body, arrival time) and answers from the path's script.  The test drives
it over the control routes under /_ctl/:

    POST /_ctl/script  {"path": "/h/x", "steps": [STEP, ...]}
        STEP is "500" (a status), or {"status": 429, "headers": {...},
        "body": "...", "delay": 2.5, "hold": true}.  Each request takes
        the next step; the last one repeats.  No script: 200.  "hold"
        keeps the request open until POST /_ctl/release (or 30 s).
    GET  /_ctl/requests?path=/h/x    [{"method","path","headers","body","t"}, ...]
    POST /_ctl/release?path=/h/x     ends the path's held requests (they answer their step's status)

Headers are given with lowercased names; "t" is time.time() at arrival;
"peer_port" the sender's port (the same one for requests on one connection);
"body" is the raw body as text (UTF-8, errors replaced) and "body_b64"
its bytes."""
import base64
import json
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LOCK = threading.Lock()
SCRIPTS = {}    # path -> [step, ...]
REQUESTS = {}   # path -> [request, ...]
HOLDS = {}      # path -> threading.Event the held requests of the path wait on


def _step(path):
    with LOCK:
        steps = SCRIPTS.get(path)
        if not steps:
            return {"status": 200}
        step = steps.pop(0) if len(steps) > 1 else steps[0]
    if isinstance(step, (str, int)):
        step = {"status": int(step)}
    return step


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def _reply(self, status, body=b"", headers=None):
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _body(self):
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def _control(self, body):
        url = urllib.parse.urlsplit(self.path)
        q = urllib.parse.parse_qs(url.query)
        if url.path == "/_ctl/script":
            doc = json.loads(body)
            with LOCK:
                SCRIPTS[doc["path"]] = list(doc["steps"])
            return self._reply(204)
        if url.path == "/_ctl/requests":
            with LOCK:
                out = list(REQUESTS.get(q.get("path", [""])[0], []))
            return self._reply(200, json.dumps(out).encode(), {"Content-Type": "application/json"})
        if url.path == "/_ctl/release":
            with LOCK:
                ev = HOLDS.pop(q.get("path", [""])[0], None)
            if ev:
                ev.set()
            return self._reply(204)
        return self._reply(404)

    def _handle(self):
        t = time.time()
        body = self._body()
        path = urllib.parse.urlsplit(self.path).path
        if path.startswith("/_ctl/"):
            return self._control(body)
        rec = {"method": self.command, "path": path, "t": t, "peer_port": self.client_address[1],
               "headers": {k.lower(): v for k, v in self.headers.items()},
               "body": body.decode("utf-8", "replace"), "body_b64": base64.b64encode(body).decode()}
        with LOCK:
            REQUESTS.setdefault(path, []).append(rec)
        step = _step(path)
        if step.get("hold"):
            with LOCK:
                ev = HOLDS.setdefault(path, threading.Event())
            ev.wait(30)
        if step.get("delay"):
            time.sleep(float(step["delay"]))
        self._reply(int(step.get("status", 200)), step.get("body", "ok").encode(), step.get("headers"))

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle


def main():
    server = ThreadingHTTPServer((sys.argv[2] if len(sys.argv) > 2 else "127.0.0.1", 0), Handler)
    server.daemon_threads = True
    with open(sys.argv[1] + ".tmp", "w") as f:
        f.write(str(server.server_address[1]))
    import os
    os.rename(sys.argv[1] + ".tmp", sys.argv[1])
    server.serve_forever()


if __name__ == "__main__":
    main()
