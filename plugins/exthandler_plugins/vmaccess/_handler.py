"""`Microsoft.OSTCExtensions.VMAccessForLinux`: get back into a machine.

Enable resolves the protected settings (`_settings`), then, in this order: removes
`remove_user`; creates `username` (`useradd`) or checks that it is a regular account,
sets its expiry (`usermod`), its password (`chpasswd`, through stdin) and adds its SSH key
(`_keys`), and grants it sudo (`_sudoers`); resets sshd's configuration and reloads sshd
(`_sshd`). The status message lists what changed, in that order ("user alice created,
password set, key added, sudo granted"); it never holds a password or a key. A step that
fails ends the enable with an error that names the steps done before it.

Disable and uninstall change nothing: the accounts and keys stay, as with the reference
extension.
"""

from __future__ import annotations

import pwd

from exthandler_sdk import Context, ErrorCode, Handler, HandlerError

from ._keys import add_key
from ._settings import PROTECTED, Plan, VMAccessProtectedSettings, VMAccessSettings, resolve
from ._sshd import reload_sshd, reset_config
from ._sudoers import DROP_IN, includes_drop_ins, update_grant
from ._system import login_defs_int, lookup_user, run_tool, shadow_password, tool

__all__ = ["VMAccess"]

Ctx = Context[VMAccessSettings, VMAccessProtectedSettings]
UID_MIN_DEFAULT = 1000
_LOCKED = ("!", "*")


class VMAccess(Handler[VMAccessSettings, VMAccessProtectedSettings]):
    """Creates or updates a user (password, SSH key, expiry, sudo), removes one, and
    resets sshd's configuration."""

    name = "Microsoft.OSTCExtensions.VMAccessForLinux"
    version = "1.5.0"

    async def enable(self, ctx: Ctx) -> None:
        plan = resolve(ctx.settings, ctx.protected)
        # A system account named anywhere stops the enable before anything changes.
        for key, name in (("remove_user", plan.remove_user), ("username", plan.username)):
            entry = lookup_user(name) if name is not None else None
            if name is not None and entry is not None:
                _regular(name, key, entry)
        done: list[str] = []
        try:
            if plan.remove_user is not None:
                await _remove_user(ctx, plan.remove_user, done)
            if plan.username is not None:
                await _update_user(ctx, plan, plan.username, done)
            if plan.reset_ssh:
                await _reset_ssh(ctx, done)
        except HandlerError as exc:
            if done:
                raise HandlerError(exc.code, f"{', '.join(done)}; then: {exc.message}") from None
            raise
        await ctx.status.success(", ".join(done))


def _regular(name: str, key: str, entry: pwd.struct_passwd) -> None:
    """Refuse a system account (uid below UID_MIN, root included): error 53."""
    uid_min = login_defs_int("UID_MIN", UID_MIN_DEFAULT)
    if entry.pw_uid < uid_min:
        raise HandlerError(
            int(ErrorCode.CONFIGURATION),
            f"{PROTECTED}.{key}: {name} is a system account (uid {entry.pw_uid}, below "
            f"UID_MIN {uid_min}); VM Access changes regular users only",
        )


async def _remove_user(ctx: Ctx, name: str, done: list[str]) -> None:
    entry = lookup_user(name)
    if entry is None:
        done.append(f"user {name} not found")
    else:
        _regular(name, "remove_user", entry)
        await run_tool("userdel", ["--remove", name])
        ctx.log.info("removed user %s and its home directory", name)
        done.append(f"user {name} removed")
    if await update_grant(name, False):
        done.append(f"sudo of {name} revoked")


async def _update_user(ctx: Ctx, plan: Plan, name: str, done: list[str]) -> None:
    entry = lookup_user(name)
    expiry = plan.expiration.isoformat() if plan.expiration is not None else None
    if entry is None:
        if plan.password is None and plan.key is None:
            raise HandlerError(
                int(ErrorCode.CONFIGURATION),
                f"{PROTECTED}.username: there is no user {name}; give password or ssh_key "
                "to create it",
            )
        args = ["--create-home"]
        if tool("bash") is not None:
            args += ["--shell", "/bin/bash"]
        if expiry is not None:
            args += ["--expiredate", expiry]
        await run_tool("useradd", [*args, name])
        ctx.log.info("created user %s", name)
        done.append(f"user {name} created")
        entry = lookup_user(name)
        if entry is None:
            raise HandlerError(1, f"useradd reported success but there is no user {name}")
    else:
        _regular(name, "username", entry)
        if expiry is not None:
            await run_tool("usermod", ["--expiredate", expiry, name])
    if expiry is not None:
        done.append(f"expiry set to {expiry}")
    if plan.password is not None:
        line = f"{name}:{plan.password}\n".encode()
        await run_tool("chpasswd", [], stdin=line, secret=plan.password)
        ctx.log.info("set the password of %s", name)
        done.append("password set")
    if plan.key is not None:
        added = add_key(entry.pw_dir, entry.pw_uid, entry.pw_gid, plan.key)
        ctx.log.info(
            "%s %s key for %s", "added a" if added else "already had the", plan.key.kind, name
        )
        done.append("key added" if added else "key already present")
    if plan.password is not None or plan.key is not None:
        nopasswd = not _has_password(name)
        if await update_grant(name, True, nopasswd=nopasswd):
            done.append("sudo granted" + (" without a password" if nopasswd else ""))
        if includes_drop_ins() is False:
            ctx.log.warning("/etc/sudoers does not include /etc/sudoers.d: %s is not read", DROP_IN)


def _has_password(name: str) -> bool:
    """Whether `name` has a usable password (one sudo can ask for)."""
    field = shadow_password(name)
    return field is not None and field != "" and not field.startswith(_LOCKED)


async def _reset_ssh(ctx: Ctx, done: list[str]) -> None:
    changed, backup = await reset_config()
    if not changed:
        done.append("sshd_config already the default")
        return
    ctx.log.info("reset sshd_config (previous one: %s)", backup or "none")
    done.append(
        f"sshd_config reset (previous saved as {backup})" if backup else "sshd_config written"
    )
    reloaded = await reload_sshd()
    done.append(reloaded if reloaded is not None else "sshd not running")
