"""float64 losses and gradients against an exact computation (mpmath, 60 digits) of the same float64 inputs.

The softplus / log-sum-exp terms must keep every float64 digit: torch's softplus with its default threshold 20
returns t for t > 20 and drops e^-t (1e-10 relative of the term), which is what large logit scales and negative
SigLIP biases reach. Cases span logit scales up to 100 and biases down to -10.

`python -m tests.test_contrastive_loss_float64` prints the measured relative errors.
"""

from __future__ import annotations

import mpmath
import pytest
import torch

from fastclip.ops import clip_loss, siglip_loss
from tests.test_contrastive_loss import features

mpmath.mp.dps = 60
CASES = [(100.0, -10.0), (100.0, 0.0), (30.0, -10.0), (14.29, -10.0), (1.0, 5.0)]  # (logit_scale, logit_bias)
BATCH, DIM = 24, 6


def _exact(loss_name, x, y, scale, bias):
    """Loss and (dx, dy, ds, db) in mpmath, from the exact values of the float64 inputs."""
    xs = [[mpmath.mpf(float(v)) for v in row] for row in x.tolist()]
    ys = [[mpmath.mpf(float(v)) for v in row] for row in y.tolist()]
    s, b = mpmath.mpf(scale), mpmath.mpf(bias)
    n, dim = len(xs), len(xs[0])
    c = [[mpmath.fsum(p * q for p, q in zip(xi, yj)) for yj in ys] for xi in xs]
    dx = [[mpmath.mpf(0)] * dim for _ in range(n)]
    dy = [[mpmath.mpf(0)] * dim for _ in range(n)]
    g = [[mpmath.mpf(0)] * n for _ in range(n)]  # ∂L/∂logit, logit = s·C (+ b)
    if loss_name == "clip":
        logits = [[s * cij for cij in row] for row in c]
        loss = mpmath.mpf(0)
        for i in range(n):
            row_lse = mpmath.log(mpmath.fsum(mpmath.exp(v) for v in logits[i]))
            col_lse = mpmath.log(mpmath.fsum(mpmath.exp(logits[j][i]) for j in range(n)))
            loss += row_lse + col_lse - 2 * logits[i][i]
            for j in range(n):
                g[i][j] += mpmath.exp(logits[i][j] - row_lse) / (2 * n)
                g[j][i] += mpmath.exp(logits[j][i] - col_lse) / (2 * n)
            g[i][i] -= mpmath.mpf(1) / n
        loss /= 2 * n
    else:
        loss = mpmath.mpf(0)
        for i in range(n):
            for j in range(n):
                z = s * c[i][j] + b
                sign = 1 if i == j else -1
                loss += mpmath.log1p(mpmath.exp(-sign * z))  # -logsigmoid(sign·z)
                g[i][j] = -sign / (1 + mpmath.exp(sign * z)) / n
        loss /= n
    for i in range(n):
        for j in range(n):
            for k in range(dim):
                dx[i][k] += s * g[i][j] * ys[j][k]
                dy[j][k] += s * g[i][j] * xs[i][k]
    ds = mpmath.fsum(g[i][j] * c[i][j] for i in range(n) for j in range(n))
    db = mpmath.mpf(0) if loss_name == "clip" else mpmath.fsum(g[i][j] for i in range(n) for j in range(n))
    as_tensor = lambda v: torch.tensor([[float(e) for e in row] for row in v], dtype=torch.float64)  # noqa: E731
    return [torch.tensor(float(loss), dtype=torch.float64), as_tensor(dx), as_tensor(dy),
            torch.tensor(float(ds), dtype=torch.float64), torch.tensor(float(db), dtype=torch.float64)]


def _fastclip(loss_name, backend, x, y, scale, bias):
    x, y = x.clone().requires_grad_(), y.clone().requires_grad_()
    s = torch.tensor(scale, dtype=torch.float64, requires_grad=True)
    b = torch.tensor(bias, dtype=torch.float64, requires_grad=True)
    loss = {"clip": clip_loss, "siglip": siglip_loss}[loss_name](x, y, s, b, backend=backend)
    loss.backward()
    return [loss.detach(), x.grad, y.grad, s.grad, b.grad]


def relative_errors(loss_name, scale, bias, seed=0, backend="chunked"):
    """Relative errors (absolute for a zero reference) of loss, dx, dy, ds, db against the exact values."""
    x, y = features(BATCH, DIM, seed=seed, dtype=torch.float64)
    got, want = _fastclip(loss_name, backend, x, y, scale, bias), _exact(loss_name, x, y, scale, bias)
    errors = []
    for g, w in zip(got, want):
        norm = float(w.norm())
        errors.append(float((g - w).norm()) / (norm if norm > 0 else 1.0))
    return errors


@pytest.mark.parametrize("loss_name", ["clip", "siglip"])
@pytest.mark.parametrize("scale, bias", CASES)
def test_float64_is_exact(loss_name, scale, bias):
    loss_error, *grad_errors = relative_errors(loss_name, scale, bias)
    assert loss_error <= 4e-16 * BATCH, loss_error  # a sum of B terms, each to an ulp or two
    for name, error in zip(("dx", "dy", "ds", "db"), grad_errors):
        assert error <= 1e-13, (name, error)


def test_cases_reach_the_softplus_threshold():
    """The cases must reach arguments above torch's default softplus threshold, or the test proves nothing."""
    x, y = features(BATCH, DIM, seed=0, dtype=torch.float64)
    siglip_logits = 100.0 * x @ y.T - 10.0
    assert float(siglip_logits.max()) > 20
    clip_logits = 100.0 * x @ y.T
    row_margin = torch.logsumexp(clip_logits.fill_diagonal_(float("-inf")), 1) - 100.0 * (x * y).sum(1)
    assert float(row_margin.max()) > 20


if __name__ == "__main__":
    print("| loss | logit_scale | logit_bias | loss | dx | dy | ds | db |")
    print("|---|---|---|---|---|---|---|---|")
    for loss_name in ("clip", "siglip"):
        for scale, bias in CASES:
            errors = relative_errors(loss_name, scale, bias)
            print(f"| {loss_name} | {scale} | {bias} | " + " | ".join(f"{e:.1e}" for e in errors) + " |")
