"""The client wrapper's retry, backoff and token policy (an httpx transport stands in for the network;
the sync itself is tested against a real server in test_studio_sync.py)."""

from __future__ import annotations

import base64
import json
import time

import httpx
import pytest

from autolabel.errors import AutolabelError
from autolabel.studio.client import StudioClient, StudioUnavailable, UncertainWrite


def _client(handler, token="legacy-token-0123456789", retries=3):
    return StudioClient(
        "http://ls.test", token, retries=retries, backoff=0.001, transport=httpx.MockTransport(handler)
    )


@pytest.mark.parametrize(
    "answers, ok",
    [
        ([503, 502, 200], True),
        ([429, 200], True),
        ("timeout-then-200", True),
        ([500, 500, 500, 500], False),
    ],
)
def test_idempotent_calls_retry_transient_failures(answers, ok):
    calls = []
    script = [httpx.ReadTimeout("slow"), 200] if answers == "timeout-then-200" else list(answers)

    def handler(request):
        calls.append(request)
        step = script[min(len(calls), len(script)) - 1]
        if isinstance(step, Exception):
            raise step
        return httpx.Response(step, json={"ok": True} if step == 200 else {"detail": "busy"})

    with _client(handler) as client:
        if ok:
            assert client.request("GET", "/api/projects/") == {"ok": True}
            assert len(calls) == len(script)
        else:
            with pytest.raises(StudioUnavailable, match="HTTP 500 after 4 tries"):
                client.request("GET", "/api/projects/")
    assert all(c.headers["Authorization"] == "Token legacy-token-0123456789" for c in calls)


@pytest.mark.parametrize("failure", [httpx.ReadTimeout("slow"), httpx.ConnectError("reset"), 502])
def test_imports_are_never_retried_blindly(failure):
    calls = []

    def handler(request):
        calls.append(request)
        if isinstance(failure, Exception):
            raise failure
        return httpx.Response(failure)

    with _client(handler) as client, pytest.raises(UncertainWrite):
        client.import_tasks(1, [{"data": {"image": "x"}}])
    assert len(calls) == 1


def test_unauthorized_is_one_line_without_the_token():
    with (
        _client(
            lambda r: httpx.Response(401, json={"detail": "nope"}), token="very-secret-token-xyz"
        ) as client,
        pytest.raises(AutolabelError) as err,
    ):
        client.request("GET", "/api/projects/")
    message = str(err.value)
    assert "401" in message and "\n" not in message and "very-secret-token-xyz" not in message


def _jwt(payload: dict) -> str:
    def part(obj):
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'HS256', 'typ': 'JWT'})}.{part(payload)}.c2ln"


def test_personal_access_token_is_exchanged_for_bearer_tokens():
    refresh = _jwt({"token_type": "refresh", "exp": int(time.time()) + 3600})
    seen = []

    def handler(request):
        if request.url.path == "/api/token/refresh/":
            assert json.loads(request.content) == {"refresh": refresh}
            return httpx.Response(200, json={"access": f"access-{len(seen)}"})
        seen.append(request.headers["Authorization"])
        # The first access token "expires": the client refreshes once and repeats the call.
        if seen[-1] == "Bearer access-0":
            return httpx.Response(401)
        return httpx.Response(200, json={"id": 1})

    with _client(handler, token=refresh) as client:
        assert client.request("GET", "/api/current-user/whoami") == {"id": 1}
    assert seen == ["Bearer access-0", "Bearer access-1"]


@pytest.mark.parametrize("total", [0, 3, 4, 5])
def test_task_listing_stops_at_the_last_page(total):
    # Label Studio answers 404 for a page past the end (e.g. page 3 of 4 tasks at 2 per page).
    pages = []

    def handler(request):
        page = int(request.url.params["page"])
        pages.append(page)
        start = (page - 1) * 2
        if start >= total and page > 1:
            return httpx.Response(404, json={"detail": "Invalid page."})
        ids = list(range(start, min(start + 2, total)))
        return httpx.Response(200, json={"total": total, "tasks": [{"id": i} for i in ids]})

    with _client(handler) as client:
        assert [t["id"] for t in client.iter_tasks(1, page_size=2)] == list(range(total))
    assert len(pages) == max(1, -(-total // 2))
