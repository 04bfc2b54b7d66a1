"""v2 request bodies. Types are strict: a number where a string belongs is a 400."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, WithJsonSchema, field_validator, model_validator

from eventport.domain.names import unstorable_reason

PackageType = Literal["docker", "file", "python", "npm", "hackage", "other"]


class Body(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)

    @field_validator("*", mode="after")
    @classmethod
    def _storable(cls, value: Any) -> Any:
        """No NUL (PostgreSQL rejects it) and no lone surrogates (not encodable) in any string,
        a string in a list included."""
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, str) and (reason := unstorable_reason(item)) is not None:
                raise ValueError(reason)
        return value

    def given(self, name: str, stored: Any) -> Any:
        """An update's (PUT's) value of ``name``: the request's, or ``stored``'s when the
        request leaves it out (an explicit ``null`` still clears it). A script that sends only
        what Scarf requires (a tracking pixel's ``name``, say) changes nothing it did not name."""
        return getattr(self if name in self.model_fields_set else stored, name)

    def keep_omitted(self, fields: Any, stored: Any, *names: str) -> None:
        """:meth:`given` for each of ``names``, set on ``fields`` (what the store will write)."""
        for name in names:
            setattr(fields, name, self.given(name, stored))


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


class SettingsBody(Body):
    """A partial update of an owner's event settings: a field left out stays as it is.

    eventport's own route, not Scarf's: an unknown field (a typo) is refused rather than
    silently ignored, and so is null, since neither setting can be unset.
    """

    model_config = ConfigDict(extra="forbid", strict=True)

    # None only stands for "left out": the schema says what may be sent.
    exclude_bots: Annotated[bool | None, WithJsonSchema({"type": "boolean"})] = None
    excluded_user_agents: Annotated[
        list[str] | None, WithJsonSchema({"type": "array", "items": {"type": "string"}})
    ] = None

    @model_validator(mode="before")
    @classmethod
    def _no_nulls(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for key in ("exclude_bots", "excluded_user_agents"):
                if key in data and data[key] is None:
                    raise ValueError(f"{key} must not be null: leave it out to keep it as it is")
        return data
