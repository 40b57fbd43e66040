"""The process executor: real scripts in `tmp_path`, real process groups, real signals."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import anyio
import pytest
from exthandler_sdk import Operation
from exthandler_sdk.procs import BOOT_ID_PATH
from exthandler_sdk.protocol import EXCERPT_LIMIT, format_excerpt

from exthandler._errors import StateDirError
from exthandler._executors import process as process_module
from exthandler._executors._hints import exec_hint
from exthandler._executors.process import (
    CommandResult,
    end_orphans,
    is_protocol_variable,
    run_command,
)

PROTOCOL_ENV = {
    "ConfigSequenceNumber": "3",
    "AZURE_GUEST_AGENT_EXTENSION_PATH": "/var/lib/waagent/P.T-1.0",
    "AZURE_GUEST_AGENT_EXTENSION_VERSION": "1.0",
    "AZURE_GUEST_AGENT_UNINSTALL_CMD_EXIT_CODE": "NOT_RUN",
}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def handler_dir(tmp_path: Path) -> Path:
    path = tmp_path / "P.T-1.0"
    (path / "bin").mkdir(parents=True)
    return path


def script(handler_dir: Path, name: str, body: str, *, mode: int = 0o755) -> Path:
    """Write `bin/<name>` as a /bin/sh script."""
    path = handler_dir / "bin" / name
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(mode)
    return path


def gone(pid: int) -> bool:
    """Whether `pid` no longer runs (a zombie nobody has reaped yet counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat.rpartition(")")[2].split()[0] == "Z"


def all_gone(pids: list[int], within: float = 60.0) -> bool:
    """Whether every pid is gone (a command's run returns once its group is; `within` is
    only a safety net)."""
    deadline = time.monotonic() + within
    while not all(gone(pid) for pid in pids):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def read_pids(path: Path) -> list[int]:
    return [int(word) for word in path.read_text().split()]


@pytest.fixture
def reaper() -> Iterator[list[int]]:
    """Pids a test started and that must not outlive it."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


async def run(
    handler_dir: Path,
    command: str,
    *,
    env: Mapping[str, str] = PROTOCOL_ENV,
    limit: float = 10.0,
    grace: float = 5.0,
    log_file: Path | None = None,
    log_limit: int = 10 * 1024 * 1024,
    marker: Path | None = None,
    boot_id_path: Path = BOOT_ID_PATH,
) -> CommandResult:
    """Run `command` as an enable, with the test defaults."""
    return await run_command(
        handler_dir=handler_dir,
        command=command,
        operation=Operation.ENABLE,
        env=env,
        timeout=limit,
        grace=grace,
        log_file=log_file,
        log_limit=log_limit,
        marker=marker,
        boot_id_path=boot_id_path,
    )


# --- how the command runs ---------------------------------------------------------------


@pytest.mark.anyio
async def test_runs_via_sh_in_handler_dir_with_arguments_and_exact_env(
    handler_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VERSION", "9.9")
    monkeypatch.setenv("AZURE_GUEST_AGENT_UPDATING_FROM_VERSION", "0.9")
    monkeypatch.setenv("ConfigExtensionName", "leaked")
    monkeypatch.setenv("KEEP_ME", "kept")
    script(
        handler_dir,
        "handler.sh",
        'pwd > cwd.txt\necho "$@" > args.txt\nenv > env.txt\n'
        "cat /proc/$$/stat > stat.txt\nreadlink /proc/self/fd/0 > stdin.txt\n"
        "echo hello\necho oops >&2",
    )

    result = await run(handler_dir, "/bin/handler.sh enable  --fast")

    assert result.ok
    assert result.exit_code == 0
    assert result.command == "/bin/handler.sh enable  --fast"
    assert result.describe() == "Enable succeeded"
    assert result.excerpt == "[stdout]\nhello\n\n\n[stderr]\noops\n"
    assert (handler_dir / "cwd.txt").read_text().strip() == str(handler_dir)
    assert (handler_dir / "args.txt").read_text() == "enable --fast\n"
    assert (handler_dir / "stdin.txt").read_text().strip() == "/dev/null"
    env = dict(
        line.split("=", 1)
        for line in (handler_dir / "env.txt").read_text().splitlines()
        if "=" in line
    )
    for name, value in PROTOCOL_ENV.items():
        assert env[name] == value
    assert env["KEEP_ME"] == "kept"
    assert "VERSION" not in env
    assert "AZURE_GUEST_AGENT_UPDATING_FROM_VERSION" not in env
    assert "ConfigExtensionName" not in env
    # The script leads a session and a process group of its own.
    fields = (handler_dir / "stat.txt").read_text().rpartition(")")[2].split()
    group, session = int(fields[2]), int(fields[3])
    assert group == session != os.getsid(0)


@pytest.mark.anyio
async def test_empty_command_runs_nothing(handler_dir: Path) -> None:
    result = await run(handler_dir, "  ")
    assert result.exit_code is None
    assert not result.ok
    assert result.describe() == "Enable has no command (enableCommand); nothing was run"


@pytest.mark.anyio
async def test_missing_handler_dir_is_a_result_not_an_exception(tmp_path: Path) -> None:
    log = tmp_path / "log" / "CommandExecution.log"
    result = await run(tmp_path / "absent", "bin/enable.sh", log_file=log)
    assert result.exit_code is None
    assert not result.timed_out
    assert result.describe().startswith("Enable could not be started (could not start /bin/sh")
    assert "result: not started" in log.read_text()


def test_protocol_variables() -> None:
    assert is_protocol_variable("ConfigSequenceNumber")
    assert is_protocol_variable("VERSION")
    assert is_protocol_variable("AZURE_GUEST_AGENT_SOMETHING_NEW")
    assert not is_protocol_variable("PATH")
    assert not is_protocol_variable("version")


# --- output -----------------------------------------------------------------------------


@pytest.mark.anyio
async def test_excerpt_keeps_the_tails_of_huge_output(handler_dir: Path, tmp_path: Path) -> None:
    script(
        handler_dir,
        "noisy.sh",
        "head -c 1000000 /dev/zero | tr '\\0' o; echo END-OUT\n"
        "head -c 1000000 /dev/zero | tr '\\0' e >&2; echo END-ERR >&2",
    )
    log = tmp_path / "CommandExecution.log"

    result = await run(handler_dir, "bin/noisy.sh", log_file=log)

    assert len(result.excerpt) == EXCERPT_LIMIT
    head, _, stderr = result.excerpt.partition("\n\n[stderr]\n")
    assert head.startswith("[stdout]\n")
    stdout = head.removeprefix("[stdout]\n")
    assert stdout.endswith("ooooEND-OUT\n")
    assert stderr.endswith("eeeeEND-ERR\n")
    assert abs(len(stdout) - len(stderr)) <= 1
    text = log.read_text()
    assert text.count("(last 262144 of 1000008 bytes)") == 2
    assert len(text) < 600 * 1024


def test_excerpt_gives_unused_budget_to_the_other_stream() -> None:
    assert format_excerpt("a\n", "b\n") == "[stdout]\na\n\n\n[stderr]\nb\n"
    long = "x" * 10_000 + "END"
    short_out = format_excerpt("tiny", long)
    assert len(short_out) == EXCERPT_LIMIT
    assert short_out.startswith("[stdout]\ntiny\n\n[stderr]\nxxx")
    assert short_out.endswith("END")
    short_err = format_excerpt(long, "tiny")
    assert len(short_err) == EXCERPT_LIMIT
    assert short_err.endswith("END\n\n[stderr]\ntiny")
    assert format_excerpt("abc", "def", limit=22) == "[stdout]\nc\n\n[stderr]\nf"
    assert format_excerpt("abc", "", limit=22) == "[stdout]\nbc\n\n[stderr]\n"


@pytest.mark.anyio
async def test_output_is_decoded_leniently(handler_dir: Path) -> None:
    script(handler_dir, "bytes.sh", "printf 'caf\\303\\251 \\377\\n'")
    result = await run(handler_dir, "bin/bytes.sh")
    assert result.excerpt.startswith("[stdout]\ncafé \ufffd\n")


@pytest.mark.anyio
async def test_output_is_captured_in_the_handler_dir_not_the_temp_dir(
    handler_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As the reference agent does: a missing or full temporary directory does not matter."""
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "no-such-dir"))
    script(handler_dir, "talk.sh", "echo out; echo err >&2")
    result = await run(handler_dir, "bin/talk.sh")
    assert result.ok
    assert result.excerpt.startswith("[stdout]\nout\n")
    assert result.excerpt.endswith("[stderr]\nerr\n")


@pytest.mark.anyio
@pytest.mark.parametrize("anonymous", [True, False], ids=["O_TMPFILE", "named-then-unlinked"])
async def test_output_capture_leaves_no_file_behind(
    handler_dir: Path, monkeypatch: pytest.MonkeyPatch, anonymous: bool
) -> None:
    """Where the kernel has no O_TMPFILE, output is captured in a file unlinked at once:
    either way nothing is left in the handler dir, and the output is read back."""
    import tempfile

    from exthandler._executors import _spawn

    if anonymous:

        def no_fallback(*args: object, **kwargs: object) -> None:
            raise AssertionError("the O_TMPFILE open fell back to tempfile")

        monkeypatch.setattr(tempfile, "TemporaryFile", no_fallback)
    else:
        monkeypatch.setattr(_spawn, "_TMPFILE", None)
        monkeypatch.setattr(tempfile, "_O_TMPFILE_WORKS", False)  # its own first try
    script(handler_dir, "talk.sh", 'echo out; echo err >&2; ls -a "$PWD" > listing')
    before = sorted(os.listdir(handler_dir))
    result = await run(handler_dir, "bin/talk.sh")
    assert result.ok
    assert result.excerpt.startswith("[stdout]\nout\n")
    assert result.excerpt.endswith("[stderr]\nerr\n")
    listed = (handler_dir / "listing").read_text().split()
    # While the command ran, the dir held only what it had and the listing being written.
    assert sorted(set(listed) - {".", ".."}) == sorted([*before, "listing"])
    assert sorted(os.listdir(handler_dir)) == sorted([*before, "listing"])


# --- failures and their hints -----------------------------------------------------------


@pytest.mark.anyio
async def test_non_zero_exit(handler_dir: Path) -> None:
    script(handler_dir, "fail.sh", "echo 'bad config' >&2\nexit 3")
    result = await run(handler_dir, "bin/fail.sh")
    assert result.exit_code == 3
    assert not result.ok
    assert result.hint is None
    assert result.describe() == "Enable failed: exit code 3"
    assert result.excerpt.endswith("[stderr]\nbad config\n")


@pytest.mark.anyio
async def test_non_executable_script_gets_a_hint(handler_dir: Path) -> None:
    path = script(handler_dir, "enable.sh", "exit 0", mode=0o644)
    result = await run(handler_dir, "bin/enable.sh")
    assert result.exit_code == 126
    assert result.hint == f"{path} is not executable (it lacks the exec permission bit)"
    assert result.describe() == f"Enable failed: exit code 126 ({result.hint})"


@pytest.mark.anyio
async def test_missing_script_gets_a_hint(handler_dir: Path) -> None:
    result = await run(handler_dir, "bin/missing.sh enable")
    assert result.exit_code == 127
    assert result.hint == f"command not found in the package: {handler_dir / 'bin/missing.sh'}"


@pytest.mark.anyio
async def test_directory_and_missing_interpreter_get_hints(handler_dir: Path) -> None:
    result = await run(handler_dir, "bin")
    assert result.exit_code == 126
    assert result.hint == f"{handler_dir / 'bin'} is a directory, not a program"

    path = handler_dir / "bin" / "py.sh"
    path.write_text("#!/nonexistent/python3 -u\nprint('hi')\n")
    path.chmod(0o755)
    result = await run(handler_dir, "bin/py.sh")
    assert result.exit_code == 127
    assert result.hint == f"the interpreter of {path} is missing: /nonexistent/python3"


@pytest.mark.anyio
async def test_codes_126_and_127_chosen_by_the_program_get_no_hint(handler_dir: Path) -> None:
    script(handler_dir, "own.sh", 'exit "$1"')
    for code in (126, 127):
        result = await run(handler_dir, f"bin/own.sh {code}")
        assert result.exit_code == code
        assert result.hint is None
    (handler_dir / "bin" / "plain").write_text("exit 127\n")
    (handler_dir / "bin" / "plain").chmod(0o755)
    result = await run(handler_dir, "bin/plain")
    assert result.exit_code == 127
    assert result.hint is None


@pytest.mark.anyio
async def test_hint_survives_a_command_that_removed_its_own_directory(handler_dir: Path) -> None:
    script(handler_dir, "uninstall.sh", 'rm -rf "$PWD"\nexit 126')
    result = await run(handler_dir, "bin/uninstall.sh")
    assert result.exit_code == 126
    assert result.hint == f"command not found in the package: {handler_dir / 'bin/uninstall.sh'}"


def test_noexec_hint(tmp_path: Path) -> None:
    path = tmp_path / "enable.sh"
    path.write_text("#!/bin/sh\n")
    path.chmod(0o755)
    assert exec_hint(126, path, handler_dir=tmp_path, noexec=True) == (
        f"the handler directory {tmp_path} is on a filesystem mounted noexec"
    )
    assert exec_hint(126, path, handler_dir=tmp_path, noexec=False) is None


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("signum", "name"),
    [(signal.SIGUSR1, "SIGUSR1"), (signal.SIGRTMIN + 3, str(signal.SIGRTMIN + 3))],
)
async def test_death_by_signal(handler_dir: Path, signum: int, name: str) -> None:
    # `kill 0` signals the whole group, /bin/sh included: a real death by signal.
    script(handler_dir, "crash.sh", f"kill -{int(signum)} 0")
    result = await run(handler_dir, "bin/crash.sh")
    assert result.exit_code == 128 + signum
    assert result.hint == f"killed by signal {name}"
    assert result.describe() == f"Enable failed: exit code {128 + signum} (killed by signal {name})"


@pytest.mark.anyio
async def test_shell_reported_signal_death(handler_dir: Path) -> None:
    script(handler_dir, "crash.sh", 'kill -USR1 $$\nexit "$1"')
    result = await run(handler_dir, "bin/crash.sh 0")
    assert result.exit_code == 128 + signal.SIGUSR1
    assert result.hint is not None
    assert result.hint.endswith("killed by signal SIGUSR1")
    for code, hint in ((130, "probably killed by signal SIGINT"), (200, None), (255, None)):
        (handler_dir / "bin" / "crash.sh").write_text(f"#!/bin/sh\nexit {code}\n")
        result = await run(handler_dir, "bin/crash.sh")
        assert (result.exit_code, result.hint) == (code, hint)


# --- timeouts, daemons, cancellation ----------------------------------------------------

# Each script below starts the processes the test watches, writes their pids, then says
# `ready`: a limit (or a cancellation) only proves something once it lands after that.
SET_UP = "echo $! > pids\necho $$ >> pids\n"
READY = "echo ready > ready\n"


async def run_past_set_up(
    handler_dir: Path,
    command: str,
    reaper: list[int],
    *,
    grace: float,
    settled: Callable[[], bool] | None = None,
) -> tuple[CommandResult, list[int]]:
    """Run `command` until its limit ends it, the limit landing after the script's set-up.

    A run counts once the script said `ready` (and `settled()` holds, when given: the
    script got as far as the test needs before the grace ran out). On a loaded machine
    the first limit may come too early; such a run proves nothing and is tried again
    with twice the limit and grace.
    """
    limit = 0.5
    for _ in range(5):
        for name in ("pids", "ready", "events"):
            (handler_dir / name).unlink(missing_ok=True)
        result = await run(handler_dir, command, limit=limit, grace=grace)
        pids = read_pids(handler_dir / "pids") if (handler_dir / "pids").exists() else []
        reaper.extend(pids)
        if (handler_dir / "ready").exists() and (settled is None or settled()):
            return result, pids
        limit, grace = limit * 2, grace * 2
    raise AssertionError(f"{command} never got past its set-up within its limit")


def events(handler_dir: Path) -> list[str]:
    """What the script wrote down (one line per event), e.g. that it received SIGTERM."""
    path = handler_dir / "events"
    return path.read_text().split() if path.exists() else []


@pytest.mark.anyio
@pytest.mark.timeout(300)  # a safety net: a wait for the grace would last an hour
async def test_timeout_kills_the_whole_group(handler_dir: Path, reaper: list[int]) -> None:
    script(
        handler_dir,
        "hang.sh",
        "sleep 1000 &\n" + SET_UP + "trap 'echo term >> events; exit 0' TERM\n" + READY + "wait",
    )

    result, pids = await run_past_set_up(handler_dir, "bin/hang.sh", reaper, grace=3600.0)

    assert result.timed_out
    assert result.exit_code is None
    assert not result.ok
    assert result.describe() == f"Enable timed out after {result.timeout:g} s and was killed"
    # SIGTERM sufficed: the script took it and ended, its child died of it, and the run
    # returned without waiting for the hour of grace before SIGKILL.
    assert events(handler_dir) == ["term"]
    assert len(pids) == 2
    assert all_gone(pids)


@pytest.mark.anyio
@pytest.mark.timeout(300)  # a safety net: without SIGKILL the run would never end
async def test_command_ignoring_sigterm_is_killed_after_grace(
    handler_dir: Path, reaper: list[int]
) -> None:
    # The script notes SIGTERM and carries on; its child ignores SIGTERM altogether.
    script(
        handler_dir,
        "stubborn.sh",
        "(trap '' TERM; exec sleep 1000) &\n"
        + SET_UP
        + "trap 'echo term >> events' TERM\n"
        + READY
        + "while :; do wait; done",
    )

    result, pids = await run_past_set_up(
        handler_dir, "bin/stubborn.sh", reaper, grace=1.0, settled=lambda: bool(events(handler_dir))
    )

    assert result.timed_out
    # SIGTERM came first and was outlived (the script handled it); only SIGKILL, after
    # the grace, ends a process that ignores SIGTERM: all are gone.
    assert events(handler_dir) == ["term"]
    assert all_gone(pids)


@pytest.mark.anyio
@pytest.mark.timeout(300)  # a safety net: without SIGKILL the run would never end
async def test_grandchild_ignoring_sigterm_is_killed_after_grace(
    handler_dir: Path, reaper: list[int]
) -> None:
    script(
        handler_dir,
        "leaky.sh",
        "(trap '' TERM; exec sleep 1000) &\n" + SET_UP + READY + "sleep 1000",
    )
    result, pids = await run_past_set_up(handler_dir, "bin/leaky.sh", reaper, grace=0.4)
    assert result.timed_out
    assert len(pids) == 2
    assert all_gone(pids)


@pytest.mark.anyio
@pytest.mark.timeout(300)  # a safety net: a wait for the daemon would last 1000 s
async def test_daemon_left_by_enable_keeps_running(handler_dir: Path, reaper: list[int]) -> None:
    script(handler_dir, "start.sh", "sleep 1000 &\necho $! > daemon.pid\necho started")

    result = await run(handler_dir, "bin/start.sh")

    daemon = int((handler_dir / "daemon.pid").read_text())
    reaper.append(daemon)
    assert result.ok
    assert result.excerpt.startswith("[stdout]\nstarted\n")
    assert not gone(daemon)  # the run ended while its daemon still runs


@pytest.mark.anyio
async def test_cancellation_kills_the_group_and_propagates(
    handler_dir: Path, reaper: list[int]
) -> None:
    script(handler_dir, "hang.sh", "sleep 1000 &\n" + SET_UP + READY + "sleep 1000")
    reached = False

    async with anyio.create_task_group() as group:

        async def apply() -> None:
            nonlocal reached
            await run(handler_dir, "bin/hang.sh", limit=3600.0, grace=2.0)
            reached = True

        group.start_soon(apply)
        with anyio.fail_after(120):  # a safety net: the script is ready within seconds
            while not (handler_dir / "ready").exists():  # noqa: ASYNC110
                await anyio.sleep(0.01)
        group.cancel_scope.cancel()

    pids = read_pids(handler_dir / "pids")
    reaper.extend(pids)
    assert not reached
    assert len(pids) == 2
    assert all_gone(pids)


# --- CommandExecution.log ---------------------------------------------------------------


@pytest.mark.anyio
async def test_log_entry_has_protocol_env_and_output_but_no_other_env(
    handler_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MY_SECRET", "hunter2")
    script(handler_dir, "enable.sh", "echo out-text\necho err-text >&2\nexit 4")
    log = tmp_path / "log" / "P.T" / "CommandExecution.log"
    extra_env = {**PROTOCOL_ENV, "NOT_PROTOCOL": "hidden"}

    await run(handler_dir, "bin/enable.sh", log_file=log, env=extra_env)
    await run(handler_dir, "bin/enable.sh", log_file=log, env=extra_env)

    assert log.parent.stat().st_mode & 0o777 == 0o755
    text = log.read_text()
    assert text.count("===== ") == 2
    assert re.match(r"===== \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z Enable\n", text)
    assert f"command: /bin/sh -c {handler_dir}/bin/enable.sh" in text
    for name, value in PROTOCOL_ENV.items():
        assert f"env: {name}={value}\n" in text
    assert "result: exit code 4\n" in text
    assert "duration: " in text
    assert "[stdout]\nout-text\n[stderr]\nerr-text\n" in text
    assert "hunter2" not in text
    assert "MY_SECRET" not in text
    assert "hidden" not in text
    assert "\nenv: PATH=" not in text


@pytest.mark.anyio
async def test_log_records_a_timeout(handler_dir: Path, tmp_path: Path) -> None:
    script(handler_dir, "hang.sh", "exec sleep 1000")
    log = tmp_path / "CommandExecution.log"
    await run(handler_dir, "bin/hang.sh", log_file=log, limit=0.2, grace=1.0)
    assert "result: timed out after 0.2 s; process group killed\n" in log.read_text()


@pytest.mark.anyio
async def test_log_rotates_at_its_limit(handler_dir: Path, tmp_path: Path) -> None:
    script(handler_dir, "enable.sh", "echo new-run")
    log = tmp_path / "CommandExecution.log"
    log.write_text("old-entry\n" * 190)  # 1900 bytes

    await run(handler_dir, "bin/enable.sh", log_file=log, log_limit=2000)

    rotated = tmp_path / "CommandExecution.log.1"
    assert rotated.read_text() == "old-entry\n" * 190
    assert "new-run" in log.read_text()
    assert "old-entry" not in log.read_text()

    # Appending below the limit does not rotate again.
    await run(handler_dir, "bin/enable.sh", log_file=log, log_limit=10_000)
    assert log.read_text().count("new-run") == 2
    assert rotated.read_text() == "old-entry\n" * 190


@pytest.mark.anyio
async def test_unwritable_log_does_not_fail_the_command(
    handler_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    script(handler_dir, "enable.sh", "echo fine")
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    with caplog.at_level(logging.WARNING):
        result = await run(handler_dir, "bin/enable.sh", log_file=blocker / "CommandExecution.log")
    assert result.ok
    assert "could not write" in caplog.text


# --- describe ---------------------------------------------------------------------------


def test_describe_timeout_without_a_recorded_limit() -> None:
    result = CommandResult(
        operation=Operation.INSTALL,
        command="bin/install.sh",
        exit_code=None,
        timed_out=True,
        duration=3.0,
        hint="it printed nothing",
    )
    assert result.describe() == "Install timed out after 3 s and was killed (it printed nothing)"
    assert not result.ok


@pytest.mark.anyio
@pytest.mark.timeout(300)  # a safety net: a poll that never sees the exit would hang
async def test_without_pidfd_the_wait_polls(
    handler_dir: Path, monkeypatch: pytest.MonkeyPatch, reaper: list[int]
) -> None:
    """Kernels without pidfd_open: exits, timeouts and kills still work, by polling."""
    from exthandler._executors import _spawn

    monkeypatch.setattr(_spawn, "_pidfd", lambda child: None)
    script(handler_dir, "quick", "sleep 0.05; exit 4")
    result = await run(handler_dir, "bin/quick")
    assert result.exit_code == 4
    # It ignores SIGTERM (and so does its child): only the SIGKILL after the grace ends it.
    script(handler_dir, "stuck", "trap '' TERM\nsleep 1000 &\n" + SET_UP + READY + "wait")
    result, pids = await run_past_set_up(handler_dir, "bin/stuck", reaper, grace=0.3)
    assert result.timed_out
    assert all_gone(pids)


def test_pidfd_is_used_where_the_kernel_has_it(monkeypatch: pytest.MonkeyPatch) -> None:
    import subprocess

    from exthandler._executors import _spawn

    child = subprocess.Popen(["/bin/true"])
    fd = _spawn._pidfd(child)
    if hasattr(os, "pidfd_open"):
        assert fd is not None
        os.close(fd)

    def refuse(pid: int) -> int:
        raise OSError(38, "Function not implemented")

    monkeypatch.setattr(os, "pidfd_open", refuse, raising=False)
    assert _spawn._pidfd(child) is None
    child.wait()


@pytest.mark.anyio
async def test_marker_names_the_group_only_while_the_command_runs(
    handler_dir: Path, tmp_path: Path
) -> None:
    marker = tmp_path / "running" / "p.t.json"
    boot = tmp_path / "boot_id"
    boot.write_text("boot-A\n")
    # The marker is written once the command has started: wait for it (the count of
    # tries is only a safety net), then show what it says.
    script(
        handler_dir,
        "look",
        f'i=0; while [ ! -s "{marker}" ] && [ "$i" -lt 6000 ]; do sleep 0.01; i=$((i+1)); done\n'
        f'cat "{marker}" > "{tmp_path}/seen"\ncut -d" " -f5 /proc/$$/stat > "{tmp_path}/group"',
    )
    result = await run(handler_dir, "bin/look", limit=120, marker=marker, boot_id_path=boot)
    assert result.ok
    import json

    seen = json.loads((tmp_path / "seen").read_text())
    assert set(seen) == {"pid", "start", "boot"}
    assert seen["boot"] == "boot-A"
    assert seen["pid"] == int((tmp_path / "group").read_text())  # it names the group
    assert marker.read_bytes() == b""  # names nothing now; kept for the next command
    assert end_orphans(marker.parent) == []  # an empty marker ends nothing...
    assert not marker.exists()  # ...and is removed with the others


@pytest.mark.anyio
@pytest.mark.parametrize(("after", "named"), [(0.0, 1), (3600.0, 0)])
async def test_a_command_gets_its_marker_only_once_it_has_run_a_moment(
    handler_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    after: float,
    named: int,
) -> None:
    """The marker is written `MARKER_AFTER` into the command (its start time is then
    cheap to read); a command that ends before never gets one."""
    from exthandler._executors._orphans import write_marker as real

    calls: list[int] = []

    def counted(marker: Path, pid: int, boot_id_path: Path) -> None:
        calls.append(pid)
        real(marker, pid, boot_id_path)

    monkeypatch.setattr(process_module, "write_marker", counted)
    monkeypatch.setattr(process_module, "MARKER_AFTER", after)
    marker = tmp_path / "running" / "q.json"
    script(handler_dir, "quick", "sleep 0.2; exit 0")
    result = await run(handler_dir, "bin/quick", limit=120, marker=marker)
    assert result.ok
    assert len(calls) == named
    assert not marker.exists() or marker.read_bytes() == b""  # names nothing once it ended


def test_orphans_are_told_by_the_given_boot_id(tmp_path: Path, reaper: list[int]) -> None:
    import subprocess

    from exthandler._executors._orphans import write_marker

    running = tmp_path / "running"
    boot = tmp_path / "boot_id"
    boot.write_text("boot-A\n")
    process = subprocess.Popen(["sleep", "30"], start_new_session=True)
    reaper.append(process.pid)
    write_marker(running / "before-reboot.json", process.pid, boot)
    boot.write_text("boot-B\n")  # the runtime's boot id file says: rebooted since
    assert end_orphans(running, grace=1.0, boot_id_path=boot) == []
    assert process.poll() is None  # whoever holds that pid now is left alone
    assert list(running.iterdir()) == []
    process.kill()
    process.wait()


def test_end_orphans_ends_the_recorded_group_and_nothing_else(
    tmp_path: Path, reaper: list[int]
) -> None:
    import json
    import subprocess

    from exthandler._executors._orphans import write_marker

    running = tmp_path / "running"
    orphan = subprocess.Popen(["/bin/sh", "-c", "sleep 30 & wait"], start_new_session=True)
    reaper.append(orphan.pid)
    write_marker(running / "orphan.json", orphan.pid)
    bystander = subprocess.Popen(["sleep", "30"], start_new_session=True)
    reaper.append(bystander.pid)
    # A marker whose pid now belongs to another process (reused) must not be acted on.
    (running / "stale.json").write_text(
        json.dumps({"pid": bystander.pid, "start": "1", "boot": "other"})
    )
    (running / "garbage.json").write_text("{not json")
    lines = end_orphans(running, grace=1.0)
    assert lines == [f"ended process group {orphan.pid} left running by a stopped runtime"]
    assert orphan.wait(timeout=5) != 0
    assert bystander.poll() is None  # untouched
    bystander.kill()
    bystander.wait()
    assert list(running.iterdir()) == []
    assert end_orphans(tmp_path / "nowhere") == []


@pytest.mark.anyio
async def test_a_command_that_cannot_be_named_is_ended_and_reaped(
    handler_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, reaper: list[int]
) -> None:
    # The marker naming a running command cannot be written (a full disk, say): the command
    # must not run on unnamed, where a killed runtime could never end it.
    script(handler_dir, "enable.sh", "echo $$ > pid; exec sleep 30")
    pid_file = handler_dir / "pid"

    def failing_marker(marker: Path, pid: int, boot_id_path: Path) -> None:
        while not pid_file.exists() or not pid_file.read_text().strip():
            time.sleep(0.01)  # the command runs: its marker is what fails
        reaper.append(pid)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(process_module, "write_marker", failing_marker)
    with pytest.raises(StateDirError, match="cannot name the running command"):
        await run_command(
            handler_dir=handler_dir,
            command="bin/enable.sh",
            operation=Operation.ENABLE,
            env=PROTOCOL_ENV,
            timeout=10.0,
            grace=5.0,
            marker=tmp_path / "running" / "P.T.json",
        )
    (pid,) = read_pids(pid_file)
    assert all_gone([pid], within=10.0)  # its process group was ended
