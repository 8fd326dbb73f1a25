from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Self, TypeVar, cast

from attrs import define as _attrs_define
from attrs import field as _attrs_field

from ..models.job_state import JobState

if TYPE_CHECKING:
    from ..models.outcome_view import OutcomeView
    from ..models.usage_view import UsageView


T = TypeVar("T", bound="ExitEvent")


@_attrs_define
class ExitEvent:
    """Payload of the SSE `exit` event, the last event of a job's stream.

    Attributes:
        attempt (int):
        outcome (None | OutcomeView):
        state (JobState): The states of a job; see ARCHITECTURE.md for the diagram.
        usage (None | UsageView):
    """

    attempt: int
    outcome: None | OutcomeView
    state: JobState
    usage: None | UsageView
    additional_properties: dict[str, Any] = _attrs_field(init=False, factory=dict)

    def to_dict(self) -> dict[str, Any]:
        from ..models.outcome_view import OutcomeView
        from ..models.usage_view import UsageView

        attempt = self.attempt

        outcome: dict[str, Any] | None
        if isinstance(self.outcome, OutcomeView):
            outcome = self.outcome.to_dict()
        else:
            outcome = self.outcome

        state = self.state.value

        usage: dict[str, Any] | None
        if isinstance(self.usage, UsageView):
            usage = self.usage.to_dict()
        else:
            usage = self.usage

        field_dict: dict[str, Any] = {}
        field_dict.update(self.additional_properties)
        field_dict.update(
            {
                "attempt": attempt,
                "outcome": outcome,
                "state": state,
                "usage": usage,
            }
        )

        return field_dict

    @classmethod
    def from_dict(cls, src_dict: Mapping[str, Any]) -> Self:
        from ..models.outcome_view import OutcomeView
        from ..models.usage_view import UsageView

        d = dict(src_dict)
        attempt = d.pop("attempt")

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

        exit_event = cls(
            attempt=attempt,
            outcome=outcome,
            state=state,
            usage=usage,
        )

        exit_event.additional_properties = d
        return exit_event

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
