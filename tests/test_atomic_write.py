import json
import os
import subprocess
import sys

import pytest

from physml_md.atomic_write import (
    FolderInUseError,
    OutputError,
    _host,
    atomic_path,
    atomic_write_text,
    check_outputs,
    folder_lock,
)


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


# ---------------------------------------------------------------------------------- outputs: never a file not ours
def test_an_existing_output_is_refused_unless_forced_and_an_input_always(tmp_path):
    checkpoint, report = tmp_path / "member_b.ckpt", tmp_path / "report.json"
    checkpoint.write_bytes(b"weights")
    check_outputs([report], inputs=[checkpoint])  # neither exists nor is an input: fine
    report.write_text("{}")
    with pytest.raises(OutputError, match=r"report\.json exists and this run did not write it: .*--force"):
        check_outputs([report])
    check_outputs([report], force=True)
    for name in (checkpoint, tmp_path / "." / "member_b.ckpt"):  # the same file, however it is spelled
        with pytest.raises(OutputError, match="is an input of this command and also its output"):
            check_outputs([name], inputs=[checkpoint], force=True)
    os.link(checkpoint, tmp_path / "hard_link.ckpt")
    with pytest.raises(OutputError, match="is an input"):
        check_outputs([tmp_path / "hard_link.ckpt"], inputs=[checkpoint], force=True)
    with pytest.raises(OutputError, match="is a directory"):
        check_outputs([tmp_path], force=True)
    assert checkpoint.read_bytes() == b"weights"


def test_an_output_below_a_file_is_one_clear_error_not_file_exists_error(tmp_path):
    """`md --out notes.txt/run.extxyz` raised a raw FileExistsError from mkdir."""
    (tmp_path / "notes.txt").write_text("mine")
    target = tmp_path / "notes.txt" / "deeper" / "run.extxyz"
    with pytest.raises(OutputError, match=r"cannot write .*run\.extxyz: .*notes\.txt is a file, not a folder"):
        check_outputs([target])
    with pytest.raises(OutputError, match=r"notes\.txt is a file, not a folder"), atomic_path(target):
        pass
    with pytest.raises(OutputError, match=r"notes\.txt is a file, not a folder"), folder_lock(target.parent):
        pass
    assert (tmp_path / "notes.txt").read_text() == "mine"


# ------------------------------------------------------------------------------------- one run at a time in a folder
HOLD = """import sys, time
from physml_md.atomic_write import folder_lock
with folder_lock(sys.argv[1]):
    print("held", flush=True)
    time.sleep(120)
"""


def test_a_folder_locked_by_a_running_process_is_refused(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(FolderInUseError, match=rf"is in use by another run \(process {holder.pid} on "):
            with folder_lock(tmp_path):
                pass
        assert json.loads((tmp_path / ".physml-md.lock").read_text())["pid"] == holder.pid  # theirs, untouched
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()


def test_the_lock_of_a_dead_process_is_taken_over_and_another_machines_is_not(tmp_path):
    lock = tmp_path / ".physml-md.lock"
    lock.write_text(json.dumps({"pid": _dead_pid(), "host": _host()}))
    with folder_lock(tmp_path, "physml-md train") as held:
        record = json.loads(held.read_text())
        assert record["pid"] == os.getpid() and record["command"] == "physml-md train"
        with pytest.raises(FolderInUseError, match="in use"):  # not twice, not even by the same process
            with folder_lock(tmp_path):
                pass
    assert not lock.exists()  # released
    lock.write_text(json.dumps({"pid": _dead_pid(), "host": "another-host"}))  # cannot be checked from here
    with pytest.raises(FolderInUseError, match=r"on another-host.*if that process no longer runs, remove"):
        with folder_lock(tmp_path):
            pass
    assert lock.exists()


def test_a_lock_removes_the_folders_it_made_when_they_stay_empty(tmp_path):
    with folder_lock(tmp_path / "runs" / "a"):
        pass
    assert list(tmp_path.iterdir()) == []
    with folder_lock(tmp_path / "runs" / "a") as held:
        (held.parent / "model.pt").write_text("x")
    assert [p.name for p in (tmp_path / "runs" / "a").iterdir()] == ["model.pt"]
