# plugins/policies: sync policies and the policy engine service.
relayplugins_LTLIBRARIES += plugins/policies.la
plugins_policies_la_SOURCES = plugins/policies/policies.c plugins/policies/policies.h \
	plugins/policies/policies_api.h plugins/policies/migrations.c plugins/policies/engine.c \
	plugins/policies/routes.c plugins/policies/expr.c plugins/policies/expr.h
plugins_policies_la_CFLAGS = $(PLUGIN_CF)
plugins_policies_la_LDFLAGS = $(PLUGIN_LINK)
plugins_policies_la_LIBADD = $(PLUGIN_LIBS)
BUILT_PLUGINS += policies
