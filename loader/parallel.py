"""Work on several files at once, reporting in their order."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


def run_in_order(work: Callable[[Item], Result], items: Sequence[Item], jobs: int,
                 on_result: Callable[[Result], None] = lambda result: None) -> list[Result]:
    """`work` on every item, `jobs` at a time in threads; `on_result` on each result in the items'
    order, as soon as it and those before it are done. On an error or an interrupt the items not yet
    started are cancelled and those running finish before it propagates."""
    with ThreadPoolExecutor(max_workers=max(1, jobs), thread_name_prefix="consolidate") as executor:
        futures = [executor.submit(work, item) for item in items]
        results = []
        try:
            for future in futures:
                results.append(future.result())
                on_result(results[-1])
        except BaseException:
            for future in futures:
                future.cancel()
            raise
        return results
