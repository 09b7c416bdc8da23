"""Load balancers: unit tests over real ``Instance`` objects, then end to end through the gateway.

Unit tests never sleep and never read the wall clock; where a balancer uses ``random`` it is seeded.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from types import SimpleNamespace
from typing import Any

import openai
import pytest

from modelrouter.adapters import ADAPTERS
from modelrouter.config.model import DEFAULT_TIMEOUTS, InstanceConfig
from modelrouter.routing import instance as instance_module
from modelrouter.routing.balancers import (
    BALANCERS,
    ConsistentHash,
    IpHash,
    LeastConnections,
    PeakEwmaP2C,
    SmoothRoundRobin,
    WeightedRandom,
)
from modelrouter.routing.instance import Instance
from modelrouter.routing.router import _instance_urls

from .fakes import FakeOpenAI
from .servers import GatewayServer, free_port


def make_instance(name: str, weight: float = 1, *, base_url: str | None = None, service: str = "chat") -> Instance:
    """An ``Instance`` built the way ``RoutingTable`` builds one."""
    cfg = InstanceConfig(name=name, base_url=base_url or f"http://{name}.backend.test:8000", weight=weight)
    return Instance(cfg, service, _instance_urls(service, cfg), DEFAULT_TIMEOUTS[service], ADAPTERS[cfg.adapter])


def pool_of(*weights: float) -> list[Instance]:
    return [make_instance("abcdefgh"[i], w) for i, w in enumerate(weights)]


def names(picks: Sequence[Instance]) -> list[str]:
    return [p.config.name for p in picks]


@pytest.fixture
def seeded() -> Iterator[None]:
    state = random.getstate()
    random.seed(12345)
    yield
    random.setstate(state)


KEYS = [f"key-{i}" for i in range(10_000)]


def test_balancer_table_names_every_strategy() -> None:
    expected = {
        "random": WeightedRandom,
        "round_robin": SmoothRoundRobin,
        "least_connections": LeastConnections,
        "ip_hash": IpHash,
        "consistent_hash": ConsistentHash,
        "latency": PeakEwmaP2C,
    }
    assert expected == BALANCERS
    assert ConsistentHash.needs_key
    assert IpHash.needs_key
    assert not any(cls.needs_key for cls in (WeightedRandom, SmoothRoundRobin, LeastConnections, PeakEwmaP2C))


@pytest.mark.parametrize("cls", list(BALANCERS.values()))
def test_single_usable_instance_is_always_chosen(cls: type, seeded: None) -> None:
    pool = pool_of(1, 2, 3)
    balancer = cls(pool)
    for i in range(50):
        assert balancer.select([pool[1]], f"k{i}") is pool[1]


# --- weighted random -------------------------------------------------------------------------------------------


def test_weighted_random_follows_weights(seeded: None) -> None:
    pool = pool_of(1, 2, 3)
    balancer = WeightedRandom(pool)
    n = 20_000
    counts = Counter(names([balancer.select(pool) for _ in range(n)]))
    assert set(counts) == {"a", "b", "c"}
    for name, weight in zip("abc", (1, 2, 3), strict=True):
        assert counts[name] / n == pytest.approx(weight / 6, abs=0.02), counts


def test_weighted_random_picks_only_from_the_usable_subset(seeded: None) -> None:
    pool = pool_of(1, 2, 3)
    balancer = WeightedRandom(pool)
    usable = [pool[0], pool[2]]
    n = 20_000
    counts = Counter(names([balancer.select(usable) for _ in range(n)]))
    assert set(counts) == {"a", "c"}
    assert counts["a"] / n == pytest.approx(1 / 4, abs=0.02), counts
    assert counts["c"] / n == pytest.approx(3 / 4, abs=0.02), counts


# --- smooth weighted round robin -------------------------------------------------------------------------------


def test_smooth_round_robin_is_nginx_sequence() -> None:
    pool = pool_of(5, 1, 1)
    balancer = SmoothRoundRobin(pool)
    picks = "".join(names([balancer.select(pool) for _ in range(7 * 4)]))
    assert picks == "aabacaa" * 4


def test_smooth_round_robin_equal_weights_alternate() -> None:
    pool = pool_of(1, 1)
    balancer = SmoothRoundRobin(pool)
    assert "".join(names([balancer.select(pool) for _ in range(10)])) == "ab" * 5
    pool3 = pool_of(2, 2, 2)
    balancer3 = SmoothRoundRobin(pool3)
    assert "".join(names([balancer3.select(pool3) for _ in range(9)])) == "abc" * 3


def test_smooth_round_robin_over_a_subset() -> None:
    pool = pool_of(1, 1, 1)
    balancer = SmoothRoundRobin(pool)
    usable = [pool[0], pool[2]]
    assert "".join(names([balancer.select(usable) for _ in range(10)])) == "ac" * 5
    # Weighted subset of a weighted pool: 5,1,1 without b is a 5:1 split, spread out.
    wpool = pool_of(5, 1, 1)
    wbalancer = SmoothRoundRobin(wpool)
    picks = names([wbalancer.select([wpool[0], wpool[2]]) for _ in range(60)])
    assert Counter(picks) == {"a": 50, "c": 10}
    assert "b" not in picks


# --- least connections -----------------------------------------------------------------------------------------


def test_least_connections_prefers_fewer_in_flight(seeded: None) -> None:
    pool = pool_of(1, 1, 1)
    balancer = LeastConnections(pool)
    pool[0].inflight, pool[1].inflight, pool[2].inflight = 3, 1, 2
    assert all(balancer.select(pool) is pool[1] for _ in range(100))
    # Taking picks as in-flight requests fills the least loaded instances first.
    pool[0].inflight = pool[1].inflight = pool[2].inflight = 0
    for _ in range(30):
        balancer.select(pool).acquire()
    assert [i.inflight for i in pool] == [10, 10, 10]


def test_least_connections_is_relative_to_weight(seeded: None) -> None:
    pool = pool_of(4, 1)
    balancer = LeastConnections(pool)
    # a: (3+1)/4 = 1.0 beats b: (1+1)/1 = 2.0 although a has more requests in flight.
    pool[0].inflight, pool[1].inflight = 3, 1
    assert all(balancer.select(pool) is pool[0] for _ in range(100))
    # Filling from empty keeps the load proportional to weight.
    pool[0].inflight = pool[1].inflight = 0
    for _ in range(50):
        balancer.select(pool).acquire()
    assert [i.inflight for i in pool] == [40, 10]


def test_least_connections_equal_instances_share_picks(seeded: None) -> None:
    pool = pool_of(1, 1, 1)
    balancer = LeastConnections(pool)
    pool[2].inflight = 5
    counts = Counter(names([balancer.select(pool) for _ in range(1000)]))
    assert set(counts) == {"a", "b"}
    assert counts["a"] > 350, counts
    assert counts["b"] > 350, counts


# --- peak EWMA, power of two choices ---------------------------------------------------------------------------


def test_latency_prefers_the_fast_instance(seeded: None) -> None:
    fast, slow = pool = pool_of(1, 1)
    fast.observe_latency(0.005)
    slow.observe_latency(0.050)
    balancer = PeakEwmaP2C(pool)
    counts = Counter(names([balancer.select(pool) for _ in range(1000)]))
    assert counts["a"] >= 900, counts


def test_latency_fast_instance_still_wins_most_picks_among_three(seeded: None) -> None:
    pool = pool_of(1, 1, 1)
    pool[0].observe_latency(0.005)
    pool[1].observe_latency(0.050)
    pool[2].observe_latency(0.050)
    balancer = PeakEwmaP2C(pool)
    counts = Counter(names([balancer.select(pool) for _ in range(3000)]))
    # Two random choices: the fast one is in the pair 2/3 of the time and then always wins.
    assert counts["a"] / 3000 == pytest.approx(2 / 3, abs=0.05), counts


def test_latency_in_flight_load_shifts_picks(seeded: None) -> None:
    fast, slow = pool = pool_of(1, 1)
    fast.observe_latency(0.005)
    slow.observe_latency(0.050)
    balancer = PeakEwmaP2C(pool)
    fast.inflight = 20  # cost 0.005 * 21 = 0.105 > 0.050 * 1
    counts = Counter(names([balancer.select(pool) for _ in range(1000)]))
    assert counts["b"] >= 900, counts
    # Requests that are picked and kept in flight spread so that cost stays balanced (~10:1 in flight).
    fast.inflight = 0
    for _ in range(110):
        balancer.select(pool).acquire()
    assert fast.inflight > 5 * slow.inflight, (fast.inflight, slow.inflight)
    assert slow.inflight >= 5


def test_latency_unknown_instance_is_tried_when_idle_but_not_flooded(seeded: None) -> None:
    known, new = pool = pool_of(1, 1)
    known.observe_latency(0.010)
    balancer = PeakEwmaP2C(pool)
    assert balancer.select(pool) is new  # no sample yet, idle: try it
    new.inflight = 1
    assert all(balancer.select(pool) is known for _ in range(100))  # busy and unknown: penalised


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    """A clock for ``Instance`` only (not the global ``time``, which the test servers' event loop uses)."""
    fake = FakeClock()
    monkeypatch.setattr(instance_module, "time", SimpleNamespace(monotonic=fake.monotonic))
    return fake


def test_peak_ewma_jumps_up_at_once_and_decays_slowly(clock: FakeClock) -> None:
    inst = make_instance("a")
    inst.observe_latency(0.005)
    assert inst.ewma == pytest.approx(0.005)
    clock.now += 0.001
    inst.observe_latency(0.500)  # a slow observation is taken at once, however little time passed
    assert inst.ewma == pytest.approx(0.500)
    clock.now += 0.001
    inst.observe_latency(0.005)  # a fast one right after barely moves it
    assert inst.ewma > 0.49
    clock.now += 60  # six decay constants later, the spike is mostly forgotten
    inst.observe_latency(0.005)
    assert 0.005 < inst.ewma < 0.01


def test_latency_fast_instance_loses_picks_after_a_slow_spike(seeded: None, clock: FakeClock) -> None:
    fast, slow = pool = pool_of(1, 1)
    fast.observe_latency(0.005)
    slow.observe_latency(0.050)
    balancer = PeakEwmaP2C(pool)
    assert balancer.select(pool) is fast
    clock.now += 0.01
    fast.observe_latency(0.400)
    assert all(balancer.select(pool) is slow for _ in range(100))


# --- consistent hash -------------------------------------------------------------------------------------------


def test_consistent_hash_is_stable_per_key() -> None:
    pool = pool_of(1, 1, 1)
    balancer = ConsistentHash(pool)
    first = {k: balancer.select(pool, k) for k in KEYS[:1000]}
    for _ in range(3):
        assert all(balancer.select(pool, k) is inst for k, inst in first.items())
    # A balancer rebuilt over the same instances (a config reload) maps keys the same way.
    rebuilt = ConsistentHash(pool)
    assert all(rebuilt.select(pool, k) is inst for k, inst in first.items())
    # Keys spread over every instance.
    counts = Counter(inst.config.name for inst in first.values())
    assert set(counts) == {"a", "b", "c"}
    assert min(counts.values()) > 200, counts


def test_consistent_hash_adding_an_instance_moves_few_keys_and_only_to_it() -> None:
    pool = pool_of(1, 1, 1)
    before = ConsistentHash(pool)
    new = make_instance("d")
    bigger = [*pool, new]
    after = ConsistentHash(bigger)
    moved = 0
    for key in KEYS:
        old_inst = before.select(pool, key)
        new_inst = after.select(bigger, key)
        if new_inst is not old_inst:
            moved += 1
            assert new_inst is new, f"{key} moved from {old_inst} to {new_inst}, not to the new instance"
    assert 0 < moved / len(KEYS) < 0.35, moved


def test_consistent_hash_instance_position_in_pool_does_not_matter() -> None:
    pool = pool_of(1, 1, 1)
    forward = ConsistentHash(pool)
    backward = ConsistentHash(list(reversed(pool)))
    assert all(forward.select(pool, k) is backward.select(pool, k) for k in KEYS[:2000])


def test_consistent_hash_unusable_instance_keys_go_elsewhere_others_stay() -> None:
    pool = pool_of(1, 1, 1)
    balancer = ConsistentHash(pool)
    usable = [pool[0], pool[2]]
    moved = 0
    for key in KEYS:
        full = balancer.select(pool, key)
        partial = balancer.select(usable, key)
        assert partial in usable
        if full is pool[1]:
            moved += 1
        else:
            assert partial is full, key
    assert moved > 2000  # b owned about a third of the keys
    # Its keys spread over both remaining instances rather than all landing on one.
    spread = Counter(balancer.select(usable, k).config.name for k in KEYS if balancer.select(pool, k) is pool[1])
    assert set(spread) == {"a", "c"}


def test_consistent_hash_respects_weights() -> None:
    pool = pool_of(1, 3)
    balancer = ConsistentHash(pool)
    counts = Counter(balancer.select(pool, k).config.name for k in KEYS)
    assert counts["b"] / len(KEYS) == pytest.approx(0.75, abs=0.07), counts


def test_consistent_hash_same_backend_twice_with_different_keys_shares_the_keys() -> None:
    """Two instances of one hosted API (same base_url and model) that differ only in their API key are two
    instances: both must own part of the ring, as they do for every other balancer."""
    cfgs = [
        InstanceConfig(name="m", base_url="https://api.example.test", headers={"Authorization": f"Bearer key-{i}"})
        for i in (1, 2)
    ]
    pool = [
        Instance(cfg, "chat", _instance_urls("chat", cfg), DEFAULT_TIMEOUTS["chat"], ADAPTERS["openai"]) for cfg in cfgs
    ]
    balancer = ConsistentHash(pool)
    counts = Counter(balancer.select(pool, k).headers["Authorization"] for k in KEYS)
    assert set(counts) == {"Bearer key-1", "Bearer key-2"}, counts
    assert min(counts.values()) > 0.35 * len(KEYS), counts


def test_consistent_hash_without_a_key_still_answers() -> None:
    pool = pool_of(1, 1)
    assert ConsistentHash(pool).select(pool, None) in pool


# --- ip hash ---------------------------------------------------------------------------------------------------


def test_ip_hash_is_stable_per_key() -> None:
    pool = pool_of(1, 1, 1)
    balancer = IpHash(pool)
    first = {k: balancer.select(pool, k) for k in KEYS[:1000]}
    assert all(balancer.select(pool, k) is inst for k, inst in first.items())
    assert all(IpHash(pool).select(pool, k) is inst for k, inst in first.items())


@pytest.mark.parametrize("weights", [(1, 1, 1), (1, 1, 2), (1, 3)])
def test_ip_hash_spreads_keys_by_weight(weights: tuple[float, ...]) -> None:
    pool = pool_of(*weights)
    balancer = IpHash(pool)
    counts = Counter(balancer.select(pool, f"10.0.{i // 256}.{i % 256}") for i in range(len(KEYS)))
    total = sum(weights)
    for inst, weight in zip(pool, weights, strict=True):
        assert counts[inst] / len(KEYS) == pytest.approx(weight / total, abs=0.03), counts


def test_ip_hash_unusable_instance_keys_go_to_usable_ones() -> None:
    pool = pool_of(1, 1, 1)
    balancer = IpHash(pool)
    usable = [pool[0], pool[2]]
    picks = [balancer.select(usable, k) for k in KEYS]
    assert set(picks) == set(usable)
    assert all(balancer.select(usable, k) is p for k, p in zip(KEYS, picks, strict=True))


# --- end to end ------------------------------------------------------------------------------------------------

StartUpstream = Callable[..., tuple[FakeOpenAI, str]]
StartGateway = Callable[[dict[str, Any]], GatewayServer]


def _three_upstreams(start_upstream: StartUpstream) -> tuple[list[FakeOpenAI], list[dict[str, Any]]]:
    fakes, instances = [], []
    for name in ("a", "b", "c"):
        fake, url = start_upstream(name)
        fakes.append(fake)
        instances.append({"name": "m", "base_url": url})
    return fakes, instances


def _client(gw: GatewayServer, **kwargs: Any) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=gw.url + "/v1", api_key="x", max_retries=0, _strict_response_validation=True, **kwargs
    )


def _answered_by(client: openai.OpenAI, **kwargs: Any) -> str:
    out = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}], **kwargs)
    content = out.choices[0].message.content
    assert content is not None
    assert content.startswith("hello from ")
    return content.removeprefix("hello from ")


def test_consistent_hash_on_header_keeps_a_session_on_one_upstream(
    start_upstream: StartUpstream, start_gateway: StartGateway
) -> None:
    _fakes, instances = _three_upstreams(start_upstream)
    gw = start_gateway(
        {
            "services": {
                "chat": {"load_balance": "consistent_hash", "hash_on": "header:X-Session", "instances": instances}
            }
        }
    )
    assert isinstance(gw.gateway.table.pools[("chat", "m")].balancer, ConsistentHash)
    seen: dict[str, str] = {}
    for session in [f"session-{i}" for i in range(24)]:
        client = _client(gw, default_headers={"X-Session": session})
        answers = {_answered_by(client) for _ in range(4)}
        assert len(answers) == 1, (session, answers)
        seen[session] = answers.pop()
    # Different sessions are spread over the upstreams (all 24 on one of three would be a broken hash).
    assert len(set(seen.values())) >= 2, seen
    # Without the header the client IP is hashed: every request from here goes to one upstream.
    plain = _client(gw)
    assert len({_answered_by(plain) for _ in range(6)}) == 1
    # The session, not the client address or connection, decides.
    for session, upstream in list(seen.items())[:6]:
        with _client(gw, default_headers={"X-Session": session}) as fresh:
            assert _answered_by(fresh) == upstream


def test_consistent_hash_on_user_field(start_upstream: StartUpstream, start_gateway: StartGateway) -> None:
    _fakes, instances = _three_upstreams(start_upstream)
    gw = start_gateway(
        {"services": {"chat": {"load_balance": "consistent_hash", "hash_on": "user", "instances": instances}}}
    )
    client = _client(gw)
    seen: dict[str, str] = {}
    for user in [f"user-{i}" for i in range(24)]:
        answers = {_answered_by(client, user=user) for _ in range(4)}
        assert len(answers) == 1, (user, answers)
        seen[user] = answers.pop()
    assert len(set(seen.values())) >= 2, seen
    # The user field, not a header, is what is hashed.
    for user, upstream in list(seen.items())[:6]:
        for i in range(3):
            noisy = _client(gw, default_headers={"X-Session": f"other-{i}"})
            assert _answered_by(noisy, user=user) == upstream


def test_per_model_balancer_override(start_upstream: StartUpstream, start_gateway: StartGateway) -> None:
    _fake, url = start_upstream("a")
    gw = start_gateway(
        {
            "services": {
                "chat": {
                    "load_balance": "random",
                    "models": {
                        "m": {"load_balance": "least_connections"},
                        "h": {"load_balance": "consistent_hash", "hash_on": "user"},
                    },
                    "instances": [
                        {"name": "m", "base_url": url},
                        {"name": "n", "base_url": url},
                        {"name": "h", "base_url": url},
                    ],
                },
                "embedding": {"instances": [{"name": "m", "base_url": url}]},
            }
        }
    )
    pools = gw.gateway.table.pools
    assert isinstance(pools[("chat", "m")].balancer, LeastConnections)
    assert isinstance(pools[("chat", "n")].balancer, WeightedRandom)
    assert isinstance(pools[("chat", "h")].balancer, ConsistentHash)
    assert pools[("chat", "h")].hash_on == "user"
    assert pools[("chat", "n")].hash_on == "client_ip"
    # The override belongs to its service only: the embedding pool of the same name keeps the default.
    assert isinstance(pools[("embedding", "m")].balancer, SmoothRoundRobin)
    assert _answered_by(_client(gw)) == "a"


def test_inflight_counters_never_drift(start_upstream: StartUpstream, start_gateway: StartGateway) -> None:
    good, good_url = start_upstream("good")
    bad, bad_url = start_upstream("bad")
    bad.fail(
        "/v1/chat/completions", 500, {"error": {"message": "boom", "type": "server_error", "param": None, "code": None}}
    )
    bad.fail("/v1/embeddings", 429, {"error": "slow down"}, headers={"Retry-After": "1"})
    refused_url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    instances = [{"name": "m", "base_url": u} for u in (good_url, bad_url, refused_url)]
    gw = start_gateway(
        {
            "services": {
                "chat": {"load_balance": "round_robin", "instances": instances},
                "embedding": {"load_balance": "round_robin", "instances": instances},
            }
        }
    )
    client = _client(gw)
    outcomes: Counter[str] = Counter()
    for i in range(9):
        try:
            if i % 3 == 0:
                _answered_by(client)
            elif i % 3 == 1:
                chunks = list(
                    client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}], stream=True)
                )
                assert chunks
            else:
                client.embeddings.create(model="m", input="x", encoding_format="float")
            outcomes["ok"] += 1
        except openai.InternalServerError as exc:
            outcomes[f"status {exc.status_code}"] += 1
        except openai.RateLimitError:
            outcomes["status 429"] += 1
    # Round robin over good, failing and refused instances: every failure is failed over to the good one.
    assert outcomes == {"ok": 9}
    assert good.requests
    assert bad.requests
    table = gw.gateway.table
    assert len(table.all_instances()) == 6
    assert {inst.id: inst.inflight for inst in table.all_instances()} == {inst.id: 0 for inst in table.all_instances()}
