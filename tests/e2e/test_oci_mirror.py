"""The cache as a pull-through mirror of a real OCI registry, with a real client.

Debian's ``docker-registry`` (the CNCF distribution registry) serves an
image that ``skopeo`` pushed from a hand-made OCI layout; an ``edgefleet
cache`` whose Domain uses ``cachePolicy.preset: oci-registry`` sits in front
of it, and ``skopeo`` pulls through the cache twice. The second pull takes
every blob and the manifest by digest from the cache (``HIT``) while the tag
is asked from the registry each time (``PASS``), so re-pointing a tag is
seen at once. Both tools come from scripts/install.sh.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import shutil
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.cacheproc import CacheProcess, cache_config
from tests.cloudproc import free_port
from tests.waiting import wait_until

pytestmark = pytest.mark.skipif(
    shutil.which("skopeo") is None or shutil.which("docker-registry") is None,
    reason="skopeo and docker-registry are installed by scripts/install.sh",
)

MIRROR_HOST = "localhost"  # what skopeo sends as Host (a name the Domain can serve; IPs are not hostnames)


def blob(layout: Path, data: bytes) -> dict[str, Any]:
    digest = hashlib.sha256(data).hexdigest()
    (layout / "blobs" / "sha256" / digest).write_bytes(data)
    return {"digest": f"sha256:{digest}", "size": len(data)}


def oci_layout(layout: Path, text: str) -> None:
    """A one-layer image in an OCI image layout, tagged ``v1``."""
    (layout / "blobs" / "sha256").mkdir(parents=True)
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        info = tarfile.TarInfo("hello.txt")
        info.size = len(text.encode())
        tar.addfile(info, io.BytesIO(text.encode()))
    layer = blob(layout, gzip.compress(raw.getvalue(), mtime=0))
    diff_id = "sha256:" + hashlib.sha256(raw.getvalue()).hexdigest()
    config = {"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": [diff_id]}, "config": {}}
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            **blob(layout, json.dumps(config).encode()),
        },
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", **layer}],
    }
    entry = blob(layout, json.dumps(manifest).encode())
    index = {
        "schemaVersion": 2,
        "manifests": [
            {
                "mediaType": manifest["mediaType"],
                **entry,
                "annotations": {"org.opencontainers.image.ref.name": "v1"},
            }
        ],
    }
    (layout / "index.json").write_text(json.dumps(index))
    (layout / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))


def skopeo(*args: str) -> str:
    result = subprocess.run(
        ["skopeo", "--insecure-policy", *args], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.fixture(scope="module")
def mirror(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, CacheProcess, Path]]:
    root = tmp_path_factory.mktemp("oci")
    port = free_port()
    config = {
        "version": 0.1,
        "storage": {"filesystem": {"rootdirectory": str(root / "registry")}},
        "http": {"addr": f"127.0.0.1:{port}"},
        "log": {"level": "info"},
    }
    (root / "registry.yml").write_text(yaml.safe_dump(config))
    with (root / "registry.log").open("ab") as log:
        registry = subprocess.Popen(
            ["docker-registry", "serve", str(root / "registry.yml")], stdout=log, stderr=subprocess.STDOUT
        )
    cache: CacheProcess | None = None
    try:
        registry_url = f"http://127.0.0.1:{port}"
        wait_until(lambda: httpx.get(registry_url + "/v2/", timeout=2).status_code == 200, 20, what="the registry")
        document = cache_config(
            registry_url,
            root,
            hostnames=(MIRROR_HOST,),
            cache_policy={"preset": "oci-registry"},
            accessLog={"path": str(root / "access.log"), "flushMs": 10},
        )
        cache = CacheProcess(document, root).start()
        yield registry_url, cache, root
    finally:
        if cache is not None and cache.proc is not None:
            cache.proc.terminate()
            cache.proc.wait(10)
        registry.terminate()
        registry.wait(10)


def access(root: Path) -> list[dict[str, Any]]:
    path = root / "access.log"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def blob_gets(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [entry for entry in entries if entry["method"] == "GET" and "/blobs/sha256:" in entry["target"]]


def pull(cache: CacheProcess, destination: Path) -> None:
    host, port = cache.address
    assert host == "127.0.0.1"
    skopeo("copy", "--src-tls-verify=false", f"docker://{MIRROR_HOST}:{port}/demo/app:v1", f"oci:{destination}:v1")


def test_skopeo_pulls_through_the_cache_and_the_second_pull_hits(mirror: tuple[str, CacheProcess, Path]) -> None:
    registry_url, cache, root = mirror
    oci_layout(root / "image", "hello from the registry\n")
    skopeo("copy", "--dest-tls-verify=false", f"oci:{root / 'image'}:v1", f"docker://{registry_url[7:]}/demo/app:v1")
    pull(cache, root / "pulled-1")
    # The log is written in batches (flushMs): count the first pull's lines once its two blob GETs are in.
    wait_until(lambda: len(blob_gets(access(root))) >= 2, 10, what="the first pull in the access log")
    first = len(access(root))
    pull(cache, root / "pulled-2")
    wait_until(lambda: len(blob_gets(access(root)[first:])) >= 2, 10, what="the second pull in the access log")
    second = [entry for entry in access(root)[first:] if entry["method"] == "GET"]
    blobs = blob_gets(second)
    assert len(blobs) == 2 and all(entry["cache"] == "HIT" for entry in blobs), second
    tags = [entry for entry in second if entry["target"].endswith("/manifests/v1")]
    assert tags and all(entry["cache"] == "PASS" for entry in tags), "a tag is always asked from the registry"
    pulled = json.loads((root / "pulled-2" / "index.json").read_text())
    original = json.loads((root / "image" / "index.json").read_text())
    assert pulled["manifests"][0]["digest"] == original["manifests"][0]["digest"], "the same image, by digest"


def test_a_moved_tag_is_seen_through_the_mirror_at_once(mirror: tuple[str, CacheProcess, Path]) -> None:
    registry_url, cache, root = mirror
    oci_layout(root / "image-2", "a new release\n")
    skopeo("copy", "--dest-tls-verify=false", f"oci:{root / 'image-2'}:v1", f"docker://{registry_url[7:]}/demo/app:v1")
    pull(cache, root / "pulled-3")
    pulled = json.loads((root / "pulled-3" / "index.json").read_text())
    new = json.loads((root / "image-2" / "index.json").read_text())
    assert pulled["manifests"][0]["digest"] == new["manifests"][0]["digest"]
