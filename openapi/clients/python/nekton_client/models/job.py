from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Self, TypeVar, cast
from uuid import UUID

from attrs import define as _attrs_define
from attrs import field as _attrs_field

from ..models.job_state import JobState
from ..types import UNSET, Unset

if TYPE_CHECKING:
    from ..models.job_labels import JobLabels
    from ..models.outcome_view import OutcomeView
    from ..models.usage_view import UsageView


T = TypeVar("T", bound="Job")


@_attrs_define
class Job:
    """A job record.

    Attributes:
        attempt (int): The current (or last) attempt; 0 while it has never run.
        cancel_requested (bool):
        created_at (datetime.datetime):
        id (UUID): UUIDv7: ordered by creation time.
        labels (JobLabels):
        max_attempts (int):
        priority (int):
        program (str): The module digest or image reference the job runs.
        queue (str):
        state (JobState): The states of a job; see ARCHITECTURE.md for the diagram.
        batch_id (None | Unset | UUID):
        finished_at (datetime.datetime | None | Unset):
        outcome (None | OutcomeView | Unset):
        started_at (datetime.datetime | None | Unset): When the current (or last) attempt started.
        usage (None | Unset | UsageView):
    """

    attempt: int
    cancel_requested: bool
    created_at: datetime.datetime
    id: UUID
    labels: JobLabels
    max_attempts: int
    priority: int
    program: str
    queue: str
    state: JobState
    batch_id: None | Unset | UUID = UNSET
    finished_at: datetime.datetime | None | Unset = UNSET
    outcome: None | OutcomeView | Unset = UNSET
    started_at: datetime.datetime | None | Unset = UNSET
    usage: None | Unset | UsageView = UNSET
    additional_properties: dict[str, Any] = _attrs_field(init=False, factory=dict)

    def to_dict(self) -> dict[str, Any]:
        from ..models.outcome_view import OutcomeView
        from ..models.usage_view import UsageView

        attempt = self.attempt

        cancel_requested = self.cancel_requested

        created_at = self.created_at.isoformat()

        id = str(self.id)

        labels = self.labels.to_dict()

        max_attempts = self.max_attempts

        priority = self.priority

        program = self.program

        queue = self.queue

        state = self.state.value

        batch_id: None | str | Unset
        if isinstance(self.batch_id, Unset):
            batch_id = UNSET
        elif isinstance(self.batch_id, UUID):
            batch_id = str(self.batch_id)
        else:
            batch_id = self.batch_id

        finished_at: None | str | Unset
        if isinstance(self.finished_at, Unset):
            finished_at = UNSET
        elif isinstance(self.finished_at, datetime.datetime):
            finished_at = self.finished_at.isoformat()
        else:
            finished_at = self.finished_at

        outcome: dict[str, Any] | None | Unset
        if isinstance(self.outcome, Unset):
            outcome = UNSET
        elif isinstance(self.outcome, OutcomeView):
            outcome = self.outcome.to_dict()
        else:
            outcome = self.outcome

        started_at: None | str | Unset
        if isinstance(self.started_at, Unset):
            started_at = UNSET
        elif isinstance(self.started_at, datetime.datetime):
            started_at = self.started_at.isoformat()
        else:
            started_at = self.started_at

        usage: dict[str, Any] | None | Unset
        if isinstance(self.usage, Unset):
            usage = UNSET
        elif isinstance(self.usage, UsageView):
            usage = self.usage.to_dict()
        else:
            usage = self.usage

        field_dict: dict[str, Any] = {}
        field_dict.update(self.additional_properties)
        field_dict.update(
            {
                "attempt": attempt,
                "cancel_requested": cancel_requested,
                "created_at": created_at,
                "id": id,
                "labels": labels,
                "max_attempts": max_attempts,
                "priority": priority,
                "program": program,
                "queue": queue,
                "state": state,
            }
        )
        if batch_id is not UNSET:
            field_dict["batch_id"] = batch_id
        if finished_at is not UNSET:
            field_dict["finished_at"] = finished_at
        if outcome is not UNSET:
            field_dict["outcome"] = outcome
        if started_at is not UNSET:
            field_dict["started_at"] = started_at
        if usage is not UNSET:
            field_dict["usage"] = usage

        return field_dict

    @classmethod
    def from_dict(cls, src_dict: Mapping[str, Any]) -> Self:
        from ..models.job_labels import JobLabels
        from ..models.outcome_view import OutcomeView
        from ..models.usage_view import UsageView

        d = dict(src_dict)
        attempt = d.pop("attempt")

        cancel_requested = d.pop("cancel_requested")

        created_at = datetime.datetime.fromisoformat(d.pop("created_at"))

        id = UUID(d.pop("id"))

        labels = JobLabels.from_dict(d.pop("labels"))

        max_attempts = d.pop("max_attempts")

        priority = d.pop("priority")

        program = d.pop("program")

        queue = d.pop("queue")

        state = JobState(d.pop("state"))

        def _parse_batch_id(data: object) -> None | Unset | UUID:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            try:
                if not isinstance(data, str):
                    raise TypeError()
                batch_id_type_0 = UUID(data)

                return batch_id_type_0
            except (TypeError, ValueError, AttributeError, KeyError):
                pass
            return cast(None | Unset | UUID, data)

        batch_id = _parse_batch_id(d.pop("batch_id", UNSET))

        def _parse_finished_at(data: object) -> datetime.datetime | None | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            try:
                if not isinstance(data, str):
                    raise TypeError()
                finished_at_type_0 = datetime.datetime.fromisoformat(data)

                return finished_at_type_0
            except (TypeError, ValueError, AttributeError, KeyError):
                pass
            return cast(datetime.datetime | None | Unset, data)

        finished_at = _parse_finished_at(d.pop("finished_at", UNSET))

        def _parse_outcome(data: object) -> None | OutcomeView | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            try:
                if not isinstance(data, dict):
                    raise TypeError()
                outcome_type_0 = OutcomeView.from_dict(data)

                return outcome_type_0
            except (TypeError, ValueError, AttributeError, KeyError):
                pass
            return cast(None | OutcomeView | Unset, data)

        outcome = _parse_outcome(d.pop("outcome", UNSET))

        def _parse_started_at(data: object) -> datetime.datetime | None | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            try:
                if not isinstance(data, str):
                    raise TypeError()
                started_at_type_0 = datetime.datetime.fromisoformat(data)

                return started_at_type_0
            except (TypeError, ValueError, AttributeError, KeyError):
                pass
            return cast(datetime.datetime | None | Unset, data)

        started_at = _parse_started_at(d.pop("started_at", UNSET))

        def _parse_usage(data: object) -> None | Unset | UsageView:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            try:
                if not isinstance(data, dict):
                    raise TypeError()
                usage_type_0 = UsageView.from_dict(data)

                return usage_type_0
            except (TypeError, ValueError, AttributeError, KeyError):
                pass
            return cast(None | Unset | UsageView, data)

        usage = _parse_usage(d.pop("usage", UNSET))

        job = cls(
            attempt=attempt,
            cancel_requested=cancel_requested,
            created_at=created_at,
            id=id,
            labels=labels,
            max_attempts=max_attempts,
            priority=priority,
            program=program,
            queue=queue,
            state=state,
            batch_id=batch_id,
            finished_at=finished_at,
            outcome=outcome,
            started_at=started_at,
            usage=usage,
        )

        job.additional_properties = d
        return job

    @property
    def additional_keys(self) -> list[str]:
        return list(self.additional_properties.keys())

    def __getitem__(self, key: str) -> Any:
        return self.additional_properties[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self.additional_properties[key] = value

    def __delitem__(self, key: str) -> None:
        del self.additional_properties[key]

    def __contains__(self, key: str) -> bool:
        return key in self.additional_properties
