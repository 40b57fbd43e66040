"""Which handler runs when: removals first, dependencies waited for, slots shared.

Every handler of a pass is driven by its own task. Handlers that go away entirely run
first, all together; then the others start, each after the handlers its extensions depend
on (`dependsOn`) are done and have succeeded. A handler takes one of `concurrency` slots
for its first step and keeps it until its last is recorded, so that at most that many
steps are in flight and one handler's steps run back to back.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence

import anyio

from .._model import ExtensionGoal, HandlerName
from .._plan.planner import HandlerTarget
from .._values import Value

__all__ = ["Scheduler", "Settled", "Slot"]


class Slot:
    """A handler's claim on one of the pass's slots: taken at its first step, kept until
    `release` (idempotent both ways)."""

    _slots: anyio.Semaphore
    held: bool

    def __init__(self, slots: anyio.Semaphore) -> None:
        self._slots = slots
        self.held = False

    async def take(self) -> None:
        if not self.held:
            await self._slots.acquire()
            self.held = True

    def release(self) -> None:
        if self.held:
            self.held = False
            self._slots.release()


# Drive one handler to its target within its slot.
Drive = Callable[[HandlerTarget, Slot], Awaitable[None]]
# Wait for a dependency (an extension or handler name) to settle; why it failed, or None.
Blocker = Callable[[str], Awaitable[str | None]]
# Tell that a handler's extensions were skipped because of a failed dependency.
Skip = Callable[[HandlerTarget, str, str], None]
# Whether a handler has nothing to do (then it gets no task: see `Scheduler.run`).
Settled = Callable[[HandlerTarget], bool]


class Scheduler(Value, kw_only=False):
    """Starts one task per handler, in the order and with the limits described above."""

    concurrency: int

    async def run(
        self,
        targets: Mapping[HandlerName, HandlerTarget],
        extensions: Mapping[HandlerName, Sequence[ExtensionGoal]],
        *,
        drive: Drive,
        blocker: Blocker,
        skip: Skip,
        settled: Settled | None = None,
    ) -> None:
        """Drive every target; one that depends on nothing and is `settled` already is
        done at once, without a task (most handlers of a re-apply: a task each would
        cost more than all their other work)."""
        slots = anyio.Semaphore(max(1, self.concurrency), fast_acquire=True)
        done = {handler: anyio.Event() for handler in targets}

        async def one(target: HandlerTarget, deps: Sequence[tuple[str, HandlerName]]) -> None:
            try:
                for _, owner in deps:
                    if owner in done:
                        await done[owner].wait()
                for name, _ in deps:
                    failure = await blocker(name)
                    if failure is not None:
                        skip(target, name, failure)
                        return
                slot = Slot(slots)
                try:
                    await drive(target, slot)
                finally:
                    slot.release()
            finally:
                done[target.handler].set()

        async with anyio.create_task_group() as removals:
            for target in targets.values():
                if target.removes_handler:
                    removals.start_soon(one, target, ())
        owners = _owners(extensions)
        async with anyio.create_task_group() as installs:
            for handler, target in targets.items():
                if target.removes_handler:
                    continue
                deps = _dependencies(handler, extensions, owners)
                if not deps and settled is not None and settled(target):
                    done[handler].set()
                    continue
                installs.start_soon(one, target, deps)


def _owners(extensions: Mapping[HandlerName, Sequence[ExtensionGoal]]) -> dict[str, HandlerName]:
    """Which handler each extension name (and each handler name) belongs to."""
    owners: dict[str, HandlerName] = {}
    for owner, exts in extensions.items():
        owners[owner.key] = owner
        for ext in exts:
            owners[ext.name.lower()] = owner
    return owners


def _dependencies(
    handler: HandlerName,
    extensions: Mapping[HandlerName, Sequence[ExtensionGoal]],
    owners: Mapping[str, HandlerName],
) -> list[tuple[str, HandlerName]]:
    """The (name, owning handler) pairs `handler`'s extensions depend on, but itself."""
    deps: list[tuple[str, HandlerName]] = []
    for ext in extensions.get(handler, ()):
        for name in ext.depends_on:
            found = owners.get(name.lower())
            if found is not None and found != handler:
                deps.append((name, found))
    return deps
