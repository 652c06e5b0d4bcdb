# plugins/users: tenants, users, API keys, bearer tokens, the authenticator.
relayplugins_LTLIBRARIES += plugins/users.la
plugins_users_la_SOURCES = plugins/users/users.c plugins/users/users.h plugins/users/migrations.c \
	plugins/users/keys.c plugins/users/tokens.c plugins/users/accounts.c plugins/users/tenants.c \
	plugins/users/authn.c
plugins_users_la_CFLAGS = $(PLUGIN_CF) $(SODIUM_CFLAGS)
plugins_users_la_LDFLAGS = $(PLUGIN_LINK)
plugins_users_la_LIBADD = $(PLUGIN_LIBS) $(SODIUM_LIBS)
BUILT_PLUGINS += users
