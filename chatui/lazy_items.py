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
import threading
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
        # Held while reading: a worker thread (an export, a tool, the turn) and the loop's
        # may read at once, and neither may see an item taken off `_unread` but not read.
        self._lock = threading.Lock()

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
        deleted behind this chatui's back), ValueError if one cannot be read (a
        damaged row, one from a newer chatui): it stays a stand-in, the others
        are read.
        """
        with self._lock:
            unread = self._unread
            wanted = list(unread) if ids is None else [i for i in ids if i in unread]
            if not wanted:
                return
            damaged = 0
            for item_id, data in self._rows(wanted):
                if (stand_in := unread.get(item_id)) is None:
                    continue
                try:
                    item = parse(data)
                except ValueError:
                    damaged += 1
                    continue
                del unread[item_id]
                _become(stand_in, item)
            if gone := len([i for i in wanted if i in unread]) - damaged:
                raise LookupError(f"{gone} items of the conversation are no longer stored")
            if damaged:
                raise ValueError(f"the store holds damaged data for {damaged} of its items")


def parse(data: str) -> Item:
    """The item stored as `data`; ValueError if this chatui cannot make one of it.

    A damaged row, or one from a newer chatui: it may fail in many ways.
    """
    try:
        return item_from_dict(json.loads(data))
    except (ValueError, TypeError, KeyError, AttributeError):
        raise ValueError("the store holds damaged data for 1 of its items") from None


def _become(stand_in: Item, item: Item) -> None:
    """Turn `stand_in` into `item`'s class with `item`'s fields, in place.

    Its `LazyItems` goes last: another thread that finds it waits for the read's
    end, and one that does not finds every field.
    """
    known = stand_in.__dict__
    for name, value in item.__dict__.items():
        known.setdefault(name, value)  # Not its id: the same, unless something set another.
    stand_in.__class__ = type(item)
    del known[_LAZY]


def _read(stand_in: Any) -> None:
    """Read `stand_in` (and the others): on return it is its item's class, or this raised."""
    lazy: LazyItems | None = stand_in.__dict__.get(_LAZY)
    if lazy is None:
        return  # Read already (by another thread, perhaps this instant).
    try:
        lazy.read()
    except (LookupError, ValueError):
        if _LAZY in stand_in.__dict__:
            raise  # Others may have failed: what matters here is this one.
    if _LAZY in stand_in.__dict__:
        raise LookupError("an item of the conversation cannot be read")


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

    def made(self: Any, *args: Any, **kwargs: Any) -> None:
        """An item made by calling a stand-in's class (`dataclasses.replace` does) is the item's."""
        self.__class__ = cls
        cls.__init__(self, *args, **kwargs)

    namespace["__init__"] = made
    namespace["__doc__"] = f"A {cls.__name__} not read yet: reading any field but its id reads it."
    stand_in: type[Item] = type(f"Unread{cls.__name__}", (cls,), namespace)
    return stand_in


_STAND_INS: dict[str, type[Item]] = {
    "prompt": _stand_in_class(UserPrompt),
    "response": _stand_in_class(ModelResponse),
    "tool_result": _stand_in_class(ToolResult),
}
