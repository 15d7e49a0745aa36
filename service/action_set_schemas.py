"""Wire models of the action-set resources (``/action-sets``; docs/api.md)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from service.store import Versioned
from skeleton.prototypes import CheckOutcome


class ActionSetCreate(BaseModel):
    name: str = Field(description="1-64 letters, digits, '_', '.' or '-'; the set is then model=set:NAME")
    embedding: str | None = Field(
        default=None, description="embedding model (GET /models, kind embedding); default: the first loaded"
    )


class Rename(BaseModel):
    name: str = Field(description="the new name")


class ExampleInfo(BaseModel):
    id: str
    windows: int = Field(description="model windows pooled into the example's vector")
    seconds: float = Field(description="how long the person is seen in it")
    spread: float | None = Field(
        default=None,
        description="how closely its windows agree (10th percentile of their cosines to its vector); "
        "a window's unknown score is its cosine over its label's mean spread",
    )
    source: dict[str, Any] = Field(description="video/skeleton/stream, and the span used (start, end in s)")
    added: str
    embedding_sha256: str | None = Field(
        default=None,
        description="the embedding export that made its vector (its manifest's ONNX sha256); "
        "a set with examples of another export answers 409 stale_examples",
    )


class LabelInfo(BaseModel):
    name: str
    examples: list[ExampleInfo]


class ActionSet(BaseModel):
    name: str
    model: str = Field(description="the name to use in /recognize and /stream: set:NAME")
    embedding: str
    version: int = Field(description="grows with every change; its ETag is the If-Match of a write")
    created: str
    updated: str
    labels: list[LabelInfo]

    @classmethod
    def of(cls, saved: Versioned) -> ActionSet:
        doc = saved.doc or {}
        labels = [
            LabelInfo(name=k, examples=[ExampleInfo(**_info(e)) for e in v]) for k, v in doc["labels"].items()
        ]
        return cls(
            name=doc["name"],
            model=f"set:{doc['name']}",
            embedding=doc["embedding"],
            version=saved.version,
            created=doc["created"],
            updated=doc.get("updated", doc["created"]),
            labels=labels,
        )


class ActionSetList(BaseModel):
    sets: list[ActionSet]


class ExampleAdded(BaseModel):
    set: str
    label: str
    version: int
    example: ExampleInfo


class ExampleCheckInfo(BaseModel):
    id: str
    label: str
    outcome: CheckOutcome = Field(
        description="judged by the set's other examples: right (its own label), confused (another "
        "label), unknown (no label's bar); its label's only example: distinct (no other label takes it) "
        "or overlaps (another label would)"
    )
    nearest: str = Field(description="the label the other examples give it, before the bar")
    score: float | None = Field(description="its relative cosine to that label (null: nothing to compare)")


class ActionSetCheck(BaseModel):
    name: str
    version: int
    unknown_threshold: float | None = Field(
        description="the bar used: the set's (the embedding manifest's) or the request's; null: -inf (none)"
    )
    outcomes: dict[str, int] = Field(description="examples per outcome")
    examples: list[ExampleCheckInfo]


def _info(item: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in item.items() if k != "vector"}


class EnrolMessage(BaseModel):
    """Client -> server on ``/stream``: add the last ``seconds`` of a person to a set's label."""

    type: Literal["enrol"]
    action_set: str
    label: str
    seconds: float = Field(default=3.0, gt=0, le=10.0, description="how far back (at most 10 s are kept)")
    track_id: int | None = Field(default=None, description="whose (default: the one person in view)")


class EnrolledMessage(BaseModel):
    """Server -> client: the example was added (then a new hello when the stream runs that set)."""

    type: Literal["enrolled"] = "enrolled"
    action_set: str
    label: str
    version: int
    example: ExampleInfo
