"""A thin wrapper over label-studio-sdk: token handling, retries with backoff, one-line errors.

The SDK (``label_studio_sdk.LabelStudio``) does the typed calls (projects, storages, annotations)
and resolves both kinds of token: a personal access token (a JWT refresh token, exchanged for
short-lived Bearer tokens) and a legacy token (``Authorization: Token ...``). The bulk paths of the
sync (task import with ``return_task_ids``, prediction import, paged task listing, data-manager
actions) go through the same ``httpx.Client`` with the same authorization, because they move
thousands of tasks per call and the SDK would validate every one into a pydantic object.

Idempotent calls are retried on timeouts, connection errors, 429 and 5xx with exponential backoff.
Calls that create things are never retried blindly: a failure whose outcome is unknown raises
``UncertainWrite`` and the caller reconciles against the server (see ``studio.push.reconcile``).
HTTP calls, SDK calls and file fetches share one retry loop (``StudioClient._retrying``).

The token is never put into a message, log line or exception.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from autolabel.errors import AutolabelError

if TYPE_CHECKING:
    from typing import Self  # Python 3.11; annotations only

RETRY_STATUSES = {408, 429, 500, 502, 503, 504}
T = TypeVar("T")


class StudioUnavailable(AutolabelError):
    """The server cannot be reached or keeps failing."""


class NotFound(AutolabelError):
    """The project, task or annotation does not exist (any more)."""


class UncertainWrite(AutolabelError):
    """A create/import call failed in a way that leaves its outcome unknown; reconcile, then retry."""


@dataclass(frozen=True)
class Connection:
    url: str
    token: str

    def __repr__(self) -> str:
        return f"Connection(url={self.url!r}, token=***)"


def _is_jwt(token: str) -> bool:
    return token.count(".") == 2 and token.startswith("ey")


class StudioClient:
    def __init__(
        self,
        url: str,
        token: str,
        *,
        timeout: float = 120.0,
        retries: int = 5,
        backoff: float = 0.5,
        transport=None,
    ):
        import httpx

        if not token:
            raise AutolabelError(
                "no Label Studio API token: run 'autolabel studio start' or set LABEL_STUDIO_API_KEY"
            )
        self.url = url.rstrip("/")
        self._token = token
        self._retries = retries
        self._backoff = backoff
        self._http = httpx.Client(base_url=self.url, timeout=timeout, transport=transport)
        self._access: tuple[str, float] | None = None  # (Bearer token, expiry) for personal access tokens
        self._sdk = None

    def __repr__(self) -> str:
        return f"StudioClient(url={self.url!r})"

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- auth -------------------------------------------------------------------------------
    @property
    def sdk(self):
        if self._sdk is None:
            from label_studio_sdk.client import LabelStudio

            self._sdk = LabelStudio(base_url=self.url, api_key=self._token, httpx_client=self._http)
        return self._sdk

    def _auth_header(self, force_refresh: bool = False) -> dict[str, str]:
        if not _is_jwt(self._token):
            return {"Authorization": f"Token {self._token}"}
        if force_refresh or self._access is None or self._access[1] < time.monotonic():
            resp = self._send("POST", "/api/token/refresh/", json={"refresh": self._token}, auth=False)
            if resp.status_code in (401, 403):
                raise self._auth_error(resp.status_code)
            if resp.status_code >= 400:
                raise StudioUnavailable(
                    f"Label Studio at {self.url}: token refresh failed ({resp.status_code})"
                )
            # Access tokens live ~5 minutes; refresh a little early.
            self._access = (resp.json()["access"], time.monotonic() + 200)
        return {"Authorization": f"Bearer {self._access[0]}"}

    def _auth_error(self, code: int) -> AutolabelError:
        return AutolabelError(
            f"Label Studio at {self.url} rejected the API token ({code}): use a personal access token "
            "(Account & Settings) or a legacy token with legacy tokens enabled for the organization"
        )

    # -- requests ---------------------------------------------------------------------------
    def _send(self, method: str, path: str, *, auth: bool = True, **kwargs):
        import httpx

        headers = kwargs.pop("headers", {})
        if auth:
            headers.update(self._auth_header())
        try:
            return self._http.request(method, path, headers=headers, **kwargs)
        except httpx.TransportError as exc:
            raise _Transient(type(exc).__name__) from None

    def _retrying(
        self, attempt: Callable[[], T], *, retries: int, unavailable: Callable[[str, int], str]
    ) -> T:
        """``attempt()`` until it answers; each ``_Transient`` it raises is retried with exponential
        backoff, ``retries`` times, then ``StudioUnavailable(unavailable(reason, tries))``."""
        tries = 0
        while True:
            try:
                return attempt()
            except _Transient as exc:
                tries += 1
                if tries > retries:
                    raise StudioUnavailable(unavailable(exc.reason, tries)) from None
                time.sleep(min(self._backoff * 2 ** (tries - 1), 10.0))

    def request(
        self, method: str, path: str, *, idempotent: bool = True, retries: int | None = None, **kwargs
    ) -> Any:
        """One API call; JSON answer (or None). Retries transient failures of idempotent calls."""
        refreshed = False

        def attempt() -> Any:
            nonlocal refreshed
            try:
                resp = self._send(method, path, **kwargs)
                if resp.status_code == 401 and _is_jwt(self._token) and not refreshed:
                    refreshed = True  # the access token expired: refresh once and repeat the call
                    self._auth_header(force_refresh=True)
                    resp = self._send(method, path, **kwargs)
            except _Transient as exc:
                if not idempotent:
                    raise UncertainWrite(f"{method} {path}: {exc.reason} (outcome unknown)") from None
                raise
            if resp.status_code in (401, 403):
                raise self._auth_error(resp.status_code)
            if resp.status_code in RETRY_STATUSES:
                if not idempotent and resp.status_code >= 500:
                    raise UncertainWrite(f"{method} {path}: server error {resp.status_code}")
                raise _Transient(f"HTTP {resp.status_code}")
            if resp.status_code == 404:
                raise NotFound(f"Label Studio {method} {path}: not found")
            if resp.status_code >= 400:
                raise AutolabelError(f"Label Studio {method} {path}: {resp.status_code} {_detail(resp)}")
            return resp.json() if resp.content else None

        return self._retrying(
            attempt,
            retries=self._retries if retries is None else retries,
            unavailable=lambda reason, tries: (
                f"cannot reach Label Studio at {self.url} ({reason} after {tries} tries): "
                "is it running ('autolabel studio status')?"
            ),
        )

    def sdk_call(self, fn, *args, idempotent: bool = True, **kwargs):
        """Run an SDK method with the same retry policy and error messages."""
        import httpx
        from label_studio_sdk.core.api_error import ApiError

        def attempt():
            try:
                return fn(*args, **kwargs)
            except httpx.TransportError as exc:
                if not idempotent:
                    raise UncertainWrite(f"{type(exc).__name__} (outcome unknown)") from None
                raise _Transient(type(exc).__name__) from None
            except ApiError as exc:
                if exc.status_code in (401, 403):
                    raise self._auth_error(exc.status_code) from None
                if exc.status_code not in RETRY_STATUSES:
                    raise AutolabelError(f"Label Studio: {exc.status_code} {_short(exc.body)}") from None
                if not idempotent:
                    raise UncertainWrite(f"server error {exc.status_code}") from None
                raise _Transient(f"HTTP {exc.status_code}") from None

        return self._retrying(
            attempt,
            retries=self._retries,
            unavailable=lambda reason, tries: (
                f"cannot reach Label Studio at {self.url} ({reason} after {tries} tries)"
            ),
        )

    # -- API --------------------------------------------------------------------------------
    def check(self) -> dict:
        """Who the token belongs to; fails fast (one retry) when nothing answers at the URL."""
        return self.request("GET", "/api/current-user/whoami", retries=1)

    def find_project(self, title: str) -> dict | None:
        pager = self.sdk_call(self.sdk.projects.list, title=title, page_size=100)
        for project in pager:
            if project.title == title:
                return _summary(project)
        return None

    def get_project(self, project_id: int) -> dict | None:
        try:
            project = self.request("GET", f"/api/projects/{project_id}/")
        except NotFound:
            return None
        return _summary(project)

    def create_project(self, title: str, label_config: str, description: str = "") -> dict:
        project = self.sdk_call(
            self.sdk.projects.create,
            title=title,
            label_config=label_config,
            description=description or "Pre-labels from autolabel; pull corrections with 'autolabel pull'.",
            idempotent=False,
        )
        return _summary(project)

    def set_label_config(self, project_id: int, label_config: str) -> None:
        self.update_project(project_id, label_config=label_config)

    def update_project(self, project_id: int, **fields) -> None:
        """Project settings by their API names: label_config, expert_instruction, show_instruction..."""
        self.sdk_call(self.sdk.projects.update, project_id, **fields)

    def ensure_local_storage(self, project_id: int, path: Path) -> int:
        path_text = str(Path(path).resolve())
        for storage in self.sdk_call(self.sdk.import_storage.local.list, project=project_id):
            if storage.path == path_text:
                return int(storage.id)
        storage = self.sdk_call(
            self.sdk.import_storage.local.create,
            project=project_id,
            path=path_text,
            use_blob_urls=False,
            title="autolabel images",
        )
        return int(storage.id)

    def import_tasks(self, project_id: int, tasks: list[dict]) -> list[int]:
        """Bulk import; the created task ids in input order. Never retried blindly (UncertainWrite)."""
        answer = self.request(
            "POST",
            f"/api/projects/{project_id}/import",
            params={"return_task_ids": "true"},
            json=tasks,
            idempotent=False,
        )
        ids = answer.get("task_ids") or []
        if len(ids) != len(tasks):
            raise UncertainWrite(f"import returned {len(ids)} task ids for {len(tasks)} tasks")
        return [int(i) for i in ids]

    def upload_files(self, project_id: int, files: list[tuple[str, bytes]]) -> dict[str, str]:
        """Upload image files without creating tasks; file name -> URL the server serves it at.

        Never retried blindly: a lost answer leaves orphan uploads (harmless) and the caller
        uploads again."""
        parts = [
            (f"file{i}", (name, data, "application/octet-stream")) for i, (name, data) in enumerate(files)
        ]
        answer = self.request(
            "POST",
            f"/api/projects/{project_id}/import",
            params={"commit_to_project": "false"},
            files=parts,
            idempotent=False,
        )
        ids = answer.get("file_upload_ids") or []
        listed = self.request(
            "GET", f"/api/projects/{project_id}/file-uploads", params={"ids": json.dumps(ids)}
        )
        urls = {}
        for item in listed or []:
            path = "/data/" + str(item["file"]).lstrip("/")
            # Stored as upload/<project>/<uuid>-<name>; the name is ours (unique per image).
            urls[path.rsplit("/", 1)[1].split("-", 1)[1]] = path
        return urls

    def import_predictions(self, project_id: int, predictions: list[dict]) -> None:
        self.request(
            "POST", f"/api/projects/{project_id}/import/predictions", json=predictions, idempotent=False
        )

    def delete_predictions(self, project_id: int, task_ids: list[int]) -> None:
        """Remove every prediction of these tasks (one data-manager action; idempotent)."""
        if task_ids:
            self.request(
                "POST",
                "/api/dm/actions",
                params={"id": "delete_tasks_predictions", "project": project_id},
                json={"selectedItems": {"all": False, "included": list(task_ids)}, "project": project_id},
            )

    def iter_tasks(
        self,
        project_id: int,
        *,
        fields: str = "all",
        updated_after: str | None = None,
        task_ids: list[int] | None = None,
        include: str | None = None,
        page_size: int = 1000,
    ) -> Iterator[dict]:
        """The project's tasks (optionally only those updated after an ISO time, or these ids), paged."""
        params: dict[str, Any] = {"project": project_id, "fields": fields, "page_size": page_size}
        if include:
            params["include"] = include
        query: dict[str, Any] = {}
        if updated_after:
            query["filters"] = {
                "conjunction": "and",
                "items": [
                    {
                        "filter": "filter:tasks:updated_at",
                        "operator": "greater",
                        "type": "Datetime",
                        "value": updated_after,
                    },
                ],
            }
        if task_ids is not None:
            if not task_ids:
                return
            query["selectedItems"] = {"all": False, "included": [int(t) for t in task_ids]}
        if query:
            query["ordering"] = ["tasks:id"]
            params["query"] = json.dumps(query)
        page, seen = 1, 0
        while True:
            try:
                answer = self.request("GET", "/api/tasks/", params={**params, "page": page})
            except NotFound:
                if page == 1:
                    raise
                return  # Label Studio answers 404 for a page past the end
            tasks = answer.get("tasks", []) if isinstance(answer, dict) else answer
            total = answer.get("total") if isinstance(answer, dict) else None
            yield from tasks
            seen += len(tasks)
            if len(tasks) < page_size or (total is not None and seen >= total):
                return
            page += 1

    def task_ids(self, project_id: int) -> set[int]:
        return {
            int(t["id"])
            for t in self.iter_tasks(project_id, fields="task_only", include="id", page_size=5000)
        }

    def iter_task_stamps(self, project_id: int, *, updated_after: str | None = None) -> Iterator[dict]:
        """Cheap change detection: task id, updated_at and its annotations' ids and updated_at only."""
        return self.iter_tasks(
            project_id,
            fields="all",
            updated_after=updated_after,
            include="id,annotations,updated_at",
            page_size=5000,
        )

    def export_annotated(self, project_id: int) -> list[dict]:
        """Every task with annotations, full annotation JSON included, in one export call."""
        answer = self.request(
            "GET",
            f"/api/projects/{project_id}/export",
            params={"exportType": "JSON", "download_all_tasks": "false"},
        )
        return answer or []

    def create_annotation(self, task_id: int, result: list[dict], *, was_cancelled: bool = False) -> int:
        answer = self.request(
            "POST",
            f"/api/tasks/{task_id}/annotations/",
            json={"result": result, "was_cancelled": was_cancelled},
            idempotent=False,
        )
        return int(answer["id"])

    def update_annotation(self, annotation_id: int, result: list[dict]) -> None:
        self.request("PATCH", f"/api/annotations/{annotation_id}/", json={"result": result})

    def delete_annotation(self, annotation_id: int) -> None:
        self.request("DELETE", f"/api/annotations/{annotation_id}/")

    def fetch_bytes(self, path: str) -> bytes:
        """A file the server serves (e.g. a task's image), as a browser would fetch it."""

        def attempt() -> bytes:
            resp = self._send("GET", path)
            if resp.status_code in (401, 403):
                raise self._auth_error(resp.status_code)
            if resp.status_code == 404:
                raise NotFound(f"Label Studio GET {path.split('?')[0]}: not found")
            if resp.status_code >= 400:
                raise _Transient(f"HTTP {resp.status_code}")
            return resp.content

        return self._retrying(
            attempt,
            retries=self._retries,
            unavailable=lambda reason, tries: f"cannot fetch a file from Label Studio at {self.url}",
        )

    def delete_task(self, task_id: int) -> None:
        self.request("DELETE", f"/api/tasks/{task_id}/")


def _summary(project) -> dict:
    """The fields of a project (an SDK object or the API's JSON) that autolabel reads."""
    get = project.get if isinstance(project, dict) else lambda key: getattr(project, key, None)
    summary = {key: get(key) for key in ("id", "title", "label_config", "description")}
    return {**summary, "description": summary["description"] or ""}


class _Transient(Exception):
    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def _detail(resp) -> str:
    try:
        body = resp.json()
    except ValueError:
        return resp.text[:200].strip()
    return _short(body)


def _short(body) -> str:
    if isinstance(body, dict):
        body = body.get("validation_errors") or body.get("detail") or body
    return " ".join(str(body).split())[:300]


def resolve_connection(ws, url: str | None = None, token: str | None = None) -> Connection:
    """Where to talk to: --url/--token, then LABEL_STUDIO_URL/LABEL_STUDIO_API_KEY, then
    ``studio.url`` in autolabel.yaml, then the workspace's own server (``autolabel studio start``)."""
    from autolabel.studio import server

    url = url or os.environ.get("LABEL_STUDIO_URL") or ws.config.studio.url
    token = token or os.environ.get("LABEL_STUDIO_API_KEY")
    creds = server.read_credentials(ws.studio_dir)
    if url is None:
        state = server.status(ws.studio_dir)
        if not state.running:
            raise AutolabelError(
                "no Label Studio server: run 'autolabel studio start' or pass --url (LABEL_STUDIO_URL)"
            )
        url = state.url
    if token is None and creds is not None:
        token = creds.token
    if not token:
        raise AutolabelError(f"no API token for {url}: pass --token or set LABEL_STUDIO_API_KEY")
    return Connection(url=url, token=token)


def connect(ws, url: str | None = None, token: str | None = None) -> StudioClient:
    conn = resolve_connection(ws, url, token)
    client = StudioClient(conn.url, conn.token)
    client.check()
    return client
