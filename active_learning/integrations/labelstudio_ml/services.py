"""The newest model's predictions for Label Studio: served to its ML backend connection
(``/predict``) and pushed to each link after every retrain.

Order. Label Studio's uncertainty sampling serves the tasks whose prediction of the project's
``model_version`` has the lowest ``score`` first. Refrain sends as score each clip's place in its
own order, ``(rank + 1) / N`` in (0, 1]: first the clips waiting in Refrain's queue, by the
priority the queue gives them (routed label issues, then acquisition picks), then every other clip
by the model's hierarchical uncertainty (the ``uncertainty`` acquisition strategy's score), most
uncertain first. The result is the clip's argmax path, root first, as node keys (the config's
aliases).

Authentication. A Label Studio ML backend connection sends HTTP basic auth: the user is
:data:`ML_USER` and the password is derived from the link's webhook secret and ``SECRET_KEY``
(:func:`ml_backend_password`); ``manage.py labelstudio ml-backend <link>`` prints both and with
``--connect`` registers the connection in Label Studio.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
from django.db.models import Max
from django.urls import reverse
from django.utils.crypto import salted_hmac

from active_learning.core.acquisition import HierarchicalUncertainty
from active_learning.models import JobStatus, ModelVersion
from active_learning.selectors import latest_model_version, prediction_matrix
from annotation.integrations.labelstudio.convert import prediction_from_probs
from annotation.integrations.labelstudio.services import (
    PredictionSummary,
    ls_call,
    ls_client,
    ls_push_predictions,
    model_version_name,
    refrain_base_url,
)
from annotation.models import LabelStudioLink, LabelStudioTask, Project, Task
from annotation.selectors import taxonomy_index_cached
from refrain.errors import Conflict, Invalid
from taxonomy.hierarchy import Hierarchy

logger = logging.getLogger(__name__)

ML_USER = "refrain"
ML_TITLE = "Refrain"
#: The model version Refrain names before its first model is trained.
UNTRAINED = "refrain-untrained"


class MLPredictionsUnavailable(Conflict):
    """The newest model cannot give predictions for the link as it is (another taxonomy version)."""

    code = "labelstudio_ml_model_mismatch"


# --- the connection: URL and credentials ----------------------------------------------------------


def ml_backend_password(*, link: LabelStudioLink) -> str:
    """The basic-auth password of the link's ML backend: changes with the link's webhook secret
    (and ``SECRET_KEY``), so it is never stored in Refrain's database."""
    return salted_hmac(
        "refrain.labelstudio.ml", f"{link.pk}:{link.webhook_secret}", algorithm="sha256"
    ).hexdigest()


def ml_backend_url(*, link: LabelStudioLink) -> str:
    """The URL to give Label Studio (it appends ``/health``, ``/setup``, ``/predict``...)."""
    path = reverse("labelstudio-ml-health", args=[link.pk]).removesuffix("/health")
    return f"{refrain_base_url(link=link)}{path}"


def ml_auth_check(*, link: LabelStudioLink, authorization: str) -> bool:
    """Whether an ``Authorization`` header carries this link's basic-auth user and password."""
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() != "basic" or not value:
        return False
    try:
        user, sep, password = base64.b64decode(value.strip(), validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return False
    expected = ml_backend_password(link=link)
    return bool(sep) and (
        hmac.compare_digest(user.encode(), ML_USER.encode())
        & hmac.compare_digest(password.encode(), expected.encode())
    )


def ml_basic_auth_header(*, link: LabelStudioLink) -> str:
    token = base64.b64encode(f"{ML_USER}:{ml_backend_password(link=link)}".encode()).decode()
    return f"Basic {token}"


# --- the newest model's predictions, in Refrain's order --------------------------------------------


def ls_order_scores(
    *, project: Project, clip_ids: np.ndarray, probs: np.ndarray, hierarchy: Hierarchy
) -> np.ndarray:
    """(N,) Label Studio scores in (0, 1], lowest = ask first (see the module docstring).

    ``clip_ids`` (N,) and ``probs`` (N, K) hierarchy-consistent, rows aligned.
    """
    n = int(clip_ids.size)
    if n == 0:
        return np.zeros(0)
    uncertainty = HierarchicalUncertainty().scores(probs, hierarchy)
    queued = dict(
        Task.objects.filter(
            project=project,
            status=Task.Status.OPEN,
            kind__in=[Task.Kind.LABEL, Task.Kind.RELABEL],
        )
        .values("clip_id")
        .annotate(p=Max("priority"))
        .values_list("clip_id", "p")
    )
    priority = np.array([queued.get(int(c), 0.0) for c in clip_ids], dtype=np.float64)
    # lexsort sorts by the last key first: queue priority, then uncertainty, then clip id.
    order = np.lexsort((clip_ids, -uncertainty, -priority))
    scores = np.empty(n)
    scores[order] = (np.arange(n) + 1) / n
    return np.round(scores, 6)


@dataclass
class NewestPredictions:
    model_version: ModelVersion
    name: str  # the model version as Label Studio sees it
    row_of: dict[int, int]  # clip id -> row of probs and scores
    probs: np.ndarray  # (N, K) hierarchy-consistent
    scores: np.ndarray  # (N,) Label Studio scores

    def prediction(self, clip_id: int) -> dict[str, Any] | None:
        row = self.row_of.get(clip_id)
        if row is None:
            return None
        nodes = taxonomy_index_cached(self.model_version.taxonomy_version).nodes
        return prediction_from_probs(
            self.probs[row],
            nodes=nodes,
            model_version=self.name,
            score=float(self.scores[row]),
        )


def newest_predictions(
    *, project: Project, model_version: ModelVersion | None = None
) -> NewestPredictions | None:
    """The predictions of ``model_version`` (default: the project's newest done one), or None when
    there is none. Raises :class:`MLPredictionsUnavailable` for a model trained on another
    taxonomy version than the project's (its node keys would not match Label Studio's config)."""
    mv = model_version or latest_model_version(project=project)
    if mv is None:
        return None
    if mv.status != JobStatus.DONE:
        raise MLPredictionsUnavailable(f"model v{mv.number} is {mv.status}, not done")
    if mv.taxonomy_version_id != project.taxonomy_version_id:
        raise MLPredictionsUnavailable(
            f"model v{mv.number} was trained on taxonomy version {mv.taxonomy_version.number}, "
            f"the project uses {project.taxonomy_version.number}: retrain before predicting"
        )
    clip_ids, p, _ = prediction_matrix(model_version=mv)
    index = taxonomy_index_cached(mv.taxonomy_version)
    hierarchy = Hierarchy(index.parents_array)
    probs = hierarchy.make_consistent(np.clip(np.asarray(p, dtype=np.float64), 0.0, 1.0))
    clip_ids = np.asarray(clip_ids, dtype=np.int64)
    return NewestPredictions(
        model_version=mv,
        name=model_version_name(mv.number),
        row_of={int(c): i for i, c in enumerate(clip_ids)},
        probs=probs,
        scores=ls_order_scores(
            project=project, clip_ids=clip_ids, probs=probs, hierarchy=hierarchy
        ),
    )


def _clip_id(task: Any) -> int | None:
    data = task.get("data") if isinstance(task, dict) else None
    value = data.get("refrain_clip_id") if isinstance(data, dict) else None
    if isinstance(value, bool):
        return None
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def ml_predict(*, link: LabelStudioLink, tasks: list[dict[str, Any]]) -> list[Any]:
    """One entry per task, in order, for ``/predict``: a prediction, or ``[]`` (Label Studio
    stores nothing for it) for a task that is not one of this project's clips, or a clip the
    newest model has no probabilities for, or when no model is trained yet."""
    newest = newest_predictions(project=link.project)
    out: list[Any] = []
    for task in tasks:
        clip_id = _clip_id(task)
        pred = newest.prediction(clip_id) if newest is not None and clip_id is not None else None
        out.append(pred if pred is not None else [])
    return out


def ml_model_version(*, link: LabelStudioLink) -> str:
    """The model version ``/setup`` reports: the newest usable model's, or :data:`UNTRAINED`."""
    mv = latest_model_version(project=link.project)
    if mv is None or mv.taxonomy_version_id != link.project.taxonomy_version_id:
        return UNTRAINED
    return model_version_name(mv.number)


# --- push after a retrain ---------------------------------------------------------------------------


def ml_predictions_push(
    *, link: LabelStudioLink, model_version: ModelVersion | None = None
) -> PredictionSummary | None:
    """Push the predictions of ``model_version`` (default: the newest) for every clip the link has
    pushed, scored in Refrain's order; None when no model is trained yet. Idempotent: a second
    push of one model version creates nothing in Label Studio (``ls_push_predictions``)."""
    newest = newest_predictions(project=link.project, model_version=model_version)
    if newest is None:
        return None
    if link.taxonomy_version_id not in (None, newest.model_version.taxonomy_version_id):
        raise MLPredictionsUnavailable(
            f"Label Studio holds the config of another taxonomy version than model "
            f"v{newest.model_version.number}'s: run `manage.py labelstudio update-config {link.pk}`"
        )
    pushed = LabelStudioTask.objects.filter(link=link).values_list("clip_id", flat=True)
    rows = [(c, newest.row_of[c]) for c in pushed if c in newest.row_of]
    return ls_push_predictions(
        link=link,
        model_version_id=newest.model_version.number,
        probs_by_clip={c: newest.probs[r] for c, r in rows},
        scores_by_clip={c: float(newest.scores[r]) for c, r in rows},
    )


# --- registering the connection in Label Studio --------------------------------------------------


def ml_backend_connect(*, link: LabelStudioLink) -> dict[str, Any]:
    """Connect the linked Label Studio project to Refrain as its ML backend (idempotent: an
    existing connection to this URL is updated, never doubled). Label Studio checks ``/health``
    and ``/setup`` before it accepts the connection; it also registers a webhook to
    ``<url>/webhook`` for all events, which is given the basic-auth header here (Label Studio sends
    it without one)."""
    if not refrain_base_url(link=link):
        raise Invalid(
            "Label Studio cannot reach Refrain: link with --refrain-url or set REFRAIN_PUBLIC_URL"
        )
    url = ml_backend_url(link=link)
    client = ls_client(base_url=link.base_url, api_key=link.api_key)
    pid = link.ls_project_id
    auth: dict[str, Any] = {
        "auth_method": "BASIC_AUTH",
        "basic_auth_user": ML_USER,
        "basic_auth_pass": ml_backend_password(link=link),
    }
    backends = ls_call("ML backend listing", lambda: list(client.ml.list(project=pid)))
    mine = [b for b in backends if (b.url or "").rstrip("/") == url]
    if mine:
        bid = int(mine[0].id)
        backend = ls_call(
            "ML backend update",
            # Label Studio re-validates (health, setup) on update, and its setup needs the project.
            lambda: client.ml.update(id=bid, project=pid, url=url, title=ML_TITLE, **auth),
        )
    else:
        backend = ls_call(
            "ML backend connection",
            lambda: client.ml.create(
                project=pid, url=url, title=ML_TITLE, is_interactive=False, **auth
            ),
        )
    hook_url = f"{url}/webhook"
    hooks = ls_call("webhook listing", lambda: list(client.webhooks.list(project=str(pid))))
    for hook in hooks:
        if (hook.url or "").rstrip("/") == hook_url:
            hid = int(hook.id)
            ls_call(
                "ML webhook update",
                lambda hid=hid: client.webhooks.update(
                    id=hid,
                    url=hook_url,
                    headers={"Authorization": ml_basic_auth_header(link=link)},
                ),
            )
    version = ml_model_version(link=link)
    # Label Studio sorts by the predictions of the project's model version only, and accepts one
    # only once it holds predictions of it (or an ML backend has it as title): set it when the
    # version's predictions are there (a push, or Label Studio's own "Retrieve predictions").
    if version != UNTRAINED and link.model_version != version:
        listed = ls_call("prediction listing", lambda: client.predictions.list(project=pid))
        if any(getattr(p, "model_version", None) == version for p in listed):
            ls_call(
                "model version update",
                lambda: client.projects.update(id=pid, model_version=version),
            )
            link.model_version = version
            link.save(update_fields=["model_version"])
    return {
        "ml_backend": int(backend.id),
        "state": getattr(backend, "state", None),
        "url": url,
        "model_version": version,
        "project_model_version_set": link.model_version == version,
    }
