"""Run Command's settings: the managed run command resource's `properties`.

The SDK structures `settings` into `RunCommandSettings` and `protectedSettings` into
`RunCommandProtectedSettings` (wrong types are error 53 by path); `resolve()` then checks
what types cannot say, gathering every problem into one error 53 whose lines are
`settings.<path>: reason` or `protectedSettings.<path>: reason`, and returns the `Plan`
the rest of the handler reads.
"""

from __future__ import annotations

import pwd
import re
import urllib.parse
from typing import Any

import attrs
from exthandler_sdk import ErrorCode, HandlerError

from .._shared.download import FileSource, file_source
from .._shared.redact import redact_url

__all__ = [
    "DEFAULT_TIMEOUT",
    "BlobTarget",
    "Parameter",
    "Plan",
    "RunCommandProtectedSettings",
    "RunCommandSettings",
    "ScriptSource",
    "resolve",
]

DEFAULT_TIMEOUT = 90 * 60.0
"""Seconds a script may run when `timeoutInSeconds` is absent or 0."""
SCRIPT_NAME = "script.sh"
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_PUBLIC = "settings"
_PROTECTED = "protectedSettings"


@attrs.frozen
class ScriptSource:
    """`source`: the script inline or where to download it from."""

    script: str | None = None
    """The script itself (plain text)."""
    scriptUri: str | None = None
    """An http, https or file URL to download the script from."""
    commandId: str | None = None
    """The platform's built-in commands: refused (not shipped with this handler)."""


@attrs.frozen
class Parameter:
    """One entry of `parameters`/`protectedParameters`: named, it becomes an environment
    variable of the script; unnamed, a positional argument."""

    name: str | None = None
    """An environment variable name; absent or empty: a positional argument."""
    value: str = attrs.field(default="", repr=False)


@attrs.frozen
class RunCommandSettings:
    """Public settings."""

    source: ScriptSource | None = None
    parameters: list[Parameter] | None = None
    """Named: environment variables of the script; unnamed: its positional arguments."""
    timeoutInSeconds: int | None = None
    """Kill the script after this many seconds (absent or 0: 90 minutes)."""
    runAsUser: str | None = None
    """Run the script as this user of the machine."""
    outputBlobUri: str | None = None
    """An Azure blob URL the script's stdout is uploaded to."""
    errorBlobUri: str | None = None
    """An Azure blob URL the script's stderr is uploaded to."""
    asyncExecution: bool = False
    """Report at once and run the script in a background worker."""
    treatFailureAsDeploymentFailure: bool = False
    """A non-zero exit fails the extension (else it succeeds, reporting the code)."""
    scriptUriManagedIdentity: dict[str, Any] | None = None
    outputBlobManagedIdentity: dict[str, Any] | None = None
    errorBlobManagedIdentity: dict[str, Any] | None = None


@attrs.frozen
class RunCommandProtectedSettings:
    """Protected settings (secrets: encrypted in transit, never in a message or argv)."""

    protectedParameters: list[Parameter] | None = attrs.field(default=None, repr=False)
    """As `parameters`, secret: never in a message, a log or a process's arguments."""
    runAsPassword: str | None = attrs.field(default=None, repr=False)
    """Accepted, not used: the handler runs as root and switches user without it."""
    sourceSASToken: str | None = attrs.field(default=None, repr=False)
    """The SAS token appended to `source.scriptUri`."""
    outputBlobSASToken: str | None = attrs.field(default=None, repr=False)
    """The SAS token appended to `outputBlobUri`."""
    errorBlobSASToken: str | None = attrs.field(default=None, repr=False)
    """The SAS token appended to `errorBlobUri`."""


@attrs.frozen(kw_only=True)
class BlobTarget:
    """Where a stream of the script's output is uploaded (the SAS token appended)."""

    url: str = attrs.field(repr=False)

    @property
    def redacted(self) -> str:
        return redact_url(self.url)


@attrs.frozen(kw_only=True)
class Plan:
    """What enable does, once the settings are checked.

    `script` holds an inline script; `download` names the script to fetch instead (saved
    as `script.sh`). `env` are the named parameters, `args` the unnamed ones in order
    (public first, then protected); `protected_args` says some of them are secret.
    """

    script: bytes | None = attrs.field(default=None, repr=False)
    download: FileSource | None = attrs.field(default=None, repr=False)
    env: dict[str, str] = attrs.field(factory=dict, repr=False)
    args: tuple[str, ...] = attrs.field(default=(), repr=False)
    timeout: float = DEFAULT_TIMEOUT
    run_as: pwd.struct_passwd | None = None
    output_blob: BlobTarget | None = None
    error_blob: BlobTarget | None = None
    async_execution: bool = False
    fail_on_error: bool = False


def _text(value: str | None) -> str | None:
    """A string setting, None when absent or blank (portals send "" for unset fields)."""
    return value if value is not None and value.strip() else None


def with_sas(url: str, token: str | None) -> str:
    """`url` with the SAS `token` (with or without its leading `?`) as its query."""
    token = (token or "").strip().lstrip("?")
    if not token:
        return url
    parts = urllib.parse.urlsplit(url)
    query = f"{parts.query}&{token}" if parts.query else token
    return urllib.parse.urlunsplit(parts._replace(query=query))


def _source(
    public: RunCommandSettings, protected: RunCommandProtectedSettings, errors: list[str]
) -> tuple[bytes | None, FileSource | None]:
    source = public.source or ScriptSource()
    where = f"{_PUBLIC}.source"
    if source.commandId is not None:
        errors.append(
            f"{where}.commandId: not supported here: the platform's built-in commands are not "
            "shipped with this handler; give source.script or source.scriptUri"
        )
    script, uri = source.script, _text(source.scriptUri)
    if script is not None and not script.strip():
        errors.append(f"{where}.script: must not be empty")
        script = None
    if source.script is None and uri is None:
        if source.commandId is None:
            errors.append(f"{where}: give script or scriptUri")
        return None, None
    if source.script is not None and uri is not None:
        errors.append(f"{where}: give one of script and scriptUri, not both")
        return None, None
    if uri is None:
        if _text(protected.sourceSASToken) is not None:
            errors.append(f"{_PROTECTED}.sourceSASToken: given without {where}.scriptUri")
        return (script.encode("utf-8") if script is not None else None), None
    if public.scriptUriManagedIdentity is not None:
        errors.append(_managed_identity(f"{_PUBLIC}.scriptUriManagedIdentity", "sourceSASToken"))
    found = file_source(f"{where}.scriptUri", with_sas(uri, protected.sourceSASToken), errors)
    return None, None if found is None else attrs.evolve(found, name=SCRIPT_NAME)


def _managed_identity(where: str, instead: str) -> str:
    return (
        f"{where}: not supported here: this runtime has no instance metadata service to "
        f"obtain a token from; use a SAS URL or {instead} instead"
    )


def _parameters(
    public: RunCommandSettings, protected: RunCommandProtectedSettings, errors: list[str]
) -> tuple[dict[str, str], tuple[str, ...]]:
    env: dict[str, str] = {}
    seen: dict[str, str] = {}
    args: list[str] = []
    for where, entries in (
        (f"{_PUBLIC}.parameters", public.parameters),
        (f"{_PROTECTED}.protectedParameters", protected.protectedParameters),
    ):
        for index, parameter in enumerate(entries or ()):
            here = f"{where}[{index}]"
            if "\0" in parameter.value:
                errors.append(f"{here}.value: must not contain a NUL character")
                continue
            name = _text(parameter.name)
            if name is None:
                args.append(parameter.value)
                continue
            if not _ENV_NAME.fullmatch(name):
                errors.append(
                    f"{here}.name: {name[:64]!r} is not an environment variable name "
                    "(letters, digits and '_', not starting with a digit)"
                )
                continue
            if name in seen:
                errors.append(f"{here}.name: {name!r} is also given by {seen[name]}")
                continue
            seen[name] = here
            env[name] = parameter.value
    return env, tuple(args)


def _blob(
    uri: str | None, token: str | None, identity: Any, where: str, token_name: str
) -> tuple[BlobTarget | None, list[str]]:
    errors: list[str] = []
    uri = _text(uri)
    if identity is not None:
        errors.append(_managed_identity(f"{_PUBLIC}.{where}ManagedIdentity", token_name))
    if uri is None:
        if _text(token) is not None:
            errors.append(f"{_PROTECTED}.{token_name}: given without {_PUBLIC}.{where}Uri")
        return None, errors
    try:
        parts = urllib.parse.urlsplit(uri.strip())
    except ValueError:
        parts = None
    if parts is None or parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        errors.append(f"{_PUBLIC}.{where}Uri: not an http(s) blob URL ({redact_url(uri)})")
        return None, errors
    return BlobTarget(url=with_sas(uri.strip(), token)), errors


def _user(name: str | None, errors: list[str]) -> pwd.struct_passwd | None:
    name = _text(name)
    if name is None:
        return None
    try:
        return pwd.getpwnam(name)
    except KeyError:
        errors.append(f"{_PUBLIC}.runAsUser: no user {name[:64]!r} on this machine")
    return None


def resolve(
    public: RunCommandSettings | None, protected: RunCommandProtectedSettings | None
) -> Plan:
    """Check the settings; `HandlerError(53)` listing every problem otherwise."""
    public = public or RunCommandSettings()
    protected = protected or RunCommandProtectedSettings()
    errors: list[str] = []
    script, download = _source(public, protected, errors)
    env, args = _parameters(public, protected, errors)
    timeout = DEFAULT_TIMEOUT
    if public.timeoutInSeconds is not None:
        if public.timeoutInSeconds < 0:
            errors.append(f"{_PUBLIC}.timeoutInSeconds: must not be negative")
        elif public.timeoutInSeconds > 0:
            timeout = float(public.timeoutInSeconds)
    run_as = _user(public.runAsUser, errors)
    output_blob, problems = _blob(
        public.outputBlobUri,
        protected.outputBlobSASToken,
        public.outputBlobManagedIdentity,
        "outputBlob",
        "outputBlobSASToken",
    )
    errors += problems
    error_blob, problems = _blob(
        public.errorBlobUri,
        protected.errorBlobSASToken,
        public.errorBlobManagedIdentity,
        "errorBlob",
        "errorBlobSASToken",
    )
    errors += problems
    if errors:
        text = "invalid settings:\n" + "\n".join(errors)
        raise HandlerError(int(ErrorCode.CONFIGURATION), text)
    return Plan(
        script=script,
        download=download,
        env=env,
        args=args,
        timeout=timeout,
        run_as=run_as,
        output_blob=output_blob,
        error_blob=error_blob,
        async_execution=public.asyncExecution,
        fail_on_error=public.treatFailureAsDeploymentFailure,
    )
