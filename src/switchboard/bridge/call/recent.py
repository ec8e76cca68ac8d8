"""Bounded maps and sets for per-call bookkeeping that only needs the recent past. Pure.

A call can run for 30 minutes with hundreds of responses; ids of responses and items long finished are
never needed again, so these forget the oldest beyond `maxlen` and a call's memory stays flat.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class RecentMap(OrderedDict[K, V], Generic[K, V]):
    """A dict keeping at most `maxlen` entries, dropping the oldest inserted. Assign with `[]` (not setdefault)."""

    def __init__(self, maxlen: int) -> None:
        super().__init__()
        self.maxlen = maxlen

    def __setitem__(self, key: K, value: V) -> None:
        super().__setitem__(key, value)
        while len(self) > self.maxlen:
            self.popitem(last=False)


class RecentSet(Generic[K]):
    """A set keeping at most `maxlen` members, dropping the oldest added."""

    def __init__(self, maxlen: int) -> None:
        self._members: RecentMap[K, None] = RecentMap(maxlen)

    def add(self, member: K) -> None:
        self._members[member] = None

    def __contains__(self, member: object) -> bool:
        return member in self._members

    def __len__(self) -> int:
        return len(self._members)
