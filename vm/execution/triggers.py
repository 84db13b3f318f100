"""Matching tracked events against the trigger rules of every loaded bundle.

A tracked event ``{"type": "mta", "pageId": P, "clickId": C, ...}`` is a click; without ``clickId``
(or with ``"pv": true``) it is a page view of ``P``. A click matches the rules of its (type, page)
that list ``C``; a page view matches the rules of its (type, page) with ``needPv``. A rule without
``pageId`` matches that click (or any page view, with ``needPv``) on every page. Matching is two
dictionary look-ups per event, whatever the number of rules. The rules come from each bundle's
config (``vm.bundle.triggers``).
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from vm.bundle.triggers import ANY_PAGE, BundleTriggers
from vm.errors import BadInput


class TriggerIndex:
    """Rules of every loaded bundle, indexed by (type, page, click) and (type, page) for page views."""

    def __init__(self, bundles: Iterable[tuple[str, BundleTriggers]] = ()) -> None:
        self._clicks: dict[tuple[str, str | None, str], list[tuple[str, str]]] = {}
        self._views: dict[tuple[str, str | None], list[tuple[str, str]]] = {}
        self.rules = 0
        for bundle, cfg in bundles:
            for rule in cfg.rules:
                self.rules += 1
                target = (bundle, rule.task)
                for click in rule.click_ids:
                    self._add(self._clicks.setdefault((rule.type, rule.page_id, click), []), target)
                if rule.need_pv:
                    self._add(self._views.setdefault((rule.type, rule.page_id), []), target)

    @staticmethod
    def _add(targets: list[tuple[str, str]], target: tuple[str, str]) -> None:
        if target not in targets:
            targets.append(target)

    def match(self, event: Mapping[str, Any]) -> list[tuple[str, str]]:
        """The (bundle, task name) pairs ``event`` triggers, each once, in config order."""
        etype = event.get("type")
        if not isinstance(etype, str):
            raise BadInput(f"an event needs a string 'type', got {etype!r}")
        page = event.get("pageId")
        if page is not None and not isinstance(page, str):
            raise BadInput(f"an event's 'pageId' must be a string, got {page!r}")
        click = event.get("clickId")
        if click is not None and not isinstance(click, str):
            raise BadInput(f"an event's 'clickId' must be a string, got {click!r}")
        if click is None or event.get("pv") is True:
            found = [*self._views.get((etype, page), ()), *self._views.get((etype, ANY_PAGE), ())] \
                if page is not None else list(self._views.get((etype, ANY_PAGE), ()))
        else:
            found = []
        if click is not None:
            if page is not None:
                found += self._clicks.get((etype, page, click), ())
            found += self._clicks.get((etype, ANY_PAGE, click), ())
        if len(found) < 2:
            return found
        return list(dict.fromkeys(found))
