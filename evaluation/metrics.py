"""Model outputs and accuracy.

`predict_logits` / `predict_probs` turn a model and an image tensor into logits / softmax probabilities on
the CPU (under torchrun each rank computes its share of the rows and every rank gets them all);
`accuracy` scores those probabilities against labels, in percent.
"""

import torch

import dataset
import distributed


def _batched_outputs(model, x, device, batch_size, head):
    """head(model(batch)) for every batch of `x`, on the CPU, concatenated; eval mode under
    `torch.inference_mode()`, the previous training mode restored. An empty `x` gives `torch.empty(0, 0)`.

    Under torchrun every rank must call it: each computes its contiguous share of the rows (streamed images are
    read by one DataLoader), and the rows are gathered on every rank."""
    if len(x) == 0:
        return torch.empty(0, 0)
    lo, hi = distributed.share(len(x))
    rows = hi - lo
    lo = min(lo, len(x) - 1)
    hi = max(hi, lo + 1)  # a rank without rows runs one, for the number of columns
    part = dataset.rows(x, lo, hi)
    was_training = model.training
    model.eval()
    out = []
    try:
        with torch.inference_mode():
            for batch in dataset.in_order(part, batch_size):
                out.append(head(model(batch.to(device, non_blocking=True)).float()).cpu())
    finally:
        model.train(was_training)
    return distributed.gather_rows(torch.cat(out)[:rows], len(x))


def predict_logits(model, x, device, batch_size=1024):
    """Logits (N, C) as float32 on the CPU (`x`: an NCHW float tensor in [0, 1] on any device)."""
    return _batched_outputs(model, x, device, batch_size, lambda z: z)


def predict_probs(model, x, device, batch_size=1024):
    """Softmax probabilities (N, C) as float32 on the CPU (`x`: an NCHW float tensor in [0, 1] on any device)."""
    return _batched_outputs(model, x, device, batch_size, lambda z: torch.softmax(z, dim=1))


def accuracy(probs, y):
    """Percent (0..100) of rows whose argmax equals the label; NaN when there are no rows."""
    probs, y = torch.as_tensor(probs), torch.as_tensor(y)
    if len(y) == 0:
        return float("nan")
    return (probs.argmax(dim=1).cpu() == y.cpu()).double().mean().item() * 100.0
