import numpy as np
import pytest
import torch

from sgdnoise.experiments._common import child_seed, is_int, is_real, torch_threads


def test_torch_threads_sets_and_restores():
    saved = torch.get_num_threads()
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == saved
    with pytest.raises(RuntimeError), torch_threads(1):
        raise RuntimeError("inside")
    assert torch.get_num_threads() == saved
    with torch_threads(None):
        assert torch.get_num_threads() == saved


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2"])
def test_torch_threads_rejects_bad_counts(bad):
    with pytest.raises(ValueError, match=r"must be None or an int >= 1"), torch_threads(bad):
        pass


def test_checks_and_seeds():
    assert is_int(3) and is_int(np.int64(3)) and not is_int(True) and not is_int(3.0)
    assert is_real(2.5) and is_real(np.float32(1)) and not is_real(float("nan")) and not is_real(False)
    seeds = {child_seed(0, s) for s in range(4)} | {child_seed(1, 0)}
    assert len(seeds) == 5 and all(0 <= s < 2**63 for s in seeds)
    assert child_seed(7, 2) == child_seed(7, 2)
