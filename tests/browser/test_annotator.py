"""The annotator and review pages in a real browser: log in, play, search, pick by keyboard,
submit, get the next clip; review a clip. Saves screenshots of both pages: to a temporary folder, or
to ``$REFRAIN_SCREENSHOTS_DIR`` (``REFRAIN_SCREENSHOTS_DIR=docs/screenshots`` refreshes the docs)."""

from __future__ import annotations

from pathlib import Path

import pytest

from annotation.models import Annotation, Membership, ReviewDecision, Task
from annotation.services import tasks as queue
from tests.browser.pages import SHOTS, login
from tests.factories import (
    ClipFactory,
    MembershipFactory,
    ProjectFactory,
    UserFactory,
    make_taxonomy_version,
)

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


ROOTS = {
    "Rock": ["Punk", "Metal", "Indie", "Psychedelic", "Garage", "Post-Rock", "Grunge", "Shoegaze"],
    "Electronic": [
        "Techno",
        "House",
        "Ambient",
        "Drum & Bass",
        "Dubstep",
        "IDM",
        "Trance",
        "Electro",
    ],
    "Jazz": [
        "Bebop",
        "Free Jazz",
        "Fusion",
        "Swing",
        "Cool Jazz",
        "Hard Bop",
        "Modal",
        "Latin Jazz",
    ],
    "Folk": [
        "Celtic",
        "Americana",
        "Nordic",
        "Balkan",
        "Singer-Songwriter",
        "Bluegrass",
        "Klezmer",
        "Fado",
    ],
    "Classical": [
        "Baroque",
        "Romantic",
        "Modern",
        "Choral",
        "Opera",
        "Chamber",
        "Minimalism",
        "Early Music",
    ],
    "Hip-Hop": ["Boom Bap", "Trap", "Lo-Fi", "Conscious", "Drill", "Grime", "Jazz Rap", "Crunk"],
    "Pop": [
        "Synth-Pop",
        "Dream Pop",
        "K-Pop",
        "Power Pop",
        "Chamber Pop",
        "Art Pop",
        "Europop",
        "Teen Pop",
    ],
    "Soul & R&B": [
        "Funk",
        "Motown",
        "Neo-Soul",
        "Gospel",
        "Disco",
        "Quiet Storm",
        "Northern Soul",
        "Doo-Wop",
    ],
    "World": ["Afrobeat", "Highlife", "Bossa Nova", "Samba", "Cumbia", "Reggae", "Dub", "Qawwali"],
    "Blues": [
        "Delta",
        "Chicago",
        "Texas",
        "Piedmont",
        "Jump",
        "Electric",
        "Hill Country",
        "Soul Blues",
    ],
    "Country": [
        "Honky Tonk",
        "Outlaw",
        "Bakersfield",
        "Western Swing",
        "Alt-Country",
        "Nashville",
        "Cajun",
        "Zydeco",
    ],
    "Experimental": [
        "Noise",
        "Musique Concrète",
        "Drone",
        "Field Recording",
        "Sound Art",
        "Free Improvisation",
        "Glitch",
        "Plunderphonics",
    ],
}
ERAS = ["1950s", "1960s", "1970s", "1980s", "1990s", "2000s"]


def write_tune(path: Path, *, seed: int, seconds: float = 8.0, sr: int = 22050) -> Path:
    """A short synthetic tune (plucked notes with harmonics over a noise hi-hat), so the
    waveform and spectrogram look like music rather than a test tone."""
    import numpy as np
    import soundfile as sf

    rng = np.random.default_rng(seed)
    y = np.zeros(int(seconds * sr), dtype=np.float64)
    beat = 60 / rng.uniform(96, 132)
    scale = [0, 2, 3, 5, 7, 8, 10, 12]
    t0 = 0.0
    while t0 < seconds - beat:
        f = 110 * 2 ** (scale[rng.integers(len(scale))] / 12 + rng.integers(0, 3))
        n = int(beat * sr * rng.choice([1, 2]))
        t = np.arange(n) / sr
        env = np.exp(-t * rng.uniform(2.5, 6))
        note = sum(np.sin(2 * np.pi * f * k * t) / k**1.3 for k in range(1, 7)) * env
        a = int(t0 * sr)
        y[a : a + n] += 0.25 * note[: len(y) - a]
        hat = int(0.04 * sr)
        y[a : a + hat] += 0.08 * rng.standard_normal(hat) * np.exp(-np.arange(hat) / (0.01 * sr))
        t0 += n / sr
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), (y / np.abs(y).max() * 0.8).astype(np.float32), sr)
    return path


def _deep_taxonomy():
    """12 roots × 8 styles × 6 era leaves = 684 nodes."""
    paths = [f"{r}/{s}/{s} ({e})" for r, styles in ROOTS.items() for s in styles for e in ERAS]
    return make_taxonomy_version(paths, name="Browser test genres")


@pytest.fixture
def scene(tmp_path, settings, fast_passwords):
    settings.MEDIA_ROOT = tmp_path / "media"
    project = ProjectFactory(name="Folk & Friends", taxonomy_version=_deep_taxonomy(), overlap=1)
    people = {}
    for name, role in [
        ("ana", "annotator"),
        ("ben", "annotator"),
        ("cleo", "annotator"),
        ("rev", "reviewer"),
    ]:
        people[name] = MembershipFactory(
            project=project, user=UserFactory(username=name), role=Membership.Role(role)
        ).user
    clips = []
    for i in range(4):
        wav = write_tune(tmp_path / f"tune{i}.wav", seed=i)
        clips.append(ClipFactory(project=project, storage_key=str(wav), duration_s=8.0))
    # As an import would have: the waveforms and spectrograms a cpu worker makes.
    from annotation.services.visuals import clips_visuals_make

    clips_visuals_make(clip_ids=[c.pk for c in clips])
    # The first clip was labelled by two people who disagree: a review task is waiting.
    disputed = Task.objects.create(project=project, clip=clips[0], overlap=2, priority=10)
    for who, labels in [("ben", ["Rock/Punk"]), ("cleo", ["Rock/Garage", "Folk/Celtic"])]:
        queue.task_next_for_annotator(project_id=project.pk, user=people[who])
        queue.annotation_submit(
            task_id=disputed.pk, user=people[who], labels=labels, time_spent_ms=41000
        )
    for clip in clips[1:]:
        Task.objects.create(project=project, clip=clip, reason="active_learning:uncertainty")
    return {"project": project, "clips": clips, **people}


def test_annotate_then_review(browser, live_server, scene):
    base = live_server.url
    project = scene["project"]
    SHOTS.mkdir(parents=True, exist_ok=True)

    page = browser.new_page(viewport={"width": 1440, "height": 960})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    login(page, base, "ana")
    page.goto(f"{base}/p/{project.slug}/annotate/")
    page.wait_for_function("document.body.dataset.taskId")
    first_task = int(page.evaluate("document.body.dataset.taskId"))
    assert page.text_content("#clip-title").startswith("Clip ")
    page.wait_for_function(
        "document.getElementById('prefetch-state').textContent === 'Next clip ready'"
    )

    # Play with the keyboard; the audio element advances.
    page.keyboard.press("Space")
    page.wait_for_function("document.getElementById('audio').currentTime > 0.3")
    assert page.get_attribute("#play", "data-state") == "playing"

    # Two genres from different branches, by keyboard only.
    page.keyboard.press("/")
    page.keyboard.type("punk 1970")
    page.wait_for_selector("#results .result.hl")
    assert "Punk (1970s)" in page.text_content("#results .result.hl")
    page.keyboard.press("Enter")
    page.keyboard.type("techno")
    page.wait_for_selector("#results .result.hl")
    page.keyboard.press("Enter")
    chips = page.eval_on_selector_all("#chips .chip", "els => els.map(e => e.dataset.key)")
    assert chips == ["Rock/Punk/Punk (1970s)", "Electronic/Techno"]
    implied = page.eval_on_selector_all("#implied .chip", "els => els.map(e => e.dataset.key)")
    assert set(implied) == {"Rock", "Rock/Punk", "Electronic"}
    page.keyboard.press("Escape")
    page.fill("#note", "Distorted guitars, but the drum machine is pure Detroit.")
    page.wait_for_timeout(700)
    page.screenshot(path=str(SHOTS / "annotator.png"))

    page.keyboard.press("Control+Enter")
    page.wait_for_function("document.body.dataset.submitted === '1'")
    page.wait_for_function(
        f"document.body.dataset.taskId && document.body.dataset.taskId !== '{first_task}'"
    )
    ann = Annotation.objects.get(user=scene["ana"])
    assert ann.task_id == first_task and ann.time_spent_ms and ann.time_spent_ms > 0
    assert sorted(ann.labels.filter(explicit=True).values_list("node__key", flat=True)) == [
        "Electronic/Techno",
        "Rock/Punk/Punk (1970s)",
    ]
    # Recent choices are offered for the next clip.
    recent = page.eval_on_selector_all("#recent .chip", "els => els.map(e => e.dataset.key)")
    assert "Electronic/Techno" in recent
    assert not errors, errors
    page.close()

    # The reviewer compares the two disputed annotations and accepts one.
    page = browser.new_page(viewport={"width": 1440, "height": 1100})
    page.on("pageerror", lambda e: errors.append(str(e)))
    login(page, base, "rev")
    page.goto(f"{base}/p/{project.slug}/review/")
    page.click("#review-next")
    page.wait_for_selector(".ann")
    assert page.locator(".ann").count() == 2
    assert {"ben", "cleo"} <= set(
        page.eval_on_selector_all(".ann .who", "els => els.map(e => e.textContent)")
    )
    page.click(".ann >> nth=1 >> .start-from")
    page.wait_for_timeout(500)
    page.screenshot(path=str(SHOTS / "review.png"), full_page=True)
    page.click(".ann >> nth=0 >> button.accept")
    page.wait_for_url(f"{base}/p/{project.slug}/review/")
    decision = ReviewDecision.objects.get()
    assert decision.decision == "accept" and decision.reviewer == scene["rev"]
    assert not Task.objects.filter(kind="review", status="open").exists()
    assert not errors, errors
