"""Build the demo project and run the loop through a real worker; optionally serve the UI.

Idempotent: a second run reuses the project (its clips are found as duplicates).
"""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
from celery import current_app
from celery.result import AsyncResult
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser

from active_learning.models import JobStatus, ModelVersion
from annotation.demo.audio import SR, STYLES, render
from annotation.models import Clip, Membership, Project, Task
from annotation.selectors import current_labels, taxonomy_index_cached
from annotation.services.enqueue import Manual, task_enqueue
from annotation.services.tasks import annotation_submit, task_next_for_annotator
from annotation.services.taxonomies import taxonomy_import
from quality.models import AnnotatorQuality, LabelIssue
from refrain.localworker import local_worker

DEMO_SLUG = "demo"
DEMO_PASSWORD = "refrain-demo"
NOISE_RATE = 0.08
# The demo's annotators answer the routed second opinions this often right (else a sibling).
SECOND_OPINION_ACCURACY = 0.85
UNLABELLED_SHARE = 0.2
# A few clips carry a second genre from another branch (multi-label), as real catalogues do.
SECOND_GENRE = {"Folk/Celtic": "Rock/Punk", "Jazz/Swing": "Electronic/House"}


def _brief(value: Any) -> str:
    """One line for a step's JSON summary."""
    if not isinstance(value, dict):
        return str(value)
    if "imported" in value:
        return (
            f"{value['imported']} imported, {value['duplicate']} duplicate, "
            f"{value['failed']} failed, {value['labelled']} labelled"
        )
    if "backend" in value:
        return (
            f"{value['backend']} ({value['dim']}-d): {value['done']} done, {value['failed']} failed, "
            f"{value['left']} left [{value['status']}]"
        )
    if "answered" in value:
        still = value["planted_still_wrong"]
        return (
            f"{value['answered']} relabel tasks answered by annotator1..3 (simulated, "
            f"{SECOND_OPINION_ACCURACY:.0%} right); issues {value['issues']}; planted errors "
            f"still wrong {still['still_wrong']} of {still['planted']}, right labels made wrong "
            f"{still['clean_now_wrong']} of {still['clean']}; annotator quality "
            f"{value.get('annotator_quality', {})}"
        )
    if "steps_done" in value:
        r = value.get("results", {})
        det, route, acq = r.get("detect", {}), r.get("route", {}), r.get("acquire", {})
        return (
            f"{' -> '.join(value['steps_done'])} [{value['status']}]: "
            f"{det.get('issues', 0)} issues {det.get('by_type', {})}, "
            f"{route.get('routed', 0)} routed, {acq.get('created_label', 0)} label + "
            f"{acq.get('created_relabel', 0)} relabel tasks acquired"
        )
    return json.dumps(value)[:300]


def _demo_tree() -> list[dict[str, Any]]:
    tops: dict[str, list[str]] = {}
    for key in STYLES:
        top, leaf = key.split("/")
        tops.setdefault(top, []).append(leaf)
    return [
        {
            "name": top,
            "key": top,
            "children": [{"name": leaf, "key": f"{top}/{leaf}"} for leaf in leaves],
        }
        for top, leaves in tops.items()
    ]


def _sibling_of(key: str, rng: np.random.Generator) -> str:
    top = key.split("/")[0]
    sibs = [k for k in STYLES if k.startswith(top + "/") and k != key]
    return str(rng.choice(sibs)) if sibs else key


def write_demo_audio(root: Path, *, n_clips: int, seed: int = 0) -> Path:
    """Render ``n_clips`` clips plus three broken files; return the manifest path."""
    rng = np.random.default_rng(seed)
    audio = root / "audio"
    audio.mkdir(parents=True, exist_ok=True)
    manifest = root / "manifest.csv"
    leaves = list(STYLES)
    rows = []
    for i in range(n_clips):
        truth = [leaves[i % len(leaves)]]
        if truth[0] in SECOND_GENRE and rng.random() < 0.3:
            truth.append(SECOND_GENRE[truth[0]])
        path = audio / f"demo{i:04d}.ogg"
        if not path.exists():
            sf.write(str(path), render(truth[0], seconds=5.0, rng=rng), SR, format="OGG")
        given = list(truth)
        noisy = rng.random() < NOISE_RATE
        if noisy:
            given[0] = _sibling_of(given[0], rng)
        unlabelled = rng.random() < UNLABELLED_SHARE
        rows.append(
            {
                "path": f"audio/{path.name}",
                "labels": "" if unlabelled else "|".join(given),
                "clip_id": f"demo{i:04d}",
                "true_labels": "|".join(truth),
                "planted_noise": int(noisy and not unlabelled),
            }
        )
    # Broken on purpose: the import must fail these with a reason and go on.
    (audio / "broken_empty.wav").write_bytes(b"")
    (audio / "broken_text.mp3").write_text("this is not audio\n")
    good = (audio / "demo0000.ogg").read_bytes()
    (audio / "broken_truncated.ogg").write_bytes(good[: len(good) // 3])
    for name in ("broken_empty.wav", "broken_text.mp3", "broken_truncated.ogg"):
        rows.append(
            {
                "path": f"audio/{name}",
                "labels": "",
                "clip_id": name,
                "true_labels": "",
                "planted_noise": 0,
            }
        )
    with manifest.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return manifest


class Command(BaseCommand):
    help = (
        "Create the demo project with generated audio, run the loop on a real worker, serve the UI."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--clips", type=int, default=300)
        parser.add_argument("--serve", action="store_true", help="Serve the UI at 127.0.0.1:8000")
        parser.add_argument("--port", default="127.0.0.1:8000")
        parser.add_argument("--timeout", type=int, default=900, help="Seconds to wait per step")

    def handle(self, *args: object, **opts: Any) -> None:
        t_start = time.perf_counter()
        root = Path(settings.VAR_DIR) / "demo"
        self.stdout.write(f"demo: rendering {opts['clips']} clips into {root} …")
        manifest = write_demo_audio(root, n_clips=opts["clips"])

        tax = taxonomy_import(
            name="Refrain demo genres",
            data=json.dumps(_demo_tree(), indent=1),
            filename="demo_genres.json",
        )
        self.stdout.write(f"demo: taxonomy {tax.summary()}")
        User = get_user_model()
        admin, created = User.objects.get_or_create(
            username="admin", defaults={"is_staff": True, "is_superuser": True}
        )
        if created:
            admin.set_password(DEMO_PASSWORD)
            admin.save()
        project, created = Project.objects.get_or_create(
            slug=DEMO_SLUG,
            defaults={
                "name": "Refrain demo",
                "description": "Generated audio over an 11-leaf genre tree, with 8 % planted sibling swaps.",
                "taxonomy_version": tax.version,
                "overlap": 1,
                "created_by": admin,
            },
        )
        if created:
            # The loop's policy row comes with the project (active_learning's listener).
            project.loop_policy.relabel_budget = 20
            project.loop_policy.save(update_fields=["relabel_budget"])
        people = [("admin", Membership.Role.ADMIN), ("reviewer", Membership.Role.REVIEWER)] + [
            (f"annotator{i}", Membership.Role.ANNOTATOR) for i in (1, 2, 3)
        ]
        for username, role in people:
            user, made = User.objects.get_or_create(username=username)
            if made:
                user.set_password(DEMO_PASSWORD)
                user.save()
            Membership.objects.get_or_create(project=project, user=user, defaults={"role": role})

        steps: list[tuple[str, str, dict[str, Any]]] = [
            ("import clips", "annotation.tasks.import_clips", {"manifest": str(manifest)}),
        ]
        # Later stages of the loop plug in here as they exist (registered Celery tasks).
        optional = [
            ("extract features", "active_learning.tasks.extract_features_for_project", {}),
            # One cycle: retrain with 5-fold CV -> detect label issues -> route -> acquire.
            ("relabel cycle", "quality.tasks.run_quality_cycle", {}),
        ]
        log = root / "worker.log"
        self.stdout.write(
            f"demo: starting a Celery worker (broker {settings.CELERY_BROKER_URL}, log {log})"
        )
        results: dict[str, Any] = {}
        with local_worker(logfile=log, name="demo"):
            current_app.loader.import_default_modules()
            for label, task_name, kwargs in steps + optional:
                if task_name not in current_app.tasks:
                    self.stdout.write(f"demo: {label}: not available in this build, skipped")
                    continue
                t0 = time.perf_counter()
                res: AsyncResult = current_app.send_task(
                    task_name, args=[project.id], kwargs=kwargs
                )
                try:
                    value = res.get(timeout=opts["timeout"], interval=0.5)
                except Exception as exc:
                    raise CommandError(
                        f"demo step {label!r} failed on the worker: {exc!r}; see {log}"
                    ) from exc
                results[label] = value
                self.stdout.write(
                    f"demo: {label} on the worker in {time.perf_counter() - t0:.1f} s: "
                    f"{_brief(value)}"
                )

            labelled = set(
                project.clips.filter(annotations__isnull=False).values_list("id", flat=True)
            )
            queued = set(
                project.tasks.filter(kind=Task.Kind.LABEL, status=Task.Status.OPEN).values_list(
                    "clip_id", flat=True
                )
            )
            to_label = (
                project.clips.filter(status=Clip.Status.READY)
                .exclude(id__in=labelled)
                .exclude(id__in=queued)
            )
            created_tasks = len(
                task_enqueue(
                    project=project,
                    sources=Manual.for_clips(
                        to_label.values_list("id", flat=True), reason="import:unlabelled"
                    ),
                ).created
            )
            if "relabel cycle" in results:
                t0 = time.perf_counter()
                second = self._second_opinions(project, timeout=opts["timeout"])
                results["second opinions"] = second
                self.stdout.write(
                    f"demo: second opinions in {time.perf_counter() - t0:.1f} s: {_brief(second)}"
                )
            self._summary(project, results, created_tasks, time.perf_counter() - t_start)
            if opts["serve"]:
                self.stdout.write(
                    f"demo: serving http://{opts['port']}/  (log in as admin / {DEMO_PASSWORD}; "
                    f"annotators annotator1..3, reviewer; same password). Ctrl-C stops."
                )
                call_command("runserver", opts["port"], "--noreload")

    def _second_opinions(self, project: Project, *, timeout: float) -> dict[str, Any]:
        """The demo's annotators answer the routed relabel tasks through the work queue (blind:
        right with SECOND_OPINION_ACCURACY, else a sibling); the worker's consensus hook closes the
        issues. Returns what happened to them, and to the planted errors."""

        rng = np.random.default_rng(1)
        User = get_user_model()
        answered: list[int] = []
        working = [User.objects.get(username=f"annotator{i}") for i in (1, 2, 3)]
        while working:  # in turns, as a team works through the queue
            for user in list(working):
                held = task_next_for_annotator(
                    project_id=project.id, user=user, kinds=[Task.Kind.RELABEL]
                )
                if held is None:
                    working.remove(user)
                    continue
                truth = [t for t in held.task.clip.metadata.get("true_labels", "").split("|") if t]
                labels = list(truth)
                if labels and rng.random() > SECOND_OPINION_ACCURACY:
                    labels[0] = _sibling_of(labels[0], rng)
                annotation_submit(
                    task_id=held.task_id,
                    user=user,
                    labels=labels,
                    idempotency_key=f"demo-second-opinion:{held.task_id}:{user.pk}",
                )
                answered.append(held.task_id)
        issues = LabelIssue.objects.filter(project=project, relabel_task_id__in=answered)
        deadline = time.monotonic() + timeout
        while issues.filter(status=LabelIssue.Status.ROUTED).exists():
            if time.monotonic() > deadline:
                raise CommandError("the worker did not close the answered issues in time")
            time.sleep(0.5)
        by_status = {s: issues.filter(status=s).count() for s in LabelIssue.Status.values}
        # The authoritative pass (as a cycle runs it) estimates each annotator's quality too.
        current_app.send_task("quality.tasks.consensus_project", args=[project.id]).get(
            timeout=timeout, interval=0.5
        )
        quality = {
            name: round(q, 2)
            for name, q in AnnotatorQuality.objects.filter(project=project, quality__isnull=False)
            .order_by("user__username")
            .values_list("user__username", "quality")
        }
        return {
            "answered": len(answered),
            "issues": {k: v for k, v in by_status.items() if v},
            "planted_still_wrong": self._planted_still_wrong(project),
            "annotator_quality": quality,
        }

    def _planted_still_wrong(self, project: Project) -> dict[str, int]:
        """Labelled clips whose current label (the consensus where two people labelled) misses the
        truth: among the planted errors, and among the clips that were labelled right."""

        clips = {c.id: c.metadata for c in project.clips.all()}
        index = taxonomy_index_cached(project.taxonomy_version)
        current = current_labels(project=project)
        out = {"planted": 0, "still_wrong": 0, "clean": 0, "clean_now_wrong": 0}
        for clip_id, node_ids in zip(current.clip_ids, current.node_ids, strict=True):
            meta = clips[clip_id]
            truth = set(meta.get("true_labels", "").split("|"))
            wrong = not truth <= {index.by_id[n].key for n in node_ids if n in index.by_id}
            if str(meta.get("planted_noise", "0")) == "1":
                out["planted"] += 1
                out["still_wrong"] += wrong
            else:
                out["clean"] += 1
                out["clean_now_wrong"] += wrong
        return out

    def _loop_summary(self, project: Project) -> None:
        """What the loop found, checked against the noise the demo planted."""

        mv = (
            ModelVersion.objects.filter(project=project, status=JobStatus.DONE)
            .order_by("-number")
            .first()
        )
        if mv is not None:
            m = mv.metrics
            self.stdout.write(
                f"  model          v{mv.number} ({mv.kind}, {mv.n_labelled} labelled, {mv.n_folds}-fold "
                f"out-of-sample): hierarchical F1 {m.get('hier_f1', float('nan')):.3f}, "
                f"leaf accuracy {m.get('leaf_accuracy', float('nan')):.3f}, "
                f"top-level accuracy {m.get('top_level_accuracy', float('nan')):.3f}"
            )
        issues = list(LabelIssue.objects.filter(project=project))
        if not issues:
            return
        planted = {
            c.id for c in project.clips.all() if str(c.metadata.get("planted_noise", "0")) == "1"
        }
        n_labelled = project.clips.filter(annotations__isnull=False).distinct().count()
        routed = [i for i in issues if i.relabel_task_id is not None]
        hits = sum(i.clip_id in planted for i in routed)
        self.stdout.write(
            f"  label issues   {len(issues)} found, {len(routed)} routed for a blind relabel; "
            f"{hits} of the routed are among the {len(planted)} planted errors "
            f"(precision {hits / max(1, len(routed)):.2f}; random routing: "
            f"{len(planted) / max(1, n_labelled):.2f})"
        )
        acquired = project.tasks.filter(reason__startswith="active_learning:").count()
        self.stdout.write(
            f"  acquisition    {acquired} tasks from {project.loop_policy.acquisition_strategy}"
        )

    def _summary(
        self, project: Project, results: dict[str, Any], created_tasks: int, elapsed: float
    ) -> None:
        clips = project.clips
        ready = clips.filter(status=Clip.Status.READY).count()
        failed = list(clips.filter(status=Clip.Status.FAILED).values_list("original_name", "error"))
        labelled = clips.filter(annotations__isnull=False).distinct().count()
        self.stdout.write("")
        self.stdout.write("=" * 72)
        self.stdout.write(f"Refrain demo summary ({elapsed:.1f} s)")
        self.stdout.write(
            f"  project        {project.name} [{project.slug}], taxonomy {project.taxonomy_version}"
        )
        self.stdout.write(
            f"  clips          {ready} ready, {len(failed)} failed, {labelled} with labels"
        )
        for name, err in failed:
            self.stdout.write(f"    failed       {name}: {err}")
        self.stdout.write(
            f"  label tasks    {project.tasks.filter(status=Task.Status.OPEN).count()} open ({created_tasks} new)"
        )
        for label, value in results.items():
            self.stdout.write(f"  {label:<14} {_brief(value)}")
        self._loop_summary(project)
        self.stdout.write("=" * 72)
