# plugins/audit: the tamper-evident audit log (RelaySync, RelayOne) and the
# offline bundle verifier installed next to the daemon.
relayplugins_LTLIBRARIES += plugins/audit.la
plugins_audit_la_SOURCES = plugins/audit/audit.c plugins/audit/audit.h plugins/audit/migrations.c \
	plugins/audit/keys.c plugins/audit/chain.c plugins/audit/capture.c plugins/audit/stream.c \
	plugins/audit/routes.c plugins/audit/bundle.c plugins/audit/bundles.c plugins/audit/verify.c \
	plugins/audit/verify.h
plugins_audit_la_CFLAGS = $(PLUGIN_CF) $(SODIUM_CFLAGS) $(LIBARCHIVE_CFLAGS)
plugins_audit_la_LDFLAGS = $(PLUGIN_LINK)
plugins_audit_la_LIBADD = $(PLUGIN_LIBS) $(SODIUM_LIBS) $(LIBARCHIVE_LIBS)
BUILT_PLUGINS += audit

bin_PROGRAMS += plugins/audit/relay-audit-verify
plugins_audit_relay_audit_verify_SOURCES = plugins/audit/relay-audit-verify.c plugins/audit/verify.c plugins/audit/verify.h
plugins_audit_relay_audit_verify_CFLAGS = $(AM_CFLAGS) $(SODIUM_CFLAGS) $(JANSSON_CFLAGS) $(LIBARCHIVE_CFLAGS)
plugins_audit_relay_audit_verify_LDADD = $(SODIUM_LIBS) $(JANSSON_LIBS) $(LIBARCHIVE_LIBS)
