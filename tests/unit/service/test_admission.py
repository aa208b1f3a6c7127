from __future__ import annotations

import threading

import pytest

from service.admission import InflightBudget
from service.errors import ServerBusy


def test_reservations_fit_until_the_limit_then_are_refused() -> None:
    budget = InflightBudget(100)
    assert budget.try_reserve(60) and budget.try_reserve(40)
    assert not budget.try_reserve(1) and budget.used_bytes == 100
    budget.release(40)
    assert budget.try_reserve(40)


def test_a_refused_reservation_takes_nothing() -> None:
    budget = InflightBudget(100)
    assert not budget.try_reserve(101)
    assert budget.used_bytes == 0


def test_the_context_releases_on_error_and_raises_server_busy_when_full() -> None:
    budget = InflightBudget(10)
    with pytest.raises(ValueError), budget.reserved(8):
        raise ValueError("the request failed")
    assert budget.used_bytes == 0
    with budget.reserved(8), pytest.raises(ServerBusy, match="busy"), budget.reserved(8):
        pass
    assert budget.used_bytes == 0


def test_concurrent_reservations_never_exceed_the_limit() -> None:
    budget = InflightBudget(1000)
    peak = 0
    lock = threading.Lock()

    def worker() -> None:
        nonlocal peak
        for _ in range(2000):
            if budget.try_reserve(7):
                with lock:
                    peak = max(peak, budget.used_bytes)
                budget.release(7)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert peak <= 1000 and budget.used_bytes == 0
