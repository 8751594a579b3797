"""No silent wrong results from the per-sample routes (issue 23, items 1-4 and 12).

Every case is checked against the slow twin written here (one backward pass per sample, float64),
never against the package's own routes. Where the old fast route was silently wrong, a test also runs
the *failing variant*: the route with its new guards switched off, which must disagree with the twin.
"""

import random

import pytest
import torch
from torch import nn

import sgdnoise.gradients as gr
from sgdnoise import gram_matrix, per_sample_grads
from sgdnoise.gradients import centred_gram_lower
from sgdnoise.noise import sigma_spectrum

TOL = 1e-9


def twin(model, loss_fn, X, y):
    """One backward pass per sample; a parameter a sample does not reach gets a zero row block."""
    params = [p for p in model.parameters() if p.requires_grad]
    rows = []
    for i in range(X.shape[0]):
        loss = loss_fn(model(X[i : i + 1]), y[i : i + 1]).sum()
        gs = torch.autograd.grad(loss, params, allow_unused=True)
        rows.append(torch.cat([(torch.zeros_like(p) if g is None else g).reshape(-1) for p, g in zip(params, gs)]))
    return torch.stack(rows)


def mse(out, target):
    return ((out - target) ** 2).sum(dim=-1)


def ce(out, target):
    return nn.functional.cross_entropy(out, target, reduction="none")


def data(n=9, d_in=4, d_out=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn((n, d_in), generator=g, dtype=torch.float64),
            torch.randn((n, d_out), generator=g, dtype=torch.float64))


def assert_all_routes_match(model, loss_fn, X, y):
    """G, G Gᵀ (plain and centred), the lower centred triangle and Σ's spectrum, against the twin."""
    T = twin(model, loss_fn, X, y)
    torch.testing.assert_close(per_sample_grads(model, loss_fn, X, y), T, atol=TOL, rtol=TOL)
    torch.testing.assert_close(gram_matrix(model, loss_fn, X, y), T @ T.T, atol=TOL, rtol=TOL)
    Tc = T - T.mean(0)
    torch.testing.assert_close(gram_matrix(model, loss_fn, X, y, centered=True), Tc @ Tc.T, atol=TOL, rtol=TOL)
    low = centred_gram_lower(model, loss_fn, X, y)
    if low is not None:
        torch.testing.assert_close(low.tril(), (Tc @ Tc.T).tril(), atol=TOL, rtol=TOL)
    expect = torch.linalg.eigvalsh(Tc @ Tc.T / X.shape[0]).flip(0)
    torch.testing.assert_close(sigma_spectrum(model, loss_fn, X, y), expect, atol=TOL, rtol=TOL)
    return T


def old_fast_route(monkeypatch):
    """The fast route as it was before issue 23: every parameter-owning nn.Linear, no sum check."""

    def naive_layers(model):
        owner = {}
        for module in model.modules():
            for p in module.parameters(recurse=False):
                owner[id(p)] = module
        layers = []
        for _, p in gr._trainable(model):
            if not isinstance(owner[id(p)], nn.Linear):
                return None
            if owner[id(p)] not in layers:
                layers.append(owner[id(p)])
        return layers

    monkeypatch.setattr(gr, "_fast_path_layers", naive_layers)
    monkeypatch.setattr(gr, "_sums_match", lambda *a: True)


# ----------------------------------------------------------------------------- 1. in-place activations
@pytest.mark.parametrize("act", [nn.ReLU(inplace=True), nn.LeakyReLU(0.1, inplace=True)], ids=["relu", "leaky"])
def test_inplace_activation_is_exact_and_keeps_the_fast_route(act):
    X, y = data()
    model = nn.Sequential(nn.Linear(4, 5), act, nn.Linear(5, 3)).double()
    T = assert_all_routes_match(model, mse, X, y)
    # The fast route is still taken (its output clone makes it right) ...
    torch.testing.assert_close(per_sample_grads(model, mse, X, y, method="linear"), T, atol=TOL, rtol=TOL)
    # ... and the hooked output, once overwritten in place, gives a wrong G: the failing variant.
    assert (hooked_output_grads(model, mse, X, y) - T).abs().max() > 1e-3



def hooked_output_grads(model, loss_fn, X, y):
    """The old fast route, by hand: δ from the hooked output tensors, G's rows δ_i a_iᵀ (and δ_i)."""
    caught = []
    handles = [m.register_forward_hook(lambda m, args, out: caught.append((m, args[0].detach(), out)))
               for m in model.modules() if isinstance(m, nn.Linear)]
    losses = loss_fn(model(X), y)
    for h in handles:
        h.remove()
    deltas = torch.autograd.grad(losses.sum(), [out for _, _, out in caught])
    blocks = []
    for (m, a, _), d in zip(caught, deltas):
        blocks += [(d[:, :, None] * a[:, None, :]).flatten(1), d]
    return torch.cat(blocks, dim=1)


# ----------------------------------------------------------------------------- 2. tied parameters
class TiedLinears(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b, self.head = nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 3)
        self.b.weight = self.a.weight

    def forward(self, x):
        return self.head(torch.tanh(self.b(torch.tanh(self.a(x)))))


class TiedEmbedding(nn.Module):
    """A language model's weight tying: the output head is the embedding's transpose."""

    def __init__(self, vocab=10, width=6):
        super().__init__()
        self.emb, self.mid = nn.Embedding(vocab, width), nn.Linear(width, width)
        self.head = nn.Linear(width, vocab, bias=False)
        self.head.weight = self.emb.weight

    def forward(self, tokens):
        return self.head(torch.tanh(self.mid(self.emb(tokens))))


def test_tied_linear_weights_add_their_contributions(monkeypatch):
    X, y = data()
    model = TiedLinears().double()
    T = assert_all_routes_match(model, mse, X, y)
    old_fast_route(monkeypatch)
    assert (per_sample_grads(model, mse, X, y) - T).abs().max() > 1e-3


def test_embedding_tied_to_the_output_head(monkeypatch):
    g = torch.Generator().manual_seed(1)
    tokens, targets = torch.randint(10, (9,), generator=g), torch.randint(10, (9,), generator=g)
    model = TiedEmbedding().double()
    T = assert_all_routes_match(model, ce, tokens, targets)
    old_fast_route(monkeypatch)
    # the old route took the head's Linear as the tensor's only owner and dropped the embedding's part
    monkeypatch.setattr(model.emb.weight, "requires_grad", True)
    with pytest.raises(AssertionError):
        torch.testing.assert_close(per_sample_grads(model, ce, tokens, targets), T, atol=TOL, rtol=TOL)


# ----------------------------------------------------------------------------- 3. subclasses, outside uses
class ScaledInput(nn.Linear):
    def forward(self, x):
        return super().forward(2.0 * x)


class ScaledWeight(nn.Linear):
    """muP-style readout: the weight enters scaled."""

    def forward(self, x):
        return nn.functional.linear(x, self.weight / 3.0, self.bias)


class OutsideUse(nn.Module):
    """A Linear's weight also used directly by the parent module."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 3)

    def forward(self, x):
        return self.lin(x) + 0.5 * nn.functional.linear(torch.tanh(x), self.lin.weight)


class KeywordCall(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 3)

    def forward(self, x):
        return self.lin(input=x)


@pytest.mark.parametrize("make", [
    lambda: nn.Sequential(ScaledInput(4, 5), nn.Tanh(), nn.Linear(5, 3)),
    lambda: nn.Sequential(nn.Linear(4, 5), nn.Tanh(), ScaledWeight(5, 3)),
    OutsideUse,
], ids=["scaled-input", "scaled-weight", "outside-use"])
def test_layers_that_are_not_plain_linear_take_the_general_route(make, monkeypatch):
    X, y = data()
    model = make().double()
    T = assert_all_routes_match(model, mse, X, y)
    with pytest.raises(ValueError, match="method='linear' needs every trainable parameter"):
        per_sample_grads(model, mse, X, y, method="linear")
    old_fast_route(monkeypatch)
    assert (per_sample_grads(model, mse, X, y) - T).abs().max() > 1e-3


def test_sum_check_alone_catches_a_use_outside_the_layer(monkeypatch):
    """The structural checks cannot see an outside use; the sum check does."""
    X, y = data()
    model = OutsideUse().double()
    monkeypatch.setattr(gr, "_sums_match", lambda *a: True)
    assert (per_sample_grads(model, mse, X, y) - twin(model, mse, X, y)).abs().max() > 1e-3


def test_keyword_input_keeps_the_fast_route():
    X, y = data()
    model = KeywordCall().double()
    torch.testing.assert_close(per_sample_grads(model, mse, X, y, method="linear"), twin(model, mse, X, y),
                               atol=TOL, rtol=TOL)


# ----------------------------------------------------------------------------- 4. training-mode layers
@pytest.mark.parametrize("make", [
    lambda: nn.BatchNorm1d(5, affine=False), lambda: nn.BatchNorm1d(5), lambda: nn.Dropout(0.3),
    lambda: nn.AlphaDropout(0.2), nn.RReLU,
], ids=["bn", "bn-affine", "dropout", "alpha-dropout", "rrelu"])
@pytest.mark.parametrize("method", ["auto", "functorch", "loop"])
def test_train_mode_coupling_or_random_layers_are_refused(make, method):
    X, y = data()
    layer = make()
    model = nn.Sequential(nn.Linear(4, 5), layer, nn.Linear(5, 3)).double()
    before = {k: b.clone() for k, b in model.named_buffers()}
    for f in (lambda: per_sample_grads(model, mse, X, y, method=method), lambda: gram_matrix(model, mse, X, y),
              lambda: centred_gram_lower(model, mse, X, y), lambda: sigma_spectrum(model, mse, X, y)):
        with pytest.raises(ValueError, match=r"'1' \(" + type(layer).__name__ + r"\).*Call model\.eval\(\)"):
            f()
    for k, b in model.named_buffers():  # running statistics untouched
        assert torch.equal(b, before[k])
    model.eval()  # then it is a per-sample model, and exact
    assert_all_routes_match(model, mse, X, y)


class FunctionalDropout(nn.Module):
    """Random in its forward although no layer says so: found by the random state moving."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(4, 5), nn.Linear(5, 3)

    def forward(self, x):
        return self.b(nn.functional.dropout(self.a(x), 0.5, training=True))


@pytest.mark.parametrize("method", ["auto", "functorch"])
def test_random_forward_is_refused(method):
    X, y = data()
    with pytest.raises(ValueError, match=r"random numbers"):
        per_sample_grads(FunctionalDropout().double(), mse, X, y, method=method)


def test_zero_dropout_in_train_mode_is_allowed():
    X, y = data()
    assert_all_routes_match(nn.Sequential(nn.Linear(4, 5), nn.Dropout(0.0), nn.Tanh(), nn.Linear(5, 3)).double(),
                            mse, X, y)


# ----------------------------------------------------------------------------- 12. recurrent layers
class Recurrent(nn.Module):
    def __init__(self, cls):
        super().__init__()
        self.rnn, self.head = cls(3, 5, batch_first=True), nn.Linear(5, 2)

    def forward(self, x):
        return self.head(self.rnn(x)[0][:, -1])


@pytest.mark.parametrize("cls", [nn.RNN, nn.LSTM, nn.GRU])
def test_recurrent_layers_are_exact(cls):
    g = torch.Generator().manual_seed(2)
    X, y = torch.randn((6, 4, 3), generator=g, dtype=torch.float64), torch.randn((6, 2), generator=g, dtype=torch.float64)
    model = Recurrent(cls).double()
    T = twin(model, mse, X, y)
    for method in ("auto", "loop"):
        torch.testing.assert_close(per_sample_grads(model, mse, X, y, method=method), T, atol=TOL, rtol=TOL)
    torch.testing.assert_close(gram_matrix(model, mse, X, y), T @ T.T, atol=TOL, rtol=TOL)


# ----------------------------------------------------------------------------- property sweep
class Scale(nn.Linear):
    def forward(self, x):
        return super().forward(1.5 * x)


def random_model(rng: random.Random):
    """A random composition: Linear or a rescaling subclass, in-place or not, tied or not, BN/dropout or not."""
    widths = [4] + [rng.choice([3, 5, 6]) for _ in range(rng.randint(1, 3))] + [3]
    layers, linears = [], []
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
        lin = (Scale if rng.random() < 0.25 else nn.Linear)(a, b, bias=rng.random() < 0.8)
        layers.append(lin)
        linears.append(lin)
        if i < len(widths) - 2:
            if rng.random() < 0.3:
                layers.append(rng.choice([nn.BatchNorm1d(b), nn.Dropout(0.2)]))
            layers.append(rng.choice([nn.ReLU(inplace=True), nn.Tanh(), nn.LeakyReLU(0.2, inplace=True), nn.GELU()]))
    same = [(p, q) for p in linears for q in linears if p is not q and p.weight.shape == q.weight.shape]
    if same and rng.random() < 0.5:
        p, q = rng.choice(same)
        q.weight = p.weight
    model = nn.Sequential(*layers).double()
    if rng.random() < 0.5:
        model.eval()
    return model


def functorch_twin(model, loss_fn, X, y):
    from torch.func import functional_call, grad, vmap

    params = {k: v.detach() for k, v in model.named_parameters()}
    buffers = dict(model.named_buffers())

    def one(p, x, t):
        return loss_fn(functional_call(model, {**p, **buffers}, (x[None],)), t[None]).sum()

    g = vmap(grad(one), in_dims=(None, 0, 0))(params, X, y)
    return torch.cat([g[k].reshape(X.shape[0], -1) for k in params], dim=1)


@pytest.mark.parametrize("seed", range(40))
def test_fast_route_on_random_compositions(seed):
    rng = random.Random(seed)
    model = random_model(rng)
    X, y = data(seed=seed)
    coupled = any(m.training and isinstance(m, (nn.BatchNorm1d, nn.Dropout)) for m in model.modules())
    if coupled:
        with pytest.raises(ValueError, match="Call model.eval"):
            per_sample_grads(model, mse, X, y)
        return
    T = functorch_twin(model, mse, X, y)
    torch.testing.assert_close(per_sample_grads(model, mse, X, y), T, atol=TOL, rtol=TOL)
    torch.testing.assert_close(gram_matrix(model, mse, X, y, centered=True), (T - T.mean(0)) @ (T - T.mean(0)).T,
                               atol=TOL, rtol=TOL)


# ----------------------------------------------------------------------------- found by a review of the fix
def test_outside_use_is_caught_at_a_minimum_of_the_loss():
    """At a stationary point Σ_i g_i = 0, so an unweighted sum check passes whatever the capture misses;
    the weighted one does not. W is set to the least-squares minimiser of the model x ↦ x (2W)ᵀ."""
    X, y = data()

    class Doubled(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 3, bias=False).double()

        def forward(self, x):
            return self.fc(x) + nn.functional.linear(x, self.fc.weight)

    m = Doubled()
    with torch.no_grad():
        m.fc.weight.copy_(torch.linalg.lstsq(X, y).solution.T / 2)
    T = twin(m, mse, X, y)
    assert T.sum(0).abs().max() < 1e-10  # a stationary point indeed
    torch.testing.assert_close(per_sample_grads(m, mse, X, y), T, atol=TOL, rtol=TOL)
    with pytest.raises(ValueError, match="method='linear' needs"):
        per_sample_grads(m, mse, X, y, method="linear")


class BatchMean(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(4, 5), nn.Linear(5, 3)

    def forward(self, x):
        h = self.a(x)
        return self.b(h - h.mean(0))


@pytest.mark.parametrize("make", [
    lambda: nn.Sequential(nn.Linear(4, 5), nn.BatchNorm1d(5, track_running_stats=False), nn.Linear(5, 3)).eval(),
    BatchMean,
], ids=["bn-no-running-stats-eval", "functional-coupling"])
@pytest.mark.parametrize("method", ["auto", "functorch", "loop"])
def test_samples_coupled_inside_the_forward_are_refused(make, method):
    X, y = data()
    with pytest.raises(ValueError, match=r"batch norm without running statistics|depends on the other samples"):
        per_sample_grads(make().double(), mse, X, y, method=method)


def test_recurrent_dropout_in_training_mode_is_refused():
    g = torch.Generator().manual_seed(2)
    X, y = torch.randn((6, 4, 3), generator=g, dtype=torch.float64), torch.randn((6, 2), generator=g, dtype=torch.float64)

    class Deep(nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn, self.head = nn.LSTM(3, 5, num_layers=2, dropout=0.5, batch_first=True), nn.Linear(5, 2)

        def forward(self, x):
            return self.head(self.rnn(x)[0][:, -1])

    model = Deep().double()
    with pytest.raises(ValueError, match=r"'rnn' \(LSTM\).*Call model\.eval\(\)"):
        per_sample_grads(model, mse, X, y)
    model.eval()
    torch.testing.assert_close(per_sample_grads(model, mse, X, y), twin(model, mse, X, y), atol=TOL, rtol=TOL)
