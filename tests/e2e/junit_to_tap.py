"""junit_to_tap.py JUNIT_XML [PYTEST_STATUS] - pytest's JUnit report as TAP on
stdout, for automake's TAP driver.  Exit status 0 when nothing failed.

  passed                    ok N - name
  failed, error             not ok N - name
  skipped                   ok N - name # SKIP reason
  xfail (expected failure)  not ok N - name # TODO reason

An expected failure is written "not ok ... # TODO": automake's driver counts
that as XFAIL, while "ok ... # TODO" would be an XPASS, which fails the
suite.  A strict xfail that passed is reported by pytest as a failure and
comes out as "not ok".
"""
import sys
import xml.etree.ElementTree as ET


def clean(text):
    """One line, without '#' (a TAP directive marker)."""
    text = " ".join((text or "").split())
    return text.replace("#", "No.")


def test_name(case):
    cls = case.get("classname") or ""
    name = case.get("name") or "?"
    module = cls.rsplit(".", 1)[-1] if cls else ""
    return clean("%s::%s" % (module, name) if module else name)


def main(argv):
    if len(argv) < 2:
        sys.stderr.write("usage: junit_to_tap.py JUNIT_XML [PYTEST_STATUS]\n")
        return 2
    path = argv[1]
    status = int(argv[2]) if len(argv) > 2 and argv[2].lstrip("-").isdigit() else 0
    lines = []
    failed = 0
    try:
        cases = list(ET.parse(path).getroot().iter("testcase"))
    except (OSError, ET.ParseError) as e:
        cases = []
        lines.append("not ok 1 - pytest wrote no readable report (%s)" % clean(str(e)))
        failed += 1
    for case in cases:
        n = len(lines) + 1
        name = test_name(case)
        bad = case.find("failure")
        if bad is None:
            bad = case.find("error")
        skipped = case.find("skipped")
        if bad is not None:
            lines.append("not ok %d - %s" % (n, name))
            failed += 1
        elif skipped is not None:
            reason = clean(skipped.get("message") or skipped.text or "")
            if skipped.get("type") == "pytest.xfail":
                lines.append("not ok %d - %s # TODO %s" % (n, name, reason))
            else:
                lines.append("ok %d - %s # SKIP %s" % (n, name, reason))
        else:
            lines.append("ok %d - %s" % (n, name))
    # pytest itself failing (usage error, internal error, nothing collected)
    if status not in (0, 1) and not failed:
        lines.append("not ok %d - pytest exited with status %d" % (len(lines) + 1, status))
        failed += 1
    if not lines:
        lines.append("not ok 1 - no tests were run")
        failed += 1
    for line in lines:
        print(line)
    print("1..%d" % len(lines))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
