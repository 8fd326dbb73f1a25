from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Self, TypeVar, cast
from uuid import UUID

from attrs import define as _attrs_define
from attrs import field as _attrs_field

from ..types import UNSET, Unset

if TYPE_CHECKING:
    from ..models.audit_entry_detail import AuditEntryDetail


T = TypeVar("T", bound="AuditEntry")


@_attrs_define
class AuditEntry:
    """One audit record.

    Attributes:
        action (str): What happened: `tenant.create`, `tenant.update`, `token.create`, `token.revoke`,
            `job.cancel`, `webhook.create`, ...
        at (datetime.datetime):
        detail (AuditEntryDetail):
        id (int):
        target (str): What it happened to (a tenant name, token id, job id, ...).
        tenant (None | str | Unset): The actor's tenant (absent: the server itself, e.g. the first start's admin token).
        token_id (None | Unset | UUID): The actor's token.
    """

    action: str
    at: datetime.datetime
    detail: AuditEntryDetail
    id: int
    target: str
    tenant: None | str | Unset = UNSET
    token_id: None | Unset | UUID = UNSET
    additional_properties: dict[str, Any] = _attrs_field(init=False, factory=dict)

    def to_dict(self) -> dict[str, Any]:
        action = self.action

        at = self.at.isoformat()

        detail = self.detail.to_dict()

        id = self.id

        target = self.target

        tenant: None | str | Unset
        if isinstance(self.tenant, Unset):
            tenant = UNSET
        else:
            tenant = self.tenant

        token_id: None | str | Unset
        if isinstance(self.token_id, Unset):
            token_id = UNSET
        elif isinstance(self.token_id, UUID):
            token_id = str(self.token_id)
        else:
            token_id = self.token_id

        field_dict: dict[str, Any] = {}
        field_dict.update(self.additional_properties)
        field_dict.update(
            {
                "action": action,
                "at": at,
                "detail": detail,
                "id": id,
                "target": target,
            }
        )
        if tenant is not UNSET:
            field_dict["tenant"] = tenant
        if token_id is not UNSET:
            field_dict["token_id"] = token_id

        return field_dict

    @classmethod
    def from_dict(cls, src_dict: Mapping[str, Any]) -> Self:
        from ..models.audit_entry_detail import AuditEntryDetail

        d = dict(src_dict)
        action = d.pop("action")

        at = datetime.datetime.fromisoformat(d.pop("at"))

        detail = AuditEntryDetail.from_dict(d.pop("detail"))

        id = d.pop("id")

        target = d.pop("target")

        def _parse_tenant(data: object) -> None | str | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            return cast(None | str | Unset, data)

        tenant = _parse_tenant(d.pop("tenant", UNSET))

        def _parse_token_id(data: object) -> None | Unset | UUID:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            try:
                if not isinstance(data, str):
                    raise TypeError()
                token_id_type_0 = UUID(data)

                return token_id_type_0
            except (TypeError, ValueError, AttributeError, KeyError):
                pass
            return cast(None | Unset | UUID, data)

        token_id = _parse_token_id(d.pop("token_id", UNSET))

        audit_entry = cls(
            action=action,
            at=at,
            detail=detail,
            id=id,
            target=target,
            tenant=tenant,
            token_id=token_id,
        )

        audit_entry.additional_properties = d
        return audit_entry

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
