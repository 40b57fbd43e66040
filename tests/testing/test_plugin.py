"""The plugin as users meet it: found through the entry point, run by pytester."""

from __future__ import annotations

import subprocess
import sys

import pytest

HANDLER = """
import attrs
from exthandler_sdk import Context, Handler, HandlerError


@attrs.frozen
class Settings:
    name: str


@attrs.frozen
class Secrets:
    password: str


class Hello(Handler[Settings, Secrets]):
    name = "Contoso.Samples.Hello"
    version = "1.0.0"

    async def enable(self, ctx: Context[Settings, Secrets]) -> None:
        if ctx.protected.password != "pw":
            raise HandlerError(53, "wrong password")
        await ctx.status.success(f"hello {ctx.settings.name}")
"""

TESTS = """
import pytest
from exthandler.testing import Fault, check_lifecycle
from hello_handler import Hello


S = {"name": "x"}
OK = {"password": "pw"}
NO = {"password": "no"}


def test_passes(exthandler_harness):
    result = exthandler_harness.run(Hello, settings=S, protected_settings=OK)
    result.assert_success("hello x")


def test_wrong_password_is_an_error(exthandler_harness):
    result = exthandler_harness.run(Hello, settings=S, protected_settings=NO)
    result.assert_error(53, "wrong password")


def test_fails_usefully(exthandler_harness):
    result = exthandler_harness.run(Hello, settings=S, protected_settings=NO)
    result.assert_success()


def test_agent(exthandler_agent):
    exthandler_agent.add_handler(Hello, fault=Fault.exit("enable", 4))
    exthandler_agent.apply({"extensions": [{"name": "h", "publisher": "Contoso.Samples",
        "type": "Hello", "typeHandlerVersion": "1.0", "settings": {"name": "x"},
        "protectedSettings": {"password": "pw"}}]})
    status = exthandler_agent.status("h")
    assert status.code == "ProvisioningState/failed/4", status


def test_lifecycle(exthandler_agent):
    check_lifecycle(exthandler_agent, Hello, settings=S, protected_settings=OK)


@pytest.mark.anyio
async def test_async(exthandler_harness):
    result = await exthandler_harness.arun(Hello, settings=S, protected_settings=OK)
    result.assert_success()


@pytest.mark.anyio
async def test_sync_call_in_async_test(exthandler_harness):
    exthandler_harness.run(Hello)
"""

CONFTEST = """
import pytest

@pytest.fixture
def anyio_backend():
    return "asyncio"
"""


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makepyfile(hello_handler=HANDLER, test_hello=TESTS, conftest=CONFTEST)
    pytester.makeini("[pytest]\nfilterwarnings = error\n")
    pytester.syspathinsert()
    return pytester


def test_fixtures_are_found_through_the_entry_point(project: pytest.Pytester) -> None:
    result = project.runpytest("-p", "no:cacheprovider", "--fixtures")
    result.stdout.fnmatch_lines(["*exthandler_harness*", "*exthandler_agent*"])


def test_pass_and_fail_cases_report_the_problem(project: pytest.Pytester) -> None:
    result = project.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=5, failed=2)
    result.stdout.fnmatch_lines(
        [
            "*test_fails_usefully*",
            "*expected success, got exit code 53 and status 'error' code 53: wrong password*",
        ]
    )
    result.stdout.fnmatch_lines(["*use `await exthandler_harness.arun(...)` instead*"])


def test_no_leaked_processes_or_files(project: pytest.Pytester) -> None:
    project.makepyfile(
        test_kill="""
from exthandler.testing import Fault

def test_hang(exthandler_agent):
    exthandler_agent.add_built_package(__import__("hello_handler").Hello, "hello_handler:Hello",
                                       fault=Fault.hang("enable"))
    exthandler_agent.apply({"extensions": [{"name": "h", "publisher": "Contoso.Samples",
        "type": "Hello", "typeHandlerVersion": "1.0", "settings": {"name": "x"},
        "protectedSettings": {"password": "pw"}}]})
    assert exthandler_agent.status("h").code == "ProvisioningState/failed/1011"
"""
    )
    before = set(project.path.iterdir())
    result = project.runpytest_subprocess(
        "-p", "no:cacheprovider", "test_kill.py", "--basetemp", str(project.path / "tmp")
    )
    result.assert_outcomes(passed=1)
    # everything the fixtures wrote is under the run's basetemp (pytester keeps its own
    # stdout/stderr and temp dirs next to it)
    leftovers = {p.name for p in set(project.path.iterdir()) - before}
    leftovers -= {"stdout", "stderr", "__pycache__"}
    assert {name for name in leftovers if not name.startswith("runpytest")} == {"tmp"}
    # nothing the test started is still running
    listing = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True)
    assert str(project.path) not in listing.stdout


def test_importing_the_plugin_is_light() -> None:
    # The kit (and what only it needs) is imported when a fixture is first used.
    code = (
        "import sys, exthandler.pytest_plugin as p\n"
        "kit = ('exthandler.testing', 'exthandler._testing._agent')\n"
        "print([m for m in kit if m in sys.modules])\n"
        "print(p.__all__)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.splitlines() == [
        "[]",
        "['exthandler_agent', 'exthandler_certificate_dir', 'exthandler_harness',"
        " 'exthandler_signing_ca']",
    ]


def test_the_kit_needs_no_pytest() -> None:
    code = (
        "import sys\n"
        "sys.modules['pytest'] = None  # any import of pytest now fails\n"
        "import exthandler.testing as t\n"
        "print(t.Agent.__name__, t.Harness.__name__)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout == "Agent Harness\n"
