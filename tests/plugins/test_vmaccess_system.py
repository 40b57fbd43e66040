"""VM Access run for real, with the system's own tools, in a private mount namespace.

The handler changes accounts, so these tests never let it near this machine's: each
`sandbox.run(...)` forks a child that unshares its mount namespace, bind-mounts
throwaway copies over `/etc`, `/var/mail`, `/var/log`, `/run` and `/usr/local/sbin`, and
runs the given function there (an `exthandler_agent` apply, a look at the accounts).
`useradd` makes homes under the sandbox (its `HOME` default is set in the copy of
`/etc/default/useradd`), so nothing outside the test's temp dir changes; the fixture
checks that the real account files are untouched afterwards.
"""

from __future__ import annotations

import ctypes
import datetime
import functools
import hashlib
import json
import os
import pickle
import re
import shutil
import signal
import stat
import subprocess
import sys
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import attrs
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from exthandler_plugins.vmaccess import VMAccess
from exthandler_plugins.vmaccess._sshd import DEFAULT_CONFIG
from exthandler_sdk._package import build_package

from exthandler import InstanceView
from exthandler.testing import Agent, Fault, check_lifecycle
from tests.sdk.standin_agent import StandinAgent, clean_path, read_status

T = TypeVar("T")

HANDLER = "Microsoft.OSTCExtensions.VMAccessForLinux"
PASSWORD = "Correct:Horse 7-Battery"
_CLONE_NEWNS = 0x00020000
_MS_BIND = 0x1000
_MS_REC = 0x4000
_MS_PRIVATE = 1 << 18
MOUNTS = {
    "etc": "/etc",
    "var-mail": "/var/mail",
    "var-log": "/var/log",
    "run": "/run",
    "usr-local-sbin": "/usr/local/sbin",
}
"""Sandbox dir -> the real dir it replaces inside the namespace."""
WATCHED = ("/etc/passwd", "/etc/shadow", "/etc/group", "/etc/gshadow", "/etc/sudoers.d")


def _fingerprint() -> dict[str, str]:
    """What the real machine's account files hold (a dir: its listing)."""
    found = {}
    for name in WATCHED:
        path = Path(name)
        if path.is_dir():
            found[name] = " ".join(sorted(p.name for p in path.iterdir()))
        elif path.exists():
            found[name] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def _mount(source: str, target: str, flags: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.mount(source.encode(), target.encode(), None, flags, None) != 0:
        error = ctypes.get_errno()
        raise OSError(error, os.strerror(error), target)


@attrs.define
class Sandbox:
    """A throwaway copy of the machine's account state, and a way to run code over it."""

    root: Path

    def __attrs_post_init__(self) -> None:
        self.root.mkdir(parents=True)
        shutil.copytree("/etc", self.root / "etc", symlinks=True)
        for name in MOUNTS:
            (self.root / name).mkdir(exist_ok=True)
        self.homes.mkdir()
        defaults = self.root / "etc" / "default" / "useradd"
        defaults.parent.mkdir(exist_ok=True)
        kept = defaults.read_text().splitlines() if defaults.exists() else []
        kept = [line for line in kept if not line.startswith("HOME=")]
        defaults.write_text("\n".join([*kept, f"HOME={self.homes}", ""]))

    @property
    def homes(self) -> Path:
        """Where `useradd` makes home dirs in the sandbox."""
        return self.root / "home"

    def path(self, real: str) -> Path:
        """The sandbox's file that `real` (an absolute path) names inside the namespace."""
        for name, target in MOUNTS.items():
            if real == target or real.startswith(target + "/"):
                return self.root / name / real[len(target) :].lstrip("/")
        if real.startswith(str(self.root)):
            return Path(real)
        raise ValueError(f"{real} is not in the sandbox")

    def text(self, real: str) -> str:
        return self.path(real).read_text()

    def entry(self, real: str, name: str) -> list[str] | None:
        """The fields of `name`'s line in the colon-separated file `real`, or None."""
        for line in self.text(real).splitlines():
            fields = line.split(":")
            if fields[0] == name:
                return fields
        return None

    def run(self, function: Callable[[], T]) -> T:
        """`function()` in a child whose mount namespace shows the sandbox; its result
        (pickled back), or AssertionError with the child's traceback."""
        reader, writer = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: never returns into pytest
            code = 1
            try:
                os.close(reader)
                try:
                    self._enter()
                    outcome: tuple[bool, Any] = (True, function())
                except BaseException as exc:
                    outcome = (False, "".join(traceback.format_exception(exc)))
                with os.fdopen(writer, "wb") as out:
                    out.write(pickle.dumps(outcome))
                code = 0
            finally:
                os._exit(code)
        os.close(writer)
        with os.fdopen(reader, "rb") as incoming:
            data = incoming.read()
        _, status = os.waitpid(pid, 0)
        assert data, f"the sandboxed child died (wait status {status})"
        ok, value = pickle.loads(data)
        if not ok:
            raise AssertionError(f"in the sandbox:\n{value}")
        return value  # type: ignore[no-any-return]

    def _enter(self) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.unshare(_CLONE_NEWNS) != 0:
            error = ctypes.get_errno()
            raise OSError(error, os.strerror(error), "unshare(CLONE_NEWNS)")
        _mount("none", "/", _MS_REC | _MS_PRIVATE)
        for name, target in MOUNTS.items():
            _mount(str(self.root / name), target, _MS_BIND | _MS_REC)

    def shell(self, command: str) -> str:
        """Run `command` with /bin/sh inside the sandbox; its stdout."""

        def call() -> str:
            result = subprocess.run(
                ["/bin/sh", "-c", command], capture_output=True, text=True, check=True
            )
            return result.stdout

        return self.run(call)

    def tool(self, name: str, script: str) -> Path:
        """Put a fake `name` in /usr/local/sbin (first on the handler's PATH)."""
        path = self.root / "usr-local-sbin" / name
        path.write_text("#!/bin/sh\n" + script)
        path.chmod(0o755)
        return path


def _can_unshare() -> str | None:
    """Why mount namespaces are not usable here, or None."""
    if os.geteuid() != 0:
        return "needs root (useradd, chown and mount namespaces)"
    for target in MOUNTS.values():
        if not os.path.isdir(target):
            return f"{target} does not exist to be replaced in the sandbox"
    pid = os.fork()
    if pid == 0:
        libc = ctypes.CDLL(None, use_errno=True)
        os._exit(0 if libc.unshare(_CLONE_NEWNS) == 0 else 1)
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        return "unshare(CLONE_NEWNS) is not permitted here"
    for tool in ("useradd", "usermod", "userdel", "chpasswd"):
        if shutil.which(tool, path="/usr/sbin:/usr/bin:/sbin:/bin") is None:
            return f"{tool} is not installed"
    return None


_REASON = _can_unshare() if sys.platform == "linux" else "Linux only"
pytestmark = pytest.mark.skipif(_REASON is not None, reason=_REASON or "")


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[Sandbox]:
    before = _fingerprint()
    yield Sandbox(tmp_path / "sandbox")
    assert _fingerprint() == before, "the real account files changed"


@pytest.fixture
def agent(exthandler_agent: Agent) -> Agent:
    exthandler_agent.add_handler(VMAccess)
    return exthandler_agent


def goal(protected: dict[str, Any], name: str = "vmaccess", **extra: Any) -> dict[str, Any]:
    extension = {
        "name": name,
        "publisher": "Microsoft.OSTCExtensions",
        "type": "VMAccessForLinux",
        "typeHandlerVersion": "1.5",
        "protectedSettings": protected,
        **extra,
    }
    return {"extensions": [extension]}


def ssh_key(comment: str = "alice@laptop") -> str:
    key = ed25519.Ed25519PrivateKey.generate().public_key()
    line = key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return f"{line.decode()} {comment}"


KEY = ssh_key("shared")
_RUNTIME_NOTE = re.compile(r"\s*Enable failed: exit code \d+$")


def apply(sandbox: Sandbox, agent: Agent, document: dict[str, Any]) -> tuple[str, str]:
    """Apply `document` in the sandbox; the extension's (code, message), the message
    without the note the runtime adds after a failed command's own."""
    sandbox.run(lambda: agent.apply(document))
    status = agent.status(document["extensions"][0]["name"])
    return status.code, _RUNTIME_NOTE.sub("", status.message)


def password_matches(hashed: str, password: str) -> bool:
    """Whether the crypt(3) hash `hashed` is that of `password` (checked by libcrypt)."""
    code = (
        "import crypt, sys; "
        "sys.exit(0 if crypt.crypt(sys.argv[2], sys.argv[1]) == sys.argv[1] else 3)"
    )
    result = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", code, hashed, password], check=False
    )
    return result.returncode == 0


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def test_a_new_user_with_password_key_and_sudo(sandbox: Sandbox, agent: Agent) -> None:
    key = ssh_key()
    code, message = apply(
        sandbox, agent, goal({"username": "alice", "password": PASSWORD, "ssh_key": key})
    )
    assert (code, message) == (
        "ProvisioningState/succeeded",
        "user alice created, password set, key added, sudo granted",
    )
    passwd = sandbox.entry("/etc/passwd", "alice")
    assert passwd is not None
    uid, gid, home = int(passwd[2]), int(passwd[3]), passwd[5]
    assert uid >= 1000
    assert home == str(sandbox.homes / "alice")
    assert passwd[6] == "/bin/bash"
    shadow = sandbox.entry("/etc/shadow", "alice")
    assert shadow is not None
    assert shadow[1].startswith("$")
    assert PASSWORD not in shadow[1]
    assert password_matches(shadow[1], PASSWORD)
    group = sandbox.entry("/etc/group", "alice")
    assert group is not None
    assert int(group[2]) == gid
    assert sandbox.shell("id -un alice; id -gn alice").split() == ["alice", "alice"]

    ssh = Path(home) / ".ssh"
    keys = ssh / "authorized_keys"
    assert keys.read_text() == key + "\n"
    assert (mode(ssh), mode(keys)) == (0o700, 0o600)
    assert {(p.stat().st_uid, p.stat().st_gid) for p in (ssh, keys)} == {(uid, gid)}
    drop_in = sandbox.path("/etc/sudoers.d/waagent")
    assert drop_in.read_text().splitlines()[1:] == ["alice ALL=(ALL) ALL"]
    assert mode(drop_in) == 0o440
    assert drop_in.stat().st_uid == 0
    real = os.listdir("/etc/sudoers.d") if os.path.isdir("/etc/sudoers.d") else []
    assert sorted(p.name for p in drop_in.parent.iterdir()) == sorted([*real, "waagent"])

    # Nothing secret anywhere the runtime writes but the settings it was given.
    for path in agent.root.rglob("*"):
        if path.is_file() and path.suffix != ".settings" and "config" not in path.parts:
            assert PASSWORD.encode() not in path.read_bytes(), path
    assert PASSWORD not in json.dumps(agent.instance_view().to_json())


def test_the_next_sequence_adds_only_what_is_missing(sandbox: Sandbox, agent: Agent) -> None:
    first, second = ssh_key("first"), ssh_key("second")
    apply(sandbox, agent, goal({"username": "bob", "ssh_key": first}))
    home = sandbox.homes / "bob"
    keys = home / ".ssh" / "authorized_keys"
    # The user's own edits stay; the same key with other options and comment is the same.
    kind, blob, _ = first.split(" ", 2)
    keys.write_text(f'{first}\nfrom="10.0.0.0/8" {kind} {blob} renamed\n')
    owner = keys.stat().st_uid, keys.stat().st_gid
    os.chown(keys, 0, 0)
    keys.chmod(0o644)
    code, message = apply(
        sandbox, agent, goal({"username": "bob", "ssh_key": f"  {kind}   {blob}  other  "})
    )
    assert (code, message) == ("ProvisioningState/succeeded", "key already present")
    assert keys.read_text().count(blob) == 2
    assert (keys.stat().st_uid, keys.stat().st_gid, mode(keys)) == (*owner, 0o600)
    _, message = apply(sandbox, agent, goal({"username": "bob", "ssh_key": second}))
    assert message == "key added"
    assert keys.read_text().endswith(f"renamed\n{second}\n")
    assert sandbox.entry("/etc/passwd", "bob") is not None


def test_sudo_without_a_password_until_the_user_has_one(sandbox: Sandbox, agent: Agent) -> None:
    _, message = apply(sandbox, agent, goal({"username": "carol", "ssh_key": ssh_key()}))
    assert message == "user carol created, key added, sudo granted without a password"
    drop_in = sandbox.path("/etc/sudoers.d/waagent")
    assert drop_in.read_text().splitlines()[1:] == ["carol ALL=(ALL) NOPASSWD: ALL"]
    _, message = apply(sandbox, agent, goal({"username": "dave", "password": PASSWORD}))
    assert message == "user dave created, password set, sudo granted"
    _, message = apply(sandbox, agent, goal({"username": "carol", "password": PASSWORD}))
    assert message == "password set, sudo granted"
    assert drop_in.read_text().splitlines()[1:] == [
        "carol ALL=(ALL) ALL",
        "dave ALL=(ALL) ALL",
    ]


def test_expiration(sandbox: Sandbox, agent: Agent) -> None:
    _, message = apply(
        sandbox,
        agent,
        goal({"username": "erin", "password": PASSWORD, "expiration": "2031-02-03"}),
    )
    assert message.startswith("user erin created, expiry set to 2031-02-03, password set")
    days = (datetime.date(2031, 2, 3) - datetime.date(1970, 1, 1)).days
    assert sandbox.entry("/etc/shadow", "erin")[7] == str(days)  # type: ignore[index]
    _, message = apply(sandbox, agent, goal({"username": "erin", "expiration": "2032-01-01"}))
    assert message == "expiry set to 2032-01-01"
    days = (datetime.date(2032, 1, 1) - datetime.date(1970, 1, 1)).days
    assert sandbox.entry("/etc/shadow", "erin")[7] == str(days)  # type: ignore[index]
    code, message = apply(
        sandbox, agent, goal({"username": "nobody-yet", "expiration": "2032-01-01"})
    )
    assert code == "ProvisioningState/failed/53"
    assert "there is no user nobody-yet; give password or ssh_key to create it" in message


def test_remove_user(sandbox: Sandbox, agent: Agent) -> None:
    apply(sandbox, agent, goal({"username": "frank", "password": PASSWORD}))
    apply(sandbox, agent, goal({"username": "grace", "ssh_key": ssh_key()}))
    drop_in = sandbox.path("/etc/sudoers.d/waagent")
    _, message = apply(sandbox, agent, goal({"remove_user": "frank"}))
    assert message == "user frank removed, sudo of frank revoked"
    assert sandbox.entry("/etc/passwd", "frank") is None
    assert sandbox.entry("/etc/shadow", "frank") is None
    assert not (sandbox.homes / "frank").exists()
    assert drop_in.read_text().splitlines()[1:] == ["grace ALL=(ALL) NOPASSWD: ALL"]
    _, message = apply(sandbox, agent, goal({"remove_user": "grace"}))
    assert message == "user grace removed, sudo of grace revoked"
    assert not drop_in.exists()
    _, message = apply(sandbox, agent, goal({"remove_user": "grace", "reset_ssh": False}))
    assert message == "user grace not found"


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ({"username": "root", "password": PASSWORD}, "protectedSettings.username: root is"),
        ({"username": "daemon", "ssh_key": KEY}, "protectedSettings.username: daemon is"),
        ({"remove_user": "root"}, "protectedSettings.remove_user: root is a system account"),
        (
            {"remove_user": "someone", "username": "bin", "password": PASSWORD},
            "protectedSettings.username: bin is a system account",
        ),
        (
            {"remove_user": "daemon", "username": "newcomer", "password": PASSWORD},
            "protectedSettings.remove_user: daemon is a system account",
        ),
    ],
)
def test_system_accounts_are_refused(
    sandbox: Sandbox, agent: Agent, settings: dict[str, Any], expected: str
) -> None:
    shadow = sandbox.text("/etc/shadow")
    code, message = apply(sandbox, agent, goal(settings))
    assert code == "ProvisioningState/failed/53"
    assert expected in message
    assert "VM Access changes regular users only" in message
    assert sandbox.text("/etc/shadow") == shadow
    assert not sandbox.path("/etc/sudoers.d/waagent").exists()
    assert not message.startswith("user ")  # nothing was done before the refusal


def _planted(sandbox: Sandbox, agent: Agent, plant: Callable[[Path], None]) -> tuple[str, str]:
    """Create user mallory, let `plant` change its home, then ask for another key."""
    apply(sandbox, agent, goal({"username": "mallory", "password": PASSWORD}))
    plant(sandbox.homes / "mallory")
    return apply(sandbox, agent, goal({"username": "mallory", "ssh_key": ssh_key()}))


def test_a_linked_ssh_dir_is_not_followed(sandbox: Sandbox, agent: Agent) -> None:
    target = sandbox.path("/etc/ssh-target")
    target.mkdir()

    def plant(home: Path) -> None:
        (home / ".ssh").symlink_to("/etc/ssh-target")

    code, message = _planted(sandbox, agent, plant)
    assert code == "ProvisioningState/failed/1"
    assert ".ssh is a symbolic link or not a directory: refusing to follow it" in message
    assert list(target.iterdir()) == []
    assert mode(target) == 0o755


@pytest.mark.parametrize("kind", ["symlink", "hardlink"])
def test_a_linked_key_file_is_refused(sandbox: Sandbox, agent: Agent, kind: str) -> None:
    shadow = sandbox.path("/etc/shadow")

    def plant(home: Path) -> None:
        (home / ".ssh").mkdir()
        link = home / ".ssh" / "authorized_keys"
        if kind == "symlink":
            link.symlink_to("/etc/shadow")
        else:
            os.link(shadow, link)

    before = None

    def remember(home: Path) -> None:
        nonlocal before
        plant(home)
        before = shadow.read_bytes(), shadow.stat().st_uid, mode(shadow)

    code, message = _planted(sandbox, agent, remember)
    assert code == "ProvisioningState/failed/1"
    reason = "a symbolic link" if kind == "symlink" else "has 2 hard links"
    assert f"authorized_keys is {reason}: refusing to use it" in message
    assert (shadow.read_bytes(), shadow.stat().st_uid, mode(shadow)) == before


def test_a_failed_step_names_what_was_done_and_a_retry_finishes(
    sandbox: Sandbox, agent: Agent
) -> None:
    key = ssh_key()
    sandbox.tool("chpasswd", "echo 'chpasswd: cannot lock /etc/shadow' >&2\nexit 1\n")
    code, message = apply(
        sandbox, agent, goal({"username": "heidi", "password": PASSWORD, "ssh_key": key})
    )
    assert code == "ProvisioningState/failed/1", message
    assert message == (
        "user heidi created; then: chpasswd failed with exit code 1: "
        "chpasswd: cannot lock /etc/shadow"
    )
    sandbox.path("/usr/local/sbin/chpasswd").unlink()
    # The same sequence number again (a new forceUpdateTag): the failed enable runs again.
    code, message = apply(
        sandbox,
        agent,
        goal({"username": "heidi", "password": PASSWORD, "ssh_key": key}, forceUpdateTag="2"),
    )
    assert agent.extension("vmaccess").sequence_number == 0
    assert (code, message) == (
        "ProvisioningState/succeeded",
        "password set, key added, sudo granted",
    )


def test_sudoers_validated_with_visudo_when_installed(sandbox: Sandbox, agent: Agent) -> None:
    log = sandbox.root / "visudo.log"
    visudo = sandbox.tool(
        "visudo",
        f'echo "$@" >> {log}\ncat "$4" >> {log}\n'
        f'ls -l "$4" | cut -c1-10 >> {log}\n'
        'grep -q ivan "$4" && { echo "$4: syntax error near line 2" >&2; exit 1; }\nexit 0\n',
    )
    _, message = apply(sandbox, agent, goal({"username": "judy", "password": PASSWORD}))
    assert message.endswith("sudo granted")
    checked = log.read_text().splitlines()
    assert checked[0].startswith("-c -q -f /")
    assert checked[0].endswith("/waagent")
    assert checked[2:] == ["judy ALL=(ALL) ALL", "-r--r-----"]
    code, message = apply(sandbox, agent, goal({"username": "ivan", "password": PASSWORD}))
    assert code == "ProvisioningState/failed/1"
    assert "the new content does not pass visudo, left unchanged" in message
    assert "<new content>: syntax error near line 2" in message
    drop_in = sandbox.path("/etc/sudoers.d/waagent")
    assert drop_in.read_text().splitlines()[1:] == ["judy ALL=(ALL) ALL"]
    visudo.unlink()


def test_without_visudo_unknown_drop_in_lines_stop_the_change(
    sandbox: Sandbox, agent: Agent
) -> None:
    drop_in = sandbox.path("/etc/sudoers.d/waagent")
    drop_in.parent.mkdir(exist_ok=True)
    content = "kim ALL=(ALL) ALL\nDefaults:kim !requiretty\n"
    drop_in.write_text(content)
    code, message = apply(sandbox, agent, goal({"username": "leo", "password": PASSWORD}))
    assert code == "ProvisioningState/failed/1"
    assert message.startswith("user leo created, password set; then: ")
    assert "visudo is not installed" in message
    assert "line 3: not a line this handler writes ('Defaults:kim !requiretty')" in message
    assert drop_in.read_text() == content


def test_reset_ssh(sandbox: Sandbox, agent: Agent, tmp_path: Path) -> None:
    ssh_dir = sandbox.path("/etc/ssh")
    ssh_dir.mkdir(exist_ok=True)
    old = "Port 2222\nPasswordAuthentication no\nAllowUsers nobody\n"
    (ssh_dir / "sshd_config").write_text(old)
    (ssh_dir / "sshd_config").chmod(0o600)
    checks = sandbox.root / "sshd-t.log"
    sandbox.tool("sshd", f'echo "$@" >> {checks}\ncat "$3" >> {checks}\nexit 0\n')
    # A running "sshd": a copy of sleep named so, its pid where sshd writes it.
    daemon_binary = tmp_path / "bin" / "sshd"
    daemon_binary.parent.mkdir()
    shutil.copy(shutil.which("sleep") or "/bin/sleep", daemon_binary)
    daemon = subprocess.Popen([str(daemon_binary), "60"])
    try:
        sandbox.path("/run/sshd.pid").write_text(f"{daemon.pid}\n")
        code, message = apply(sandbox, agent, goal({"reset_ssh": True}))
        assert daemon.wait(timeout=30) == -signal.SIGHUP
    finally:
        daemon.kill()
        daemon.wait()
    backups = sorted(p.name for p in ssh_dir.iterdir() if p.name.endswith(".bak"))
    assert len(backups) == 1
    assert (code, message) == (
        "ProvisioningState/succeeded",
        f"sshd_config reset (previous saved as {backups[0]}), sshd reloaded",
    )
    assert (ssh_dir / backups[0]).read_text() == old
    assert mode(ssh_dir / backups[0]) == 0o600
    assert (ssh_dir / "sshd_config").read_text() == DEFAULT_CONFIG
    assert mode(ssh_dir / "sshd_config") == 0o644
    assert checks.read_text().split("\n", 1)[1] == DEFAULT_CONFIG
    # Already the default: nothing to back up, nothing to reload.
    _, message = apply(
        sandbox, agent, goal({"reset_ssh": True, "username": "mia", "password": PASSWORD})
    )
    assert (
        message == "user mia created, password set, sudo granted, sshd_config already the default"
    )


def test_reset_ssh_refused_by_sshd_keeps_the_old_file(sandbox: Sandbox, agent: Agent) -> None:
    ssh_dir = sandbox.path("/etc/ssh")
    ssh_dir.mkdir(exist_ok=True)
    (ssh_dir / "sshd_config").write_text("Port 2222\n")
    sandbox.tool(
        "sshd", 'echo "$3: line 9: Bad configuration option: ClientAliveInterval" >&2\nexit 255\n'
    )
    code, message = apply(sandbox, agent, goal({"reset_ssh": True}))
    assert code == "ProvisioningState/failed/1"
    assert "sshd refuses the default configuration, /etc/ssh/sshd_config left unchanged" in message
    assert "<new sshd_config>: line 9: Bad configuration option" in message
    assert sorted(p.name for p in ssh_dir.iterdir() if p.name.startswith("sshd")) == ["sshd_config"]
    assert (ssh_dir / "sshd_config").read_text() == "Port 2222\n"


def test_reset_ssh_without_an_ssh_server(sandbox: Sandbox, agent: Agent) -> None:
    shutil.rmtree(sandbox.path("/etc/ssh"), ignore_errors=True)
    code, message = apply(sandbox, agent, goal({"reset_ssh": True}))
    assert code == "ProvisioningState/failed/52"
    assert message == "reset_ssh: /etc/ssh does not exist: is an OpenSSH server installed?"


def _normal(view: InstanceView) -> Any:
    data = view.to_json()
    data.pop("goalStateId", None)
    for extension in data["extensions"]:
        for entry in extension["statuses"]:
            entry.pop("time", None)
            # The process executor appends the command's own (empty) output to the
            # runtime's failure note; the in-process executor has none to append.
            entry["message"] = entry["message"].removesuffix(" [stdout]\n\n\n[stderr]\n")
    return data


def test_in_process_and_packaged_give_the_same_view(
    tmp_path: Path, agent: Agent, exthandler_certificate_dir: Path
) -> None:
    packaged = Agent(root=tmp_path / "packaged-agent", certificate_dir=exthandler_certificate_dir)
    packaged.add_built_package(VMAccess, "exthandler_plugins.vmaccess:VMAccess")
    documents = [
        goal({"username": "nina", "password": PASSWORD, "ssh_key": KEY, "remove_user": "gone"}),
        goal({"username": "root", "ssh_key": KEY}),
        goal({"username": "nina", "ssh_key": KEY, "expiration": "2040-01-01"}),
    ]
    views = {}
    for name, runner in (("inproc", agent), ("packaged", packaged)):
        sandbox = Sandbox(tmp_path / f"sandbox-{name}")
        views[name] = [_normal(sandbox.run(functools.partial(runner.apply, d))) for d in documents]
        home = sandbox.homes / "nina"
        assert (home / ".ssh" / "authorized_keys").read_text() == KEY + "\n"
        assert sandbox.entry("/etc/passwd", "nina") is not None
    assert json.dumps(views["inproc"], indent=1) == json.dumps(views["packaged"], indent=1)
    messages = [view["extensions"][0]["statuses"][0]["message"] for view in views["packaged"]]
    assert (
        messages[0]
        == "user gone not found, user nina created, password set, key added, sudo granted"
    )
    assert messages[1].startswith("protectedSettings.username: root is a system account (uid 0")
    assert messages[2] == "expiry set to 2040-01-01, key already present"
    assert not (packaged.handler_dir(HANDLER, VMAccess.version) / ".exthandler-inprocess").exists()


def test_the_package_runs_under_a_bare_python(tmp_path: Path, sandbox: Sandbox) -> None:
    package = build_package(VMAccess, "exthandler_plugins.vmaccess:VMAccess", tmp_path / "repo")
    standin = StandinAgent(lib=tmp_path / "lib", log_root=tmp_path / "log")
    assert standin.base_env["PATH"] == clean_path()
    protected = {"username": "olga", "password": PASSWORD, "ssh_key": KEY}
    handler_dir = sandbox.run(lambda: standin.install_and_enable(package, 0, None, protected))
    status = read_status(handler_dir, 0)
    assert status is not None
    assert status["status"]["status"] == "success", status
    assert status["status"]["formattedMessage"]["message"] == (
        "user olga created, password set, key added, sudo granted"
    )
    shadow = sandbox.entry("/etc/shadow", "olga")
    assert shadow is not None
    assert password_matches(shadow[1], PASSWORD)


class _Older(VMAccess):
    version = "1.4.9"


def test_lifecycle_and_upgrade(sandbox: Sandbox, agent: Agent) -> None:
    agent.add_handler(_Older)

    def lifecycle() -> list[str]:
        report = check_lifecycle(
            agent,
            VMAccess,
            previous=_Older,
            protected_settings={"username": "pat", "ssh_key": KEY},
            extension="access",
        )
        return [phase.name for phase in report.phases]

    phases = sandbox.run(lifecycle)
    assert phases[0] == "install and enable"
    assert any(name.startswith("upgrade 1.4.9 -> 1.5") for name in phases)
    # Disable and uninstall leave the account and its key where they were.
    assert sandbox.entry("/etc/passwd", "pat") is not None
    assert (sandbox.homes / "pat" / ".ssh" / "authorized_keys").read_text() == KEY + "\n"
    assert sandbox.path("/etc/sudoers.d/waagent").exists()


def test_a_failed_enable_is_run_again(sandbox: Sandbox, agent: Agent) -> None:
    agent.add_handler(VMAccess, fault=Fault.exit("enable", 3))
    document = goal({"username": "quinn", "ssh_key": KEY})
    code, _ = apply(sandbox, agent, document)
    assert code == "ProvisioningState/failed/3"
    assert sandbox.entry("/etc/passwd", "quinn") is None
    agent.add_handler(VMAccess)
    code, message = apply(
        sandbox, agent, goal({"username": "quinn", "ssh_key": KEY}, forceUpdateTag="again")
    )
    assert (code, message) == (
        "ProvisioningState/succeeded",
        "user quinn created, key added, sudo granted without a password",
    )


DOC = Path(__file__).resolve().parents[2] / "docs" / "vmaccess.md"
_EXAMPLE = re.compile(r"```json\n(\{\"extensions\".*?)```", re.DOTALL)
_SHOWN = re.compile(r"The status then reads:\n\n```\n(.*?)\n```", re.DOTALL)


def test_the_example_of_the_docs(sandbox: Sandbox, agent: Agent) -> None:
    text = DOC.read_text()
    document = json.loads(_EXAMPLE.findall(text)[0])
    code, message = apply(sandbox, agent, document)
    assert code == "ProvisioningState/succeeded"
    shown = _SHOWN.search(text)
    assert shown is not None
    assert message == shown[1]
    protected = document["extensions"][0]["protectedSettings"]
    name = protected["username"]
    keys = sandbox.homes / name / ".ssh" / "authorized_keys"
    assert keys.read_text() == protected["ssh_key"] + "\n"
    shadow = sandbox.entry("/etc/shadow", name)
    assert shadow is not None
    assert password_matches(shadow[1], protected["password"])


def test_a_pid_file_naming_another_process_is_not_signalled(sandbox: Sandbox, agent: Agent) -> None:
    sandbox.path("/etc/ssh").mkdir(exist_ok=True)
    sandbox.path("/etc/ssh/sshd_config").write_text("Port 2222\n")
    other = subprocess.Popen([shutil.which("sleep") or "/bin/sleep", "60"])
    try:
        sandbox.path("/run/sshd.pid").write_text(f"{other.pid}\n")
        code, message = apply(sandbox, agent, goal({"reset_ssh": True}))
        assert other.poll() is None
    finally:
        other.kill()
        other.wait()
    assert code == "ProvisioningState/succeeded"
    assert message.endswith("), sshd not running")
