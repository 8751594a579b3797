"""per_sample_grads, full_gradient and gram_matrix against a loop of batch-size-1 backward passes (float64)."""

import pytest
import torch
from torch import nn

from sgdnoise import full_gradient, gram_matrix, per_sample_grads
from sgdnoise.gradients import center_gram, centred_gram_lower, flat_params, num_params, set_flat_params
from sgdnoise.problems import cross_entropy, half_squared_error, mlp

TOL = 1e-10


def loop_grads(model, loss_fn, X, y):
    """The slow, obviously correct twin: one backward pass per sample."""
    params = [p for p in model.parameters() if p.requires_grad]
    rows = []
    for i in range(X.shape[0]):
        loss = loss_fn(model(X[i : i + 1]), y[i : i + 1]).sum()
        rows.append(torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, params)]))
    return torch.stack(rows)


class Seq(nn.Module):
    """Linear layers on (n, T, features) inputs: the fast path sums over T."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(3, 4)
        self.b = nn.Linear(4, 2)

    def forward(self, x):
        return self.b(torch.tanh(self.a(x))).mean(dim=1)


class Shared(nn.Module):
    """One Linear used twice: weight sharing takes the general path."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 3)

    def forward(self, x):
        return self.lin(torch.tanh(self.lin(x)))


class ConvNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(1, 2, 3)
        self.norm = nn.LayerNorm(2 * 6)
        self.head = nn.Linear(12, 3)

    def forward(self, x):
        return self.head(self.norm(torch.relu(self.conv(x[:, None, :])).flatten(1)))


def make_cases():
    g = torch.Generator().manual_seed(0)
    n = 7
    cases = {}
    X = torch.randn(n, 5, generator=g, dtype=torch.float64)
    cases["mlp-tanh-ce"] = (mlp([5, 6, 4, 3], generator=g, dtype=torch.float64), cross_entropy, X, torch.randint(3, (n,), generator=g))
    frozen = mlp([5, 6, 3], generator=g, dtype=torch.float64)
    frozen[0].weight.requires_grad_(False)
    cases["mlp-frozen-weight"] = (frozen, cross_entropy, X, torch.randint(3, (n,), generator=g))
    nobias = nn.Sequential(nn.Linear(5, 4, bias=False), nn.ReLU(), nn.Linear(4, 2)).double()
    cases["mlp-nobias-mse"] = (nobias, half_squared_error, X, torch.randn(n, 2, generator=g, dtype=torch.float64))
    cases["sequence"] = (Seq().double(), half_squared_error, torch.randn(n, 4, 3, generator=g, dtype=torch.float64), torch.randn(n, 2, generator=g, dtype=torch.float64))
    cases["shared-weights"] = (Shared().double(), half_squared_error, torch.randn(n, 3, generator=g, dtype=torch.float64), torch.randn(n, 3, generator=g, dtype=torch.float64))
    cases["conv-layernorm"] = (ConvNet().double(), cross_entropy, torch.randn(n, 8, generator=g, dtype=torch.float64), torch.randint(3, (n,), generator=g))
    return cases


CASES = make_cases()


@pytest.mark.parametrize("name", list(CASES))
def test_per_sample_grads_match_loop(name):
    model, loss_fn, X, y = CASES[name]
    G = per_sample_grads(model, loss_fn, X, y)
    ref = loop_grads(model, loss_fn, X, y)
    assert G.shape == (X.shape[0], num_params(model))
    assert G.dtype == torch.float64
    torch.testing.assert_close(G, ref, atol=TOL, rtol=0)


@pytest.mark.parametrize("name", list(CASES))
def test_functorch_route_matches_loop(name):
    model, loss_fn, X, y = CASES[name]
    G = per_sample_grads(model, loss_fn, X, y, method="functorch", chunk_size=3)
    torch.testing.assert_close(G, loop_grads(model, loss_fn, X, y), atol=TOL, rtol=0)


@pytest.mark.parametrize("name", list(CASES))
def test_gram_and_full_gradient(name):
    model, loss_fn, X, y = CASES[name]
    ref = loop_grads(model, loss_fn, X, y)
    torch.testing.assert_close(gram_matrix(model, loss_fn, X, y), ref @ ref.T, atol=TOL, rtol=0)
    Gc = ref - ref.mean(dim=0)
    torch.testing.assert_close(gram_matrix(model, loss_fn, X, y, centered=True), Gc @ Gc.T, atol=TOL, rtol=0)
    torch.testing.assert_close(full_gradient(model, loss_fn, X, y), ref.mean(dim=0), atol=TOL, rtol=0)


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("block_rows", [1, 3, 100])
def test_centred_gram_lower_matches_loop(name, block_rows):
    """The lower triangle equals that of G̃ G̃ᵀ from the loop, for any block size; None off the fast path."""
    model, loss_fn, X, y = CASES[name]
    Kl = centred_gram_lower(model, loss_fn, X, y, block_rows=block_rows)
    if name in ("sequence", "shared-weights", "conv-layernorm"):
        assert Kl is None
        return
    ref = loop_grads(model, loss_fn, X, y)
    Gc = ref - ref.mean(dim=0)
    torch.testing.assert_close(torch.tril(Kl), torch.tril(Gc @ Gc.T), atol=TOL, rtol=0)
    # Above the diagonal blocks nothing is computed; inside a diagonal block the square is full.
    n = X.shape[0]
    i, j = torch.triu_indices(n, n, offset=1)
    outside = (i // block_rows) != (j // block_rows)
    assert (Kl[i[outside], j[outside]] == 0).all()


def test_centred_gram_lower_bad_block_size():
    with pytest.raises(ValueError, match="block_rows=0 must be a positive integer"):
        centred_gram_lower(*CASES["mlp-tanh-ce"], block_rows=0)


def test_fast_path_is_taken_for_linear_models():
    model, loss_fn, X, y = CASES["mlp-tanh-ce"]
    per_sample_grads(model, loss_fn, X, y, method="linear")
    with pytest.raises(ValueError, match="nn.Linear"):
        per_sample_grads(*CASES["conv-layernorm"], method="linear")


def test_center_gram_is_gram_of_centred_rows():
    g = torch.Generator().manual_seed(1)
    G = torch.randn(6, 4, generator=g, dtype=torch.float64)
    Gc = G - G.mean(0)
    torch.testing.assert_close(center_gram(G @ G.T), Gc @ Gc.T)


def test_flat_params_roundtrip():
    model = CASES["mlp-frozen-weight"][0]
    theta = flat_params(model)
    assert theta.numel() == num_params(model)
    set_flat_params(model, theta * 2)
    torch.testing.assert_close(flat_params(model), theta * 2)
    set_flat_params(model, theta)
    with pytest.raises(ValueError, match=r"shape \(%d,\)" % theta.numel()):
        set_flat_params(model, theta[:-1])


# ----------------------------------------------------------------------------- bad input
def test_mismatched_n_is_named():
    model, loss_fn, X, y = CASES["mlp-tanh-ce"]
    with pytest.raises(ValueError, match=r"X has n=7 samples but y has n=6"):
        per_sample_grads(model, loss_fn, X, y[:6])


def test_reduced_loss_is_rejected():
    model, _, X, y = CASES["mlp-tanh-ce"]
    with pytest.raises(ValueError, match=r"one loss per sample, shape \(7,\); it returned shape \(\)"):
        per_sample_grads(model, nn.CrossEntropyLoss(), X, y)
    with pytest.raises(ValueError, match="one loss per sample"):
        per_sample_grads(CASES["conv-layernorm"][0], nn.CrossEntropyLoss(), CASES["conv-layernorm"][2], CASES["conv-layernorm"][3])


def test_non_finite_gradient_names_the_parameter():
    model, loss_fn, X, y = CASES["mlp-nobias-mse"]
    X = X.clone()
    X[3, 0] = float("inf")
    with pytest.raises(FloatingPointError, match=r"parameter '0.weight' \(first at sample 3\)"):
        per_sample_grads(model, loss_fn, X, y)
    with pytest.raises(FloatingPointError, match="non-finite"):
        gram_matrix(model, loss_fn, X, y)
    with pytest.raises(FloatingPointError, match=r"parameter '0.weight' \(first at sample 3\)"):
        centred_gram_lower(model, loss_fn, X, y)


def test_gram_overflow_with_finite_gradients_is_an_error():
    """Finite per-sample gradients whose products overflow: an error, never a matrix holding inf."""
    _, _, X, y = CASES["mlp-nobias-mse"]
    model = nn.Linear(5, 2, bias=False).double()
    X = X * 1e100  # δ and a are about 1e100, g = δ aᵀ about 1e200, ‖g‖² overflows float64
    assert torch.isfinite(per_sample_grads(model, half_squared_error, X, y)).all()
    with pytest.raises(FloatingPointError, match=r"G̃ G̃ᵀ overflows torch.float64 although every per-sample"):
        centred_gram_lower(model, half_squared_error, X, y)
    with pytest.raises(FloatingPointError, match=r"G Gᵀ overflows torch.float64 although every per-sample"):
        gram_matrix(model, half_squared_error, X, y)

    class Raw(nn.Module):  # not an nn.Linear: the general route
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(model.weight.detach().T.clone())

        def forward(self, x):
            return x @ self.w

    with pytest.raises(FloatingPointError, match=r"G Gᵀ overflows torch.float64 although every per-sample"):
        gram_matrix(Raw(), half_squared_error, X, y)


def test_bad_method():
    with pytest.raises(ValueError, match="method='fast'"):
        per_sample_grads(*CASES["mlp-tanh-ce"], method="fast")
