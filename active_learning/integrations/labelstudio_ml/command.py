"""``manage.py labelstudio push-predictions`` and ``ml-backend``: registered into annotation's
``labelstudio`` command (``command_action_register``) from ``ActiveLearningConfig.ready``."""

from __future__ import annotations

import argparse
from typing import Any

from django.core.management.base import CommandError

from active_learning.integrations.labelstudio_ml.services import (
    ML_USER,
    ml_backend_connect,
    ml_backend_password,
    ml_backend_url,
    ml_predictions_push,
)
from active_learning.models import ModelVersion
from annotation.integrations.labelstudio.command import command_action_register, link_get


def _push_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("link", type=int, help="link id")
    parser.add_argument(
        "--model-version", type=int, help="the model version number (default: the newest done)"
    )


def _push(options: dict[str, Any]) -> dict[str, Any]:
    link = link_get(options["link"])
    mv = None
    if options.get("model_version") is not None:
        mv = ModelVersion.objects.filter(
            project=link.project, number=options["model_version"]
        ).first()
        if mv is None:
            raise CommandError(
                f"project {link.project.slug} has no model v{options['model_version']}"
            )
    summary = ml_predictions_push(link=link, model_version=mv)
    if summary is None:
        raise CommandError(f"project {link.project.slug} has no trained model yet")
    return {
        "model_version": summary.model_version,
        "created": summary.created,
        "already": summary.already,
        "not_pushed": len(summary.not_pushed),
    }


def _ml_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("link", type=int, help="link id")
    parser.add_argument(
        "--connect",
        action="store_true",
        help="register the connection in the Label Studio project (idempotent)",
    )


def _ml(options: dict[str, Any]) -> dict[str, Any]:
    link = link_get(options["link"])
    out: dict[str, Any] = {
        "url": ml_backend_url(link=link),
        "auth_method": "BASIC_AUTH",
        "user": ML_USER,
        "password": ml_backend_password(link=link),
    }
    if options.get("connect"):
        out["connected"] = ml_backend_connect(link=link)
    return out


def register() -> None:
    command_action_register(
        "push-predictions",
        help="push the newest model's predictions (scored in Refrain's order) to LS",
        add_arguments=_push_arguments,
        handle=_push,
    )
    command_action_register(
        "ml-backend",
        help="print the ML backend URL and credentials for LS; --connect registers it",
        add_arguments=_ml_arguments,
        handle=_ml,
    )
