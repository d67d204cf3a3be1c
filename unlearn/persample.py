"""Per-example gradient statistics from batched passes (FF's Fisher, IU's Gram matrix).

One forward and one backward pass over a chunk of examples record, for every Linear, Conv2d and
BatchNorm layer, its input a and the gradient d of the summed per-example losses with respect to its
output. Example i's weight gradient is D_i^T U_i, with U_i (L x in) the input rows the layer multiplies
at its L output positions (a convolution's unfolded patches) and D_i (L x out) the output gradient there.
So every per-example quantity costs about one ordinary backward pass, not one pass per example.

- `sq_grad_sums`: sum_i g_i^2 (the empirical Fisher of `fisher`). A layer with few output positions needs
  no per-example expansion: sum_i w_i g_i^2 = sum_pq (w D_p D_q)^T (U_p U_q), one matmul over the pairs of
  positions p, q.
- `group_sq_grads`: the class-wise Fisher of `fisher_new` over batches of consecutive examples: one backward
  pass per class, then per layer one batched matmul giving every batch's sum over its examples and positions
  of D_i^T U_i.
- `Records`: the n x P matrix G of per-example gradients in factored form, giving K = G G^T, G v and
  G^T w without forming G. Where L^2 (in + out) < in * out, a pair costs L^2 (in + out) instead of in * out through
  g_i . g_j = sum_pq (D_i D_j^T)_pq (U_i U_j^T)_pq.

The model is put in eval mode: BatchNorm uses its running statistics, so examples do not interact.
"""
import torch
import torch.nn.functional as F
from torch import nn

import dataset
import distributed
from argtypes import nonneg_int
from unlearn import flag
from utils import UserError

RECORD_FLOATS = 2**28  # layer inputs and output gradients held per batched pass when --grad_chunk is 0 (1 GiB)
BLOCK_FLOATS = 2**25  # per-example gradients expanded at once for the Gram matrix (128 MiB)
KEEP_FLOATS = 2**28  # a layer's whole per-example gradient matrix is kept while the Gram matrix is built (1 GiB)
GRAD_CHUNK = flag("--grad_chunk", type=nonneg_int, default=0,
                  help="FF, IU: examples per batched per-example-gradient pass; 0: sized to 1 GiB of records")
CACHE_FLOATS = 2**21  # per-example terms formed at once for sum_i g_i^2 (8 MiB: cache-sized blocks run fastest)
PAIR_POSITIONS = 4  # up to this many output positions, sum_i g_i^2 is taken through position pairs
GHOST_ROWS = 2048  # example-positions per side of a Gram block
BATCHNORM = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def layers(model):
    """[(prefix, module)] for every module owning parameters; each must be a kind expanded here."""
    found = []
    for name, m in model.named_modules():
        if next(m.parameters(recurse=False), None) is None:
            continue
        conv_ok = isinstance(m, nn.Conv2d) and m.groups == 1 and m.padding_mode == "zeros" and \
            not isinstance(m.padding, str)
        if not (isinstance(m, nn.Linear) or conv_ok or (isinstance(m, BATCHNORM) and m.track_running_stats)):
            raise UserError(f"per-example gradients support Linear, Conv2d (groups=1, numeric zero padding) and "
                            f"BatchNorm with running statistics; layer '{name}' is {type(m).__name__}")
        found.append((name + "." if name else "", m))
    return found


class Pass:
    """A forward pass over x that records each layer's input; `backward` gives the layers' output gradients."""

    def __init__(self, model, mods, x):
        model.eval()
        self.inputs, self.outputs = {}, {}

        def hook(m, args, out):
            if m in self.inputs:
                raise UserError("per-example gradients need each layer called once per forward pass; "
                                f"{type(m).__name__} is called twice")
            self.inputs[m], self.outputs[m] = args[0].detach(), out
            return out.clone()  # in-place ops downstream (ReLU(inplace=True)) must not change the recorded output

        handles = [m.register_forward_hook(hook) for _, m in mods]
        try:
            with torch.enable_grad():
                self.logits = model(x)
        finally:
            for h in handles:
                h.remove()
        self.probs = F.softmax(self.logits.detach(), 1)

    def backward(self, targets, retain=False, scale=None):
        """{module: d sum_i scale_i CE(x_i, targets_i) / d output} for the modules this pass used."""
        used = list(self.outputs)
        dlogits = self.probs - F.one_hot(targets, self.probs.shape[1]).to(self.probs.dtype)
        if scale is not None:
            dlogits = dlogits * scale[:, None]
        grads = torch.autograd.grad(self.logits, [self.outputs[m] for m in used], dlogits, retain_graph=retain,
                                    allow_unused=True)
        return {m: g for m, g in zip(used, grads) if g is not None}

    def floats(self):
        return sum(t.numel() for t in self.inputs.values()) + sum(t.numel() for t in self.outputs.values())


def _rows(m, a):
    """(b, L, in): what the layer's weight multiplies at each of its L output positions."""
    if isinstance(m, nn.Conv2d):
        return F.unfold(a, m.kernel_size, m.dilation, m.padding, m.stride).transpose(1, 2)
    return a.reshape(len(a), -1, a.shape[-1])


def _cols(m, d):
    """(b, L, out): the output gradient at the same positions."""
    if isinstance(m, nn.Conv2d):
        return d.flatten(2).transpose(1, 2)
    return d.reshape(len(d), -1, d.shape[-1])


def grads(m, a, d):
    """{parameter name: (b, *shape)} per-example gradients of one layer from its input and output gradient."""
    if isinstance(m, BATCHNORM):
        shape = (1, -1) + (1,) * (a.dim() - 2)
        xhat = (a - m.running_mean.view(shape)) * torch.rsqrt(m.running_var.view(shape) + m.eps)
        dims = tuple(range(2, a.dim()))
        return {"weight": (d * xhat).sum(dims) if dims else d * xhat, "bias": d.sum(dims) if dims else d}
    D = _cols(m, d)
    out = {"weight": torch.bmm(D.transpose(1, 2), _rows(m, a)).view(len(a), *m.weight.shape)}
    if m.bias is not None:
        out["bias"] = D.sum(1)
    return out


def chunk_size(model, mods, x, chunk):
    """Examples per batched pass: --grad_chunk if set, else what keeps the recorded tensors near 1 GiB."""
    if chunk:
        return chunk
    return max(1, RECORD_FLOATS // record_floats(model, mods, x))


def record_floats(model, mods, x):
    """Floats recorded per example (layer inputs and outputs), from a one-example pass."""
    return Pass(model, mods, x[:1]).floats()


def _pair_sq(D, U, w):
    """sum_i w_i (D_i^T U_i)^2 = sum_{p<=q} c_pq (w D_p D_q)^T (U_p U_q), c_pq = 2 - [p = q], as one matmul."""
    L = D.shape[1]
    p, q = torch.triu_indices(L, L, device=D.device)
    scale = (2.0 - (p == q).to(D.dtype))[None, :, None] * w[:, None, None]
    return ((D[:, p] * D[:, q] * scale).flatten(0, 1).T @ (U[:, p] * U[:, q]).flatten(0, 1))


def _add_sq(total, prefix, m, a, d, w):
    """total[name] += sum_i w_i g_i^2 for one layer's parameters."""
    if isinstance(m, BATCHNORM):
        for name, g in grads(m, a, d).items():
            total[prefix + name] += torch.tensordot(w, g.square(), 1)
        return
    D = _cols(m, d)
    L, cout = D.shape[1:]
    if m.bias is not None:
        total[prefix + "bias"] += w @ D.sum(1).square()
    if L > PAIR_POSITIONS:  # expand per-example gradients, a block at a time
        step = max(1, CACHE_FLOATS // m.weight.numel())
        for s in range(0, len(a), step):
            g = grads(m, a[s:s + step], d[s:s + step])["weight"]
            total[prefix + "weight"] += torch.tensordot(w[s:s + step], g.square(), 1)
        return
    U = _rows(m, a)
    step = max(1, CACHE_FLOATS // (L * (L + 1) // 2 * (U.shape[2] + cout)))
    for s in range(0, len(a), step):
        total[prefix + "weight"] += _pair_sq(D[s:s + step], U[s:s + step], w[s:s + step]).view_as(m.weight)


def sq_grad_sums(model, x, y, chunk=0):
    """{name: sum_i g_i^2} for g_i the gradient of CE(x_i, y_i). Under torchrun every rank must call it: each sums
    over its contiguous share of the examples, and the sums are added over the ranks."""
    mods = layers(model)
    total = {n: torch.zeros_like(p) for n, p in model.named_parameters()}
    step = chunk_size(model, mods, x, chunk)
    lo, hi = distributed.share(len(x))
    x, y = dataset.rows(x, lo, hi), y[lo:hi]
    for s in range(0, len(x), step):
        p = Pass(model, mods, x[s:s + step])
        outs = p.backward(y[s:s + step])
        w = torch.ones(len(p.probs), device=x.device, dtype=p.probs.dtype)
        for prefix, m in mods:
            if m in outs:
                _add_sq(total, prefix, m, p.inputs[m], outs[m], w)
    return distributed.all_sum(total)


class _Grouped:
    """A pass over x laid out for batch sums: padded to G batches of `group` and permuted so that row j * G + g
    is example j of batch g, so every layer's records read as (group, G, ...). Padding rows get a zero output
    gradient, so they add nothing. Each layer's input is prepared once for all classes: BatchNorm's normalized
    input, and a convolution's unfolded patches as (G, group x positions, in x kernel), contiguous, so that a
    class's batch gradients of that layer are one batched matmul."""

    def __init__(self, model, mods, x, group):
        n = len(x)
        self.G = G = (n + group - 1) // group
        self.group = group
        pad = G * group - n
        xp = torch.cat([x, x[:1].expand(pad, *x.shape[1:])]) if pad else x
        self.pass_ = Pass(model, mods, xp.view(G, group, *x.shape[1:]).transpose(0, 1).reshape(G * group, *x.shape[1:]))
        real = (torch.arange(G * group, device=x.device).view(G, group) < n).to(x.dtype)  # (G, group)
        self.real = real.T.reshape(-1)  # in the permuted order
        self.sizes = real.sum(1)
        probs = self.pass_.probs * self.real[:, None]
        self.mean_probs = probs.view(group, G, -1).sum(0) / self.sizes[:, None]  # (G, classes): batch means
        self.cache = {}
        widest = max(m.weight.numel() for _, m in mods if not isinstance(m, BATCHNORM))
        # reused: fresh pages for every result are slow
        self.buffer = torch.empty(G * widest, dtype=probs.dtype, device=x.device)

    def backward(self, c, retain):
        n = len(self.pass_.probs)
        return self.pass_.backward(torch.full((n,), c, device=self.real.device), retain, scale=self.real)

    def _prepared(self, m):
        if m not in self.cache:
            a, group, G = self.pass_.inputs[m], self.group, self.G
            if isinstance(m, BATCHNORM):
                shape = (1, -1) + (1,) * (a.dim() - 2)
                self.cache[m] = (a - m.running_mean.view(shape)) * torch.rsqrt(m.running_var.view(shape) + m.eps)
            elif isinstance(m, nn.Conv2d):
                U = F.unfold(a, m.kernel_size, m.dilation, m.padding, m.stride)  # (n, in x kernel, L)
                self.cache[m] = U.view(group, G, *U.shape[1:]).permute(1, 0, 3, 2).reshape(G, -1, U.shape[1])
            else:  # Linear: output positions are its input's middle dimensions
                self.cache[m] = a.reshape(group, G, -1, a.shape[-1]).transpose(0, 1).reshape(G, -1, a.shape[-1])
        return self.cache[m]

    def sums(self, m, d):
        """{parameter name: (G, *shape)}: each batch's summed gradient for one layer's output gradient d. A weight's
        result lives in a buffer that the next call overwrites."""
        group, G = self.group, self.G
        prep = self._prepared(m)
        if isinstance(m, BATCHNORM):
            dims = tuple(range(2, d.dim()))
            out = {"weight": (d * prep).sum(dims) if dims else d * prep, "bias": d.sum(dims) if dims else d}
            return {k: v.view(group, G, -1).sum(0) for k, v in out.items()}
        cout = m.weight.shape[0]
        if isinstance(m, nn.Conv2d):
            D = d.reshape(group, G, cout, -1).permute(1, 2, 0, 3).reshape(G, cout, -1)  # (G, out, group x L)
        else:
            D = d.reshape(group, G, -1, cout).permute(1, 3, 0, 2).reshape(G, cout, -1)
        weight = self.buffer[:G * m.weight.numel()].view(G, cout, -1)
        out = {"weight": torch.bmm(D, prep, out=weight).view(G, *m.weight.shape)}
        if m.bias is not None:
            out["bias"] = D.sum(2)
        return out


def _unfolded_floats(mods, one):
    """Floats of the prepared (unfolded) convolution inputs per example, from a one-example pass."""
    return sum(m.weight[0].numel() * one.outputs[m][0, 0].numel() for _, m in mods if isinstance(m, nn.Conv2d))


def group_sq_grads(model, x, group, chunk=0):
    """Golatkar et al.'s Fisher diagonal over consecutive batches of `group` examples (the last may be
    smaller): mean over batches of sum_y mean_b p(y|x) * (d mean_b CE(x, y) / dw)^2.

    One forward pass per chunk of whole batches and one backward pass per class give every layer's output
    gradient; each layer's batch gradients for a class are then one batched matmul against its prepared input.
    A chunk holds --grad_chunk examples, or as many as keep the records and prepared inputs near RECORD_FLOATS.
    Under torchrun every rank must call it: each takes its contiguous share of the batches, and the sums over
    batches are added over the ranks."""
    mods = layers(model)
    total = {n: torch.zeros_like(p) for n, p in model.named_parameters()}
    one = Pass(model, mods, x[:1])
    step = chunk or RECORD_FLOATS // (one.floats() + _unfolded_floats(mods, one))
    step = max(group, step // group * group)
    batches = (len(x) + group - 1) // group
    x = dataset.rows(x, *distributed.share(len(x), group))
    for s in range(0, len(x), step):
        p = _Grouped(model, mods, x[s:s + step], group)
        classes = p.mean_probs.shape[1]
        for c in range(classes):
            outs = p.backward(c, retain=c < classes - 1)
            coef = p.mean_probs[:, c] / p.sizes ** 2  # (batch sum / size)^2 x the batch mean of p(c|x)
            for prefix, m in mods:
                if m in outs:
                    for name, g in p.sums(m, outs[m]).items():
                        total[prefix + name] += torch.tensordot(coef, g.square_(), 1)
    return {k: v / batches for k, v in distributed.all_sum(total).items()}


def _direct(K, Gv, flat, v, n, step):
    """K += G G^T and Gv += G v, G's rows made `step` at a time by flat(start, stop); the blocks are kept
    (not made again for every pair) when all of G fits KEEP_FLOATS."""
    kept = {}

    def block(i):
        g = kept.get(i)
        if g is None:
            g = flat(i, i + step)
            if n * v.numel() <= KEEP_FLOATS:
                kept[i] = g
        return g

    for i in range(0, n, step):
        gi = block(i)
        Gv[i:i + step] += (gi @ v).double()
        K[i:i + step, i:i + step] += (gi @ gi.T).double()
        for j in range(i + step, n, step):
            kij = (gi @ block(j).T).double()
            K[i:i + step, j:j + step] += kij
            K[j:j + step, i:i + step] += kij.T


def _ghost(K, Gv, D, U, V):
    """The same for a weight whose example-i gradient is D_i^T U_i (D: n x L x out, U: n x L x in), unformed:
    g_i . g_j = sum_pq (D_i D_j^T)_pq (U_i U_j^T)_pq and g_i . V = sum(D_i * (U_i V^T))."""
    n, L = D.shape[:2]
    Gv += (D * (U @ V.T)).sum((1, 2)).double()
    step = max(1, GHOST_ROWS // L)
    for i in range(0, n, step):
        Di, Ui = D[i:i + step].flatten(0, 1), U[i:i + step].flatten(0, 1)
        bi = len(Di) // L
        for j in range(i, n, step):
            Dj, Uj = D[j:j + step].flatten(0, 1), U[j:j + step].flatten(0, 1)
            kij = ((Di @ Dj.T) * (Ui @ Uj.T)).view(bi, L, len(Dj) // L, L).sum((1, 3)).double()
            K[i:i + step, j:j + step] += kij
            if j != i:
                K[j:j + step, i:i + step] += kij.T


class Records:
    """Every layer's input and output gradient for CE over (x, y), from batched passes: the n x P matrix G of
    per-example gradients (columns in named_parameters() order) in factored form."""

    def __init__(self, model, x, y, chunk=0):
        self.model, self.mods, self.n = model, layers(model), len(x)
        step = chunk_size(model, self.mods, x, chunk)
        parts = {m: ([], []) for _, m in self.mods}
        for s in range(0, len(x), step):
            p = Pass(model, self.mods, x[s:s + step])
            for m, d in p.backward(y[s:s + step]).items():
                parts[m][0].append(p.inputs[m])
                parts[m][1].append(d)
        self.data = {m: (torch.cat(a), torch.cat(d)) for m, (a, d) in parts.items() if a}

    def gram_and_dot(self, v):
        """(K, Gv): K = G G^T (n x n) and G v (n) in float64, for v a flat vector."""
        vs, offset = {}, 0
        for name, prm in self.model.named_parameters():
            vs[name] = v[offset:offset + prm.numel()]
            offset += prm.numel()
        n = self.n
        K = torch.zeros(n, n, dtype=torch.float64, device=v.device)
        Gv = torch.zeros(n, dtype=torch.float64, device=v.device)
        for prefix, m in self.mods:
            if m not in self.data:
                continue
            a, d = self.data[m]
            names = [name for name, _ in m.named_parameters(recurse=False)]
            if not isinstance(m, BATCHNORM):
                D, U = _cols(m, d).contiguous(), _rows(m, a).contiguous()
                L, cin, cout = D.shape[1], U.shape[2], D.shape[2]
                if L * L * (cin + cout) < cin * cout:
                    _ghost(K, Gv, D, U, vs[prefix + "weight"].view(cout, cin))
                    names.remove("weight")
            if names:
                vl = torch.cat([vs[prefix + name] for name in names])

                def flat(i, j, m=m, a=a, d=d, names=names):
                    g = grads(m, a[i:j], d[i:j])
                    parts = [g[name].flatten(1) for name in names]
                    return parts[0] if len(parts) == 1 else torch.cat(parts, 1)

                _direct(K, Gv, flat, vl, n, max(1, BLOCK_FLOATS // vl.numel()))
        return K, Gv

    def weighted_sum(self, w):
        """G^T w = sum_i w_i g_i, flat, from the records alone (no further pass through the model)."""
        out = {name: torch.zeros_like(p) for name, p in self.model.named_parameters()}
        for prefix, m in self.mods:
            if m not in self.data:
                continue
            a, d = self.data[m]
            if isinstance(m, BATCHNORM):
                for name, g in grads(m, a, d).items():
                    out[prefix + name] += torch.tensordot(w, g, 1)
                continue
            wd = d * w.view(-1, *[1] * (d.dim() - 1))
            if isinstance(m, nn.Conv2d):
                out[prefix + "weight"] += torch.nn.grad.conv2d_weight(a, m.weight.shape, wd, m.stride, m.padding,
                                                                      m.dilation)
            else:
                out[prefix + "weight"] += wd.reshape(-1, wd.shape[-1]).T @ a.reshape(-1, a.shape[-1])
            if m.bias is not None:
                out[prefix + "bias"] += _cols(m, wd).sum((0, 1))
        return torch.cat([t.flatten() for t in out.values()])
