from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Self, TypeVar, cast

from attrs import define as _attrs_define
from attrs import field as _attrs_field

from ..types import UNSET, Unset

if TYPE_CHECKING:
    from ..models.capped_text import CappedText
    from ..models.usage_view import UsageView


T = TypeVar("T", bound="BuildResult")


@_attrs_define
class BuildResult:
    """How the build step ended.

    Attributes:
        exit_code (int | None):
        output (CappedText): Some of a stream's bytes, as text.
        reason (str): The build's outcome reason (`exited`, `wall_timeout`, ...).
        signal (int | None):
        succeeded (bool): True when it exited 0 and the cases ran on its result.
        usage (UsageView): The resource bill of a job's last attempt. Fields a backend cannot measure are null. Stored
            as
            JSON in `job_attempts.usage` and sent as is (`UsageView` in the API).
        detail (None | str | Unset):
    """

    exit_code: int | None
    output: CappedText
    reason: str
    signal: int | None
    succeeded: bool
    usage: UsageView
    detail: None | str | Unset = UNSET
    additional_properties: dict[str, Any] = _attrs_field(init=False, factory=dict)

    def to_dict(self) -> dict[str, Any]:
        exit_code: int | None
        exit_code = self.exit_code

        output = self.output.to_dict()

        reason = self.reason

        signal: int | None
        signal = self.signal

        succeeded = self.succeeded

        usage = self.usage.to_dict()

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
                "output": output,
                "reason": reason,
                "signal": signal,
                "succeeded": succeeded,
                "usage": usage,
            }
        )
        if detail is not UNSET:
            field_dict["detail"] = detail

        return field_dict

    @classmethod
    def from_dict(cls, src_dict: Mapping[str, Any]) -> Self:
        from ..models.capped_text import CappedText
        from ..models.usage_view import UsageView

        d = dict(src_dict)

        def _parse_exit_code(data: object) -> int | None:
            if data is None:
                return data
            return cast(int | None, data)

        exit_code = _parse_exit_code(d.pop("exit_code"))

        output = CappedText.from_dict(d.pop("output"))

        reason = d.pop("reason")

        def _parse_signal(data: object) -> int | None:
            if data is None:
                return data
            return cast(int | None, data)

        signal = _parse_signal(d.pop("signal"))

        succeeded = d.pop("succeeded")

        usage = UsageView.from_dict(d.pop("usage"))

        def _parse_detail(data: object) -> None | str | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            return cast(None | str | Unset, data)

        detail = _parse_detail(d.pop("detail", UNSET))

        build_result = cls(
            exit_code=exit_code,
            output=output,
            reason=reason,
            signal=signal,
            succeeded=succeeded,
            usage=usage,
            detail=detail,
        )

        build_result.additional_properties = d
        return build_result

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
