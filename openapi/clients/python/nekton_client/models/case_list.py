from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Self, TypeVar, cast

from attrs import define as _attrs_define
from attrs import field as _attrs_field

if TYPE_CHECKING:
    from ..models.build_result import BuildResult
    from ..models.case_status import CaseStatus


T = TypeVar("T", bound="CaseList")


@_attrs_define
class CaseList:
    """The cases of a test-suite job, as its latest attempt left them.

    Attributes:
        attempt (int): The attempt these are from (0 before the job first ran).
        build (BuildResult | None):
        cases (list[CaseStatus]):
    """

    attempt: int
    build: BuildResult | None
    cases: list[CaseStatus]
    additional_properties: dict[str, Any] = _attrs_field(init=False, factory=dict)

    def to_dict(self) -> dict[str, Any]:
        from ..models.build_result import BuildResult

        attempt = self.attempt

        build: dict[str, Any] | None
        if isinstance(self.build, BuildResult):
            build = self.build.to_dict()
        else:
            build = self.build

        cases = []
        for cases_item_data in self.cases:
            cases_item = cases_item_data.to_dict()
            cases.append(cases_item)

        field_dict: dict[str, Any] = {}
        field_dict.update(self.additional_properties)
        field_dict.update(
            {
                "attempt": attempt,
                "build": build,
                "cases": cases,
            }
        )

        return field_dict

    @classmethod
    def from_dict(cls, src_dict: Mapping[str, Any]) -> Self:
        from ..models.build_result import BuildResult
        from ..models.case_status import CaseStatus

        d = dict(src_dict)
        attempt = d.pop("attempt")

        def _parse_build(data: object) -> BuildResult | None:
            if data is None:
                return data
            try:
                if not isinstance(data, dict):
                    raise TypeError()
                build_type_0 = BuildResult.from_dict(data)

                return build_type_0
            except (TypeError, ValueError, AttributeError, KeyError):
                pass
            return cast(BuildResult | None, data)

        build = _parse_build(d.pop("build"))

        cases = []
        _cases = d.pop("cases")
        for cases_item_data in _cases:
            cases_item = CaseStatus.from_dict(cases_item_data)

            cases.append(cases_item)

        case_list = cls(
            attempt=attempt,
            build=build,
            cases=cases,
        )

        case_list.additional_properties = d
        return case_list

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
