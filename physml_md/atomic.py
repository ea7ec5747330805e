"""Write files atomically: to a temporary name beside the target, then rename, so that a reader never
sees half a file and a failed write leaves the previous file (or none) in place.

A process killed outright (SIGKILL, a power cut) cannot remove its temporary. Their names say whose they are
(``.<stem>.<pid>@<host>.tmp<suffix>``), so the next write into the same folder removes those of processes of this
machine that no longer run."""

import contextlib
import os
import re
import socket
from pathlib import Path
from typing import Iterator, List, Union

PathLike = Union[str, os.PathLike]

# .<stem>.<pid>@<host>.tmp<suffix>; the host keeps letters, digits and dashes
_TEMPORARY = re.compile(r"^\..+\.(?P<pid>\d+)@(?P<host>[A-Za-z0-9-]+)\.tmp")


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
    path.parent.mkdir(parents=True, exist_ok=True)
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
