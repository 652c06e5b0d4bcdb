# tests/: C unit tests (TAP) and the end-to-end suite (pytest: a real HTTP
# client against the real daemon), both run by `make check`.

# ---- test plugins: shared modules the e2e suite loads ----
TEST_PLUGIN_LINK = -module -avoid-version -shared -no-undefined -rpath /nowhere
TEST_PLUGIN_CF = $(AM_CFLAGS) -fvisibility=hidden $(JANSSON_CFLAGS)
TEST_PLUGIN_LIBS = core/librelay.la $(JANSSON_LIBS)

check_LTLIBRARIES += tests/plugins/echo.la tests/plugins/consumer.la tests/plugins/styles.la \
	tests/plugins/dup_route.la tests/plugins/fail_init.la tests/plugins/needs_missing.la \
	tests/plugins/abi_future.la tests/plugins/abi_newer_minor.la tests/plugins/not_a_plugin.la \
	tests/plugins/storetest.la
tests_plugins_echo_la_SOURCES = tests/plugins/echo.c
tests_plugins_consumer_la_SOURCES = tests/plugins/consumer.c
tests_plugins_styles_la_SOURCES = tests/plugins/styles.c
tests_plugins_dup_route_la_SOURCES = tests/plugins/dup_route.c
tests_plugins_fail_init_la_SOURCES = tests/plugins/fail_init.c
tests_plugins_needs_missing_la_SOURCES = tests/plugins/needs_missing.c
tests_plugins_abi_future_la_SOURCES = tests/plugins/abi_future.c
tests_plugins_abi_newer_minor_la_SOURCES = tests/plugins/abi_newer_minor.c
tests_plugins_not_a_plugin_la_SOURCES = tests/plugins/not_a_plugin.c
tests_plugins_storetest_la_SOURCES = tests/plugins/storetest.c
tests_plugins_storetest_la_CFLAGS = $(TEST_PLUGIN_CF)
tests_plugins_storetest_la_LDFLAGS = $(TEST_PLUGIN_LINK)
tests_plugins_storetest_la_LIBADD = $(TEST_PLUGIN_LIBS)
tests_plugins_not_a_plugin_la_LIBADD =
tests_plugins_not_a_plugin_la_LDFLAGS = $(TEST_PLUGIN_LINK)
tests_plugins_echo_la_CFLAGS = $(TEST_PLUGIN_CF)
tests_plugins_echo_la_LDFLAGS = $(TEST_PLUGIN_LINK)
tests_plugins_echo_la_LIBADD = $(TEST_PLUGIN_LIBS)
tests_plugins_consumer_la_CFLAGS = $(TEST_PLUGIN_CF)
tests_plugins_consumer_la_LDFLAGS = $(TEST_PLUGIN_LINK)
tests_plugins_consumer_la_LIBADD = $(TEST_PLUGIN_LIBS)
tests_plugins_styles_la_CFLAGS = $(TEST_PLUGIN_CF)
tests_plugins_styles_la_LDFLAGS = $(TEST_PLUGIN_LINK)
tests_plugins_styles_la_LIBADD = $(TEST_PLUGIN_LIBS)
tests_plugins_dup_route_la_CFLAGS = $(TEST_PLUGIN_CF)
tests_plugins_dup_route_la_LDFLAGS = $(TEST_PLUGIN_LINK)
tests_plugins_dup_route_la_LIBADD = $(TEST_PLUGIN_LIBS)
tests_plugins_fail_init_la_CFLAGS = $(TEST_PLUGIN_CF)
tests_plugins_fail_init_la_LDFLAGS = $(TEST_PLUGIN_LINK)
tests_plugins_fail_init_la_LIBADD = $(TEST_PLUGIN_LIBS)
tests_plugins_needs_missing_la_CFLAGS = $(TEST_PLUGIN_CF)
tests_plugins_needs_missing_la_LDFLAGS = $(TEST_PLUGIN_LINK)
tests_plugins_needs_missing_la_LIBADD = $(TEST_PLUGIN_LIBS)
tests_plugins_abi_future_la_CFLAGS = $(TEST_PLUGIN_CF)
tests_plugins_abi_future_la_LDFLAGS = $(TEST_PLUGIN_LINK)
tests_plugins_abi_future_la_LIBADD = $(TEST_PLUGIN_LIBS)
tests_plugins_abi_newer_minor_la_CFLAGS = $(TEST_PLUGIN_CF)
tests_plugins_abi_newer_minor_la_LDFLAGS = $(TEST_PLUGIN_LINK)
tests_plugins_abi_newer_minor_la_LIBADD = $(TEST_PLUGIN_LIBS)

# ---- unit tests ----
UNIT_CF = $(AM_CFLAGS) $(LIBUV_CFLAGS) $(JANSSON_CFLAGS) $(LLHTTP_CFLAGS) $(LTDLINCL)
UNIT_LIBS = core/libcore.la
check_PROGRAMS += tests/unit/test_config tests/unit/test_router tests/unit/test_util tests/unit/test_json_write \
	tests/unit/test_row_json
tests_unit_test_config_SOURCES = tests/unit/test_config.c tests/unit/tap.h
tests_unit_test_config_CFLAGS = $(UNIT_CF)
tests_unit_test_config_LDADD = $(UNIT_LIBS)
tests_unit_test_router_SOURCES = tests/unit/test_router.c tests/unit/tap.h
tests_unit_test_router_CFLAGS = $(UNIT_CF)
tests_unit_test_router_LDADD = $(UNIT_LIBS)
tests_unit_test_util_SOURCES = tests/unit/test_util.c tests/unit/tap.h
tests_unit_test_util_CFLAGS = $(UNIT_CF)
tests_unit_test_util_LDADD = $(UNIT_LIBS)
tests_unit_test_json_write_SOURCES = tests/unit/test_json_write.c tests/unit/tap.h
tests_unit_test_json_write_CFLAGS = $(UNIT_CF)
tests_unit_test_json_write_LDADD = $(UNIT_LIBS)
tests_unit_test_row_json_SOURCES = tests/unit/test_row_json.c tests/unit/tap.h
tests_unit_test_row_json_CFLAGS = $(UNIT_CF)
tests_unit_test_row_json_LDADD = $(UNIT_LIBS)

# the policy language is plain C over jansson: test it without the daemon
check_PROGRAMS += tests/unit/test_policy_expr
tests_unit_test_policy_expr_SOURCES = tests/unit/test_policy_expr.c tests/unit/tap.h plugins/policies/expr.c
tests_unit_test_policy_expr_CFLAGS = $(AM_CFLAGS) $(JANSSON_CFLAGS) -I$(srcdir)/plugins/policies
tests_unit_test_policy_expr_LDADD = $(JANSSON_LIBS)

TESTS += tests/unit/test_config tests/unit/test_router tests/unit/test_util tests/unit/test_json_write tests/unit/test_row_json \
	tests/unit/test_policy_expr \
	tests/e2e/run-e2e

TEST_EXTENSIONS = .py
LOG_DRIVER = env AM_TAP_AWK='$(AWK)' $(SHELL) $(top_srcdir)/build-aux/tap-driver.sh
AM_TESTS_ENVIRONMENT = \
	top_builddir='$(abs_top_builddir)'; export top_builddir; \
	top_srcdir='$(abs_top_srcdir)'; export top_srcdir; \
	PYTHON='$(PYTHON)'; export PYTHON; \
	MAKE='$(MAKE)'; export MAKE;

EXTRA_DIST += tests/e2e tests/unit/tap.h tests/summary
CLEANFILES += tests/e2e/junit.xml
