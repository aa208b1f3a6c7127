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


def test_requests_are_admitted_up_to_the_bound_and_then_refused_naming_it() -> None:
    budget = InflightBudget(1000, limit_requests=2)
    assert budget.try_admit() and budget.try_admit()
    assert not budget.try_admit() and budget.requests == 2
    assert "2 requests" in str(budget.busy()) and "LEANSERVE_MAX_INFLIGHT_REQUESTS" in str(budget.busy())
    budget.leave()
    assert budget.try_admit()


def test_admitted_holds_a_request_and_its_bytes_and_releases_both_on_error() -> None:
    budget = InflightBudget(100, limit_requests=1)
    with pytest.raises(ValueError), budget.admitted(60):
        assert budget.requests == 1 and budget.used_bytes == 60
        raise ValueError("the request failed")
    assert budget.requests == 0 and budget.used_bytes == 0
    with budget.admitted(10), pytest.raises(ServerBusy, match="1 requests"), budget.admitted(10):
        pass
    with pytest.raises(ServerBusy, match="bytes"), budget.admitted(101):  # too large: the slot is freed
        pass
    assert budget.requests == 0 and budget.used_bytes == 0


def test_no_request_bound_by_default_and_a_bound_must_be_positive() -> None:
    budget = InflightBudget(100)
    assert all(budget.try_admit() for _ in range(1000))
    with pytest.raises(ValueError, match="limit_requests"):
        InflightBudget(100, limit_requests=0)
