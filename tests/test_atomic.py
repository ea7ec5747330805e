import os
import subprocess
import sys

import pytest

from physml_md.atomic import atomic_path, atomic_write_text


def test_success_replaces_and_failure_keeps_the_previous_file(tmp_path):
    target = tmp_path / "sub" / "report.json"
    atomic_write_text(target, "first")
    assert target.read_text() == "first"
    with pytest.raises(RuntimeError, match="interrupted"), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("interrupted")
    assert target.read_text() == "first"
    assert [p.name for p in target.parent.iterdir()] == ["report.json"]
    atomic_write_text(target, "second")
    assert target.read_text() == "second"


def _dead_pid():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_stale_temporaries_of_dead_processes_are_removed_at_the_next_write(tmp_path):
    """A run killed by SIGKILL leaves its temporaries; the next write into the folder removes them, and only them."""
    with atomic_path(tmp_path / "run.extxyz") as tmp:
        tmp.write_text("x")  # (tmp: our own name for a temporary)
    own = tmp.name
    dead = own.replace(f".{os.getpid()}", f".{_dead_pid()}")
    assert dead != own
    stale = [dead, dead.replace(".run.", ".other.").replace(".extxyz", ".csv")]
    kept = [
        own,  # a live process (this one) is still writing it
        dead.replace("@", "@another-host-"),  # another machine's process, on a shared file system
        f".notes.{_dead_pid()}.txt",  # not our naming
        "run.extxyz",
    ]
    for name in stale + kept:
        (tmp_path / name).write_text("x")
    atomic_write_text(tmp_path / "summary.json", "{}")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(kept + ["summary.json"])
