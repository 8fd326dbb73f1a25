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
    from ..models.job_output import JobOutput
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
        finished_at (datetime.datetime | None):
        id (UUID): UUIDv7: ordered by creation time.
        labels (JobLabels):
        max_attempts (int):
        outcome (None | OutcomeView):
        priority (int):
        program (str): The module digest or image reference the job runs.
        queue (str):
        started_at (datetime.datetime | None): When the current (or last) attempt started.
        state (JobState): The states of a job; see ARCHITECTURE.md for the diagram.
        usage (None | UsageView):
        batch_id (None | Unset | UUID):
        output (JobOutput | None | Unset):
        suite (bool | Unset): True for a test-suite job (submitted with `tests`): its cases are at
            `GET /v1/jobs/{id}/cases`. Absent otherwise.
        trace_id (None | str | Unset): The W3C trace id of the job (32 lowercase hex digits): the caller's, when the
            submission
            carried a valid `traceparent` header, else a new one. The spans of the submission and of
            every attempt (claim, run, completion) belong to this trace (exported over OTLP when the
            operator configured it). Absent for jobs stored before nekton kept trace ids. Example:
            4bf92f3577b34da6a3ce929d0e0e4736.
    """

    attempt: int
    cancel_requested: bool
    created_at: datetime.datetime
    finished_at: datetime.datetime | None
    id: UUID
    labels: JobLabels
    max_attempts: int
    outcome: None | OutcomeView
    priority: int
    program: str
    queue: str
    started_at: datetime.datetime | None
    state: JobState
    usage: None | UsageView
    batch_id: None | Unset | UUID = UNSET
    output: JobOutput | None | Unset = UNSET
    suite: bool | Unset = UNSET
    trace_id: None | str | Unset = UNSET
    additional_properties: dict[str, Any] = _attrs_field(init=False, factory=dict)

    def to_dict(self) -> dict[str, Any]:
        from ..models.job_output import JobOutput
        from ..models.outcome_view import OutcomeView
        from ..models.usage_view import UsageView

        attempt = self.attempt

        cancel_requested = self.cancel_requested

        created_at = self.created_at.isoformat()

        finished_at: None | str
        if isinstance(self.finished_at, datetime.datetime):
            finished_at = self.finished_at.isoformat()
        else:
            finished_at = self.finished_at

        id = str(self.id)

        labels = self.labels.to_dict()

        max_attempts = self.max_attempts

        outcome: dict[str, Any] | None
        if isinstance(self.outcome, OutcomeView):
            outcome = self.outcome.to_dict()
        else:
            outcome = self.outcome

        priority = self.priority

        program = self.program

        queue = self.queue

        started_at: None | str
        if isinstance(self.started_at, datetime.datetime):
            started_at = self.started_at.isoformat()
        else:
            started_at = self.started_at

        state = self.state.value

        usage: dict[str, Any] | None
        if isinstance(self.usage, UsageView):
            usage = self.usage.to_dict()
        else:
            usage = self.usage

        batch_id: None | str | Unset
        if isinstance(self.batch_id, Unset):
            batch_id = UNSET
        elif isinstance(self.batch_id, UUID):
            batch_id = str(self.batch_id)
        else:
            batch_id = self.batch_id

        output: dict[str, Any] | None | Unset
        if isinstance(self.output, Unset):
            output = UNSET
        elif isinstance(self.output, JobOutput):
            output = self.output.to_dict()
        else:
            output = self.output

        suite = self.suite

        trace_id: None | str | Unset
        if isinstance(self.trace_id, Unset):
            trace_id = UNSET
        else:
            trace_id = self.trace_id

        field_dict: dict[str, Any] = {}
        field_dict.update(self.additional_properties)
        field_dict.update(
            {
                "attempt": attempt,
                "cancel_requested": cancel_requested,
                "created_at": created_at,
                "finished_at": finished_at,
                "id": id,
                "labels": labels,
                "max_attempts": max_attempts,
                "outcome": outcome,
                "priority": priority,
                "program": program,
                "queue": queue,
                "started_at": started_at,
                "state": state,
                "usage": usage,
            }
        )
        if batch_id is not UNSET:
            field_dict["batch_id"] = batch_id
        if output is not UNSET:
            field_dict["output"] = output
        if suite is not UNSET:
            field_dict["suite"] = suite
        if trace_id is not UNSET:
            field_dict["trace_id"] = trace_id

        return field_dict

    @classmethod
    def from_dict(cls, src_dict: Mapping[str, Any]) -> Self:
        from ..models.job_labels import JobLabels
        from ..models.job_output import JobOutput
        from ..models.outcome_view import OutcomeView
        from ..models.usage_view import UsageView

        d = dict(src_dict)
        attempt = d.pop("attempt")

        cancel_requested = d.pop("cancel_requested")

        created_at = datetime.datetime.fromisoformat(d.pop("created_at"))

        def _parse_finished_at(data: object) -> datetime.datetime | None:
            if data is None:
                return data
            try:
                if not isinstance(data, str):
                    raise TypeError()
                finished_at_type_0 = datetime.datetime.fromisoformat(data)

                return finished_at_type_0
            except (TypeError, ValueError, AttributeError, KeyError):
                pass
            return cast(datetime.datetime | None, data)

        finished_at = _parse_finished_at(d.pop("finished_at"))

        id = UUID(d.pop("id"))

        labels = JobLabels.from_dict(d.pop("labels"))

        max_attempts = d.pop("max_attempts")

        def _parse_outcome(data: object) -> None | OutcomeView:
            if data is None:
                return data
            try:
                if not isinstance(data, dict):
                    raise TypeError()
                outcome_type_0 = OutcomeView.from_dict(data)

                return outcome_type_0
            except (TypeError, ValueError, AttributeError, KeyError):
                pass
            return cast(None | OutcomeView, data)

        outcome = _parse_outcome(d.pop("outcome"))

        priority = d.pop("priority")

        program = d.pop("program")

        queue = d.pop("queue")

        def _parse_started_at(data: object) -> datetime.datetime | None:
            if data is None:
                return data
            try:
                if not isinstance(data, str):
                    raise TypeError()
                started_at_type_0 = datetime.datetime.fromisoformat(data)

                return started_at_type_0
            except (TypeError, ValueError, AttributeError, KeyError):
                pass
            return cast(datetime.datetime | None, data)

        started_at = _parse_started_at(d.pop("started_at"))

        state = JobState(d.pop("state"))

        def _parse_usage(data: object) -> None | UsageView:
            if data is None:
                return data
            try:
                if not isinstance(data, dict):
                    raise TypeError()
                usage_type_0 = UsageView.from_dict(data)

                return usage_type_0
            except (TypeError, ValueError, AttributeError, KeyError):
                pass
            return cast(None | UsageView, data)

        usage = _parse_usage(d.pop("usage"))

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

        def _parse_output(data: object) -> JobOutput | None | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            try:
                if not isinstance(data, dict):
                    raise TypeError()
                output_type_0 = JobOutput.from_dict(data)

                return output_type_0
            except (TypeError, ValueError, AttributeError, KeyError):
                pass
            return cast(JobOutput | None | Unset, data)

        output = _parse_output(d.pop("output", UNSET))

        suite = d.pop("suite", UNSET)

        def _parse_trace_id(data: object) -> None | str | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            return cast(None | str | Unset, data)

        trace_id = _parse_trace_id(d.pop("trace_id", UNSET))

        job = cls(
            attempt=attempt,
            cancel_requested=cancel_requested,
            created_at=created_at,
            finished_at=finished_at,
            id=id,
            labels=labels,
            max_attempts=max_attempts,
            outcome=outcome,
            priority=priority,
            program=program,
            queue=queue,
            started_at=started_at,
            state=state,
            usage=usage,
            batch_id=batch_id,
            output=output,
            suite=suite,
            trace_id=trace_id,
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
