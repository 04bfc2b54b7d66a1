"""The date range parameters of the export routes, as the API documents them.

Scarf declares both dates required, ``format: date``. The routes take them as optional texts
hidden from the schema and check them with :func:`eventport.export.dates.parse_range`, which
words a missing or malformed date with Scarf's export error code (FastAPI's own check would
answer in pydantic's words and with another code). The schema gets Scarf's declaration from the
route's ``openapi_extra``: :func:`documented_dates`.
"""

from __future__ import annotations

from typing import Annotated, Any, Final

from fastapi import Query

V2_DATES: Final = ("start_date", "end_date")
V1_DATES: Final = ("startDate", "endDate")

StartDate = Annotated[str | None, Query(include_in_schema=False)]
EndDate = Annotated[str | None, Query(include_in_schema=False)]
V1StartDate = Annotated[str | None, Query(alias=V1_DATES[0], include_in_schema=False)]
V1EndDate = Annotated[str | None, Query(alias=V1_DATES[1], include_in_schema=False)]


def documented_dates(names: tuple[str, str], max_days: int) -> dict[str, Any]:
    """A route's ``openapi_extra`` declaring its date range ``names``: both required."""
    start, end = names
    descriptions = (
        "The first day (UTC), included",
        f"The day after the last (UTC), excluded: after {start}, at most {max_days} days later",
    )
    return {
        "parameters": [
            {
                "name": name,
                "in": "query",
                "required": True,
                "description": description,
                "schema": {"type": "string", "format": "date", "example": example},
            }
            for name, description, example in zip(
                (start, end), descriptions, ("2026-01-01", "2026-01-08"), strict=True
            )
        ]
    }
