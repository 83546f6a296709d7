"""VICReg: invariance, variance and covariance terms of two views of a batch."""

from __future__ import annotations

from torch import Tensor

from pml.core.dtypes import accumulation_dtype

__all__ = ["vicreg_loss"]


def _variance_covariance(
    z: Tensor, variance_mu: float, covariance_v: float, eps: float
) -> tuple[Tensor, Tensor]:
    """Per-dimension variance hinge ``(D,)`` and the off-diagonal covariance term (0-dim)."""
    n, dim = z.shape
    centred = z - z.mean(0)
    cov = centred.T @ centred / (n - 1)
    var = cov.diagonal()  # unbiased variance per dimension
    variance = variance_mu * (1 - (var + eps).sqrt()).relu() / 2
    off = cov - var.diag_embed()
    covariance = covariance_v * off.square().sum() / dim
    return variance, covariance


def vicreg_loss(
    embeddings: Tensor,
    ref_emb: Tensor,
    invariance_lambda: float = 25,
    variance_mu: float = 25,
    covariance_v: float = 1,
    eps: float = 1e-4,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The four unreduced VICReg terms (Bardes et al., ICLR 2022).

    ``invariance_i = λ·mean_d (e_id - r_id)²``; per dimension ``variance_d = μ·relu(1 -
    sqrt(Var(z_d) + eps)) / 2`` (unbiased variance over the batch) for each view;
    ``covariance = nu·(Σ_{d≠d'} Ce[d, d']² + Σ_{d≠d'} Cr[d, d']²) / D`` with
    ``C = (Z - mean)ᵀ(Z - mean) / (N - 1)``. Statistics are computed in at least float32.
    When ``ref_emb`` is ``embeddings`` (the same object) its statistics are computed once.

    Args:
        embeddings: first view, shape ``(N, D)``, ``N >= 2``.
        ref_emb: second view, shape ``(N, D)``.
        invariance_lambda: ``λ``.
        variance_mu: ``μ``.
        covariance_v: ``nu``.
        eps: added to the variance under the square root.

    Returns:
        ``(invariance (N,), variance of embeddings (D,), variance of ref_emb (D,),
        covariance (0-dim))`` in the compute dtype.

    Example:
        >>> e = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
        >>> inv, v1, v2, cov = vicreg_loss(e, e.flip(1))
        >>> inv, v1, cov
        (tensor([25., 25.,  0.]), tensor([5.2820, 5.2820]), tensor(0.0556))
    """
    acc = accumulation_dtype(embeddings.dtype)
    e = embeddings.to(acc)
    r = e if ref_emb is embeddings else ref_emb.to(acc)
    invariance = invariance_lambda * (e - r).square().mean(1)
    var_e, cov_e = _variance_covariance(e, variance_mu, covariance_v, eps)
    if r is e:
        var_r, cov_r = var_e, cov_e
    else:
        var_r, cov_r = _variance_covariance(r, variance_mu, covariance_v, eps)
    return invariance, var_e, var_r, cov_e + cov_r
