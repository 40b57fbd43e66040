"""`reset_ssh`: put back an sshd configuration that lets users in, and make sshd read it.

The current `/etc/ssh/sshd_config` is copied to `sshd_config.<UTC time>.bak` beside it,
then replaced atomically by `DEFAULT_CONFIG`: key and password logins, PAM, no root
login, the built-in SFTP server (its path is the same on every distribution). When sshd
is installed, `sshd -t -f` checks the new file first and a file it refuses is not
installed. A running sshd is then reloaded: through systemd (`ssh` or `sshd` unit) when
systemd runs the machine, else by SIGHUP to the pid in `/run/sshd.pid`, once that pid is
checked to be an `sshd`.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import signal
import stat
import tempfile
from pathlib import Path

from exthandler_sdk import ErrorCode, HandlerError
from exthandler_sdk.files import write_atomic

from ._system import read_file, run_tool, tool

__all__ = ["DEFAULT_CONFIG", "SSHD_CONFIG", "reload_sshd", "reset_config"]

SSH_DIR = Path("/etc/ssh")
SSHD_CONFIG = SSH_DIR / "sshd_config"
PID_FILES = (Path("/run/sshd.pid"), Path("/var/run/sshd.pid"))
SYSTEMD_RUNNING = Path("/run/systemd/system")
UNITS = ("ssh.service", "sshd.service")

DEFAULT_CONFIG = """\
# Written by Microsoft.OSTCExtensions.VMAccessForLinux (reset_ssh). The file it replaced
# is kept beside it as sshd_config.<time>.bak.
Port 22
PermitRootLogin no
PubkeyAuthentication yes
AuthorizedKeysFile .ssh/authorized_keys
PasswordAuthentication yes
PermitEmptyPasswords no
ChallengeResponseAuthentication no
UsePAM yes
X11Forwarding no
PrintMotd no
AcceptEnv LANG LC_*
ClientAliveInterval 180
Subsystem sftp internal-sftp
"""


async def reset_config() -> tuple[bool, str | None]:
    """Install `DEFAULT_CONFIG`: (whether the file changed, the backup's name or None when
    there was no file to keep). HandlerError when it cannot."""
    if not _is_dir(SSH_DIR):
        raise HandlerError(
            int(ErrorCode.MISSING_DEPENDENCY),
            f"reset_ssh: {SSH_DIR} does not exist: is an OpenSSH server installed?",
        )
    try:
        old: bytes | None = read_file(SSHD_CONFIG)
        mode = stat.S_IMODE(os.stat(SSHD_CONFIG).st_mode)
    except FileNotFoundError:
        old, mode = None, 0o644
    except OSError as exc:
        raise HandlerError(1, f"reset_ssh: {SSHD_CONFIG} cannot be read safely: {exc}") from None
    new = DEFAULT_CONFIG.encode()
    if old == new:
        return False, None
    await _check(new)
    backup = None
    if old is not None:
        backup = _backup_name()
        write_atomic(SSH_DIR / backup, old, mode=mode & 0o644, parents=False)
    write_atomic(SSHD_CONFIG, new, mode=0o644, parents=False)
    return True, backup


async def reload_sshd() -> str | None:
    """Make a running sshd read its configuration: how it was done, or None when no sshd
    runs. HandlerError when one runs and cannot be reloaded."""
    if tool("systemctl") is not None and _is_dir(SYSTEMD_RUNNING):
        for unit in UNITS:
            try:
                await run_tool("systemctl", ["is-active", "--quiet", unit])
            except HandlerError:
                continue
            await run_tool("systemctl", ["reload", unit])
            return f"{unit} reloaded"
    for pid_file in PID_FILES:
        pid = _sshd_pid(pid_file)
        if pid is not None:
            try:
                os.kill(pid, signal.SIGHUP)
            except ProcessLookupError:
                continue
            return "sshd reloaded"
    return None


async def _check(config: bytes) -> None:
    if tool("sshd") is None:
        return
    with tempfile.TemporaryDirectory(prefix="vmaccess-sshd-") as private:
        candidate = Path(private) / "sshd_config"
        write_atomic(candidate, config, mode=0o600, durable=False)
        try:
            await run_tool("sshd", ["-t", "-f", str(candidate)])
        except HandlerError as exc:
            raise HandlerError(
                1,
                f"reset_ssh: sshd refuses the default configuration, {SSHD_CONFIG} left "
                "unchanged: " + exc.message.replace(str(candidate), "<new sshd_config>"),
            ) from None


def _is_dir(path: Path) -> bool:
    return path.is_dir()


def _backup_name() -> str:
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    name = f"{SSHD_CONFIG.name}.{stamp}.bak"
    counter = 1
    while os.path.lexists(SSH_DIR / name):
        counter += 1
        name = f"{SSHD_CONFIG.name}.{stamp}-{counter}.bak"
    return name


def _sshd_pid(pid_file: Path) -> int | None:
    """The pid `pid_file` names, when that process is an sshd."""
    try:
        text = read_file(pid_file).decode(errors="replace").strip()
    except OSError:
        return None
    if not text.isdigit() or int(text) <= 1:
        return None
    pid = int(text)
    with contextlib.suppress(OSError):
        if Path(f"/proc/{pid}/comm").read_text().strip() == "sshd":
            return pid
    return None
