"""Training on several processes: the process group, batch shards, synchronized BatchNorm, DDP, shared state.

`torchrun --nproc_per_node N script.py ...` starts N ranks (WORLD_SIZE = N; `--nnodes M` over M machines), and
so does `srun` in a Slurm job of N tasks: a task that srun started (SLURM_STEP_ID set) in a step of several
tasks takes RANK, WORLD_SIZE and LOCAL_RANK from SLURM_PROCID, SLURM_STEP_NUM_TASKS (else SLURM_NTASKS) and
SLURM_LOCALID, and the master address from the first node of the step's node list (torchrun's variables win
where both are set). Every rank runs the whole script
with the same seeds, so every rank draws the same shuffle, the same augmentation and the same random labels
as one process would; `trainer.fit` then gives each rank its contiguous slice of every global batch
(`--batch_size` stays the global batch), synchronizes BatchNorm statistics over the ranks and averages the
gradients with DistributedDataParallel. Each rank's batch-mean loss is weighted by its share of the batch
(n_rank * N / n_batch), so an uneven last batch still gives the gradient of the global batch mean. The
all-reduced gradients are identical on every rank, so the masked step, the weights and the running
statistics stay identical too. Only rank 0 writes files and prints. Evaluation and the one-shot statistics are
shared out: each rank takes its `share` of the rows, and `gather_rows` / `all_sum` combine the parts.

Backends: NCCL on CUDA (rank r on cuda:LOCAL_RANK), gloo on CPU. torch's SyncBatchNorm only accepts GPU
inputs; on CPU `CPUSyncBatchNorm` computes the same statistics with two all-reduces.
"""
import contextlib
import datetime
import hashlib
import inspect
import os

import torch
import torch.distributed as dist
from torch import nn

from errors import UserError

# Rank 0 evaluates alone between training phases (main_imp's states, main_backdoor) while the other ranks
# wait in their next collective: allow that wait to be long.
TIMEOUT = datetime.timedelta(hours=2)


SLURM_PORTS = (20000, 40000)  # a Slurm job's master port (unless MASTER_PORT is set): by its job id in this range


def requested():
    """True when started by torchrun (even with one process) or by another launcher with more than one."""
    return "TORCHELASTIC_RUN_ID" in os.environ or int(os.environ.get("WORLD_SIZE", "1")) > 1


def first_host(nodelist):
    """The first host of a Slurm node list: 'gpu[07-09,12],cpu1' -> 'gpu07', 'r[1-2]-n[3-4]' -> 'r1-n3'."""
    out, depth, item = [], 0, True
    for ch in nodelist.strip():
        if ch == "[":
            depth, item = depth + 1, True
        elif ch == "]":
            depth -= 1
        elif depth == 0 and ch == ",":
            break
        elif depth == 0:
            out.append(ch)
        elif ch in ",-":
            item = False
        elif item:
            out.append(ch)
    return "".join(out)


def _from_slurm(env):
    """Fill in torchrun's variables from Slurm's for a task srun started in a step of several tasks."""
    world = int(env.get("SLURM_STEP_NUM_TASKS") or env.get("SLURM_NTASKS") or 1)
    if "TORCHELASTIC_RUN_ID" in env or "RANK" in env or "SLURM_STEP_ID" not in env or world < 2:
        return
    nodes = env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST") or "127.0.0.1"
    env.setdefault("MASTER_ADDR", first_host(nodes))
    low, high = SLURM_PORTS
    env.setdefault("MASTER_PORT", str(low + int(env.get("SLURM_JOB_ID", "0")) % (high - low)))
    env.update(RANK=env["SLURM_PROCID"], WORLD_SIZE=str(world), LOCAL_RANK=env.get("SLURM_LOCALID", "0"))


def setup(device):
    """Join the process group when `requested()` (after reading Slurm's variables); returns this rank's device
    (cuda:LOCAL_RANK on CUDA)."""
    _from_slurm(os.environ)
    if not requested() or active():
        return device
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        if local >= torch.cuda.device_count():
            raise UserError(f"LOCAL_RANK {local} but only {torch.cuda.device_count()} CUDA devices are visible; "
                            f"start at most that many processes per node")
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=TIMEOUT)
    return device


def active():
    return dist.is_available() and dist.is_initialized()


def rank():
    return dist.get_rank() if active() else 0


def world_size():
    return dist.get_world_size() if active() else 1


def is_main():
    """Whether this process writes files and prints: rank 0, or the only process."""
    return rank() == 0


def barrier():
    if active():
        dist.barrier()


def cleanup():
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


# ---------------------------------------------------------------- work shared out: evaluation, statistics

def share(n, group=1):
    """This rank's contiguous range (lo, hi) of n rows: world_size() pieces of whole groups of `group` consecutive
    rows (the last group may be shorter), their numbers of groups differing by at most one."""
    groups = _sizes(-(-n // group))
    lo = sum(groups[:rank()]) * group
    return min(lo, n), min(lo + groups[rank()] * group, n)


def _sizes(n):
    w = world_size()
    return [n // w + (r < n % w) for r in range(w)]


def gather_rows(part, n):
    """The n rows of which every rank holds its share(n) as `part`, concatenated in rank order, on every rank."""
    if not active():
        return part
    sizes = _sizes(n)
    buf = torch.zeros((max(sizes), *part.shape[1:]), dtype=part.dtype, device=_comm_device())
    buf[:len(part)] = part
    bufs = [torch.empty_like(buf) for _ in sizes]
    dist.all_gather(bufs, buf)
    return torch.cat([b[:size] for b, size in zip(bufs, sizes)]).to(part.device)


def merged(results):
    """The union of every rank's dict `results`, on every rank (small, picklable values)."""
    if not active():
        return results
    parts = [None] * world_size()
    dist.all_gather_object(parts, results)
    return {k: v for part in parts for k, v in part.items()}


# ---------------------------------------------------------------- state the ranks share: broadcast, sums, checks

def _comm_device():
    """Where collectives take their tensors: this rank's GPU under NCCL, else the CPU."""
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def _in_place(tensors, collective):
    """Run `collective` on each tensor of the dict `tensors` and copy the result back; returns the dict."""
    if not active():
        return tensors
    device = _comm_device()
    for t in tensors.values():
        buf = t.to(device, torch.uint8 if t.dtype == torch.bool else t.dtype)  # gloo and NCCL have no bool
        collective(buf)
        t.copy_(buf)
    return tensors


def from_main(tensors):
    """Rank 0's values of a dict of tensors on every rank (copied in place; returns the dict). For state that every
    rank computes but must hold identically, such as a saliency mask: on a GPU a non-deterministic backward can
    put another entry at the top-k boundary on each rank."""
    return _in_place(tensors, lambda buf: dist.broadcast(buf, 0))


def all_sum(tensors):
    """The sum over the ranks of a dict of tensors, on every rank (in place; returns the dict): a statistic of which
    each rank computed its share's part. Under `together`, this is where the other ranks learn that one failed."""
    if active() and not _go_on(failed=False):
        raise _Stopped
    return _in_place(tensors, dist.all_reduce)


class _Stopped(Exception):
    """Raised in a block under `together` on a rank that learns in `all_sum` that another rank failed."""


def _go_on(failed):
    """Whether no rank failed: a flag exchanged by every rank."""
    flag = torch.tensor([int(failed)], device=_comm_device())
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return not flag.item()


@contextlib.contextmanager
def together():
    """A block that every rank runs and whose only collectives are `all_sum`s (a one-shot method). An exception on
    any rank ends it on every rank with one UserError, the first failed rank's line, instead of leaving the others
    waiting in a collective; a rank's own exception other than a UserError is raised as it is there (a bug)."""
    if not active():
        yield
        return
    error = None
    try:
        yield
    except _Stopped:
        pass
    except Exception as err:
        error = err
        _go_on(failed=True)
    else:
        if _go_on(failed=False):
            return
    lines = [None] * world_size()
    dist.all_gather_object(lines, None if error is None else str(error) if isinstance(error, UserError) else
                           f"{type(error).__name__} on rank {rank()}: {error}")
    if error is not None and not isinstance(error, UserError):
        raise error
    raise UserError(next(line for line in lines if line)) from None


def checksum(tensors):
    """A 63-bit checksum of the bytes of `tensors` (None entries skipped)."""
    h = hashlib.sha256()
    for t in tensors:
        if t is not None:
            h.update(t.detach().reshape(-1).cpu().view(torch.uint8).numpy().tobytes())
        h.update(b"|" if t is not None else b"-")
    return int.from_bytes(h.digest()[:8], "little") >> 1


def check_same(tensors, what):
    """Stop every rank with one line when the ranks hold different `tensors` (compared by checksum)."""
    if not active():
        return
    sums = [torch.zeros(1, dtype=torch.int64, device=_comm_device()) for _ in range(world_size())]
    dist.all_gather(sums, torch.tensor([checksum(tensors)], device=_comm_device()))
    differ = [r for r, s in enumerate(sums) if not torch.equal(s, sums[0])]
    if differ:
        raise UserError(f"the ranks hold different {what} (rank {differ[0]}'s checksum is not rank 0's); they would "
                        f"train apart. Run with --deterministic, or compute it once and share it")


# ---------------------------------------------------------------- batch shards

class Shard:
    """A tensor that already is this rank's slice of a global batch of `n` examples (streamed data, where each
    rank reads only its slice); `shard` passes it through."""

    def __init__(self, tensor, n):
        self.tensor, self.n = tensor, n


def _first_tensor(obj):
    if isinstance(obj, (torch.Tensor, Shard)) and (isinstance(obj, Shard) or obj.dim() > 0):
        return obj
    if isinstance(obj, (tuple, list)):
        for o in obj:
            t = _first_tensor(o)
            if t is not None:
                return t
    return None


def shard(x, y):
    """This rank's contiguous slice of a global batch, and (n_local, n_global) of its first tensor.

    Every tensor in x and y (nested tuples and lists) is cut along dim 0 into world_size() contiguous pieces
    (sizes differ by at most one, the larger first); a Shard is already this rank's piece; other values pass
    unchanged.
    """
    r, w = rank(), world_size()

    def cut(obj):
        if isinstance(obj, Shard):
            return obj.tensor
        if isinstance(obj, torch.Tensor) and obj.dim() > 0:
            return obj.tensor_split(w)[r]
        if isinstance(obj, (tuple, list)):
            return type(obj)(cut(o) for o in obj)
        return obj

    first = _first_tensor(x)
    if isinstance(first, Shard):
        n, local = first.n, len(first.tensor)
    else:
        n = len(first) if first is not None else 1
        local = len(first.tensor_split(w)[r]) if first is not None else 1
    return cut(x), cut(y), local, n


def weighted(loss, local, n):
    """The loss each rank backpropagates: its shard's mean times n_local * world / n, so that DDP's average
    over ranks is the gradient of the global batch mean (exact when every term of the loss is a mean over
    the first tensor's examples, or does not depend on the batch)."""
    scale = local * world_size() / n
    return loss * scale if scale != 1 else loss


def global_loss(loss, local, n):
    """The global batch's mean loss (the number one process reports): sum of n_local * shard mean over ranks."""
    part = loss.detach().float() * local if local else torch.zeros((), device=loss.device)
    dist.all_reduce(part)
    return part / n


# ---------------------------------------------------------------- synchronized BatchNorm and DDP

class _AllReduceSum(torch.autograd.Function):
    """Sum over ranks; its gradient is the sum over ranks of the incoming gradients."""

    @staticmethod
    def forward(ctx, tensor):
        out = tensor.clone()
        dist.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx, grad):
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


class CPUSyncBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm whose training statistics are those of the global batch (all ranks), for CPU tensors.

    Mean first, then the mean squared deviation (two all-reduces: the same two-pass statistics as torch's
    BatchNorm); running statistics updated as torch does (unbiased variance, momentum or cumulative average).
    Eval mode, or a module without running statistics kept in eval mode, is torch's BatchNorm.
    """

    def _check_input_dim(self, input):
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def forward(self, input):
        if not self.training or not active():
            return super().forward(input)
        factor = 0.0 if self.momentum is None else self.momentum
        if self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        dims = [0] + list(range(2, input.dim()))
        shape = [1, -1] + [1] * (input.dim() - 2)
        x = input if input.dtype == torch.float64 else input.float()
        count = torch.tensor([x.numel() / max(x.shape[1], 1)], dtype=x.dtype, device=x.device)
        total = _AllReduceSum.apply(torch.cat([x.sum(dims), count]))
        n = total[-1].detach()
        mean = total[:-1] / n
        dev = x - mean.view(shape)
        var = _AllReduceSum.apply((dev * dev).sum(dims)) / n
        out = dev * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        if self.track_running_stats and self.running_mean is not None:
            with torch.no_grad():
                unbiased = var.detach() * (n / (n - 1)) if n > 1 else var.detach()
                self.running_mean.mul_(1 - factor).add_(mean.detach().to(self.running_mean.dtype), alpha=factor)
                self.running_var.mul_(1 - factor).add_(unbiased.to(self.running_var.dtype), alpha=factor)
        return out.to(input.dtype)


def _sync_batchnorm(model):
    """Replace every BatchNorm of `model` by its synchronized form sharing the same parameters and buffers
    (so optimizers and masks still hold them); returns the swaps to undo."""
    device = next(model.parameters()).device
    swaps = []
    for parent in list(model.modules()):
        for child_name, child in list(parent.named_children()):
            if not isinstance(child, nn.modules.batchnorm._BatchNorm) or isinstance(
                    child, (nn.SyncBatchNorm, CPUSyncBatchNorm)):
                continue
            cls = nn.SyncBatchNorm if device.type == "cuda" else CPUSyncBatchNorm
            sync = cls(child.num_features, child.eps, child.momentum, child.affine, child.track_running_stats)
            sync.weight, sync.bias = child.weight, child.bias
            sync.running_mean, sync.running_var = child.running_mean, child.running_var
            sync.num_batches_tracked = child.num_batches_tracked
            sync.train(child.training)
            setattr(parent, child_name, sync)
            swaps.append((parent, child_name, child))
    return swaps


def wrap(model):
    """(DDP module for training, undo): BatchNorms synchronized, gradients averaged over the ranks. `undo()`
    puts the plain BatchNorms back (they hold the trained parameters and statistics)."""
    from torch.nn.parallel import DistributedDataParallel
    swaps = _sync_batchnorm(model)
    device = next(model.parameters()).device
    # the ranks compute identical buffers (synchronized statistics): no broadcast before every forward
    no_sync = "forward_sync_buffers" if "forward_sync_buffers" in inspect.signature(
        DistributedDataParallel.__init__).parameters else "broadcast_buffers"
    ddp = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                  **{no_sync: False})

    def undo():
        for parent, child_name, child in swaps:
            child.train(getattr(parent, child_name).training)
            setattr(parent, child_name, child)

    return ddp, undo
