# core/: librelay (the runtime and the SDK's implementation, shared by the
# daemon and every plugin) and relay-server, a thin main() around it.

noinst_LTLIBRARIES += core/libcore.la
core_libcore_la_SOURCES = \
	core/arena.c core/arena.h \
	core/buf.c core/buf.h \
	core/config_file.c core/config_file.h \
	core/ctl_cli.c \
	core/cursor.c \
	core/conn.c core/http.h \
	core/daemon.c core/daemon.h \
	core/db_result.c core/db_result.h \
	core/events.c core/events_internal.h \
	core/hash.h \
	core/group.c \
	core/health.c \
	core/idempotency.c core/idempotency_internal.h \
	core/json_write.c core/json_write.h \
	core/row_json.c core/row_json.h \
	core/jobs.c \
	core/log.c core/log.h \
	core/metrics.c core/metrics.h \
	core/migrate.c core/migrate.h \
	core/module.c core/module.h \
	core/net_addr.c core/net_addr.h \
	core/plugin_api.c \
	core/publish.c core/publish.h \
	core/http_client.c core/http_client.h \
	core/plugin_loader.c core/plugin_loader.h \
	core/ratelimit.c core/ratelimit.h \
	core/request.c \
	core/response.c \
	core/router.c core/router.h \
	core/server.c core/server.h \
	core/server_cli.c \
	core/settings.c core/settings.h \
	core/sse.c \
	core/storage.c core/storage.h \
	core/stream.c \
	core/strmap.c \
	core/util.c \
	core/work.c \
	core/worker.c core/worker.h
core_libcore_la_CFLAGS = $(AM_CFLAGS) $(CORE_VISIBILITY) -DRELAY_STORAGE_DIR='"$(relaystoragedir)"' \
	-DRELAY_DATA_DIR='"$(localstatedir)/lib/relay"' \
	$(LIBUV_CFLAGS) $(SODIUM_CFLAGS) $(JANSSON_CFLAGS) $(LLHTTP_CFLAGS) $(LIBCURL_CFLAGS) $(LTDLINCL)
core_libcore_la_LIBADD = $(LIBUV_LIBS) $(SODIUM_LIBS) $(JANSSON_LIBS) $(LLHTTP_LIBS) $(LIBCURL_LIBS) $(LIBLTDL) \
	$(PTHREAD_LIBS)

if BUNDLE_LLHTTP
# Debian's node-llhttp ships C sources, not a library: build them in.
noinst_LTLIBRARIES += core/libllhttp.la
core_libllhttp_la_SOURCES = core/llhttp_api.c core/llhttp_http.c core/llhttp_parser.c
core_libllhttp_la_CPPFLAGS = -I$(LLHTTP_SRCDIR) $(LLHTTP_CFLAGS)
core_libllhttp_la_CFLAGS = $(AM_CFLAGS) -fvisibility=hidden -Wno-error
core_libcore_la_LIBADD += core/libllhttp.la
endif
EXTRA_DIST += core/llhttp_api.c core/llhttp_http.c core/llhttp_parser.c

lib_LTLIBRARIES += core/librelay.la
core_librelay_la_SOURCES =
core_librelay_la_LIBADD = core/libcore.la
core_librelay_la_LDFLAGS = $(AM_LDFLAGS) -version-info $(LIBRELAY_LT_VERSION) -no-undefined

sbin_PROGRAMS += core/relay-server
core_relay_server_SOURCES = core/main.c
core_relay_server_LDADD = core/librelay.la

bin_PROGRAMS += core/relayctl
core_relayctl_SOURCES = core/relayctl.c
core_relayctl_LDADD = core/librelay.la
