"""Reading JSON:API documents as Klaviyo sends them."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from typing import Any

Resource = dict[str, Any]


@dataclass(frozen=True)
class Document:
    """One response page: its primary ``data``, the ``included`` resources and ``links``."""

    raw: dict[str, Any]

    @property
    def data(self) -> list[Resource]:
        """Primary data as a list, whether the document holds one resource or many."""
        data = self.raw.get("data")
        if data is None:
            return []
        return data if isinstance(data, list) else [data]

    @property
    def next_url(self) -> str | None:
        """``links.next``; real responses send null on the last page although the spec says string."""
        return (self.raw.get("links") or {}).get("next") or None

    def included(self, type_: str, id_: str) -> Resource | None:
        return self._included_index.get((type_, id_))

    def related(self, resource: Resource, relationship: str) -> Iterator[Resource]:
        """The included resources that ``resource`` links to through ``relationship``."""
        for ref in relationship_ids(resource, relationship):
            found = self.included(*ref)
            if found is not None:
                yield found

    @cached_property
    def _included_index(self) -> dict[tuple[str, str], Resource]:
        return {(r["type"], r["id"]): r for r in self.raw.get("included") or []}


def relationship_ids(resource: Resource, relationship: str) -> list[tuple[str, str]]:
    """``[(type, id), ...]`` of a to-one or to-many relationship; empty when absent."""
    data = ((resource.get("relationships") or {}).get(relationship) or {}).get("data")
    if data is None:
        return []
    refs = data if isinstance(data, list) else [data]
    return [(ref["type"], ref["id"]) for ref in refs]


def attribute(resource: Resource, dotted: str, default: Any = None) -> Any:
    """``attribute(profile, "subscriptions.email.marketing.consent")``: a nested attribute or default."""
    node: Any = resource.get("attributes") or {}
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return default if node is None else node
