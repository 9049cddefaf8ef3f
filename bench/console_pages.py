"""Server-side render time of every admin-console page on a 100k-clip project (issue 14).

    .venv/bin/python -m bench.console_pages [--clips 100000] [--reps 20] [--reuse] [--keep]

Builds, in its own PostgreSQL database (``refrain_bench_console``), a project on the FMA genre
tree (``../shared/data/fma/genres.csv``; a synthetic 3-level tree when absent) with ``--clips``
clips, 5 annotations per labelled clip on average (500k at 100k clips) by 20 annotators, their
ancestor-closed labels, a consensus per clip, 20 quality runs with 2,000 issues each, 10 model
versions (the newest with its (N, K) predictions on disk) and the open label tasks of the unlabelled
clips; rows go in with COPY, not factories. Then the explorer's summary rows are written by the real
service (``clip_summaries_refresh``, timed), and every page in :data:`PAGES` is requested ``--reps``
times through Django's test ``Client`` as a project admin, after one warm-up request: median, p99
and max milliseconds, the status and the number of queries. ``--reuse`` skips the build when the
database holds a project already.

Writes ``bench/results/console_pages.json``. Any page under ``/p/<slug>/dash/`` that takes no other
argument is found in the URL configuration and measured too.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from bench import DATA, RESULTS, ROOT, write_json

BENCH_DB = "refrain_bench_console"
PG = os.environ.get("BENCH_PG", "postgres://postgres@127.0.0.1:5432")
SLUG = "console"
N_ANNOTATORS = 20
N_RUNS = 20
ISSUES_PER_RUN = 2_000
N_MODELS = 10

#: Every console page measured: (name, URL). ``{slug}``, ``{node}`` (a top-level genre's key),
#: ``{leaf}`` (a leaf's key), ``{annotator}`` and ``{clip}`` are filled in from the built project.
#: Add a row for each new page; the dashboards (``/p/<slug>/dashboards/...``) are found on their own.
PAGES: list[tuple[str, str]] = [
    ("explorer", "/p/{slug}/explore/"),
    ("explorer page 1000", "/p/{slug}/explore/?page=1000"),
    ("explorer page 1000 sort -quality", "/p/{slug}/explore/?sort=-quality&page=1000"),
    ("explorer page 1000 sort label", "/p/{slug}/explore/?sort=label&page=1000"),
    ("explorer node (top level)", "/p/{slug}/explore/?node={node}"),
    ("explorer node (leaf)", "/p/{slug}/explore/?node={leaf}"),
    ("explorer status=unlabelled", "/p/{slug}/explore/?status=unlabelled"),
    ("explorer issue_type=wrong_sibling", "/p/{slug}/explore/?issue_type=wrong_sibling"),
    ("explorer issue_status=routed", "/p/{slug}/explore/?issue_status=routed"),
    ("explorer annotator", "/p/{slug}/explore/?annotator={annotator}"),
    ("explorer quality=0.2-0.6", "/p/{slug}/explore/?quality=0.2-0.6"),
    ("explorer disagreement=1", "/p/{slug}/explore/?disagreement=1"),
    ("explorer search q", "/p/{slug}/explore/?q=track-0042"),
    ("explorer search metadata", "/p/{slug}/explore/?q=lo-fi"),
    ("explorer node + sort -probability", "/p/{slug}/explore/?node={node}&sort=-probability"),
    (
        "explorer annotator + sort -quality",
        "/p/{slug}/explore/?annotator={annotator}&sort=-quality",
    ),
    *[
        (f"explorer sort {s}", f"/p/{{slug}}/explore/?sort={s}")
        for key in (
            "id",
            "name",
            "label",
            "annotators",
            "agreement",
            "quality",
            "issue",
            "prediction",
            "probability",
            "duration",
            "status",
        )
        for s in (key, f"-{key}")
    ],
    ("clip page", "/p/{slug}/quality/clips/{clip}/"),
    ("jobs", "/p/{slug}/jobs/"),
    ("jobs rows", "/p/{slug}/jobs/rows/"),
    ("quality dashboard", "/p/{slug}/quality/"),
    ("dashboards models level 1", "/p/{slug}/dashboards/models/?level=1"),
    ("dashboards models drill", "/p/{slug}/dashboards/models/?parent={node}"),
    ("issues", "/p/{slug}/quality/issues/"),
    ("models", "/p/{slug}/models/"),
]


def _admin(sql: str) -> None:
    import psycopg

    with psycopg.connect(f"{PG}/postgres", autocommit=True) as conn:
        conn.execute(sql)


def _setup() -> None:
    os.environ.update(
        {
            "DATABASE_URL": f"{PG}/{BENCH_DB}",
            "DJANGO_SETTINGS_MODULE": "refrain.settings",
            "DEBUG": "False",
            "LOG_LEVEL": "WARNING",
            # A benchmark, not a deployment: no SECRET_KEY needed, no HTTPS redirect.
            "REFRAIN_ENV": "development",
            "REFRAIN_VAR_DIR": str(ROOT / "bench" / ".cache" / "console_pages"),
            # Plain static names (no collectstatic step): the manifest lookup is a dict either way.
            "STATIC_MANIFEST": "0",
        }
    )
    os.environ.setdefault("CELERY_BROKER_URL", "redis://127.0.0.1:6379/12")
    import django

    django.setup()


def _copy(table: str, columns: list[str], rows: Any) -> int:
    """COPY ``rows`` (tuples; None = NULL) into ``table``; returns the count."""
    from django.db import connection

    n = 0
    sql = f"COPY {table} ({', '.join(columns)}) FROM STDIN"
    with connection.cursor() as cur, cur.cursor.copy(sql) as copy:
        for row in rows:
            copy.write_row(row)
            n += 1
    return n


def _taxonomy() -> Any:
    from annotation.services.taxonomies import taxonomy_import

    fma = DATA / "fma" / "genres.csv"
    if fma.exists():
        return taxonomy_import(name="FMA genres", data=fma.read_bytes(), filename="genres.csv")
    lines = [
        f"Genre {a}/Style {a}.{b}/Sub {a}.{b}.{c}"
        for a in range(12)
        for b in range(5)
        for c in range(2)
    ]
    return taxonomy_import(name="Synthetic genres", data="\n".join(lines), format="paths")


def build(n_clips: int, seed: int = 0) -> dict[str, Any]:
    from django.contrib.auth import get_user_model
    from django.contrib.auth.hashers import make_password
    from django.core.management import call_command
    from django.db import connection
    from django.utils import timezone

    from active_learning.models import FeatureSet, JobStatus, ModelVersion
    from annotation.models import Membership, Project
    from annotation.selectors import taxonomy_index_cached
    from quality.models import AnnotatorQuality, QualityCycle, QualityRun
    from quality.services.summary import clip_summaries_refresh
    from taxonomy.hierarchy import Hierarchy

    timings: dict[str, float] = {}
    t_all = t0 = time.perf_counter()
    call_command("migrate", verbosity=0)
    timings["migrate_s"] = time.perf_counter() - t0
    rng = np.random.default_rng(seed)
    version = _taxonomy().version
    index = taxonomy_index_cached(version)
    nodes = index.nodes
    k = len(nodes)
    hier = Hierarchy(index.parents_array)
    closure = [np.array(sorted(index.by_id[a].index for a in index.closure([n.id]))) for n in nodes]
    node_id = np.array([n.id for n in nodes], dtype=np.int64)
    project = Project.objects.create(name="Console bench", slug=SLUG, taxonomy_version=version)
    password = make_password("bench-pass-123")
    User = get_user_model()
    admin = User.objects.create(username="bench-admin", password=password)
    annotators = User.objects.bulk_create(
        [User(username=f"annotator{i:02d}", password=password) for i in range(N_ANNOTATORS)]
    )
    Membership.objects.create(project=project, user=admin, role=Membership.Role.ADMIN)
    Membership.objects.bulk_create(
        [Membership(project=project, user=u, role=Membership.Role.ANNOTATOR) for u in annotators]
    )
    user_ids = np.array([u.pk for u in annotators], dtype=np.int64)
    now = timezone.now()

    # Clips: 10 % unlabelled (they wait in the queue), the rest labelled 5 times on average.
    t0 = time.perf_counter()
    with connection.cursor() as cur:
        cur.execute("SELECT nextval('annotation_clip_id_seq')")
        first_clip = cur.fetchone()[0]
    clip_ids = np.arange(first_clip, first_clip + n_clips, dtype=np.int64)
    truth = rng.integers(0, k, n_clips)
    moods = ("calm", "lo-fi", "bright", "dark", "noisy")
    _copy(
        "annotation_clip",
        [
            "id",
            "project_id",
            "external_id",
            "storage",
            "storage_key",
            "original_name",
            "served_key",
            "sha256",
            "size_bytes",
            "format",
            "duration_s",
            "sample_rate",
            "channels",
            "status",
            "error",
            "metadata",
            "import_source",
            "created_at",
        ],
        (
            (
                int(c),
                project.pk,
                f"track-{i:06d}",
                "local",
                f"/data/audio/track-{i:06d}.ogg",
                f"track-{i:06d}.ogg",
                "",
                f"{int(c):064x}",
                160_000,
                "ogg",
                float(5 + (i * 7919) % 250) / 10.0,
                22050,
                1,
                "failed" if i % 997 == 0 else "ready",
                "cannot decode" if i % 997 == 0 else "",
                f'{{"mood": "{moods[i % 5]}", "batch": {i // 1000}}}',
                "bench",
                now,
            )
            for i, c in enumerate(clip_ids)
        ),
    )
    with connection.cursor() as cur:
        cur.execute("SELECT setval('annotation_clip_id_seq', %s)", [int(clip_ids[-1])])
    timings["clips_s"] = time.perf_counter() - t0

    # Annotations: 5 or 6 distinct annotators per labelled clip; 80 % give the true node.
    t0 = time.perf_counter()
    labelled = np.flatnonzero(np.arange(n_clips) % 10 != 0)
    per_clip = np.where(rng.random(len(labelled)) < 0.5556, 6, 5)
    ann_clip = np.repeat(labelled, per_clip)
    n_ann = len(ann_clip)
    ann_user = np.empty(n_ann, dtype=np.int64)
    pos = 0
    for n in per_clip:
        ann_user[pos : pos + n] = user_ids[rng.choice(N_ANNOTATORS, n, replace=False)]
        pos += n
    wrong = rng.random(n_ann) < 0.2
    ann_node = np.where(wrong, rng.integers(0, k, n_ann), truth[ann_clip])
    with connection.cursor() as cur:
        cur.execute("SELECT nextval('annotation_annotation_id_seq')")
        first_ann = cur.fetchone()[0]
    ann_ids = np.arange(first_ann, first_ann + n_ann, dtype=np.int64)
    base = now.timestamp() - 90 * 86400
    stamps = base + np.arange(n_ann) * (80 * 86400 / max(n_ann, 1))
    _copy(
        "annotation_annotation",
        [
            "id",
            "clip_id",
            "taxonomy_version_id",
            "user_id",
            "kind",
            "source",
            "unsure",
            "note",
            "time_spent_ms",
            "created_at",
        ],
        (
            (
                int(a),
                int(clip_ids[c]),
                version.pk,
                int(u),
                "label",
                f"user:annotator{u}",
                False,
                "",
                4000 + int(a) % 9000,
                datetime.fromtimestamp(float(s), tz=UTC),
            )
            for a, c, u, s in zip(ann_ids, ann_clip, ann_user, stamps, strict=True)
        ),
    )
    with connection.cursor() as cur:
        cur.execute("SELECT setval('annotation_annotation_id_seq', %s)", [int(ann_ids[-1])])

    def label_rows() -> Any:
        for a, node in zip(ann_ids, ann_node, strict=True):
            for col in closure[node]:
                yield (int(a), int(node_id[col]), bool(col == node))

    n_labels = _copy(
        "annotation_annotationlabel", ["annotation_id", "node_id", "explicit"], label_rows()
    )
    timings["annotations_s"] = time.perf_counter() - t0

    # Consensus per labelled clip: the majority node; agreement = share that gave it.
    t0 = time.perf_counter()
    agree = np.zeros(len(labelled))
    starts = np.concatenate([[0], np.cumsum(per_clip)[:-1]])
    for j, (s, n) in enumerate(zip(starts, per_clip, strict=True)):
        agree[j] = np.mean(ann_node[s : s + n] == truth[labelled[j]])
    quality = np.clip(agree * 0.8 + rng.normal(0, 0.08, len(labelled)), 0, 1)
    _copy(
        "quality_clipconsensus",
        [
            "clip_id",
            "project_id",
            "node_ids",
            "quality",
            "agreement",
            "n_annotations",
            "scope",
            "computed_at",
        ],
        (
            (
                int(clip_ids[c]),
                project.pk,
                "[" + ", ".join(str(int(node_id[x])) for x in closure[truth[c]]) + "]",
                float(q),
                float(g),
                int(n),
                "project",
                now,
            )
            for c, q, g, n in zip(labelled, quality, agree, per_clip, strict=True)
        ),
    )
    AnnotatorQuality.objects.bulk_create(
        [
            AnnotatorQuality(project=project, user=u, quality=0.7, weight=1.0, n_annotations=25_000)
            for u in annotators
        ]
    )
    timings["consensus_s"] = time.perf_counter() - t0

    # Models: 10 versions; the newest has predictions for every clip on disk.
    t0 = time.perf_counter()
    # Through the artifacts storage's local folder (ARTIFACT_ROOT under this bench's var dir).
    from django.conf import settings

    art_root = Path(settings.ARTIFACT_ROOT) / f"project_{project.pk}"
    fs = FeatureSet.objects.create(
        project=project,
        backend="logmel-stats",
        dim=64,
        status=JobStatus.DONE,
        n_clips=n_clips,
        n_done=n_clips,
        finished_at=now,
    )
    support = np.bincount(truth, minlength=k).tolist()
    per_node = {
        "support": support,
        "f1": rng.uniform(0.2, 0.9, k).round(3).tolist(),
        "ap": rng.uniform(0.2, 0.9, k).round(3).tolist(),
        "sibling_accuracy": rng.uniform(0.2, 0.9, k).round(3).tolist(),
        "sibling_chance": [0.25] * k,
        "confused_with": [-1] * k,
        "confused_rate": [0.0] * k,
    }
    for number in range(1, N_MODELS + 1):
        art = art_root / f"model_{number}"
        if number == N_MODELS:
            art.mkdir(parents=True, exist_ok=True)
            probs = rng.uniform(0.0, 0.08, (n_clips, k))
            hit = rng.uniform(0.5, 0.97, n_clips)
            for c in range(n_clips):
                probs[c, closure[truth[c]]] = hit[c]
            probs = hier.make_consistent(probs).astype(np.float32)
            np.save(art / "clip_ids.npy", clip_ids)
            np.save(art / "pred_probs.npy", probs)
            np.save(art / "out_of_sample.npy", np.arange(n_clips) % 10 != 0)
            del probs
        ModelVersion.objects.create(
            project=project,
            number=number,
            taxonomy_version=version,
            feature_set=fs,
            status=JobStatus.DONE,
            n_labelled=len(labelled),
            n_unlabelled=n_clips - len(labelled),
            metrics={"hierarchical_f1": 0.4 + number / 50, "per_node": per_node},
            artifact_key=f"project_{project.pk}/model_{number}",
            finished_at=now,
        )
    timings["models_s"] = time.perf_counter() - t0

    # 20 quality runs (and their cycles), 2,000 issues each; the newest run's are live.
    t0 = time.perf_counter()
    types = ["wrong_sibling", "wrong_branch", "missing_genre", "extra_genre", "structural"]
    depth = hier.depth
    issue_rows = []
    ann_of_clip = {int(c): int(a) for c, a in zip(ann_clip, ann_ids, strict=True)}  # newest wins
    for r in range(N_RUNS):
        cycle = QualityCycle.objects.create(
            project=project,
            status="done",
            steps_done=list(QualityCycle.STEPS),
            started_at=now,
            finished_at=now,
            results={
                "detect": {"issues": ISSUES_PER_RUN},
                "route": {"routed": 500},
                "acquire": {"created_label": 50, "created_relabel": 10},
            },
        )
        run = QualityRun.objects.create(
            project=project,
            cycle=cycle,
            status="done",
            n_clips=len(labelled),
            n_scored=len(labelled),
            n_issues=ISSUES_PER_RUN,
            n_routed=500,
            finished_at=now,
        )
        chosen = rng.choice(labelled, ISSUES_PER_RUN, replace=False)
        last = r == N_RUNS - 1
        for rank, c in enumerate(chosen, start=1):
            node = truth[c]
            status = (
                ("routed" if rank <= 500 else "open")
                if last
                else ("superseded", "confirmed", "rejected")[rank % 3]
            )
            issue_rows.append(
                (
                    run.pk,
                    project.pk,
                    int(clip_ids[c]),
                    ann_of_clip[int(c)],
                    float(rank / ISSUES_PER_RUN),
                    rank,
                    types[rank % 5],
                    int(node_id[node]),
                    int(depth[node]),
                    "[]",
                    "{}",
                    status,
                    "[]",
                    now,
                )
            )
    _copy(
        "quality_labelissue",
        [
            "run_id",
            "project_id",
            "clip_id",
            "annotation_id",
            "score",
            "rank",
            "issue_type",
            "node_id",
            "depth",
            "suggested_node_ids",
            "detail",
            "status",
            "resolution_node_ids",
            "created_at",
        ],
        issue_rows,
    )
    timings["issues_s"] = time.perf_counter() - t0

    # The queue: a label task for each unlabelled clip (as an import makes).
    t0 = time.perf_counter()
    unlabelled = np.flatnonzero(np.arange(n_clips) % 10 == 0)
    _copy(
        "annotation_task",
        [
            "project_id",
            "clip_id",
            "kind",
            "status",
            "priority",
            "reason",
            "reason_detail",
            "overlap",
            "n_submitted",
            "dedupe_key",
            "created_at",
        ],
        (
            (
                project.pk,
                int(clip_ids[c]),
                "label",
                "open",
                0.0,
                "import",
                "{}",
                1,
                0,
                f"label:import:{int(clip_ids[c])}",
                now,
            )
            for c in unlabelled
        ),
    )
    timings["tasks_s"] = time.perf_counter() - t0
    with connection.cursor() as cur:
        cur.execute("ANALYZE")

    t0 = time.perf_counter()
    written = clip_summaries_refresh(project=project)
    timings["summary_refresh_s"] = time.perf_counter() - t0
    # A steady state, as autovacuum keeps it: statistics and the visibility map (index-only scans).
    t0 = time.perf_counter()
    with connection.cursor() as cur:
        cur.execute("VACUUM ANALYZE")
    timings["vacuum_s"] = time.perf_counter() - t0
    timings["total_s"] = time.perf_counter() - t_all
    return {
        "clips": n_clips,
        "annotations": n_ann,
        "annotation_labels": n_labels,
        "taxonomy_nodes": k,
        "annotators": N_ANNOTATORS,
        "quality_runs": N_RUNS,
        "label_issues": len(issue_rows),
        "model_versions": N_MODELS,
        "summary_rows": written,
        **{key: round(v, 1) for key, v in timings.items()},
    }


def _dash_urls() -> list[tuple[str, str]]:
    """Pages under ``p/<slug>/dashboards/`` that take only the slug (not the POST-only refresh)."""
    from django.urls import URLPattern, URLResolver, get_resolver

    found: list[tuple[str, str]] = []

    def walk(patterns: list[Any], prefix: str) -> None:
        for p in patterns:
            route = prefix + str(p.pattern)
            if isinstance(p, URLResolver):
                walk(p.url_patterns, route)
            elif (
                isinstance(p, URLPattern)
                and route.startswith("p/<slug:slug>/dashboards/")
                and route.count("<") == 1
                and p.name != "dashboards-refresh"
            ):
                found.append((str(p.name), "/" + route.replace("<slug:slug>", "{slug}")))

    walk(get_resolver().url_patterns, "")
    return found


def refresh_dashboards() -> dict[str, Any]:
    """The workers' side of the dashboards: every snapshot computed once (timed per page)."""
    from annotation.models import Project
    from quality.dashboards.snapshots import PAGES as SNAPSHOT_PAGES
    from quality.dashboards.snapshots import dashboards_refresh

    t0 = time.perf_counter()
    per_page = dashboards_refresh(project=Project.objects.get(slug=SLUG), pages=SNAPSHOT_PAGES)
    return {"per_page_s": per_page, "total_s": round(time.perf_counter() - t0, 1)}


def measure(reps: int) -> list[dict[str, Any]]:
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.test import Client

    from annotation.models import Clip, Project
    from annotation.selectors import taxonomy_index_cached

    project = Project.objects.get(slug=SLUG)
    index = taxonomy_index_cached(project.taxonomy_version)
    top = next(n for n in index.nodes if n.depth == 0 and not n.is_leaf)
    leaf = next(n for n in index.nodes if n.is_leaf and n.depth >= 1)
    clip = Clip.objects.filter(project=project, status="ready").order_by("pk")[500]
    fill = {
        "slug": SLUG,
        "node": top.key,
        "leaf": leaf.key,
        "annotator": "annotator07",
        "clip": clip.pk,
    }
    client = Client()
    client.force_login(get_user_model().objects.get(username="bench-admin"))
    out = []
    # Counted by a wrapper: the request_started signal empties connection.queries_log.
    n_queries = [0]

    def count(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        n_queries[0] += 1
        return execute(sql, params, many, context)

    seen = {url for _, url in PAGES}
    pages = PAGES + [(n, u) for n, u in _dash_urls() if u not in seen]
    for name, template in pages:
        url = template.format(**fill)
        try:
            client.get(url)  # warm: connection, caches, templates
        except Exception as exc:  # a page that fails is reported, the others still measured
            print(f"{name:42s} FAILED: {exc!r}", flush=True)
            out.append({"page": name, "url": url, "error": repr(exc), "within_goal": False})
            continue
        n_queries[0] = 0
        with connection.execute_wrapper(count):
            response = client.get(url)
            if hasattr(response, "streaming_content"):
                b"".join(response.streaming_content)
        times = []
        for _ in range(reps):
            t0 = time.perf_counter()
            response = client.get(url)
            times.append((time.perf_counter() - t0) * 1000)
        times.sort()
        row = {
            "page": name,
            "url": url,
            "status": response.status_code,
            "queries": n_queries[0],
            "median_ms": round(statistics.median(times), 1),
            "p99_ms": round(float(np.percentile(times, 99)), 1),
            "max_ms": round(times[-1], 1),
            "bytes": len(response.content) if not hasattr(response, "streaming_content") else None,
        }
        ok = row["status"] == 200 and row["median_ms"] <= 300 and row["p99_ms"] <= 1000
        row["within_goal"] = ok
        print(
            f"{name:42s} {row['status']} {row['median_ms']:8.1f} ms median {row['p99_ms']:8.1f} "
            f"ms p99 {row['queries']:3d} queries{'' if ok else '   <-- over the goal'}",
            flush=True,
        )
        out.append(row)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clips", type=int, default=100_000)
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--reuse", action="store_true", help="measure the database already built")
    ap.add_argument("--keep", action="store_true", help="keep the database afterwards")
    ap.add_argument("--out", default=str(RESULTS / "console_pages.json"))
    args = ap.parse_args()
    built: dict[str, Any] | None = None
    if not args.reuse:
        _admin(f"DROP DATABASE IF EXISTS {BENCH_DB} WITH (FORCE)")
        _admin(f"CREATE DATABASE {BENCH_DB}")
    _setup()
    from django.db import connection

    try:
        if args.reuse:
            from django.core.management import call_command

            from annotation.models import Project

            call_command("migrate", verbosity=0)

            if not Project.objects.filter(slug=SLUG).exists():
                raise SystemExit(f"--reuse: {BENCH_DB} holds no built project; run without it")
        else:
            built = build(args.clips)
            print(f"built: {built}", flush=True)
        snapshots = refresh_dashboards()
        print(f"dashboard snapshots: {snapshots}", flush=True)
        pages = measure(args.reps)
    finally:
        connection.close()
        if not args.keep:
            _admin(f"DROP DATABASE IF EXISTS {BENCH_DB} WITH (FORCE)")
    over = [p["page"] for p in pages if not p["within_goal"]]
    print(f"{len(pages)} pages, {len(pages) - len(over)} within 300 ms median / 1 s p99")
    write_json(
        Path(args.out),
        {
            "what": "server-side render time of the console pages (Django test Client, admin)",
            "goal": {"median_ms": 300, "p99_ms": 1000},
            "machine": f"{platform.machine()}, Python {platform.python_version()}, "
            f"{os.cpu_count()} cores shared with other sessions, PostgreSQL on loopback",
            "reps": args.reps,
            "build": built,
            "dashboard_snapshots": snapshots,
            "pages": pages,
            "over_goal": over,
        },
    )


if __name__ == "__main__":
    main()
