"""The compiled helpers (modelrouter._speedups) against the pure-Python code they stand in for: on the same
inputs they must give the same answer byte for byte, or None (and the caller then takes the pure-Python path).
Inputs are generated from fixed seeds, so a failure replays; the nasty cases are written out as well."""

from __future__ import annotations

import json
import os
import random
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from modelrouter import speedups
from modelrouter.access.limits import memory
from modelrouter.access.limits.base import Decision
from modelrouter.access.limits.memory import MemoryBackend
from modelrouter.access.usage import usage_from_body
from modelrouter.config.model import LimitRule
from modelrouter.observability import observe
from modelrouter.observability.meter import Ended, Meter

compiled = pytest.mark.skipif(
    speedups.usage is None and os.environ.get("CI") != "true",
    reason="modelrouter._speedups is not built (no C compiler at install time); the pure-Python paths serve",
)


def test_the_helpers_are_built_in_ci() -> None:
    """CI installs with a compiler: the benchmark figures assume the compiled helpers, so a build that silently
    fell back to pure Python must not pass there."""
    if os.environ.get("CI") != "true" and speedups.usage is None:
        pytest.skip("not built here (no C compiler at install time)")
    assert speedups.usage is not None
    assert speedups.json_lines is not None
    assert speedups.json_kind(b"{}") == speedups.JSON_WITHOUT_USAGE


# --- usage -----------------------------------------------------------------------------------------------------

USAGE_BODIES = [
    b'{"id":"x","usage":{"prompt_tokens":9,"completion_tokens":41,"total_tokens":50}}',
    b'{"usage":{"prompt_tokens":0,"completion_tokens":0}}',
    b'{"usage":{"prompt_tokens":123456789012345678,"completion_tokens":1}}',  # 18 digits: still read
    b'{"usage":{"prompt_tokens":1234567890123456789,"completion_tokens":1}}',  # 19: left to Python
    b'{"usage": {"prompt_tokens": 9, "completion_tokens": 41}}',  # spaces: Python's regular expression
    b'{"usage":{"completion_tokens":41,"prompt_tokens":9}}',  # other order
    b'{"usage":{"input_tokens":7,"output_tokens":2}}',  # other names
    b'{"usage":{"prompt_tokens":5,"total_tokens":5}}',  # embeddings
    b'{"a":{"usage":{"prompt_tokens":1,"completion_tokens":1}},"usage":{"prompt_tokens":2,"completion_tokens":3}}',
    b'{"choices":[{"message":{"content":"say \\"usage\\":{\\"prompt_tokens\\":1"}}]}',  # inside a string
    b'{"usage":{"prompt_tokens":,"completion_tokens":1}}',
    b'{"usage":{"prompt_tokens":12',  # cut short
    b'"usage"',
    b"",
    b"no usage here",
]


@compiled
@pytest.mark.parametrize("body", USAGE_BODIES)
def test_usage_matches_the_python_reader(body: bytes) -> None:
    assert speedups.usage is not None
    fast = speedups.usage(body)
    assert fast is None or fast == usage_from_body(body)


@compiled
def test_usage_reads_the_common_form_and_leaves_the_rest() -> None:
    assert speedups.usage is not None
    assert speedups.usage(USAGE_BODIES[0]) == (9, 41)
    assert speedups.usage(USAGE_BODIES[8]) == (2, 3)  # the last usage object
    assert speedups.usage(USAGE_BODIES[3]) is None
    assert speedups.usage(USAGE_BODIES[4]) is None
    assert usage_from_body(USAGE_BODIES[4]) == (9, 41)
    assert all(speedups.usage(body) is None for body in USAGE_BODIES[9:])


@compiled
def test_usage_on_random_near_misses() -> None:
    """Well-formed answers, mutated a few bytes at a time: whatever the compiled reader accepts, the Python
    reader must read the same."""
    assert speedups.usage is not None
    rng = random.Random(7)
    alphabet = b'{}":, 0123456789\\usageprompt_tokenscompletion_x\xc3\xa9'
    read = 0
    for _ in range(5000):
        body = bytearray(rng.choice(USAGE_BODIES[:3] + USAGE_BODIES[8:9]))
        for _ in range(rng.randrange(0, 4)):
            at = rng.randrange(0, len(body) + 1)
            kind = rng.randrange(3)
            if kind == 0:
                body.insert(at, rng.choice(alphabet))
            elif kind == 1 and at < len(body):
                del body[at]
            elif at < len(body):
                body[at] = rng.choice(alphabet)
        fast = speedups.usage(bytes(body))
        if fast is not None:
            read += 1
            assert fast == usage_from_body(bytes(body)), bytes(body)
    assert read > 1000  # most mutations leave the usage readable


# --- json_kind -------------------------------------------------------------------------------------------------


def _kind_by_orjson(body: bytes) -> int:
    """What json_kind must answer, found the slow way."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return speedups.JSON_INVALID
    if not isinstance(data, dict):
        return speedups.JSON_OTHER
    return speedups.JSON_WITH_USAGE if isinstance(data.get("usage"), dict) else speedups.JSON_WITHOUT_USAGE


JSON_BODIES = [
    b'{"id":"x","choices":[{"message":{"role":"assistant","content":"Hi \\u00e9 \xc3\xa9 \xf0\x9f\x98\x80"}}],'
    b'"usage":{"prompt_tokens":3,"completion_tokens":2}}',
    b'{"object":"list","data":[{"embedding":[0.1,-2.5e-05,3E+2,0,-0.0,1e299,1.5e-400],"index":0}],"model":"m"}',
    b'[1, 2, {"a": [true, false, null]}, "x\\"\\\\\\/\\b\\f\\n\\r\\t"]',
    b' {"usage" : null , "usage": {"a": 1}} ',  # the last one counts, as in a dict
    b'{"usage":{"x":1},"usage":[1]}',
    b'{"choices":[{"usage":{"prompt_tokens":1}}]}',  # a nested usage is not the answer's
    b'{"choices":[{"message":{"content":"\\"usage\\":{}"}}]}',  # nor one inside a string
    b'"\\ud83d\\ude00"',
    b"-0.5e-7",
    b"{}",
    b"[]",
    b'{"usage":{}}',
    b"\t\r\n true \n",
    # each of these is refused by orjson
    b"",
    b"   ",
    b"\xef\xbb\xbf{}",  # a byte-order mark
    b"{}\x00",
    b"{} {}",
    b"[1,]",
    b'{"a":1,}',
    b"01",
    b"-",
    b"1.",
    b".5",
    b"1e",
    b"+1",
    b"NaN",
    b"Infinity",
    b"nul",
    b"tru",
    b"'a'",
    b'{"a" 1}',
    b"{a:1}",
    b'"\\x"',
    b'"\\u12"',
    b'"\\ud800"',  # a high surrogate alone
    b'"\\udc00"',  # a low one alone
    b'"\\ud800\\u0041"',
    b'"tab\there"',  # a raw control character
    b'"\xc0\x80"',  # overlong
    b'"\xed\xa0\x80"',  # a surrogate in UTF-8
    b'"\xf4\x90\x80\x80"',  # past U+10FFFF
    b'"\xe2\x82"',  # cut short
    b'"\xff"',
    b'{"a":"unterminated',
    b'{"usage":{"prompt_tokens":1',
    b"<html>502 Bad Gateway</html>",
]


@compiled
@pytest.mark.parametrize("body", JSON_BODIES)
def test_json_kind_agrees_with_orjson(body: bytes) -> None:
    assert speedups.json_kind(body) == _kind_by_orjson(body)


@compiled
@pytest.mark.parametrize("depth", [1, 1023, 1024, 1025, 5000])
def test_json_kind_has_orjson_depth_limit(depth: int) -> None:
    assert speedups.json_kind(b"[" * depth + b"]" * depth) == _kind_by_orjson(b"[" * depth + b"]" * depth)
    nested = b'{"a":' * depth + b"1" + b"}" * depth
    assert speedups.json_kind(nested) == _kind_by_orjson(nested)


@compiled
def test_json_kind_leaves_to_orjson_what_it_cannot_decide_exactly() -> None:
    """A number that may overflow a double (orjson refuses those), a top-level key written with escapes (it may
    spell "usage"), or something that is not a bytes object: parse it to know."""
    for body in [b"1e308", b"1.8e308", b"1" + b"0" * 309, b'{"us\\u0061ge":{}}']:
        assert speedups.json_kind(body) == speedups.JSON_UNKNOWN, body
    assert speedups.json_kind(bytearray(b"{}")) == speedups.JSON_UNKNOWN  # type: ignore[arg-type]
    assert speedups.json_kind(b"1e299") == speedups.JSON_OTHER


def _mutated(rng: random.Random, seeds: list[bytes], alphabet: bytes) -> bytes:
    body = bytearray(rng.choice(seeds))
    for _ in range(rng.randint(1, 4)):
        at = rng.randint(0, len(body))
        op = rng.random()
        if op < 0.4 and body:
            del body[min(at, len(body) - 1)]
        elif op < 0.7:
            body.insert(at, rng.choice(alphabet))
        elif body:
            body[min(at, len(body) - 1)] = rng.choice(alphabet)
    return bytes(body)


@compiled
def test_json_kind_on_random_near_misses() -> None:
    """Answers mutated a few bytes at a time, random short byte strings, random UTF-8 and random escapes:
    whatever json_kind decides must be what orjson decides."""
    rng = random.Random(11)
    seeds = [body for body in JSON_BODIES[:13]]
    alphabet = b'{}[]",:\\ -+.0123456789eEtrufalsnbu\t\n\r\x00\x1f\x7f\x80\xc3\xa9\xed\xa0\xf0\x9f\xf4\x90'
    cases = [_mutated(rng, seeds, alphabet) for _ in range(20000)]
    cases += [bytes(rng.choice(alphabet) for _ in range(rng.randint(0, 10))) for _ in range(5000)]
    utf8 = [0xED, 0xF4, 0xF0, 0xE0, 0x90, 0xA0, 0xBF, 0xC2, 0xDF]
    for _ in range(5000):
        text = bytes(rng.choice([rng.randint(0x80, 0xFF), rng.randint(0, 0x7F), rng.choice(utf8)]) for _ in range(5))
        cases.append(b'"' + text + b'"')
    for _ in range(5000):
        units = [rng.choice([rng.randint(0, 0xFFFF), rng.randint(0xD800, 0xDBFF), rng.randint(0xDC00, 0xDFFF)])]
        units.append(rng.randint(0xD800, 0xE000))
        cases.append(b'"' + b"".join(b"\\u%04x" % unit for unit in units) + b'"')
    decided = 0
    for body in cases:
        kind = speedups.json_kind(body)
        if kind != speedups.JSON_UNKNOWN:
            decided += 1
            assert kind == _kind_by_orjson(body), body
    assert decided > len(cases) * 0.95


@compiled
def test_json_kind_reads_long_runs_of_text_and_numbers() -> None:
    """The eight-bytes-at-a-time loops: a special byte at every offset of a long string or digit run."""
    for at in range(40):
        text = bytearray(b'"' + b"a" * 40 + b'"')
        for byte in (0x22, 0x5C, 0x1F, 0x00, 0xC3, 0x7F):
            text[1 + at] = byte
            assert speedups.json_kind(bytes(text)) == _kind_by_orjson(bytes(text)), bytes(text)
        digits = bytearray(b"[1" + b"2" * 40 + b"." + b"3" * 40 + b"]")
        for byte in b"x.e-,]/:":
            changed = bytearray(digits)
            changed[2 + at] = byte
            assert speedups.json_kind(bytes(changed)) == _kind_by_orjson(bytes(changed)), bytes(changed)


# --- access-log lines -------------------------------------------------------------------------------------------

NASTY = [
    '},{"ts":1}',
    'a"b\\c',
    "line\nbreak\r\t\b\f",
    "\x00\x01\x1f\x7f",
    "ünïcødé ✓ \u2028 \U0001f600",
    "</script>",
    "",
]


def _batch(rng: random.Random, size: int) -> list[Ended]:
    batch: list[Ended] = []
    for _ in range(size):
        meter = Meter()
        meter.request_id = rng.choice([None, "0a1b2c3d00000001", *NASTY])
        meter.model = rng.choice([None, "m", "llama-3.1-8b", *NASTY])
        meter.instance = rng.choice([None, "chat/m@http://127.0.0.1:8000", *NASTY])
        meter.attempts = rng.randrange(0, 4)
        meter.upstream_s = rng.choice([0.0, rng.random(), rng.random() * 1e-4, rng.random() * 600])
        meter.ttft_s = rng.choice([None, 0.0, rng.random(), 1e-7, 0.0123456])
        meter.prompt_tokens = rng.choice([0, 9, rng.randrange(0, 2**40)])
        meter.completion_tokens = rng.choice([0, 41, rng.randrange(0, 2**40)])
        meter.bytes_out = rng.randrange(0, 2**31)
        seconds = rng.choice([0.0, rng.random() * 1e-3, rng.random() * 300, 0.0005, 1.0])
        end = rng.random() * 1e6
        status = rng.choice([200, 400, 429, 499, 502])
        key_id = rng.choice([None, "config:team", *NASTY])
        client_ip = rng.choice([None, "127.0.0.1", "2001:db8::1", *NASTY])
        batch.append((rng.choice(["chat", "embeddings"]), meter, status, seconds, end, key_id, client_ip))
    return batch


@compiled
def test_access_log_lines_match_orjson_byte_for_byte() -> None:
    assert speedups.json_lines is not None
    rng = random.Random(11)
    for size in (0, 1, 2, 64, 300):
        for _ in range(20):
            batch = _batch(rng, size)
            wall = rng.choice([0.0, 1.7e9, 1795666767.6885])
            rows = observe._rows(batch, wall)
            fast = speedups.json_lines(observe._FIELDS, rows)
            assert fast == observe.encode(observe._records(rows))
            assert fast is not None
            assert len(fast.splitlines()) == size
            for line in fast.splitlines():
                assert list(json.loads(line)) == list(observe._FIELDS)


@compiled
@pytest.mark.parametrize(
    "row",
    [
        (1e16,),  # orjson writes it in exponent form
        (float("nan"),),  # written as null, by both
        (2**63,),  # beyond 64 bits
        ("\ud800",),  # a lone surrogate is not UTF-8
        (b"bytes",),
        (1.5, "extra"),  # not as wide as the keys
    ],
)
def test_json_lines_declines_what_it_does_not_write_exactly(row: tuple[object, ...]) -> None:
    assert speedups.json_lines is not None
    out = speedups.json_lines(("ts",), [row])
    if isinstance(row[0], float) and row[0] != row[0]:
        assert out == b'{"ts":null}\n'
    else:
        assert out is None


def test_a_line_the_compiled_helper_declines_is_still_written(tmp_path: Path) -> None:
    """Numbers orjson writes in exponent form, strings it cannot encode either (lone surrogates): the batch
    is still logged, as valid JSON, one line per request."""
    path = tmp_path / "access.log"
    log = observe.AccessLog(str(path))
    huge, odd, plain = Meter(), Meter(), Meter()
    huge.upstream_s = 1e14
    odd.model = "bad \ud800 model"
    plain.model = "m"
    log.write([("chat", huge, 200, 0.001, 1.0, None, None)])
    log.write([("chat", odd, 200, 0.001, 1.0, None, None), ("chat", plain, 200, 0.002, 2.0, None, None)])
    log.close()
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert lines[0]["upstream_ms"] == pytest.approx(1e17)
    assert [line["model"] for line in lines] == [None, "bad \ud800 model", "m"]


def test_the_pure_python_paths_serve_when_switched_off() -> None:
    """MODELROUTER_NO_SPEEDUPS=1 (or no compiler at install time): nothing compiled is used, and the access log
    and usage reading still work (the rest of the suite runs them too, through the monkeypatched paths)."""
    import subprocess

    code = (
        "from modelrouter import speedups\n"
        "from modelrouter.observability import meter, observe\n"
        "assert speedups.usage is None and speedups.json_lines is None\n"
        "assert speedups.json_kind(b'{}') == speedups.JSON_UNKNOWN\n"
        "assert meter.compiled_usage is None and observe.compiled_json_lines is None\n"
        'm = meter.Meter(); m.body = b\'{"usage":{"prompt_tokens":9,"completion_tokens":41}}\'; m.read_body()\n'
        "assert (m.prompt_tokens, m.completion_tokens) == (9, 41)\n"
    )
    env = {**os.environ, "MODELROUTER_NO_SPEEDUPS": "1"}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


# --- token buckets ---------------------------------------------------------------------------------------------


def _token_rules() -> list[LimitRule]:
    return [
        LimitRule(scope="global", rate=5, period=1),
        LimitRule(scope="ip", rate=3, period=2, burst=6),
        LimitRule(scope="key", rate=1000, period=60, unit="tokens"),
        LimitRule(scope="global", rate=2, period=1, algorithm="sliding_window"),  # not a token bucket: Python's
        LimitRule(scope="user", rate=3, period=1, burst=0.9, unit="tokens"),  # fractions: the float slack matters
    ]


def _replay(compiled_steps: bool, seed: int) -> list[object]:
    """A random run of take_all / adjust_all on one MemoryBackend, as the limiter drives it: what it answered and
    every state after each step (floats as their exact hex, so "equal" is bit for bit)."""
    rng = random.Random(seed)
    rules = _token_rules()
    backend = MemoryBackend()
    saved = memory._token_take_all, memory._token_adjust_all
    if not compiled_steps:
        memory._token_take_all = memory._token_adjust_all = None
    log: list[object] = []
    try:
        now = 1000.0
        for _ in range(400):
            now += rng.choice([0.0, 0.0, 0.001, 0.1, 0.1, 0.2, 0.37, 1.5, -0.2])  # a clock may step back
            keys = rng.sample(range(10), rng.randint(1, 4))
            items: list[tuple[str, Any, LimitRule]] = []
            for k in keys:
                rule = rules[k % len(rules)] if rng.random() < 0.9 else rules[0]
                cost: Any = 1.0 if rule.unit == "requests" else float(rng.randint(1, 400))
                if rule.burst == 0.9:
                    cost = rng.choice([0.1, 0.2, 0.3, 0.6, 0.7, 0.9])
                items.append((f"b{k}", cost, rule))
            if rng.random() < 0.05:
                items.append(items[0])  # one bucket named twice: stepped twice in turn
            if rng.random() < 0.7:
                refusal, decisions = backend.take_all(items, now)
                log.append(("take", refusal, decisions))
            else:
                deltas = [(key, rng.choice([0, 3, -5, 40, -400, 2.5, -0.0]), rule) for key, _, rule in items]
                backend.adjust_all(deltas, now)
                log.append(("adjust",))
            log.append(
                sorted((key, {f: float(v).hex() for f, v in (state or {}).items()}) for key, state in backend.items())
            )
    finally:
        memory._token_take_all, memory._token_adjust_all = saved
    return log


@compiled
@pytest.mark.parametrize("seed", range(12))
def test_token_bucket_steps_match_the_python_steps_bit_for_bit(seed: int) -> None:
    """The compiled take_all / adjust_all leave the same states and answer the same decisions as the Python
    steps, refusals (and the give-back of what the earlier buckets took) included."""
    assert speedups.token_take_all is not None
    assert _replay(True, seed) == _replay(False, seed)


@compiled
def test_token_bucket_steps_decline_what_python_must_do() -> None:
    """None, and no state touched, for a first step, another algorithm, another rule object or a clock that is not
    a float: the Python path then does the whole step."""
    assert speedups.token_take_all is not None
    assert speedups.token_adjust_all is not None
    rule = LimitRule(scope="global", rate=5, period=1)
    backend = MemoryBackend()
    entries = backend._entries
    items = [("a", 1.0, rule)]
    assert speedups.token_take_all(entries, items, 1.0, Decision) is None  # never stepped
    backend.take_all(items, 1.0)
    before = dict(backend.state("a") or {})
    same = LimitRule(scope="global", rate=5, period=1)  # equal, but another object: a reload
    assert speedups.token_take_all(entries, [("a", 1.0, same)], 2.0, Decision) is None
    assert speedups.token_take_all(entries, items, 2, Decision) is None
    assert speedups.token_take_all(entries, [("a", 1, rule)] * 1, 2.0, Decision) is not None
    assert speedups.token_adjust_all(entries, [("a", 2**60, rule)], 2.0) is None  # not exact
    assert speedups.token_take_all(entries, [("a", 1.0, rule), ("zz", 1.0, rule)], 2.0, Decision) is None
    assert backend.state("a") != before  # the one accepted call above stepped it
    refusal, decisions = speedups.token_take_all(entries, [("a", 99.0, rule)], 3.0, Decision)
    assert type(refusal) is Decision
    assert not refusal.allowed
    assert decisions == [refusal]


@compiled
@pytest.mark.parametrize("compiled_steps", [True, False])
def test_token_bucket_admits_a_refill_that_falls_short_only_in_binary(compiled_steps: bool) -> None:
    """0.1 s of refill at 3 units/s admits a cost of 0.3, though (0.47 - 0.37) * 3 < 0.3 in binary: both paths
    keep the same slack."""
    rule = LimitRule(scope="global", rate=3, period=1, unit="tokens")
    backend = MemoryBackend()
    saved = memory._token_take_all
    if not compiled_steps:
        memory._token_take_all = None
    try:
        assert backend.take_all([("a", 3.0, rule)], 0.37)[0] is None  # the bucket emptied (Python's first step)
        assert backend.take_all([("a", 3.0, rule)], 0.37)[0] is not None  # nothing left (the second: compiled)
        assert (0.47 - 0.37) * 3 < 0.3
        assert backend.take_all([("a", 0.3, rule)], 0.47)[0] is None
    finally:
        memory._token_take_all = saved
