"""Label Studio sync at 10k tasks: Refrain's bulk push and pull against the SDK's one-call-per-item
loop, on the same Label Studio server.

    scripts/labelstudio_service.sh install && scripts/labelstudio_service.sh start
    eval "$(scripts/labelstudio_service.sh env)"
    .venv/bin/python -m bench.labelstudio_sync [--n 10000] [--naive 500]

A fresh PostgreSQL database (dropped at the end) holds a project on the FMA genre tree
(``../shared/data/fma/genres.csv``, K = 163 nodes) with ``--n`` clip rows and a trained-model
artifact of random hierarchy-consistent probabilities. Measured:

* push tasks: ``ls_push_tasks`` (chunks of 500) vs ``client.tasks.create`` per task;
* push predictions: ``ml_predictions_push`` (Refrain's order as score, full paths; chunks of 500,
  after one listing of the project's predictions) vs ``client.predictions.create`` per task; and
  the same model version pushed again (idempotent: nothing created);
* pull: ``ls_pull_annotations`` of ``--n`` annotated tasks, first (every annotation stored in
  Refrain) and again with nothing changed (incremental), vs ``client.annotations.list`` per task
  (the loop only fetches; it stores nothing).

The one-call-per-item loops are timed on ``--naive`` items and extrapolated linearly to ``--n``
(said so in the output and the JSON). The annotated tasks for the pull are imported into a second
Label Studio project in bulk (tasks with their annotations), mapped to the same clips by
``refrain_clip_id``; its link row is written directly, since ``link`` keeps one Label Studio project
per Refrain project and server. Writes ``bench/results/labelstudio_sync.json``.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from typing import Any

from bench import FMA, RESULTS, write_json

PG_ADMIN = "postgres://postgres@127.0.0.1:5432/postgres"
PG_DB = "refrain_bench_lssync"
#: The issue's figures, measured by hand on a real Label Studio 1.23.2 before this work.
BY_HAND = {
    "push_tasks_s": 4.9,
    "push_tasks_naive_s": 750.0,
    "push_predictions_s": 76.0,
    "pull_first_s": 166.0,
    "pull_again_s": 121.0,
}


def psql(sql: str) -> None:
    subprocess.run(["psql", PG_ADMIN, "-q", "-c", sql], check=True, capture_output=True)


def timed(fn: Any) -> tuple[Any, float]:
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def run(
    n: int, n_naive: int, url: str, token: str, var_dir: str, parts: set[str]
) -> dict[str, Any]:
    os.environ["DATABASE_URL"] = f"postgres://postgres@127.0.0.1:5432/{PG_DB}"
    os.environ["REFRAIN_VAR_DIR"] = var_dir
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "refrain.settings")
    os.environ.setdefault("REFRAIN_ENV", "development")  # a benchmark, not a deployment
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    import django

    django.setup()
    import hashlib

    import numpy as np
    from django.core.management import call_command

    from active_learning.integrations.labelstudio_ml.services import ml_predictions_push
    from active_learning.models import JobStatus, ModelVersion
    from annotation.integrations.labelstudio.convert import label_config_from_taxonomy
    from annotation.integrations.labelstudio.services import (
        PUSH_CHUNK,
        clip_audio_url,
        ls_client,
        ls_project_link,
        ls_pull_annotations,
        ls_push_tasks,
    )
    from annotation.models import Clip, LabelStudioLink, LabelStudioTask, Project
    from annotation.selectors import taxonomy_index_cached
    from annotation.services.taxonomies import taxonomy_import
    from taxonomy.hierarchy import Hierarchy

    call_command("migrate", verbosity=0)
    tax = taxonomy_import(name="FMA genres", data=FMA.read_bytes(), filename=FMA.name)
    project = Project.objects.create(
        name="Bench LS sync", slug="bench-ls-sync", taxonomy_version=tax.version, overlap=1
    )
    index = taxonomy_index_cached(tax.version)
    hier = Hierarchy(index.parents_array)
    Clip.objects.bulk_create(
        Clip(
            project=project,
            external_id=f"clip-{i}",
            storage_key=f"/nonexistent/clip-{i}.ogg",
            original_name=f"clip-{i}.ogg",
            sha256=hashlib.sha256(f"clip-{i}".encode()).hexdigest(),
            format="ogg",
            duration_s=10.0,
            sample_rate=22050,
            channels=1,
            status=Clip.Status.READY,
        )
        for i in range(n)
    )
    clips = list(Clip.objects.filter(project=project).order_by("id"))
    client = ls_client(base_url=url, api_key=token)
    created_projects: list[int] = []
    out: dict[str, Any] = {}
    try:
        link = ls_project_link(
            project=project, base_url=url, api_key=token, refrain_url="http://127.0.0.1:9"
        )
        created_projects.append(link.ls_project_id)

        # --- push tasks ------------------------------------------------------------------------
        pushed, t_push = timed(lambda: ls_push_tasks(link=link, clips=clips))
        assert pushed.created == n, pushed
        again, t_push_again = timed(lambda: ls_push_tasks(link=link, clips=clips))
        assert again.created == 0 and again.already == n
        if "push" in parts:
            naive = client.projects.create(
                title="Bench naive loop", label_config=label_config_from_taxonomy(index.nodes)
            )
            created_projects.append(int(naive.id))
            subset = clips[:n_naive]
            naive_tasks: list[int] = []

            def naive_push() -> None:
                for c in subset:
                    data = {"audio": clip_audio_url(link=link, clip=c), "refrain_clip_id": c.id}
                    naive_tasks.append(int(client.tasks.create(project=naive.id, data=data).id))

            _, t_naive_push = timed(naive_push)
            out["push_tasks"] = {
                "refrain_s": round(t_push, 2),
                "refrain_again_s": round(t_push_again, 2),
                "chunk": PUSH_CHUNK,
                "naive_items": n_naive,
                "naive_measured_s": round(t_naive_push, 2),
                "naive_extrapolated_s": round(t_naive_push * n / n_naive, 1),
            }
            print(
                f"push {n} tasks: Refrain {t_push:.1f} s (again, nothing to send: {t_push_again:.1f} s); "
                f"SDK loop {t_naive_push:.1f} s for {n_naive} -> ~{t_naive_push * n / n_naive:.0f} s "
                f"for {n} (extrapolated)"
            )

            # --- push predictions --------------------------------------------------------------------
            rng = np.random.default_rng(0)
            probs = hier.make_consistent(rng.random((n, len(index.nodes))))
            from active_learning.artifacts import artifact_write

            key = f"project_{project.pk}/model_1"
            for name, array in (
                ("clip_ids", np.array([c.id for c in clips], dtype=np.int64)),
                ("pred_probs", probs.astype(np.float32)),
                ("out_of_sample", np.zeros(n, dtype=bool)),
            ):
                buf = io.BytesIO()
                np.save(buf, array)
                artifact_write(f"{key}/{name}.npy", buf.getvalue())
            mv = ModelVersion.objects.create(
                project=project,
                number=1,
                taxonomy_version=tax.version,
                status=JobStatus.DONE,
                artifact_key=key,
            )
            preds, t_preds = timed(lambda: ml_predictions_push(link=link, model_version=mv))
            assert preds is not None and preds.created == n, preds
            preds_again, t_preds_again = timed(
                lambda: ml_predictions_push(link=link, model_version=mv)
            )
            assert preds_again is not None and preds_again.created == 0
            assert preds_again.already == n
            held = len(client.predictions.list(project=link.ls_project_id))
            assert held == n, held  # counted on Label Studio's side: nothing twice
            from annotation.integrations.labelstudio.convert import prediction_from_probs

            def naive_preds() -> None:
                for row, task_id in enumerate(naive_tasks):
                    pred = prediction_from_probs(
                        probs[row], nodes=index.nodes, model_version="refrain-1"
                    )
                    client.predictions.create(task=task_id, **pred)

            _, t_naive_preds = timed(naive_preds)
            out["push_predictions"] = {
                "refrain_s": round(t_preds, 2),
                "refrain_again_s": round(t_preds_again, 2),
                "again_created": preds_again.created,
                "held_in_label_studio": held,
                "naive_items": n_naive,
                "naive_measured_s": round(t_naive_preds, 2),
                "naive_extrapolated_s": round(t_naive_preds * n / n_naive, 1),
            }
            print(
                f"push {n} predictions: Refrain {t_preds:.1f} s (same version again: "
                f"{t_preds_again:.1f} s, 0 created, {held} held in LS); SDK loop {t_naive_preds:.1f} s "
                f"for {n_naive} -> ~{t_naive_preds * n / n_naive:.0f} s for {n} (extrapolated)"
            )

        # --- pull --------------------------------------------------------------------------------
        if "pull" in parts:
            annotated = client.projects.create(
                title="Bench pull", label_config=label_config_from_taxonomy(index.nodes)
            )
            created_projects.append(int(annotated.id))
            leaves = np.flatnonzero(hier.is_leaf).tolist()
            by_index = {node.index: node for node in index.nodes}

            def path_keys(i: int) -> list[str]:
                chain = [i]
                while hier.parents[chain[-1]] >= 0:
                    chain.append(int(hier.parents[chain[-1]]))
                return [by_index[j].key for j in reversed(chain)]

            t0 = time.perf_counter()
            for start in range(0, n, 1000):
                payload = [
                    {
                        "data": {"audio": "http://127.0.0.1:9/a.ogg", "refrain_clip_id": c.id},
                        "annotations": [
                            {
                                "result": [
                                    {
                                        "from_name": "genre",
                                        "to_name": "audio",
                                        "type": "taxonomy",
                                        "value": {
                                            "taxonomy": [
                                                path_keys(leaves[(start + k) % len(leaves)])
                                            ]
                                        },
                                    }
                                ]
                            }
                        ],
                    }
                    for k, c in enumerate(clips[start : start + 1000])
                ]
                client.projects.import_tasks(id=annotated.id, request=payload)
            t_setup = time.perf_counter() - t0
            pull_link = LabelStudioLink.objects.create(
                project=project,
                base_url=url,
                ls_project_id=int(annotated.id),
                api_key=token,
                webhook_secret="bench",
                taxonomy_version=tax.version,
            )
            first, t_pull = timed(lambda: ls_pull_annotations(link=pull_link))
            assert first.created == n and not first.errors, (first.created, first.errors[:3])
            again_pull, t_pull_again = timed(lambda: ls_pull_annotations(link=pull_link))
            assert again_pull.created == 0 and again_pull.existing == n
            # The re-pull right after re-reads what Label Studio stamped within PULL_CLOCK_MARGIN
            # before the first pull began (here: the whole import); the next one, nothing.
            steady, t_pull_steady = timed(lambda: ls_pull_annotations(link=pull_link))
            assert steady.created == 0 and steady.existing == n
            annotated_tasks = [
                int(t.id)
                for t in client.tasks.list(project=annotated.id, fields="task_only", page_size=1000)
            ][:n_naive]

            def naive_pull() -> None:
                for task_id in annotated_tasks:
                    client.annotations.list(id=task_id)

            _, t_naive_pull = timed(naive_pull)
            out["pull"] = {
                "setup_bulk_import_s": round(t_setup, 1),
                "refrain_first_s": round(t_pull, 2),
                "refrain_first_created": first.created,
                "refrain_again_s": round(t_pull_again, 2),
                "refrain_again_existing": again_pull.existing,
                "refrain_again_note": (
                    "right after the first pull, which began within PULL_CLOCK_MARGIN (2 min) of "
                    "the bulk import: every task is listed again"
                ),
                "refrain_steady_s": round(t_pull_steady, 2),
                "refrain_steady_existing": steady.existing,
                "naive_items": n_naive,
                "naive_measured_s": round(t_naive_pull, 2),
                "naive_extrapolated_s": round(t_naive_pull * n / n_naive, 1),
                "naive_note": "fetch only (annotations.list per task), nothing stored",
            }
            print(
                f"pull {n} annotated tasks: Refrain first {t_pull:.1f} s ({first.created} stored), "
                f"again unchanged {t_pull_again:.1f} s (inside the clock margin), and then "
                f"{t_pull_steady:.1f} s ({steady.existing} existing); SDK loop "
                f"{t_naive_pull:.1f} s for {n_naive} -> ~{t_naive_pull * n / n_naive:.0f} s for {n} "
                "(extrapolated, fetch only)"
            )
        out["mapped_tasks"] = LabelStudioTask.objects.filter(link=link).count()
    finally:
        for pid in created_projects:
            client.projects.delete(id=pid)
        from django.db import connections

        connections.close_all()
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--naive", type=int, default=500, help="items the per-item loops time")
    ap.add_argument(
        "--parts",
        default="push,pull",
        help="push (tasks, predictions) and/or pull; a partial run updates only its parts of "
        "the result file",
    )
    args = ap.parse_args()
    parts = set(args.parts.split(","))
    url, token = os.environ.get("LABEL_STUDIO_URL"), os.environ.get("LABEL_STUDIO_TOKEN")
    if not url or not token:
        sys.exit(
            'set LABEL_STUDIO_URL and LABEL_STUDIO_TOKEN: eval "$(scripts/labelstudio_service.sh env)"'
        )
    if not FMA.exists():
        sys.exit(f"FMA genre tree not found at {FMA}")
    psql(f"DROP DATABASE IF EXISTS {PG_DB} WITH (FORCE)")
    psql(f"CREATE DATABASE {PG_DB}")
    try:
        with tempfile.TemporaryDirectory() as var_dir:
            out = run(args.n, args.naive, url, token, var_dir, parts)
    finally:
        psql(f"DROP DATABASE IF EXISTS {PG_DB} WITH (FORCE)")
    import label_studio_sdk

    ls_version = "unknown"
    try:
        import httpx

        ls_version = httpx.get(f"{url}/api/version", timeout=5).json().get("release", "unknown")
    except Exception:  # the version is a label on the result, not a reason to fail
        pass
    result = {
        "benchmark": "labelstudio_sync",
        "n_tasks": args.n,
        "naive_loop": (
            f"timed on {args.naive} items and extrapolated linearly to {args.n}: one SDK call "
            "per task (tasks.create, predictions.create, annotations.list)"
        ),
        "label_studio": ls_version,
        "label_studio_sdk": getattr(label_studio_sdk, "__version__", "unknown"),
        "by_hand_before": BY_HAND,
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_avg_at_end": os.getloadavg(),
            "note": "Label Studio, PostgreSQL and Refrain share the machine's cores",
        },
        **out,
    }
    path = RESULTS / "labelstudio_sync.json"
    if parts != {"push", "pull"} and path.exists():
        kept = {k: v for k, v in json.loads(path.read_text()).items() if k not in result}
        result = {**kept, **result, "parts_of_this_run": sorted(parts)}
    write_json(path, result)
    print(f"wrote {RESULTS / 'labelstudio_sync.json'}")


if __name__ == "__main__":
    main()
