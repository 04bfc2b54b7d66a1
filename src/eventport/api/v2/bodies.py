"""v2 request bodies. Types are strict: a number where a string belongs is a 400."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, field_validator

from eventport.domain.names import unstorable_reason

PackageType = Literal["docker", "file", "python", "npm", "hackage", "other"]


class Body(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)

    @field_validator("*", mode="after")
    @classmethod
    def _storable(cls, value: Any) -> Any:
        """No NUL (PostgreSQL rejects it) and no lone surrogates (not encodable) in any string."""
        if isinstance(value, str) and (reason := unstorable_reason(value)) is not None:
            raise ValueError(reason)
        return value


class PackageBody(Body):
    """CreatePackage / UpdatePackage: one flat shape, per-type rules checked by the store."""

    name: str
    type: PackageType
    short_description: str | None = None
    long_description: str | None = None
    website: str | None = None
    backend_registry: str | None = None
    repository_url: str | None = None
    domain: str | None = None
    incoming_path: str | None = None
    outgoing_url: str | None = None


class DomainBody(Body):
    name: str


class RouteBody(Body):
    incoming_path: str
    outgoing_url: str


class PermissionBody(Body):
    username: str
    permission_level: Literal["member", "admin", "owner"]


class OrganizationBody(Body):
    name: str
    billing_email: str
    description: str | None = None
    website: str | None = None


class MemberBody(Body):
    username: str
    role: Literal["member", "admin", "owner"]


class RoleBody(Body):
    role: Literal["member", "admin", "owner"]


class PixelBody(Body):
    name: str
    package_id: str | None = None
