import numpy as np
import pytest
import torch

from sgdnoise.book import as_python_scalar


@pytest.mark.parametrize(
    "value, expected, typ",
    [(np.float64(1.5), 1.5, float), (np.int64(3), 3, int), (torch.tensor(2.5), 2.5, float), (torch.tensor(4), 4, int), (np.bool_(True), True, bool), ("x", "x", str)],
)
def test_as_python_scalar(value, expected, typ):
    out = as_python_scalar(value)
    assert out == expected and type(out) is typ


def test_rejects_non_scalars_and_non_finite():
    with pytest.raises(TypeError):
        as_python_scalar(np.arange(3))
    with pytest.raises(ValueError, match="non-finite"):
        as_python_scalar(float("nan"))
