"""A throwaway PostgreSQL server for the tests: initdb into a temporary
folder, listen on loopback and a private unix socket, trust auth for one
role.  Debian's postgresql package provides the binaries; initdb refuses
to run as root, so as root the server runs as the `postgres` user."""
import glob
import os
import shutil
import socket
import subprocess
import tempfile


def pg_bindir():
    """The newest /usr/lib/postgresql/N/bin with initdb, or None."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0)
    return os.path.dirname(found[-1]) if found else None


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PgServer:
    def __init__(self, user="relay"):
        self.bindir = pg_bindir()
        if not self.bindir:
            raise RuntimeError("PostgreSQL server binaries not found: install the Debian package postgresql")
        self.user = user
        self.dir = tempfile.mkdtemp(prefix="relay-pg-")
        self.data = os.path.join(self.dir, "data")
        self.port = _free_port()
        self.as_root = os.geteuid() == 0
        if self.as_root:
            shutil.chown(self.dir, "postgres")
            os.chmod(self.dir, 0o755)

    def _run(self, *argv, check=True, timeout=60):
        cmd = list(argv)
        if self.as_root:
            cmd = ["runuser", "-u", "postgres", "--"] + cmd
        return subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, check=check, timeout=timeout)

    def init(self):
        self._run(os.path.join(self.bindir, "initdb"), "-D", self.data, "--auth=trust", "-U", self.user,
                  "-E", "UTF8", "--no-instructions")
        return self

    def start(self):
        opts = "-p %d -k %s -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200" % (self.port, self.dir)
        self._run(os.path.join(self.bindir, "pg_ctl"), "-D", self.data, "-o", opts,
                  "-l", os.path.join(self.dir, "log"), "-w", "-t", "30", "start")
        return self

    def stop(self, mode="fast"):
        self._run(os.path.join(self.bindir, "pg_ctl"), "-D", self.data, "-m", mode, "-w", "stop", check=False)

    def dsn(self, dbname="postgres"):
        return "host=127.0.0.1 port=%d user=%s dbname=%s" % (self.port, self.user, dbname)

    def psql(self, sql, dbname="postgres"):
        """Runs SQL with psql; returns stdout (unaligned, tuples only)."""
        p = subprocess.run(["psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1",
                            "-p", str(self.port), "-U", self.user, "-d", dbname, "-c", sql],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
        if p.returncode != 0:
            raise RuntimeError("psql failed: " + p.stderr.decode())
        return p.stdout.decode().strip()

    def create_database(self, name):
        self.psql("CREATE DATABASE %s" % name)
        return self.dsn(name)

    def destroy(self):
        self.stop("immediate")
        shutil.rmtree(self.dir, ignore_errors=True)
