"""Plain image transforms of pml.trainers (Pillow + tensors, no torchvision)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from pml.trainers import (
    CenterCrop,
    Compose,
    Normalize,
    RandomHorizontalFlip,
    RandomResizedCrop,
    Resize,
    ToTensor,
)


def rgb_image(h=4, w=6, seed=0):
    arr = np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)
    return Image.fromarray(arr), arr


# ---------------------------------------------------------------- ToTensor


def test_to_tensor_rgb_is_chw_in_unit_range():
    img, arr = rgb_image()
    x = ToTensor()(img)
    assert x.dtype == torch.float32 and x.shape == (3, 4, 6) and x.is_contiguous()
    assert torch.equal(x, torch.from_numpy(arr).permute(2, 0, 1).float() / 255)


def test_to_tensor_greyscale_keeps_one_channel_or_converts():
    arr = np.arange(6, dtype=np.uint8).reshape(2, 3) * 40
    img = Image.fromarray(arr)
    assert img.mode == "L"
    one = ToTensor()(img)
    assert one.shape == (1, 2, 3)
    assert torch.equal(one[0], torch.from_numpy(arr).float() / 255)
    three = ToTensor(mode="RGB")(img)
    assert three.shape == (3, 2, 3)
    assert torch.equal(three, one.expand(3, 2, 3))


def test_to_tensor_other_modes():
    rgba = Image.new("RGBA", (2, 2), (255, 0, 0, 51))
    assert ToTensor()(rgba)[:, 0, 0].tolist() == pytest.approx([1.0, 0.0, 0.0, 0.2])
    assert ToTensor(mode="RGB")(rgba).shape == (3, 2, 2)
    pal = Image.new("P", (2, 1))
    pal.putpalette([0, 0, 0, 255, 128, 0] + [0] * 762)
    pal.putpixel((1, 0), 1)
    x = ToTensor()(pal)
    assert x.shape == (3, 1, 2)
    assert x[:, 0, 1].tolist() == pytest.approx([1.0, 128 / 255, 0.0])
    deep = Image.fromarray(np.array([[0, 65535, 13107]], dtype=np.uint16))
    assert ToTensor()(deep)[0, 0].tolist() == pytest.approx([0.0, 1.0, 0.2])
    bits = Image.new("1", (2, 1), 1)
    assert ToTensor()(bits).tolist() == [[[1.0, 1.0]]]
    floats = Image.fromarray(np.array([[2.5, -1.0]], dtype=np.float32))
    assert ToTensor()(floats).tolist() == [[[2.5, -1.0]]]


def test_to_tensor_numpy_arrays_and_bad_inputs():
    arr = np.full((2, 3, 3), 255, dtype=np.uint8)
    assert torch.equal(ToTensor()(arr), torch.ones(3, 2, 3))
    with pytest.raises(TypeError, match="PIL image or a numpy array"):
        ToTensor()(torch.zeros(3, 2, 2))
    with pytest.raises(ValueError, match=r"\(H, W\) or \(H, W, C\)"):
        ToTensor()(np.zeros((1, 2, 2, 3), dtype=np.uint8))
    with pytest.raises(TypeError, match="mode"):
        ToTensor(mode=3)


# ---------------------------------------------------------------- Normalize


def test_normalize_per_channel():
    x = torch.arange(12.0).view(3, 2, 2)
    out = Normalize([1.0, 2.0, 3.0], [2.0, 4.0, 0.5])(x)
    expected = (x - torch.tensor([1.0, 2.0, 3.0]).view(3, 1, 1)) / torch.tensor(
        [2.0, 4.0, 0.5]
    ).view(3, 1, 1)
    assert torch.equal(out, expected)
    assert torch.equal(x, torch.arange(12.0).view(3, 2, 2))  # input untouched
    batch = Normalize([1.0, 2.0, 3.0], [2.0, 4.0, 0.5])(x.expand(5, 3, 2, 2))
    assert torch.equal(batch[4], expected)
    assert Normalize(0.5, 0.5)(torch.ones(2, 1, 1, dtype=torch.float64)).dtype == torch.float64


def test_normalize_errors():
    with pytest.raises(ValueError, match="mode='RGB'"):
        Normalize([0.1, 0.2, 0.3], [1.0, 1.0, 1.0])(torch.zeros(1, 2, 2))
    with pytest.raises(ValueError, match="std must not contain 0"):
        Normalize([0.0], [0.0])
    with pytest.raises(ValueError, match="same length"):
        Normalize([0.0, 0.0], [1.0, 1.0, 1.0])
    with pytest.raises(TypeError, match="floating tensor"):
        Normalize([0.0], [1.0])(torch.zeros(1, 2, 2, dtype=torch.uint8))
    with pytest.raises(TypeError, match="mean"):
        Normalize("abc", [1.0])


# ---------------------------------------------------------------- Resize


def test_resize_int_sets_the_shorter_side():
    assert Resize(4)(Image.new("RGB", (10, 5))).size == (8, 4)
    assert Resize(4)(Image.new("RGB", (5, 10))).size == (4, 8)
    assert Resize(3)(Image.new("RGB", (7, 5))).size == (4, 3)  # int(3 * 7 / 5)
    assert Resize(4)(torch.zeros(3, 5, 10)).shape == (3, 4, 8)
    assert Resize(4)(torch.zeros(2, 3, 10, 5)).shape == (2, 3, 8, 4)
    assert Resize((2, 7))(Image.new("L", (3, 3))).size == (7, 2)


def test_resize_nearest_upsampling_agrees_on_pil_and_tensor():
    img, arr = rgb_image(2, 3)
    from_pil = ToTensor()(Resize((4, 6), interpolation="nearest")(img))
    from_tensor = Resize((4, 6), interpolation="nearest")(ToTensor()(img))
    expected = (
        torch.from_numpy(arr.repeat(2, axis=0).repeat(2, axis=1)).permute(2, 0, 1).float() / 255
    )
    assert torch.equal(from_pil, expected)
    assert torch.equal(from_tensor, expected)


@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic"])
def test_resize_keeps_a_constant_image_constant(interpolation):
    out = Resize((3, 5), interpolation=interpolation)(torch.full((3, 8, 9), 0.25))
    assert torch.allclose(out, torch.full((3, 3, 5), 0.25))
    pil = Resize((3, 5), interpolation=interpolation)(Image.new("RGB", (9, 8), (64, 64, 64)))
    assert np.asarray(pil).min() == np.asarray(pil).max() == 64


def test_resize_errors():
    with pytest.raises(ValueError, match="interpolation must be one of"):
        Resize(3, interpolation="lanczos")
    with pytest.raises(ValueError, match="size"):
        Resize(0)
    with pytest.raises(TypeError, match="size"):
        Resize((1, 2, 3))
    with pytest.raises(TypeError, match="floating tensor"):
        Resize(3)(torch.zeros(1, 4, 4, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"\(\.\.\., C, H, W\)"):
        Resize(3)(torch.zeros(4, 4))
    with pytest.raises(TypeError, match="PIL image or a tensor"):
        Resize(3)(np.zeros((4, 4)))


# ---------------------------------------------------------------- CenterCrop


def test_center_crop_values():
    x = torch.arange(30.0).view(1, 5, 6)
    assert CenterCrop(2)(x).tolist() == [[[14.0, 15.0], [20.0, 21.0]]]
    assert CenterCrop((3, 4))(x).tolist() == [
        [[7.0, 8.0, 9.0, 10.0], [13.0, 14.0, 15.0, 16.0], [19.0, 20.0, 21.0, 22.0]]
    ]


@pytest.mark.parametrize("size", [2, (3, 4), (4, 3), 8, (2, 9)])
def test_center_crop_agrees_on_pil_and_tensor(size):
    img, _ = rgb_image(5, 6)
    from_pil = ToTensor()(CenterCrop(size)(img))
    from_tensor = CenterCrop(size)(ToTensor()(img))
    assert torch.equal(from_pil, from_tensor)


def test_center_crop_pads_a_small_image_with_zeros():
    out = CenterCrop(4)(torch.ones(1, 2, 2))
    assert out.tolist() == [
        [[0.0, 0.0, 0.0, 0.0], [0.0, 1.0, 1.0, 0.0], [0.0, 1.0, 1.0, 0.0], [0.0, 0.0, 0.0, 0.0]]
    ]


# ---------------------------------------------------------------- RandomResizedCrop


def test_random_resized_crop_is_seeded_by_the_torch_rng():
    img, _ = rgb_image(20, 30)
    crop = RandomResizedCrop(8)
    torch.manual_seed(3)
    first = [crop.get_params(20, 30) for _ in range(5)]
    torch.manual_seed(3)
    again = [crop.get_params(20, 30) for _ in range(5)]
    assert first == again
    assert len(set(first)) > 1
    g1, g2 = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    a = RandomResizedCrop(8, generator=g1)
    b = RandomResizedCrop(8, generator=g2)
    assert [a.get_params(20, 30) for _ in range(4)] == [b.get_params(20, 30) for _ in range(4)]
    torch.manual_seed(0)
    assert crop(img).size == (8, 8)
    assert RandomResizedCrop((3, 5))(torch.zeros(2, 3, 20, 30)).shape == (2, 3, 3, 5)


def test_random_resized_crop_regions_respect_scale_and_ratio():
    crop = RandomResizedCrop(
        4, scale=(0.2, 0.6), ratio=(0.5, 2.0), generator=torch.Generator().manual_seed(0)
    )
    for _ in range(200):
        top, left, h, w = crop.get_params(40, 50)
        assert top >= 0 and top + h <= 40 and left >= 0 and left + w <= 50
        # rounding of h and w moves area and ratio a little off their drawn values
        assert 0.2 * 2000 * 0.85 <= h * w <= 0.6 * 2000 * 1.15
        assert 0.5 * 0.85 <= w / h <= 2.0 * 1.15


def test_random_resized_crop_falls_back_to_a_centred_clamped_region():
    crop = RandomResizedCrop(4, scale=(2.0, 3.0), ratio=(1.0, 1.0))  # no region fits
    assert crop.get_params(10, 20) == (0, 5, 10, 10)
    assert RandomResizedCrop(4, scale=(2.0, 3.0), ratio=(0.5, 4.0)).get_params(10, 20) == (
        0,
        0,
        10,
        20,
    )


def test_random_resized_crop_agrees_on_pil_and_tensor():
    img, _ = rgb_image(12, 16)
    crop = RandomResizedCrop(6, interpolation="nearest")
    torch.manual_seed(5)
    top, left, h, w = crop.get_params(12, 16)
    torch.manual_seed(5)
    from_pil = ToTensor()(crop(img))
    torch.manual_seed(5)
    from_tensor = crop(ToTensor()(img))
    assert from_pil.shape == from_tensor.shape == (3, 6, 6)
    region = ToTensor()(img)[:, top : top + h, left : left + w]
    assert torch.equal(from_tensor, Resize((6, 6), interpolation="nearest")(region))
    assert torch.allclose(from_pil.mean(), from_tensor.mean(), atol=0.1)


def test_random_resized_crop_errors():
    with pytest.raises(ValueError, match="scale"):
        RandomResizedCrop(4, scale=(0.9, 0.1))
    with pytest.raises(ValueError, match="ratio"):
        RandomResizedCrop(4, ratio=(0.0, 1.0))
    with pytest.raises(TypeError, match="scale"):
        RandomResizedCrop(4, scale=0.5)
    with pytest.raises(TypeError, match="generator"):
        RandomResizedCrop(4, generator=0)


# ---------------------------------------------------------------- RandomHorizontalFlip


def test_horizontal_flip_probabilities():
    img, arr = rgb_image()
    flipped = RandomHorizontalFlip(p=1.0)(img)
    assert np.array_equal(np.asarray(flipped), arr[:, ::-1])
    assert RandomHorizontalFlip(p=0.0)(img) is img
    x = ToTensor()(img)
    assert torch.equal(RandomHorizontalFlip(p=1.0)(x), ToTensor()(flipped))
    flip = RandomHorizontalFlip(generator=torch.Generator().manual_seed(0))
    draws = torch.rand(1000, generator=torch.Generator().manual_seed(0))
    expected = int((draws < 0.5).sum())
    got = sum(int(not torch.equal(flip(x), x)) for _ in range(1000))
    assert got == expected


def test_horizontal_flip_errors():
    with pytest.raises(ValueError, match="p"):
        RandomHorizontalFlip(p=1.5)
    with pytest.raises(TypeError, match="PIL image or a tensor"):
        RandomHorizontalFlip()([1, 2])


# ---------------------------------------------------------------- Compose


def test_compose_applies_in_order_and_checks_callables():
    pipeline = Compose([Resize(4), CenterCrop(4), ToTensor(mode="RGB"), Normalize([0.5], [0.5])])
    out = pipeline(Image.new("L", (8, 6), 255))
    assert out.shape == (3, 4, 4)
    assert torch.allclose(out, torch.ones(3, 4, 4))
    assert "CenterCrop(size=(4, 4))" in repr(pipeline)
    with pytest.raises(TypeError, match=r"transforms\[1\] must be callable"):
        Compose([ToTensor(), "resize"])


def test_train_pipeline_is_repeatable_under_a_seed():
    img, _ = rgb_image(30, 40)
    pipeline = Compose([Resize(20), RandomResizedCrop(16), RandomHorizontalFlip(), ToTensor()])
    torch.manual_seed(11)
    a = pipeline(img)
    torch.manual_seed(11)
    b = pipeline(img)
    assert torch.equal(a, b) and a.shape == (3, 16, 16)
    assert math.isfinite(float(a.sum()))
