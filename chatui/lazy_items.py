"""Items of a stored conversation that are read from the store when first used.

Opening a conversation of thousands of items must not parse them all: the
screen shows the last few. The store makes a stand-in for each item it does
not read at once (`LazyItems.stand_in`): an instance of a subclass of the
item's own class that holds only its `id` and `kind`, and on which every other
field is a property that reads the item first. So no code can see a
half-read item: the first field it reads of any stand-in reads all the
stand-ins of the conversation, in one query, and each becomes, in place, an
instance of its item's own class with every field (the same object, so the
lists, dicts and widgets holding it hold the read item).

What needs no reading answers at once: `isinstance`, `id`, `kind`, and `==`
with an item of another id (never equal). Walking a path to find its prompts
or where an item is on it reads nothing.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import fields
from typing import Any

from chatui.messages import Item, ModelResponse, ToolResult, UserPrompt, item_from_dict

Rows = Callable[[list[str]], Iterable[tuple[str, str]]]
"""Given item ids, the (id, JSON data) of those stored."""

_ITEMS = (UserPrompt, ModelResponse, ToolResult)
_KNOWN = ("id", "kind")  # The fields a stand-in holds.
_LAZY = "_lazy"  # Where a stand-in keeps its `LazyItems` until it is read.


class LazyItems:
    """The stand-ins of one loaded conversation, and how to read them (`rows`)."""

    def __init__(self, rows: Rows) -> None:
        self._rows = rows
        self._unread: dict[str, Item] = {}

    def stand_in(self, kind: str, item_id: str) -> Item:
        """A stand-in for the stored item `item_id` of `kind`, read on first use."""
        cls = _STAND_INS.get(kind)
        if cls is None:
            raise ValueError(f"unknown item kind {kind!r}")
        item: Item = object.__new__(cls)
        item.__dict__.update({"id": item_id, "kind": kind, _LAZY: self})
        self._unread[item_id] = item
        return item

    def read(self, ids: Iterable[str] | None = None) -> None:
        """Read the stand-ins among `ids` (None: all of them) now, in one query.

        Raises LookupError if one is no longer stored (its conversation was
        deleted behind this chatui's back): it stays a stand-in.
        """
        unread = self._unread
        wanted = list(unread) if ids is None else [i for i in ids if i in unread]
        if not wanted:
            return
        for item_id, data in self._rows(wanted):
            if (stand_in := unread.pop(item_id, None)) is not None:
                _become(stand_in, item_from_dict(json.loads(data)))
        if gone := [i for i in wanted if i in unread]:
            raise LookupError(f"{len(gone)} items of the conversation are no longer stored")


def _become(stand_in: Item, item: Item) -> None:
    """Turn `stand_in` into `item`'s class with `item`'s fields, in place."""
    known = stand_in.__dict__
    del known[_LAZY]
    read = dict(item.__dict__)
    read.update(known)  # Its id (the same, unless something set another since).
    known.clear()
    known.update(read)
    stand_in.__class__ = type(item)


def _read(stand_in: Any) -> None:
    lazy: LazyItems = stand_in.__dict__[_LAZY]
    lazy.read()


def _field(name: str) -> property:
    """A property that reads the stand-in (it is then its item's class) and goes on to `name`."""

    def get(self: Any) -> Any:
        _read(self)
        return getattr(self, name)

    def put(self: Any, value: Any) -> None:
        _read(self)
        setattr(self, name, value)

    return property(get, put)


def _eq(self: Any, other: object) -> Any:
    """Items of different ids are never equal: known without reading either."""
    if not isinstance(other, _ITEMS):
        return NotImplemented
    if other.id != self.id:
        return False
    _read(self)
    return self == other


def _repr(self: Any) -> str:
    _read(self)
    return repr(self)


def _reduce_ex(self: Any, protocol: Any) -> Any:
    _read(self)  # A copy, a pickle: of the item, read.
    return self.__reduce_ex__(protocol)


def _stand_in_class(cls: type[Item]) -> type[Item]:
    namespace: dict[str, Any] = {
        f.name: _field(f.name) for f in fields(cls) if f.name not in _KNOWN
    }
    namespace.update(__eq__=_eq, __hash__=None, __repr__=_repr, __reduce_ex__=_reduce_ex)
    namespace["__doc__"] = f"A {cls.__name__} not read yet: reading any field but its id reads it."
    stand_in: type[Item] = type(f"Unread{cls.__name__}", (cls,), namespace)
    return stand_in


_STAND_INS: dict[str, type[Item]] = {
    "prompt": _stand_in_class(UserPrompt),
    "response": _stand_in_class(ModelResponse),
    "tool_result": _stand_in_class(ToolResult),
}
