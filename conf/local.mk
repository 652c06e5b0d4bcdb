# conf/: the installed relay.conf (paths and the list of built plugins
# filled in at build time), its drop-in folder, and per-product examples.
relayconf_DATA = conf/relay.conf
CLEANFILES += conf/relay.conf
EXTRA_DIST += conf/relay.conf.in conf/dev.conf conf/bench.conf conf/examples

conf/relay.conf: $(top_srcdir)/conf/relay.conf.in Makefile
	$(AM_V_GEN)$(MKDIR_P) conf && sed \
		-e 's|@relaypluginsdir[@]|$(relaypluginsdir)|g' \
		-e 's|@localstatedir[@]|$(localstatedir)|g' \
		-e 's|@docdir[@]|$(docdir)|g' \
		-e 's|@builtplugins[@]|$(BUILT_PLUGINS)|g' \
		$(top_srcdir)/conf/relay.conf.in > $@

examplesdir = $(docdir)/examples
examples_DATA = $(wildcard $(top_srcdir)/conf/examples/*.conf)

install-data-hook: install-conf-d
install-conf-d:
	$(MKDIR_P) $(DESTDIR)$(relayconfdir)/conf.d
.PHONY: install-conf-d
