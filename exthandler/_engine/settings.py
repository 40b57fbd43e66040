"""Writing extensions' settings files before the commands that read them.

Settings are derived from the goal state and rewritten whenever they are missing before a
command, so they need no fsync. Plain protected settings are encrypted to the runtime's
own certificate (made once per state dir: the key generation runs in a worker thread).
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
from exthandler_sdk.protocol import (
    CONFIG_DIR,
    RUNTIME_POLICY_FILE,
    render_settings,
    settings_file_name,
)

from .._fs import make_dir, mode_dir, write_unless_same
from .._model import EncryptedProtectedSettings, ExtensionGoal, PlainProtectedSettings
from .._report.liveview import ExtensionState

if TYPE_CHECKING:
    from .._state.crypto import Certificate

__all__ = ["SettingsWriter"]


class SettingsWriter:
    """Writes `config/<n>.settings` files of a state dir whose certificate lives in `lib_dir`."""

    lib_dir: Path
    _certificate: Certificate | None
    _making: anyio.Lock

    def __init__(self, lib_dir: Path) -> None:
        self.lib_dir = lib_dir
        self._certificate = None
        self._making = anyio.Lock()

    async def write(
        self,
        directory: Path,
        extensions: Mapping[str, ExtensionState],
        names: Iterable[str],
        *,
        multi: bool,
        written: set[tuple[str, int]],
    ) -> None:
        """Write the settings of the extensions `names` into the handler dir `directory`,
        unless this pass (`written`) wrote them already and they are still there."""
        config = f"{directory}/{CONFIG_DIR}"  # strings: a pathlib join per command adds up
        for name in names:
            state = extensions.get(name)
            if state is None or state.sequence_number is None or state.goal.settings_error:
                continue
            file_name = settings_file_name(name if multi else None, state.sequence_number)
            path = f"{config}/{file_name}"
            key = (path, state.sequence_number)
            # One stat on the loop: cheaper than a hop to a thread (docs/architecture.md).
            if key in written and os.path.exists(path):  # noqa: ASYNC240
                continue
            # A link the handler put in place of config/ is replaced by a real dir, and the
            # file is written into the dir that was checked.
            fd = mode_dir(config, 0o700)
            try:
                await self._write_file(file_name, state.goal, fd)
            finally:
                os.close(fd)
            written.add(key)

    def write_runtime_policy(self, directory: Path, value: Mapping[str, Any] | None) -> None:
        """Write the policy's `runtimePolicy` for the handler as `config/runtimePolicy.json`
        of the handler dir `directory`, or remove that file when the policy gives none."""
        if value is None:  # the common case: one unlink, no path objects
            with contextlib.suppress(FileNotFoundError):
                os.unlink(f"{directory}/{CONFIG_DIR}/{RUNTIME_POLICY_FILE}")
            return
        path = directory / CONFIG_DIR / RUNTIME_POLICY_FILE
        make_dir(path.parent, 0o700)  # a link the handler put there is replaced
        data = json.dumps(value, sort_keys=True, indent=2).encode() + b"\n"
        write_unless_same(path, data, mode=0o600)

    async def _write_file(self, name: str, goal: ExtensionGoal, config_fd: int) -> None:
        """Write the settings file `name` of `goal` into the open config dir `config_fd`."""
        if not goal.has_settings:
            write_unless_same(name, b"", mode=0o600, dir_fd=config_fd)
            return
        protected: str | None = None
        thumbprint: str | None = None
        secret = goal.protected_settings
        if isinstance(secret, PlainProtectedSettings):
            # cryptography takes a while to import: only goal states with secrets need it.
            from .._state.crypto import encrypt_protected_settings, ensure_certificate

            async with self._making:  # one key per state dir, made once
                if self._certificate is None:  # key generation: never on the event loop
                    self._certificate = await anyio.to_thread.run_sync(
                        ensure_certificate, self.lib_dir
                    )
            certificate = self._certificate
            protected = encrypt_protected_settings(secret.value, certificate)
            thumbprint = certificate.thumbprint
        elif isinstance(secret, EncryptedProtectedSettings):
            protected, thumbprint = secret.data, secret.thumbprint
        data = render_settings(goal.public_settings, protected, thumbprint)
        write_unless_same(name, data, mode=0o600, dir_fd=config_fd)
