"""The console's dashboard pages on a large project: server-side render time per page on PostgreSQL.

Builds a dedicated database (``refrain_console_bench``, dropped at the end unless ``--keep``) with
one project of ``--clips`` clips (100k), ``--per-clip`` annotations each by 50 annotators (5: 500k
annotations, 1M label rows), their consensus and annotator quality rows, an open queue,
``--runs`` quality runs (20) with their issues and routed outcomes, ``--versions`` model versions
(10, with per-node metrics and training snapshots of realistic size, and the newest one's (N, K)
out-of-sample probabilities on disk) and as many relabel cycles. Rows are written by
``INSERT ... SELECT generate_series`` so the build takes a minute, not an hour.

Then, in this process (the Django test client: the server-side render, no HTTP), it times:

* the workers' side: :func:`quality.dashboards.snapshots.dashboards_refresh` per page;
* every dashboard page (and the label-quality dashboard that was there before), ``--repeat``
  renders each after one warm-up: median and p99 milliseconds, and the queries per render.

    .venv/bin/python -m bench.console_pages [--clips 100000] [--per-clip 5] [--runs 20]
        [--versions 10] [--repeat 30] [--keep] [--reuse]

``--keep`` leaves the database for a look (``--reuse`` then skips the build). Prints a table and
writes ``bench/results/console_pages.json``.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from bench import RESULTS, write_json

BENCH_DB = "refrain_console_bench"
PG = os.environ.get("BENCH_PG", "postgres://postgres@127.0.0.1:5432")
ENV = {
    "DATABASE_URL": f"{PG}/{BENCH_DB}",
    "CELERY_BROKER_URL": os.environ.get("BENCH_BROKER", "redis://127.0.0.1:6379/12"),
    "DJANGO_SETTINGS_MODULE": "refrain.settings",
    "LOG_LEVEL": "WARNING",
    "DEBUG": "False",
    "REFRAIN_ENV": "development",
    # Plain static names: no collectstatic manifest is needed to render in-process.
    "STATIC_MANIFEST": "False",
}
N_USERS = 50
TOP, PER_TOP = 16, 10  # a two-level tree: 16 genres x 10 styles (K = 176)
STRATEGIES = ("diversity", "uncertainty", "badge", "relabel_or_new")


def _admin(sql: str) -> None:
    import psycopg

    with psycopg.connect(f"{PG}/postgres", autocommit=True) as conn:
        conn.execute(sql)


def _setup(artifacts: Path) -> None:
    os.environ.update(ENV)
    os.environ["ARTIFACT_ROOT"] = str(artifacts)
    import django

    django.setup()


def build_console_project(
    *, n_clips: int, per_clip: int, n_runs: int, n_versions: int, seed: int = 0
) -> dict[str, Any]:
    """Write the large project into the configured database; returns its slug and counts.

    Clip i's true style is ``i % 160``; each of its ``per_clip`` annotations comes from a distinct
    annotator and picks a sibling style 15 % of the time; annotations spread over 60 days.
    """
    import numpy as np
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.utils import timezone

    from active_learning.models import JobStatus, ModelVersion
    from annotation.models import (
        Annotation,
        AnnotationLabel,
        Clip,
        Membership,
        Project,
        Task,
        Taxonomy,
        TaxonomyNode,
        TaxonomyVersion,
    )
    from quality.models import (
        AnnotatorQuality,
        ClipConsensus,
        LabelIssue,
        QualityCycle,
        QualityRun,
    )

    t0 = time.perf_counter()
    taxonomy = Taxonomy.objects.create(name="Console bench genres")
    version = TaxonomyVersion.objects.create(
        taxonomy=taxonomy, number=1, source_format="paths", content_sha256="c" * 64
    )
    roots = TaxonomyNode.objects.bulk_create(
        TaxonomyNode(
            version=version,
            key=f"g{i}",
            name=f"Genre {i}",
            path=f"Genre {i}",
            depth=0,
            index=i,
            is_leaf=False,
        )
        for i in range(TOP)
    )
    leaves = TaxonomyNode.objects.bulk_create(
        TaxonomyNode(
            version=version,
            key=f"g{i}.{j}",
            name=f"Style {i}.{j}",
            path=f"Genre {i}/Style {i}.{j}",
            depth=1,
            index=TOP + i * PER_TOP + j,
            parent=r,
        )
        for i, r in enumerate(roots)
        for j in range(PER_TOP)
    )
    version.n_nodes, version.max_depth = TOP * (PER_TOP + 1), 1
    version.save()
    project = Project.objects.create(
        name="Console bench", slug="console-bench", taxonomy_version=version, overlap=per_clip
    )
    User = get_user_model()
    users = User.objects.bulk_create([User(username=f"cb{i}") for i in range(N_USERS)])
    reviewer = User.objects.create(username="cb-reviewer")
    Membership.objects.bulk_create(
        [Membership(project=project, user=u) for u in users]
        + [Membership(project=project, user=reviewer, role=Membership.Role.REVIEWER)]
    )
    user_ids = [u.pk for u in users]
    leaf0, root0 = leaves[0].pk, roots[0].pk
    assert [n.pk for n in leaves] == list(range(leaf0, leaf0 + len(leaves)))
    assert [n.pk for n in roots] == list(range(root0, root0 + len(roots)))
    n_leaves = TOP * PER_TOP
    ann, lab, clip_t = (
        Annotation._meta.db_table,
        AnnotationLabel._meta.db_table,
        Clip._meta.db_table,
    )
    with connection.cursor() as cur:
        cur.execute(
            f"""INSERT INTO {clip_t} (project_id, external_id, source_path, original_name,
                served_path, sha256, size_bytes, format, duration_s, sample_rate, channels, status,
                error, metadata, import_source, created_at)
            SELECT %s, 'c' || g, '/bench/c' || g || '.wav', 'c' || g || '.wav', '',
                lpad(to_hex(g), 64, '0'), 1000, 'wav', 30.0, 22050, 1, 'ready', '', '{{}}'::jsonb,
                'bench', now() - interval '61 days'
            FROM generate_series(0, %s - 1) g""",
            [project.pk, n_clips],
        )
        cur.execute(f"SELECT min(id) FROM {clip_t} WHERE project_id = %s", [project.pk])
        clip0 = cur.fetchone()[0]
        # Annotation k of clip c: annotator (c + 10k) mod 50, on day (c mod 60) + k of the last 60.
        cur.execute(
            f"""INSERT INTO {ann} (clip_id, taxonomy_version_id, user_id, kind, source, unsure,
                note, time_spent_ms, created_at)
            SELECT c.id, %s, (%s::int[])[1 + ((c.id - %s + 10 * k) %% %s)], 'label', 'user:cb',
                false, '', 4000 + ((c.id * 7919 + k * 104729) %% 30000),
                now() - make_interval(days => (60 - ((c.id - %s) %% 55) - k)::int,
                                      secs => ((c.id * 31 + k) %% 36000)::float8)
            FROM {clip_t} c CROSS JOIN generate_series(0, %s - 1) k
            WHERE c.project_id = %s""",
            [version.pk, user_ids, clip0, N_USERS, clip0, per_clip, project.pk],
        )
        leaf_sql = (
            "CASE WHEN (a.id * 2654435761) %% 100 < 15 "
            f"THEN ((c.id - %s) %% {n_leaves}) / {PER_TOP} * {PER_TOP} "
            f"+ (((c.id - %s) %% {PER_TOP}) + 1 + a.id %% {PER_TOP - 1}) %% {PER_TOP} "
            f"ELSE (c.id - %s) %% {n_leaves} END"
        )
        cur.execute(
            f"""INSERT INTO {lab} (annotation_id, node_id, explicit)
            SELECT a.id, %s + {leaf_sql}, true
            FROM {ann} a JOIN {clip_t} c ON c.id = a.clip_id WHERE c.project_id = %s""",
            [leaf0, clip0, clip0, clip0, project.pk],
        )
        cur.execute(
            f"""INSERT INTO {lab} (annotation_id, node_id, explicit)
            SELECT a.id, %s + ((c.id - %s) %% {n_leaves}) / {PER_TOP}, false
            FROM {ann} a JOIN {clip_t} c ON c.id = a.clip_id WHERE c.project_id = %s""",
            [root0, clip0, project.pk],
        )
        cur.execute(
            f"""INSERT INTO {ClipConsensus._meta.db_table} (clip_id, project_id, node_ids, quality,
                agreement, n_annotations, scope, computed_at)
            SELECT c.id, c.project_id,
                jsonb_build_array(%s + ((c.id - %s) %% {n_leaves}) / {PER_TOP},
                                  %s + (c.id - %s) %% {n_leaves}),
                0.4 + ((c.id * 7) %% 60) / 100.0, 0.8, %s, 'project', now()
            FROM {clip_t} c WHERE c.project_id = %s""",
            [root0, clip0, leaf0, clip0, per_clip, project.pk],
        )
        # The queue: every clip's label task done; 20k open (label, overlap 2; relabels).
        cur.execute(
            f"""INSERT INTO {Task._meta.db_table} (project_id, clip_id, kind, status, priority,
                reason, reason_detail, overlap, n_submitted, dedupe_key, created_at, completed_at)
            SELECT c.id * 0 + %s, c.id, 'label', 'done', 0, 'import', '{{}}'::jsonb, %s, %s,
                'label:import:' || c.id, now() - interval '60 days', now() - interval '1 day'
            FROM {clip_t} c WHERE c.project_id = %s""",
            [project.pk, per_clip, per_clip, project.pk],
        )
        cur.execute(
            f"""INSERT INTO {Task._meta.db_table} (project_id, clip_id, kind, status, priority,
                reason, reason_detail, overlap, n_submitted, dedupe_key, created_at)
            SELECT %s, c.id, CASE WHEN c.id %% 4 = 0 THEN 'relabel' ELSE 'label' END, 'open',
                (c.id %% 100) / 100.0,
                CASE WHEN c.id %% 4 = 0 THEN 'label_issue:wrong_sibling'
                     ELSE 'active_learning:uncertainty' END,
                '{{}}'::jsonb, CASE WHEN c.id %% 4 = 0 THEN 1 ELSE 2 END, 0,
                'bench:' || c.id, now() - make_interval(days => (c.id %% 10)::int)
            FROM {clip_t} c WHERE c.project_id = %s AND c.id %% 5 = 0""",
            [project.pk, project.pk],
        )
    AnnotatorQuality.objects.bulk_create(
        AnnotatorQuality(project=project, user_id=u, quality=0.7 + (i % 10) / 40, n_annotations=0)
        for i, u in enumerate(user_ids)
    )

    # Model versions: metrics with a per-node report of K entries, a training snapshot of every
    # annotation id (as training stores it), the newest one's probabilities on disk.
    k = len(roots) + len(leaves)
    rng = np.random.default_rng(seed)
    clip_ids = np.arange(clip0, clip0 + n_clips, dtype=np.int64)
    art_root = Path(settings.ARTIFACT_ROOT) / f"project_{project.pk}"
    now = timezone.now()
    used = list(range(per_clip * n_clips))
    versions = []
    for v in range(1, n_versions + 1):
        per_node = {
            "support": [int(x) for x in rng.integers(0, 3000, k)],
            "f1": np.round(rng.uniform(0.2, 0.9, k), 4).tolist(),
            "ap": np.round(rng.uniform(0.2, 0.9, k), 4).tolist(),
            "sibling_accuracy": np.round(rng.uniform(0.05, 0.9, k), 4).tolist(),
            "sibling_chance": [0.1] * k,
            "confused_with": [int(x) for x in rng.integers(-1, k, k)],
            "confused_rate": np.round(rng.uniform(0, 0.5, k), 4).tolist(),
        }
        versions.append(
            ModelVersion(
                project=project,
                number=v,
                taxonomy_version=version,
                status=JobStatus.DONE,
                metrics={
                    "hier_f1": 0.4 + 0.04 * v,
                    "leaf_accuracy": 0.3 + 0.04 * v,
                    "top_level_accuracy": 0.6 + 0.03 * v,
                    "mAP": 0.35 + 0.04 * v,
                    "per_depth_macro_f1": {"0": 0.6 + 0.03 * v, "1": 0.3 + 0.04 * v},
                    "per_node": per_node,
                },
                training_snapshot={"labels": "current", "annotations": used[: 50_000 * v]},
                n_labelled=n_clips,
                artifact_path=str(art_root / f"model_{v}"),
                created_at=now - timedelta(days=6 * (n_versions - v)),
            )
        )
    ModelVersion.objects.bulk_create(versions)
    newest = art_root / f"model_{n_versions}"
    newest.mkdir(parents=True, exist_ok=True)
    truth = (clip_ids - clip0) % (TOP * PER_TOP)
    probs = np.full((n_clips, k), 0.02, dtype=np.float32)
    rows = np.arange(n_clips)
    probs[rows, truth // PER_TOP] = 0.9
    probs[rows, TOP + truth] = np.where(rng.random(n_clips) < 0.8, 0.7, 0.05).astype(np.float32)
    np.save(newest / "clip_ids.npy", clip_ids)
    np.save(newest / "pred_probs.npy", probs)
    np.save(newest / "out_of_sample.npy", np.ones(n_clips, dtype=bool))

    cycles = QualityCycle.objects.bulk_create(
        QualityCycle(
            project=project,
            status="done",
            steps_done=list(QualityCycle.STEPS),
            results={
                "acquire": {
                    "strategy": STRATEGIES[(c * len(STRATEGIES)) // n_runs],
                    "created_label": 50,
                    "picked": [{"clip": int(x)} for x in clip_ids[:200]],
                }
            },
            created_at=now - timedelta(days=3 * (n_runs - c), hours=2),
            finished_at=now - timedelta(days=3 * (n_runs - c), hours=1),
        )
        for c in range(n_runs)
    )
    types = [t for t in LabelIssue.Type.values if t != "structural"]
    issue_rows = []
    order = rng.permutation(n_clips)
    pos = 0
    per_run = min(2000, n_clips // (2 * n_runs))  # every issue on its own clip
    for r, cycle in enumerate(cycles):
        run = QualityRun.objects.create(
            project=project,
            cycle=cycle,
            status="done",
            budget=2000,
            created_at=cycle.created_at,
        )
        for rank in range(1, per_run + 1):
            i = int(order[pos % n_clips])
            pos += 1
            leaf = leaves[int(truth[i])]
            routed = rank <= 50
            last = r == n_runs - 1
            status = (
                (
                    "routed"
                    if last
                    else ("confirmed", "confirmed", "rejected", "in_review")[rank % 4]
                )
                if routed
                else ("open" if last else "superseded")
            )
            issue_rows.append(
                LabelIssue(
                    run=run,
                    project=project,
                    clip_id=int(clip_ids[i]),
                    score=float(rng.uniform(0.01, 0.5)),
                    rank=rank,
                    issue_type=types[rank % len(types)],
                    node=leaf,
                    depth=1,
                    status=status,
                    routed_at=cycle.created_at if routed else None,
                    created_at=cycle.created_at,
                )
            )
    LabelIssue.objects.bulk_create(issue_rows, batch_size=5000)
    with connection.cursor() as cur:
        cur.execute("ANALYZE")
    return {
        "slug": project.slug,
        "project_id": project.pk,
        "reviewer": reviewer.username,
        "clips": n_clips,
        "annotations": Annotation.objects.filter(clip__project=project).count(),
        "label_rows": AnnotationLabel.objects.filter(annotation__clip__project=project).count(),
        "quality_runs": n_runs,
        "issues": len(issue_rows),
        "model_versions": n_versions,
        "build_s": round(time.perf_counter() - t0, 1),
    }


PAGES = {
    "progress": "dashboards/",
    "taxonomy": "dashboards/taxonomy/",
    "annotators": "dashboards/annotators/",
    "issues": "dashboards/issues/",
    "models": "dashboards/models/",
    "models_level1": "dashboards/models/?level=1",
    "models_drill": "dashboards/models/?parent=g3",
    "learning": "dashboards/learning/",
    "label_quality (before issue 14)": "quality/",
}


def measure(slug: str, username: str, repeat: int) -> dict[str, Any]:
    from django.contrib.auth import get_user_model
    from django.db import connection, reset_queries
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    client = Client()
    client.force_login(get_user_model().objects.get(username=username))
    out: dict[str, Any] = {}
    for name, path in PAGES.items():
        url = f"/p/{slug}/{path}"
        first = client.get(url)
        assert first.status_code == 200, (url, first.status_code, first.content[:300])
        times = []
        for _ in range(repeat):
            reset_queries()
            with CaptureQueriesContext(connection) as queries:
                t0 = time.perf_counter()
                response = client.get(url)
                times.append((time.perf_counter() - t0) * 1000)
            assert response.status_code == 200
        times.sort()
        out[name] = {
            "median_ms": round(statistics.median(times), 1),
            "p99_ms": round(times[min(len(times) - 1, int(0.99 * len(times)))], 1),
            "max_ms": round(times[-1], 1),
            "queries": len(queries),
            "bytes": len(response.content),
        }
        print(
            f"{name:34s} {out[name]['median_ms']:8.1f} {out[name]['p99_ms']:8.1f} "
            f"{out[name]['queries']:4d} {out[name]['bytes'] / 1024:8.0f} KiB"
        )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clips", type=int, default=100_000)
    ap.add_argument("--per-clip", type=int, default=5)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--versions", type=int, default=10)
    ap.add_argument("--repeat", type=int, default=30)
    ap.add_argument("--keep", action="store_true", help="keep the database afterwards")
    ap.add_argument("--reuse", action="store_true", help="use the kept database, skip the build")
    ap.add_argument("--out", default=str(RESULTS / "console_pages.json"))
    args = ap.parse_args()
    artifacts = Path(os.environ.get("BENCH_ARTIFACTS") or tempfile.mkdtemp(prefix="console-"))
    if not args.reuse:
        _admin(f"DROP DATABASE IF EXISTS {BENCH_DB} WITH (FORCE)")
        _admin(f"CREATE DATABASE {BENCH_DB}")
    _setup(artifacts)
    from django.core.management import call_command

    from annotation.models import Project
    from quality.dashboards.snapshots import PAGES as SNAPSHOT_PAGES
    from quality.dashboards.snapshots import dashboards_refresh

    try:
        if args.reuse:
            project = Project.objects.get(slug="console-bench")
            built = {"slug": project.slug, "reviewer": "cb-reviewer", "reused": True}
        else:
            call_command("migrate", verbosity=0)
            built = build_console_project(
                n_clips=args.clips,
                per_clip=args.per_clip,
                n_runs=args.runs,
                n_versions=args.versions,
            )
            project = Project.objects.get(slug=built["slug"])
        print(f"built: {built}")
        t0 = time.perf_counter()
        refresh = dashboards_refresh(project=project, pages=SNAPSHOT_PAGES)
        refresh_total = round(time.perf_counter() - t0, 2)
        print(f"snapshots refreshed in {refresh_total} s: {refresh}")
        print(f"{'page':34s} {'med ms':>8s} {'p99 ms':>8s} {'qry':>4s} {'size':>12s}")
        pages = measure(built["slug"], built["reviewer"], args.repeat)
    finally:
        if not args.keep:
            from django.db import connections

            connections.close_all()
            _admin(f"DROP DATABASE IF EXISTS {BENCH_DB} WITH (FORCE)")
    write_json(
        Path(args.out),
        {
            "what": "server-side render of each console dashboard (Django test client, DEBUG off, "
            "PostgreSQL), after one warm-up render; snapshot refresh = the worker's side",
            "machine": {
                "cpus": os.cpu_count(),
                "python": platform.python_version(),
                "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
            },
            "project": built,
            "repeat": args.repeat,
            "refresh_s": refresh,
            "refresh_total_s": refresh_total,
            "pages": pages,
            "target": {"median_ms": 300, "p99_ms": 1000},
        },
    )


if __name__ == "__main__":
    main()
