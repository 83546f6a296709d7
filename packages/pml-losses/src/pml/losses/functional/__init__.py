"""The math of every loss as pure functions on tensors (``pml.losses.functional``).

One private module per family; this file only re-exports their public names.
"""

from pml.losses.functional._angular_npairs import angular_average_angle, angular_loss, npairs_loss
from pml.losses.functional._decoupled_contrastive import (
    decoupled_contrastive_loss,
    von_mises_weights,
)
from pml.losses.functional._dynamic_arcface import dynamic_margins
from pml.losses.functional._fast_ap import fast_ap_loss
from pml.losses.functional._margin_softmax import (
    arcface_target_logits,
    class_logits,
    cosface_target_logits,
    large_margin_target_logits,
    margin_cross_entropy,
    sub_center_max,
    sub_center_outliers,
)
from pml.losses.functional._multi_supcon import label_set_jaccard, multi_supcon_loss
from pml.losses.functional._nca_instance import instance_loss, nca_loss
from pml.losses.functional._pair import (
    circle_loss,
    contrastive_loss,
    generalized_lifted_structure_loss,
    intra_pair_variance_loss,
    lifted_structure_loss,
    multi_similarity_loss,
)
from pml.losses.functional._pair_sets import (
    histogram_loss,
    soft_histogram,
    threshold_consistent_margin_loss,
)
from pml.losses.functional._proxy import (
    manifold_loss,
    manifold_ranking,
    p2sgrad_loss,
    proxy_anchor_loss,
    soft_triple_class_similarity,
    soft_triple_loss,
)
from pml.losses.functional._ranking import (
    pnp_loss,
    ranked_list_loss,
    smooth_ap_loss,
)
from pml.losses.functional._selectively_contrastive import (
    selectively_contrastive_triplet_loss,
)
from pml.losses.functional._softmax_pairs import ntxent_loss, supcon_loss, tuplet_margin_loss
from pml.losses.functional._triplet import (
    dynamic_soft_margin_loss,
    dynamic_soft_margin_loss_from_mat,
    dynamic_soft_margin_paired_x,
    margin_loss,
    margin_loss_sums,
    triplet_margin_loss,
    triplet_margin_loss_sums,
)
from pml.losses.functional._vicreg import vicreg_loss

__all__: list[str] = [
    "angular_average_angle",
    "angular_loss",
    "arcface_target_logits",
    "circle_loss",
    "class_logits",
    "contrastive_loss",
    "cosface_target_logits",
    "decoupled_contrastive_loss",
    "dynamic_margins",
    "dynamic_soft_margin_loss",
    "dynamic_soft_margin_loss_from_mat",
    "dynamic_soft_margin_paired_x",
    "fast_ap_loss",
    "generalized_lifted_structure_loss",
    "histogram_loss",
    "instance_loss",
    "intra_pair_variance_loss",
    "label_set_jaccard",
    "large_margin_target_logits",
    "lifted_structure_loss",
    "manifold_loss",
    "manifold_ranking",
    "margin_cross_entropy",
    "margin_loss",
    "margin_loss_sums",
    "multi_similarity_loss",
    "multi_supcon_loss",
    "nca_loss",
    "npairs_loss",
    "ntxent_loss",
    "p2sgrad_loss",
    "pnp_loss",
    "proxy_anchor_loss",
    "ranked_list_loss",
    "selectively_contrastive_triplet_loss",
    "smooth_ap_loss",
    "soft_histogram",
    "soft_triple_class_similarity",
    "soft_triple_loss",
    "sub_center_max",
    "sub_center_outliers",
    "supcon_loss",
    "threshold_consistent_margin_loss",
    "triplet_margin_loss",
    "triplet_margin_loss_sums",
    "tuplet_margin_loss",
    "vicreg_loss",
    "von_mises_weights",
]
