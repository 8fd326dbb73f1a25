from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Self, TypeVar, cast

from attrs import define as _attrs_define
from attrs import field as _attrs_field

from ..models.outcome_view_reason import OutcomeViewReason
from ..types import UNSET, Unset

T = TypeVar("T", bound="OutcomeView")


@_attrs_define
class OutcomeView:
    """How a job ended.

    Attributes:
        exit_code (int | None):
        reason (OutcomeViewReason): Why the job ended. Only `worker_lost` and `internal_error` (the infrastructure's
            failures) are retried.
        signal (int | None):
        detail (None | str | Unset): Human-readable detail: the trap, the limit that fired, the error.
    """

    exit_code: int | None
    reason: OutcomeViewReason
    signal: int | None
    detail: None | str | Unset = UNSET
    additional_properties: dict[str, Any] = _attrs_field(init=False, factory=dict)

    def to_dict(self) -> dict[str, Any]:
        exit_code: int | None
        exit_code = self.exit_code

        reason = self.reason.value

        signal: int | None
        signal = self.signal

        detail: None | str | Unset
        if isinstance(self.detail, Unset):
            detail = UNSET
        else:
            detail = self.detail

        field_dict: dict[str, Any] = {}
        field_dict.update(self.additional_properties)
        field_dict.update(
            {
                "exit_code": exit_code,
                "reason": reason,
                "signal": signal,
            }
        )
        if detail is not UNSET:
            field_dict["detail"] = detail

        return field_dict

    @classmethod
    def from_dict(cls, src_dict: Mapping[str, Any]) -> Self:
        d = dict(src_dict)

        def _parse_exit_code(data: object) -> int | None:
            if data is None:
                return data
            return cast(int | None, data)

        exit_code = _parse_exit_code(d.pop("exit_code"))

        reason = OutcomeViewReason(d.pop("reason"))

        def _parse_signal(data: object) -> int | None:
            if data is None:
                return data
            return cast(int | None, data)

        signal = _parse_signal(d.pop("signal"))

        def _parse_detail(data: object) -> None | str | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            return cast(None | str | Unset, data)

        detail = _parse_detail(d.pop("detail", UNSET))

        outcome_view = cls(
            exit_code=exit_code,
            reason=reason,
            signal=signal,
            detail=detail,
        )

        outcome_view.additional_properties = d
        return outcome_view

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
