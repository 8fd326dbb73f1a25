from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Self, TypeVar, cast

from attrs import define as _attrs_define
from attrs import field as _attrs_field

from ..models.verdict import Verdict
from ..types import UNSET, Unset

if TYPE_CHECKING:
    from ..models.capped_text import CappedText
    from ..models.difference import Difference
    from ..models.usage_view import UsageView


T = TypeVar("T", bound="CaseResult")


@_attrs_define
class CaseResult:
    """A finished case.

    Attributes:
        exit_code (int | None):
        index (int): Its position in the suite (0-based).
        name (str):
        signal (int | None):
        stderr (CappedText): Some of a stream's bytes, as text.
        stdout (CappedText): Some of a stream's bytes, as text.
        usage (None | UsageView):
        verdict (Verdict): A case's verdict.
        weight (int): Its points when accepted.
        checker_message (None | str | Unset): The checker's stdout (cut to 1 KiB).
        detail (None | str | Unset): Why, in words ("exit code 3, expected 0", "killed by signal 11 (SIGSEGV)", the
            limit).
        difference (Difference | None | Unset):
    """

    exit_code: int | None
    index: int
    name: str
    signal: int | None
    stderr: CappedText
    stdout: CappedText
    usage: None | UsageView
    verdict: Verdict
    weight: int
    checker_message: None | str | Unset = UNSET
    detail: None | str | Unset = UNSET
    difference: Difference | None | Unset = UNSET
    additional_properties: dict[str, Any] = _attrs_field(init=False, factory=dict)

    def to_dict(self) -> dict[str, Any]:
        from ..models.difference import Difference
        from ..models.usage_view import UsageView

        exit_code: int | None
        exit_code = self.exit_code

        index = self.index

        name = self.name

        signal: int | None
        signal = self.signal

        stderr = self.stderr.to_dict()

        stdout = self.stdout.to_dict()

        usage: dict[str, Any] | None
        if isinstance(self.usage, UsageView):
            usage = self.usage.to_dict()
        else:
            usage = self.usage

        verdict = self.verdict.value

        weight = self.weight

        checker_message: None | str | Unset
        if isinstance(self.checker_message, Unset):
            checker_message = UNSET
        else:
            checker_message = self.checker_message

        detail: None | str | Unset
        if isinstance(self.detail, Unset):
            detail = UNSET
        else:
            detail = self.detail

        difference: dict[str, Any] | None | Unset
        if isinstance(self.difference, Unset):
            difference = UNSET
        elif isinstance(self.difference, Difference):
            difference = self.difference.to_dict()
        else:
            difference = self.difference

        field_dict: dict[str, Any] = {}
        field_dict.update(self.additional_properties)
        field_dict.update(
            {
                "exit_code": exit_code,
                "index": index,
                "name": name,
                "signal": signal,
                "stderr": stderr,
                "stdout": stdout,
                "usage": usage,
                "verdict": verdict,
                "weight": weight,
            }
        )
        if checker_message is not UNSET:
            field_dict["checker_message"] = checker_message
        if detail is not UNSET:
            field_dict["detail"] = detail
        if difference is not UNSET:
            field_dict["difference"] = difference

        return field_dict

    @classmethod
    def from_dict(cls, src_dict: Mapping[str, Any]) -> Self:
        from ..models.capped_text import CappedText
        from ..models.difference import Difference
        from ..models.usage_view import UsageView

        d = dict(src_dict)

        def _parse_exit_code(data: object) -> int | None:
            if data is None:
                return data
            return cast(int | None, data)

        exit_code = _parse_exit_code(d.pop("exit_code"))

        index = d.pop("index")

        name = d.pop("name")

        def _parse_signal(data: object) -> int | None:
            if data is None:
                return data
            return cast(int | None, data)

        signal = _parse_signal(d.pop("signal"))

        stderr = CappedText.from_dict(d.pop("stderr"))

        stdout = CappedText.from_dict(d.pop("stdout"))

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

        verdict = Verdict(d.pop("verdict"))

        weight = d.pop("weight")

        def _parse_checker_message(data: object) -> None | str | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            return cast(None | str | Unset, data)

        checker_message = _parse_checker_message(d.pop("checker_message", UNSET))

        def _parse_detail(data: object) -> None | str | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            return cast(None | str | Unset, data)

        detail = _parse_detail(d.pop("detail", UNSET))

        def _parse_difference(data: object) -> Difference | None | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            try:
                if not isinstance(data, dict):
                    raise TypeError()
                difference_type_0 = Difference.from_dict(data)

                return difference_type_0
            except (TypeError, ValueError, AttributeError, KeyError):
                pass
            return cast(Difference | None | Unset, data)

        difference = _parse_difference(d.pop("difference", UNSET))

        case_result = cls(
            exit_code=exit_code,
            index=index,
            name=name,
            signal=signal,
            stderr=stderr,
            stdout=stdout,
            usage=usage,
            verdict=verdict,
            weight=weight,
            checker_message=checker_message,
            detail=detail,
            difference=difference,
        )

        case_result.additional_properties = d
        return case_result

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
