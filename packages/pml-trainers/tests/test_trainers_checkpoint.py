"""Checkpoint files: atomic writes, weights-only reads, pickles refused, RNG round trips."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from pml.trainers._checkpoint import (
    CheckpointError,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)


class Payload:
    """A class a crafted checkpoint would make torch.load import and build."""

    def __reduce__(self):
        return (print, ("executed",))


def test_checkpoint_round_trip_keeps_tensors_and_plain_values(tmp_path):
    state = {"w": torch.arange(3.0), "epoch": 2, "names": ["a", "b"], "opt": {"lr": 0.1}}
    save_checkpoint(tmp_path / "sub" / "c.pth", state)
    back = load_checkpoint(tmp_path / "sub" / "c.pth")
    assert back["epoch"] == 2 and back["names"] == ["a", "b"] and back["opt"] == {"lr": 0.1}
    torch.testing.assert_close(back["w"], state["w"])


def test_checkpoint_with_a_pickled_class_is_refused(tmp_path, capsys):
    path = tmp_path / "evil.pth"
    torch.save({"x": Payload()}, path)
    with pytest.raises(CheckpointError, match="refusing to load"):
        load_checkpoint(path)
    assert "executed" not in capsys.readouterr().out


def test_checkpoint_that_is_not_a_dict_is_refused(tmp_path):
    torch.save([1, 2], tmp_path / "list.pth")
    with pytest.raises(CheckpointError, match="expected a dict"):
        load_checkpoint(tmp_path / "list.pth")


def test_missing_checkpoint_is_a_file_not_found_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.pth")


def test_failed_write_leaves_the_previous_checkpoint_intact(tmp_path):
    path = tmp_path / "c.pth"
    save_checkpoint(path, {"v": 1})
    with pytest.raises(Exception):  # noqa: B017 - torch.save fails on a lambda
        save_checkpoint(path, {"v": lambda: 0})
    assert load_checkpoint(path) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["c.pth"]


def test_rng_states_round_trip_through_a_checkpoint(tmp_path):
    torch.manual_seed(3)
    np.random.seed(4)
    random.seed(5)
    save_checkpoint(tmp_path / "rng.pth", {"rng": rng_state()})
    first = (torch.rand(3), np.random.rand(3), [random.random() for _ in range(3)])
    set_rng_state(load_checkpoint(tmp_path / "rng.pth")["rng"])
    again = (torch.rand(3), np.random.rand(3), [random.random() for _ in range(3)])
    torch.testing.assert_close(first[0], again[0], rtol=0, atol=0)
    np.testing.assert_array_equal(first[1], again[1])
    assert first[2] == again[2]
