"""REST endpoints for a project's model versions: list them with their metrics, train a new one.

Reviewers and admins read; admins start training (on the ``gpu`` queue). Mounted on the one API in
``refrain/api.py``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from django.http import HttpRequest
from ninja import Field, P, PathEx, QueryEx, Router, Schema, Status

from active_learning.models import ModelVersion
from active_learning.selectors import model_versions_for_page
from active_learning.services.training import model_train_start
from annotation import permissions as perm
from annotation.models import Membership

router = Router(tags=["models"])
Role = Membership.Role
MAX_PAGE = 500


class ModelVersionOut(Schema):
    id: int
    number: int
    kind: str
    status: str
    trigger: str
    feature_backend: str | None = Field(None, description="backend of the features it trained on")
    n_labelled: int
    n_unlabelled: int
    n_folds: int
    seed: int
    device: str
    hyperparameters: dict[str, Any]
    metrics: dict[str, Any] = Field(description="out-of-sample (K-fold) metrics")
    error: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class TrainIn(Schema):
    kind: Literal["hierarchical", "flat", "cnn"] | None = Field(
        None, description="default: the project's model kind"
    )
    n_folds: int = Field(5, ge=2, le=20)
    seed: int = Field(0, ge=0, le=2**31 - 1)


def _user(request: HttpRequest) -> Any:
    return request.auth  # type: ignore[attr-defined]


def _out(mv: ModelVersion) -> dict[str, Any]:
    return {
        "id": mv.pk,
        "number": mv.number,
        "kind": mv.kind,
        "status": mv.status,
        "trigger": mv.trigger,
        "feature_backend": mv.feature_set.backend if mv.feature_set else None,
        "n_labelled": mv.n_labelled,
        "n_unlabelled": mv.n_unlabelled,
        "n_folds": mv.n_folds,
        "seed": mv.seed,
        "device": mv.device,
        "hyperparameters": mv.hyperparameters,
        "metrics": mv.metrics,
        "error": mv.error,
        "created_at": mv.created_at,
        "started_at": mv.started_at,
        "finished_at": mv.finished_at,
    }


@router.get(
    "/projects/{project_id}/models", response=list[ModelVersionOut], summary="List model versions"
)
def list_models(
    request: HttpRequest,
    project_id: PathEx[int, P(ge=1, le=2**63 - 1)],
    limit: QueryEx[int, P(ge=1, le=MAX_PAGE)] = 50,
) -> list[dict[str, Any]]:
    """The project's model versions, newest first."""
    project = perm.require_role(
        project_id=project_id, user=_user(request), role=Role.REVIEWER
    ).project
    return [_out(mv) for mv in model_versions_for_page(project=project)[:limit]]


@router.post(
    "/projects/{project_id}/models", response={202: ModelVersionOut}, summary="Train a model"
)
def train_model(
    request: HttpRequest,
    project_id: PathEx[int, P(ge=1, le=2**63 - 1)],
    payload: TrainIn | None = None,
) -> Any:
    """Queue a new version: K-fold out-of-sample training on a worker. 202: poll the list."""
    project = perm.require_role(project_id=project_id, user=_user(request), role=Role.ADMIN).project
    body = payload or TrainIn()  # an empty body: every default
    mv = model_train_start(
        project=project,
        kind=body.kind or project.loop_policy.model_kind,
        n_folds=body.n_folds,
        seed=body.seed,
    )
    return Status(202, _out(mv))
