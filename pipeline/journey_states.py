"""The journey states of one partition, compact at rest: recent customers as models, the
rest as compressed JSON.

A :class:`~schemas.journey.JourneyState` as pydantic objects weighs about 2.9 KB (nested
models, datetimes, dicts); its JSON is about 1.1 KB and that JSON compressed with zlib
about 450 bytes. Most customers of a partition are idle at any moment, so
:class:`StateCache` keeps the ``hot`` most recently used states as models (an LRU) and
encodes the others (``model_dump_json`` then zlib level 1) when they fall out of it; a cold
state is decoded again (about 100 µs) the next time its customer is touched, which happens
at most once per journey batch. In the memory benchmark (a million one-event customers)
this took about 1.7 KB per customer off the worker's RSS (benchmarks/README.md, memory).

The cache is a :class:`~collections.abc.MutableMapping`: the journey stage and the
changelog replay use it as they would use a dict.
"""

from __future__ import annotations

import zlib
from collections import OrderedDict
from collections.abc import Iterator, MutableMapping

from schemas.journey import JourneyState

DEFAULT_HOT = 10_000
"""States kept decoded per partition (the production default of 6 partitions per worker
keeps up to 60,000 customers, about 170 MB, as models)."""
LEVEL = 1
"""zlib level: 1 compresses a state to about 40% in a few µs; higher levels gain little."""


def encode(state: JourneyState) -> bytes:
    return zlib.compress(state.model_dump_json().encode(), LEVEL)


def decode(blob: bytes) -> JourneyState:
    return JourneyState.model_validate_json(zlib.decompress(blob))


class StateCache(MutableMapping[str, JourneyState]):
    """customer id -> state; the ``hot`` most recently used as models, the rest encoded."""

    def __init__(self, hot: int = DEFAULT_HOT) -> None:
        if hot < 1:
            raise ValueError(f"journey state cache: hot must be at least 1, got {hot}")
        self.hot = hot
        self._models: OrderedDict[str, JourneyState] = OrderedDict()
        self._blobs: dict[str, bytes] = {}

    @property
    def encoded(self) -> int:
        """How many states are held encoded (cold)."""
        return len(self._blobs)

    def __getitem__(self, key: str) -> JourneyState:
        state = self._models.get(key)
        if state is not None:
            self._models.move_to_end(key)
            return state
        state = decode(self._blobs.pop(key))  # KeyError when absent, as a dict
        self._keep(key, state)
        return state

    def __setitem__(self, key: str, state: JourneyState) -> None:
        self._blobs.pop(key, None)
        self._keep(key, state)

    def __delitem__(self, key: str) -> None:
        if self._models.pop(key, None) is None:
            del self._blobs[key]

    def __contains__(self, key: object) -> bool:
        return key in self._models or key in self._blobs

    def __iter__(self) -> Iterator[str]:
        yield from list(self._models)
        yield from list(self._blobs)

    def __len__(self) -> int:
        return len(self._models) + len(self._blobs)

    def _keep(self, key: str, state: JourneyState) -> None:
        self._models[key] = state
        self._models.move_to_end(key)
        while len(self._models) > self.hot:
            cold, model = self._models.popitem(last=False)
            self._blobs[cold] = encode(model)
