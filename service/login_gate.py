"""Bounds on password checking (argon2 is costly): at most a few run, a few wait, the rest are refused."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from contextlib import contextmanager


class Busy(Exception):
    """Too many password checks are running or waiting; the caller should answer 503 + Retry-After."""


class LoginGate:
    """Bounds password checking and makes the throttle's check-verify-count atomic per key.

    * At most `concurrent` argon2 checks run at once (64 MiB each) and at most `waiting` more queue;
      the rest are refused at once (`Busy`), so a flood of logins cannot take the memory or starve the API.
    * The throttle's keys (user name, address) are locked for the whole check: N parallel wrong
      passwords for one user are counted one after another, so exactly `login_max_failures` are checked.
      Locks are striped (a fixed array), so memory does not grow with the names an attacker tries.
    """

    STRIPES = 64

    def __init__(self, concurrent: int = 2, waiting: int = 16, wait_s: float = 10.0) -> None:
        self._hashing = threading.BoundedSemaphore(concurrent)
        self._admit = threading.BoundedSemaphore(concurrent + waiting)
        self._stripes = [threading.Lock() for _ in range(self.STRIPES)]
        self.wait_s = wait_s

    @contextmanager
    def keys(self, keys: list[str]) -> Iterator[None]:
        if not self._admit.acquire(blocking=False):
            raise Busy()
        try:
            idx = sorted({int.from_bytes(hashlib.sha256(k.encode()).digest()[:4], "big") % self.STRIPES for k in keys})
            held: list[threading.Lock] = []
            try:
                for i in idx:
                    if not self._stripes[i].acquire(timeout=self.wait_s):
                        raise Busy()
                    held.append(self._stripes[i])
                yield
            finally:
                for lock in reversed(held):
                    lock.release()
        finally:
            self._admit.release()

    @contextmanager
    def hashing(self) -> Iterator[None]:
        if not self._hashing.acquire(timeout=self.wait_s):
            raise Busy()
        try:
            yield
        finally:
            self._hashing.release()
