"""What a username may be, and when two look alike (docs/API.md, "Accounts").

- A new username must pass the PRECIS UsernameCaseMapped profile (RFC 8265, ``precis-i18n``):
  letters and digits of any script, no spaces, symbols, compatibility or invisible characters.
  Uniqueness is still decided on ``identity_key`` (NFKC with case folding), as before.
- Two names whose confusable skeleton (Unicode TS #39: each character replaced by the one it is
  confusable with, per the confusables data of ``confusable-homoglyphs``) is the same look
  alike: ``аlice`` (Cyrillic а), ``alıce`` (dotless ı), ``ALİCE`` (İ, whose lower case is ``i``
  with a dot above) all read as ``alice``. A new name that looks like an existing one is
  refused, so an account cannot be impersonated by a look-alike.
"""

from __future__ import annotations

import functools
import unicodedata

#: Characters that lose their dot when a mark is put above them (Unicode's Soft_Dotted, the
#: letters of names): ``i`` followed by U+0307 looks like ``i``.
SOFT_DOTTED = frozenset("ij")
DOT_ABOVE = "\u0307"


class InvalidUsername(ValueError):
    """A name PRECIS refuses; the message says why."""


def check(name: str) -> str:
    """``name`` if PRECIS UsernameCaseMapped accepts it; InvalidUsername otherwise."""
    try:
        _profile().enforce(name)
    except UnicodeEncodeError as exc:
        reason = str(exc.reason).split("/")[-1].replace("_", " ")
        raise InvalidUsername(f"not a valid username ({reason})") from None
    return name


def skeleton(name: str) -> str:
    """What a name looks like: case-mapped by PRECIS (or case-folded, for older names it
    refuses), decomposed, each character replaced by its confusable prototype, a dot above a
    soft-dotted letter dropped."""
    try:
        mapped = _profile().enforce(name)
    except UnicodeEncodeError:
        mapped = unicodedata.normalize("NFKC", name).casefold()
    out: list[str] = []
    for ch in unicodedata.normalize("NFD", mapped):
        if ch == DOT_ABOVE and out and out[-1] in SOFT_DOTTED:
            continue
        out.append(ch if ch.isascii() else _prototype(ch))
    return unicodedata.normalize("NFD", "".join(out)).casefold()


@functools.cache
def _prototype(ch: str) -> str:
    """The character that stands for all those ``ch`` is confusable with (the smallest of
    them, so every member of a class maps to the same one)."""
    from confusable_homoglyphs import confusables

    found = confusables.is_confusable(ch, greedy=True) or []
    similar = {h["c"] for entry in found for h in entry["homoglyphs"] if len(h["c"]) == 1}
    return min(similar | {ch})


@functools.cache
def _profile():
    from precis_i18n import get_profile

    return get_profile("UsernameCaseMapped")
