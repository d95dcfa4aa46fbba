"""Which widgets bind a key."""

from __future__ import annotations

from textual.dom import DOMNode


def focus_chain_binds(screen: DOMNode, node: DOMNode | None, key: str) -> bool:
    """Whether `node` or a container of it below `screen` binds `key` (a dropdown's Esc).

    Reads each node's merged bindings, `DOMNode._bindings`: the public
    `Screen.active_bindings` asks every binding's `check_action`, which is
    where this question is asked.
    """
    while node is not None and node is not screen:
        if node._bindings.key_to_bindings.get(key):
            return True
        node = node.parent
    return False
