"""The churn model on the wire: what the training worker publishes on the compacted
`cx.models` topic and every worker installs (`core.churn_model`).

One JSON document per decision: `{"serves": "<version>" | "hand-set", "card": {…}, "model":
{…} | null}`. A logistic model travels as its standardisation (mean, scale), coefficients,
intercept, Platt parameters and each feature's fitted range (low, high; ±inf as null; a
document without them, from a build before, reads as unbounded); a LightGBM model as LightGBM's own model string. Floats go
through JSON's shortest round-tripping repr, so the decoded model scores bit for bit as the
trained one. `serves: "hand-set"` hands scoring back to the hand-set model (cold start ends
never do; a drift does), and its card is the model that was trained and not served.
"""
from __future__ import annotations

import json
import math
from typing import Any, NamedTuple

import numpy as np

from pipeline.domain.churn_features import FEATURE_NAMES
from pipeline.learning.churn_trainer import LinearChurnModel, ModelCard, TreeChurnModel

FORMAT = 1
HAND_SET = "hand-set"


def _floats(a: Any) -> list[float]:
    return [float(v) for v in np.asarray(a, dtype=np.float64).ravel()]


def _bound(a: np.ndarray | None) -> list[float | None] | None:
    """A fitted range's edge for JSON: ±inf (a feature never known in training) as null."""
    return None if a is None else [float(v) if math.isfinite(v) else None for v in _floats(a)]


def _edge(values: list[float | None] | None, inf: float, n: int) -> np.ndarray | None:
    if values is None:
        return None
    if len(values) != n:
        raise ValueError(f"a fitted range of {len(values)} values for {n} features")
    return np.array([inf if v is None else float(v) for v in values], dtype=np.float64)


def _body(model: LinearChurnModel | TreeChurnModel | None) -> dict[str, Any] | None:
    if model is None:
        return None
    if isinstance(model, LinearChurnModel):
        return {"kind": "logistic", "version": model.version, "feature_names": list(model.feature_names),
                "mean": _floats(model.mean), "scale": _floats(model.scale), "coef": _floats(model.coef),
                "intercept": float(model.intercept), "platt": [float(v) for v in model.platt],
                "low": _bound(model.low), "high": _bound(model.high)}
    return {"kind": "lightgbm", "version": model.version, "feature_names": list(model.feature_names),
            "booster": model.booster.model_to_string(), "platt": [float(v) for v in model.platt]}


def encode_model(model: LinearChurnModel | TreeChurnModel | None, card: ModelCard | None,
                 early_warning: LinearChurnModel | None = None) -> bytes:
    """The decision to publish: `model` serves (None: the hand-set model serves); `card` is
    the card of the latest trained model (`model.card` when it serves); `early_warning` the
    early-warning model that serves with it (None: none; a document without the key reads
    as none)."""
    doc: dict[str, Any] = {"format": FORMAT, "serves": model.version if model is not None else HAND_SET,
                           "card": card.to_dict() if card is not None else None, "model": _body(model)}
    if early_warning is not None:
        doc["early_warning"] = {**(_body(early_warning) or {}),
                                "card": early_warning.card.to_dict() if early_warning.card is not None else None}
    return json.dumps(doc, sort_keys=True).encode()


def _card(c: dict | None) -> ModelCard | None:
    if c is None:
        return None
    c = dict(c)
    c["window"] = tuple(c["window"])
    return ModelCard(**c)


class Published(NamedTuple):
    """What one models record says: the model to serve (None: the hand-set model), the card
    of the latest trained model, and the early-warning model that serves with it (None: none)."""
    model: LinearChurnModel | TreeChurnModel | None
    card: ModelCard | None
    early_warning: LinearChurnModel | None


def decode_published(value: bytes) -> Published:
    """The models record `value`, parsed once. Raises ValueError on a document this build
    cannot read or serve: not a model document, or a model of other features than this build
    computes (one published by another build: scoring with it would fail for every customer).
    A document without the `early_warning` key (a build before it) carries none."""
    try:
        doc = json.loads(value)
        if not isinstance(doc, dict):
            raise ValueError(f"a churn model document is a JSON object, not {type(doc).__name__}")
        if doc.get("format") != FORMAT:
            raise ValueError(f"churn model format {doc.get('format')!r}, this build reads {FORMAT}")
        card = _card(doc.get("card"))
        body = doc.get("model")
        model = _model(body, card) if body is not None else None
        ew_body = doc.get("early_warning")
        early_warning = None
        if ew_body is not None:
            ew = _model(ew_body, _card(ew_body.get("card")))
            if not isinstance(ew, LinearChurnModel):
                raise ValueError(f"early-warning model {ew_body.get('version')!r} is not a logistic model")
            early_warning = ew
        return Published(model, card, early_warning)
    except (KeyError, TypeError, AttributeError, json.JSONDecodeError) as exc:
        raise ValueError(f"unreadable churn model document: {type(exc).__name__}: {exc}") from exc


def _model(body: dict, card: ModelCard | None) -> LinearChurnModel | TreeChurnModel:
    """A model body of this build's features (ValueError otherwise)."""
    names = tuple(body["feature_names"])
    if names != FEATURE_NAMES:
        raise ValueError(f"churn model {body.get('version')!r} was trained on other features than this build "
                         f"computes ({len(names)} against {len(FEATURE_NAMES)})")
    a, b = body["platt"]
    if body["kind"] == "logistic":
        mean, scale, coef = (np.array(body[k], dtype=np.float64) for k in ("mean", "scale", "coef"))
        if not mean.shape == scale.shape == coef.shape == (len(names),):
            raise ValueError(f"churn model {body['version']!r}: mean, scale and coef are not one value a feature")
        model: LinearChurnModel | TreeChurnModel = LinearChurnModel(
            body["version"], names, mean, scale, coef, float(body["intercept"]), (float(a), float(b)), card,
            low=_edge(body.get("low"), -math.inf, len(names)), high=_edge(body.get("high"), math.inf, len(names)))
    elif body["kind"] == "lightgbm":
        import lightgbm as lgb

        try:
            booster = lgb.Booster(model_str=body["booster"])
        except lgb.basic.LightGBMError as exc:
            raise ValueError(f"churn model {body['version']!r}: unreadable trees: {exc}") from exc
        if booster.num_feature() != len(names):
            raise ValueError(f"churn model {body['version']!r}: trees of {booster.num_feature()} features")
        model = TreeChurnModel(body["version"], names, booster, (float(a), float(b)), card)
    else:
        raise ValueError(f"unknown churn model kind {body['kind']!r}")
    return model
