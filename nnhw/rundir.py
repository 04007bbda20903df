"""Run folders: where a run writes, how a file is replaced whole, who may write, and which code wrote.

Every run writes into <run.log_dir>/<run.name>/<run id>/, a folder of its own. Files
there are replaced atomically (a crash or a full disk leaves the last good copy), an
exclusive lock keeps a second writer out, and `git_commit` names the code that
started the run.
"""

import fcntl
import os
import subprocess
import time
import uuid
from pathlib import Path

from . import PROJECT_ROOT
from .command import NnhwError

LOCK = ".lock"
RESULT_PATHS = ("nnhw", "configs")  # what makes a result: a run's commit is '-dirty' when these differ from it


class RunError(NnhwError, RuntimeError):
    """The run cannot start or continue; the message is one line."""


def make_run_dir(log_dir, name, slug=""):
    """<log_dir>/<name>/<run id>, the id a time stamp and the slug of the overrides (if any); mkdir
    is atomic, so two runs started at once never share one."""
    parent = Path(log_dir) / name
    try:
        parent.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%d-%H%M%S") + (f"_{slug}" if slug else "")
        for i in range(1000):
            run_dir = parent / (stamp if i == 0 else f"{stamp}-{i}")
            try:
                run_dir.mkdir()
                break
            except FileExistsError:
                continue
        probe = run_dir / f".write-test-{os.getpid()}"
        probe.write_text("ok")
        probe.unlink()
    except OSError as e:
        raise RunError(f"cannot write the log folder {parent}: {e.strerror or e}; set run.log_dir to a writable folder") from None
    return run_dir


def atomic_write_bytes(path, data):
    """The bytes `data` into a temporary file of this writer's own, fsync, then rename over path: a
    crash or a full disk leaves the old file whole, and the temporary file is gone on every path.
    The caller serialises first, so a full disk is a plain OSError here, whatever made the bytes."""
    path = Path(path)
    tmp = path.with_name(f".{path.name[:100]}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        raise RunError(f"cannot write {path.name} in {path.parent}: {(e.strerror or str(e)).lower()}; the last good files stay") from None
    finally:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass  # never created (the name or the folder was the problem)


def atomic_write_text(path, text):
    atomic_write_bytes(path, text.encode())


class RunLock:
    """An exclusive lock on <run_dir>/.lock for the life of the run: a second writer stops at once."""

    def __init__(self, run_dir):
        self.path = None if run_dir is None else Path(run_dir) / LOCK  # None: no lock (torchrun ranks > 0)
        self.file = None

    def __enter__(self):
        if self.path is None:
            return self
        try:
            self.file = open(self.path, "a+")
        except OSError as e:
            raise RunError(f"cannot write the run folder {self.path.parent}: {(e.strerror or str(e)).lower()}") from None
        try:
            fcntl.flock(self.file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.file.close()
            raise RunError(f"{self.path.parent} is in use by another nnhw.train; wait for it to end (or stop it) before resuming") from None
        return self

    def __exit__(self, *exc):
        if self.file is not None:
            fcntl.flock(self.file, fcntl.LOCK_UN)
            self.file.close()


def git_commit(repo=PROJECT_ROOT):
    """HEAD, with '-dirty' when nnhw/ or configs/ differ from it (edits elsewhere, the README or
    reports/, do not move a result); 'unknown' outside a git checkout. Whether HEAD still computes a
    run's numbers is nnhw.replay's question, not this label's."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", *RESULT_PATHS],
                               cwd=repo, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    if head.returncode != 0:
        return "unknown"
    return head.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
