from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Self, TypeVar, cast

from attrs import define as _attrs_define

from ..models.pull_policy_view import PullPolicyView
from ..types import UNSET, Unset

T = TypeVar("T", bound="PullRequest")


@_attrs_define
class PullRequest:
    """`POST /v1/images/pull`.

    Attributes:
        reference (str): An image reference, e.g. `busybox:1.36`, `ghcr.io/org/app@sha256:...`,
            `127.0.0.1:5000/tools:1`.
        policy (None | PullPolicyView | Unset):
    """

    reference: str
    policy: None | PullPolicyView | Unset = UNSET

    def to_dict(self) -> dict[str, Any]:
        reference = self.reference

        policy: None | str | Unset
        if isinstance(self.policy, Unset):
            policy = UNSET
        elif isinstance(self.policy, PullPolicyView):
            policy = self.policy.value
        else:
            policy = self.policy

        field_dict: dict[str, Any] = {}

        field_dict.update(
            {
                "reference": reference,
            }
        )
        if policy is not UNSET:
            field_dict["policy"] = policy

        return field_dict

    @classmethod
    def from_dict(cls, src_dict: Mapping[str, Any]) -> Self:
        d = dict(src_dict)
        reference = d.pop("reference")

        def _parse_policy(data: object) -> None | PullPolicyView | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            try:
                if not isinstance(data, str):
                    raise TypeError()
                policy_type_0 = PullPolicyView(data)

                return policy_type_0
            except (TypeError, ValueError, AttributeError, KeyError):
                pass
            return cast(None | PullPolicyView | Unset, data)

        policy = _parse_policy(d.pop("policy", UNSET))

        pull_request = cls(
            reference=reference,
            policy=policy,
        )

        return pull_request
