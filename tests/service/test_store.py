"""service/store.py, the shared-volume primitives, with real concurrent processes on one folder:
atomic replacement (no reader ever sees a part), exclusive creation (one winner), versioned documents
(no lost update under a read-modify-write race, conflicts reported, other processes' writes seen,
pruned versions), expiry by age and count, and ids that cannot leave the folder."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import time
from pathlib import Path

import pytest

from service.store import (
    KEEP_VERSIONS,
    PRUNE_AGE_S,
    Expiry,
    VersionConflict,
    VersionedStore,
    atomic_write,
    check_id,
    create_new,
    etag,
    new_id,
    parse_etag,
)

pytestmark = pytest.mark.timeout(300)
SPAWN = mp.get_context("spawn")  # fresh interpreters, as separate replicas are


def _rewrite(path: str, rounds: int) -> None:
    for i in range(rounds):
        atomic_write(Path(path), (b"A" if i % 2 else b"B") * 200_000)


def _read_all(path: str, stop_after: int, out: mp.Queue) -> None:  # type: ignore[type-arg]
    seen, torn = 0, 0
    while seen < stop_after:
        data = Path(path).read_bytes()
        seen += 1
        if len(data) != 200_000 or len(set(data)) != 1:
            torn += 1
    out.put(torn)


def test_atomic_write_never_shows_a_part(tmp_path: Path) -> None:
    target = tmp_path / "doc.bin"
    atomic_write(target, b"A" * 200_000)
    out = SPAWN.Queue()
    reader = SPAWN.Process(target=_read_all, args=(str(target), 400, out))
    writer = SPAWN.Process(target=_rewrite, args=(str(target), 300))
    reader.start()
    writer.start()
    writer.join(240)
    reader.join(240)
    assert writer.exitcode == 0 and reader.exitcode == 0
    assert out.get(timeout=10) == 0, "a reader saw a partly written file"
    assert not [p for p in tmp_path.iterdir() if p.name != "doc.bin"], "temporary files left behind"


def _create(path: str, me: int, start: float, out: mp.Queue) -> None:  # type: ignore[type-arg]
    while time.time() < start:
        time.sleep(0.001)
    try:
        create_new(Path(path), f"{me}".encode())
        out.put(me)
    except FileExistsError:
        out.put(-1)


def test_create_new_has_exactly_one_winner(tmp_path: Path) -> None:
    target = tmp_path / "claim.json"
    out = SPAWN.Queue()
    start = time.time() + 3.0  # every process is running by then
    procs = [SPAWN.Process(target=_create, args=(str(target), i, start, out)) for i in range(6)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    results = [out.get(timeout=10) for _ in procs]
    winners = [r for r in results if r >= 0]
    assert len(winners) == 1, results
    assert target.read_text() == str(winners[0]), "the file holds the winner's data"


def _increment(root: str, rounds: int, out: mp.Queue) -> None:  # type: ignore[type-arg]
    store = VersionedStore(Path(root))
    conflicts = 0
    for _ in range(rounds):
        while True:
            current = store.read("counter")
            assert current.doc is not None
            try:
                store.write("counter", {"n": current.doc["n"] + 1}, if_version=current.version)
                break
            except VersionConflict:
                conflicts += 1
    out.put(conflicts)


def test_versioned_writes_lose_no_update_under_a_race(tmp_path: Path) -> None:
    """Four processes increment one counter 25 times each by read -> write(if_version): the
    compare-and-swap turns every lost update into a conflict that is retried."""
    store = VersionedStore(tmp_path)
    assert store.write("counter", {"n": 0}, if_version=0).version == 1
    out = SPAWN.Queue()
    procs = [SPAWN.Process(target=_increment, args=(str(tmp_path), 25, out)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(240)
    assert all(p.exitcode == 0 for p in procs)
    conflicts = sum(out.get(timeout=10) for _ in procs)
    final = VersionedStore(tmp_path).read("counter")
    assert final.doc == {"n": 100}, (final, conflicts)
    assert final.version == 101
    print(f"{conflicts} conflicts retried")


def _age(folder: Path, seconds: float) -> None:
    then = time.time() - seconds
    for path in folder.iterdir():
        os.utime(path, (then, then))


def _write_versions(root: str, name: str, count: int) -> None:
    store = VersionedStore(Path(root))
    for i in range(count):
        store.write(name, {"i": i})


def test_a_reader_sees_what_another_process_wrote(tmp_path: Path) -> None:
    reader = VersionedStore(tmp_path)
    assert reader.read("walk").doc is None and reader.read("walk").version == 0
    writer = SPAWN.Process(target=_write_versions, args=(str(tmp_path), "walk", 1))
    writer.start()
    writer.join(60)
    assert reader.read("walk").doc == {"i": 0}
    # many versions later (the one this reader knew is pruned by now), the newest is found
    writer = SPAWN.Process(target=_write_versions, args=(str(tmp_path), "walk", 3 * KEEP_VERSIONS))
    writer.start()
    writer.join(60)
    _age(tmp_path / "walk", 2 * PRUNE_AGE_S)
    VersionedStore(tmp_path).write("walk", {"i": "last"})  # prunes the aged versions, oldest first
    left = sorted(int(p.stem) for p in (tmp_path / "walk").iterdir())
    assert left == list(range(left[0], left[-1] + 1)), "the versions left are contiguous"
    assert len(left) == KEEP_VERSIONS and not (tmp_path / "walk" / f"{1:012d}.json").exists()
    latest = reader.read("walk")
    assert latest.doc == {"i": "last"} and latest.version == 2 + 3 * KEEP_VERSIONS


def test_conflicts_deletes_and_etags(tmp_path: Path) -> None:
    a, b = VersionedStore(tmp_path), VersionedStore(tmp_path)
    first = a.write("wave", {"labels": ["wave"]}, if_version=0)
    with pytest.raises(VersionConflict) as conflict:
        b.write("wave", {"labels": ["other"]}, if_version=0)  # "create" of a document that exists
    assert conflict.value.current.version == first.version
    second = b.write("wave", {"labels": ["wave", "clap"]}, if_version=first.version)
    with pytest.raises(VersionConflict):
        a.write("wave", {"labels": []}, if_version=first.version)  # a's copy is stale
    assert a.read("wave").doc == {"labels": ["wave", "clap"]}
    gone = a.delete("wave", if_version=second.version)
    assert b.read("wave").doc is None and b.read("wave").version == gone.version == 3
    assert b.names() == [] and a.write("wave", {"labels": ["x"]}, if_version=3).version == 4
    assert a.names() == ["wave"]
    assert parse_etag(etag(4)) == 4 and parse_etag('W/"4"') == 4 and parse_etag(None) is None
    with pytest.raises(ValueError):
        parse_etag("*nope")
    for bad in ("../etc", "", ".hidden", "a/b", "x" * 65):
        with pytest.raises(ValueError):
            a.read(bad)


def test_ids_cannot_name_another_file() -> None:
    rid = new_id()
    assert check_id(rid) and len(rid) == 32
    for bad in ("../" + rid[3:], rid.upper(), rid + ".json", rid[:-1], "", "a" * 31 + "/"):
        assert not check_id(bad), bad


def test_expiry_by_age_and_count(tmp_path: Path) -> None:
    now = time.time()
    ages = {"old.webm": 7200, "old-dir": 7200, "mid.webm": 600, "new1.webm": 10, "new2.webm": 5}
    for name, age in ages.items():
        path = tmp_path / name
        if name.endswith("dir"):
            path.mkdir()
            (path / "x").write_text("x")
        else:
            path.write_bytes(b"v")
        os.utime(path, (now - age, now - age))
    stale_temp = tmp_path / ".tmp-abc"
    stale_temp.write_bytes(b"")
    os.utime(stale_temp, (now - 7200, now - 7200))
    expiry = Expiry(tmp_path, max_age_s=3600, keep=2)
    assert expiry.expired(tmp_path / "old.webm") and not expiry.expired(tmp_path / "new1.webm")
    assert not expiry.expired(tmp_path / "missing")
    assert expiry.run() == 4  # two by age, the temp file by age, mid.webm beyond the newest two
    assert sorted(p.name for p in tmp_path.iterdir()) == ["new1.webm", "new2.webm"]
    (tmp_path / "old.webm").write_bytes(b"v")
    os.utime(tmp_path / "old.webm", (now - 7200, now - 7200))
    assert expiry.run() == 0, "at most once a minute unless forced"
    assert expiry.run(force=True) == 1


def test_documents_are_json_on_disk(tmp_path: Path) -> None:
    """Operators can read (and back up) the store with ordinary tools."""
    store = VersionedStore(tmp_path)
    store.write("set", {"a": 1})
    files = list((tmp_path / "set").iterdir())
    assert len(files) == 1 and json.loads(files[0].read_text()) == {"a": 1}
