"""The epoch table (console and report.md), the report of a run, and paper citations."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = [
    "CITATIONS",
    "MINER_CITATIONS",
    "METRIC_LABELS",
    "citation",
    "format_row",
    "markdown_table",
    "render_report",
    "table_header",
]

#: metric key -> column title
METRIC_LABELS = {
    "precision_at_1": "P@1",
    "r_precision": "R-prec",
    "mean_average_precision_at_r": "MAP@R",
}

#: loss class -> the paper that introduced it
CITATIONS = {
    "AngularLoss": "Wang et al., Deep Metric Learning with Angular Loss, ICCV 2017",
    "ArcFaceLoss": (
        "Deng et al., ArcFace: Additive Angular Margin Loss for Deep Face Recognition, CVPR 2019"
    ),
    "CentroidTripletLoss": (
        "Wieczorek et al., On the Unreasonable Effectiveness of Centroids in Image Retrieval, "
        "ICONIP 2021"
    ),
    "CircleLoss": (
        "Sun et al., Circle Loss: A Unified Perspective of Pair Similarity Optimization, CVPR 2020"
    ),
    "ContrastiveLoss": (
        "Hadsell, Chopra and LeCun, Dimensionality Reduction by Learning an Invariant Mapping, "
        "CVPR 2006"
    ),
    "CosFaceLoss": (
        "Wang et al., CosFace: Large Margin Cosine Loss for Deep Face Recognition, CVPR 2018"
    ),
    "CrossBatchMemory": "Wang et al., Cross-Batch Memory for Embedding Learning, CVPR 2020",
    "DynamicSoftMarginLoss": (
        "Zhang et al., Learning Local Descriptors with a CDF-Based Dynamic Soft Margin, ICCV 2019"
    ),
    "FastAPLoss": "Cakir et al., Deep Metric Learning to Rank, CVPR 2019",
    "GeneralizedLiftedStructureLoss": (
        "Hermans, Beyer and Leibe, In Defense of the Triplet Loss for Person Re-Identification, "
        "arXiv:1703.07737, 2017"
    ),
    "HistogramLoss": (
        "Ustinova and Lempitsky, Learning Deep Embeddings with Histogram Loss, NeurIPS 2016"
    ),
    "InstanceLoss": (
        "Zheng et al., Dual-Path Convolutional Image-Text Embeddings with Instance Loss, "
        "ACM TOMM 2020"
    ),
    "IntraPairVarianceLoss": "Yu and Tao, Deep Metric Learning with Tuplet Margin Loss, ICCV 2019",
    "LargeMarginSoftmaxLoss": (
        "Liu et al., Large-Margin Softmax Loss for Convolutional Neural Networks, ICML 2016"
    ),
    "LiftedStructureLoss": (
        "Oh Song et al., Deep Metric Learning via Lifted Structured Feature Embedding, CVPR 2016"
    ),
    "ManifoldLoss": (
        "Aziere and Todorovic, Ensemble Deep Manifold Similarity Learning using Hard Proxies, "
        "CVPR 2019"
    ),
    "MarginLoss": "Wu et al., Sampling Matters in Deep Embedding Learning, ICCV 2017",
    "MultiSimilarityLoss": (
        "Wang et al., Multi-Similarity Loss with General Pair Weighting for Deep Metric "
        "Learning, CVPR 2019"
    ),
    "NCALoss": "Goldberger et al., Neighbourhood Components Analysis, NeurIPS 2004",
    "NPairsLoss": (
        "Sohn, Improved Deep Metric Learning with Multi-class N-pair Loss Objective, NeurIPS 2016"
    ),
    "NTXentLoss": (
        "Chen et al., A Simple Framework for Contrastive Learning of Visual Representations, "
        "ICML 2020"
    ),
    "NormalizedSoftmaxLoss": (
        "Wang et al., NormFace: L2 Hypersphere Embedding for Face Verification, ACM MM 2017"
    ),
    "P2SGradLoss": (
        "Zhang et al., P2SGrad: Refined Gradients for Optimizing Deep Face Models, CVPR 2019"
    ),
    "PNPLoss": (
        "Li et al., Rethinking the Optimization of Average Precision: Only Penalizing Negative "
        "Instances before Positive Ones is Enough, AAAI 2022"
    ),
    "ProxyAnchorLoss": "Kim et al., Proxy Anchor Loss for Deep Metric Learning, CVPR 2020",
    "ProxyNCALoss": (
        "Movshovitz-Attias et al., No Fuss Distance Metric Learning using Proxies, ICCV 2017"
    ),
    "SignalToNoiseRatioContrastiveLoss": (
        "Yuan et al., Signal-To-Noise Ratio: A Robust Distance Metric for Deep Metric Learning, "
        "CVPR 2019"
    ),
    "SoftTripleLoss": (
        "Qian et al., SoftTriple Loss: Deep Metric Learning Without Triplet Sampling, ICCV 2019"
    ),
    "SphereFaceLoss": (
        "Liu et al., SphereFace: Deep Hypersphere Embedding for Face Recognition, CVPR 2017"
    ),
    "SubCenterArcFaceLoss": (
        "Deng et al., Sub-center ArcFace: Boosting Face Recognition by Large-Scale Noisy Web "
        "Faces, ECCV 2020"
    ),
    "SupConLoss": "Khosla et al., Supervised Contrastive Learning, NeurIPS 2020",
    "ThresholdConsistentMarginLoss": (
        "Zhang et al., Threshold-Consistent Margin Loss for Open-World Deep Metric Learning, "
        "ICLR 2024"
    ),
    "TripletMarginLoss": (
        "Weinberger and Saul, Distance Metric Learning for Large Margin Nearest Neighbor "
        "Classification, JMLR 2009; Schroff et al., FaceNet: A Unified Embedding for Face "
        "Recognition and Clustering, CVPR 2015"
    ),
    "TupletMarginLoss": "Yu and Tao, Deep Metric Learning with Tuplet Margin Loss, ICCV 2019",
    "VICRegLoss": (
        "Bardes, Ponce and LeCun, VICReg: Variance-Invariance-Covariance Regularization for "
        "Self-Supervised Learning, ICLR 2022"
    ),
}

#: miner class -> the paper that introduced it
MINER_CITATIONS = {
    "AngularMiner": "Wang et al., Deep Metric Learning with Angular Loss, ICCV 2017",
    "BatchHardMiner": (
        "Hermans, Beyer and Leibe, In Defense of the Triplet Loss for Person Re-Identification, "
        "arXiv:1703.07737, 2017"
    ),
    "DistanceWeightedMiner": "Wu et al., Sampling Matters in Deep Embedding Learning, ICCV 2017",
    "HDCMiner": "Yuan et al., Hard-Aware Deeply Cascaded Embedding, ICCV 2017",
    "MultiSimilarityMiner": (
        "Wang et al., Multi-Similarity Loss with General Pair Weighting for Deep Metric "
        "Learning, CVPR 2019"
    ),
    "TripletMarginMiner": (
        "Schroff et al., FaceNet: A Unified Embedding for Face Recognition and Clustering, "
        "CVPR 2015"
    ),
}

_PROTOCOL = (
    "Retrieval on the held-out split: every held-out item is a query against all the other "
    "held-out items (itself excluded); an item of the query's class is relevant. Precision@1, "
    "R-precision and MAP@R (Musgrave, Belongie and Lim, A Metric Learning Reality Check, ECCV "
    '2020) come from `pml.eval.AccuracyCalculator(k="max_bin_count")` on the embeddings of the '
    "model in eval mode, compared with the loss's distance ({distance}). Queries without another "
    "item of their class (lone queries) are skipped. Epoch 0 is the untrained model. "
    "`checkpoints/best.pth` is the epoch of the highest MAP@R on this same held-out split (there "
    "is no separate validation split); the final metrics are those of the last epoch."
)


def citation(name: str | None, miner: bool = False) -> str | None:
    """The paper of a loss (or miner) class, None for classes without one."""
    if name is None:
        return None
    return (MINER_CITATIONS if miner else CITATIONS).get(name)


def _fmt(value: Any, spec: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return format("-", ">" + spec.partition(".")[0])
    return format(value, spec)


def table_header() -> str:
    """The console epoch table's header line."""
    return (
        f"{'epoch':>5}  {'loss':>9}  {'lr':>9}  {'P@1':>6}  {'R-prec':>6}  {'MAP@R':>6}  "
        f"{'time':>6}"
    )


def format_row(row: Mapping[str, Any], mark: str = "") -> str:
    """One console line of the epoch table (``mark`` after it, e.g. ``"*"`` for the best)."""
    seconds = row.get("seconds")
    line = (
        f"{row['epoch']:>5}  {_fmt(row.get('loss'), '9.4g')}  {_fmt(row.get('lr'), '9.3g')}  "
        f"{_fmt(row.get('precision_at_1'), '6.4f')}  {_fmt(row.get('r_precision'), '6.4f')}  "
        f"{_fmt(row.get('mean_average_precision_at_r'), '6.4f')}  "
        f"{_fmt(seconds, '5.1f') + 's' if seconds is not None else '-':>6}"
    )
    return f"{line}  {mark}".rstrip()


def markdown_table(history: Sequence[Mapping[str, Any]], best_epoch: int | None) -> str:
    """The epoch table as markdown; the best row in bold with a ★."""
    lines = [
        "| epoch | loss | lr | P@1 | R-precision | MAP@R | time |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in history:
        cells = [
            str(row["epoch"]),
            _fmt(row.get("loss"), ".4g"),
            _fmt(row.get("lr"), ".3g"),
            _fmt(row.get("precision_at_1"), ".4f"),
            _fmt(row.get("r_precision"), ".4f"),
            _fmt(row.get("mean_average_precision_at_r"), ".4f"),
            _fmt(row.get("seconds"), ".1f") + ("s" if row.get("seconds") is not None else ""),
        ]
        if row["epoch"] == best_epoch:
            cells = [f"**{c}**" for c in cells]
            cells[0] += " ★"
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _metrics_line(row: Mapping[str, Any] | None) -> str:
    if row is None:
        return "-"
    return ", ".join(f"{label} {_fmt(row.get(key), '.4f')}" for key, label in METRIC_LABELS.items())


def render_report(info: Mapping[str, Any]) -> str:
    """report.md of a run.

    ``info`` holds: ``name``, ``command``, ``data`` (description), ``stats`` (split name ->
    :func:`pml.cli._data.dataset_stats`), ``changed`` (non-default settings), ``model``
    (description), ``parameters``, ``history``, ``best_epoch``, ``raw_baseline`` (metrics of
    the raw inputs or None), ``loss``, ``miner``, ``distance``, ``seconds``, ``peak_memory``
    (text), ``device``, ``plots`` (file names relative to the run folder).
    """
    history = info["history"]
    best_epoch = info.get("best_epoch")
    by_epoch = {row["epoch"]: row for row in history}
    last = history[-1] if history else None
    out = [f"# pml train: {info['name']}", ""]
    out += [f"`{info['command']}`", ""]
    out += ["## Data", "", str(info["data"]), ""]
    out += ["| split | items | classes | smallest class | largest class | lone queries |"]
    out += ["|---|---:|---:|---|---|---:|"]
    for split, st in info["stats"].items():
        out.append(
            f"| {split} | {st['items']} | {st['classes']} | {st['smallest_class']} "
            f"({st['smallest_class_items']}) | {st['largest_class']} "
            f"({st['largest_class_items']}) | {st['lone_queries']} |"
        )
    out += ["", "## Settings", ""]
    changed = info["changed"]
    if changed:
        out += ["Settings that differ from the defaults (all settings: `config.toml`):", ""]
        out += [f"- `{k}` = `{v!r}`" for k, v in changed.items()]
    else:
        out += ["The defaults (all settings: `config.toml`)."]
    out += ["", f"Model: {info['model']} ({info['parameters']:,} parameters)."]
    out += ["", "## Training", "", markdown_table(history, best_epoch), ""]
    out += ["## Results", ""]
    out += [f"- final (epoch {last['epoch'] if last else '-'}): {_metrics_line(last)}"]
    if best_epoch is not None:
        out += [f"- best (epoch {best_epoch}): {_metrics_line(by_epoch.get(best_epoch))}"]
    out += [f"- untrained model (epoch 0): {_metrics_line(by_epoch.get(0))}"]
    if info.get("raw_baseline") is not None:
        out += [f"- raw inputs, no model: {_metrics_line(info['raw_baseline'])}"]
    out += ["", "### Evaluation protocol", "", _PROTOCOL.format(distance=info["distance"]), ""]
    out += ["## Resources", ""]
    out += [f"- time: {info['seconds']:.1f} s on {info['device']}"]
    out += [f"- peak memory: {info['peak_memory']}", ""]
    if info.get("plots"):
        out += ["## Plots", ""]
        out += [f"![{name}]({name})" for name in info["plots"]]
        out += [""]
    out += ["## Citation", ""]
    loss_ref = citation(info["loss"])
    out += [f"- {info['loss']}: {loss_ref}" if loss_ref else f"- {info['loss']}: -"]
    miner_ref = citation(info.get("miner"), miner=True)
    if info.get("miner"):
        out += [f"- {info['miner']}: {miner_ref}" if miner_ref else f"- {info['miner']}: -"]
    out += [
        "- pml, a drop-in of pytorch-metric-learning: Musgrave, Belongie and Lim, "
        "PyTorch Metric Learning, arXiv:2008.09164, 2020",
        "",
    ]
    return "\n".join(out)
