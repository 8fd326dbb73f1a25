from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Self, TypeVar, cast

from attrs import define as _attrs_define
from attrs import field as _attrs_field

from ..types import UNSET, Unset

if TYPE_CHECKING:
    from ..models.build_result import BuildResult
    from ..models.suite_summary_verdicts import SuiteSummaryVerdicts


T = TypeVar("T", bound="SuiteSummary")


@_attrs_define
class SuiteSummary:
    """A suite's result: the job's `outcome.tests`.

    Attributes:
        max_score (int): Sum of all cases' weights.
        passed (int): Cases accepted.
        score (int): Sum of the accepted cases' weights.
        total (int):
        verdicts (SuiteSummaryVerdicts): Cases per verdict (verdicts with none left out).
        build (BuildResult | None | Unset):
    """

    max_score: int
    passed: int
    score: int
    total: int
    verdicts: SuiteSummaryVerdicts
    build: BuildResult | None | Unset = UNSET
    additional_properties: dict[str, Any] = _attrs_field(init=False, factory=dict)

    def to_dict(self) -> dict[str, Any]:
        from ..models.build_result import BuildResult

        max_score = self.max_score

        passed = self.passed

        score = self.score

        total = self.total

        verdicts = self.verdicts.to_dict()

        build: dict[str, Any] | None | Unset
        if isinstance(self.build, Unset):
            build = UNSET
        elif isinstance(self.build, BuildResult):
            build = self.build.to_dict()
        else:
            build = self.build

        field_dict: dict[str, Any] = {}
        field_dict.update(self.additional_properties)
        field_dict.update(
            {
                "max_score": max_score,
                "passed": passed,
                "score": score,
                "total": total,
                "verdicts": verdicts,
            }
        )
        if build is not UNSET:
            field_dict["build"] = build

        return field_dict

    @classmethod
    def from_dict(cls, src_dict: Mapping[str, Any]) -> Self:
        from ..models.build_result import BuildResult
        from ..models.suite_summary_verdicts import SuiteSummaryVerdicts

        d = dict(src_dict)
        max_score = d.pop("max_score")

        passed = d.pop("passed")

        score = d.pop("score")

        total = d.pop("total")

        verdicts = SuiteSummaryVerdicts.from_dict(d.pop("verdicts"))

        def _parse_build(data: object) -> BuildResult | None | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            try:
                if not isinstance(data, dict):
                    raise TypeError()
                build_type_0 = BuildResult.from_dict(data)

                return build_type_0
            except (TypeError, ValueError, AttributeError, KeyError):
                pass
            return cast(BuildResult | None | Unset, data)

        build = _parse_build(d.pop("build", UNSET))

        suite_summary = cls(
            max_score=max_score,
            passed=passed,
            score=score,
            total=total,
            verdicts=verdicts,
            build=build,
        )

        suite_summary.additional_properties = d
        return suite_summary

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
