"""Tags as people write them in filters: ``name=value`` (``--tag campaign=spring``,
``?tag=campaign=spring``), and what a tag name may be."""

from __future__ import annotations

from collections.abc import Sequence

from ledger.events import TAG_NAME


def parse_tag_filters(values: Sequence[str]) -> dict[str, str]:
    """``["campaign=spring", "team=a"]`` as ``{"campaign": "spring", "team": "a"}``.

    Raises ValueError, saying what is expected, for a value without ``=``, a name that is
    not a plain word, or one name given twice.
    """
    tags: dict[str, str] = {}
    for value in values:
        name, sep, wanted = value.partition("=")
        if not sep or not TAG_NAME.fullmatch(name):
            raise ValueError(
                f"{value[:80]!r} is not a tag filter: write name=value, e.g. campaign=spring"
            )
        if name in tags:
            raise ValueError(f"tag {name} is given twice: give each tag once")
        tags[name] = wanted
    return tags
