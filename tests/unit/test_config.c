/* test_config.c - the configuration parser, includes, overrides and schema. */
#include <stdlib.h>
#include <unistd.h>
#include <sys/stat.h>
#include "config_file.h"
#include "settings.h"
#include "tap.h"

static char dir[] = "/tmp/relay-test-config-XXXXXX";

static const char *write_file(const char *name, const char *text)
{
        static char path[512];
        snprintf(path, sizeof(path), "%s/%s", dir, name);
        FILE *f = fopen(path, "w");
        fputs(text, f);
        fclose(f);
        return path;
}

static conf *load(const char *text, char *const *ov, size_t n, char *err)
{
        const char *path = write_file("main.conf", text);
        conf *c = conf_load(path, ov, n, err, 512);
        if (c)
                settings_declare(c, "/plugins");
        return c;
}

static void test_values(void)
{
        char err[512] = "";
        conf *c = load("# comment\n[server]\nlisten = 127.0.0.1:1 [::1]:2  # inline\n"
                       "name = \"a # b\"\n[limits]\nmax_body_size = 2k\nheader_timeout = 1500ms\n",
                       NULL, 0, err);
        ok(c != NULL, "a valid file loads (%s)", err);
        ok(conf_validate(c, false, err, sizeof(err)) == 0, "and validates (%s)", err);
        is_str(conf_get(c, "server", "listen"), "127.0.0.1:1 [::1]:2", "inline comment cut");
        is_str(conf_get(c, "server", "name"), "a # b", "quoted value keeps '#'");
        ok(conf_get_size(c, "limits", "max_body_size") == 2048, "2k is 2048 bytes");
        ok(conf_get_duration_ms(c, "limits", "header_timeout") == 1500, "1500ms");
        ok(conf_get_duration_ms(c, "limits", "idle_timeout") == 60000, "defaults apply (idle_timeout 60s)");
        char word[64];
        ok(conf_list_item(conf_get(c, "server", "listen"), 1, word, sizeof(word)), "second list item exists");
        is_str(word, "[::1]:2", "second list item");
        ok(!conf_list_item(conf_get(c, "server", "listen"), 2, word, sizeof(word)), "no third item");
        conf_free(c);
}

static void test_errors(void)
{
        char err[512] = "";
        conf *c = load("[server]\nlisten = 127.0.0.1:1\nnope = 1\n", NULL, 0, err);
        ok(conf_validate(c, false, err, sizeof(err)) != 0, "unknown key refused");
        ok(strstr(err, "main.conf:3: unknown key 'nope' in [server]") != NULL, "with file:line (%s)", err);
        conf_free(c);

        c = load("[limits]\nmax_body_size = lots\n", NULL, 0, err);
        ok(conf_validate(c, false, err, sizeof(err)) != 0 && strstr(err, "main.conf:2: bad value 'lots'"),
           "bad size refused with file:line (%s)", err);
        conf_free(c);

        c = load("[mystery]\nx = 1\n", NULL, 0, err);
        ok(conf_validate(c, false, err, sizeof(err)) != 0 && strstr(err, "unknown section [mystery]"),
           "unknown section refused (%s)", err);
        ok(conf_validate(c, true, err, sizeof(err)) == 0, "but skipped while only core keys are declared");
        conf_free(c);

        c = load("[server]\nlisten = nowhere\n", NULL, 0, err);
        ok(conf_validate(c, false, err, sizeof(err)) != 0 && strstr(err, "expected HOST:PORT"), "bad listen (%s)", err);
        conf_free(c);

        ok(load("just words\n", NULL, 0, err) == NULL && strstr(err, ":1: expected 'key = value'"),
           "syntax error names the line (%s)", err);
        ok(load("x = 1\n", NULL, 0, err) == NULL && strstr(err, "outside any [section]"), "key outside a section");
        ok(load("[broken\n", NULL, 0, err) == NULL && strstr(err, "malformed section"), "malformed section header");
}

static void test_include_and_overrides(void)
{
        char err[512] = "", sub[600];
        snprintf(sub, sizeof(sub), "%s/conf.d", dir);
        mkdir(sub, 0700);
        write_file("conf.d/20-b.conf", "[plugins]\nload += b\n");
        write_file("conf.d/10-a.conf", "[plugins]\nload += a\n[server]\nname = dropin\n");
        char *ov[] = {"server.name=cli", "plugins.load+=c", "limits.max_headers=7"};
        conf *c = load("[plugins]\nload = base\ninclude conf.d/*.conf\n", ov, 3, err);
        ok(c != NULL, "includes load (%s)", err);
        is_str(conf_get(c, "plugins", "load"), "base a b c", "drop-ins append in name order, then -o");
        is_str(conf_get(c, "server", "name"), "cli", "-o wins over the drop-in");
        ok(conf_get_int(c, "limits", "max_headers") == 7, "-o sets an integer");
        conf_free(c);

        char *bad[] = {"servername"};
        ok(load("[server]\n", bad, 1, err) == NULL && strstr(err, "section.key=value"), "malformed -o refused");
        char *unknown[] = {"server.colour=red"};
        c = load("[server]\n", unknown, 1, err);
        ok(conf_validate(c, false, err, sizeof(err)) != 0 && strstr(err, "<command line>"),
           "unknown -o key names the command line (%s)", err);
        conf_free(c);
        c = load("include missing/*.conf\n", NULL, 0, err);
        ok(c != NULL, "an include matching nothing is fine (%s)", err);
        conf_free(c);
}

static void test_parsers(void)
{
        uint64_t u;
        int64_t i;
        bool b;
        ok(conf_parse_size("1m", &u) == 0 && u == 1048576, "1m");
        ok(conf_parse_size("-1", &u) != 0, "negative size refused");
        ok(conf_parse_size("99999999999999999999g", &u) != 0, "overflowing size refused");
        ok(conf_parse_duration_ms("2", &u) == 0 && u == 2000, "bare duration is seconds");
        ok(conf_parse_duration_ms("5m", &u) == 0 && u == 300000, "5m");
        ok(conf_parse_duration_ms("5 s", &u) != 0, "space inside refused");
        ok(conf_parse_int("42", &i) == 0 && i == 42, "int");
        ok(conf_parse_int("4x", &i) != 0, "trailing junk refused");
        ok(conf_parse_bool("On", &b) == 0 && b, "On");
        ok(conf_parse_bool("no", &b) == 0 && !b, "no");
        ok(conf_parse_bool("maybe", &b) != 0, "maybe refused");
}

int main(void)
{
        if (!mkdtemp(dir))
                return 99;
        test_values();
        test_errors();
        test_include_and_overrides();
        test_parsers();
        char cmd[600];
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
        if (system(cmd) != 0)
                printf("# could not remove %s\n", dir);
        return tap_done();
}
