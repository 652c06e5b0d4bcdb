# conf/: the installed relay.conf (paths and the list of built plugins
# filled in at build time) and its drop-in folder.
# One complete configuration per product sits next to it.
relayconf_DATA = conf/relay.conf conf/relaysync.conf
CLEANFILES += conf/relay.conf
EXTRA_DIST += conf/relay.conf.in conf/relaysync.conf conf/dev.conf conf/bench.conf

conf_subst = sed \
	-e 's|@relaypluginsdir[@]|$(relaypluginsdir)|g' \
	-e 's|@localstatedir[@]|$(localstatedir)|g' \
	-e 's|@builtplugins[@]|$(BUILT_PLUGINS)|g'

conf/relay.conf: $(top_srcdir)/conf/relay.conf.in Makefile
	$(AM_V_GEN)$(MKDIR_P) conf && $(conf_subst) $(top_srcdir)/conf/relay.conf.in > $@


install-data-hook: install-conf-d
install-conf-d:
	$(MKDIR_P) $(DESTDIR)$(relayconfdir)/conf.d
.PHONY: install-conf-d
