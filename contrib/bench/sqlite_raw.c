/* sqlite_raw.c - the raw-SQLite side of contrib/bench/storage-bench.
 *
 *   sqlite_raw DB THREADS SECONDS BODY
 *
 * THREADS threads, each with its own connection to the WAL database DB, set
 * up like Relay's SQLite driver (busy timeout 5 s, journal_mode WAL,
 * foreign_keys ON, synchronous NORMAL), each running, until SECONDS have
 * passed, one-row write transactions with prepared statements:
 *   BEGIN IMMEDIATE; INSERT INTO bench_rows (tenant, body, created_ms)
 *   VALUES (?, ?, ?); COMMIT
 * The table must exist (the bench plugin's migration makes it).  Prints
 *   rows N seconds S rows_per_s R busy B
 * where B counts transactions that failed (SQLITE_BUSY after the timeout,
 * or any other error) and were not counted.  Exits non-zero when nothing
 * could be run.  Built on the fly by storage-bench: cc -O2 ... -lsqlite3 -lpthread */
#include <pthread.h>
#include <sqlite3.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const char *db_path, *body;
static double seconds;
static pthread_barrier_t ready;
static double t_start, t_end;

typedef struct {
        long rows, failed;
        char err[256];
} result;

static double now_s(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int64_t wall_ms(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int step_done(sqlite3_stmt *s)
{
        int rc = sqlite3_step(s);
        sqlite3_reset(s);
        return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

static void *writer(void *arg)
{
        result *res = arg;
        sqlite3 *db = NULL;
        sqlite3_stmt *begin = NULL, *insert = NULL, *commit = NULL, *rollback = NULL;
        int ok = sqlite3_open_v2(db_path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL) == SQLITE_OK;
        if (ok) {
                sqlite3_busy_timeout(db, 5000);
                ok = sqlite3_exec(db,
                                  "PRAGMA journal_mode = WAL; PRAGMA foreign_keys = ON; PRAGMA synchronous = NORMAL;",
                                  NULL, NULL, NULL) == SQLITE_OK &&
                     sqlite3_prepare_v2(db, "BEGIN IMMEDIATE", -1, &begin, NULL) == SQLITE_OK &&
                     sqlite3_prepare_v2(db, "INSERT INTO bench_rows (tenant, body, created_ms) VALUES (?, ?, ?)", -1,
                                        &insert, NULL) == SQLITE_OK &&
                     sqlite3_prepare_v2(db, "COMMIT", -1, &commit, NULL) == SQLITE_OK &&
                     sqlite3_prepare_v2(db, "ROLLBACK", -1, &rollback, NULL) == SQLITE_OK;
        }
        if (!ok)
                snprintf(res->err, sizeof(res->err), "%s: %s", db_path, db ? sqlite3_errmsg(db) : "cannot open");
        pthread_barrier_wait(&ready); /* everyone starts together */
        while (ok && now_s() < t_end) {
                int rc = step_done(begin);
                if (rc == SQLITE_OK) {
                        sqlite3_bind_text(insert, 1, "bench", -1, SQLITE_STATIC);
                        sqlite3_bind_text(insert, 2, body, -1, SQLITE_STATIC);
                        sqlite3_bind_int64(insert, 3, wall_ms());
                        rc = step_done(insert);
                        if (rc == SQLITE_OK)
                                rc = step_done(commit);
                        if (rc != SQLITE_OK && !sqlite3_get_autocommit(db))
                                step_done(rollback);
                }
                if (rc == SQLITE_OK) {
                        res->rows++;
                } else {
                        res->failed++;
                        if (!res->err[0])
                                snprintf(res->err, sizeof(res->err), "%s", sqlite3_errmsg(db));
                }
        }
        sqlite3_finalize(begin), sqlite3_finalize(insert), sqlite3_finalize(commit), sqlite3_finalize(rollback);
        sqlite3_close_v2(db);
        return NULL;
}

int main(int argc, char **argv)
{
        if (argc != 5) {
                fprintf(stderr, "usage: %s DB THREADS SECONDS BODY\n", argv[0]);
                return 2;
        }
        db_path = argv[1];
        int threads = atoi(argv[2]);
        seconds = atof(argv[3]);
        body = argv[4];
        if (threads < 1 || threads > 4096 || seconds <= 0) {
                fprintf(stderr, "sqlite_raw: bad THREADS or SECONDS\n");
                return 2;
        }
        pthread_t *tid = calloc((size_t)threads, sizeof(*tid));
        result *res = calloc((size_t)threads, sizeof(*res));
        if (!tid || !res || pthread_barrier_init(&ready, NULL, (unsigned)threads + 1) != 0)
                return 1;
        for (int i = 0; i < threads; i++)
                if (pthread_create(&tid[i], NULL, writer, &res[i]) != 0) {
                        fprintf(stderr, "sqlite_raw: cannot start thread %d\n", i);
                        return 1;
                }
        /* All connections are open; the clock starts now. */
        t_start = now_s();
        t_end = t_start + seconds;
        pthread_barrier_wait(&ready);
        long rows = 0, failed = 0;
        const char *err = NULL;
        for (int i = 0; i < threads; i++) {
                pthread_join(tid[i], NULL);
                rows += res[i].rows;
                failed += res[i].failed;
                if (!err && res[i].err[0])
                        err = res[i].err;
        }
        double elapsed = now_s() - t_start;
        printf("rows %ld seconds %.3f rows_per_s %.1f busy %ld\n", rows, elapsed, rows / elapsed, failed);
        if (err)
                printf("error %s\n", err);
        return rows > 0 ? 0 : 1;
}
