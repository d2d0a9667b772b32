"""The supervisor's file-level parts: working directories, environments and state files
(the pure lifecycle rules: test_lifecycle.py)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from edgefleet.api.workloads import WorkloadTemplate, template_revision
from edgefleet.edge import statefiles, workdirs
from edgefleet.edge.statefiles import ProcessRecord, StateRecord
from edgefleet.edge.workdirs import Layout, RenderError


def files_template(*files: dict[str, object]) -> WorkloadTemplate:
    return WorkloadTemplate.model_validate({"command": ["true"], "files": list(files)})


def test_render_writes_files_with_their_modes_and_restores_edits(tmp_path: Path) -> None:
    workdir = tmp_path / "rev"
    template = files_template(
        {"path": "run.sh", "content": "#!/bin/sh\n", "mode": "0755"}, {"path": "conf/a/b.conf", "content": "k=v\n"}
    )
    workdirs.render(workdir, template.files)
    assert (workdir / "run.sh").stat().st_mode & 0o777 == 0o755
    assert (workdir / "conf/a/b.conf").stat().st_mode & 0o777 == 0o644
    (workdir / "conf/a/b.conf").write_text("edited\n")
    workdirs.render(workdir, template.files)
    assert (workdir / "conf/a/b.conf").read_text() == "k=v\n"
    assert sorted(p.name for p in workdir.rglob("*")) == ["a", "b.conf", "conf", "run.sh"]  # no temp files


def test_render_refuses_to_follow_a_planted_symlink_out_of_the_directory(tmp_path: Path) -> None:
    workdir, outside = tmp_path / "rev", tmp_path / "outside"
    workdir.mkdir()
    outside.mkdir()
    (workdir / "conf").symlink_to(outside)
    with pytest.raises(RenderError, match="outside the working directory"):
        workdirs.render(workdir, files_template({"path": "conf/x/y", "content": "pwned"}).files)
    assert list(outside.iterdir()) == []


def test_prune_keeps_only_the_current_revision(tmp_path: Path) -> None:
    for name in ["old1", "old2", "current"]:
        (tmp_path / name).mkdir()
    (tmp_path / "state.json").write_text("{}")
    workdirs.prune_revisions(tmp_path, "current")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["current", "state.json"]


def test_environment_is_built_not_inherited(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SECRET_TOKEN", "agent-only")
    monkeypatch.setenv("PATH", "/opt/bin:/usr/bin")
    template = WorkloadTemplate.model_validate(
        {"command": ["true"], "env": {"A": "1", "PATH": "/custom", "EDGEFLEET_NODE": "spoofed"}}
    )
    env = workdirs.environment(template, node="n1", workload="w", revision="r1", workdir=tmp_path)
    assert "SECRET_TOKEN" not in env
    assert env["PATH"] == "/custom" and env["A"] == "1"
    assert env["EDGEFLEET_NODE"] == "n1"  # the supervisor's identity variables win
    assert env["EDGEFLEET_WORKDIR"] == str(tmp_path)


def test_write_atomic_replaces_whole_files(tmp_path: Path) -> None:
    target = tmp_path / "f.json"
    workdirs.write_atomic(target, b"one", durable=True)
    workdirs.write_atomic(target, b"two", mode=0o640)
    assert target.read_bytes() == b"two"
    assert target.stat().st_mode & 0o777 == 0o640
    assert os.listdir(tmp_path) == ["f.json"]


def test_state_files_round_trip_and_bad_entries_are_skipped(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    layout = Layout(tmp_path)
    template = WorkloadTemplate.model_validate({"command": ["sleep", "10"], "env": {"A": "1"}})
    revision = template_revision(template)
    statefiles.write_template(layout, "web", template, revision)
    record = StateRecord(
        revision=revision, restarts=2, process=ProcessRecord(pid=42, start_time=7, boot_id="b", started_at=1.5)
    )
    statefiles.write_state(layout, "web", record)
    (layout.workloads / "Bad Name").mkdir()
    (layout.workloads / "torn").mkdir()
    (layout.workloads / "torn" / "state.json").write_text('{"revision": ')
    stored = {entry.name: entry for entry in statefiles.load_all(layout)}
    assert sorted(stored) == ["torn", "web"]
    assert stored["web"].template == template and stored["web"].state == record
    assert stored["torn"].template is None and stored["torn"].state is None
    assert "is corrupt" in caplog.text and "not a workload name" in caplog.text


def test_template_whose_stored_revision_is_stale_is_kept_by_content(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    template = WorkloadTemplate.model_validate({"command": ["sleep", "10"]})
    statefiles.write_template(layout, "web", template, "0000000000000000")
    assert json.loads(layout.template_file("web").read_text())["revision"] == "0000000000000000"
    [entry] = statefiles.load_all(layout)
    assert entry.template == template
