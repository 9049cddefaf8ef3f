"""Forms of the server-rendered pages; they parse input, services decide."""

from __future__ import annotations

from typing import Any

from django import forms

from annotation.models import Membership, Project, ReviewDecision, TaxonomyVersion
from annotation.services.annotations import MAX_NOTE_LENGTH
from annotation.services.projects import MAX_OVERLAP


class VersionChoiceField(forms.ModelChoiceField):
    def label_from_instance(self, obj: TaxonomyVersion) -> str:
        return f"{obj.taxonomy.name} · v{obj.number} ({obj.n_nodes} nodes)"


class ProjectCreateForm(forms.Form):
    name = forms.CharField(max_length=200)
    description = forms.CharField(widget=forms.Textarea(attrs={"rows": 3}), required=False)
    taxonomy_version = VersionChoiceField(
        queryset=TaxonomyVersion.objects.select_related("taxonomy").order_by(
            "taxonomy__name", "-number"
        ),
        empty_label=None,
    )
    overlap = forms.IntegerField(
        min_value=1, max_value=MAX_OVERLAP, initial=1, help_text="Annotators per clip."
    )
    blind = forms.BooleanField(
        required=False, initial=True, help_text="Hide other labels and model guesses."
    )


class ProjectPolicyForm(forms.Form):
    overlap = forms.IntegerField(min_value=1, max_value=MAX_OVERLAP)
    blind = forms.BooleanField(required=False)
    lease_minutes = forms.IntegerField(min_value=1, max_value=24 * 60)
    taxonomy_version = VersionChoiceField(queryset=TaxonomyVersion.objects.none(), empty_label=None)

    def __init__(self, *args: Any, project: Project, **kwargs: Any) -> None:
        kwargs.setdefault(
            "initial",
            {
                "overlap": project.overlap,
                "blind": project.blind,
                "lease_minutes": project.lease_seconds // 60,
                "taxonomy_version": project.taxonomy_version_id,
            },
        )
        super().__init__(*args, **kwargs)
        self.fields["taxonomy_version"].queryset = TaxonomyVersion.objects.filter(  # type: ignore[attr-defined]
            taxonomy_id=project.taxonomy_version.taxonomy_id
        ).select_related("taxonomy")


class TaxonomyImportForm(forms.Form):
    name = forms.CharField(max_length=200, help_text="An existing name adds a new version.")
    file = forms.FileField(help_text="CSV, JSON, or one path per line.")


class InviteForm(forms.Form):
    user = forms.CharField(max_length=254, label="Username or email")
    role = forms.ChoiceField(choices=Membership.Role.choices, initial=Membership.Role.ANNOTATOR)


class RoleForm(forms.Form):
    membership = forms.IntegerField(widget=forms.HiddenInput)
    role = forms.ChoiceField(choices=[*Membership.Role.choices, ("remove", "Remove")])


class MultipleFileInput(forms.ClearableFileInput):
    allow_multiple_selected = True


class MultipleFileField(forms.FileField):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("widget", MultipleFileInput())
        super().__init__(*args, **kwargs)

    def clean(self, data: Any, initial: Any = None) -> Any:
        single = super().clean
        if isinstance(data, list | tuple):
            return [single(d, initial) for d in data]
        return [single(data, initial)]


class ClipUploadForm(forms.Form):
    files = MultipleFileField(help_text="wav, flac, ogg or mp3; each becomes a clip to label.")
    priority = forms.FloatField(initial=0.0, required=False)


class BucketImportForm(forms.Form):
    bucket = forms.CharField(
        max_length=1000,
        label="Bucket",
        help_text="s3://bucket/prefix: every audio object under it; a re-run adds only new ones.",
    )
    labels_from_folders = forms.BooleanField(
        required=False, label="Labels from folders (Rock/Punk/x.ogg is labelled Rock/Punk)"
    )


class ReviewForm(forms.Form):
    decision = forms.ChoiceField(choices=ReviewDecision.Decision.choices)
    annotation = forms.IntegerField(required=False)
    labels = forms.CharField(required=False, widget=forms.HiddenInput)
    note = forms.CharField(required=False, max_length=MAX_NOTE_LENGTH, widget=forms.Textarea)

    def label_list(self) -> list[str]:
        raw = self.cleaned_data.get("labels") or ""
        return [lab for lab in raw.split("\n") if lab.strip()]


class TokenCreateForm(forms.Form):
    name = forms.CharField(max_length=100, help_text="What the token is for, e.g. 'import script'.")
    expires_in_days = forms.IntegerField(
        min_value=1,
        max_value=36500,
        label="Expires in (days)",
        help_text="Leave empty for the default lifetime.",
        required=False,
    )
    manage_tokens = forms.BooleanField(
        required=False, label="May also create and revoke tokens (the 'tokens' scope)"
    )

    def __init__(self, *args: Any, default_days: int = 0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if default_days:
            self.fields["expires_in_days"].widget.attrs["placeholder"] = str(default_days)

    def clean_name(self) -> str:
        name: str = self.cleaned_data["name"]
        if "\x00" in name:
            raise forms.ValidationError("The name must not contain NUL characters.")
        return name
