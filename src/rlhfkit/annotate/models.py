"""The annotation store's tables, as SQLAlchemy 2 declarative models.

Times are Unix seconds (floats): portable between SQLite and PostgreSQL and cheap to compare.
Texts that may be chat messages (prompt, responses) are stored as JSON.

The invariants the scheduler relies on are enforced by the database, not only by code:
- one assignment per (item, annotator): nobody sees an item twice;
- one label per assignment, per (item, annotator) and per (annotator, client_id): a replayed
  request can never store a label twice, even across a crash.
"""

from __future__ import annotations

from typing import Any, ClassVar

from sqlalchemy import JSON, Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

SCHEMA_VERSION = 2
"""Bump on every change to these tables; `store.open_store` migrates the versions listed in
`store.MIGRATIONS` and refuses any other."""

# Item kinds. Calibration items come from the main pool and are then labeled by everyone. A
# recheck is a copy of an earlier round's pair, labeled again in a `recalibrate
# --same-items` round (nobody labels one item twice); it is never exported, its original is.
MAIN, CALIBRATION, ANCHOR, RECHECK = "main", "calibration", "anchor", "recheck"
# Assignment states. `taken` on an item counts its open and done main assignments.
OPEN, DONE, EXPIRED = "open", "done", "expired"
# Labels relative to the stored pair: A is response_a. The agreement module's vocabulary.
LABEL_VALUES = ("A", "B", "tie", "both_bad")


class Base(DeclarativeBase):
    type_annotation_map: ClassVar = {dict[str, Any]: JSON, Any: JSON}


class Meta(Base):
    """Key/value facts about the store: schema version, the CSRF secret."""

    __tablename__ = "rlhfkit_meta"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class Annotator(Base):
    __tablename__ = "annotators"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    """sha256 of the login token; the token itself is printed once and never stored."""
    is_admin: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[float] = mapped_column(Float)
    label_count: Mapped[int] = mapped_column(Integer, default=0)
    calibrated_round: Mapped[int] = mapped_column(Integer, default=0)
    """The latest calibration round this annotator has finished (0: none)."""
    labels_at_calibration: Mapped[int] = mapped_column(Integer, default=0)
    """`label_count` when they finished it: recalibration is due `recalibrate_every` later."""
    # Schema 2. Removed from the round (`rlhfkit annotate remove`): no more tasks, their labels
    # leave the gate and the export; the row and the labels stay.
    removed_at: Mapped[float | None] = mapped_column(Float, default=None)
    removed_reason: Mapped[str | None] = mapped_column(Text, default=None)
    removed_by: Mapped[str | None] = mapped_column(String(64), default=None)


class Item(Base):
    __tablename__ = "items"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    external_id: Mapped[str] = mapped_column(String(200), unique=True)
    prompt: Mapped[Any] = mapped_column(JSON)
    response_a: Mapped[Any] = mapped_column(JSON)
    response_b: Mapped[Any] = mapped_column(JSON)
    kind: Mapped[str] = mapped_column(String(16))
    gold: Mapped[str | None] = mapped_column(String(16), default=None)
    """Anchors only: the known answer, one of LABEL_VALUES."""
    round: Mapped[int | None] = mapped_column(Integer, default=None)
    """Calibration items: the round they belong to."""
    taken: Mapped[int] = mapped_column(Integer, default=0)
    """Main items: open + done assignments; never above the project's overlap."""
    labels: Mapped[int] = mapped_column(Integer, default=0)
    source: Mapped[str] = mapped_column(String(500))
    """FILE:LINE the item was imported from."""
    extra: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    """The import row's other fields, passed through to the export."""
    created_at: Mapped[float] = mapped_column(Float)

    __table_args__ = (Index("ix_items_round", "round"),)


# The main queue, `kind = 'main' AND taken < k ORDER BY taken DESC, id`, is one index scan:
# items closest to their overlap come first, so finished items accumulate early.
Index("ix_items_queue", Item.kind, Item.taken.desc(), Item.id)


class Round(Base):
    """A calibration round: every annotator labels its items before (more) main items."""

    __tablename__ = "rounds"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    size: Mapped[int] = mapped_column(Integer)
    reason: Mapped[str] = mapped_column(Text)
    created_at: Mapped[float] = mapped_column(Float)
    gate_value: Mapped[float | None] = mapped_column(Float, default=None)
    gate_passed: Mapped[bool | None] = mapped_column(default=None)
    """None until two annotators have finished the round."""
    gate_annotators: Mapped[int] = mapped_column(Integer, default=0)
    evaluated_at: Mapped[float | None] = mapped_column(Float, default=None)
    override_reason: Mapped[str | None] = mapped_column(Text, default=None)
    override_by: Mapped[str | None] = mapped_column(String(64), default=None)
    override_at: Mapped[float | None] = mapped_column(Float, default=None)


class Assignment(Base):
    """A task: one item shown to one annotator, in a display order drawn for them."""

    __tablename__ = "assignments"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    """Random and unguessable: the task id the API hands out."""
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id"))
    annotator_id: Mapped[int] = mapped_column(ForeignKey("annotators.id"))
    swap: Mapped[bool] = mapped_column()
    """True: response_b is shown first."""
    phase: Mapped[str] = mapped_column(String(16))
    """'calibration' or 'main': what the annotator was doing (anchors occur in both)."""
    status: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[float] = mapped_column(Float)
    expires_at: Mapped[float] = mapped_column(Float)

    __table_args__ = (
        UniqueConstraint("item_id", "annotator_id", name="uq_assignment_item_annotator"),
        Index("ix_assignments_annotator_status", "annotator_id", "status"),
        Index("ix_assignments_status_expires", "status", "expires_at"),
    )


class Label(Base):
    __tablename__ = "labels"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    assignment_id: Mapped[str] = mapped_column(ForeignKey("assignments.id"), unique=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id"))
    annotator_id: Mapped[int] = mapped_column(ForeignKey("annotators.id"))
    choice: Mapped[str] = mapped_column(String(16))
    """As the annotator saw it: first, second, tie, both_bad."""
    label: Mapped[str] = mapped_column(String(16))
    """Relative to the stored pair: A, B, tie, both_bad."""
    shown_first: Mapped[str] = mapped_column(String(1))
    criteria: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    """Per-criterion choices, relative to the stored pair (A, B, tie)."""
    rationale: Mapped[str | None] = mapped_column(Text, default=None)
    client_id: Mapped[str] = mapped_column(String(100))
    request_hash: Mapped[str] = mapped_column(String(64))
    phase: Mapped[str] = mapped_column(String(16))
    rubric_version: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[float] = mapped_column(Float)
    seconds: Mapped[float] = mapped_column(Float)
    """From task handed out to label submitted."""

    __table_args__ = (
        UniqueConstraint("annotator_id", "client_id", name="uq_label_client"),
        UniqueConstraint("item_id", "annotator_id", name="uq_label_item_annotator"),
        Index("ix_labels_item", "item_id"),
    )


class Event(Base):
    """The audit log: imports, annotators added, rounds opened, gate overrides."""

    __tablename__ = "events"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[float] = mapped_column(Float)
    kind: Mapped[str] = mapped_column(String(32))
    actor: Mapped[str] = mapped_column(String(64))
    detail: Mapped[dict[str, Any]] = mapped_column(JSON)
