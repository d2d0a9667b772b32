"""Artifacts on a node: resumed and verified downloads, the content-addressed store, GC, safe tar extraction,
the capability rule, the internal Domain, and the supervisor keeping the old revision when artifacts fail."""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import tarfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import httpx
import pytest
from aiohttp import web

from edgefleet.api.workloads import WorkloadTemplate, template_revision
from edgefleet.edge.artifacts import (
    ARTIFACT_HOST,
    ArtifactError,
    ArtifactRef,
    NodeArtifacts,
    Source,
    artifacts_from_view,
    cache_path,
    capability,
    download,
    install,
    internal_domain,
    safe_extract,
)
from edgefleet.edge.supervisor import Supervisor
from edgefleet.edge.workdirs import Layout
from tests.waiting import wait_until

BLOB = os.urandom(300_000)
DIGEST = hashlib.sha256(BLOB).hexdigest()
REF = ArtifactRef("tool", "1.0", DIGEST, len(BLOB), "upload")


class Origin:
    """A blob server that can cut its first answers short and that honours Range."""

    def __init__(self, body: bytes, cut_first: int = 0) -> None:
        self.body, self.cut_first = body, cut_first
        self.ranges: list[str | None] = []

    async def handle(self, request: web.Request) -> web.StreamResponse:
        wanted = request.headers.get("Range")
        self.ranges.append(wanted)
        start = int(wanted.removeprefix("bytes=").rstrip("-")) if wanted else 0
        body = self.body[start:]
        response = web.StreamResponse(status=206 if wanted else 200)
        response.content_length = len(body)
        await response.prepare(request)
        if self.cut_first > 0:
            self.cut_first -= 1
            await response.write(body[: len(body) // 3])
            assert request.transport is not None
            request.transport.close()  # the connection breaks mid-body
            return response
        await response.write(body)
        return response


Serve = Callable[[Origin], Awaitable[str]]


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    runners: list[web.AppRunner] = []

    async def start(origin: Origin) -> str:
        app = web.Application()
        app.router.add_get("/{tail:.*}", origin.handle)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        port = runner.addresses[0][1]
        return f"http://127.0.0.1:{port}/blob"

    yield start
    for runner in runners:
        await runner.cleanup()


async def test_a_broken_download_resumes_with_range_and_is_verified(serve: Serve, tmp_path: Path) -> None:
    origin = Origin(BLOB, cut_first=2)
    url = await serve(origin)
    store = NodeArtifacts(tmp_path)
    async with httpx.AsyncClient() as client:
        path = await download(client, Source(url, {}), store, REF)
    assert path == store.path(DIGEST) and path.read_bytes() == BLOB
    assert origin.ranges[0] is None and all(r is not None and r.startswith("bytes=") for r in origin.ranges[1:])
    assert len(origin.ranges) == 3, "two cuts, two resumptions"
    assert not store.partial(DIGEST).exists()


async def test_bytes_with_another_digest_are_refused_and_dropped(serve: Serve, tmp_path: Path) -> None:
    url = await serve(Origin(BLOB[:-1] + b"\0"))
    store = NodeArtifacts(tmp_path)
    async with httpx.AsyncClient() as client:
        with pytest.raises(ArtifactError, match="SHA-256"):
            await download(client, Source(url, {}), store, REF)
    assert not store.has(DIGEST) and not store.partial(DIGEST).exists()


async def test_a_longer_body_than_the_artifact_says_is_refused(serve: Serve, tmp_path: Path) -> None:
    url = await serve(Origin(BLOB + b"more"))
    async with httpx.AsyncClient() as client:
        with pytest.raises(ArtifactError, match="more than"):
            await download(client, Source(url, {}), NodeArtifacts(tmp_path), REF)


def test_gc_removes_blobs_no_revision_uses_after_the_grace(tmp_path: Path) -> None:
    store = NodeArtifacts(tmp_path)
    for digest in ("a" * 64, "b" * 64):
        store.path(digest).parent.mkdir(parents=True, exist_ok=True)
        store.path(digest).write_bytes(b"x")
    old = time.time() - 7200
    os.utime(store.path("a" * 64), (old, old))
    assert store.collect({"b" * 64}, grace=3600) == ["a" * 64]
    assert store.digests() == ["b" * 64]
    assert store.collect(set(), grace=3600) == [], "used recently: kept for now"
    assert store.collect(set(), grace=0) == ["b" * 64]


def tar_gz(*members: tarfile.TarInfo, content: bytes = b"hello") -> Path:
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w:gz") as tar:
        for member in members:
            tar.addfile(member, io.BytesIO(content) if member.isfile() else None)
    path = Path(os.environ.get("TMPDIR", "/tmp")) / f"t-{os.getpid()}-{time.monotonic_ns()}.tar.gz"
    path.write_bytes(data.getvalue())
    return path


def member(
    name: str, kind: bytes = tarfile.REGTYPE, size: int = 5, link: str = "", mode: int = 0o644
) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.size, info.linkname, info.mode = kind, size if kind == tarfile.REGTYPE else 0, link, mode
    return info


@pytest.fixture
def workdir(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "work"
    path.mkdir()
    yield path


def test_safe_extract_unpacks_files_and_directories(workdir: Path) -> None:
    archive = tar_gz(member("d", tarfile.DIRTYPE), member("d/a.txt"), member("./b.sh", mode=0o4755))
    assert safe_extract(archive, workdir, "site") == 2
    assert (workdir / "site/d/a.txt").read_bytes() == b"hello"
    assert (workdir / "site/b.sh").stat().st_mode & 0o7777 == 0o755, "no setuid"


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        (member("/etc/passwd"), "absolute"),
        (member("../escape"), r"\.\."),
        (member("a/../../escape"), r"\.\."),
        (member("link", tarfile.SYMTYPE, link="/etc"), "link or special"),
        (member("hard", tarfile.LNKTYPE, link="x"), "link or special"),
        (member("fifo", tarfile.FIFOTYPE), "link or special"),
    ],
)
def test_safe_extract_refuses_what_would_leave_the_directory(
    workdir: Path, tmp_path: Path, bad: tarfile.TarInfo, match: str
) -> None:
    with pytest.raises(ArtifactError, match=match):
        safe_extract(tar_gz(bad), workdir, "site")
    assert not (tmp_path / "escape").exists()


def test_safe_extract_stops_at_the_size_and_member_limits(workdir: Path) -> None:
    archive = tar_gz(member("a"), member("b"), member("c"))
    with pytest.raises(ArtifactError, match="more than 8 bytes"):
        safe_extract(archive, workdir, "x", max_bytes=8)
    with pytest.raises(ArtifactError, match="more than 2 members"):
        safe_extract(archive, workdir, "y", max_members=2)


def test_safe_extract_does_not_follow_a_planted_symlink(workdir: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (workdir / "site").symlink_to(outside)
    with pytest.raises(ArtifactError, match="symlink"):
        safe_extract(tar_gz(member("a")), workdir, "site")
    assert list(outside.iterdir()) == []


def test_install_copies_with_mode_and_needs_a_known_fetched_artifact(tmp_path: Path, workdir: Path) -> None:
    store = NodeArtifacts(tmp_path / "store")
    store.path(DIGEST).parent.mkdir(parents=True)
    store.path(DIGEST).write_bytes(BLOB)
    template = WorkloadTemplate.model_validate(
        {"command": ["x"], "artifacts": [{"name": "tool", "version": "1.0", "path": "bin/tool", "mode": "0750"}]}
    )
    install(store, {("tool", "1.0"): REF}, template, workdir)
    assert (workdir / "bin/tool").read_bytes() == BLOB
    assert (workdir / "bin/tool").stat().st_mode & 0o777 == 0o750
    with pytest.raises(ArtifactError, match="not known on this node"):
        install(store, {}, template, workdir)


def test_capability_is_keyed_and_the_internal_domain_uses_it() -> None:
    assert capability("k1", DIGEST) != capability("k2", DIGEST)
    assert capability("k1", DIGEST) != capability("k1", "0" * 64)
    assert len(capability("k1", DIGEST)) == 32
    assert cache_path("k1", DIGEST) == f"/sha256/{DIGEST}/{capability('k1', DIGEST)}"
    domain = internal_domain("http://127.0.0.1:7441/artifact-origin")
    assert domain["hostnames"] == [ARTIFACT_HOST] and domain["origins"][0]["url"].endswith("/artifact-origin")


def test_artifacts_from_view_skips_malformed_documents() -> None:
    good = {"kind": "Artifact", "spec": {"name": "tool", "version": "1.0", "sha256": DIGEST, "size": 3}}
    found = artifacts_from_view([good, {"kind": "Artifact", "spec": {"name": "x"}}, {"kind": "Secret"}])
    assert list(found) == [("tool", "1.0")] and found["tool", "1.0"].source == "upload"


def test_templates_without_artifacts_keep_their_revision() -> None:
    plain = WorkloadTemplate.model_validate({"command": ["x"]})
    assert "artifacts" not in plain.model_dump(by_alias=True, exclude_defaults=True)
    assert template_revision(plain) == "14cc2fc861502bbc", "an agent upgrade must not restart existing workloads"


class FailingArtifacts:
    def __init__(self) -> None:
        self.fail = True

    async def fetch_template(self, template: WorkloadTemplate) -> None:
        if self.fail:
            raise ArtifactError("artifact tool 2.0: the bytes have SHA-256 x, not y")

    def install(self, template: WorkloadTemplate, workdir: Path, owner: object = None) -> None:
        (workdir / "tool").write_text("v2")


def sleeper(**fields: object) -> WorkloadTemplate:
    return WorkloadTemplate.model_validate({"command": ["sleep", "600"], "terminationGracePeriodSeconds": 1, **fields})


async def test_the_old_revision_runs_on_when_the_new_ones_artifacts_fail(tmp_path: Path) -> None:
    artifacts = FailingArtifacts()
    supervisor = Supervisor(tmp_path, node_name="n1", artifacts=artifacts)
    try:
        await supervisor.apply({"app": sleeper()})
        pid = await asyncio.to_thread(wait_until, lambda: supervisor.pids().get("app"), 10, what="app running")
        v2 = sleeper(artifacts=[{"name": "tool", "version": "2.0", "path": "tool"}])
        await supervisor.apply({"app": v2})
        assert supervisor.pids()["app"] == pid, "not stopped"
        assert "update to revision" in (supervisor.statuses()["app"].message or "")
        assert "SHA-256" in (supervisor.statuses()["app"].message or "")
        assert template_revision(v2) in supervisor.failed_updates()["app"][0]
        assert not Layout(tmp_path).workdir("app", template_revision(v2)).exists()
        artifacts.fail = False
        await supervisor.apply({"app": v2})
        new = await asyncio.to_thread(
            wait_until, lambda: (p := supervisor.pids().get("app")) != pid and p, 10, what="v2 running"
        )
        assert new != pid and supervisor.failed_updates() == {}
        assert (Layout(tmp_path).workdir("app", template_revision(v2)) / "tool").read_text() == "v2"
    finally:
        await supervisor.stop_all()
        await supervisor.close()
