"""The durable job queue on both engines, through the storetest plugin:
completion, no job twice at once (also with two daemons on one database),
lease expiry and reclaim after a crash, backoff, Retry-After, dead
letters, retry and listing."""
import signal
import time

import pytest

from conftest import assert_object_error, call, wait_for


def enqueue(d, tenant=None, **spec):
    status, _, body = call(d, "POST", "/store/jobs", spec, tenant=tenant)
    assert status == 201, body
    return body["ids"]


def jobs(d, state=None, tenant=None):
    status, _, body = call(d, "GET", "/store/jobs" + ("?state=" + state if state else ""), tenant=tenant)
    assert status == 200, body
    return {j["id"]: j for j in body["jobs"]}


def runs(d, job_id):
    status, _, body = call(d, "GET", "/store/runs?job=" + job_id)
    assert status == 200, body
    return [{"attempt": int(r["attempt"]), "started": int(r["started_ms"]),
             "finished": None if r["finished_ms"] is None else int(r["finished_ms"]),
             "overlap": r["overlap"]} for r in body["rows"]]


def wait_state(d, ids, state, timeout=10.0, tenant=None):
    """Waits until every job of IDS is in STATE; returns the jobs."""
    ids = set(ids)

    def check():
        js = jobs(d, tenant=tenant)
        return js if all(js.get(i, {}).get("state") == state for i in ids) else None

    js = wait_for(check, timeout=timeout, interval=0.05)
    if not js:
        js = jobs(d, tenant=tenant)
        pytest.fail("not all %s within %.0fs: %s" % (state, timeout,
                                                     {i: js.get(i, {}).get("state") for i in ids}))
    return js


def assert_no_overlap(rs):
    """A job's attempts never ran at the same time."""
    assert all(r["overlap"] == "0" for r in rs), rs
    done = sorted((r for r in rs if r["finished"] is not None), key=lambda r: r["started"])
    for a, b in zip(done, done[1:]):
        assert a["finished"] <= b["started"], rs


def test_jobs_complete_once_without_overlap(store_daemon, storage):
    d = store_daemon()
    ids = enqueue(d, n=10, sleep_ms=60)
    assert len(set(ids)) == 10 and all(i.startswith("job_") for i in ids)
    js = wait_state(d, ids, "done")
    intervals = []
    for i in ids:
        assert (js[i]["attempts"], js[i]["last_error"], js[i]["kind"]) == (1, None, "st.work")
        rs = runs(d, i)
        assert len(rs) == 1 and rs[0]["attempt"] == 1 and rs[0]["finished"] is not None, rs
        assert_no_overlap(rs)
        assert rs[0]["finished"] - rs[0]["started"] >= 55
        intervals.append((rs[0]["started"], rs[0]["finished"]))
    # at most job_concurrency (4) at once on this daemon
    peak = max(sum(1 for s, f in intervals if s <= t < f) for t, _ in intervals)
    assert 1 <= peak <= 4, intervals
    assert storage.query("SELECT DISTINCT state, attempts FROM relay_jobs") == [("done", "1")]
    assert "lost its lease" not in d.log


def test_two_daemons_share_one_queue(store_daemon, storage):
    """Two daemons on one database (one PostgreSQL database; one SQLite
    file): every job runs exactly once, and both take part."""
    a = store_daemon(name="a")
    b = store_daemon(name="b")
    ids = enqueue(a, n=30, sleep_ms=50) + enqueue(b, n=30, sleep_ms=50)
    js = wait_state(a, ids, "done", timeout=20)
    for i in ids:
        assert js[i]["attempts"] == 1, js[i]
        rs = runs(a, i)
        assert len(rs) == 1 and rs[0]["overlap"] == "0" and rs[0]["finished"] is not None, (i, rs)
    assert storage.scalar("SELECT COUNT(*) FROM st_runs") == "60"
    holders = dict(storage.query("SELECT locked_by, COUNT(*) FROM relay_jobs GROUP BY locked_by"))
    assert len(holders) == 2 and sum(int(n) for n in holders.values()) == 60, holders
    for d in (a, b):
        assert "lost its lease" not in d.log and "claim failed" not in d.log


def test_lease_expiry_runs_a_hung_job_again(store_daemon):
    # the hung claim is given up after [jobs] timeout, then its lease runs out
    d = store_daemon({"jobs": {"lease": "1s", "timeout": "1s"}})
    job, = enqueue(d, hang_first=True, sleep_ms=20)
    js = wait_state(d, [job], "done", timeout=6)
    assert js[job]["attempts"] == 2
    first, second = runs(d, job)
    assert (first["attempt"], first["finished"]) == (1, None)  # never finished
    assert second["attempt"] == 2 and second["finished"] is not None and second["overlap"] == "0"
    gap = second["started"] - first["started"]
    assert 950 <= gap <= 3500, "attempt 2 started %dms after attempt 1 (timeout 1s, lease 1s)" % gap
    abandon(d)


def abandon(d):
    """Stops D gracefully although storetest's hang_first attempt never
    called relay_job_done(): the daemon must still exit 0 and free the
    claim (the teardown fails on any LeakSanitizer report)."""
    assert d.stop() == 0


def test_hung_job_gives_its_slot_back_when_its_lease_expires(store_daemon):
    # a running claim renews its lease; [jobs] timeout is what gives up a hung one
    d = store_daemon({"jobs": {"lease": "1s", "timeout": "1s"}, "storetest": {"job_concurrency": "1"}})
    try:
        hung, = enqueue(d, hang_first=True, sleep_ms=10)
        assert wait_for(lambda: runs(d, hung), timeout=3)
        other, = enqueue(d, sleep_ms=10)
        js = wait_for(lambda: (lambda js: js if js[hung]["state"] == js[other]["state"] == "done" else None)(jobs(d)),
                      timeout=4, interval=0.1)
        assert js, "3s after the lease of %s expired: %s" % (hung, jobs(d))
        assert [r["attempt"] for r in runs(d, hung)] == [1, 2]
    finally:
        abandon(d)


def test_expired_lease_without_attempts_left_is_dead(store_daemon):
    d = store_daemon({"jobs": {"lease": "1s", "timeout": "1s"}})
    job, = enqueue(d, hang_first=True, max_attempts=1)
    js = wait_state(d, [job], "dead", timeout=5)
    assert (js[job]["attempts"], js[job]["last_error"]) == (1, "lease expired")
    assert [r["attempt"] for r in runs(d, job)] == [1]
    abandon(d)


def test_reclaim_after_crash(store_daemon):
    d = store_daemon({"jobs": {"lease": "1s"}})
    job, = enqueue(d, sleep_ms=3000)
    assert wait_for(lambda: runs(d, job), timeout=3), "the job did not start"
    time.sleep(0.2)
    (before,) = runs(d, job)
    assert before["attempt"] == 1 and before["finished"] is None
    d.send_signal(signal.SIGKILL)  # mid-run
    d.proc.wait(5)
    # the restarted daemon (a long lease of its own, so that only the crashed
    # claim's lease matters) claims the job once that lease expires
    d.sections["jobs"]["lease"] = "10s"
    d.write_config()
    d.start()
    js = wait_state(d, [job], "done", timeout=8)
    assert js[job]["attempts"] == 2
    rs = runs(d, job)
    assert [r["attempt"] for r in rs] == [1, 2], rs
    first, second = rs
    assert first["finished"] is None and second["finished"] is not None
    assert second["overlap"] == "0"
    gap = second["started"] - first["started"]
    assert 950 <= gap <= 4000, "reclaimed %dms after the first claim (lease 1s)" % gap
    assert second["finished"] - second["started"] >= 2950


def test_job_outliving_its_lease_is_not_run_twice_at_once(store_daemon):
    d = store_daemon({"jobs": {"lease": "1s"}})
    job, = enqueue(d, sleep_ms=1300)
    js = wait_state(d, [job], "done", timeout=6)
    # whatever else started has finished 1.3s later
    rs = wait_for(lambda: (lambda rs: rs if all(r["finished"] for r in rs) else None)(runs(d, job)), timeout=3)
    assert_no_overlap(rs)
    assert "lost its lease" not in d.log
    assert [r["attempt"] for r in rs] == [1] and js[job]["attempts"] == 1, rs


def test_delayed_jobs_and_due_order(store_daemon):
    d = store_daemon({"storetest": {"job_concurrency": "1"}})
    before = int(time.time() * 1000)
    late, = enqueue(d, delay_ms=600, sleep_ms=1)
    after = int(time.time() * 1000)
    due = jobs(d)[late]
    assert due["state"] == "queued" and before + 600 <= due["next_attempt_at"] <= after + 600, (before, due)
    early = []
    for _ in range(4):
        early += enqueue(d, sleep_ms=20)
        time.sleep(0.005)
    wait_state(d, early + [late], "done", timeout=5)
    starts = {i: runs(d, i)[0]["started"] for i in early + [late]}
    # one at a time, in due order: the delayed one last, and not before its time
    assert sorted(starts, key=starts.get) == early + [late]
    assert starts[late] >= due["next_attempt_at"]
    finished = [runs(d, i)[0]["finished"] for i in early]
    assert all(f <= s for f, s in zip(finished, [starts[i] for i in early[1:]]))


def test_retry_now_makes_a_delayed_job_due(store_daemon):
    d = store_daemon()
    job, = enqueue(d, delay_ms=60000)
    time.sleep(0.3)
    assert jobs(d)[job]["state"] == "queued" and runs(d, job) == []
    status, _, _ = call(d, "POST", "/store/jobs/%s/retry" % job)
    assert status == 202
    js = wait_state(d, [job], "done", timeout=3)
    assert js[job]["attempts"] == 1


def test_backoff_between_attempts(store_daemon):
    d = store_daemon({"jobs": {"backoff_base": "300ms"}})
    job, = enqueue(d, fail_times=2)
    js = wait_state(d, [job], "done", timeout=8)
    assert (js[job]["attempts"], js[job]["last_error"]) == (3, None)
    rs = runs(d, job)
    assert [r["attempt"] for r in rs] == [1, 2, 3], rs
    assert_no_overlap(rs)
    gap1 = rs[1]["started"] - rs[0]["started"]
    gap2 = rs[2]["started"] - rs[1]["started"]
    # delay = base * 2^(attempt-1), half of it fixed, half random
    assert 150 <= gap1 <= 300 + 700, (gap1, gap2)
    assert 300 <= gap2 <= 600 + 700, (gap1, gap2)


def test_retry_after_is_honoured(store_daemon):
    # the backoff would wait 2.5-5s: the handler's 500ms wins
    d = store_daemon({"jobs": {"backoff_base": "5s"}})
    job, = enqueue(d, fail_times=1, retry_after_ms=500)
    js = wait_state(d, [job], "done", timeout=5)
    assert js[job]["attempts"] == 2
    first, second = runs(d, job)
    gap = second["started"] - first["started"]
    assert 450 <= gap <= 1500, gap


def test_retry_after_beyond_the_clock_waits_instead_of_running_again(store_daemon):
    """A Retry-After too large to add to the clock (here 2^63-1 ms) overflowed
    (undefined behaviour) into a run_at in the past: the job ran again at
    once.  It now waits as long as a run_at can say."""
    d = store_daemon({"jobs": {"poll_interval": "50ms"}})
    job, = enqueue(d, fail_times=1, retry_after_ms=2 ** 63 - 1)
    js = wait_for(lambda: (lambda j: j if j["attempts"] == 1 and j["state"] == "queued" else None)(jobs(d)[job]),
                  timeout=5)
    assert js, jobs(d)[job]
    assert js["next_attempt_at"] == 2 ** 63 - 1, js
    time.sleep(0.5)  # ten polls
    assert (jobs(d)[job]["attempts"], len(runs(d, job))) == (1, 1)


def test_dead_letter_retry_and_listing(store_daemon):
    d = store_daemon({"jobs": {"backoff_base": "100ms"}})
    dead, = enqueue(d, max_attempts=2, fail_times=9)
    ok, = enqueue(d, sleep_ms=1)
    js = wait_state(d, [dead], "dead", timeout=5)
    wait_state(d, [ok], "done", timeout=5)
    assert (js[dead]["attempts"], js[dead]["max_attempts"], js[dead]["last_error"]) == (2, 2, "planned failure 2")
    assert [r["attempt"] for r in runs(d, dead)] == [1, 2]
    # listing by state, per tenant
    assert set(jobs(d, "dead")) == {dead}
    assert set(jobs(d, "done")) == {ok}
    assert jobs(d, "queued") == {} and jobs(d, "running") == {}
    assert set(jobs(d)) == {dead, ok}
    assert jobs(d, tenant="t2") == {}
    # pages, by id descending
    status, _, body = call(d, "GET", "/store/jobs")
    newest, oldest = sorted([dead, ok], reverse=True)
    assert [j["id"] for j in body["jobs"]] == [newest, oldest]
    status, _, body = call(d, "GET", "/store/jobs?after=" + newest)
    assert status == 200 and [j["id"] for j in body["jobs"]] == [oldest]
    status, _, body = call(d, "GET", "/store/jobs?after=" + oldest)
    assert status == 200 and body["jobs"] == []
    # retry: not another tenant's job, not a done job, not an unknown one
    for path, tenant in (("/store/jobs/%s/retry" % dead, "t2"), ("/store/jobs/%s/retry" % ok, None),
                         ("/store/jobs/job_nosuchjob/retry", None)):
        status, _, body = call(d, "POST", path, tenant=tenant)
        assert status == 404, (path, tenant, body)
        assert_object_error(body, "not_found")
    assert jobs(d)[dead]["state"] == "dead" and jobs(d)[ok]["state"] == "done"
    # the dead job gets one more attempt
    status, _, body = call(d, "POST", "/store/jobs/%s/retry" % dead)
    assert (status, body) == (202, None)
    assert wait_for(lambda: len(runs(d, dead)) == 3, timeout=5), runs(d, dead)
    js = wait_state(d, [dead], "dead", timeout=5)
    assert (js[dead]["attempts"], js[dead]["max_attempts"], js[dead]["last_error"]) == (3, 3, "planned failure 3")
    rs = runs(d, dead)
    assert [r["attempt"] for r in rs] == [1, 2, 3]
    assert_no_overlap(rs)
    assert "job %s (st.work) dead after 2 attempts: planned failure 2" % dead in d.log


def writes(d, tenant=None):
    status, _, body = call(d, "GET", "/store/writes", tenant=tenant)
    assert status == 200, body
    return {r["id"] for r in body["rows"]}


def test_batched_jobs_drain_at_the_claim_rate_not_the_poll_rate(store_daemon):
    """A batch's ends free its slots and wake the poller, so 80 st.batch
    jobs (five claims of 16) finish in well under one [jobs]
    poll_interval of 10s: a poller that only the timer woke would take
    40s."""
    d = store_daemon({"jobs": {"poll_interval": "10s"}})
    time.sleep(0.2)  # past the first poll at start
    ids = []
    for _ in range(4):
        ids += enqueue(d, n=20, batch=True)
    assert len(ids) == 80
    wait_state(d, ids, "done", timeout=5)


def test_batched_jobs_share_a_transaction_and_fail_alone(store_daemon, engine):
    """relay_job_batch: a claim's st.batch jobs run in one transaction.
    Every plain job ends done with its write kept; a job ending failed is
    requeued with its error (its write kept: the failure was its own
    answer); a job whose handler runs a failing statement after ending
    done is undone alone on PostgreSQL (which refuses the rest of a
    transaction after an error: its savepoint is rolled back, its job left
    running until its lease expires), while SQLite fails only the
    statement and keeps the rest."""
    d = store_daemon({"jobs": {"lease": "30s"}})
    plain = enqueue(d, n=20, batch=True)
    failing = enqueue(d, batch=True, fail=True)
    bad = enqueue(d, batch=True, bad_sql=True)
    more = enqueue(d, n=5, batch=True)
    js = wait_state(d, plain + more, "done")
    assert wait_for(lambda: jobs(d)[failing[0]]["state"] == "queued" and jobs(d)[failing[0]]["attempts"] == 1), \
        jobs(d)[failing[0]]
    failed = jobs(d)[failing[0]]
    assert failed["last_error"] == "planned failure", failed
    seen = writes(d)
    assert {i + "/1" for i in plain + more + failing} <= seen, seen
    if engine == "pgsql":
        assert "failed in its batch" in d.wait_log("failed in its batch")
        assert jobs(d)[bad[0]]["state"] == "running" and bad[0] + "/1" not in writes(d)
    else:
        assert wait_state(d, bad, "done") and bad[0] + "/1" in writes(d)
    assert all(js[i]["attempts"] == 1 for i in plain + more)
