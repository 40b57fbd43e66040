"""`runAsUser` with a throwaway user that exists only in a private mount namespace: copies
of /etc/passwd and /etc/group are bind-mounted over the real ones there, so this
machine's own users are never touched."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UID, GID, EXTRA_GID = 54321, 54322, 54323

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("unshare") is None or shutil.which("mount") is None,
    reason="needs root, unshare and mount",
)

RUN = """
import json, sys
import anyio
from exthandler import RuntimeConfig, open_runtime, parse_goal_state
from exthandler_plugins.runcommand import RunCommand

async def main():
    config = RuntimeConfig(state_dir=sys.argv[1], load_entry_points=False, handlers=[RunCommand])
    async with open_runtime(config) as runtime:
        view = await runtime.apply(parse_goal_state(sys.argv[2]))
    print(json.dumps(view.to_json()))

anyio.run(main)
"""


def test_the_script_gets_the_users_ids_groups_and_home(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    os.chown(home, UID, GID)
    passwd, group = tmp_path / "passwd", tmp_path / "group"
    passwd.write_text(
        Path("/etc/passwd").read_text() + f"rcthrowaway:x:{UID}:{GID}::{home}:/bin/sh\n"
    )
    group.write_text(
        Path("/etc/group").read_text()
        + f"rcthrowaway:x:{GID}:\nrcextra:x:{EXTRA_GID}:rcthrowaway\n"
    )
    document = json.dumps(
        {
            "extensions": [
                {
                    "name": "asuser",
                    "publisher": "Microsoft.CPlat.Core",
                    "type": "RunCommandHandlerLinux",
                    "typeHandlerVersion": "1.3",
                    "settings": {
                        "source": {"script": 'id -u; id -g; id -G; echo "$HOME $USER"'},
                        "runAsUser": "rcthrowaway",
                    },
                }
            ]
        }
    )
    shell = (
        f"mount --bind {passwd} /etc/passwd && mount --bind {group} /etc/group && "
        f'exec "$0" -c "$1" "$2" "$3"'
    )
    done = subprocess.run(
        ["unshare", "-m", "--propagation", "private", "sh", "-c", shell, sys.executable, RUN,
         str(tmp_path / "state"), document],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    view = json.loads(done.stdout)
    status = view["extensions"][0]["statuses"][0]
    assert status["code"] == "ProvisioningState/succeeded", status
    output = json.loads(status["message"])["output"].splitlines()
    assert output[:2] == [str(UID), str(GID)]
    assert sorted(output[2].split()) == sorted([str(GID), str(EXTRA_GID)])
    assert output[3] == f"{home} rcthrowaway"
    assert "rcthrowaway" not in Path("/etc/passwd").read_text()  # the machine's own file
