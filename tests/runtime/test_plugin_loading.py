"""How plugins load: the entry points are read without importlib.metadata, and a handler
class a plugin names is imported only when a goal state or the state dir names its handler."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest
from exthandler_sdk import hookimpl

from exthandler import GoalState, InstanceView, RuntimeConfig, open_runtime, parse_goal_state
from exthandler._plugins import entry_points, load_object
from exthandler._testing._killed import plugin_path
from tests.runtime.sdk_handlers import Counter

ROOT = Path(__file__).resolve().parents[2]
BUILTIN_PARTS = ("customscript", "runcommand", "vmaccess", "apphealth")


def counter_goal() -> GoalState:
    return parse_goal_state(json.dumps(counter_document()))


def counter_document() -> dict[str, Any]:
    extension = {
        "name": "counter",
        "publisher": "Contoso.Testing",
        "type": "Counter",
        "typeHandlerVersion": "1.0",
        "settings": {"word": "tick", "times": 1},
        "protectedSettings": {"token": "open-sesame"},
    }
    return {"extensions": [extension]}


def customscript_goal() -> dict[str, Any]:
    extension = {
        "name": "script",
        "publisher": "Microsoft.Azure.Extensions",
        "type": "CustomScript",
        "typeHandlerVersion": "2.1",
        "settings": {"commandToExecute": "true"},
    }
    return {"extensions": [extension]}


def imported_after(script: str) -> set[str]:
    """The modules a fresh interpreter holds after running `script` (entry points loaded
    as an installed runtime loads them)."""
    script += "\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))\n"
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, check=False
    )
    assert done.returncode == 0, done.stderr
    return set(json.loads(done.stdout.splitlines()[-1]))


def builtin_modules(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if m.startswith("exthandler_plugins."))


def test_the_scan_finds_what_importlib_metadata_finds(tmp_path: Path) -> None:
    import importlib.metadata  # here only: another test checks the runtime never imports it

    # A distribution of its own on the path, as a plugin installed elsewhere would be.
    extra = plugin_path(tmp_path / "site")
    sys.path.insert(0, str(extra))
    try:
        found = entry_points("exthandler")
        expected = importlib.metadata.entry_points(group="exthandler")
    finally:
        sys.path.remove(str(extra))
    assert found is not None
    assert sorted(found) == sorted((ep.name, ep.value) for ep in expected)
    assert "builtin" in dict(found)
    assert len(found) == 2  # the built-in plugins and the one under tmp_path


def test_an_entry_point_names_a_module_or_an_attribute_in_it() -> None:
    import exthandler_plugins

    assert load_object("exthandler_plugins") is exthandler_plugins
    assert load_object("tests.runtime.sdk_handlers:Counter [extra]") is Counter
    with pytest.raises(AttributeError):
        load_object("tests.runtime.sdk_handlers:Nothing")


def test_a_pass_without_builtin_handlers_imports_none_of_them(tmp_path: Path) -> None:
    # The runtime opens with the entry points loaded, as the command line does; the goal
    # names a handler of its own only.
    script = f"""
import anyio, json
from tests.runtime.sdk_handlers import Counter
from exthandler import RuntimeConfig, open_runtime, parse_goal_state
goal = parse_goal_state(json.dumps({counter_document()!r}))
async def main():
    config = RuntimeConfig(state_dir={str(tmp_path / "state")!r}, handlers=[Counter])
    async with open_runtime(config) as runtime:
        view = await runtime.apply(goal)
    assert view.extensions[0].statuses[0].code == "ProvisioningState/succeeded", view
anyio.run(main)
"""
    modules = imported_after(script)
    assert "exthandler_plugins" in modules  # the plugin itself was registered ...
    assert builtin_modules(modules) == []  # ... but none of its handlers imported
    assert "importlib.metadata" not in modules  # and the entry points read without it


def test_a_goal_naming_a_builtin_handler_imports_that_one_only(tmp_path: Path) -> None:
    script = f"""
import anyio, json
from exthandler import RuntimeConfig, open_runtime, parse_goal_state
goal = parse_goal_state(json.dumps({customscript_goal()!r}))
async def main():
    async with open_runtime(RuntimeConfig(state_dir={str(tmp_path / "state")!r})) as runtime:
        plan = await runtime.plan(goal)
    assert [step.kind for step in plan.steps][:1] == ["fetch"], plan
anyio.run(main)
"""
    modules = imported_after(script)
    parts = {m.split(".")[1] for m in builtin_modules(modules)} & set(BUILTIN_PARTS)
    assert parts == {"customscript"}


class NamedPlugin:
    """A plugin naming its handler classes instead of importing them."""

    def __init__(self, paths: dict[str, Any]) -> None:
        self.paths = paths

    @hookimpl
    def exthandler_handler_paths(self) -> dict[str, Any]:
        return self.paths


def apply_with(state: Path, plugin: NamedPlugin) -> InstanceView:
    config = RuntimeConfig(state_dir=state, plugins=[plugin], load_entry_points=False)

    async def main() -> InstanceView:
        async with open_runtime(config) as runtime:
            return await runtime.apply(counter_goal())

    return anyio.run(main)


def test_a_named_class_runs_as_a_registered_one(tmp_path: Path) -> None:
    plugin = NamedPlugin({"Contoso.Testing.Counter": ["tests.runtime.sdk_handlers:Counter"]})
    view = apply_with(tmp_path / "state", plugin)
    assert view.extensions[0].statuses[0].code == "ProvisioningState/succeeded"
    assert (tmp_path / "state" / "Contoso.Testing.Counter-1.0.0" / "status" / "0.status").exists()


@pytest.mark.parametrize(
    "path",
    [
        "tests.runtime.no_such_module:Counter",
        "tests.runtime.sdk_handlers:NoSuchClass",
        "tests.runtime.sdk_handlers:Sleeper",  # a class of another handler
    ],
)
def test_a_named_class_that_cannot_be_loaded_costs_its_handler_only(
    tmp_path: Path, path: str
) -> None:
    view = apply_with(tmp_path / "state", NamedPlugin({"Contoso.Testing.Counter": path}))
    assert view.extensions[0].statuses[0].code == "ProvisioningState/failed/1004"
    log = (tmp_path / "state" / "exthandler.log").read_text()
    assert f"Contoso.Testing.Counter: in-process class {path}:" in log
