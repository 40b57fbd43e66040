"""A minimal stand-in for the reference Linux guest agent, written from the protocol alone
(docs/protocol.md).

It uses nothing of the `exthandler` runtime: it extracts a package, writes
HandlerEnvironment.json and settings files (protected settings encrypted with the
`openssl` CLI to a self-signed certificate), runs the manifest's commands the way the
reference agent does, and reads the status files. Packages built by the SDK must work
under it exactly as they would under the real agent.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import subprocess
import sys
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

SUPPORTED_FEATURES = '[{"Key":"ExtensionTelemetryPipeline","Value":"1.0"}]'
UPDATE_ONLY_VARIABLES = (
    "VERSION",
    "AZURE_GUEST_AGENT_UPDATING_FROM_VERSION",
    "AZURE_GUEST_AGENT_DISABLE_CMD_EXIT_CODE",
    "AZURE_GUEST_AGENT_DISABLE_CMD_EXIT_CODES_MULTIPLE_EXTENSIONS",
)
NOT_RUN = "NOT_RUN"
COMMAND_TIMEOUT = 120.0


class AgentError(Exception):
    """A step failed in a way the reference agent would report (manifest, command)."""


@attrs.frozen(kw_only=True)
class CommandResult:
    """One command the agent ran."""

    handler: str
    version: str
    operation: str
    exit_code: int
    stdout: str
    stderr: str
    env: Mapping[str, str]


@attrs.frozen(kw_only=True)
class Manifest:
    """Element 0 of HandlerManifest.json, read with the reference agent's leniency."""

    name: str
    commands: Mapping[str, str]
    update_with_install: bool
    continue_on_update_failure: bool
    report_heartbeat: bool
    supports_multiple_extensions: bool


def clean_path() -> str:
    """A PATH with a system python3 and nothing from a virtualenv, when the host has one."""
    if Path("/usr/bin/python3").exists():
        return "/usr/bin:/bin"
    return f"{Path(sys.executable).parent}:/usr/bin:/bin"


def parse_version(version: str) -> tuple[int, ...]:
    """Dotted integers compared component-wise, missing components as 0."""
    parts = [int(part) for part in version.split(".")]
    return tuple(parts + [0] * (4 - len(parts)))


def _flag(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    return isinstance(value, str) and value.lower() == "true"


def read_manifest(handler_dir: Path) -> Manifest:
    """Element 0 of `handler_dir/HandlerManifest.json` (BOM stripped)."""
    path = handler_dir / "HandlerManifest.json"
    if not path.exists():
        raise AgentError("1002: HandlerManifest.json not found")
    try:
        document = json.loads(path.read_bytes().decode("utf-8-sig"))
        element = document[0]
        name = element["name"]
        options = element["handlerManifest"]
    except (ValueError, LookupError, TypeError) as exc:
        raise AgentError(f"1003: HandlerManifest.json unparsable: {exc}") from exc
    operations = ("install", "enable", "disable", "update", "uninstall")
    return Manifest(
        name=str(name),
        commands={op: str(options[f"{op}Command"]) for op in operations},
        update_with_install=str(options.get("updateMode", "UpdateWithInstall")).lower()
        == "updatewithinstall",
        continue_on_update_failure=_flag(options.get("continueOnUpdateFailure")),
        report_heartbeat=_flag(options.get("reportHeartbeat")),
        supports_multiple_extensions=_flag(options.get("supportsMultipleExtensions")),
    )


def _openssl(*args: str, data: bytes | None = None) -> bytes:
    completed = subprocess.run(
        ["openssl", *args], input=data, capture_output=True, check=False, timeout=60
    )
    if completed.returncode != 0:
        raise AgentError(f"openssl {args[0]} failed: {completed.stderr.decode(errors='replace')}")
    return completed.stdout


@attrs.define(eq=False)
class StandinAgent:
    """The agent's state: its lib dir, log root, certificate and the handlers' states."""

    lib: Path
    log_root: Path
    base_env: dict[str, str] = attrs.field(factory=lambda: {"PATH": clean_path()})
    thumbprint: str = ""
    states: dict[Path, str] = attrs.field(factory=dict)
    commands: list[CommandResult] = attrs.field(factory=list)

    def __attrs_post_init__(self) -> None:
        self.lib.mkdir(parents=True, exist_ok=True)
        self.log_root.mkdir(parents=True, exist_ok=True)
        self.thumbprint = self._make_certificate()

    # -- certificate and settings ------------------------------------------------------

    def _make_certificate(self) -> str:
        crt, prv = self.lib / "standin.crt", self.lib / "standin.prv"
        _openssl(
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-subj", "/CN=standin-agent", "-keyout", str(prv), "-out", str(crt),
        )  # fmt: skip
        fingerprint = _openssl("x509", "-fingerprint", "-sha1", "-noout", "-in", str(crt))
        thumbprint = fingerprint.decode().strip().split("=", 1)[1].replace(":", "").upper()
        for path, suffix in ((crt, "crt"), (prv, "prv")):
            final = self.lib / f"{thumbprint}.{suffix}"
            path.rename(final)
            final.chmod(0o600)
        return thumbprint

    def encrypt(self, protected: Mapping[str, Any]) -> str:
        """Protected settings as the wire carries them: base64 of DER CMS enveloped data."""
        der = _openssl(
            "cms", "-encrypt", "-binary", "-outform", "DER", "-aes256",
            str(self.lib / f"{self.thumbprint}.crt"),
            data=json.dumps(dict(protected)).encode(),
        )  # fmt: skip
        return base64.b64encode(der).decode()

    def write_settings(
        self,
        handler_dir: Path,
        seq: int,
        public: Mapping[str, Any] | None,
        protected: Mapping[str, Any] | None,
    ) -> Path:
        """`config/<seq>.settings`; empty when the handler is given no settings at all."""
        path = handler_dir / "config" / f"{seq}.settings"
        if public is None and protected is None:
            path.write_text("")
            return path
        handler_settings: dict[str, Any] = {
            "publicSettings": None if public is None else dict(public)
        }
        if protected is not None:
            handler_settings["protectedSettings"] = self.encrypt(protected)
            handler_settings["protectedSettingsCertThumbprint"] = self.thumbprint
        path.write_text(json.dumps({"runtimeSettings": [{"handlerSettings": handler_settings}]}))
        return path

    # -- packages ----------------------------------------------------------------------

    def extract(self, package: Path) -> Path:
        """Extract `Publisher.Type__Version.zip` into `<lib>/Publisher.Type-Version/`."""
        handler, _, version = package.name.removesuffix(".zip").rpartition("__")
        handler_dir = self.lib / f"{handler}-{version}"
        if handler_dir.exists():
            raise AgentError(f"{handler_dir.name} is already installed")
        with zipfile.ZipFile(package) as archive:
            archive.extractall(handler_dir)
        manifests = sorted(handler_dir.rglob("HandlerManifest.json"))
        if not manifests:
            raise AgentError("1002: HandlerManifest.json not found")
        if manifests[0] != handler_dir / "HandlerManifest.json":
            shutil.copyfile(manifests[0], handler_dir / "HandlerManifest.json")
        for path in handler_dir.rglob("*"):
            if path.is_file():
                path.chmod(path.stat().st_mode | 0o100)
        for folder in ("config", "status"):
            (handler_dir / folder).mkdir(mode=0o700, exist_ok=True)
        self._write_environment(handler_dir, handler, version)
        self.states[handler_dir] = "NotInstalled"
        return handler_dir

    def _write_environment(self, handler_dir: Path, handler: str, version: str) -> None:
        log_dir = self.log_root / handler
        events = log_dir / "events"
        events.mkdir(parents=True, exist_ok=True, mode=0o700)
        document = [
            {
                "name": handler,
                "version": 1.0,
                "handlerEnvironment": {
                    "logFolder": str(log_dir),
                    "configFolder": str(handler_dir / "config"),
                    "statusFolder": str(handler_dir / "status"),
                    "heartbeatFile": str(handler_dir / "heartbeat.log"),
                    "eventsFolder": str(events),
                    "eventsFolder_preview": str(events),
                },
            }
        ]
        (handler_dir / "HandlerEnvironment.json").write_text(json.dumps(document))

    # -- commands ----------------------------------------------------------------------

    def run_command(
        self,
        handler_dir: Path,
        operation: str,
        seq: int,
        extra_env: Mapping[str, str] | None = None,
    ) -> CommandResult:
        """Run one manifest command as `/bin/sh -c <handler_dir>/<command>` in a new session."""
        manifest = read_manifest(handler_dir)
        handler, _, version = handler_dir.name.rpartition("-")
        env = {
            key: value for key, value in self.base_env.items() if key not in UPDATE_ONLY_VARIABLES
        }
        env.update(
            {
                "ConfigSequenceNumber": str(seq),
                "AZURE_GUEST_AGENT_EXTENSION_PATH": str(handler_dir),
                "AZURE_GUEST_AGENT_EXTENSION_VERSION": version,
                "AZURE_GUEST_AGENT_EXTENSION_SUPPORTED_FEATURES": SUPPORTED_FEATURES,
            }
        )
        if operation in ("install", "enable"):
            env["AZURE_GUEST_AGENT_UNINSTALL_CMD_EXIT_CODE"] = NOT_RUN
        env.update(extra_env or {})
        command = f"{handler_dir}/{manifest.commands[operation].lstrip('/')}"
        with subprocess.Popen(
            ["/bin/sh", "-c", command],
            cwd=handler_dir,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        ) as process:
            try:
                stdout, stderr = process.communicate(timeout=COMMAND_TIMEOUT)
            except subprocess.TimeoutExpired:
                # As the reference agent: SIGKILL to the whole process group, no grace.
                os.killpg(process.pid, signal.SIGKILL)
                stdout, stderr = process.communicate()
                raise AgentError(f"1011: {operation} timed out\n{stderr}") from None
        result = CommandResult(
            handler=handler,
            version=version,
            operation=operation,
            exit_code=process.returncode,
            stdout=stdout,
            stderr=stderr,
            env=env,
        )
        self.commands.append(result)
        log = self.log_root / handler / "CommandExecution.log"
        with log.open("a") as stream:
            stream.write(f"{version} {operation} exit={process.returncode}\n")
        return result

    def _require(self, result: CommandResult) -> CommandResult:
        if result.exit_code != 0:
            raise AgentError(
                f"{result.operation} of {result.handler} {result.version} exited "
                f"{result.exit_code}\n[stdout]\n{result.stdout}\n\n[stderr]\n{result.stderr}"
            )
        return result

    # -- lifecycle (docs/protocol.md#lifecycle) ------------------------------------------

    def install_and_enable(
        self,
        package: Path,
        seq: int = 0,
        public: Mapping[str, Any] | None = None,
        protected: Mapping[str, Any] | None = None,
    ) -> Path:
        """Nothing installed, requested enabled: extract, settings, install, enable."""
        handler_dir = self.extract(package)
        self.write_settings(handler_dir, seq, public, protected)
        self._require(self.run_command(handler_dir, "install", seq))
        self.states[handler_dir] = "Installed"
        self._require(self.run_command(handler_dir, "enable", seq))
        self.states[handler_dir] = "Enabled"
        return handler_dir

    def enable(
        self,
        handler_dir: Path,
        seq: int,
        public: Mapping[str, Any] | None = None,
        protected: Mapping[str, Any] | None = None,
    ) -> CommandResult:
        """Same version installed: write the new settings and run enable."""
        self.write_settings(handler_dir, seq, public, protected)
        result = self.run_command(handler_dir, "enable", seq)
        if result.exit_code == 0:
            self.states[handler_dir] = "Enabled"
        return result

    def disable(self, handler_dir: Path, seq: int) -> CommandResult | None:
        """Requested disabled: disable if Enabled (then Installed)."""
        if self.states.get(handler_dir) != "Enabled":
            return None
        result = self._require(self.run_command(handler_dir, "disable", seq))
        self.states[handler_dir] = "Installed"
        return result

    def uninstall(self, handler_dir: Path, seq: int) -> None:
        """Requested uninstall: disable if Enabled, uninstall, delete the handler dir."""
        self.disable(handler_dir, seq)
        self._require(self.run_command(handler_dir, "uninstall", seq))
        shutil.rmtree(handler_dir)
        del self.states[handler_dir]

    def upgrade(
        self,
        old_dir: Path,
        new_package: Path,
        seq: int,
        public: Mapping[str, Any] | None = None,
        protected: Mapping[str, Any] | None = None,
    ) -> Path:
        """Replace the installed `old_dir` by `new_package`, in the protocol's upgrade order."""
        old_version = old_dir.name.rpartition("-")[2]
        # 1. the new version: extract, HandlerEnvironment, settings (NotInstalled)
        new_dir = self.extract(new_package)
        new_version = new_dir.name.rpartition("-")[2]
        self.write_settings(new_dir, seq, public, protected)
        continue_on_failure = read_manifest(new_dir).continue_on_update_failure
        # 2. old.disable, only if old is Enabled
        disable_code = NOT_RUN
        if self.states.get(old_dir) == "Enabled":
            result = self.run_command(old_dir, "disable", seq)
            disable_code = str(result.exit_code)
            if not continue_on_failure:
                self._require(result)
            self.states[old_dir] = "Installed"
        # 3. carry the extension's own state over
        if (old_dir / "mrseq").exists():
            shutil.copy2(old_dir / "mrseq", new_dir / "mrseq")
        for status in sorted((old_dir / "status").glob("*")):
            if status.is_file():
                shutil.copy2(status, new_dir / "status" / status.name)
        # 4. update, run by the higher of the two versions
        update_dir = old_dir if parse_version(old_version) > parse_version(new_version) else new_dir
        update_env = {
            "VERSION": new_version,
            "AZURE_GUEST_AGENT_UPDATING_FROM_VERSION": old_version,
            "AZURE_GUEST_AGENT_DISABLE_CMD_EXIT_CODE": disable_code,
        }
        result = self.run_command(update_dir, "update", seq, update_env)
        if result.exit_code != 0:
            self.states[new_dir] = "FailedUpgrade"
            self._require(result)
        # 5. old.uninstall, then delete the old handler dir
        result = self.run_command(old_dir, "uninstall", seq)
        if not continue_on_failure:
            self._require(result)
        uninstall_code = {"AZURE_GUEST_AGENT_UNINSTALL_CMD_EXIT_CODE": str(result.exit_code)}
        shutil.rmtree(old_dir)
        del self.states[old_dir]
        # 6. new.install unless UpdateWithoutInstall
        if read_manifest(new_dir).update_with_install:
            self._require(self.run_command(new_dir, "install", seq, uninstall_code))
        self.states[new_dir] = "Installed"
        # 7. new.enable
        self._require(self.run_command(new_dir, "enable", seq, uninstall_code))
        self.states[new_dir] = "Enabled"
        return new_dir


def read_status(handler_dir: Path, seq: int) -> dict[str, Any] | None:
    """Element 0 of `status/<seq>.status`, or None when the extension wrote none."""
    path = handler_dir / "status" / f"{seq}.status"
    if not path.exists():
        return None
    document = json.loads(path.read_text())
    if not isinstance(document, list) or not document or not isinstance(document[0], dict):
        raise AgentError(f"1012: {path.name} is not a status array")
    element: dict[str, Any] = document[0]
    return element
