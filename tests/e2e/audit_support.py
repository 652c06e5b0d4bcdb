"""Helpers for test_audit.py: the audit plugin's daemon configuration, an
independent (Python-only) check of its hash chain and signatures, an SSE
client for GET /v1/audit/stream, direct tampering with the audit tables,
and evidence bundles taken apart and put back together.

Nothing here uses the plugin's code: hashes are hashlib's, signatures are
checked with the cryptography package (Ed25519), bundles are read and
written with tarfile/gzip, so a test that passes shows the plugin agrees
with an outside implementation of docs/audit.md's formats."""
import base64
import hashlib
import io
import json
import os
import socket
import subprocess
import tarfile
import time

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from conftest import TOP_BUILDDIR, parse_head
from relaysync_support import sql_quote, table_rows

ZERO_HASH = "0" * 64
VERIFIER = os.path.join(TOP_BUILDDIR, "plugins", "audit", "relay-audit-verify")
PLUGINS = "users records policies sync audit"
CHECKPOINT_EVERY = 5
BUNDLE_MAX = 60


def audit_sections(**audit):
    """RelaySync plus the audit plugin: checkpoints every 5 entries (and no
    timed ones during a test), rate limits off, heartbeats every 200 ms."""
    conf = {"plugins": {"load": PLUGINS},
            "limits": {"sse_heartbeat": "200ms"},
            "audit": {"checkpoint_every": str(CHECKPOINT_EVERY), "checkpoint_interval": "1h",
                      "bundle_max_entries": str(BUNDLE_MAX), "rate_limit": "0"}}
    conf["audit"].update(audit)
    return conf


# ------------------------------------------------------------ the formats

def sha256_hex(data):
    if isinstance(data, str):
        data = data.encode()
    return hashlib.sha256(data).hexdigest()


def canonical(entry):
    """The canonical body of an entry as the API shows it: every member
    but hash and prev_hash, compact, keys sorted, UTF-8 as it is."""
    body = {k: v for k, v in entry.items() if k not in ("hash", "prev_hash")}
    return json.dumps(body, separators=(",", ":"), sort_keys=True, ensure_ascii=False)


def entry_hash(prev_hash, body_text):
    return sha256_hex("relay-audit-v1\n%s\n%s" % (prev_hash, sha256_hex(body_text)))


def check_chain(entries, anchor=ZERO_HASH, first_seq=1):
    """ENTRIES (oldest first, as dicts the API gave) form an unbroken chain
    from ANCHOR: seqs follow, each prev_hash is the hash before it, each
    hash is recomputed here.  Returns the last hash."""
    prev = anchor
    for i, e in enumerate(entries):
        assert e["seq"] == first_seq + i, (i, e["seq"], first_seq)
        assert e["prev_hash"] == prev, "entry %d: prev_hash %s, expected %s" % (e["seq"], e["prev_hash"], prev)
        want = entry_hash(prev, canonical(e))
        assert e["hash"] == want, "entry %d: hash %s, recomputed %s (body %s)" % (e["seq"], e["hash"], want,
                                                                                 canonical(e))
        prev = e["hash"]
    return prev


def public_key(b64):
    raw = base64.b64decode(b64, validate=True)
    assert len(raw) == 32, len(raw)
    return Ed25519PublicKey.from_public_bytes(raw)


def signature_ok(key_b64, message, sig_b64):
    """Does SIG_B64 (standard base64) sign MESSAGE (str or bytes) with the
    Ed25519 key KEY_B64?"""
    if isinstance(message, str):
        message = message.encode()
    try:
        public_key(key_b64).verify(base64.b64decode(sig_b64, validate=True), message)
        return True
    except InvalidSignature:
        return False


def key_id_of(key_b64):
    return sha256_hex(base64.b64decode(key_b64))[:16]


def checkpoint_statement(tenant, seq, hash_, time_ms):
    return "relay-audit-checkpoint-v1\n%s\n%d\n%s\n%d" % (tenant, seq, hash_, time_ms)


def receipt_statement(tenant, seq, hash_):
    return "relay-audit-receipt-v1\n%s\n%d\n%s" % (tenant, seq, hash_)


# ------------------------------------------------------------ the database

def audit_rows(env, tenant, table="audit_entries"):
    return table_rows(env.storage, table, "tenant = " + sql_quote(tenant), "seq")


def head(env, tenant):
    rows = audit_rows(env, tenant, "audit_heads")
    return rows[0] if rows else None


def execute(env, sql):
    env.storage.execute(sql)


def set_columns(env, tenant, seq, **cols):
    """UPDATE audit_entries SET COLS for TENANT's entry SEQ."""
    sets = ", ".join("%s = %s" % (k, sql_quote(v) if isinstance(v, str) else int(v)) for k, v in cols.items())
    execute(env, "UPDATE audit_entries SET %s WHERE tenant = %s AND seq = %d" % (sets, sql_quote(tenant), seq))


def rewrite_chain(env, tenant, from_seq, edit):
    """A forger's consistent rewrite: EDIT(body dict) changes entry
    FROM_SEQ's body; it and every later entry get the hashes they would
    have had, and the head follows, so only signatures can tell."""
    rows = audit_rows(env, tenant)
    prev = ZERO_HASH
    for r in rows:
        if r["seq"] < from_seq:
            prev = r["hash"]
            continue
        body = json.loads(r["body"])
        if r["seq"] == from_seq:
            edit(body)
        text = json.dumps(body, separators=(",", ":"), sort_keys=True, ensure_ascii=False)
        h = entry_hash(prev, text)
        set_columns(env, tenant, r["seq"], body=text, prev_hash=prev, hash=h, actor=body.get("actor"))
        prev = h
    execute(env, "UPDATE audit_heads SET hash = %s WHERE tenant = %s" % (sql_quote(prev), sql_quote(tenant)))


# ------------------------------------------------------------ the stream

class SSEClient:
    """GET PATH as a raw HTTP/1.1 stream: .events() parses what arrived
    into [{"event","id","data"}] (data parsed as JSON), .comments the
    ": ..." lines.  No reading happens unless asked (slow-consumer tests
    simply never call read())."""

    def __init__(self, d, path, headers=None, timeout=5.0, rcvbuf=None):
        if rcvbuf:  # before connect, so the window (and the daemon's send buffer) stays small
            self.sock = socket.socket()
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            self.sock.settimeout(timeout)
            self.sock.connect((d.host, d.port))
        else:
            self.sock = d.sock(timeout)
        lines = ["GET %s HTTP/1.1" % path, "Host: relay.test"]
        lines += ["%s: %s" % kv for kv in (headers or {}).items()]
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        self.raw = b""
        self.status = self.headers = None
        self.body = b""       # de-chunked bytes so far
        self.closed = False
        self._events = []
        self.comments = []
        self._text = ""

    def read(self, timeout=0.2):
        """Reads what is there within TIMEOUT; True if anything came."""
        self.sock.settimeout(timeout)
        try:
            chunk = self.sock.recv(1 << 20)
        except socket.timeout:
            return False
        except (ConnectionResetError, BrokenPipeError):
            self.closed = True
            return False
        if not chunk:
            self.closed = True
            return False
        self.raw += chunk
        self._parse()
        return True

    def _parse(self):
        if self.status is None:
            end = self.raw.find(b"\r\n\r\n")
            if end < 0:
                return
            self.status, self.headers = parse_head(self.raw[:end])
            self.raw = self.raw[end + 4:]
        if self.headers.get("transfer-encoding", "").lower() != "chunked":
            self.body += self.raw
            self.raw = b""
        else:
            while True:
                eol = self.raw.find(b"\r\n")
                if eol < 0:
                    break
                size = int(self.raw[:eol].split(b";")[0], 16)
                if len(self.raw) < eol + 2 + size + 2:
                    break
                self.body += self.raw[eol + 2:eol + 2 + size]
                self.raw = self.raw[eol + 4 + size:]
                if size == 0:
                    self.closed = True
                    break
        text = self.body.decode("utf-8")
        while "\n\n" in text:
            block, text = text.split("\n\n", 1)
            ev = {}
            for line in block.split("\n"):
                if line.startswith(":"):
                    self.comments.append(line[1:].strip())
                    continue
                name, _, value = line.partition(":")
                value = value[1:] if value.startswith(" ") else value
                ev[name] = ev[name] + "\n" + value if name in ev else value
            if ev:
                if "data" in ev and self.headers.get("content-type", "").startswith("text/event-stream"):
                    ev["data"] = json.loads(ev["data"])
                self._events.append(ev)
        self.body = text.encode("utf-8")

    def events(self):
        return list(self._events)

    def json_error(self):
        """The JSON body of a non-stream answer (after reading it all)."""
        deadline = time.monotonic() + 5
        while not self.closed and time.monotonic() < deadline:
            if self.status is not None and "content-length" in self.headers and \
                    len(self.body) >= int(self.headers["content-length"]):
                break
            self.read(0.1)
        return json.loads(self.body.decode())

    def wait(self, predicate, timeout=5.0):
        """Reads until PREDICATE(self) holds (or TIMEOUT, or the stream
        ends); returns its last value."""
        deadline = time.monotonic() + timeout
        while True:
            v = predicate(self)
            if v or self.closed or time.monotonic() > deadline:
                return v
            self.read(0.05)

    def wait_seq(self, seq, timeout=5.0):
        """Reads until an event with id SEQ (or a later one) came."""
        return self.wait(lambda c: any(int(e["id"]) >= seq for e in c._events), timeout)

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


# ------------------------------------------------------------ bundles

def bundle_files(data):
    """{name: bytes} of a bundle (tar.gz)."""
    out = {}
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        for m in tar.getmembers():
            out[m.name] = tar.extractfile(m).read()
    return out


def make_bundle(files):
    """A tar.gz of {name: bytes}, in the order given."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", format=tarfile.PAX_FORMAT) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = int(time.time())
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def entry_lines(files):
    return [json.loads(l) for l in files["entries.jsonl"].decode().splitlines()]


def with_lines(files, lines):
    out = dict(files)
    out["entries.jsonl"] = "".join(json.dumps(l, separators=(",", ":"), sort_keys=True, ensure_ascii=False) + "\n"
                                   for l in lines).encode()
    return out


def run_verifier(args, timeout=30):
    """relay-audit-verify ARGS: (exit code, stdout, stderr)."""
    p = subprocess.run([VERIFIER] + list(args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout)
    return p.returncode, p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace")


def verify_offline(tmp_path, data, key_b64, name="bundle.tar.gz"):
    path = os.path.join(str(tmp_path), name)
    with open(path, "wb") as f:
        f.write(data)
    return run_verifier(["--public-key", key_b64, path])
