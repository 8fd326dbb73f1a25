from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Self, TypeVar, cast

from attrs import define as _attrs_define

from ..models.network_mode import NetworkMode
from ..types import UNSET, Unset

T = TypeVar("T", bound="NetworkPolicy")


@_attrs_define
class NetworkPolicy:
    """The object form of `network`.

    Attributes:
        mode (NetworkMode): Network access for the job.
        allow (list[str] | None | Unset): Bridge jobs only: the destinations the job may reach, at most 64, each `CIDR`
            (every
            port and protocol) or `CIDR:PORT` (TCP and UDP to that port): `198.51.100.0/24`,
            `198.51.100.2/32:8000`, `192.0.2.10:443` (a bare address is a /32); the network's host
            bits must be zero. IPv6 syntax is `2001:db8::/32` and `[2001:db8::/32]:443`, but bridge
            jobs have no IPv6 yet, so IPv6 destinations are refused. Everything else the job sends
            is dropped, except DNS (port 53) to the worker's configured resolvers; `[]` leaves DNS
            only. The host's bridge rules still apply to listed destinations (the worker's own
            addresses, 169.254.0.0/16 and other jobs stay unreachable unless the operator opened
            them). Omitted: the bridge rules alone, as with `"bridge"`. Example: ['198.51.100.2/32:8000', '203.0.113.0/24'].
    """

    mode: NetworkMode
    allow: list[str] | None | Unset = UNSET

    def to_dict(self) -> dict[str, Any]:
        mode = self.mode.value

        allow: list[str] | None | Unset
        if isinstance(self.allow, Unset):
            allow = UNSET
        elif isinstance(self.allow, list):
            allow = self.allow

        else:
            allow = self.allow

        field_dict: dict[str, Any] = {}

        field_dict.update(
            {
                "mode": mode,
            }
        )
        if allow is not UNSET:
            field_dict["allow"] = allow

        return field_dict

    @classmethod
    def from_dict(cls, src_dict: Mapping[str, Any]) -> Self:
        d = dict(src_dict)
        mode = NetworkMode(d.pop("mode"))

        def _parse_allow(data: object) -> list[str] | None | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            try:
                if not isinstance(data, list):
                    raise TypeError()
                allow_type_0 = cast(list[str], data)

                return allow_type_0
            except (TypeError, ValueError, AttributeError, KeyError):
                pass
            return cast(list[str] | None | Unset, data)

        allow = _parse_allow(d.pop("allow", UNSET))

        network_policy = cls(
            mode=mode,
            allow=allow,
        )

        return network_policy
