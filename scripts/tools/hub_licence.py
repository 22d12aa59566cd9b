"""The licence of a Hub card (`publish`): its YAML fields, LICENSE.md when the sources differ, and the checks
on --license-name and --license-link, which the card's Licence line shows (as text, and as a link target)."""

from __future__ import annotations

from scripts.lib.errors import DataError, shown
from scripts.lib.markdown_text import cell, link_target


def licence_fields(
    sources: dict, used: list[str], license: str | None, name: str | None, link: str | None
) -> tuple[dict, str | None]:
    """Card licence fields and the LICENSE.md text (None when the card's licence says it all).
    `sources`: params.yaml sources, name -> Source model."""
    per_source = {s: (sources[s].license if s in sources else None) or "unknown" for s in used}
    if license:
        fields = {"license": license}
        if license == "other":
            fields.update(license_name=name or "other", license_link=link or "LICENSE.md")
    elif len(set(per_source.values())) == 1 and "unknown" not in per_source.values():
        fields = {"license": next(iter(per_source.values())).lower()}
    else:
        fields = {"license": "other", "license_name": name or "per-source", "license_link": link or "LICENSE.md"}
    text = None
    if fields.get("license_link") == "LICENSE.md":
        text = (
            "\n".join(
                [
                    "# Licences",
                    "",
                    "Each row keeps the licence of the source it comes from (column `source`); generated images "
                    "also follow the licence of the model that rendered them (docs/generation.md).",
                    "",
                    "| source | licence |",
                    "|---|---|",
                ]
                + [f"| {cell(s, 100)} | {cell(lic, 100)} |" for s, lic in per_source.items()]
            )
            + "\n"
        )
    return fields, text


def check_licence_options(name: str | None, link: str | None) -> None:
    """--license-name is one line of text (the card shows it escaped); --license-link a link the card may
    hold as written (markdown_text.link_target): raw, `x) [click](javascript:...)` made the card's link."""
    if name is not None and (not name.strip() or not name.isprintable() or len(name) > 200):
        raise DataError(
            f"--license-name: expected one line of text (at most 200 characters), got {shown(repr(name[:80]))}"
        )
    if link is not None and not link_target(link):
        raise DataError(
            f"--license-link: expected an http(s) URL or a plain relative path (no space, quote, parenthesis or "
            f"control character), got {shown(repr(link[:80]))}"
        )
