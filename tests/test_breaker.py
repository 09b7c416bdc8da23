"""The circuit breaker's state machine, driven by an injected clock: no sockets, no sleeping."""

from __future__ import annotations

from typing import Any

import pytest

from modelrouter import parse_config
from modelrouter.config.model import BreakerConfig
from modelrouter.resilience.breaker import CLOSED, HALF_OPEN, OPEN, CircuitBreaker, describe
from modelrouter.routing.router import RoutingTable


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def make(**settings: Any) -> tuple[CircuitBreaker, FakeClock]:
    clock = FakeClock()
    breaker = CircuitBreaker(BreakerConfig(**settings), clock=clock)
    return breaker, clock


def fail(breaker: CircuitBreaker, n: int = 1) -> None:
    for _ in range(n):
        probe = breaker.on_send()
        breaker.record(False, probe)


def succeed(breaker: CircuitBreaker, n: int = 1) -> None:
    for _ in range(n):
        probe = breaker.on_send()
        breaker.record(True, probe)


def trip(breaker: CircuitBreaker) -> None:
    fail(breaker, breaker.config.consecutive_failures)
    assert breaker.state == OPEN


# -- opening -------------------------------------------------------------------------------------------------


def test_opens_after_consecutive_failures_and_a_success_resets_the_run() -> None:
    breaker, _ = make(consecutive_failures=3, min_requests=1000)
    fail(breaker, 2)
    succeed(breaker)  # the run starts over
    fail(breaker, 2)
    assert breaker.state == CLOSED
    assert breaker.allows()
    fail(breaker)
    assert breaker.state == OPEN
    assert breaker.trips == 1
    assert not breaker.allows()


def test_client_errors_do_not_count_only_what_the_pipeline_reports_as_failure() -> None:
    # The pipeline reports a 4xx as ok=True; the breaker only sees booleans, so many "ok" never open it.
    breaker, _ = make(consecutive_failures=1, min_requests=1)
    succeed(breaker, 100)
    assert breaker.state == CLOSED


def test_opens_on_failure_rate_once_min_requests_reached_and_not_before() -> None:
    breaker, _ = make(consecutive_failures=100, failure_rate=0.5, window=10, min_requests=10)
    # f o f o f o f o f: 9 requests, 5 failures (56%), never two failures in a row
    for i in range(9):
        (fail if i % 2 == 0 else succeed)(breaker)
    assert breaker.state == CLOSED, "below min_requests the rate must not open the breaker"
    fail(breaker)  # 10 requests, 6 failures
    assert breaker.state == OPEN
    assert breaker.consecutive < 100


def test_a_rate_under_the_threshold_keeps_it_closed() -> None:
    breaker, _ = make(consecutive_failures=100, failure_rate=0.5, window=10, min_requests=10)
    for i in range(40):
        (fail if i % 3 == 0 else succeed)(breaker)  # 14 of 40 = 35%
    assert breaker.state == CLOSED


@pytest.mark.parametrize(
    ("gap", "expected"),
    [
        (9.5, OPEN),  # all of it still inside the window: 4 failures of 7 requests
        (10.5, CLOSED),  # the first slice has expired: 1 failure of 4 requests
    ],
)
def test_old_slices_of_the_window_expire(gap: float, expected: str) -> None:
    breaker, clock = make(consecutive_failures=100, failure_rate=0.5, window=10, min_requests=4)
    fail(breaker, 3)  # slice 0: 3 requests, 3 failures (below min_requests)
    clock.advance(5)
    succeed(breaker, 3)  # slice 5
    clock.advance(gap - 5)
    fail(breaker)
    assert breaker.state == expected


def test_a_long_quiet_spell_forgets_the_whole_window() -> None:
    breaker, clock = make(consecutive_failures=100, failure_rate=0.5, window=10, min_requests=4)
    fail(breaker, 3)
    succeed(breaker, 2)
    clock.advance(1000)
    succeed(breaker, 2)
    fail(breaker)  # 1 of 3 in the window: below min_requests, whatever came before
    assert breaker.state == CLOSED


# -- open, half-open, closed ---------------------------------------------------------------------------------


def test_open_period_then_half_open() -> None:
    breaker, clock = make(consecutive_failures=1, open_for=5)
    trip(breaker)
    clock.advance(4.99)
    assert not breaker.allows()
    assert breaker.state == OPEN
    clock.advance(0.01)
    assert breaker.allows()
    assert breaker.state == HALF_OPEN


def test_half_open_admits_at_most_half_open_probes_at_a_time() -> None:
    breaker, clock = make(consecutive_failures=1, open_for=5, half_open_probes=2, close_after=5)
    assert breaker.on_send() is False, "requests while closed are not probes"
    breaker.record(False, False)
    clock.advance(5)
    assert breaker.allows()
    assert breaker.on_send() is True
    assert breaker.allows()
    assert breaker.on_send() is True
    assert not breaker.allows(), "both probe slots are taken"
    assert not breaker.allows(), "asking does not change that"
    breaker.record(True, True)  # one probe came back: its slot is free again
    assert breaker.state == HALF_OPEN
    assert breaker.allows()
    assert breaker.on_send() is True
    assert not breaker.allows()


def test_a_failed_probe_reopens_with_a_doubled_period_capped_at_max_open_for() -> None:
    breaker, clock = make(consecutive_failures=1, open_for=5, max_open_for=12)
    trip(breaker)
    periods = []
    for _ in range(4):
        opened_at = clock.now
        periods.append(breaker.opened_until - opened_at)
        clock.advance(breaker.opened_until - opened_at - 0.01)
        assert not breaker.allows()
        clock.advance(0.01)
        assert breaker.allows()
        fail(breaker)  # the probe fails
        assert breaker.state == OPEN
    assert periods == [5, 10, 12, 12]
    assert breaker.trips == 5  # the first trip and four failed probes


def test_close_after_probe_successes_closes_and_resets_trips() -> None:
    breaker, clock = make(consecutive_failures=1, open_for=5, close_after=3)
    trip(breaker)
    clock.advance(5)
    assert breaker.allows()
    fail(breaker)  # second trip: 10 s
    clock.advance(10)
    assert breaker.allows()
    succeed(breaker, 2)
    assert breaker.state == HALF_OPEN
    assert breaker.probe_successes == 2
    succeed(breaker)
    assert breaker.state == CLOSED
    assert breaker.trips == 0
    assert breaker.consecutive == 0
    # The next trip starts again from open_for, not from a doubled period.
    trip(breaker)
    assert breaker.opened_until - clock.now == 5


def test_closing_clears_the_failure_rate_window() -> None:
    breaker, clock = make(consecutive_failures=100, failure_rate=0.5, window=60, min_requests=4, close_after=1)
    for i in range(4):
        (succeed if i % 2 == 0 else fail)(breaker)  # o f o f: 2 of 4
    assert breaker.state == OPEN
    clock.advance(5)
    assert breaker.allows()
    succeed(breaker)
    assert breaker.state == CLOSED
    fail(breaker)  # without the reset: 3 failures of 5 requests, over the rate
    assert breaker.state == CLOSED


def test_outcomes_of_requests_sent_before_the_trip_are_ignored() -> None:
    breaker, clock = make(consecutive_failures=2, open_for=5, close_after=1)
    early = [breaker.on_send() for _ in range(5)]  # in flight while the breaker is still closed
    assert early == [False] * 5
    fail(breaker, 2)
    assert breaker.state == OPEN
    opened_until, trips = breaker.opened_until, breaker.trips
    breaker.record(False, early.pop())  # a late failure does not extend the open period
    breaker.record(True, early.pop())  # a late success does not close it
    assert (breaker.state, breaker.opened_until, breaker.trips) == (OPEN, opened_until, trips)
    clock.advance(5)
    assert breaker.allows()
    assert breaker.state == HALF_OPEN
    breaker.record(False, early.pop())  # nor does a late failure re-open a half-open breaker
    breaker.record(True, early.pop())  # nor a late success count as a probe success
    assert breaker.state == HALF_OPEN
    assert breaker.probe_successes == 0
    assert (breaker.probes, breaker.allows()) == (0, True), "late outcomes must not free or take probe slots"


def test_a_probe_outcome_after_the_breaker_closed_is_ignored() -> None:
    breaker, clock = make(consecutive_failures=1, open_for=5, half_open_probes=2, close_after=1)
    trip(breaker)
    clock.advance(5)
    assert breaker.allows()
    first, second = breaker.on_send(), breaker.on_send()
    breaker.record(True, first)
    assert breaker.state == CLOSED
    breaker.record(False, second)  # a probe sent while half-open, answered after the close
    assert breaker.state == CLOSED
    assert breaker.probes == 0


def test_disabled_breaker_never_opens() -> None:
    breaker, _ = make(enabled=False, consecutive_failures=1, min_requests=1)
    fail(breaker, 1000)
    assert breaker.state == CLOSED
    assert breaker.allows()
    assert breaker.on_send() is False


def test_health_ok_lets_an_open_breaker_probe_at_once() -> None:
    breaker, _ = make(consecutive_failures=1, open_for=60)
    trip(breaker)
    assert not breaker.allows()
    breaker.health_ok()
    assert breaker.allows()
    assert breaker.state == HALF_OPEN
    assert breaker.on_send() is True
    # health_ok while half-open or closed changes nothing
    breaker.health_ok()
    assert not breaker.allows()
    assert breaker.state == HALF_OPEN
    closed, _ = make()
    closed.health_ok()
    assert closed.state == CLOSED


def test_health_ok_does_nothing_when_disabled() -> None:
    breaker, _ = make(consecutive_failures=1)
    trip(breaker)
    breaker.config = BreakerConfig(enabled=False)  # a reload turned it off
    breaker.health_ok()
    assert breaker.allows()


def test_transitions_are_reported_once_each() -> None:
    breaker, clock = make(consecutive_failures=1, open_for=5, close_after=1)
    seen: list[tuple[str, str]] = []
    breaker.on_change = lambda b, old, new: seen.append((old, new))
    trip(breaker)
    fail(breaker)  # ignored while open
    clock.advance(5)
    breaker.allows()
    breaker.allows()
    succeed(breaker)
    assert seen == [(CLOSED, OPEN), (OPEN, HALF_OPEN), (HALF_OPEN, CLOSED)]


# -- configuration layering ----------------------------------------------------------------------------------


def test_settings_are_layered_global_service_instance_field_by_field() -> None:
    config = parse_config(
        {
            "breaker": {"consecutive_failures": 7, "open_for": 9, "window": 40},
            "services": {
                "chat": {
                    "breaker": {"consecutive_failures": 3, "max_open_for": 30},
                    "instances": [
                        {"name": "plain", "base_url": "http://127.0.0.1:1"},
                        {
                            "name": "tuned",
                            "base_url": "http://127.0.0.1:2",
                            "breaker": {"half_open_probes": 4, "open_for": 2},
                        },
                        {"name": "off", "base_url": "http://127.0.0.1:3", "breaker": {"enabled": False}},
                    ],
                },
                "embedding": {"instances": [{"name": "emb", "base_url": "http://127.0.0.1:4"}]},
            },
        }
    )
    table = RoutingTable(config)
    by_name = {inst.config.name: inst.breaker.config for inst in table.all_instances()}
    default = BreakerConfig()

    assert by_name["emb"] == default.model_copy(update={"consecutive_failures": 7, "open_for": 9, "window": 40})
    assert by_name["plain"] == default.model_copy(
        update={"consecutive_failures": 3, "open_for": 9, "window": 40, "max_open_for": 30}
    )
    assert by_name["tuned"] == default.model_copy(
        update={"consecutive_failures": 3, "open_for": 2, "window": 40, "max_open_for": 30, "half_open_probes": 4}
    )
    assert by_name["off"].enabled is False
    assert by_name["off"].consecutive_failures == 3

    # And the layered settings are what the running breakers act on.
    tuned = next(i for i in table.all_instances() if i.config.name == "tuned")
    for _ in range(3):
        tuned.breaker.record(False, tuned.breaker.on_send())
    assert tuned.breaker.state == OPEN
    off = next(i for i in table.all_instances() if i.config.name == "off")
    for _ in range(50):
        off.breaker.record(False, off.breaker.on_send())
    assert off.breaker.state == CLOSED


def test_reload_keeps_breaker_state_and_takes_new_settings() -> None:
    def config(failures: int) -> dict[str, Any]:
        return {
            "services": {
                "chat": {
                    "breaker": {"consecutive_failures": failures},
                    "instances": [{"name": "m", "base_url": "http://127.0.0.1:1"}],
                }
            }
        }

    old = RoutingTable(parse_config(config(2)))
    (inst,) = old.all_instances()
    inst.breaker.record(False, inst.breaker.on_send())
    new = RoutingTable(parse_config(config(5)), previous=old)
    (kept,) = new.all_instances()
    assert kept is inst
    assert kept.breaker.config.consecutive_failures == 5
    assert kept.breaker.consecutive == 1
    for _ in range(3):
        kept.breaker.record(False, kept.breaker.on_send())
    assert kept.breaker.state == CLOSED  # 4 in a row: below the new threshold of 5
    kept.breaker.record(False, kept.breaker.on_send())
    assert kept.breaker.state == OPEN


# -- why it opened -------------------------------------------------------------------------------------------


def test_an_opening_keeps_the_failure_that_tripped_it_and_when() -> None:
    breaker, clock = make(consecutive_failures=2, min_requests=1000, open_for=10)
    breaker.record(False, breaker.on_send(), 503)
    assert (breaker.reason, breaker.opened_at) == (None, None)  # worded only when it trips
    breaker.record(False, breaker.on_send(), TimeoutError("connecting to the backend timed out"))
    assert breaker.state == OPEN
    assert breaker.reason == "connecting to the backend timed out"
    assert breaker.opened_at is not None
    clock.advance(11)
    assert breaker.allows()  # half-open: a failed probe opens it again, with the probe's reason
    breaker.record(False, breaker.on_send(), 500)
    assert (breaker.state, breaker.reason) == (OPEN, "HTTP 500")
    clock.advance(21)
    breaker.allows()
    succeed(breaker, breaker.config.close_after)
    assert breaker.state == CLOSED
    assert breaker.reason == "HTTP 500"  # kept after closing: what happened last


def test_a_long_error_message_is_cut_in_the_reason() -> None:
    assert describe(None) is None
    assert describe(429) == "HTTP 429"
    long = describe(ValueError("x" * 1000))
    assert long is not None
    assert len(long) == 301
    assert long.endswith("…")
