"""Run as a subprocess by test_store: streams a reply slowly until killed."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from chatui.providers.base import TextDelta
from chatui.store import Store
from chatui.turn import QuietObserver, Turn
from tests.support.scripted import ScriptedProvider


async def main(db: Path) -> None:
    store = Store(db)
    provider = ScriptedProvider([TextDelta(f"word{i} ") for i in range(100_000)], pace=0.005)
    conversation = store.create_conversation("crash test")

    turn = Turn(
        conversation=conversation,
        prompt="tell me a long story",
        provider=provider,
        store=store,
        observer=QuietObserver(),
    )
    await turn.run()


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1])))
