"""Run Greeter in process under the runtime: good settings, then two kinds of bad ones."""

import json

import anyio
from exthandler_sdk import load_handler

from exthandler import RuntimeConfig, open_runtime, parse_goal_state

ATTEMPTS: list[dict[str, object]] = [
    {"name": "Ada", "times": 2},
    {"name": "Ada", "times": 0},
    {"times": "twice"},
]


def goal(settings: dict[str, object]) -> bytes:
    extension = {
        "name": "greeter",
        "publisher": "Contoso.Samples",
        "type": "Greeter",
        "typeHandlerVersion": "1.0",
        "settings": settings,
        "protectedSettings": {"passphrase": "correct horse"},
    }
    return json.dumps({"extensions": [extension]}).encode()


async def main() -> None:
    greeter = load_handler("hello_sdk:Greeter")
    config = RuntimeConfig(state_dir="state-inprocess", handlers=[greeter])
    async with open_runtime(config) as runtime:
        for settings in ATTEMPTS:
            view = await runtime.apply(parse_goal_state(goal(settings)))
            extension = view.extensions[0]
            status = extension.statuses[0]
            print(extension.handler_state, extension.sequence_number, status.code)
            print("  " + status.message.replace("\n", "\n  "))
            for substatus in extension.substatuses:
                print("  " + substatus.code, substatus.message)


anyio.run(main)
