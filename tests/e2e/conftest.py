"""Fixtures for the end-to-end suite: a real relay-server, started from a
configuration written into a temporary folder, spoken to over real sockets.

Environment (set by `make check`; defaults derived from this file's place):
  top_builddir  where core/relay-server and tests/plugins/*.la were built
  top_srcdir    the source tree
"""
import http.client
import json
import os
import signal
import socket
import subprocess
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
TOP_BUILDDIR = os.path.abspath(os.environ.get("top_builddir") or REPO)
TOP_SRCDIR = os.path.abspath(os.environ.get("top_srcdir") or REPO)
SERVER = os.path.join(TOP_BUILDDIR, "core", "relay-server")
PLUGIN_DIR = os.path.join(TOP_BUILDDIR, "tests", "plugins")
STORAGE_DIR = os.path.join(TOP_BUILDDIR, "storage")  # storage driver modules
HOST = "127.0.0.1"


# ----------------------------------------------------------------- helpers

def free_port(host=HOST, family=socket.AF_INET):
    """A port nobody listens on right now (the kernel's pick)."""
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def ipv6_loopback_available():
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


def render_config(sections):
    """INI text from {section: {key: value}} (values None are left out)."""
    out = []
    for section, keys in sections.items():
        out.append("[%s]" % section)
        for key, value in keys.items():
            if value is not None:
                out.append("%s = %s" % (key, value))
        out.append("")
    return "\n".join(out)


def run_server(*args, timeout=20, cwd=None):
    """Runs relay-server to completion: (exit code, stdout, stderr)."""
    p = subprocess.run([SERVER] + list(args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=timeout, cwd=cwd)
    return p.returncode, p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace")


def parse_head(raw):
    """(status, {lowercased name: value}) of one response head (bytes)."""
    lines = raw.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    status = int(parts[1])
    headers = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    return status, headers


def dechunk(data):
    """(body, rest, complete) of a chunked body at the start of DATA."""
    body = b""
    while True:
        eol = data.find(b"\r\n")
        if eol < 0:
            return body, data, False
        size = int(data[:eol].split(b";")[0], 16)
        if size == 0:
            end = data.find(b"\r\n", eol + 2)  # (no trailers expected)
            if end < 0:
                return body, data, False
            return body, data[end + 2:], True
        if len(data) < eol + 2 + size + 2:
            return body, data, False
        body += data[eol + 2:eol + 2 + size]
        data = data[eol + 2 + size + 2:]


def parse_responses(data, head_request=False):
    """Splits raw bytes into [(status, headers, body)], in order.  Interim
    1xx responses are included.  A body without length runs to the end."""
    out = []
    while data:
        end = data.find(b"\r\n\r\n")
        if end < 0:
            break
        status, headers = parse_head(data[:end])
        data = data[end + 4:]
        if 100 <= status < 200 or status in (204, 304) or head_request:
            body = b""
        elif "content-length" in headers:
            n = int(headers["content-length"])
            body, data = data[:n], data[n:]
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            body, data, _ = dechunk(data)
        else:
            body, data = data, b""
        out.append((status, headers, body))
    return out


def recv_until(sock, predicate, timeout=5.0):
    """Reads from SOCK until predicate(data) holds, the peer closes, or
    TIMEOUT passes.  Returns (data, closed)."""
    data = b""
    deadline = time.monotonic() + timeout
    while not predicate(data):
        left = deadline - time.monotonic()
        if left <= 0:
            return data, False
        sock.settimeout(left)
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            return data, False
        except ConnectionResetError:
            return data, True
        if not chunk:
            return data, True
        data += chunk
    return data, False


def responses_complete(n):
    """A recv_until predicate: N complete responses have arrived."""
    def pred(data):
        rs = parse_responses(data)
        if len(rs) < n:
            return False
        # the last body may be cut short: check its length
        status, headers, body = rs[n - 1]
        if "content-length" in headers:
            return len(body) >= int(headers["content-length"])
        return True
    return pred


def fetch(host, port, request, timeout=5.0):
    """Sends REQUEST (bytes) on a new connection to HOST:PORT; returns all
    that comes back until the peer closes (or TIMEOUT)."""
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall(request)
        data, _ = recv_until(s, lambda d: False, timeout)
        return data


def wait_closed(sock, timeout=5.0):
    """True when the peer closes SOCK (EOF or reset) within TIMEOUT."""
    _, closed = recv_until(sock, lambda d: False, timeout)
    return closed


def req(method, target, headers=(), body=b"", version="HTTP/1.1"):
    """Raw request bytes.  Host is added for HTTP/1.1 unless given."""
    lines = ["%s %s %s" % (method, target, version)]
    names = [h[0].lower() for h in headers]
    if version == "HTTP/1.1" and "host" not in names:
        lines.append("Host: relay.test")
    if body and "content-length" not in names and "transfer-encoding" not in names:
        lines.append("Content-Length: %d" % len(body))
    lines += ["%s: %s" % h for h in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def exchange(d, data, n=1, timeout=5.0):
    """Sends DATA on a new connection, reads N responses; returns
    (responses, socket) with the socket still open."""
    s = d.sock()
    s.sendall(data)
    got, _ = recv_until(s, responses_complete(n), timeout)
    return parse_responses(got), s


# ------------------------------------------------------------------ daemon

class Daemon:
    """One relay-server process with its own configuration file.

    sections: {section: {key: value}} merged over the defaults below (a value
    of None removes a default key).  overrides: -o arguments.  extra: raw
    text appended to the configuration file."""

    def __init__(self, workdir, sections=None, overrides=(), extra="", port=None, workers="2"):
        self.workdir = str(workdir)
        os.makedirs(self.workdir, exist_ok=True)
        self.auto_port = port is None
        self.port = port or free_port()
        self.host = HOST
        self.proc = None
        self.signalled = False  # the test told it to stop (or expects it to exit)
        self.overrides = list(overrides)
        self.conf_path = os.path.join(self.workdir, "relay.conf")
        self.stderr_path = os.path.join(self.workdir, "stderr.log")
        self.stdout_path = os.path.join(self.workdir, "stdout.log")
        conf = {
            "server": {"listen": "%s:%d" % (HOST, self.port), "workers": workers,
                       "shutdown_timeout": "5s", "data_dir": os.path.join(self.workdir, "data")},
            "limits": {},
            "log": {"level": "info"},
            "storage": {"dir": STORAGE_DIR},
            "plugins": {"dir": PLUGIN_DIR, "load": "echo"},
        }
        for section, keys in (sections or {}).items():
            conf.setdefault(section, {}).update(keys)
        self.sections = conf
        self.extra = extra
        self.write_config()

    # -- configuration

    def write_config(self, sections=None, extra=None):
        """(Re)writes the file from self.sections (or SECTIONS) and the
        constructor's extra text (or EXTRA)."""
        text = render_config(sections or self.sections) + (self.extra if extra is None else extra)
        with open(self.conf_path, "w") as f:
            f.write(text)

    # -- process

    def start(self, wait=True, timeout=10.0):
        for attempt in range(3):
            self._spawn(wait)
            if not wait:
                return self
            try:
                self.wait_ready(timeout)
                return self
            except RuntimeError:
                # another process took the port we picked: pick again
                listen = self.sections["server"].get("listen", "")
                if not (self.auto_port and self.proc.poll() == 4 and attempt < 2
                        and listen == "%s:%d" % (HOST, self.port)):
                    raise
                self._close_files()
                self.port = free_port()
                self.sections["server"]["listen"] = "%s:%d" % (HOST, self.port)
                self.write_config()
        return self

    def _spawn(self, wait):
        args = [SERVER, "-c", self.conf_path]
        for o in self.overrides:
            args += ["-o", o]
        self._err = open(self.stderr_path, "wb")
        self._out = open(self.stdout_path, "wb")
        self.proc = subprocess.Popen(args, stdout=self._out, stderr=self._err, cwd=self.workdir)
        self.signalled = not wait

    def wait_ready(self, timeout=10.0):
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("relay-server exited with %d before answering:\n%s"
                                   % (self.proc.returncode, self.log))
            try:
                status, _, _ = self.request("GET", "/", timeout=1.0)
                if status == 200:
                    return
                last = "status %d" % status
            except (OSError, http.client.HTTPException) as e:
                last = repr(e)
            time.sleep(0.05)
        raise RuntimeError("relay-server did not answer GET / within %.0fs (%s):\n%s"
                           % (timeout, last, self.log))

    @property
    def pid(self):
        return self.proc.pid

    @property
    def log(self):
        try:
            with open(self.stderr_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def wait_log(self, text, timeout=5.0, path=None):
        """Waits until TEXT appears in the log (stderr or PATH); returns it."""
        deadline = time.monotonic() + timeout
        while True:
            if path:
                try:
                    with open(path, "rb") as f:
                        log = f.read().decode("utf-8", "replace")
                except OSError:
                    log = ""
            else:
                log = self.log
            if text in log or time.monotonic() > deadline:
                return log
            time.sleep(0.05)

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def send_signal(self, sig):
        if sig != signal.SIGHUP:
            self.signalled = True
        self.proc.send_signal(sig)

    def stop(self, sig=signal.SIGTERM, timeout=10.0):
        """Sends SIG and waits; returns the exit code (None on timeout, after
        a SIGKILL)."""
        if self.proc is None:
            return None
        self.signalled = True
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                return None
        self._close_files()
        return self.proc.returncode

    def finish(self):
        """Teardown: stops the daemon (SIGTERM, then SIGKILL) and returns
        what went wrong that no test asserted: a sanitizer report in its
        log, or an exit nobody asked for.  "" when all is well."""
        if self.proc is None:
            return ""
        problems = []
        if self.proc.poll() is not None and not self.signalled:
            problems.append("relay-server exited by itself with status %d" % self.proc.returncode)
        if self.proc.poll() is None:
            if self.stop(timeout=10) is None:
                problems.append("relay-server did not stop within 10s of SIGTERM")
        self._close_files()
        log = self.log
        for marker in ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:",
                       "WARNING: ThreadSanitizer"):
            if marker in log:
                problems.append("sanitizer report in the log:\n" + log[log.index(marker) - 200:][:6000])
                break
        return "\n".join(problems)

    def kill(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        self._close_files()

    def _close_files(self):
        for f in (getattr(self, "_err", None), getattr(self, "_out", None)):
            if f and not f.closed:
                f.close()

    # -- HTTP

    def url(self, path="/"):
        return "http://%s:%d%s" % (self.host, self.port, path)

    def connection(self, timeout=5.0):
        return http.client.HTTPConnection(self.host, self.port, timeout=timeout)

    def request(self, method, path, body=None, headers=None, timeout=5.0):
        """(status, {lowercased header: value}, body bytes) on a fresh connection."""
        conn = self.connection(timeout)
        try:
            if isinstance(body, (dict, list)):
                body = json.dumps(body).encode()
                headers = dict(headers or {})
                headers.setdefault("Content-Type", "application/json")
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            data = resp.read()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data
        finally:
            conn.close()

    def get_json(self, path, headers=None):
        status, hdrs, body = self.request("GET", path, headers=headers)
        return status, json.loads(body) if body else None

    def sock(self, timeout=5.0):
        s = socket.create_connection((self.host, self.port), timeout=timeout)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return s

    def raw(self, data, read_timeout=2.0, until=None):
        """Sends DATA on a fresh socket; returns what came back before the
        peer closed, READ_TIMEOUT passed, or until(data) held."""
        with self.sock() as s:
            if data:
                s.sendall(data)
            got, _ = recv_until(s, until or (lambda d: False), read_timeout)
            return got

    def metrics(self):
        status, _, body = self.request("GET", "/metrics")
        assert status == 200
        return body.decode()


def metric_value(text, name, **labels):
    """The value of the sample NAME{labels...} in Prometheus text (None if
    absent).  Labels given must all match; others are ignored."""
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        series, _, value = line.rpartition(" ")
        mname, _, rest = series.partition("{")
        if mname != name:
            continue
        got = {}
        for part in rest.rstrip("}").split('",'):
            if "=" in part:
                k, _, v = part.partition("=")
                got[k.strip()] = v.strip().strip('"')
        if all(got.get(k) == v for k, v in labels.items()):
            return float(value)
    return None


# ----------------------------------------------------------------- fixtures

def finish_all(daemons):
    """Stops DAEMONS; fails the current test (at teardown) if one crashed,
    hung or left a sanitizer report."""
    problems = []
    for d in daemons:
        try:
            problems.append(d.finish())
        finally:
            d.kill()
    problems = [p for p in problems if p]
    if problems:
        pytest.fail("\n\n".join(problems), pytrace=False)


@pytest.fixture
def make_daemon(tmp_path):
    """A factory: make_daemon(sections=..., overrides=..., start=True).
    Every daemon it made is stopped at teardown; a crash or a sanitizer
    report nobody asserted fails the test there."""
    made = []

    def factory(sections=None, overrides=(), extra="", start=True, name=None, **kw):
        d = Daemon(tmp_path / (name or "d%d" % len(made)), sections, overrides, extra, **kw)
        made.append(d)
        if start:
            d.start()
        return d

    yield factory
    finish_all(made)


@pytest.fixture(scope="module")
def shared_daemon(tmp_path_factory):
    """One daemon with echo, consumer and styles, shared by a module's tests
    that do not change its state."""
    d = Daemon(tmp_path_factory.mktemp("shared"),
               {"plugins": {"load": "echo consumer styles"},
                "limits": {"header_timeout": "2s"}})
    d.start()
    yield d
    finish_all([d])


# ----------------------------------------------------------------- storage
#
# Storage tests run on both engines: the `engine` fixture is parametrized
# over "sqlite" and "pgsql", and `storage` gives each test a fresh database
# on it (a new SQLite file, or a new database in the one PostgreSQL server
# the session starts the first time a test asks for it).

RELAYCTL = os.path.join(TOP_BUILDDIR, "core", "relayctl")
ENGINES = ("sqlite", "pgsql")


def run_relayctl(conf_path, *args, overrides=(), timeout=30):
    """Runs relayctl -c CONF_PATH [-o ...] ARGS: (exit code, stdout, stderr)."""
    argv = [RELAYCTL, "-c", conf_path]
    for o in overrides:
        argv += ["-o", o]
    p = subprocess.run(argv + list(args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout)
    rc, out, err = p.returncode, p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace")
    return _without_lsan_tracer_crash(rc, out, err)


def lsan_tracer_crashed(stderr):
    """Did LeakSanitizer's own tracer crash at exit (see below)?  Then the
    process was killed by abort() after doing its work, and its exit code
    says nothing about the program."""
    return "LeakSanitizer has encountered a fatal error" in stderr and "Tracer caught signal" in stderr


def _without_lsan_tracer_crash(rc, out, err):
    """Under ASan, LeakSanitizer's own tracer thread occasionally crashes
    while stopping the process for the leak check at exit ("Tracer caught
    signal 11 ... LeakSanitizer has encountered a fatal error"): the leak
    check did not run, which says nothing about the program.  When that is
    all stderr holds and the command printed its result, the command
    succeeded; anything else is reported as it was."""
    if rc >= 0 or not lsan_tracer_crashed(err) or not out.strip():
        return rc, out, err
    lines = [l for l in err.splitlines() if l.strip()]
    if all(l.startswith("Tracer caught signal") or l.startswith("==") for l in lines):
        return 0, out, ""
    return rc, out, err


@pytest.fixture(scope="session")
def pg_server():
    """One throwaway PostgreSQL for the session, started on first use
    (skips the test when the server binaries are not installed)."""
    from pgserver import PgServer, pg_bindir
    if not pg_bindir():
        pytest.skip("PostgreSQL server binaries not found (Debian package postgresql)")
    pg = PgServer().init().start()
    pg.running = True  # tests that stop it must start it again (see Storage.pg_start)
    yield pg
    pg.destroy()


class Storage:
    """A fresh database on ENGINE for one test, and direct access to it."""

    _serial = 0

    def __init__(self, engine, tmp_path, pg=None):
        self.engine = engine
        self.pg = pg
        if engine == "sqlite":
            self.path = os.path.join(str(tmp_path), "relay.db")
            self.dsn = None
        else:
            Storage._serial += 1
            self.dbname = "relay_t%d_%d" % (os.getpid(), Storage._serial)
            self.path = None
            self.dsn = pg.create_database(self.dbname)

    def config(self):
        """The [storage] keys of a daemon using this database."""
        if self.engine == "sqlite":
            return {"driver": "sqlite", "path": self.path}
        return {"driver": "pgsql", "dsn": self.dsn}

    def query(self, sql):
        """Rows of SQL, each a tuple of texts (None for NULL on SQLite; psql
        prints NULL as an empty string).  Numbers come back as text."""
        if self.engine == "sqlite":
            import sqlite3
            con = sqlite3.connect(self.path, timeout=10)
            try:
                return [tuple(None if v is None else str(v) for v in row) for row in con.execute(sql)]
            finally:
                con.close()
        out = self.pg.psql(sql, self.dbname)
        return [tuple(line.split("|")) for line in out.splitlines() if line]

    def scalar(self, sql):
        rows = self.query(sql)
        return rows[0][0] if rows else None

    def execute(self, sql):
        """Runs SQL that returns nothing (DDL, writes)."""
        if self.engine == "sqlite":
            import sqlite3
            con = sqlite3.connect(self.path, timeout=10)
            try:
                con.executescript(sql)
                con.commit()
            finally:
                con.close()
        else:
            self.pg.psql(sql, self.dbname)

    def tables(self):
        """The names of the tables in the database."""
        if self.engine == "sqlite":
            sql = "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
        else:
            sql = "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
        return {row[0] for row in self.query(sql)}


@pytest.fixture(params=ENGINES)
def engine(request):
    """The storage engine under test: every storage test runs on both."""
    return request.param


@pytest.fixture
def storage(engine, request, tmp_path):
    """A fresh, empty database on the engine under test."""
    pg = request.getfixturevalue("pg_server") if engine == "pgsql" else None
    return Storage(engine, tmp_path, pg)


def store_sections(storage, sections=None):
    """Configuration sections for a daemon with the storetest plugin on
    STORAGE (jobs polled every 100ms), with SECTIONS merged over them."""
    conf = {"plugins": {"load": "storetest"},
            "storage": storage.config(),
            "jobs": {"poll_interval": "100ms"}}
    for section, keys in (sections or {}).items():
        conf.setdefault(section, {}).update(keys)
    return conf


@pytest.fixture
def store_daemon(make_daemon, storage):
    """A factory like make_daemon for daemons with storetest on `storage`."""
    def factory(sections=None, **kw):
        return make_daemon(sections=store_sections(storage, sections), **kw)
    return factory


def wait_for(fn, timeout=5.0, interval=0.02):
    """Calls FN until it returns something true or TIMEOUT passes; returns
    its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)


def call(d, method, path, body=None, tenant=None, timeout=5.0):
    """(status, headers, parsed JSON body or None) of one request to D,
    as TENANT (X-Tenant) when given."""
    headers = {"X-Tenant": tenant} if tenant else None
    status, hdrs, data = d.request(method, path, body=body, headers=headers, timeout=timeout)
    return status, hdrs, json.loads(data) if data else None


def assert_object_error(body, code):
    """BODY is the object error style: {"error": {"code": CODE, "message": "..."}}."""
    assert isinstance(body, dict) and set(body) == {"error"}, body
    assert body["error"]["code"] == code, body
    assert isinstance(body["error"].get("message"), str) and body["error"]["message"], body
