"""The project settings page's Label Studio form."""

from __future__ import annotations

from django import forms


class LinkForm(forms.Form):
    url = forms.URLField(
        assume_scheme="http",
        label="Label Studio address",
        max_length=500,
        help_text="As Refrain's server reaches it, e.g. http://labelstudio.example:8080",
    )
    token = forms.CharField(
        label="Access token",
        max_length=500,
        widget=forms.PasswordInput(render_value=False),
        help_text="An LS admin's legacy token (Account & Settings). Stored, never shown again.",
    )
    ls_project = forms.IntegerField(
        label="Existing LS project id",
        required=False,
        min_value=1,
        help_text="Empty: a new LS project. Its labelling config is replaced by the taxonomy's.",
    )
    refrain_url = forms.URLField(
        assume_scheme="https",
        label="Refrain's address for Label Studio",
        required=False,
        max_length=500,
        help_text="How LS and its annotators' browsers reach Refrain (audio, webhook). "
        "Empty: REFRAIN_PUBLIC_URL; with neither, no webhook (pulls only).",
    )


ACTIONS = {
    "push": "Push the clips LS does not hold yet",
    "pull": "Pull annotations now",
    "update-config": "Update LS's labelling config to the project's taxonomy version",
    "second-opinions": "Ask LS for the routed relabels it is not waiting on",
}
