"""Dependence between two layers' expert choices, from their contingency table.

Every measure takes ``joint``, an (E_a, E_b) array of frame counts: ``joint[i, j]`` frames went
to expert i in one layer and to expert j in the other. All but :func:`same_expert_share` are
invariant to relabelling either layer's experts, so they compare Switch layers (whose expert
ids mean nothing across layers) and Omni-router layers alike.
"""

import numpy as np


def entropy(p: np.ndarray) -> float:
    """Shannon entropy (nats) of a distribution or of counts (normalised first); 0 for none."""
    p = np.asarray(p, dtype=np.float64).ravel()
    total = p.sum()
    if total <= 0:
        return 0.0
    p = p[p > 0] / total
    return float(-(p * np.log(p)).sum())


def mutual_information(joint: np.ndarray) -> float:
    """I(A; B) in nats: H(A) + H(B) - H(A, B)."""
    joint = np.asarray(joint, dtype=np.float64)
    return max(0.0, entropy(joint.sum(1)) + entropy(joint.sum(0)) - entropy(joint))


def nmi(joint: np.ndarray) -> float:
    """Normalised mutual information I(A; B) / sqrt(H(A) H(B)), in [0, 1].

    The geometric-mean normalisation (Strehl and Ghosh, 2002): 1 when each layer's choice
    determines the other's (identical or relabelled choices), about 0 for independent ones. 0
    when either layer sends every frame to one expert, where the information is undefined.
    """
    joint = np.asarray(joint, dtype=np.float64)
    denom = np.sqrt(entropy(joint.sum(1)) * entropy(joint.sum(0)))
    return float(min(1.0, mutual_information(joint) / denom)) if denom > 0 else 0.0


def uncertainty_coefficient(joint: np.ndarray) -> float:
    """Theil's U(B | A) = I(A; B) / H(B), in [0, 1]: the share of the column layer's routing
    entropy that the row layer's choice explains.

    Directional: 1 when B is a function of A, even when A is not a function of B (e.g. a later
    layer that merges two experts' frames). 0 when B sends every frame to one expert.
    """
    joint = np.asarray(joint, dtype=np.float64)
    h_b = entropy(joint.sum(0))
    return float(min(1.0, mutual_information(joint) / h_b)) if h_b > 0 else 0.0


def cramers_v(joint: np.ndarray) -> float:
    """Cramer's V = sqrt(chi^2 / (n (min(r, c) - 1))), in [0, 1], over the experts each layer
    uses (r, c). 1 when one layer's choice determines the other's, about 0 when independent;
    0 when either layer uses a single expert."""
    joint = np.asarray(joint, dtype=np.float64)
    joint = joint[joint.sum(1) > 0][:, joint.sum(0) > 0]
    n = joint.sum()
    k = min(joint.shape) - 1 if joint.size else 0
    if n <= 0 or k < 1:
        return 0.0
    expected = np.outer(joint.sum(1), joint.sum(0)) / n
    chi2 = float(((joint - expected) ** 2 / expected).sum())
    return float(min(1.0, np.sqrt(chi2 / (n * k))))


def same_expert_share(joint: np.ndarray) -> float:
    """Share of frames that both layers send to the expert with the same id (the trace of the
    normalised table). Meaningful where ids name the same router's choices (Omni-router); for
    Switch layers it depends on arbitrary labels."""
    joint = np.asarray(joint, dtype=np.float64)
    n = joint.sum()
    return float(np.trace(joint) / n) if n > 0 else 0.0


def js_divergence(p: np.ndarray, q: np.ndarray) -> float:
    """Jensen-Shannon divergence (base 2, in [0, 1]) of two distributions or count vectors."""
    p = np.asarray(p, dtype=np.float64).ravel()
    q = np.asarray(q, dtype=np.float64).ravel()
    if p.sum() <= 0 or q.sum() <= 0:
        return 0.0
    p, q = p / p.sum(), q / q.sum()
    m = (p + q) / 2
    return max(0.0, (entropy(m) - (entropy(p) + entropy(q)) / 2) / np.log(2))


MEASURES = {
    "nmi": nmi,
    "cramers_v": cramers_v,
    "uncertainty": uncertainty_coefficient,
    "same_expert": same_expert_share,
}

# What routing.json says of each measure.
MEASURE_DEFINITIONS = {
    "nmi": "normalised mutual information I(a;b)/sqrt(H(a)H(b)) of two layers' top-1 experts "
    "over the same frames; symmetric, invariant to relabelling the experts",
    "cramers_v": "Cramer's V of the layers' contingency table, sqrt(chi2/(n(min(r,c)-1))); "
    "symmetric, invariant to relabelling the experts",
    "uncertainty": "Theil's U(column|row) = I/H(column): the share of the column layer's routing "
    "entropy explained by the row layer's choice; directional",
    "same_expert": "share of frames both layers send to the expert of the same id (meaningful "
    "for a shared router only)",
    "entropy": "mean over frames of the router distribution's entropy, divided by log E",
    "load_balance": "entropy of the layer's expert load divided by log E (1 = every expert the "
    "same share of frames)",
    "js_divergence": "Jensen-Shannon divergence (base 2, in [0, 1]) of a set's expert usage from "
    "the reference set's, per layer",
}
