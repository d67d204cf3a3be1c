"""Shared helpers: errors, seeding, device, atomic and safe file I/O, run folders, timing."""
import contextlib
import functools
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np
import torch

import distributed
from errors import UserError


def cli(main):
    """Wrap an entry point: a UserError becomes one line on stderr and exit status 2."""

    @functools.wraps(main)
    def wrapper(argv=None):
        try:
            return main(argv)
        except UserError as err:
            rank = distributed.rank()
            print(f"{f'rank {rank}: ' if rank else ''}error: {err}", file=sys.stderr)
            sys.exit(2)
        except KeyboardInterrupt:
            print("error: interrupted; rerun with --resume to continue", file=sys.stderr)
            sys.exit(130)
        finally:
            distributed.cleanup()

    return wrapper


def seed_everything(seed):
    """Seed python, numpy and torch; every integer, 0 included, is a valid seed."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_device(name="auto", gpu=None):
    """'auto' means CUDA when available, else CPU; --gpu N picks cuda:N."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device(f"cuda:{gpu or 0}")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"unknown device '{name}'; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device '{name}' asked for but CUDA is not available; use --device cpu")
    return device


def start(args):
    """Resolve the device, honour --deterministic, join the process group when started by torchrun (each rank
    then uses cuda:LOCAL_RANK on CUDA), print the resolved args and git SHA; returns the device."""
    device = resolve_device(args.device, args.gpu)
    if args.deterministic:
        deterministic()
    device = distributed.setup(device)
    if distributed.is_main():
        ranks = f"  ranks: {distributed.world_size()}" if distributed.active() else ""
        print(f"args: {vars(args)}\ngit: {git_sha()}  device: {device}{ranks}", flush=True)
    return device


def rng_state():
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {"python": random.getstate(), "numpy": (name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss,
                                                    gauss), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state):
    random.setstate(_tuples(state["python"]))
    name, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def _tuples(obj):
    """Checkpoints store RNG states with tuples turned into lists; turn them back."""
    if isinstance(obj, list):
        return tuple(_tuples(o) for o in obj)
    return obj


def ensure_dir(path):
    """Create a folder (and parents) or fail with one line saying why."""
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as err:
        raise UserError(f"cannot create folder '{path}': {err.strerror}; choose another --save_dir") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise UserError(f"folder '{path}' is not writable; choose another --save_dir")
    return path


_UMASK = os.umask(0)
os.umask(_UMASK)


# Signals that stop a run or requeue its job: Ctrl-C, kill, and Slurm's warning before a time limit.
_STOP_SIGNALS = [getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGUSR1", "SIGUSR2") if hasattr(signal, name)]


@contextlib.contextmanager
def _signals_deferred():
    """Hold the stop signals until the block ends, then deliver them. A handler that exits (submitit's requeue
    handler calls sys.exit) and runs inside a write leaves no file; inside torch.save's writer it once surfaced
    as torch's "unexpected pos" RuntimeError instead of the exit, and the job failed rather than being requeued."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught, previous = [], {}
    for signum in _STOP_SIGNALS:
        handler = signal.getsignal(signum)
        if handler is not None and handler != signal.SIG_IGN:
            previous[signum] = signal.signal(signum, lambda n, _frame: caught.append(n))
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        for signum in dict.fromkeys(caught):
            signal.raise_signal(signum)


def _atomic_write(path, write):
    """Write through a temp file and os.replace, with the stop signals held until the file is in place. Under
    torchrun only rank 0 writes (every rank holds the same results); the others skip."""
    if not distributed.is_main():
        return
    folder = os.path.dirname(os.path.abspath(path))
    ensure_dir(folder)
    with _signals_deferred():
        _write_replace(folder, path, write)


def _write_replace(folder, path, write):
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=os.path.basename(path))
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; the result gets the usual permissions
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def save_torch(obj, path):
    """torch.save through a temp file and os.replace: a crash never leaves half a file."""
    _atomic_write(path, lambda f: torch.save(obj, f))


def write_json(obj, path):
    data = (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode()
    _atomic_write(path, lambda f: f.write(data))


def write_text(text, path):
    data = text.encode()
    _atomic_write(path, lambda f: f.write(data))


def read_json(path, what="JSON file"):
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        raise UserError(f"{what} '{path}' does not exist") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UserError(f"{what} '{path}' is not valid JSON ({err})") from None


def load_torch(path, what="checkpoint", map_location="cpu"):
    """Load with weights_only=True: a file whose pickle would run code is refused, never executed."""
    if not os.path.isfile(path):
        raise UserError(f"{what} '{path}' does not exist")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises many kinds for corrupt or unsafe files
        if "GLOBAL" in str(err):  # the pickle names a function or class to call: refused, never called
            reason = "it holds objects that could run code; only tensors and plain containers are loaded"
        else:
            reason = f"it is corrupted or not a torch file ({type(err).__name__}); recreate it or give the right file"
        raise UserError(f"refusing to load {what} '{path}': {reason}") from None


def deterministic():
    """Ask torch for deterministic algorithms (and cuBLAS for its deterministic workspace); CPU runs of
    the same command agree bit for bit even without this."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # read when cuBLAS starts: before any CUDA work
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False


def git_sha():
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             cwd=os.path.dirname(os.path.abspath(__file__)), timeout=10)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


class Timer:
    """with Timer() as t: ...; t.seconds, t.minutes"""

    def __enter__(self):
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.start
        self.minutes = self.seconds / 60
        return False


def write_lines(records, path):
    """Write records as JSON lines, atomically."""
    data = "".join(json.dumps(r) + "\n" for r in records).encode()
    _atomic_write(path, lambda f: f.write(data))


class RunLock:
    """A lock file in a run folder: a second run into the same folder stops with one line.

    The lock names its holder: host, pid and Slurm job id ("-" outside Slurm). It is taken over when it is stale:
    its process no longer runs on this host (killed), it is damaged, or it was written by this same Slurm job
    (queued again after a time limit or preemption: its earlier run is over, perhaps on another node). A lock
    held on another host by another job is respected, as its process cannot be checked from here. Under
    torchrun rank 0 holds it for all ranks.
    """

    def __init__(self, folder):
        self.path = os.path.join(folder, ".lock")
        self.held = False

    @staticmethod
    def owner():
        return f"{socket.gethostname()} {os.getpid()} {os.environ.get('SLURM_JOB_ID') or '-'}"

    def __enter__(self):
        if not distributed.is_main():
            return self
        self.held = True
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            holder = self._holder()
            if holder is None:
                os.replace(self._write_tmp(), self.path)  # stale
                return self
            host, pid = holder
            where = "" if host == socket.gethostname() else f" on host {host}"
            raise UserError(f"another run (pid {pid}{where}) is writing into '{os.path.dirname(self.path)}'; "
                            f"wait for it, choose another --save_dir, or delete '{self.path}' if no run is going on"
                            ) from None
        with os.fdopen(fd, "w") as f:
            f.write(self.owner())
        return self

    def _holder(self):
        """(host, pid) of the lock's live holder, or None when the lock is stale."""
        try:
            with open(self.path) as f:
                fields = f.read().split()
            host, pid, job = fields if len(fields) == 3 else (socket.gethostname(), *fields, "-")  # or: a bare pid
            pid = int(pid)
        except (OSError, ValueError):
            return None
        if pid <= 0 or (job != "-" and job == os.environ.get("SLURM_JOB_ID")):
            return None
        if host == socket.gethostname():
            try:
                os.kill(pid, 0)
            except PermissionError:  # the process lives (under another user)
                pass
            except OSError:
                return None
        return host, pid

    def _write_tmp(self):
        tmp = self.path + f".{os.getpid()}"
        with open(tmp, "w") as f:
            f.write(self.owner())
        return tmp

    def __exit__(self, *exc):
        if self.held and os.path.exists(self.path):
            os.remove(self.path)
        return False
