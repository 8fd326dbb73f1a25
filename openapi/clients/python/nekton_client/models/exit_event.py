from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Self, TypeVar, cast

from attrs import define as _attrs_define
from attrs import field as _attrs_field

from ..models.job_state import JobState
from ..types import UNSET, Unset

if TYPE_CHECKING:
    from ..models.outcome_view import OutcomeView
    from ..models.usage_view import UsageView


T = TypeVar("T", bound="ExitEvent")


@_attrs_define
class ExitEvent:
    """Payload of the SSE `exit` event, the last event of a job's stream.

    Attributes:
        attempt (int):
        state (JobState): The states of a job; see ARCHITECTURE.md for the diagram.
        outcome (None | OutcomeView | Unset):
        usage (None | Unset | UsageView):
    """

    attempt: int
    state: JobState
    outcome: None | OutcomeView | Unset = UNSET
    usage: None | Unset | UsageView = UNSET
    additional_properties: dict[str, Any] = _attrs_field(init=False, factory=dict)

    def to_dict(self) -> dict[str, Any]:
        from ..models.outcome_view import OutcomeView
        from ..models.usage_view import UsageView

        attempt = self.attempt

        state = self.state.value

        outcome: dict[str, Any] | None | Unset
        if isinstance(self.outcome, Unset):
            outcome = UNSET
        elif isinstance(self.outcome, OutcomeView):
            outcome = self.outcome.to_dict()
        else:
            outcome = self.outcome

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
                "state": state,
            }
        )
        if outcome is not UNSET:
            field_dict["outcome"] = outcome
        if usage is not UNSET:
            field_dict["usage"] = usage

        return field_dict

    @classmethod
    def from_dict(cls, src_dict: Mapping[str, Any]) -> Self:
        from ..models.outcome_view import OutcomeView
        from ..models.usage_view import UsageView

        d = dict(src_dict)
        attempt = d.pop("attempt")

        state = JobState(d.pop("state"))

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

        exit_event = cls(
            attempt=attempt,
            state=state,
            outcome=outcome,
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
