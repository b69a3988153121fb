"""Opt-out replies: telling ``11``, ``۱۱``, ``لغو`` or ``لغو ۱۱`` from any other answer to a campaign.

A reply is an opt-out when, as a whole, it is one of the opt-out words once both are brought to one
spelling (:func:`normalize_reply`):

- Persian (``۱۱``) and Arabic-Indic (``١١``) digits become ASCII digits, and full-width forms their
  plain ones (Unicode NFKC);
- Arabic letters become the Persian ones phones type: yeh ``ي``/``ى`` -> ``ی``, kaf ``ك`` -> ``ک``,
  teh marbuta ``ة`` -> ``ه``, heh with yeh ``ۀ`` -> ``ه``, alef with hamza or madda -> ``ا``;
- case is folded (``STOP`` is ``stop``);
- spaces, ZWNJ and other invisible marks, tatweel (``ـ``), vowel marks, punctuation and symbols are
  dropped, so ``لغو ۱۱``, ``لغو‌۱۱``, ``لغو-11`` and ``لغو11.`` are one reply.

The whole reply must match: ``لغو`` is an opt-out, "لغو سفارش" ("cancel the order") is not, since a
campaign asks for the word alone, and suppressing a customer over another question would be wrong too.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from typing import Final

from airflow_provider_p2psms.utils.phone import to_ascii_digits

#: The opt-out words when none are given: what Iranian campaigns ask people to reply with.
DEFAULT_OPT_OUT_WORDS: Final = ("11", "لغو", "لغو11", "لغو ۱۱", "انصراف", "stop", "unsubscribe")

_LETTERS: Final = str.maketrans(
    {
        "ي": "ی",
        "ى": "ی",
        "ئ": "ی",
        "ك": "ک",
        "ة": "ه",
        "ۀ": "ه",
        "أ": "ا",
        "إ": "ا",
        "آ": "ا",
        "ٱ": "ا",
    }
)
# Arabic vowel marks and the superscript alef: written over letters, never part of the word.
_MARKS: Final = re.compile("[\u064b-\u065f\u0670]")


def normalize_reply(text: str) -> str:
    """``text`` in the one spelling replies are compared in (see the module docstring)."""
    text = to_ascii_digits(unicodedata.normalize("NFKC", text)).translate(_LETTERS).casefold()
    text = _MARKS.sub("", text)
    # Keep letters and digits only: categories L* and N*, which drop spaces (Z*), ZWNJ and direction
    # marks (Cf), tatweel (Lm is kept, so it is removed by name), punctuation (P*) and symbols (S*).
    return "".join(ch for ch in text if unicodedata.category(ch)[0] in "LN" and ch != "\u0640")


class OptOutWords:
    """
    The words that make a reply an opt-out.

    :param words: the opt-out words, in any spelling the replies might use; default
        :data:`DEFAULT_OPT_OUT_WORDS`.
    :raises ValueError: when there is no word, or a word is nothing once normalized (only spaces or
        punctuation).
    """

    def __init__(self, words: Iterable[str] = DEFAULT_OPT_OUT_WORDS) -> None:
        if isinstance(words, str):
            words = [words]
        self._by_form: dict[str, str] = {}
        for word in words:
            if not isinstance(word, str):
                raise ValueError(f"an opt-out word must be a string, not {type(word).__name__}")
            form = normalize_reply(word)
            if not form:
                raise ValueError(f"the opt-out word {word!r} has no letters or digits")
            self._by_form.setdefault(form, word)
        if not self._by_form:
            raise ValueError("give at least one opt-out word")

    @property
    def forms(self) -> frozenset[str]:
        """The words, normalized."""
        return frozenset(self._by_form)

    def match(self, reply: str) -> str | None:
        """The opt-out word ``reply`` is, as configured (the first of the words with its spelling); or ``None``."""
        return self._by_form.get(normalize_reply(reply))
