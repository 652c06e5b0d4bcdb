"""The SDK as a third-party plugin author meets it: `make install
DESTDIR=...`, then build sdk/examples/hello out of tree with nothing but
pkg-config and the installed headers, and load it into the installed
daemon."""
import glob
import json
import os
import shutil
import socket
import subprocess
import time
import urllib.request

import pytest

TOP_BUILD = os.environ.get("top_builddir") or os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
TOP_SRC = os.environ.get("top_srcdir") or TOP_BUILD


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    dest = tmp_path_factory.mktemp("destdir")
    make = os.environ.get("MAKE", "make")
    r = subprocess.run([make, "-s", "-C", TOP_BUILD, "install", f"DESTDIR={dest}"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    pcs = glob.glob(f"{dest}/**/pkgconfig/relay-sdk.pc", recursive=True)
    assert len(pcs) == 1, "relay-sdk.pc installed once"
    return dest, os.path.dirname(pcs[0])


def find(dest, pattern):
    hits = glob.glob(f"{dest}/**/{pattern}", recursive=True)
    assert hits, f"{pattern} is installed"
    return hits[0]


def test_layout(installed):
    dest, _ = installed
    server = find(dest, "sbin/relay-server")
    assert os.access(server, os.X_OK)
    lib = find(dest, "librelay.so.1")
    assert os.path.exists(lib)
    assert os.path.isdir(os.path.join(os.path.dirname(lib), "relay", "plugins")), "plugin folder created"
    for h in ("plugin.h", "request.h", "conf.h", "version.h", "sse.h", "stream.h", "util.h", "log.h", "common.h"):
        assert os.path.exists(find(dest, f"include/relay/{h}"))
    conf = find(dest, "etc/relay/relay.conf")
    assert os.path.isdir(os.path.join(os.path.dirname(conf), "conf.d")), "drop-in folder installed"
    text = open(conf).read()
    assert "@" not in text.replace("# ", ""), "no unsubstituted @placeholders@"
    assert "include conf.d/*.conf" in text
    unit = find(dest, "systemd/system/relay-server.service")
    assert "ExecReload=" in open(unit).read()
    assert not glob.glob(f"{dest}/**/librelay.a", recursive=True), "no static library by default"


def test_soname_is_abi_major(installed):
    dest, _ = installed
    lib = find(dest, "librelay.so.1")
    out = subprocess.run(["objdump", "-p", lib], capture_output=True, text=True).stdout
    assert "SONAME               librelay.so.1" in out


def test_exports_only_the_sdk(installed):
    dest, _ = installed
    lib = find(dest, "librelay.so.1")
    out = subprocess.run(["nm", "-D", "--defined-only", lib], capture_output=True, text=True).stdout
    names = [l.split()[-1] for l in out.splitlines() if l.split()[1] in ("T", "D", "B", "R")]
    assert names, "librelay exports symbols"
    stray = [n for n in names if not n.startswith("relay_") and not n.startswith("relay__")]
    assert stray == [], f"symbols outside the relay_ prefix: {stray[:10]}"


@pytest.fixture(scope="module")
def hello_so(installed, tmp_path_factory):
    dest, pcdir = installed
    out = tmp_path_factory.mktemp("hello")
    env = dict(os.environ, PKG_CONFIG_PATH=pcdir, PKG_CONFIG_SYSROOT_DIR=str(dest))
    flags = subprocess.run(["pkg-config", "--cflags", "--libs", "relay-sdk"], env=env, capture_output=True,
                           text=True, check=True).stdout.split()
    assert any(f.startswith("-I") and str(dest) in f for f in flags), flags
    src = os.path.join(TOP_SRC, "sdk", "examples", "hello", "hello.c")
    so = out / "hello.so"
    r = subprocess.run(["cc", "-Wall", "-Wextra", "-Werror", "-shared", "-fPIC", "-o", str(so), src] + flags,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return dest, so


def run_installed(dest, plugin_dir, extra, tmp_path):
    server = find(dest, "sbin/relay-server")
    libdir = os.path.dirname(find(dest, "librelay.so.1"))
    port = free_port()
    conf = tmp_path / "hello.conf"
    storage_dir = os.path.join(libdir, "relay", "storage")  # the installed drivers, under DESTDIR
    conf.write_text(f"[server]\nlisten = 127.0.0.1:{port}\nworkers = 1\ndata_dir = {tmp_path}/data\n"
                    f"[storage]\ndir = {storage_dir}\n[plugins]\ndir = {plugin_dir}\n"
                    f"load = hello\n{extra}")
    env = dict(os.environ, LD_LIBRARY_PATH=libdir)
    return server, conf, env, port


def get(port, path, data=None):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data,
                                 headers={"Content-Type": "application/json"} if data else {})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_out_of_tree_plugin_loads_into_installed_daemon(hello_so, tmp_path):
    dest, so = hello_so
    server, conf, env, port = run_installed(dest, so.parent, "[hello]\ngreeting = Hi\n", tmp_path)
    check = subprocess.run([server, "-t", "-c", str(conf)], env=env, capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    listing = subprocess.run([server, "--list-plugins", "-c", str(conf)], env=env, capture_output=True, text=True)
    assert "hello" in listing.stdout and "ABI 1." in listing.stdout
    p = subprocess.Popen([server, "-c", str(conf)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        for _ in range(100):
            try:
                status, doc = get(port, "/")
                break
            except OSError:
                time.sleep(0.05)
        assert status == 200 and {"name": "hello", "version": "1.0.0"} in doc["plugins"]
        assert get(port, "/v1/hello/bob") == (200, {"message": "Hi, bob"})
        status, body = get(port, "/v1/hello", b'{"name": "ann"}')
        assert status == 201 and body["name"] == "ann" and body["id"].startswith("hlo_")
        status, body = get(port, "/v1/hello", b'{"nom": "ann"}')
        assert status == 422 and body["error"]["code"] == "validation_failed"
    finally:
        p.terminate()
        assert p.wait(timeout=10) == 0


def test_installed_default_configuration_is_valid(installed, tmp_path):
    dest, _ = installed
    server = find(dest, "sbin/relay-server")
    conf = find(dest, "etc/relay/relay.conf")
    libdir = os.path.dirname(find(dest, "librelay.so.1"))
    plugindir = os.path.join(libdir, "relay", "plugins")
    storagedir = os.path.join(libdir, "relay", "storage")
    r = subprocess.run([server, "-t", "-c", conf, "-o", f"plugins.dir={plugindir}",
                        "-o", f"storage.dir={storagedir}", "-o", f"server.data_dir={tmp_path}/data"],
                       env=dict(os.environ, LD_LIBRARY_PATH=libdir), capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_example_makefile_builds(installed, tmp_path):
    dest, pcdir = installed
    work = tmp_path / "hello"
    shutil.copytree(os.path.join(TOP_SRC, "sdk", "examples", "hello"), work)
    # a plugin author's own make, not a sub-make of ours (no inherited jobserver)
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    env.update(PKG_CONFIG_PATH=pcdir, PKG_CONFIG_SYSROOT_DIR=str(dest))
    r = subprocess.run(["make", "-s", "-C", str(work)], env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert (work / "hello.so").exists()
