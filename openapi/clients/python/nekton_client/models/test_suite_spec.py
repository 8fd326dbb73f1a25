from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Self, TypeVar, cast

from attrs import define as _attrs_define

from ..types import UNSET, Unset

if TYPE_CHECKING:
    from ..models.case_spec import CaseSpec
    from ..models.compare import Compare
    from ..models.step_spec import StepSpec


T = TypeVar("T", bound="TestSuiteSpec")


@_attrs_define
class TestSuiteSpec:
    """A test suite: the job's program is built once (optional) and run once per case.

    Attributes:
        cases (list[CaseSpec]): The cases (1 to 1000), run with the job's `entrypoint`/`args` unless a case sets `args`.
        build (None | StepSpec | Unset):
        checker (None | StepSpec | Unset):
        compare (Compare | None | Unset):
        parallelism (int | None | Unset): Cases run at once (1 to 16; never more than the worker's slots). Default 1: in
            order.
        stop_on_first_failure (bool | Unset): After the first case that is not accepted, the rest are `skipped`.
    """

    cases: list[CaseSpec]
    build: None | StepSpec | Unset = UNSET
    checker: None | StepSpec | Unset = UNSET
    compare: Compare | None | Unset = UNSET
    parallelism: int | None | Unset = UNSET
    stop_on_first_failure: bool | Unset = UNSET

    def to_dict(self) -> dict[str, Any]:
        from ..models.compare import Compare
        from ..models.step_spec import StepSpec

        cases = []
        for cases_item_data in self.cases:
            cases_item = cases_item_data.to_dict()
            cases.append(cases_item)

        build: dict[str, Any] | None | Unset
        if isinstance(self.build, Unset):
            build = UNSET
        elif isinstance(self.build, StepSpec):
            build = self.build.to_dict()
        else:
            build = self.build

        checker: dict[str, Any] | None | Unset
        if isinstance(self.checker, Unset):
            checker = UNSET
        elif isinstance(self.checker, StepSpec):
            checker = self.checker.to_dict()
        else:
            checker = self.checker

        compare: dict[str, Any] | None | Unset
        if isinstance(self.compare, Unset):
            compare = UNSET
        elif isinstance(self.compare, Compare):
            compare = self.compare.to_dict()
        else:
            compare = self.compare

        parallelism: int | None | Unset
        if isinstance(self.parallelism, Unset):
            parallelism = UNSET
        else:
            parallelism = self.parallelism

        stop_on_first_failure = self.stop_on_first_failure

        field_dict: dict[str, Any] = {}

        field_dict.update(
            {
                "cases": cases,
            }
        )
        if build is not UNSET:
            field_dict["build"] = build
        if checker is not UNSET:
            field_dict["checker"] = checker
        if compare is not UNSET:
            field_dict["compare"] = compare
        if parallelism is not UNSET:
            field_dict["parallelism"] = parallelism
        if stop_on_first_failure is not UNSET:
            field_dict["stop_on_first_failure"] = stop_on_first_failure

        return field_dict

    @classmethod
    def from_dict(cls, src_dict: Mapping[str, Any]) -> Self:
        from ..models.case_spec import CaseSpec
        from ..models.compare import Compare
        from ..models.step_spec import StepSpec

        d = dict(src_dict)
        cases = []
        _cases = d.pop("cases")
        for cases_item_data in _cases:
            cases_item = CaseSpec.from_dict(cases_item_data)

            cases.append(cases_item)

        def _parse_build(data: object) -> None | StepSpec | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            try:
                if not isinstance(data, dict):
                    raise TypeError()
                build_type_0 = StepSpec.from_dict(data)

                return build_type_0
            except (TypeError, ValueError, AttributeError, KeyError):
                pass
            return cast(None | StepSpec | Unset, data)

        build = _parse_build(d.pop("build", UNSET))

        def _parse_checker(data: object) -> None | StepSpec | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            try:
                if not isinstance(data, dict):
                    raise TypeError()
                checker_type_0 = StepSpec.from_dict(data)

                return checker_type_0
            except (TypeError, ValueError, AttributeError, KeyError):
                pass
            return cast(None | StepSpec | Unset, data)

        checker = _parse_checker(d.pop("checker", UNSET))

        def _parse_compare(data: object) -> Compare | None | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            try:
                if not isinstance(data, dict):
                    raise TypeError()
                compare_type_0 = Compare.from_dict(data)

                return compare_type_0
            except (TypeError, ValueError, AttributeError, KeyError):
                pass
            return cast(Compare | None | Unset, data)

        compare = _parse_compare(d.pop("compare", UNSET))

        def _parse_parallelism(data: object) -> int | None | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            return cast(int | None | Unset, data)

        parallelism = _parse_parallelism(d.pop("parallelism", UNSET))

        stop_on_first_failure = d.pop("stop_on_first_failure", UNSET)

        test_suite_spec = cls(
            cases=cases,
            build=build,
            checker=checker,
            compare=compare,
            parallelism=parallelism,
            stop_on_first_failure=stop_on_first_failure,
        )

        return test_suite_spec
