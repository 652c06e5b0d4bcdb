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
