"""Write files safely: ``atomic_path`` (a temporary beside the target, then a rename: a reader never sees half a
file; temporaries left by killed processes are named ``.<stem>.<pid>@<host>.tmp<suffix>`` so later writes remove
them), ``check_outputs`` (what every command runs before it writes) and ``folder_lock`` (one run per folder).
"""

import contextlib
import datetime
import json
import os
import re
import socket
from pathlib import Path
from typing import Iterable, Iterator, List, Union

PathLike = Union[str, os.PathLike]

# .<stem>.<pid>@<host>.tmp<suffix>; the host keeps letters, digits and dashes
_TEMPORARY = re.compile(r"^\..+\.(?P<pid>\d+)@(?P<host>[A-Za-z0-9-]+)\.tmp")


class OutputError(ValueError):
    """An output a command must not write: it exists (no --force), it is an input, or its folder is a file."""


class FolderInUseError(OutputError):
    """Another run holds the folder's lock."""


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:64] or "host"


def _running(pid: int) -> bool:
    """Whether process ``pid`` exists on this machine (True when that cannot be known)."""
    if pid == os.getpid() or os.name == "nt":  # (on Windows os.kill would end the process)
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: it exists, under another user
        return True
    return True


def remove_stale_temporaries(folder: PathLike) -> List[Path]:
    """Remove the temporaries ``atomic_path`` left in ``folder`` from processes of this machine that no longer
    run (killed before they could clean up); return their paths. Others' files are never touched."""
    host, removed = _host(), []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        match = _TEMPORARY.match(entry.name)
        if match is None or match["host"] != host or _running(int(match["pid"])):
            continue
        with contextlib.suppress(FileNotFoundError):  # another process removed it first
            os.unlink(entry.path)
            removed.append(Path(entry.path))
    return removed


@contextlib.contextmanager
def atomic_path(path: PathLike) -> Iterator[Path]:
    """Yield a temporary path to write to; on success it is renamed to ``path``, on error removed. The temporary
    name keeps the suffix (``model.pt2`` -> ``.model.<pid>@<host>.tmp.pt2``), for writers that check it. Stale
    temporaries in the folder are removed first (``remove_stale_temporaries``)."""
    path = Path(path)
    ensure_folder(path.parent)
    remove_stale_temporaries(path.parent)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}@{_host()}.tmp{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_text(path: PathLike, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def _blocking_file(path: Path) -> Path | None:
    """The first of ``path`` and its ancestors that exists and is not a folder (None: none is)."""
    for candidate in (path, *path.parents):
        if candidate.is_dir():
            return None
        if candidate.exists():
            return candidate
    return None


def ensure_folder(folder: PathLike) -> Path:
    """Make ``folder`` (and its parents); an ``OutputError`` naming the file that stands in the way."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        blocking = _blocking_file(folder) or folder
        raise OutputError(
            f"cannot make the folder {folder}: {blocking} is a file, not a folder; choose another output path"
        ) from None
    return folder


def _same_file(a: Path, b: Path) -> bool:
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)  # hard links, bind mounts
    except OSError:
        return False


def check_outputs(outputs: Iterable[PathLike], inputs: Iterable[PathLike] = (), force: bool = False) -> None:
    """Refuse, before anything is written, the outputs a command must not write (``OutputError``, one sentence):
    an output that is also one of ``inputs`` (always, ``force`` or not), an output below a file, a folder where a
    file goes, and an output that exists already unless ``force`` (the user's ``--force``)."""
    inputs = [Path(p) for p in inputs]
    for output in map(Path, outputs):
        if any(_same_file(output, source) for source in inputs):
            raise OutputError(
                f"{output} is an input of this command and also its output: name another output file "
                "(an input is never written over, not even with --force)"
            )
        blocking = _blocking_file(output.parent)
        if blocking is not None:
            raise OutputError(f"cannot write {output}: {blocking} is a file, not a folder; choose another output path")
        if output.is_dir():
            raise OutputError(f"{output} is a directory: give the name of the file to write (inside it, or elsewhere)")
        if not force and (output.exists() or output.is_symlink()):
            raise OutputError(
                f"{output} exists and this run did not write it: choose another output name, or give --force to "
                "overwrite it"
            )


_LOCK_NAME = ".physml-md.lock"


def _read_lock(lock: Path) -> dict:
    try:
        record = json.loads(lock.read_text())
    except FileNotFoundError:
        raise
    except (OSError, ValueError):
        return {}  # being written this instant, or damaged: a live holder, as far as we can tell
    return record if isinstance(record, dict) else {}


def _stale(record: dict) -> bool:
    """Whether a lock belongs to a process of this machine that no longer runs."""
    pid = record.get("pid")
    return record.get("host") == _host() and isinstance(pid, int) and not _running(pid)


def _take_over(lock: Path, record: dict) -> None:
    """Remove the stale lock ``record`` read from ``lock``, unless another process replaced it meanwhile."""
    aside = lock.with_name(f"{lock.name}.{os.getpid()}@{_host()}.stale")
    try:
        os.rename(lock, aside)  # atomic: of two processes taking over, one renames it
    except FileNotFoundError:
        return
    try:
        if _read_lock(aside) != record:  # a live lock made after we read the stale one: put it back
            with contextlib.suppress(FileExistsError):
                os.link(aside, lock)
    finally:
        aside.unlink(missing_ok=True)


@contextlib.contextmanager
def folder_lock(folder: PathLike, command: str = "physml-md") -> Iterator[Path]:
    """Hold ``<folder>/.physml-md.lock`` (made with O_EXCL; pid, host, command, start time) for the ``with`` block.

    A lock held by a running process (or one of another machine: it cannot be checked) is a ``FolderInUseError``;
    that of a dead process of this machine is taken over. At the end the lock, if still ours, is removed, and so
    are the folders the lock made if still empty (a run refused at once leaves nothing behind)."""
    folder = Path(folder)
    made = [p for p in (folder, *folder.parents) if not p.exists()]
    ensure_folder(folder)
    lock = folder / _LOCK_NAME
    record = {
        "pid": os.getpid(),
        "host": _host(),
        "command": command,
        "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    for _ in range(100):
        try:
            descriptor = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                holder = _read_lock(lock)
            except FileNotFoundError:
                continue  # released this instant: try again
            if not _stale(holder):
                who = f"process {holder.get('pid', '?')} on {holder.get('host', '?')}"
                if "started" in holder:
                    who += f", {holder.get('command', 'physml-md')} since {holder['started']}"
                raise FolderInUseError(
                    f"{folder} is in use by another run ({who}): wait for it to finish or write elsewhere "
                    f"(if that process no longer runs, remove {lock})"
                ) from None
            _take_over(lock, holder)
            continue
        with os.fdopen(descriptor, "w") as handle:
            json.dump(record, handle)
        break
    else:  # pragma: no cover (a lock taken and released 100 times while we looked)
        raise FolderInUseError(f"{folder} is in use by other runs: try again, or write elsewhere")
    try:
        yield lock
    finally:
        with contextlib.suppress(FileNotFoundError, ValueError):
            if _read_lock(lock) == record:
                lock.unlink()
        for empty in made:  # innermost first; stops at the first that holds something
            try:
                empty.rmdir()
            except OSError:
                break
