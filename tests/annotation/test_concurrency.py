"""50 annotators ask for work and submit at the same moment, on PostgreSQL, through HTTP."""

from __future__ import annotations

import threading
import uuid
from collections import Counter

import pytest
from django.db import connection, connections
from django.test import Client

from annotation.models import Annotation, Membership, Task
from tests.factories import ClipFactory, MembershipFactory, ProjectFactory, UserFactory

N_ANNOTATORS = 50
N_CLIPS = 40
OVERLAP = 3


@pytest.mark.django_db(transaction=True)
def test_fifty_annotators_at_once(fast_passwords):
    if connection.vendor != "postgresql":
        pytest.skip("row locks (SKIP LOCKED) are what this test is about: PostgreSQL only")
    project = ProjectFactory(overlap=OVERLAP)
    tasks = [
        Task.objects.create(project=project, clip=ClipFactory(project=project), overlap=OVERLAP)
        for _ in range(N_CLIPS)
    ]
    users = [
        MembershipFactory(
            project=project, user=UserFactory(username=f"a{i}"), role=Membership.Role.ANNOTATOR
        ).user
        for i in range(N_ANNOTATORS)
    ]
    clients = []
    for user in users:
        c = Client()
        c.force_login(user)
        clients.append(c)
    connections.close_all()

    start = threading.Barrier(N_ANNOTATORS)
    statuses: Counter[int] = Counter()
    created: list[tuple[str, int]] = []
    errors: list[str] = []
    lock = threading.Lock()

    def work(i: int) -> None:
        c = clients[i]
        try:
            start.wait()
            while True:
                r = c.post(f"/api/v1/projects/{project.pk}/tasks/next")
                with lock:
                    statuses[r.status_code] += 1
                if r.status_code == 204:
                    return
                if r.status_code != 200:
                    errors.append(f"next {r.status_code} {r.content[:200]!r}")
                    return
                task_id = r.json()["task_id"]
                key = uuid.uuid4().hex
                payload = {"labels": ["Rock/Punk"], "idempotency_key": key}
                url = f"/api/v1/tasks/{task_id}/annotations"
                r = c.post(url, payload, content_type="application/json")
                # A resubmit, as after a lost answer: must create nothing.
                r2 = c.post(url, payload, content_type="application/json")
                with lock:
                    statuses[r.status_code] += 1
                    statuses[r2.status_code] += 1
                    if r.status_code == 201:
                        created.append((f"a{i}", task_id))
                    else:
                        errors.append(f"submit {r.status_code} {r.content[:200]!r}")
                    if r2.status_code != 200 or r2.json()["id"] != r.json()["id"]:
                        errors.append(f"resubmit {r2.status_code}")
        except Exception as exc:  # surfaced below with the thread's number
            errors.append(f"thread {i}: {exc!r}")
        finally:
            connections.close_all()

    threads = [threading.Thread(target=work, args=(i,)) for i in range(N_ANNOTATORS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)

    assert not errors, errors[:5]
    assert statuses[500] == 0
    annotations = list(Annotation.objects.values_list("user__username", "clip_id", "task_id"))
    # No annotation lost: every 201 is a stored row, and there is no row without a 201.
    assert sorted((u, t) for u, _, t in annotations) == sorted(created)
    per_task = Counter(t for _, _, t in annotations)
    assert max(per_task.values()) <= OVERLAP  # never beyond the overlap
    pairs = Counter((u, c) for u, c, _ in annotations)
    assert max(pairs.values()) == 1  # never twice to one annotator
    # 50 annotators for 40 clips × 3: every slot is filled and every task is done.
    assert len(annotations) == N_CLIPS * OVERLAP
    assert set(
        Task.objects.filter(pk__in=[t.pk for t in tasks]).values_list("status", flat=True)
    ) == {Task.Status.DONE}
