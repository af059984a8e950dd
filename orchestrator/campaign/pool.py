"""The driver's side of an actor pool: a bounded, thread-safe set of actors, one call at a time each."""
from __future__ import annotations

import queue
import threading
from contextlib import contextmanager
from typing import Any, Iterator


class ActorPool:
    """A bounded, thread-safe pool: a driver thread borrows an idle actor, calls it, gives it back."""

    def __init__(self, actors: list):
        self.actors = list(actors)
        self._idle: queue.Queue = queue.Queue()
        for a in self.actors:
            self._idle.put(a)
        self._lock = threading.Lock()

    @contextmanager
    def borrow(self) -> Iterator[Any]:
        actor = self._idle.get()
        try:
            yield actor
        finally:
            self._idle.put(actor)

    def call(self, method: str, *args, **kwargs) -> Any:
        """Run ``actor.method.remote(*args)`` on an idle actor and wait for the answer."""
        import ray

        with self.borrow() as actor:
            return ray.get(getattr(actor, method).remote(*args, **kwargs))
