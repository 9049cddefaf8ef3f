"""The loop settings form of a project (its admins' page; the service validates)."""

from __future__ import annotations

from typing import Any

from django import forms

from active_learning.models import LoopPolicy
from annotation.models import Project
from quality.services.loop import LoopSettings, loop_settings


class LoopSettingsForm(forms.Form):
    embedding_backend = forms.CharField(
        max_length=60,
        help_text="logmel-stats (fast, no weights), musicnn-msd, musicnn-mtt, structure-stats, "
        "several joined by + (logmel-stats+musicnn-msd+structure-stats is the strongest on the "
        "benchmark corpus), or the path of your own model (.pt2 torch.export or TorchScript). "
        "The next cycle extracts what is missing.",
    )
    model_kind = forms.ChoiceField(choices=LoopPolicy.ModelKind.choices)
    retrain_every = forms.IntegerField(
        min_value=0, label="Run a cycle after this many new annotations (0 = never)"
    )
    schedule = forms.CharField(
        required=False,
        max_length=100,
        label="Also run it on a schedule",
        help_text='Five crontab fields ("0 3 * * *": every night at 03:00), a number of '
        "seconds, or empty for none.",
    )
    relabel_budget = forms.IntegerField(
        min_value=0, label="Suspect clips routed for a blind relabel per cycle"
    )
    acquisition_strategy = forms.ChoiceField(choices=LoopPolicy.AcquisitionStrategy.choices)
    acquisition_batch_size = forms.IntegerField(min_value=1, label="Clips acquired per cycle")
    acquisition_relabel_share = forms.FloatField(
        min_value=0.0,
        max_value=1.0,
        label="Largest share of an acquisition batch that may be relabels",
    )

    def __init__(self, *args: Any, project: Project, **kwargs: Any) -> None:
        kwargs.setdefault("initial", vars(loop_settings(project)))
        super().__init__(*args, **kwargs)

    def settings(self) -> LoopSettings:
        return LoopSettings(**{f: self.cleaned_data[f] for f in LoopSettings.__dataclass_fields__})
