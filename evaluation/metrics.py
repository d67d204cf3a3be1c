"""Model outputs and accuracy.

`predict_logits` / `predict_probs` turn a model and an image tensor into logits / softmax probabilities on
the CPU;
`accuracy` scores those probabilities against labels, in percent.
"""

import torch


def _batched_outputs(model, x, device, batch_size, head):
    """head(model(batch)) for every batch of `x`, on the CPU, concatenated; eval mode under
    `torch.inference_mode()`, the previous training mode restored. An empty `x` gives `torch.empty(0, 0)`."""
    if len(x) == 0:
        return torch.empty(0, 0)
    was_training = model.training
    model.eval()
    out = []
    try:
        with torch.inference_mode():
            for start in range(0, len(x), batch_size):
                batch = x[start:start + batch_size].to(device, non_blocking=True)
                out.append(head(model(batch).float()).cpu())
    finally:
        model.train(was_training)
    return torch.cat(out)


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
