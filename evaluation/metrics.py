"""Model outputs and accuracy.

`predict_probs` turns a model and an image tensor into softmax probabilities on the CPU;
`accuracy` scores those probabilities against labels, in percent.
"""

import torch


def predict_probs(model, x, device, batch_size=1024):
    """Softmax probabilities (N, C) as float32 on the CPU.

    `x` is an NCHW float tensor in [0, 1] on any device. The model is run in eval mode under
    `torch.inference_mode()` and its previous training mode is restored afterwards.
    An empty `x` gives `torch.empty(0, 0)` (the class count is unknown without a forward pass).
    """
    if len(x) == 0:
        return torch.empty(0, 0)
    was_training = model.training
    model.eval()
    out = []
    try:
        with torch.inference_mode():
            for start in range(0, len(x), batch_size):
                batch = x[start:start + batch_size].to(device, non_blocking=True)
                out.append(torch.softmax(model(batch).float(), dim=1).cpu())
    finally:
        model.train(was_training)
    return torch.cat(out)


def accuracy(probs, y):
    """Percent (0..100) of rows whose argmax equals the label; NaN when there are no rows."""
    probs, y = torch.as_tensor(probs), torch.as_tensor(y)
    if len(y) == 0:
        return float("nan")
    return (probs.argmax(dim=1).cpu() == y.cpu()).double().mean().item() * 100.0
