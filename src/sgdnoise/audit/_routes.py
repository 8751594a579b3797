"""Where the audit's per-sample quantities come from: the per-sample gradient matrix, or the Gram route.

Every quantity the audit needs from the per-sample gradients ``g_i`` (``i = 1..m``) is one of

* inner products between them: the Gram matrix ``K = G Gᵀ``, and the same per module (per-layer noise scales);
* projections ``G x`` on vectors ``x`` of parameter space given block by block (random directions);
* combinations ``Gᵀ c`` (the eigenvectors of ``Σ``: ``v_j = G̃ᵀ u_j / √λ̃_j``).

``GradientRoute`` forms ``G`` (``m × d``, any model). ``GramRoute`` never does: for a model whose trainable
parameters all sit in ``nn.Linear`` layers fed ``(m, in)`` inputs, sample ``i``'s gradient of a layer's weight
is ``δ_i a_iᵀ``, so ``K`` is ``Σ_layers (A Aᵀ + 1) ∘ (Δ Δᵀ)`` (``m² (in + out)`` operations per layer),
a projection on a block ``R`` is ``rowsum((Δ R) ∘ A)``, and ``Gᵀ c`` is the gradient of ``Σ_i c_i ℓ_i`` (one
backward pass). Its memory is ``m²`` numbers per layer plus each layer's ``A`` and ``Δ`` (``m (in + out)``) and,
while random directions are drawn, ``r`` copies of the largest parameter: it does not grow like ``m × d``. The
eigenvectors (``d × k``) are formed only if they fit. Both give the same numbers (tested).

``SketchRoute`` takes any model (layer norm, embeddings, convolutions, attention): it never holds ``G``, only
products with it (:mod:`sgdnoise.sketch`: a backward pass for ``Gᵀ c``, a forward-mode pass for ``G x``). The
per-sample squared norms ``‖g_i‖²`` and ``g_i·ḡ`` (in total and per layer), hence ``tr Σ``, ``‖g‖²`` and the noise
scales, are exact: the per-sample gradients are formed 8 at a time and reduced at once. The top eigenpairs of
the centred Gram matrix come from Lanczos (exact); the rest of the spectrum from a random projection, which is
unbiased entry by entry but whose eigenvalues are not (it keeps at most ``k`` tail directions): the effective
rank and the power-law exponent read it and are reported without an interval. The projections on random
directions and on Σ's eigenvectors are exact. Memory: ``m²`` numbers and a few dozen copies of ``θ``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..gradients import (_capture_linear, _check_model_inputs, _check_samples_independent, _trainable,
                         check_per_sample_model, per_sample_grads)


def _owner(name: str) -> str:
    return name.rsplit(".", 1)[0] if "." in name else "(model)"


def random_blocks(model: nn.Module, r: int, gen: torch.Generator):
    """``(name, parameter, block)`` for each trainable parameter, ``block`` of shape ``(r, *p.shape)``: ``r``
    Gaussian directions of parameter space, drawn parameter by parameter (the same draws on both routes)."""
    for name, p in _trainable(model):
        yield name, p, torch.randn((r, *p.shape), generator=gen, dtype=torch.float64)


class GradientRoute:
    name = "per-sample gradients"

    def __init__(self, model, loss_fn, X, y):
        self.model = model
        self.G = per_sample_grads(model, loss_fn, X, y).double()
        self._slices = {}
        start = 0
        for name, p in _trainable(model):
            self._slices[name] = slice(start, start + p.numel())
            start += p.numel()

    def gram(self) -> Tensor:
        return self.G @ self.G.T

    def layer_grams(self) -> dict[str, Tensor]:
        out: dict[str, Tensor] = {}
        for name, sl in self._slices.items():
            Gl = self.G[:, sl]
            out[_owner(name)] = out.get(_owner(name), 0) + Gl @ Gl.T
        return out

    def project(self, name: str, block: Tensor) -> Tensor:
        """``(m, r)``: each sample's gradient of parameter ``name`` against the ``r`` directions of ``block``."""
        return self.G[:, self._slices[name]] @ block.reshape(block.shape[0], -1).T

    def combine(self, C: Tensor) -> Tensor:
        """``Gᵀ C`` for ``C`` of shape ``(m, k)``: ``(d, k)``."""
        return self.G.T @ C

    def matmat(self, V: Tensor) -> Tensor:
        """``G V`` for ``V`` of shape ``(d, r)``: ``(m, r)``."""
        return self.G @ V


class GramRoute:
    name = "Gram matrix (no per-sample gradients formed)"

    def __init__(self, model, loss_fn, X, y):
        # the checks per_sample_grads makes: per-sample gradients defined, inputs on the parameters' device and dtype
        check_per_sample_model(model)
        _check_model_inputs(model, X)
        _check_samples_independent(model, X)
        cap = _capture_linear(model, loss_fn, X, y)
        if cap is None or any(a.ndim != 2 for a in cap.inputs):
            raise ValueError("the Gram route needs every trainable parameter in an nn.Linear layer fed (n, in) "
                             "inputs, each layer called once and not shared; this model takes the per-sample "
                             "gradient route (route='gradients', within memory_bytes: lower max_samples if needed)")
        names = {id(mod): name for name, mod in model.named_modules()}
        for layer, a, delta in zip(cap.layers, cap.inputs, cap.grads):
            for what, t in (("its output gradient", delta), ("its input", a)):
                bad = ~torch.isfinite(t).reshape(t.shape[0], -1).all(1)
                if bool(bad.any()):
                    raise FloatingPointError(
                        f"non-finite per-sample gradient for parameter '{names[id(layer)]}.weight' ({what} is not "
                        f"finite, first at sample {int(bad.nonzero()[0])}); gradients must be finite: check the "
                        "learning rate, the data and the loss")
        self.model, self.loss_fn, self.X, self.y = model, loss_fn, X, y
        self.cap = cap
        self._of = {}
        for layer, a, delta in zip(cap.layers, cap.inputs, cap.grads):
            self._of[id(layer.weight)] = (layer, "weight", a.double(), delta.double())
            if layer.bias is not None:
                self._of[id(layer.bias)] = (layer, "bias", a.double(), delta.double())
        self._names = {name: p for name, p in _trainable(model)}

    def layer_grams(self) -> dict[str, Tensor]:
        out: dict[str, Tensor] = {}
        for name, p in self._names.items():
            layer, kind, a, delta = self._of[id(p)]
            dd = delta @ delta.T
            block = dd * (a @ a.T) if kind == "weight" else dd
            out[_owner(name)] = out.get(_owner(name), 0) + block
        return out

    def gram(self) -> Tensor:
        return sum(self.layer_grams().values())

    def project(self, name: str, block: Tensor) -> Tensor:
        layer, kind, a, delta = self._of[id(self._names[name])]
        if kind == "weight":  # δ_iᵀ R a_i for each of the r directions R (out × in)
            return torch.stack([((delta @ R) * a).sum(1) for R in block], 1)
        return delta @ block.T  # (m, out) @ (out, r)

    def matmat(self, V: Tensor) -> Tensor:
        """``G V`` for ``V`` of shape ``(d, r)``, parameter by parameter: ``(m, r)``."""
        out, start = 0.0, 0
        for name, p in self._names.items():
            block = V[start:start + p.numel()].T.reshape(V.shape[1], *p.shape)
            out = out + self.project(name, block)
            start += p.numel()
        return out

    def combine(self, C: Tensor) -> Tensor:
        """``Gᵀ C``, one backward pass per column (:meth:`sgdnoise.sketch.JacobianOperator.rmatmat`)."""
        from ..sketch import JacobianOperator

        return JacobianOperator(self.model, self.loss_fn, self.X, self.y).rmatmat(C)


def gram_route_possible(model: nn.Module) -> bool:
    from ..gradients import _fast_path_layers

    return bool(_fast_path_layers(model))


class SketchRoute:
    """Any model, ``G`` never formed: Lanczos for the top of the centred Gram matrix, a random projection for the
    rest (:func:`sgdnoise.sketch.deflated_gram`)."""

    name = "sketch (Lanczos on the centred Gram operator, random projection of the rest)"

    def __init__(self, model, loss_fn, X, y, q: int, k: int, gen: torch.Generator, chunk: int = 8):
        from ..sketch import JacobianOperator, deflated_gram

        self.op = JacobianOperator(model, loss_fn, X, y)
        self.deflated = deflated_gram(self.op, q, k, generator=gen)
        m = X.shape[0]
        gbar = self.deflated.gbar
        owners = [_owner(name) for name in self.op.names]
        self.layers = list(dict.fromkeys(owners))
        s = {name: torch.zeros(m, dtype=torch.float64) for name in self.layers}
        t = {name: torch.zeros(m, dtype=torch.float64) for name in self.layers}
        g2 = {name: 0.0 for name in self.layers}
        for block, owner in zip(gbar.split(self.op.sizes), owners):
            g2[owner] += float(block @ block)
        for idx in torch.arange(m).split(chunk):  # the per-sample gradients, a few at a time: their norms exactly
            rows = per_sample_grads(model, loss_fn, X[idx.to(X.device)], y[idx.to(y.device)]).double().cpu()
            for block, gb, owner in zip(rows.split(self.op.sizes, 1), gbar.split(self.op.sizes), owners):
                s[owner][idx] += (block**2).sum(1)
                t[owner][idx] += block @ gb
        self.norms = {name: (s[name], t[name], g2[name]) for name in self.layers}
        self.total = (sum(s.values()), sum(t.values()), float(gbar @ gbar))

    def layer_grams(self) -> dict[str, Tensor]:
        return {}  # per-layer Gram matrices are not formed; their diagonals and row means are, in ``norms``

    def gram(self) -> Tensor:
        return self.deflated.uncentred()

    def spectrum(self) -> tuple[Tensor, Tensor]:
        """``(eigenvalues of K̂_c, Q)``: the exact top ``q`` (Lanczos) first, then the sketched rest's ``m - 1 - q``,
        each part in decreasing order (a sketched eigenvalue can exceed ``λ_q``: it is not promoted), and the
        exact top eigenvectors (sample space, ``(m, q)``)."""
        D = self.deflated
        lam, Q = D.eigenvalues, D.vectors
        rest = torch.linalg.eigvalsh(D.K_c - Q @ torch.diag(lam) @ Q.T).flip(0)[: max(D.K_c.shape[0] - 1 - lam.numel(), 0)]
        return torch.cat([lam, rest]), Q

    def matmat(self, V: Tensor) -> Tensor:
        return self.op.matmat(V)

    def combine(self, C: Tensor) -> Tensor:
        return self.op.rmatmat(C)

    def random_projections(self, r: int, gen: torch.Generator) -> Tensor:
        """``(m, r)``: the samples' gradients on ``r`` random unit directions, one direction (``d`` numbers) at a time."""
        cols = []
        for _ in range(r):
            blocks = [torch.randn((1, *s), generator=gen, dtype=torch.float64) for s in self.op.shapes]
            norm = torch.sqrt(sum(b.pow(2).sum() for b in blocks))
            cols.append(self.op.matmat_blocks(blocks)[:, 0] / norm)
        return torch.stack(cols, 1)
