# contrib/: systemd unit (installed), packaging, benchmarks.
systemdunitdir = $(SYSTEMD_UNIT_DIR)
systemdunit_DATA = contrib/systemd/relay-server.service
CLEANFILES += contrib/systemd/relay-server.service

contrib/systemd/relay-server.service: $(top_srcdir)/contrib/systemd/relay-server.service.in Makefile
	$(AM_V_GEN)$(MKDIR_P) contrib/systemd && sed \
		-e 's|@sbindir[@]|$(sbindir)|g' \
		-e 's|@sysconfdir[@]|$(sysconfdir)|g' \
		-e 's|@localstatedir[@]|$(localstatedir)|g' \
		$(top_srcdir)/contrib/systemd/relay-server.service.in > $@

EXTRA_DIST += contrib/systemd/relay-server.service.in contrib/install-deps contrib/logrotate \
	contrib/nginx contrib/debian contrib/bench

# contrib/bench/storebench: the plugin contrib/bench/storage-bench loads;
# contrib/bench/authbench: the one contrib/bench/auth-bench loads (with users).
# Never installed nor built by default: `make bench-plugins`.  (contrib/bench
# is in EXTRA_DIST above, so their sources are distributed.)
EXTRA_LTLIBRARIES = contrib/bench/storebench.la contrib/bench/authbench.la
contrib_bench_storebench_la_SOURCES = contrib/bench/storebench.c
contrib_bench_storebench_la_CFLAGS = $(AM_CFLAGS) -fvisibility=hidden $(JANSSON_CFLAGS)
contrib_bench_storebench_la_LDFLAGS = -module -avoid-version -shared -no-undefined -rpath /nowhere
contrib_bench_storebench_la_LIBADD = core/librelay.la $(JANSSON_LIBS)
contrib_bench_authbench_la_SOURCES = contrib/bench/authbench.c
contrib_bench_authbench_la_CFLAGS = $(AM_CFLAGS) -fvisibility=hidden $(JANSSON_CFLAGS)
contrib_bench_authbench_la_LDFLAGS = -module -avoid-version -shared -no-undefined -rpath /nowhere
contrib_bench_authbench_la_LIBADD = core/librelay.la $(JANSSON_LIBS)
CLEANFILES += contrib/bench/storebench.la contrib/bench/authbench.la

bench-plugins: contrib/bench/storebench.la contrib/bench/authbench.la
.PHONY: bench-plugins

# contrib/bench is distributed as a whole folder: leave out what building
# the bench plugin in it (or running its scripts) leaves there.
dist-hook: dist-bench-clean
dist-bench-clean:
	cd $(distdir)/contrib/bench && rm -rf .deps .libs .dirstamp __pycache__ *.lo *.o *.la
.PHONY: dist-bench-clean
