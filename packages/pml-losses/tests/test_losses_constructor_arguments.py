"""Loss constructors reject bad arguments at once, naming them (the reference fails far away).

Values the reference accepts and that make sense keep working: ints for floats, negative
margins, 0-dim tensors, a plain callable as embedding regularizer.
"""

from __future__ import annotations

import inspect

import pytest
import torch

import pml.losses as L
from pml.distances import CosineSimilarity, LpDistance
from pml.reducers import MeanReducer
from pml.regularizers import LpRegularizer

EMB = torch.randn(16, 8, generator=torch.Generator().manual_seed(0))
LABELS = torch.arange(4).repeat_interleave(4)

LOSSES = sorted(
    n
    for n in L.__all__
    if isinstance(getattr(L, n), type)
    and issubclass(getattr(L, n), L.BaseMetricLossFunction)
    and n not in ("BaseMetricLossFunction", "GenericPairLoss")
)

#: arguments without a default whose value depends on the loss
REQUIRED_BY_LOSS: dict[str, dict] = {"RankedListLoss": {"margin": 0.4, "Tn": 1.0}}
#: VICRegLoss rejects the keywords distance and embedding_regularizer whatever their value
#: (ValueError, like the reference; test_losses_vicreg.py)
NO_DISTANCE = {"VICRegLoss"}


def numeric_parameters() -> list[tuple[str, str]]:
    """(loss, argument) for every constructor argument whose default is a number."""
    out = []
    for name in LOSSES:
        for p in inspect.signature(getattr(L, name).__init__).parameters.values():
            d = p.default
            if isinstance(d, int | float) and not isinstance(d, bool):
                out.append((name, p.name))
    return out


NUMERIC = numeric_parameters()

#: values for the required constructor arguments of the losses with class vectors
REQUIRED = {"num_classes": 4, "embedding_size": 8, "descriptors_dim": 8, "l": 8}
REQUIRED["class_counts"] = [8, 4, 2, 2]  # DynamicArcFaceLoss (4 classes)
REQUIRED.update({k: v for args in REQUIRED_BY_LOSS.values() for k, v in args.items()})


def build(name: str, **kwargs: object) -> L.BaseMetricLossFunction:
    """``name(**kwargs)`` with its required arguments (``num_classes``, ...) filled in."""
    cls = getattr(L, name)
    params = list(inspect.signature(cls.__init__).parameters.values())[1:]
    required = {
        p.name: REQUIRED[p.name]
        for p in params
        if p.default is inspect.Parameter.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    }
    return cls(**{**required, **kwargs})


def test_numeric_parameters_found() -> None:
    assert ("TripletMarginLoss", "margin") in NUMERIC and len(NUMERIC) >= 25


@pytest.mark.parametrize(("name", "arg"), NUMERIC)
@pytest.mark.parametrize("bad", ["x", None, [1.0], True])
def test_non_numeric_hyperparameter_fails_only_at_forward(name, arg, bad) -> None:
    with pytest.raises(TypeError, match=arg):
        build(name, **{arg: bad})


@pytest.mark.parametrize(("name", "arg"), NUMERIC)
def test_nan_hyperparameter_is_silent(name, arg) -> None:
    # a count (num_bins) given NaN is a TypeError: it is not an int
    with pytest.raises((ValueError, TypeError), match=arg):
        build(name, **{arg: float("nan")})


@pytest.mark.parametrize("name", [n for n in LOSSES if n not in NO_DISTANCE])
@pytest.mark.parametrize("bad", ["cosine", CosineSimilarity, 2, torch.nn.Identity()])
def test_distance_that_is_not_a_distance_fails_only_at_forward(name, bad) -> None:
    with pytest.raises(TypeError, match="distance"):
        build(name, distance=bad)


@pytest.mark.parametrize("name", LOSSES)
@pytest.mark.parametrize("bad", ["mean", MeanReducer, 1.0])
def test_reducer_that_is_not_a_reducer_is_not_named_in_the_error(name, bad) -> None:
    with pytest.raises(TypeError, match="reducer"):
        build(name, reducer=bad)


@pytest.mark.parametrize("name", [n for n in LOSSES if n not in NO_DISTANCE])
@pytest.mark.parametrize("bad", ["lp", LpRegularizer, 3.0])
def test_embedding_regularizer_that_is_not_one_fails_only_at_forward(name, bad) -> None:
    with pytest.raises(TypeError, match="embedding_regularizer"):
        build(name, embedding_regularizer=bad)


@pytest.mark.parametrize("bad", ["x", None, float("nan")])
def test_embedding_reg_weight_not_a_number_fails_only_at_forward(bad) -> None:
    with pytest.raises((TypeError, ValueError), match="embedding_reg_weight"):
        L.ContrastiveLoss(embedding_regularizer=LpRegularizer(), embedding_reg_weight=bad)


def test_weight_reg_weight_and_weight_regularizer_are_checked() -> None:
    class WithWeights(L.WeightRegularizerMixin, L.BaseMetricLossFunction):
        pass

    with pytest.raises(TypeError, match="weight_reg_weight"):
        WithWeights(weight_regularizer=LpRegularizer(), weight_reg_weight="x")
    with pytest.raises(TypeError, match="weight_regularizer"):
        WithWeights(weight_regularizer="lp")
    WithWeights(weight_regularizer=LpRegularizer(), weight_reg_weight=2)


POSITIVE = [
    ("CircleLoss", "gamma"),
    ("InstanceLoss", "gamma"),
    ("MultiSimilarityLoss", "alpha"),
    ("MultiSimilarityLoss", "beta"),
    ("NTXentLoss", "temperature"),
    ("SupConLoss", "temperature"),
    ("TupletMarginLoss", "scale"),
    ("HistogramLoss", "delta"),
]


@pytest.mark.parametrize(("name", "arg"), POSITIVE)
@pytest.mark.parametrize("bad", [0, 0.0, -1, -0.5])
def test_zero_or_negative_temperature_or_scale_is_silent(name, arg, bad) -> None:
    # the reference gives NaN, 0, a ZeroDivisionError at forward, or a negated objective
    with pytest.raises(ValueError, match=arg):
        build(name, **{arg: bad})


@pytest.mark.parametrize(
    ("name", "kwargs", "arg"),
    [
        ("MarginLoss", {"nu": -0.1}, "nu"),
        ("NCALoss", {"softmax_scale": -1}, "softmax_scale"),
        ("ThresholdConsistentMarginLoss", {"lambda_plus": -1}, "lambda_plus"),
        ("ThresholdConsistentMarginLoss", {"lambda_minus": -1}, "lambda_minus"),
        ("DynamicSoftMarginLoss", {"momentum": 1.5}, "momentum"),
        ("DynamicSoftMarginLoss", {"momentum": -0.1}, "momentum"),
        ("DynamicSoftMarginLoss", {"min_val": 0}, "min_val"),
        ("DynamicSoftMarginLoss", {"min_val": 2.0}, "min_val"),
        ("DynamicSoftMarginLoss", {"num_bins": 0}, "num_bins"),
        ("AngularLoss", {"alpha": 90}, "alpha"),
        ("AngularLoss", {"alpha": -10}, "alpha"),
        ("HistogramLoss", {"n_bins": 0}, "n_bins"),
    ],
)
def test_out_of_range_hyperparameter_is_silent_or_fails_far_away(name, kwargs, arg) -> None:
    with pytest.raises(ValueError, match=arg):
        build(name, **kwargs)


@pytest.mark.parametrize(
    ("name", "kwargs", "arg"),
    [
        ("DynamicSoftMarginLoss", {"num_bins": 2.5}, "num_bins"),
        ("HistogramLoss", {"n_bins": 2.5}, "n_bins"),
        ("MarginLoss", {"learn_beta": True, "num_classes": 2.5}, "num_classes"),
    ],
)
def test_fractional_count_is_silently_truncated(name, kwargs, arg) -> None:
    with pytest.raises(TypeError, match=arg):
        build(name, **kwargs)


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [
        ("TripletMarginLoss", {"margin": -1}),
        ("TripletMarginLoss", {"margin": 1}),
        ("TripletMarginLoss", {"margin": torch.tensor(0.1)}),
        ("ContrastiveLoss", {"pos_margin": -0.5, "neg_margin": 2}),
        ("MarginLoss", {"margin": -1, "beta": 0, "nu": 0}),
        ("CircleLoss", {"m": -0.1, "gamma": 1}),
        ("TupletMarginLoss", {"margin": -5, "scale": 1}),
        ("MultiSimilarityLoss", {"alpha": 1, "beta": 1, "base": -1}),
        ("NTXentLoss", {"temperature": 1}),
        ("NCALoss", {"softmax_scale": 0.5}),
        ("NCALoss", {"softmax_scale": 0}),
        ("AngularLoss", {"alpha": 0}),
        ("DynamicSoftMarginLoss", {"num_bins": torch.tensor(5), "momentum": 1}),
        ("HistogramLoss", {"n_bins": 10}),
        ("HistogramLoss", {"delta": 0.3}),
        ("IntraPairVarianceLoss", {"pos_eps": -1, "neg_eps": 0}),
        ("ThresholdConsistentMarginLoss", {"lambda_plus": 0, "margin_plus": -0.5}),
        ("ContrastiveLoss", {"distance": LpDistance(p=1)}),
        ("ContrastiveLoss", {"reducer": MeanReducer()}),
        ("ContrastiveLoss", {"embedding_regularizer": lambda x: x.norm()}),
        ("ContrastiveLoss", {"embedding_regularizer": LpRegularizer(), "embedding_reg_weight": 2}),
    ],
)
def test_reference_accepted_values_still_work(name, kwargs) -> None:
    loss = build(name, **kwargs)
    out = loss(EMB, LABELS)
    assert out.ndim == 0 and torch.isfinite(out)


@pytest.mark.parametrize(
    ("make", "arg"),
    [
        (lambda v: L.TripletMarginLoss(swap=v), "swap"),
        (lambda v: L.TripletMarginLoss(smooth_loss=v), "smooth_loss"),
        (lambda v: L.MarginLoss(learn_beta=v), "learn_beta"),
        (lambda v: L.SelfSupervisedLoss(L.TripletMarginLoss(), symmetric=v), "symmetric"),
        (lambda v: L.DistributedLossWrapper(L.ContrastiveLoss(), efficient=v), "efficient"),
    ],
)
@pytest.mark.parametrize("bad", ["False", None, 1.0])
def test_flag_given_a_truthy_string_is_silently_true(make, arg, bad) -> None:
    with pytest.raises(TypeError, match=arg):
        make(bad)


@pytest.mark.parametrize("name", ["ContrastiveLoss", "TripletMarginLoss", "MarginLoss"])
def test_user_module_reducer_gets_per_element_losses_like_the_reference(name) -> None:
    class SumOfMeans(torch.nn.Module):
        def forward(self, loss_dict, embeddings, labels):
            return sum(
                v["losses"].mean() if isinstance(v["losses"], torch.Tensor) else v["losses"] * 0.0
                for v in loss_dict.values()
                if v["reduction_type"] != "already_reduced"
            )

    g = torch.Generator().manual_seed(0)
    emb = torch.randn(16, 4, generator=g, requires_grad=True)
    labels = torch.arange(4).repeat_interleave(4)
    loss = getattr(L, name)(reducer=SumOfMeans())(emb, labels)
    loss.backward()
    assert torch.isfinite(loss) and emb.grad is not None
