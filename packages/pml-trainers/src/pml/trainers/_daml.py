"""DeepAdversarialMetricLearning (Duan et al., CVPR 2018) and its negated distance."""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from pml.core.functional import zero_loss
from pml.core.indices import get_random_triplet_indices
from pml.core.validation import InvalidArgumentError, check_int
from pml.distances import LpDistance
from pml.losses import TripletMarginLoss
from pml.miners import EmbeddingsAlreadyPackagedAsTriplets
from pml.trainers._trainers import TrainWithClassifier

__all__ = ["DeepAdversarialMetricLearning", "NegativeLpDistance"]


class NegativeLpDistance(LpDistance):
    """``-LpDistance``: the matrix and pairwise outputs of an LpDistance times -1.

    With it, a TripletMarginLoss of margin ``-m`` is ``relu(d_an - d_ap - m)``: it rewards
    negatives closer to the anchor than the positive (DAML's adversarial loss).

    Example:
        >>> NegativeLpDistance(normalize_embeddings=False)(torch.tensor([[0.0, 0.0], [3.0, 4.0]]))
        tensor([[-0., -5.],
                [-5., -0.]])
    """

    def compute_mat(self, query_emb: Tensor, ref_emb: Tensor) -> Tensor:
        return -super().compute_mat(query_emb, ref_emb)

    def pairwise_distance(self, query_emb: Tensor, ref_emb: Tensor) -> Tensor:
        return -super().pairwise_distance(query_emb, ref_emb)


class DeepAdversarialMetricLearning(TrainWithClassifier):
    """A generator synthesises hard negatives from (anchor, positive, negative) trunk outputs.

    Needs ``models["generator"]`` (input ``3 * D`` = anchor|positive|negative trunk outputs,
    output ``D``), ``loss_funcs["synth_loss"]``, ``loss_funcs["g_adv_loss"]`` (a
    TripletMarginLoss, turned adversarial in place: margin negated, distance
    :class:`NegativeLpDistance`) and ``loss_funcs["metric_loss"]``. The losses
    ``"g_hard_loss"`` and ``"g_reg_loss"`` are added.

    Phases by epoch: metric alone for ``epoch <= metric_alone_epochs``; generator alone for
    the next ``g_alone_epochs``; both afterwards. Each phase trains only its networks and
    weights only its losses (the others get weight 0).

    Args:
        metric_alone_epochs: epochs training only the metric networks.
        g_alone_epochs: epochs then training only the generator.
        g_triplets_per_anchor: random triplets per anchor fed to the generator.
        *args: the arguments of :class:`BaseTrainer` (pass them by keyword).
        **kwargs: the arguments of :class:`BaseTrainer`.

    Raises:
        InvalidArgumentError: ``loss_funcs["g_adv_loss"]`` is not a TripletMarginLoss, or a
            required key is missing.
    """

    def __init__(
        self,
        metric_alone_epochs: int = 0,
        g_alone_epochs: int = 0,
        g_triplets_per_anchor: int = 100,
        *args: Any,
        **kwargs: Any,
    ) -> None:
        self.metric_alone_epochs = check_int("metric_alone_epochs", metric_alone_epochs, min=0)
        self.g_alone_epochs = check_int("g_alone_epochs", g_alone_epochs, min=0)
        self.g_triplets_per_anchor = check_int(
            "g_triplets_per_anchor", g_triplets_per_anchor, min=1
        )
        super().__init__(*args, **kwargs)
        self.original_loss_weights = copy.deepcopy(self.loss_weights)
        g_adv = self.loss_funcs["g_adv_loss"]
        if not isinstance(g_adv, TripletMarginLoss):
            raise InvalidArgumentError(
                f'loss_funcs["g_adv_loss"] must be a TripletMarginLoss; got {type(g_adv).__name__}'
            )
        # compat: spec §5 (the caller's loss object is turned adversarial in place)
        g_adv.margin *= -1
        g_adv.distance = NegativeLpDistance()
        self.update_phase()

    def custom_setup(self) -> None:
        # compat: spec §5 (the caller's mining_funcs dict gets this miner)
        self.mining_funcs["synth_packaged_as_triplets"] = EmbeddingsAlreadyPackagedAsTriplets()
        self.loss_names += ["g_hard_loss", "g_reg_loss"]

    def modify_schema(self) -> None:
        super().modify_schema()
        self.schema["models"].keys += ["generator"]
        self.schema["models"].essential += ["generator"]  # type: ignore[operator]
        self.schema["loss_funcs"].keys += ["synth_loss", "g_adv_loss"]
        # fix: "metric_loss" is essential too (the reference fails with KeyError later)
        self.schema["loss_funcs"].essential += ["metric_loss", "synth_loss", "g_adv_loss"]  # type: ignore[operator]
        self.schema["mining_funcs"].keys += ["synth_packaged_as_triplets"]

    def update_phase(self) -> None:
        """Set ``do_metric_alone``/``do_adv_alone``/``do_both``/``do_metric``/``do_adv``."""
        m, g = self.metric_alone_epochs, self.g_alone_epochs
        self.do_metric_alone = self.epoch <= m
        self.do_adv_alone = m < self.epoch <= m + g
        self.do_both = not self.do_metric_alone and not self.do_adv_alone
        self.do_adv = self.do_adv_alone or self.do_both
        self.do_metric = self.do_metric_alone or self.do_both

    def update_loss_weights(self) -> None:
        """The weights of this epoch's phase, then which networks get gradients."""
        self.update_phase()
        active = []
        if self.do_adv:
            active += ["g_hard_loss", "g_reg_loss", "g_adv_loss"]
        if self.do_metric:
            active += ["metric_loss", "classifier_loss"]
        if self.do_both:
            active += ["synth_loss"]
        for key in self.loss_weights:
            self.loss_weights[key] = self.original_loss_weights[key] if key in active else 0
        self.maybe_exclude_networks_from_gradient()

    def maybe_exclude_networks_from_gradient(self) -> None:
        """Train mode; the networks of the other phase get no gradient (and eval mode)."""
        self.set_to_train()
        if self.do_adv_alone:
            excluded = {"trunk", "classifier"}
        elif self.do_metric_alone:
            excluded = {"generator"}
        else:
            excluded = set()
        for key, model in self.models.items():
            # fix: the reference re-enables gradients of models listed in freeze_these
            trainable = key not in excluded and key not in self.freeze_these
            for p in model.parameters():
                p.requires_grad_(trainable)
            if key in excluded:
                model.eval()

    def step_optimizers(self) -> None:
        """Step the optimizers of this phase's networks and of its weighted losses."""
        keys = []
        if self.do_metric:
            keys += ["trunk_optimizer", "embedder_optimizer", "classifier_optimizer"]
        if self.do_adv:
            keys += ["generator_optimizer"]
        # fix: the reference never steps the optimizer of a learnable loss here
        keys += [f"{k}_optimizer" for k in self.loss_funcs if self.loss_weights.get(k, 0) != 0]
        for key in keys:
            if key in self.optimizers:
                self.step_optimizer(self.optimizers[key])

    def calculate_loss(self, curr_batch: Any) -> None:
        data, labels = curr_batch
        penultimate = self.get_trunk_output(data)
        if self.do_metric:
            embeddings = self.get_final_embeddings(penultimate)
            indices_tuple = self.maybe_mine_embeddings(embeddings, labels)
            self.losses["metric_loss"] = self.loss_funcs["metric_loss"](
                embeddings, labels, indices_tuple
            )
            logits = self.maybe_get_logits(embeddings)
            self.losses["classifier_loss"] = self.maybe_get_classifier_loss(logits, labels)
        if self.do_adv:
            self.calculate_synth_loss(penultimate, labels)

    def calculate_synth_loss(self, penultimate_embeddings: Tensor, labels: Tensor) -> None:
        """The generator's losses on random triplets of the batch."""
        a, p, n = (
            t.to(penultimate_embeddings.device)
            for t in get_random_triplet_indices(labels, t_per_anchor=self.g_triplets_per_anchor)
        )
        if len(a) == 0:
            # fix: the reference's mean squared errors of no rows are NaN
            zero = zero_loss(penultimate_embeddings)
            for name in ("g_adv_loss", "g_hard_loss", "g_reg_loss") + (
                ("synth_loss",) if self.do_both else ()
            ):
                self.losses[name] = zero
            return
        anchors = penultimate_embeddings[a]
        positives = penultimate_embeddings[p]
        negatives = penultimate_embeddings[n]
        synth = self.models["generator"](
            torch.cat([anchors, positives, negatives], dim=1).to(self.data_device)
        )
        interleaved = torch.stack([anchors, positives, synth], dim=1).flatten(0, 1)
        final = self.get_final_embeddings(interleaved)
        synth_labels = torch.stack([labels[a.cpu()], labels[p.cpu()], labels[n.cpu()]], 1)
        synth_labels = synth_labels.flatten()
        indices = self.mining_funcs["synth_packaged_as_triplets"](final, synth_labels)
        if self.do_both:
            self.losses["synth_loss"] = self.loss_funcs["synth_loss"](final, synth_labels, indices)
        self.losses["g_adv_loss"] = self.loss_funcs["g_adv_loss"](final, synth_labels, indices)
        self.losses["g_hard_loss"] = F.mse_loss(F.normalize(synth), F.normalize(anchors))
        self.losses["g_reg_loss"] = F.mse_loss(F.normalize(synth), F.normalize(negatives))
