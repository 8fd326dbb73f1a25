"""Reads the JUnit reports `nekton test --junit` wrote with junitparser (a JUnit parser, not just
an XML one) and checks what scripts/check-junit.sh expects of them:
  check.py PASSING.xml FAILING.xml
PASSING: examples/suite.yaml, every case passed. FAILING: a suite with one case of each kind of
result (passed, failure typed by its verdict, skipped)."""
import sys

from junitparser import Failure, JUnitXml, Skipped


def cases(path):
    xml = JUnitXml.fromfile(path)
    suites = list(xml)
    assert len(suites) == 1, f"{path}: one testsuite expected, got {len(suites)}"
    suite = suites[0]
    return suite, {c.name: c for c in suite}


suite, by_name = cases(sys.argv[1])
assert suite.name == "suite", suite.name
assert (suite.tests, suite.failures, suite.errors, suite.skipped) == (3, 0, 0, 0), suite
assert sorted(by_name) == ["float", "hello", "tokens"], sorted(by_name)
assert all(c.is_passed for c in by_name.values())

suite, by_name = cases(sys.argv[2])
assert (suite.tests, suite.failures, suite.errors, suite.skipped) == (3, 1, 0, 1), (
    suite.tests, suite.failures, suite.errors, suite.skipped)
assert by_name["right"].is_passed
(wrong,) = by_name["wrong"].result
assert isinstance(wrong, Failure) and wrong.type == "wrong_answer", wrong
assert 'expected "bye", got "hi"' in wrong.message, wrong.message
(skip,) = by_name["after"].result
assert isinstance(skip, Skipped), skip
print("check-junit: both reports read by junitparser as expected")
