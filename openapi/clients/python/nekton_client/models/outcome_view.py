from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Self, TypeVar, cast

from attrs import define as _attrs_define
from attrs import field as _attrs_field

from ..models.outcome_view_reason import OutcomeViewReason
from ..types import UNSET, Unset

if TYPE_CHECKING:
    from ..models.suite_summary import SuiteSummary


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
        tests (None | SuiteSummary | Unset):
    """

    exit_code: int | None
    reason: OutcomeViewReason
    signal: int | None
    detail: None | str | Unset = UNSET
    tests: None | SuiteSummary | Unset = UNSET
    additional_properties: dict[str, Any] = _attrs_field(init=False, factory=dict)

    def to_dict(self) -> dict[str, Any]:
        from ..models.suite_summary import SuiteSummary

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

        tests: dict[str, Any] | None | Unset
        if isinstance(self.tests, Unset):
            tests = UNSET
        elif isinstance(self.tests, SuiteSummary):
            tests = self.tests.to_dict()
        else:
            tests = self.tests

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
        if tests is not UNSET:
            field_dict["tests"] = tests

        return field_dict

    @classmethod
    def from_dict(cls, src_dict: Mapping[str, Any]) -> Self:
        from ..models.suite_summary import SuiteSummary

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

        def _parse_tests(data: object) -> None | SuiteSummary | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            try:
                if not isinstance(data, dict):
                    raise TypeError()
                tests_type_0 = SuiteSummary.from_dict(data)

                return tests_type_0
            except (TypeError, ValueError, AttributeError, KeyError):
                pass
            return cast(None | SuiteSummary | Unset, data)

        tests = _parse_tests(d.pop("tests", UNSET))

        outcome_view = cls(
            exit_code=exit_code,
            reason=reason,
            signal=signal,
            detail=detail,
            tests=tests,
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
