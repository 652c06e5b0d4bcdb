# contrib/bench/bench-common.sh - shell pieces shared by the benchmark
# scripts of contrib/bench (sourced, never run).  Bash only.
#
# The sourcing script sets BENCH_NAME (for messages) before sourcing, and
# later TMP (its temporary directory), KEEP_TMP, and, for PostgreSQL,
# PG_BIN, PG_PORT and STARTUP_TIMEOUT.  What this file defines:
#
#   die MSG, note MSG, is_uint V
#   descendants PID, stop_tree PID, alive PID..., cpu_ticks PID...
#   bg_wait CMD...            CMD in the background, waited for (Ctrl-C stops it at once)
#   bench_cleanup_trap        EXIT/INT/TERM trap: stops everything in STARTED
#                             (and PostgreSQL), removes TMP unless KEEP_TMP=1
#   bench_ports N             N free ports on 127.0.0.1 into PORTS (array)
#   bench_pinning             CPUS NCPU SERVER_CPU CLIENT_CPU and the command
#                             prefixes PIN_SERVER PIN_CLIENT PIN_PG PIN_RAW
#   real_pids LEADER          the processes under LEADER that are not shells,
#                             taskset or setsid, into REAL_PIDS (array)
#   find_pg_bin PROG...       PG_BIN (default: newest /usr/lib/postgresql/*/bin)
#   start_pg, stop_pg, pg_as, psql_c SQL, pg_pids
#                             a throwaway PostgreSQL cluster in TMP/pg
#   nginx_start BODYFILE PORT nginx returning BODYFILE for GET / (NGINX_MASTER
#                             NGINX_WORKER), pinned like the server
#   to_us T, fmt_us US, ratio A B, wrk_parse FILE
#
# Everything a function starts is recorded in STARTED, so the trap stops it
# on exit, Ctrl-C or an error.
# shellcheck shell=bash disable=SC2015,SC2317
# shellcheck disable=SC2034  # the variables set here are for the sourcing script

: "${BENCH_NAME:=bench}"
BENCH_DIR=${BENCH_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)}

die() {
	echo "$BENCH_NAME: error: $*" >&2
	exit 1
}
note() { echo "$BENCH_NAME: $*" >&2; }

is_uint() { case $1 in '' | *[!0-9]*) return 1 ;; *) return 0 ;; esac; }

# ---- processes ------------------------------------------------------------------

TMP=${TMP:-}
STARTED=()   # process (group) leaders we started: stopped on exit
PGDATA=
PG_UP=0
PGRUN=()     # runs a command as the owner of the cluster (postgres when we are root)
KEEP_NOTE=   # said after "kept TMP"

descendants() { # PID -> PID and all its descendants, one per line
	ps -A -o pid=,ppid= | awk -v root="$1" '
		{ kids[$2] = kids[$2] " " $1 }
		END {
			n = 1; q[1] = root; i = 1
			while (i <= n) { p = q[i++]; print p
				m = split(kids[p], k, " ")
				for (j = 1; j <= m; j++) q[++n] = k[j] }
		}'
}

stop_tree() { # PID: stop it, its process group when it leads one, and its children
	local pid=$1 pids p
	pids=$(descendants "$pid")
	if [ "$(ps -o pgid= -p "$pid" 2>/dev/null | tr -d ' ')" = "$pid" ]; then
		kill -TERM -- "-$pid" 2>/dev/null
	fi
	for p in $pids; do kill -TERM "$p" 2>/dev/null; done
	for _ in $(seq 100); do
		local left=0
		for p in $pids; do kill -0 "$p" 2>/dev/null && left=1; done
		[ "$left" = 0 ] && break
		sleep 0.1
	done
	for p in $pids; do kill -KILL "$p" 2>/dev/null; done
	wait "$pid" 2>/dev/null
	return 0
}

forget_started() { # PID: no longer ours to stop (it was stopped)
	local keep=() p
	for p in ${STARTED[@]+"${STARTED[@]}"}; do [ "$p" = "$1" ] || keep+=("$p"); done
	STARTED=(${keep[@]+"${keep[@]}"})
}

# bg_wait CMD...: runs CMD in the background and waits for it; its exit
# status.  A trapped signal (Ctrl-C) interrupts `wait` at once and the trap
# stops CMD with everything else we started: a foreground child such as wrk,
# which handles SIGINT and exits 0, would make bash ignore the Ctrl-C.
bg_wait() {
	local pid rc
	"$@" &
	pid=$!
	STARTED+=("$pid")
	wait "$pid"
	rc=$?
	forget_started "$pid"
	return "$rc"
}

alive() { # PID... -> true when all exist
	local pid
	for pid in "$@"; do kill -0 "$pid" 2>/dev/null || return 1; done
}

cpu_ticks() { # PID... -> utime+stime (fields 14, 15 of /proc/PID/stat), summed; a gone PID counts 0
	local total=0 pid stat rest
	for pid in "$@"; do
		stat=$(cat "/proc/$pid/stat" 2>/dev/null) || continue
		rest=${stat##*) }
		# shellcheck disable=SC2086
		set -- $rest
		total=$((total + ${12} + ${13}))
	done
	echo "$total"
}

real_pids() { # LEADER -> REAL_PIDS: the started process (taskset and wrappers exec into it) and its children, less shells
	local p exe
	REAL_PIDS=()
	for p in $(descendants "$1"); do
		exe=$(readlink "/proc/$p/exe" 2>/dev/null) || continue
		exe=${exe% (deleted)}
		case ${exe##*/} in sh | bash | dash | taskset | setsid) continue ;; esac
		REAL_PIDS+=("$p")
	done
}

bench_cleanup() {
	local rc=$? pid
	trap - EXIT INT TERM
	for pid in ${STARTED[@]+"${STARTED[@]}"}; do stop_tree "$pid"; done
	stop_pg
	if [ -n "$TMP" ] && [ -d "$TMP" ]; then
		if [ "${KEEP_TMP:-0}" = 1 ]; then
			note "kept $TMP${KEEP_NOTE:+ ($KEEP_NOTE)}"
		else
			rm -rf "$TMP"
		fi
	fi
	exit "$rc"
}

bench_cleanup_trap() {
	trap bench_cleanup EXIT
	trap 'note interrupted; exit 130' INT
	trap 'note terminated; exit 143' TERM
}

# ---- ports, pinning -----------------------------------------------------------------

bench_ports() { # N -> PORTS: N distinct free ports on 127.0.0.1
	local out
	out=$("${PYTHON:-python3}" "$BENCH_DIR/idle_conns.py" freeport -n "$1") || die "could not pick free ports"
	mapfile -t PORTS <<<"$out"
	[ "${#PORTS[@]}" -eq "$1" ] || die "could not pick $1 free ports"
}

# Pins the server (and, by default, PostgreSQL and the raw programs, which
# stand in for the server as the engine's client) to SERVER_CPU and the load
# generator to CLIENT_CPU; PG_CPU=none leaves PostgreSQL unpinned.  Sets
# PINNED=1 when it could.
bench_pinning() {
	CPUS=$("${PYTHON:-python3}" -c 'import os; print(*sorted(os.sched_getaffinity(0)))' 2>/dev/null) || CPUS=0
	NCPU=$(echo "$CPUS" | wc -w)
	PIN_SERVER=() PIN_CLIENT=() PIN_PG=() PIN_RAW=() PINNED=0
	if [ "$NCPU" -ge 2 ] && command -v taskset >/dev/null 2>&1; then
		SERVER_CPU=${SERVER_CPU:-$(echo "$CPUS" | awk '{print $1}')}
		CLIENT_CPU=${CLIENT_CPU:-$(echo "$CPUS" | awk '{print $2}')}
		PG_CPU=${PG_CPU:-$SERVER_CPU}
		RAW_CPU=${RAW_CPU:-$SERVER_CPU}
		PIN_SERVER=(taskset -c "$SERVER_CPU")
		PIN_CLIENT=(taskset -c "$CLIENT_CPU")
		PIN_RAW=(taskset -c "$RAW_CPU")
		[ "$PG_CPU" = none ] || PIN_PG=(taskset -c "$PG_CPU")
		PINNED=1
	fi
}

# ---- PostgreSQL -------------------------------------------------------------------------

find_pg_bin() { # PROG... -> PG_BIN holding all of them, or die
	local p
	if [ -z "${PG_BIN:-}" ]; then
		PG_BIN=$(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
	fi
	for p in "$@"; do
		[ -x "${PG_BIN:-/nonexistent}/$p" ] ||
			die "PostgreSQL's $p not found in '${PG_BIN:-/usr/lib/postgresql/*/bin}': install the Debian packages postgresql postgresql-client (contrib/install-deps), set PG_BIN, or run with ENGINES=sqlite"
	done
}

pg_as() { (cd "$TMP/pg" && ${PGRUN[@]+"${PGRUN[@]}"} "$@"); }

# A throwaway cluster in TMP/pg: initdb --auth=trust -U relay, TCP on
# 127.0.0.1:PG_PORT, max_connections=200, everything else PostgreSQL's
# defaults (fsync on, synchronous_commit on), plus PG_OPTS (extra postgres
# options, e.g. "-c shared_preload_libraries=pg_stat_statements" to see
# which statements cost the server; KEEP_TMP=1 keeps the cluster, whose
# statistics survive its clean shutdown).  Sets PG_SETTINGS.
start_pg() {
	local out
	mkdir -p "$TMP/pg/sock" || die "mkdir $TMP/pg failed"
	PGDATA=$TMP/pg/data
	if [ "$(id -u)" = 0 ]; then
		# initdb refuses to run as root: the cluster belongs to postgres
		id postgres >/dev/null 2>&1 || die "running as root and there is no postgres user to own the cluster"
		command -v runuser >/dev/null 2>&1 || die "runuser not found (Debian package util-linux)"
		PGRUN=(runuser -u postgres --)
		chmod 0711 "$TMP" && chown -R postgres: "$TMP/pg" || die "cannot hand $TMP/pg to postgres"
	fi
	note "initdb (PostgreSQL $("$PG_BIN/postgres" -V | awk '{print $3}')) in $PGDATA"
	out=$(pg_as timeout -k 5 120 "$PG_BIN/initdb" -D "$PGDATA" --auth=trust -U relay -E UTF8 --no-sync 2>&1) || {
		echo "$out" >&2
		die "initdb failed"
	}
	note "starting PostgreSQL on 127.0.0.1:$PG_PORT (fsync on, synchronous_commit on: the defaults)"
	PG_UP=1
	# shellcheck disable=SC2086
	pg_as ${PIN_PG[@]+"${PIN_PG[@]}"} timeout -k 5 $((STARTUP_TIMEOUT + 10)) "$PG_BIN/pg_ctl" -D "$PGDATA" \
		-l "$TMP/pg/postgres.log" -w -t "$STARTUP_TIMEOUT" \
		-o "-c listen_addresses=127.0.0.1 -p $PG_PORT -k $TMP/pg/sock -c max_connections=200 ${PG_OPTS:-}" \
		start >"$TMP/pg/pg_ctl.log" 2>&1 || {
		cat "$TMP/pg/pg_ctl.log" "$TMP/pg/postgres.log" >&2 2>/dev/null
		die "PostgreSQL did not start"
	}
	"$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT" -U relay -d postgres -t 10 || die "PostgreSQL does not accept connections"
	PG_SETTINGS=$(psql_c "SELECT string_agg(name || '=' || setting || COALESCE(unit, ''), ', ' ORDER BY name) FROM pg_settings
		WHERE name IN ('fsync', 'synchronous_commit', 'wal_sync_method', 'shared_buffers', 'full_page_writes')") ||
		die "psql cannot query the cluster"
}

stop_pg() {
	[ "$PG_UP" = 1 ] || return 0
	PG_UP=0
	pg_as timeout -k 5 30 "$PG_BIN/pg_ctl" -D "$PGDATA" -m fast -w -t 20 stop >>"$TMP/pg/pg_ctl.log" 2>&1 ||
		pg_as timeout -k 5 20 "$PG_BIN/pg_ctl" -D "$PGDATA" -m immediate -w -t 10 stop >>"$TMP/pg/pg_ctl.log" 2>&1
	# last resort: the postmaster's pid from its pid file
	local pm
	pm=$(head -n 1 "$PGDATA/postmaster.pid" 2>/dev/null)
	if is_uint "$pm" && kill -0 "$pm" 2>/dev/null; then
		kill -QUIT "$pm" 2>/dev/null
		sleep 1
		kill -KILL "$pm" 2>/dev/null
	fi
	return 0
}

psql_c() { # SQL -> its value(s), unaligned, one row a line
	timeout -k 5 30 "$PG_BIN/psql" -X -q -A -t -h 127.0.0.1 -p "$PG_PORT" -U relay -d postgres -c "$1"
}

# steady_stats ENGINE: on PostgreSQL, ANALYZE, which autovacuum does within
# a minute (autovacuum_naptime) in a running deployment.  Until then the
# tables of a fresh cluster have no statistics, and the generic plans that
# relay-server's prepared statements cached while they were nearly empty
# stay: a record looked up by (tenant, id) then walks records_feed's
# (tenant, change_seq) with id as a filter, every row of the tenant per
# lookup.  ANALYZE invalidates those plans; they are made again with the
# tables' real sizes.  The tables need rows by then (a warm-up): an empty
# table's statistics say nothing of its columns.  (docs/storage.md, "A
# fresh database".)
steady_stats() {
	[ "$1" = pgsql ] || return 0
	psql_c "ANALYZE" >/dev/null || note "$1: ANALYZE failed"
}

pg_pids() { # the postmaster and every process under it
	local pm
	pm=$(head -n 1 "$PGDATA/postmaster.pid" 2>/dev/null)
	is_uint "$pm" && descendants "$pm"
}

# ---- nginx ---------------------------------------------------------------------------------

# nginx_start BODYFILE PORT: nginx (daemon off, one worker, no access log,
# keep-alive connections never closed by it) answering GET / with 200 and
# exactly the bytes of BODYFILE as application/json, pinned like the server.
# Sets NGINX_MASTER NGINX_WORKER.  Needs NGINX (default nginx).
nginx_start() {
	local body=$1 port=$2 dir=$TMP/nginx ret user_line='' p
	mkdir -p "$dir/temp" || die "mkdir $dir failed"
	ret=$("${PYTHON:-python3}" "$BENCH_DIR/idle_conns.py" nginx-return "$body") ||
		die "cannot make an nginx return directive for $body"
	[ "$(id -u)" = 0 ] && user_line="user root;"
	cat >"$dir/nginx.conf" <<EOF
# Generated by contrib/bench/$BENCH_NAME; deleted on exit.
$user_line
daemon off;
master_process on;
worker_processes 1;
worker_rlimit_nofile 16384;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events {
	worker_connections 4096;
}
http {
	access_log off;
	default_type application/json;
	# pure keep-alive: do not close a connection every 1000 requests
	keepalive_requests 1000000000;
	client_body_temp_path $dir/temp/body;
	proxy_temp_path $dir/temp/proxy;
	fastcgi_temp_path $dir/temp/fastcgi;
	uwsgi_temp_path $dir/temp/uwsgi;
	scgi_temp_path $dir/temp/scgi;
	geo \$relay_bench_dollar { default "\$"; }
	server {
		listen 127.0.0.1:$port;
		location = / {
			$ret
		}
	}
}
EOF
	"${NGINX:-nginx}" -t -q -p "$dir/" -c "$dir/nginx.conf" -e "$dir/error.log" >"$TMP/nginx-t.log" 2>&1 || {
		cat "$TMP/nginx-t.log" >&2
		die "nginx rejected its configuration ($dir/nginx.conf)"
	}
	note "starting nginx on 127.0.0.1:$port"
	# shellcheck disable=SC2086
	setsid ${PIN_SERVER[@]+"${PIN_SERVER[@]}"} "${NGINX:-nginx}" -p "$dir/" -c "$dir/nginx.conf" -e "$dir/error.log" \
		</dev/null >"$TMP/nginx.log" 2>&1 &
	NGINX_MASTER=$!
	STARTED+=("$NGINX_MASTER")
	local deadline=$((SECONDS + ${STARTUP_TIMEOUT:-30})) code=000
	while :; do
		kill -0 "$NGINX_MASTER" 2>/dev/null || { tail -n 30 "$dir/error.log" "$TMP/nginx.log" >&2; die "nginx exited during start-up"; }
		code=$(curl -s -o /dev/null --max-time 2 -w '%{http_code}' "http://127.0.0.1:$port/" 2>/dev/null || true)
		case $code in 2??) break ;; esac
		[ $SECONDS -lt $deadline ] || die "nginx did not answer GET / on 127.0.0.1:$port (last status $code)"
		sleep 0.1
	done
	NGINX_WORKER=
	for _ in $(seq 50); do
		for p in $(descendants "$NGINX_MASTER"); do
			[ "$p" != "$NGINX_MASTER" ] && NGINX_WORKER=$p && break
		done
		[ -n "$NGINX_WORKER" ] && break
		sleep 0.1
	done
	[ -n "$NGINX_WORKER" ] || die "no nginx worker process under master $NGINX_MASTER"
}

# ---- wrk and figures ----------------------------------------------------------------------

to_us() { # wrk time (612.00us, 1.23ms, 2.00s, 1.00m) -> microseconds
	awk -v t="$1" 'BEGIN {
		if (t ~ /us$/) m = 1; else if (t ~ /ms$/) m = 1000
		else if (t ~ /s$/) m = 1000000; else if (t ~ /m$/) m = 60000000
		else if (t ~ /h$/) m = 3600000000; else { print ""; exit }
		sub(/[a-z]+$/, "", t); printf "%.1f\n", t * m }'
}

fmt_us() { awk -v u="$1" 'BEGIN { if (u == "" || u == "-") print "-"; else if (u >= 1000) printf "%.2f ms", u / 1000; else printf "%.0f us", u }'; }

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b == "" || a == "-" || b <= 0) print "n/a"; else printf "%.2f", a / b }'; }

# wrk_parse FILE (wrk --latency output) -> W_RPS W_REQS W_P50 W_P99 (us)
# W_ERRS (socket errors: connect, read, write, timeout) W_NON2XX; false
# when the output has no figures.
wrk_parse() {
	eval "$(awk '
		/Requests\/sec:/ { rps = $2 }
		/ requests in / { reqs = $1 }
		/Latency Distribution/ { dist = 1 }
		dist && $1 == "50%" { p50 = $2 }
		dist && $1 == "99%" { p99 = $2; dist = 0 }
		/Socket errors:/ { gsub(/,/, ""); errs = $4 + $6 + $8 + $10 }
		/Non-2xx or 3xx responses:/ { non2xx = $NF }
		END { printf "W_RPS=%s W_REQS=%s W_P50RAW=%s W_P99RAW=%s W_ERRS=%d W_NON2XX=%d\n",
			rps == "" ? "" : rps, reqs == "" ? 0 : reqs, p50 == "" ? "" : p50, p99 == "" ? "" : p99, errs, non2xx }
	' "$1")"
	[ -n "$W_RPS" ] && [ -n "$W_P99RAW" ] && [ "$W_REQS" -gt 0 ] || return 1
	W_P50=$(to_us "${W_P50RAW:-}")
	W_P99=$(to_us "$W_P99RAW")
}
