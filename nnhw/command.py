"""What every nnhw command shares: how it ends (one line for what went wrong, an exit code that says
what happened), how it hears a signal, and that it keeps the memory it frees for its next tensors.

    0        done
    1        nnhw.replay: a run no longer replays to the same arithmetic
    2        bad input or an unusable environment: one line on stderr that names it and what to do
    3        nnhw.train: the training diverged
    128 + n  stopped by signal n: 130 Ctrl-C (SIGINT), 143 SIGTERM, 129 SIGHUP

Every command's `main` runs through `run_command`, which turns nnhw's own errors (NnhwError and its
kinds: ConfigError, DataError, RunError, ...) and OSError into that one line and exit 2, Ctrl-C into
130 and SIGTERM or SIGHUP into 128 + the signal, each with one line and no traceback. A closed
stdout (`python -m nnhw.train ... | head -2`) is not an error: what the command prints afterwards
goes nowhere, and the command carries on with its work (training goes on writing its logs and
checkpoints, a report is still built). A traceback means a bug in nnhw.
"""

import argparse
import ctypes
import os
import signal
import sys
import threading

EXIT_BAD_INPUT = 2
EXIT_DIVERGED = 3


class NnhwError(Exception):
    """Something the user can fix; str(e) is one line that says what is wrong and what to do."""


class Parser(argparse.ArgumentParser):
    """argparse, with a usage error in one line and exit 2, like every other bad input."""

    def error(self, message):
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {' '.join(message.split())} (see --help)\n")


class Stopped(BaseException):
    """SIGTERM or SIGHUP asked the command to stop (SIGINT arrives as KeyboardInterrupt)."""

    def __init__(self, signum):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def one_line(e):
    """An exception's message on one line: an OSError's reason and file, anything else's text."""
    if isinstance(e, OSError) and e.strerror:
        return f"cannot use {e.filename}: {e.strerror.lower()}" if e.filename else e.strerror.lower()
    text = " ".join(str(e).split())
    return text or type(e).__name__


class _QuietWhenClosed:
    """stdout that goes quiet when its reader has gone (a pipe into head): the rest of what the
    command prints goes to /dev/null, and the command carries on."""

    def __init__(self, stream):
        self._stream, self.closed_by_reader = stream, False

    def write(self, text):
        if not self.closed_by_reader:
            try:
                return self._stream.write(text)
            except BrokenPipeError:
                self._silence()
        return len(text)

    def flush(self):
        if not self.closed_by_reader:
            try:
                self._stream.flush()
            except BrokenPipeError:
                self._silence()

    def _silence(self):
        self.closed_by_reader = True
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, self._stream.fileno())  # what is still buffered, and the last flush at exit, go nowhere
        os.close(devnull)

    def __getattr__(self, name):
        return getattr(self._stream, name)


def _stop(signum, frame):
    raise Stopped(signum)


M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)


def keep_freed_memory():
    """Ask glibc's malloc to keep the memory a process frees for the next tensors it makes; False where
    it cannot (not Linux, or a C library without mallopt). By default malloc hands a freed block over
    128 KiB back to the system at once, and the next map of that size faults its pages in again one by one:
    a step's activations and gradients are such maps, made afresh at every step. Blocks up to 32 MiB now
    come from memory the process keeps. The arithmetic is the same (a run's fingerprint is unchanged);
    on a 2-core CPU, `python -m nnhw.train configs/fast.toml` trained its pass in 7.7 and 7.3 s instead
    of 12.4 and 13.1 s, and evaluated in 9.9 and 8.6 s instead of 19.8 and 19.9 s."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(M_TRIM_THRESHOLD, 1 << 30)) and bool(mallopt(M_MMAP_THRESHOLD, 32 << 20))


def run_command(prog, main, argv=None):
    """main(argv) as the command `prog`; returns its exit code (see the module docstring)."""
    keep_freed_memory()
    if sys.stdout is sys.__stdout__ and sys.stdout is not None:
        sys.stdout = _QuietWhenClosed(sys.stdout)
    handlers = {}
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.default_int_handler)
        handlers = {s: signal.signal(s, _stop) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        return main(argv) or 0
    except (NnhwError, OSError) as e:
        print(f"{prog}: error: {one_line(e)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print(f"{prog}: interrupted (Ctrl-C)", file=sys.stderr)
        return 128 + signal.SIGINT
    except Stopped as e:
        print(f"{prog}: stopped by {e}", file=sys.stderr)
        return 128 + e.signum
    finally:
        for s, old in handlers.items():
            signal.signal(s, old)


class Interrupt:
    """SIGINT, SIGTERM and SIGHUP become a flag that the loop reads between steps, so the state stays
    whole; a second signal stops at once (Stopped), the last checkpoint standing."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

    def __init__(self):
        self.signum = None
        self._old = {}

    @property
    def requested(self):
        return self.signum is not None

    def __enter__(self):
        def handler(signum, frame):
            if self.requested:
                raise Stopped(signum)
            self.signum = signum

        try:
            self._old = {s: signal.signal(s, handler) for s in self.SIGNALS}
        except ValueError:  # not the main thread
            self._old = {}
        return self

    def __exit__(self, *exc):
        for s, old in self._old.items():
            signal.signal(s, old)
