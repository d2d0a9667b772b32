"""The cloud's blob store and its ASGI endpoint: uploads checked by digest, private reads, ranges, immutability."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from edgefleet.cloud.auth import Principal, Role, Unauthorized
from edgefleet.cloud.blobs import (
    BLOB_ROOT,
    BlobEndpoint,
    BlobError,
    BlobStore,
    blob_dir,
    failed_updates,
    parse_range,
)

CONTENT = bytes(range(256)) * 1000
DIGEST = hashlib.sha256(CONTENT).hexdigest()
TOKENS = {
    "admin": Principal("admin", Role.ADMIN),
    "viewer": Principal("viewer", Role.VIEWER),
    "node": Principal("n1", Role.NODE),
    "pending": Principal("n2", Role.NODE, pending=True),
}


async def authenticate(header: str | None) -> Principal:
    principal = TOKENS.get((header or "").removeprefix("Bearer "))
    if principal is None:
        raise Unauthorized("unknown token")
    return principal


async def not_found(scope: object, receive: object, send: object) -> None:
    raise AssertionError("the blob endpoint handed a blob request on")


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    app = BlobEndpoint(not_found, BlobStore(tmp_path / "blobs", max_bytes=len(CONTENT) * 2), authenticate)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://cloud") as http:
        yield http


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def upload(
    client: httpx.AsyncClient, content: bytes, digest: str = DIGEST, token: str = "admin"
) -> httpx.Response:
    return await client.put(BLOB_ROOT + digest, content=content, headers=auth(token))


async def test_an_upload_is_stored_by_digest_and_read_back_by_admins_and_nodes(
    client: httpx.AsyncClient, tmp_path: Path
) -> None:
    response = await upload(client, CONTENT)
    assert response.status_code == 201 and response.json()["created"] is True
    assert (tmp_path / "blobs" / "sha256" / DIGEST[:2] / DIGEST).read_bytes() == CONTENT
    assert (await upload(client, CONTENT)).status_code == 200, "the same bytes again: already there"
    for token in ("admin", "node"):
        read = await client.get(BLOB_ROOT + DIGEST, headers=auth(token))
        assert read.status_code == 200 and read.content == CONTENT
        assert read.headers["cache-control"] == "public, max-age=31536000, immutable"
        assert read.headers["etag"] == f'"{DIGEST}"'
    assert list((tmp_path / "blobs" / "tmp").iterdir()) == [], "no temporary file left"


async def test_bytes_that_do_not_match_the_digest_are_refused_and_nothing_is_kept(
    client: httpx.AsyncClient, tmp_path: Path
) -> None:
    response = await upload(client, CONTENT[:-1] + b"x")
    assert response.status_code == 422 and "nothing was stored" in response.json()["message"]
    assert not (tmp_path / "blobs" / "sha256" / DIGEST[:2] / DIGEST).exists()
    assert list((tmp_path / "blobs" / "tmp").iterdir()) == []


@pytest.mark.parametrize(("token", "status"), [("viewer", 403), ("node", 403), ("nobody", 401)])
async def test_only_admins_upload(client: httpx.AsyncClient, token: str, status: int) -> None:
    assert (await upload(client, CONTENT, token=token)).status_code == status


@pytest.mark.parametrize(("token", "status"), [("viewer", 403), ("pending", 403), ("nobody", 401)])
async def test_viewers_and_unapproved_nodes_cannot_read(client: httpx.AsyncClient, token: str, status: int) -> None:
    await upload(client, CONTENT)
    assert (await client.get(BLOB_ROOT + DIGEST, headers=auth(token))).status_code == status


async def test_uploads_over_the_limit_and_bad_digests_are_refused(client: httpx.AsyncClient) -> None:
    big = CONTENT * 3
    assert (await upload(client, big, hashlib.sha256(big).hexdigest())).status_code == 413
    assert (await upload(client, CONTENT, "..%2F..%2Fetc%2Fpasswd")).status_code == 400
    assert (await client.get(BLOB_ROOT + "0" * 64, headers=auth("admin"))).status_code == 404
    assert (await client.delete(BLOB_ROOT + DIGEST, headers=auth("admin"))).status_code == 405


async def test_ranges_and_conditionals(client: httpx.AsyncClient) -> None:
    await upload(client, CONTENT)
    part = await client.get(BLOB_ROOT + DIGEST, headers={**auth("node"), "Range": "bytes=100-199"})
    assert part.status_code == 206 and part.content == CONTENT[100:200]
    assert part.headers["content-range"] == f"bytes 100-199/{len(CONTENT)}"
    tail = await client.get(BLOB_ROOT + DIGEST, headers={**auth("node"), "Range": "bytes=-10"})
    assert tail.content == CONTENT[-10:]
    resume = await client.get(BLOB_ROOT + DIGEST, headers={**auth("node"), "Range": f"bytes={len(CONTENT) - 5}-"})
    assert resume.status_code == 206 and resume.content == CONTENT[-5:]
    past = await client.get(BLOB_ROOT + DIGEST, headers={**auth("node"), "Range": f"bytes={len(CONTENT)}-"})
    assert past.status_code == 416
    same = await client.get(BLOB_ROOT + DIGEST, headers={**auth("node"), "If-None-Match": f'"{DIGEST}"'})
    assert same.status_code == 304 and same.content == b""
    head = await client.head(BLOB_ROOT + DIGEST, headers=auth("node"))
    assert head.status_code == 200 and head.headers["content-length"] == str(len(CONTENT))


def test_parse_range() -> None:
    assert parse_range(None, 10) is None
    assert parse_range("bytes=2-4", 10) == (2, 4)
    assert parse_range("bytes=2-", 10) == (2, 9)
    assert parse_range("bytes=-3", 10) == (7, 9)
    assert parse_range("bytes=5-100", 10) == (5, 9)
    assert parse_range("bytes=0-1,4-5", 10) is None, "several ranges: the whole body"
    assert parse_range("items=0-1", 10) is None
    with pytest.raises(BlobError):
        parse_range("bytes=10-", 10)
    with pytest.raises(BlobError):
        parse_range("bytes=5-2", 10)


def test_blob_dir_defaults_beside_a_sqlite_store(tmp_path: Path) -> None:
    assert blob_dir(None, f"sqlite:///{tmp_path}/store.db") == tmp_path / "blobs"
    assert blob_dir(tmp_path / "x", "etcd://h:2379") == tmp_path / "x"
    assert blob_dir(None, "etcd://h:2379") == Path("edgefleet-data/blobs")


def test_a_failed_update_is_reported_once_per_message() -> None:
    failed = {"workloads": {"app": {"state": "Running", "message": "update to revision r2 failed, ...: SHA-256"}}}
    running = {"workloads": {"app": {"state": "Running"}, "cache": {"message": "other"}}}
    assert failed_updates(running, failed) == [("app", "update to revision r2 failed, ...: SHA-256")]
    assert failed_updates(failed, failed) == [], "already said: no new Event"
    assert failed_updates(None, running) == []
    assert failed_updates({}, {"workloads": "garbage"}) == []
