"""An example for an action set from a clip (a video or skeleton JSON), optionally a span of it.

The clip goes through the very pass of ``POST /recognize`` (`ClipJob`: decode, pose, tracking,
blips dropped, fragments stitched, the primary person chosen), with a batcher that classifies
nothing. The example is then the chosen person's frames inside ``[start, end]``, cut into the
embedding's windows on the service's schedule (`skeleton.clip.window_ends`), embedded, and pooled
into one unit vector (`skeleton.prototypes.pool`): the query path of the set, so an example and
what it is later compared with are made the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from service.action_set_schemas import EnrolledMessage, EnrolMessage, ExampleInfo
from service.action_sets import SET_PREFIX, Example, check_label
from service.batching import BatchResult
from service.clips.job import ClipJob, ClipOutcome
from service.clips.result import clip_sequences
from service.core.errors import ServiceError
from service.registry import LoadedModel
from service.schemas import SkeletonSequenceIn
from service.state import ServiceState
from service.streams.session import StreamSession
from skeleton.clip import window_ends
from skeleton.preprocess import prepare_window, sequence_to_layout
from skeleton.prototypes import pool, spread

__all__ = ["MIN_WINDOW_SHARE", "Span", "from_skeletons", "from_video"]

# an example must show its person for at least this share of one window (the rest is held still)
MIN_WINDOW_SHARE = 0.5


@dataclasses.dataclass(frozen=True)
class Span:
    """Which part of the clip, and whether exactly one person must be in it."""

    start: float | None = None
    end: float | None = None
    one_person: bool = False

    def check(self) -> Span:
        if self.start is not None and self.end is not None and self.end <= self.start:
            raise ServiceError(
                422,
                "invalid_span",
                f"end {self.end} is not after start {self.start}",
                "send start < end, in seconds from the clip's beginning",
            )
        return self


class _NoClassify:
    """A batcher that answers every window with one dummy probability: the pass only tracks."""

    async def submit(self, windows: np.ndarray) -> BatchResult:
        n = windows.shape[0]
        return BatchResult(np.ones((n, 1), np.float32), n, 0, 0.0, 0.0)

    def add_producer(self) -> None: ...

    def remove_producer(self) -> None: ...

    def producing(self) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext()

    def start(self) -> None: ...

    async def close(self) -> None: ...


def _tracking_only(embedding: LoadedModel) -> LoadedModel:
    manifest = embedding.manifest.model_copy(update={"labels": ["person"], "label_groups": {}})
    return dataclasses.replace(embedding, manifest=manifest, batcher=_NoClassify())


async def from_video(
    state: ServiceState, embedding: LoadedModel, path: Path, filename: str, span: Span
) -> Example:
    job = ClipJob(state, _tracking_only(embedding))
    outcome, _ = await job.video_pass(path, filename, until_s=span.end)
    return await _example(state, embedding, outcome, span, {"kind": "video", "filename": filename})


async def from_skeletons(
    state: ServiceState, embedding: LoadedModel, seq: SkeletonSequenceIn, span: Span
) -> Example:
    outcome = await ClipJob(state, _tracking_only(embedding)).skeletons_pass(seq)
    return await _example(state, embedding, outcome, span, {"kind": "skeleton", "frames": len(seq.frames)})


async def _example(
    state: ServiceState, emb: LoadedModel, outcome: ClipOutcome, span: Span, source: dict[str, Any]
) -> Example:
    joined, _, primary = clip_sequences(outcome, state.settings)
    if not joined or primary is None:
        raise ServiceError(
            422,
            "nobody_found",
            "nobody was found in the clip",
            "film the whole body, well lit, one person acting",
        )
    if span.one_person and len(joined) > 1:
        raise ServiceError(
            422,
            "several_people",
            f"{len(joined)} people were found, one was asked for",
            "send a clip with only the person acting, or leave one_person off",
        )
    seq = joined[primary]
    t = seq.timestamps
    lo = -np.inf if span.start is None else span.start
    hi = np.inf if span.end is None else span.end
    inside = (t >= lo) & (t <= hi)
    seen = inside & np.isfinite(seq.image[:, :, :2]).all(axis=(1, 2))
    window = emb.window
    need = MIN_WINDOW_SHARE * window.seconds
    if not seen.any():
        raise ServiceError(
            422,
            "nobody_found",
            f"nobody was seen between {span.start} and {span.end} s",
            "check start and end (seconds from the clip's beginning)",
        )
    t0, t1 = float(t[seen][0]), float(t[seen][-1])
    if t1 - t0 < need:
        raise ServiceError(
            422,
            "example_too_short",
            f"the person is seen for {t1 - t0:.2f} s; an example needs {need:.2f} s",
            f"send at least {need:.2f} s, ideally {window.seconds:.2f} s or more, of the action",
        )
    joints = sequence_to_layout(seq, emb.manifest.input, float(outcome.height))[inside]
    vector, n, agree = await _pooled(emb, t[inside], joints, t0, t1)
    span_info = {"start": round(t0, 3), "end": round(t1, 3), "people": len(joined)}
    return Example(vector, n, t1 - t0, {**source, **span_info}, agree)


async def _pooled(
    emb: LoadedModel, times: np.ndarray, joints: np.ndarray, t0: float, t1: float
) -> tuple[np.ndarray, int, float]:
    """The embedding's windows from ``t0`` to ``t1`` (the service's schedule), pooled; with their
    spread around the pooled vector (``skeleton.prototypes.spread``)."""
    window = emb.window
    ends = window_ends(t0, t1, window.seconds, window.hop_s)
    spec = emb.manifest.input
    windows = np.stack([prepare_window(times, joints, spec, float(e)) for e in ends])
    vectors = (await emb.batcher.submit(windows)).probs
    vector = pool(vectors)
    return vector, len(ends), spread(vectors, vector)


async def from_stream(state: ServiceState, session: StreamSession, msg: EnrolMessage) -> EnrolledMessage:
    """An example from a stream's recent seconds of one person; added to the set."""
    check_label(msg.label)
    loop = asyncio.get_running_loop()
    sets = state.action_sets
    current = await loop.run_in_executor(state.io_pool, sets.read, msg.action_set)
    emb = sets.embedding_model((current.doc or {})["embedding"])
    if emb.manifest.input not in session.model.specs:
        raise ServiceError(
            422,
            "stream_model_mismatch",
            f"this stream runs {session.model.name}, whose windows are not those of {emb.name}",
            f"stream model={SET_PREFIX}{msg.action_set} (alone or next to a base model) to enrol from it",
        )
    people = session.tracks.open
    if msg.track_id is not None and msg.track_id not in people:
        raise ServiceError(
            422, "nobody_found", f"track {msg.track_id} is not in view", "use a track_id of the last frame"
        )
    if msg.track_id is None and len(people) != 1:
        if not people:
            raise ServiceError(422, "nobody_found", "nobody is in view", "step into the camera's view")
        raise ServiceError(
            422, "several_people", f"{len(people)} people are in view", "name one with track_id"
        )
    track_id = msg.track_id if msg.track_id is not None else next(iter(people))
    recent = people[track_id].buffer.recent(msg.seconds, emb.manifest.input)
    assert recent is not None  # the stream's model reads the embedding's input (checked above)
    times, joints, seen = recent
    need = MIN_WINDOW_SHARE * emb.window.seconds
    t0, t1 = (float(times[seen][0]), float(times[seen][-1])) if seen.any() else (0.0, 0.0)
    if t1 - t0 < need:
        raise ServiceError(
            422,
            "example_too_short",
            f"the person was seen for {t1 - t0:.2f} s; an example needs {need:.2f} s",
            "act a little longer, then send the message",
        )
    vector, n, agree = await _pooled(emb, times, joints, t0, t1)
    example = Example(
        vector,
        n,
        t1 - t0,
        {"kind": "stream", "track_id": track_id, "start": round(t0, 3), "end": round(t1, 3)},
        agree,
    )
    saved, item = await loop.run_in_executor(
        state.io_pool, sets.add_example, msg.action_set, msg.label, example
    )
    info = ExampleInfo(**{k: v for k, v in item.items() if k != "vector"})
    return EnrolledMessage(action_set=msg.action_set, label=msg.label, version=saved.version, example=info)
