# plugins/: one folder per product plugin, each a libtool module installed
# in $(relaypluginsdir).  Each folder's module.mk adds itself here.
relayplugins_LTLIBRARIES =
PLUGIN_LINK = -module -avoid-version -shared -no-undefined
PLUGIN_LIBS = core/librelay.la $(JANSSON_LIBS)
PLUGIN_CF = $(AM_CFLAGS) -fvisibility=hidden $(JANSSON_CFLAGS)
# Names of the plugins built, for the installed relay.conf's load list.
BUILT_PLUGINS =

include plugins/users/module.mk
include plugins/records/module.mk
include plugins/policies/module.mk
include plugins/sync/module.mk
include plugins/audit/module.mk
include plugins/webhooks/module.mk

install-data-hook: install-plugin-dir
install-plugin-dir:
	$(MKDIR_P) $(DESTDIR)$(relaypluginsdir)
.PHONY: install-plugin-dir
