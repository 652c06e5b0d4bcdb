"""relay-server's command line: --version, -t, --list-plugins, -o, the
configuration file format, plugin refusals and start-up exit codes."""
import atexit
import os
import re
import shutil
import socket
import tempfile

import pytest

from conftest import (HOST, PLUGIN_DIR, STORAGE_DIR, TOP_SRCDIR, fetch, free_port, ipv6_loopback_available,
                      run_server)

def _abi_from_header():
    """MAJOR.MINOR as <relay/version.h> says: the one place it is written."""
    text = open(os.path.join(TOP_SRCDIR, "sdk", "include", "relay", "version.h")).read()
    major = re.search(r"#define RELAY_SDK_ABI_MAJOR (\d+)", text).group(1)
    minor = re.search(r"#define RELAY_SDK_ABI_MINOR (\d+)", text).group(1)
    return "%s.%s" % (major, minor)


ABI = _abi_from_header()
# what the abi_newer_minor test plugin claims: one minor past the daemon's
NEWER_MINOR = "%s.%d" % (ABI.split(".")[0], int(ABI.split(".")[1]) + 1)
# data_dir of the configurations written here (SQLite lives there)
DATA_DIR = tempfile.mkdtemp(prefix="relay-e2e-cli-")
atexit.register(shutil.rmtree, DATA_DIR, True)


def package_version():
    """The version AC_INIT gives (configure.ac), so the test follows releases."""
    with open(os.path.join(TOP_SRCDIR, "configure.ac")) as f:
        m = re.search(r"AC_INIT\(\[[^\]]*\],\s*\[([^\]]+)\]", f.read())
    return m.group(1)


def write(path, text):
    os.makedirs(os.path.dirname(str(path)), exist_ok=True)
    with open(str(path), "w") as f:
        f.write(text)
    return str(path)


def base_conf(load="echo", port=None, extra=""):
    return ("[server]\nlisten = %s:%d\nworkers = 1\ndata_dir = %s\n\n[storage]\ndir = %s\n\n"
            "[plugins]\ndir = %s\nload = %s\n%s"
            % (HOST, port or free_port(), DATA_DIR, STORAGE_DIR, PLUGIN_DIR, load, extra))


def line_of(text, needle):
    """1-based number of the first line of TEXT containing NEEDLE."""
    for i, line in enumerate(text.splitlines(), 1):
        if needle in line:
            return i
    raise AssertionError("%r not in config" % needle)


def one_error_line(stderr):
    """-t reports a refusal as exactly one line 'relay-server: <reason>'."""
    lines = stderr.splitlines()
    assert len(lines) == 1, "expected one line on stderr, got:\n" + stderr
    assert lines[0].startswith("relay-server: "), lines[0]
    return lines[0][len("relay-server: "):]


def so_path_in(message, name):
    """The plugin file a refusal names, checked to be NAME's .so."""
    m = re.search(r"\((/[^)]*\.so)\)", message)
    assert m, "no .so path in: " + message
    path = m.group(1)
    assert os.path.basename(path) == name + ".so"
    assert os.path.samefile(path, os.path.join(PLUGIN_DIR, ".libs", name + ".so"))
    return path


# ----------------------------------------------------------------- basics

@pytest.mark.parametrize("opt", ["--version", "-V"])
def test_version(opt):
    rc, out, err = run_server(opt)
    assert rc == 0
    assert out == "relay-server %s (Relay SDK ABI %s)\n" % (package_version(), ABI)
    assert err == ""


def test_help_lists_options():
    rc, out, _ = run_server("--help")
    assert rc == 0
    assert out.startswith("Usage: relay-server")
    for opt in ("-c, --config", "-o SECTION.KEY=VALUE", "-t, --test", "--list-plugins", "--version"):
        assert opt in out


def test_unknown_option_is_refused():
    rc, out, err = run_server("--no-such-option")
    assert rc == 1
    assert "Usage:" in err


def test_stray_argument_is_refused(tmp_path):
    conf = write(tmp_path / "relay.conf", base_conf())
    rc, _, err = run_server("-c", conf, "-t", "extra")
    assert rc == 1
    assert one_error_line(err) == "unexpected argument 'extra'"


# --------------------------------------------------------------------- -t

def test_check_valid_configuration(tmp_path):
    conf = write(tmp_path / "relay.conf", base_conf("echo consumer styles"))
    rc, out, err = run_server("-c", conf, "-t")
    assert rc == 0, err
    assert out == "relay-server: configuration %s is valid; 3 plugins ready\n" % conf
    assert err == ""


def test_check_singular_and_zero_plugins(tmp_path):
    conf = write(tmp_path / "one.conf", base_conf("echo"))
    rc, out, _ = run_server("-c", conf, "-t")
    assert (rc, out) == (0, "relay-server: configuration %s is valid; 1 plugin ready\n" % conf)
    conf = write(tmp_path / "none.conf", base_conf(""))
    rc, out, _ = run_server("-c", conf, "-t")
    assert (rc, out) == (0, "relay-server: configuration %s is valid; 0 plugins ready\n" % conf)


def test_check_does_not_bind(tmp_path):
    """-t checks, it does not serve: a port in use does not matter."""
    with socket.socket() as busy:
        busy.bind((HOST, 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        conf = write(tmp_path / "relay.conf", base_conf(port=port))
        rc, out, err = run_server("-c", conf, "-t")
    assert rc == 0, err
    assert "is valid" in out


@pytest.mark.parametrize("extra, needle, expected", [
    ("[server]\nbogus = 1\n", "bogus", "unknown key 'bogus' in [server]"),
    ("[nosuch]\nx = 1\n", "x = 1", "unknown section [nosuch]"),
    ("[limits]\nmax_body_size = lots\n", "lots",
     "bad value 'lots' for limits.max_body_size: expected a size"),
    ("[server]\nworkers = 0\n", "workers = 0", "bad value '0' for server.workers: expected auto or 1-256"),
    ("[log]\nformat = xml\n", "xml", "bad value 'xml' for log.format: expected text or json"),
    ("[server]\nlisten = localhost:80\n", "localhost", "bad value 'localhost:80' for server.listen"),
    ("[echo]\nnope = 1\n", "nope", "unknown key 'nope' in [echo]"),
    ("[echo]\ntick_ms = soon\n", "soon", "bad value 'soon' for echo.tick_ms: expected a duration"),
    ("[echo]\nmount = /m/\n", "/m/", "bad value '/m/' for echo.mount"),
    ("[server]\njust words\n", "just words", "expected 'key = value'"),
], ids=["unknown-key", "unknown-section", "bad-size", "bad-workers", "bad-format", "bad-listen",
        "plugin-unknown-key", "plugin-bad-duration", "bad-mount", "no-equals"])
def test_check_reports_file_and_line(tmp_path, extra, needle, expected):
    text = base_conf(extra="\n" + extra)
    conf = write(tmp_path / "relay.conf", text)
    rc, out, err = run_server("-c", conf, "-t")
    assert rc == 1
    assert out == ""
    reason = one_error_line(err)
    assert reason.startswith("%s:%d: " % (conf, line_of(text, needle))), reason
    assert expected in reason


def test_invalid_configuration_exits_1_without_t(tmp_path):
    conf = write(tmp_path / "relay.conf", base_conf(extra="[server]\nbogus = 1\n"))
    rc, _, err = run_server("-c", conf)
    assert rc == 1
    assert "unknown key 'bogus' in [server]" in err


def test_missing_configuration_file(tmp_path):
    missing = str(tmp_path / "nowhere.conf")
    rc, _, err = run_server("-c", missing, "-t")
    assert rc == 1
    reason = one_error_line(err)
    assert reason.startswith(missing + ": ")
    assert "No such file" in reason


# ------------------------------------------------------- plugin refusals

def refusal(tmp_path, load, check):
    conf = write(tmp_path / "relay.conf", base_conf(load))
    args = ["-c", conf] + (["-t"] if check else [])
    return run_server(*args)


def test_abi_major_mismatch(tmp_path):
    rc, out, err = refusal(tmp_path, "echo abi_future", check=True)
    assert rc == 1 and out == ""
    reason = one_error_line(err)
    assert "abi_future" in reason
    assert "ABI 2.0" in reason and "ABI %s" % ABI in reason
    so_path_in(reason, "abi_future")
    rc, _, err = refusal(tmp_path, "echo abi_future", check=False)
    assert rc == 2
    assert "ABI 2.0" in err


def test_abi_newer_minor_refused(tmp_path):
    rc, _, err = refusal(tmp_path, "abi_newer_minor", check=True)
    assert rc == 1
    reason = one_error_line(err)
    assert "ABI %s" % NEWER_MINOR in reason and "ABI %s" % ABI in reason
    so_path_in(reason, "abi_newer_minor")
    rc, _, _ = refusal(tmp_path, "abi_newer_minor", check=False)
    assert rc == 2


def test_missing_plugin(tmp_path):
    rc, _, err = refusal(tmp_path, "echo nothere", check=True)
    assert rc == 1
    reason = one_error_line(err)
    assert "'nothere' not found" in reason
    assert PLUGIN_DIR in reason
    rc, _, _ = refusal(tmp_path, "echo nothere", check=False)
    assert rc == 2


def test_not_a_plugin(tmp_path):
    rc, _, err = refusal(tmp_path, "not_a_plugin", check=True)
    assert rc == 1
    reason = one_error_line(err)
    assert "is not a Relay plugin" in reason
    so_path_in(reason, "not_a_plugin")
    rc, _, _ = refusal(tmp_path, "not_a_plugin", check=False)
    assert rc == 2


def test_bad_plugin_name(tmp_path):
    rc, _, err = refusal(tmp_path, "../echo", check=True)
    assert rc == 1
    assert "bad plugin name '../echo'" in one_error_line(err)


def test_requirement_missing(tmp_path):
    rc, _, err = refusal(tmp_path, "echo needs_missing", check=True)
    assert rc == 1
    reason = one_error_line(err)
    assert "plugin 'needs_missing' requires plugin 'not_there'" in reason
    rc, _, err = refusal(tmp_path, "echo needs_missing", check=False)
    assert rc == 2


def test_consumer_without_echo(tmp_path):
    rc, _, err = refusal(tmp_path, "consumer", check=False)
    assert rc == 2
    assert "plugin 'consumer' requires plugin 'echo'" in err


def test_requirement_loaded_later_in_list(tmp_path):
    """Plugins start in dependency order, whatever the order of load."""
    conf = write(tmp_path / "relay.conf", base_conf("consumer echo"))
    rc, out, err = run_server("-c", conf, "-t")
    assert rc == 0, err
    assert "2 plugins ready" in out


def test_fail_init(tmp_path):
    rc, _, err = refusal(tmp_path, "echo fail_init", check=False)
    assert rc == 3
    assert "relay-server: plugin 'fail_init'" in err
    assert "failed to initialise" in err
    rc, _, err = refusal(tmp_path, "echo fail_init", check=True)
    assert rc == 1
    # the plugin may log its own reason; the refusal is the last line
    assert err.splitlines()[-1].startswith("relay-server: plugin 'fail_init'")


def test_duplicate_route(tmp_path):
    rc, _, err = refusal(tmp_path, "echo dup_route", check=False)
    assert rc == 3
    assert "route GET /v1/echo is claimed by both plugins 'echo' and 'dup_route'" in err
    rc, _, err = refusal(tmp_path, "echo dup_route", check=True)
    assert rc == 1
    assert one_error_line(err) == "route GET /v1/echo is claimed by both plugins 'echo' and 'dup_route'"


def test_bind_failure_exits_4(tmp_path):
    with socket.socket() as busy:
        busy.bind((HOST, 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        conf = write(tmp_path / "relay.conf", base_conf(port=port))
        rc, _, err = run_server("-c", conf)
    assert rc == 4
    assert "cannot listen on %s:%d" % (HOST, port) in err


# ------------------------------------------------------------------ storage

def test_storage_driver_missing(tmp_path):
    nodrivers = tmp_path / "nodrivers"
    nodrivers.mkdir()
    conf = write(tmp_path / "relay.conf", base_conf())
    override = "storage.dir=%s" % nodrivers
    rc, _, err = run_server("-c", conf, "-t", "-o", override)
    assert rc == 1
    assert one_error_line(err).startswith("storage driver 'sqlite' not found in %s" % nodrivers)
    rc, _, err = run_server("-c", conf, "-o", override)
    assert rc == 5
    assert "storage driver 'sqlite' not found" in err


def test_storage_unreachable_at_start(tmp_path):
    conf = write(tmp_path / "relay.conf", base_conf())
    override = "storage.path=%s" % (tmp_path / "no" / "such" / "relay.db")
    rc, out, err = run_server("-c", conf, "-t", "-o", override)
    assert rc == 0, err  # -t does not open the database
    rc, _, err = run_server("-c", conf, "-o", override)
    assert rc == 5
    assert err.splitlines()[-1].startswith("relay-server: storage (sqlite): ")


def test_check_changes_nothing_on_disk(tmp_path):
    work = tmp_path / "cwd"
    work.mkdir()
    text = base_conf().replace("data_dir = %s" % DATA_DIR, "data_dir = data")
    conf = write(tmp_path / "relay.conf", text)
    rc, out, err = run_server("-c", conf, "-t", cwd=str(work))
    assert rc == 0, err
    assert os.listdir(str(work)) == []


# ---------------------------------------------------------- --list-plugins

def test_list_plugins(tmp_path):
    conf = write(tmp_path / "relay.conf", base_conf())
    rc, out, _ = run_server("-c", conf, "--list-plugins")
    assert rc == 1  # some test plugins are unusable on purpose
    lines = {line.split()[0]: line for line in out.splitlines()}
    # every module in the folder, each once (more test plugins may come)
    assert len(lines) == len(out.splitlines())
    assert set(lines) >= {"abi_future", "abi_newer_minor", "consumer", "dup_route", "echo",
                          "fail_init", "needs_missing", "not_a_plugin", "styles"}
    assert list(lines) == sorted(lines)
    echo = lines["echo"].split()
    assert echo[1:4] == ["1.2.3", "ABI", ABI]
    assert os.path.samefile(echo[4], os.path.join(PLUGIN_DIR, ".libs", "echo.so"))
    assert re.match(r"consumer\s+0\.1\.0\s+ABI %s\s+/" % re.escape(ABI), lines["consumer"])
    assert re.match(r"abi_future\s+unusable: .*ABI 2\.0.*ABI %s" % re.escape(ABI), lines["abi_future"])
    assert re.match(r"abi_newer_minor\s+unusable: .*ABI %s" % re.escape(NEWER_MINOR), lines["abi_newer_minor"])
    assert re.match(r"not_a_plugin\s+unusable: .*not a Relay plugin", lines["not_a_plugin"])
    # loadable, even if they would fail later: listing runs no plugin code
    assert "unusable" not in lines["fail_init"]
    assert "unusable" not in lines["needs_missing"]


def test_list_plugins_all_usable(tmp_path):
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    shutil.copy(os.path.join(PLUGIN_DIR, ".libs", "echo.so"), str(plugins / "echo.so"))
    rc, out, _ = run_server("-c", write(tmp_path / "relay.conf", base_conf()),
                            "-o", "plugins.dir=%s" % plugins, "--list-plugins")
    assert rc == 0
    assert len(out.splitlines()) == 1
    assert re.match(r"echo\s+1\.2\.3\s+ABI %s\s+%s$" % (re.escape(ABI), re.escape(str(plugins / "echo.so"))),
                    out.strip())


def test_plugin_without_la_file_loads(make_daemon, tmp_path):
    """Distributions delete .la files: the .so alone is enough."""
    plugins = tmp_path / "bare"
    plugins.mkdir()
    shutil.copy(os.path.join(PLUGIN_DIR, ".libs", "echo.so"), str(plugins / "echo.so"))
    d = make_daemon(sections={"plugins": {"dir": str(plugins), "load": "echo"}})
    assert d.get_json("/v1/items/1") == (200, {"id": "1", "part": None})


def test_list_plugins_empty_folder(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    rc, out, _ = run_server("-c", write(tmp_path / "relay.conf", base_conf()),
                            "-o", "plugins.dir=%s" % empty, "--list-plugins")
    assert rc == 0
    assert out.strip() == "no plugins in %s" % empty


# --------------------------------------------------------------------- -o

def test_override_listen(make_daemon):
    other = free_port()
    d = make_daemon(overrides=["server.listen=%s:%d" % (HOST, other)], start=False)
    configured, d.port = d.port, other
    d.start()  # waits for GET / on the overriding address
    with pytest.raises(OSError):
        socket.create_connection((HOST, configured), timeout=1).close()


def test_override_plugin_key(make_daemon):
    d = make_daemon(overrides=["echo.greeting=from the command line"])
    assert d.get_json("/v1/greeting") == (200, {"greeting": "from the command line"})


def test_override_bad_key_names_command_line(tmp_path):
    conf = write(tmp_path / "relay.conf", base_conf())
    rc, _, err = run_server("-c", conf, "-t", "-o", "server.bogus=1")
    assert rc == 1
    reason = one_error_line(err)
    assert reason.startswith("<command line>")
    assert "unknown key 'bogus' in [server]" in reason


def test_override_bad_value_names_command_line(tmp_path):
    conf = write(tmp_path / "relay.conf", base_conf())
    rc, _, err = run_server("-c", conf, "-t", "-o", "limits.header_timeout=never")
    assert rc == 1
    reason = one_error_line(err)
    assert reason.startswith("<command line>")
    assert "bad value 'never' for limits.header_timeout" in reason


def test_override_malformed(tmp_path):
    conf = write(tmp_path / "relay.conf", base_conf())
    rc, _, err = run_server("-c", conf, "-t", "-o", "nodot")
    assert rc == 1
    assert one_error_line(err) == "-o nodot: expected section.key=value"


def test_override_append(tmp_path):
    conf = write(tmp_path / "relay.conf", base_conf("echo"))
    rc, out, err = run_server("-c", conf, "-t", "-o", "plugins.load+=consumer", "-o", "plugins.load+=styles")
    assert rc == 0, err
    assert "3 plugins ready" in out
    # a plain = replaces: consumer alone lacks echo
    rc, _, err = run_server("-c", conf, "-t", "-o", "plugins.load=consumer")
    assert rc == 1
    assert "requires plugin 'echo'" in err


# ------------------------------------------------------ the file format

def test_include_drop_in_folder(make_daemon):
    d = make_daemon(start=False, extra="include conf.d/*.conf\n")
    # read in sorted order: the later file's greeting wins
    write(os.path.join(d.workdir, "conf.d", "20-greeting.conf"), "[echo]\ngreeting = dropped in\n")
    write(os.path.join(d.workdir, "conf.d", "10-consumer.conf"),
          "[plugins]\nload += consumer\n[echo]\ngreeting = overridden\n")
    write(os.path.join(d.workdir, "conf.d", "README"), "not a .conf: ignored\n")
    d.start()
    assert d.get_json("/v1/twice?v=4") == (200, {"twice": 8})
    assert d.get_json("/v1/greeting") == (200, {"greeting": "dropped in"})
    status, health = d.get_json("/")
    assert [p["name"] for p in health["plugins"]] == ["echo", "consumer"]


def test_include_of_missing_folder_matches_nothing(tmp_path):
    conf = write(tmp_path / "relay.conf", base_conf(extra="include nowhere.d/*.conf\n"))
    rc, out, err = run_server("-c", conf, "-t")
    assert rc == 0, err


def test_include_error_names_the_drop_in(tmp_path):
    conf = write(tmp_path / "relay.conf", base_conf(extra="include conf.d/*.conf\n"))
    dropin = write(tmp_path / "conf.d" / "50-bad.conf", "# a comment\n[echo]\nbogus = 1\n")
    rc, _, err = run_server("-c", conf, "-t")
    assert rc == 1
    reason = one_error_line(err)
    assert reason.startswith("%s:3: " % dropin) or reason.startswith(
        "%s:3: " % os.path.relpath(dropin)), reason
    assert "unknown key 'bogus' in [echo]" in reason


def test_include_relative_to_the_including_file(tmp_path):
    """A relative include pattern is read from the including file's folder,
    not from the current directory."""
    conf = write(tmp_path / "etc" / "relay.conf", base_conf(extra="include conf.d/*.conf\n"))
    write(tmp_path / "etc" / "conf.d" / "x.conf", "[plugins]\nload += consumer\n")
    rc, out, err = run_server("-c", conf, "-t", cwd=str(tmp_path))
    assert rc == 0, err
    assert "2 plugins ready" in out


def test_append_semantics(make_daemon):
    extra = ("[plugins]\nload += consumer\nload += styles\n"
             "[echo]\ngreeting = first\ngreeting = second   ; last assignment wins\n")
    d = make_daemon(extra=extra)
    status, health = d.get_json("/")
    assert [p["name"] for p in health["plugins"]] == ["echo", "consumer", "styles"]
    assert d.get_json("/v1/greeting") == (200, {"greeting": "second"})


def test_plain_assignment_after_append_replaces(tmp_path):
    text = base_conf("echo", extra="[plugins]\nload += consumer\nload = echo\n")
    rc, out, err = run_server("-c", write(tmp_path / "relay.conf", text), "-t")
    assert rc == 0, err
    assert "1 plugin ready" in out


def test_comments_and_quotes(make_daemon):
    extra = ('# a comment line\n; another\n[server]\nname = "my # relay"   # trailing comment\n'
             '[echo]\ngreeting = hi;there ; comment after a space\n')
    d = make_daemon(extra=extra)
    status, health = d.get_json("/")
    assert health["name"] == "my # relay"
    assert d.get_json("/v1/greeting") == (200, {"greeting": "hi;there"})


# ---------------------------------------------------------------- listening

def test_two_listen_addresses(make_daemon):
    second = free_port()
    d = make_daemon(start=False)
    d.sections["server"]["listen"] = "%s:%d %s:%d" % (HOST, d.port, HOST, second)
    d.write_config()
    d.start()
    for port in (d.port, second):
        data = fetch(HOST, port, b"GET /v1/echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert data.startswith(b"HTTP/1.1 200 "), (port, data)


@pytest.mark.skipif(not ipv6_loopback_available(), reason="no IPv6 loopback on this machine")
def test_ipv6_listen(make_daemon):
    port6 = free_port("::1", socket.AF_INET6)
    d = make_daemon(start=False)
    d.sections["server"]["listen"] = "%s:%d [::1]:%d" % (HOST, d.port, port6)
    d.write_config()
    d.start()
    data = fetch("::1", port6, b"GET /v1/echo HTTP/1.1\r\nHost: [::1]\r\nConnection: close\r\n\r\n")
    assert data.startswith(b"HTTP/1.1 200 ")
    assert "listening on [::1]:%d" % port6 in d.log


def test_workers_setting(make_daemon):
    d = make_daemon(sections={"server": {"workers": "3"}})
    assert "3 workers" in d.wait_log("3 workers")
    # requests are spread by the kernel; each worker answers
    for _ in range(10):
        assert d.request("GET", "/v1/echo")[0] == 200
