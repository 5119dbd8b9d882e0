"""Retries and failover, decided in one place for the sync and the async calls.

Why: an endpoint retrying its server and a replica group failing over to another server must
make the same choices under ``complete``, ``acomplete``, ``stream`` and ``astream``, or a chain
behaves differently once it runs under ``ainvoke``. So the choices are a *plan*, written once
per policy, with no I/O in it (sans-IO): a generator that yields the next ``Attempt`` (whom to
call, after what pause) and is sent how that attempt ended, ``None`` for success or a
``Failed``. The plan keeps the books and decides: it returns (done), yields another attempt, or
raises the error the caller gets. It gives up by raising; it never swallows an error.

Four drivers carry a plan out and do nothing else: ``call`` / ``acall`` for one answer,
``stream`` / ``astream`` for a stream, which also tell the plan whether the attempt had already
yielded a token (such a stream cannot be replayed without repeating text). A driver catches only
the exceptions it is given; anything else (a bug in tokenlean) propagates as itself, and the
plan is closed so its ``finally`` blocks still run.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Generator, Iterator
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

__all__ = ["Attempt", "Failed", "Plan", "acall", "astream", "call", "stream"]

T = TypeVar("T")
R = TypeVar("R")


class _Chunk(Protocol):
    @property
    def has_token(self) -> bool: ...


C = TypeVar("C", bound=_Chunk)


@dataclass(frozen=True, slots=True)
class Attempt(Generic[T]):
    """Call ``target`` next, after sleeping ``delay`` seconds (``None``: at once)."""

    target: T
    delay: float | None = None


@dataclass(frozen=True, slots=True)
class Failed:
    """How an attempt failed; ``streamed``: it had already yielded a token."""

    error: Exception
    streamed: bool = False


#: Yields attempts, is sent their outcome (``None`` = success), returns when the call is done.
Plan = Generator[Attempt[T], Failed | None, None]


def _succeeded(plan: Plan[Any]) -> None:
    """Tell the plan its last attempt succeeded: it does its bookkeeping and must then finish."""
    try:
        plan.send(None)
    except StopIteration:
        return
    raise RuntimeError("a failover plan asked for another attempt after a success")


def call(plan: Plan[T], attempt: Callable[[T], R], catch: tuple[type[Exception], ...]) -> R:
    """Run ``attempt`` on the plan's targets until one succeeds or the plan raises."""
    try:
        step = next(plan)
        while True:
            if step.delay is not None:
                time.sleep(step.delay)
            try:
                result = attempt(step.target)
            except catch as exc:
                step = plan.send(Failed(exc))
                continue
            _succeeded(plan)
            return result
    finally:
        plan.close()


async def acall(plan: Plan[T], attempt: Callable[[T], Awaitable[R]], catch: tuple[type[Exception], ...]) -> R:
    """``call`` for a coroutine ``attempt``."""
    try:
        step = next(plan)
        while True:
            if step.delay is not None:
                await asyncio.sleep(step.delay)
            try:
                result = await attempt(step.target)
            except catch as exc:
                step = plan.send(Failed(exc))
                continue
            _succeeded(plan)
            return result
    finally:
        plan.close()


def stream(
    plan: Plan[T], attempt: Callable[[T], Iterator[C]], catch: tuple[type[Exception], ...]
) -> Iterator[C]:
    """Yield the chunks of ``attempt`` on the plan's targets until one stream ends or the plan raises."""
    try:
        step = next(plan)
        while True:
            if step.delay is not None:
                time.sleep(step.delay)
            streamed = False
            chunks: Iterator[C] | None = None
            try:
                chunks = attempt(step.target)
                for chunk in chunks:
                    streamed = streamed or chunk.has_token
                    yield chunk
            except catch as exc:
                step = plan.send(Failed(exc, streamed))
                continue
            finally:
                close = getattr(chunks, "close", None)
                if close is not None:
                    close()
            _succeeded(plan)
            return
    finally:
        plan.close()


async def astream(
    plan: Plan[T], attempt: Callable[[T], AsyncIterator[C]], catch: tuple[type[Exception], ...]
) -> AsyncGenerator[C, None]:
    """``stream`` for an async iterator ``attempt``."""
    try:
        step = next(plan)
        while True:
            if step.delay is not None:
                await asyncio.sleep(step.delay)
            streamed = False
            chunks: AsyncIterator[C] | None = None
            try:
                chunks = attempt(step.target)
                async for chunk in chunks:
                    streamed = streamed or chunk.has_token
                    yield chunk
            except catch as exc:
                step = plan.send(Failed(exc, streamed))
                continue
            finally:
                aclose = getattr(chunks, "aclose", None)
                if aclose is not None:
                    await aclose()
            _succeeded(plan)
            return
    finally:
        plan.close()
