"""Fisher forgetting (FF): Gaussian noise shaped by the inverse diagonal Fisher of the retain set.

The two variants mean what they mean in the reference code:
- `fisher_new`, the papers' FF (Golatkar et al.): the retain set in consecutive batches of 32, eval mode;
  for every class y, the squared gradient of the batch-mean cross-entropy with every target set to y,
  weighted by the batch mean of p(y|x), summed over y and averaged over batches. Then
  w = mu + sqrt(var) * N(0, 1) with var = alpha / (F + 1e-8) clamped at 1e3 (1e2 on the classifier),
  averaged over dim 1 for tensors with more than one dimension, x10 on the classifier and on 1-d tensors;
  mu = w, except that when the forget set is a whole class that class's classifier row gets mu = 0 and
  var = 1e-4 (x10). The per-batch, per-class gradients come from `persample.group_sq_grads` (one backward
  pass per class over many batches at once), not from one small backward pass per batch and class.
- `fisher`: the empirical Fisher F = mean_i (g_i + 1e-8)^2, g_i the gradient of log p(y_i | x_i);
  w += min(sqrt(alpha / F), 1e-3) * N(0, 1), ten times larger on the classifier layer.

Both change only weights the mask allows; noise is drawn for every parameter in order, as the reference does.
Under torchrun each rank computes the statistics of its share of the examples (for `fisher_new`, of whole
batches), the sums are added over the ranks, and every rank draws the same noise.
"""
import torch

from argtypes import nonneg_int
from masks import gradient_sums
from unlearn import flag, persample, register

FISHER_SAMPLES = flag("--fisher_samples", type=nonneg_int, default=0,
                      help="FF: retain examples estimating the Fisher (0: all of them)")

EPS = 1e-8
BATCH = 32  # the reference's batch size for fisher_new's estimator


def _classifier(model, p):
    return p.dim() >= 1 and p.shape[0] == model.meta["num_classes"]


def _retain(splits, args):
    """The first --fisher_samples retain examples (all when 0), in training order."""
    x, y = splits.xy("retain")
    n = args.fisher_samples or len(x)
    return x[:n], y[:n]


def _apply(model, mean, std, mask):
    """w = mean + std * N(0, 1) where the mask allows; elsewhere w is unchanged."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            new = mean[name] + std[name] * torch.randn_like(p)
            if mask and name in mask:
                new = torch.where(mask[name], new, p)
            p.copy_(new)
    return model


@register(display="FF (empirical Fisher)", one_shot=True, flags=[persample.GRAD_CHUNK, FISHER_SAMPLES])
def fisher(model, splits, args, device, mask, run_dir=None):
    """FF with the empirical Fisher F = mean_i (g_i + 1e-8)^2: w += min(sqrt(alpha / F), 1e-3) * N(0, 1),
    x10 on the classifier layer."""
    x, y = _retain(splits, args)
    sq = persample.sq_grad_sums(model, x, y, args.grad_chunk)
    sums = gradient_sums(model, x, y, args.grad_chunk or 1024)  # of CE = -log p(y | x), so g = -sums here
    mean, std = {}, {}
    for name, p in model.named_parameters():
        fisher_diag = (sq[name] - 2 * EPS * sums[name] + len(x) * EPS ** 2) / len(x)  # mean of (g + eps)^2
        s = torch.sqrt(args.alpha / fisher_diag).clamp(max=1e-3)
        std[name] = s * 10 if _classifier(model, p) else s
        mean[name] = p.detach()
    return _apply(model, mean, std, mask)


@register(display="FF", one_shot=True, flags=[persample.GRAD_CHUNK, FISHER_SAMPLES])
def fisher_new(model, splits, args, device, mask, run_dir=None):
    """The papers' FF (Golatkar et al.): noise of variance alpha / (F + 1e-8) from the class-wise Fisher of
    the retain set in batches of 32 (see the module's docstring)."""
    x, _ = _retain(splits, args)
    grad2 = persample.group_sq_grads(model, x, BATCH, args.grad_chunk)
    forgotten = splits.forget_class
    mean, std = {}, {}
    for name, p in model.named_parameters():
        classifier = _classifier(model, p)
        var = (1.0 / (grad2[name] + 1e-8)).clamp(max=1e2 if classifier else 1e3) * args.alpha
        if p.dim() > 1:
            var = var.mean(dim=1, keepdim=True).expand_as(p).clone()
        mu = p.detach().clone()
        if classifier and forgotten >= 0:
            mu[forgotten] = 0
            var[forgotten] = 1e-4
        if classifier or p.dim() == 1:
            var = var * 10
        mean[name], std[name] = mu, var.sqrt()
    return _apply(model, mean, std, mask)
