"""Property-based fuzzing of a real `bentoml serve`: 4,000 malformed or hostile requests, each gets
a 4xx with a reason (or, when it happens to be a valid request with hostile content, a 200 with one
answer per text); never a 5xx, and the server stays healthy throughout.

Hypothesis draws each request from the shapes a careless or hostile client sends: bodies that are not
JSON, JSON that is not an object, objects without the field, fields of every wrong type, blank, too long
and too many texts, deep nesting, bodies over ``serving.max_request_bytes``, wrong content types, bad
/feedback items, and texts made of any Unicode (control characters, lone surrogates, right-to-left marks).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.serving.serving_support import MAX_BATCH_ITEMS, MAX_TEXT_CHARS, Packaged

from refinery.loadtest.process import free_port, served
from refinery.serving import ServiceSettings, bentoml_serve_argv

pytestmark = pytest.mark.slow

MAX_REQUEST_BYTES = 16_384
#: Requests per property; the four properties below send 4 x 1,000 = 4,000 requests.
EXAMPLES = 1000

#: Requests each property sent, checked by the last test.
SENT: dict[str, int] = {}


def _post(server: httpx.Client, name: str, path: str, **kwargs: Any) -> httpx.Response:
    SENT[name] = SENT.get(name, 0) + 1
    return server.post(path, **kwargs)


_json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
_json = st.recursive(
    _json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
_blank = st.text(alphabet=" \t\n\r\u00a0\u2003", min_size=1, max_size=10)
_any_text = st.text(min_size=1, max_size=MAX_TEXT_CHARS)


@pytest.fixture(scope="module")
def server(packaged: Packaged, tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    port = free_port()
    settings = ServiceSettings.from_config(packaged.cfg).replace(max_request_bytes=MAX_REQUEST_BYTES)
    env = {"BENTOML_HOME": str(packaged.home), **settings.to_env()}
    work = tmp_path_factory.mktemp("fuzz")
    with served(
        bentoml_serve_argv(packaged.result.bento_tag, "127.0.0.1", port),
        env,
        f"http://127.0.0.1:{port}",
        90,
        work / "server.log",
        cwd=work,
    ) as proc:
        with httpx.Client(base_url=proc.base_url, timeout=30) as client:
            yield client
        assert proc.running(), "the server died during the fuzzing"
        assert client_is_healthy(proc.base_url)


def client_is_healthy(base_url: str) -> bool:
    with httpx.Client(base_url=base_url, timeout=30) as client:
        ready = client.get("/readyz").status_code == 200
        answer = client.post("/classify", json={"texts": "still answering after the fuzz"})
        return ready and answer.status_code == 200 and len(answer.json()) == 1


def _is_valid_text(value: object) -> bool:
    return isinstance(value, str) and bool(value.strip()) and len(value) <= MAX_TEXT_CHARS


def _expected_texts(payload: Any) -> int | None:
    """How many answers a valid /classify payload gets; None when it is invalid (a 4xx is due)."""
    if not isinstance(payload, dict) or "texts" not in payload:
        return None
    texts = payload["texts"]
    if isinstance(texts, str):
        return 1 if _is_valid_text(texts) else None
    if (
        isinstance(texts, list)
        and 0 < len(texts) <= MAX_BATCH_ITEMS
        and all(_is_valid_text(t) for t in texts)
    ):
        return len(texts)
    return None


def _check(response: httpx.Response, expected: int | None) -> None:
    assert response.status_code < 500, f"{response.status_code}: {response.text[:500]}"
    if expected is not None and response.status_code == 200:
        assert len(response.json()) == expected
        return
    assert 400 <= response.status_code < 500, (
        f"expected a 4xx, got {response.status_code}: {response.text[:300]}"
    )
    body = response.json()
    reason = body[0] if isinstance(body, list) and body else body
    assert isinstance(reason, dict) and (reason.get("error") or reason.get("detail")), response.text[:300]


_FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.function_scoped_fixture,
        HealthCheck.data_too_large,
    ],
    database=None,
)

_classify_payloads = st.one_of(
    _json.filter(lambda v: not isinstance(v, dict)),  # JSON, but not an object
    st.dictionaries(st.text(max_size=8).filter(lambda k: k != "texts"), _json, max_size=3),  # no field
    st.fixed_dictionaries({"texts": _json}),  # the field, anything in it
    st.fixed_dictionaries({"texts": _blank}),
    st.fixed_dictionaries(
        {"texts": st.lists(_any_text | _blank | _json_scalars, max_size=MAX_BATCH_ITEMS + 3)}
    ),
    st.fixed_dictionaries({"texts": st.text(min_size=MAX_TEXT_CHARS + 1, max_size=MAX_TEXT_CHARS + 50)}),
    st.fixed_dictionaries({"texts": _any_text}),  # valid, hostile content: any Unicode
)


@_FUZZ
@given(payload=_classify_payloads)
def test_classify_payloads(server: httpx.Client, payload: Any) -> None:
    _check(_post(server, "classify", "/classify", json=payload), _expected_texts(payload))


def _nested(depth: int) -> bytes:
    return b'{"texts": ' + b"[" * depth + b'"x"' + b"]" * depth + b"}"


_raw_bodies = st.one_of(
    st.binary(max_size=300),  # bytes, mostly not JSON
    st.text(max_size=200).map(str.encode),
    st.integers(min_value=50, max_value=5000).map(_nested),  # deep nesting
    st.integers(min_value=MAX_REQUEST_BYTES + 1, max_value=4 * MAX_REQUEST_BYTES).map(
        lambda n: b'{"texts": "' + b"a" * n + b'"}'
    ),  # over the size limit
    # Lone surrogates and other escapes only JSON's \u notation can carry.
    st.sampled_from([b'{"texts": "a\\ud800b"}', b'{"texts": ["\\udfff"]}', b'{"texts": "\\u0000"}']),
)


@_FUZZ
@given(body=_raw_bodies)
def test_raw_bodies(server: httpx.Client, body: bytes) -> None:
    try:
        payload: Any = json.loads(body)
        expected = _expected_texts(payload)
    except (ValueError, RecursionError):
        expected = None
    if len(body) > MAX_REQUEST_BYTES:
        expected = None
    response = _post(server, "raw", "/classify", content=body, headers={"content-type": "application/json"})
    _check(response, expected)
    if len(body) > MAX_REQUEST_BYTES:
        assert response.status_code == 413
        assert f"larger than {MAX_REQUEST_BYTES} bytes" in response.text


_content_types = st.sampled_from(
    [
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=xyz",
        "application/octet-stream",
        "application/vnd.bentoml+pickle",
        "application/json; charset=latin-1",
        "image/png",
    ]
)


@_FUZZ
@given(content_type=_content_types, body=st.binary(max_size=200))
def test_content_types(server: httpx.Client, content_type: str, body: bytes) -> None:
    response = _post(
        server, "content_types", "/classify", content=body, headers={"content-type": content_type}
    )
    if content_type.startswith("application/json"):
        _check(response, None)
    else:
        assert response.status_code == 415, f"{content_type}: {response.status_code} {response.text[:300]}"
        assert "takes a JSON body" in response.json()["error"]


_feedback_items = st.lists(
    st.one_of(
        _json,
        st.fixed_dictionaries(
            {"label": _json_scalars},
            optional={"text": _any_text | _blank | _json_scalars, "prediction_id": _json_scalars},
        ),
        st.fixed_dictionaries(
            {"prediction_id": st.text(max_size=40), "label": st.sampled_from(["negative", "positive"])}
        ),
    ),
    max_size=MAX_BATCH_ITEMS + 2,
)


@_FUZZ
@given(payload=st.one_of(_json, st.fixed_dictionaries({"items": _feedback_items | _json})))
def test_feedback_payloads(server: httpx.Client, payload: Any) -> None:
    response = _post(server, "feedback", "/feedback", json=payload)
    assert response.status_code < 500, f"{response.status_code}: {response.text[:500]}"
    if response.status_code != 200:
        _check(response, None)


def test_the_fuzzing_sent_its_whole_budget() -> None:
    if set(SENT) != {"classify", "raw", "content_types", "feedback"}:
        pytest.skip(f"only {sorted(SENT)} of the fuzzing ran")
    assert sum(SENT.values()) >= 4 * EXAMPLES, SENT
