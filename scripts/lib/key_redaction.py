"""Keeping the API key out of what a server sends back: replies, error messages, the cache, prompts.txt.

A server (or a proxy in front of it) may echo the Authorization header in any shape. `redact_key`
removes every run of text from which the key could be read back, in two steps, each a table:

- the text is read as a *skeleton*: its letters and digits only, after undoing the escapes a server
  may write (HTML entities, \\u and \\x escapes, %XX; ESCAPES) and NFKC (fullwidth characters), so
  zero-width characters, separators between the key's characters (`s.k.-.T`, `s k - T`), line breaks
  and letter case hide nothing;
- the key is turned into the strings a server may have made of it (ENCODINGS: as is, reversed,
  rot13, hex of UTF-8 and UTF-16, decimal codes, base64 and base32 at every byte offset: the key may
  sit anywhere in what was encoded, e.g. after "Bearer "), each as its skeleton too.

Any 8-character piece of any encoding (the whole key if shorter) found in the skeleton, in any letter
case, is redacted in the original text together with the run of word, base64 and %-characters around
it (an encoded blob goes whole, not just its middle). `holds_key` says whether text still holds such a
piece: what must be stored (a cache entry) and cannot be proven clean is refused, never written.

A key shorter than SHORT_KEY (16) characters is matched as itself, a whole token in any letter case (one
that is a word, such as vLLM's `EMPTY`: only as written), and as each whole encoding of PIECE characters or more
(_short_forms: a proxy's Basic header, the key %-escaped or split), never by pieces: its pieces are common words. Redaction makes at most
MAX_ROUNDS passes (each linear: numpy over the skeleton; a Python loop where numpy is not installed, as in
pr-comment-post's job, which redacts only the short lines it prints), then a text still holding a piece goes whole. Encodings
beyond ENCODINGS (base64 of base64, a C hex list) are not looked for: a server that holds the key can
always encode it anew.
"""

from __future__ import annotations

import array
import base64
import codecs
import functools
import html
import os
import re
import string
import unicodedata
import urllib.parse
from collections.abc import Callable
from typing import Any

PIECE = 8  # characters of an encoding that count as a piece of the key


def _middle(encode: Callable[[bytes], bytes], group: int, chars: int) -> Callable[[bytes], list[str]]:
    """The output of a block encoding (base64: 3 bytes -> 4 chars) of the key at every byte offset
    within a block, with the chars that depend on the bytes before or after the key left out."""

    def forms(raw: bytes) -> list[str]:
        out = []
        for offset in range(group):
            text = encode(b"\0" * offset + raw).decode("ascii")
            whole = (offset + len(raw)) // group * chars  # chars of the complete blocks
            out.append(text[chars if offset else 0 : whole])
        return out

    return forms


ENCODINGS: dict[str, Callable[[str], list[str]]] = {
    "as is": lambda key: [key],
    "reversed": lambda key: [key[::-1]],
    "rot13": lambda key: [codecs.encode(key, "rot13"), codecs.encode(key[::-1], "rot13")],
    "hex": lambda key: [key.encode().hex()],
    "UTF-16 hex": lambda key: [key.encode("utf-16-be").hex(), key.encode("utf-16-le").hex()],
    "decimal codes": lambda key: ["".join(str(ord(char)) for char in key)],
    "base64": lambda key: _middle(base64.b64encode, 3, 4)(key.encode()),
    "base32": lambda key: _middle(base64.b32encode, 5, 8)(key.encode()),
}


def _codepoint(base: int) -> Callable[[str], str]:
    def decode(digits: str) -> str:
        value = int(digits, base)
        return chr(value) if value <= 0x10FFFF else ""

    return decode


ESCAPES: dict[str, tuple[str, Callable[[str], str]]] = {  # name: (regex with one group, decoder)
    "html_hex": (r"&#[xX]([0-9a-fA-F]{1,6});?", _codepoint(16)),
    "html_dec": (r"&#([0-9]{1,7});?", _codepoint(10)),
    "html_named": (r"(&[A-Za-z][A-Za-z0-9]{1,31};)", html.unescape),
    "u_braced": (r"\\u\{([0-9a-fA-F]{1,6})\}", _codepoint(16)),
    "u4": (r"\\u([0-9a-fA-F]{4})", _codepoint(16)),
    "u8": (r"\\U([0-9a-fA-F]{8})", _codepoint(16)),
    "x2": (r"\\x([0-9a-fA-F]{2})", _codepoint(16)),
    "octal": (r"\\([0-3][0-7]{2})", _codepoint(8)),
    # %-escaped once or more (`%2573` is `%73` escaped again, `s`): a key escaped twice char by char, as a URL
    # put inside another URL's query, was read as the digits of its hex only
    "percent_u": (r"%(?:25)*u([0-9a-fA-F]{4})", _codepoint(16)),
    "percent": (r"%(?:25)*([0-9a-fA-F]{2})", _codepoint(16)),
}
_ESCAPE = re.compile("|".join(f"(?P<{name}>{pattern})" for name, (pattern, _) in ESCAPES.items()))
_PLAIN = re.compile(r"(?P<ascii>[\x00-\x7f]+)|(?P<other>[^\x00-\x7f]+)")  # ASCII runs go whole to numpy
_AROUND = re.compile(r"[\w+/=%-]*")  # what an encoded blob is made of: redacted whole around a match


def _numpy():
    """numpy, or None where it is not installed (pr-comment-post's job installs typer alone)."""
    try:
        import numpy
    except ImportError:
        return None
    return numpy


def _skeleton_of(text: str) -> str:
    """The letters and digits of `text`, NFKC (fullwidth ａ -> a) and case folded (ß and ẞ -> ss: `paßword` for a
    key's `password` was kept whole), escapes not undone: for the key's forms."""
    return "".join(char for char in unicodedata.normalize("NFKC", text).casefold() if char.isalnum())


_ALNUM_BYTES = None  # lazily: a 256-entry table, True for the ASCII letters and digits


def _ascii_alnum(run: str, begin: int, chars: list[str], starts: array.array) -> None:
    """The letters and digits of an ASCII run and their offsets, without a Python step per character
    (a reply of megabytes: lists of ints per character cost ~100x its size)."""
    np = _numpy()
    if np is None:
        keep = [offset for offset, char in enumerate(run) if char.isalnum()]
        chars.append("".join(run[offset] for offset in keep))
        starts.extend(offset + begin for offset in keep)
        return
    global _ALNUM_BYTES
    if _ALNUM_BYTES is None:
        _ALNUM_BYTES = np.zeros(256, dtype=bool)
        _ALNUM_BYTES[[ord(c) for c in string.ascii_letters + string.digits]] = True
    raw = np.frombuffer(run.encode("ascii"), dtype=np.uint8)
    keep = np.flatnonzero(_ALNUM_BYTES[raw])
    chars.append(raw[keep].tobytes().decode("ascii"))
    starts.frombytes((keep + begin).astype(np.int64).tobytes())


def skeleton(text: str) -> tuple[str, list[int], list[int]]:
    """`text`'s letters and digits after undoing escapes and NFKC, and for each the span [start, end)
    of the original text it came from (as int64 arrays: a character of a plain ASCII run spans one)."""
    np = _numpy()
    chars: list[str] = []
    starts, ends = array.array("q"), array.array("q")

    def plain(begin: int, end: int) -> None:
        for run in _PLAIN.finditer(text, begin, end):
            if run.lastgroup == "ascii":
                before = len(starts)
                _ascii_alnum(run.group(), run.start(), chars, starts)
                if np is None:
                    ends.extend(start + 1 for start in starts[before:])
                else:
                    ends.frombytes((np.frombuffer(starts, dtype=np.int64)[before:] + 1).tobytes())
            else:
                for offset, char in enumerate(run.group(), run.start()):
                    spread(char, offset, offset + 1)

    def spread(decoded: str, begin: int, end: int) -> None:
        for char in _skeleton_of(decoded):
            chars.append(char)
            starts.append(begin)
            ends.append(end)

    done = 0
    for match in _ESCAPE.finditer(text):
        plain(done, match.start())
        name = match.lastgroup
        assert name is not None
        spread(ESCAPES[name][1](_group(match, name)), match.start(), match.end())
        done = match.end()
    plain(done, len(text))
    if np is None:
        return "".join(chars), starts, ends  # type: ignore[return-value]  # arrays index as the lists did
    return (
        "".join(chars),
        np.frombuffer(starts, dtype=np.int64),
        np.frombuffer(ends, dtype=np.int64),
    )  # arrays index as the lists did


def _group(match: re.Match, name: str) -> str:
    """The one inner group of the escape `name` that matched (the digits, or the entity)."""
    index = match.re.groupindex[name]
    return match.group(index + 1)


@functools.lru_cache(maxsize=4)
def _pieces(api_key: str) -> tuple[frozenset[str], int] | None:
    """Every PIECE-character piece (the key's whole skeleton if shorter) of the skeleton of every
    encoding of the key, lower-cased, and that length; None for a key with no letter or digit
    (redacted only where it appears as is)."""
    key = _skeleton_of(api_key)
    if not key:
        return None
    n = min(PIECE, len(key))
    forms = {_skeleton_of(text) for encode in ENCODINGS.values() for text in encode(api_key)}
    return frozenset(form[i : i + n] for form in forms for i in range(len(form) - n + 1)), n


def _hits(low: str, pieces: frozenset[str], n: int) -> list[int]:
    """Where in `low` (ASCII) an n-character piece starts: every n-gram packed into one integer and
    looked up at once (a Python step per character made a 16 MB reply take most of a minute)."""
    if len(low) < n:
        return []
    np = _numpy()
    if np is None:
        return [at for at in range(len(low) - n + 1) if low[at : at + n] in pieces]
    raw = np.frombuffer(low.encode("ascii"), dtype=np.uint8).astype(np.uint64)
    grams = np.zeros(len(raw) - n + 1, dtype=np.uint64)
    for i in range(n):
        grams = (grams << np.uint64(8)) | raw[i : len(raw) - n + 1 + i]
    wanted = _packed(pieces)
    if not len(wanted):
        return []
    near = np.minimum(np.searchsorted(wanted, grams), len(wanted) - 1)  # a binary search, no sort of the text's
    return np.flatnonzero(wanted[near] == grams).tolist()


@functools.lru_cache(maxsize=16)
def _packed(pieces: frozenset[str]):
    """The pieces packed into integers, sorted (numpy): built once per key, not per text (every printed line is
    redacted: packing the ~500 pieces of each of a few keys cost milliseconds a line)."""
    np = _numpy()
    return np.array(sorted(int.from_bytes(p.encode("ascii"), "big") for p in pieces if p.isascii()), dtype=np.uint64)


def _blob_length(text: str, at: int) -> int:
    found = _AROUND.match(text, at)
    return found.end() - at if found else 0


def _found(low: str, api_key: str) -> list[tuple[int, int]]:
    """(start, length) in the lower-cased skeleton `low` of each piece of the key (a key of SHORT_KEY or more
    characters), or of each whole encoding of a shorter key (_short_forms), in order."""
    if len(api_key) < SHORT_KEY:
        return sorted((at, len(form)) for form in _short_forms(api_key) for at in _find_all(low, form))
    found = _pieces(api_key)
    assert found is not None
    pieces, n = found
    return [(at, n) for at in _hits(low, pieces, n)]


def _find_all(text: str, part: str) -> list[int]:
    found, at = [], text.find(part)
    while at >= 0:
        found.append(at)
        at = text.find(part, at + 1)
    return found


def _spans(text: str, api_key: str) -> list[tuple[int, int]]:
    """The spans of `text` holding a piece of the key, merged, each widened to its encoded blob."""
    skel, starts, ends = skeleton(text)
    low = _lowered(skel)
    spans: list[list[int]] = []
    rev = None
    for at, n in _found(low, api_key):
        begin, end = int(starts[at]), int(ends[at + n - 1])
        if spans and end <= spans[-1][1]:  # inside the blob already widened: no walk over it again
            continue
        rev = rev if rev is not None else text[::-1]  # widening to the left is a regex match on it
        begin -= _blob_length(rev, len(text) - begin)
        end += _blob_length(text, end)
        if spans and begin <= spans[-1][1]:
            spans[-1][1] = max(spans[-1][1], end)
        else:
            spans.append([begin, end])
    return [(begin, end) for begin, end in spans]


# the letters a locale's case mapping makes of ASCII ones: Turkish upper-cases i to İ and lower-cases I to ı (a
# server in that locale echoing an i-rich key printed it whole); their own lower case is longer or not ASCII
_LOCALE_FOLDS = {"\u0130": "i", "\u0131": "i"}


def _lowered(skel: str) -> str:
    """`skel` lower-cased char by char, one char each (a character's lower case may be longer: İ is i and a dot),
    the Turkish i's as i, any other non-ASCII char a \\0: the pieces are ASCII anyway."""
    if skel.isascii():
        return skel.lower()
    return "".join(c.lower() if c.isascii() else _LOCALE_FOLDS.get(c, "\0") for c in skel)


SHORT_KEY = 16  # shorter keys (vLLM's dummy "EMPTY", a test "secret") are redacted as whole tokens only
MAX_ROUNDS = 4  # redaction rounds before a text that keeps joining into a piece goes whole


def _is_word(api_key: str) -> bool:
    """Letters of one case, or capitalised, no digit: vLLM's `EMPTY`, `dummy`, TOKENIZERS_PARALLELISM's `false`."""
    return not any(char.isdigit() for char in api_key) and api_key in (
        api_key.lower(),
        api_key.upper(),
        api_key.capitalize(),
    )


def _short_key(api_key: str) -> re.Pattern:
    """A short key as a whole token: its 8-character pieces in any case and encoding would be common words.
    In any letter case, as a longer key (a server echoing `ZQ7XK2PLM9` for `Zq7xK2pLm9` reached the error line,
    prompts.txt and the cache), unless the key is a word (_is_word): its other cases are that word in prose, and
    "an empty street" must stay whole."""
    flags = 0 if _is_word(api_key) else re.IGNORECASE
    return re.compile(rf"(?<![A-Za-z0-9]){re.escape(api_key)}(?![A-Za-z0-9])", flags)


@functools.lru_cache(maxsize=8)
def _short_forms(api_key: str) -> tuple[str, ...]:
    """The lower-cased skeleton of each of a short key's ENCODINGS that has PIECE characters or more, looked for
    whole (never by pieces: a short key's pieces are common words). A proxy's password is short more often than
    not, and the Basic header a proxy echoes is base64 of `user:password`; a 10-character key percent-encoded,
    \\u-escaped, split by a line break or a zero-width space was printed whole. A word key's own letters are not
    looked for this way (`dummy` in `dum my`), only its encodings."""
    word = _is_word(api_key)
    texts = [text for name, encode in ENCODINGS.items() if not (word and name == "as is") for text in encode(api_key)]
    forms = {_skeleton_of(text) for text in texts}
    return tuple(sorted(form for form in forms if len(form) >= PIECE and form.isascii()))


def holds_key(text: str, api_key: str | None) -> bool:
    """Whether the key could be read back from `text` (a piece of any of its encodings in it)."""
    if not api_key:
        return False
    if len(api_key) < SHORT_KEY:
        return bool(_short_key(api_key).search(text)) or bool(_short_forms(api_key) and _spans(text, api_key))
    return api_key in text if _pieces(api_key) is None else bool(_spans(text, api_key))


def holds_whole_key(text: str, api_key: str | None, least: int = SHORT_KEY) -> bool:
    """Whether `text` holds the whole key in one of ENCODINGS, read through the skeleton (any letter case,
    escapes such as %2F undone, separators left out). What is sent or published on a user's behalf (a PR
    comment, a dataset, params.yaml) is refused on this, not on holds_key's 8-character pieces: megabytes
    of hex ids and digits hold some piece of some encoding by chance. A key shorter than `least`: as itself, as
    holds_key. params.yaml passes least=PIECE: a known secret of 8+ characters is looked for anywhere in a value,
    by its encodings of PIECE characters or more (a params value is a few words, not megabytes)."""
    if not api_key or len(api_key) < least:
        return holds_key(text, api_key)
    if api_key.casefold() in text.casefold():  # also a key of too few letters and digits for a skeleton
        return True
    forms = _whole_forms(api_key, least)
    low = _lowered(skeleton(text)[0]) if forms else ""
    return any(form in low for form in forms)


@functools.lru_cache(maxsize=32)
def _whole_forms(api_key: str, least: int = SHORT_KEY) -> frozenset[str]:
    """The lower-cased skeleton of each of the key's encodings (base64url's too: `-_` are left out like `+/`),
    those of `least` characters or more: a shorter one is in too many texts."""
    texts = [text for encode in ENCODINGS.values() for text in encode(api_key)]
    forms = {_skeleton_of(text) for text in texts}
    return frozenset(form for form in forms if len(form) >= max(least, PIECE))


def redact_key(value: Any, api_key: str | None) -> Any:
    """`value` (a string, or JSON data) with every run of text holding a piece of the key, in any
    encoding, replaced by ***; anything without one is returned as is."""
    if not api_key:
        return value
    if isinstance(value, str):
        return _redact_text(value, api_key)
    if isinstance(value, dict):
        return {redact_key(k, api_key): redact_key(v, api_key) for k, v in value.items()}
    if isinstance(value, list):
        return [redact_key(v, api_key) for v in value]
    return value


def _redact_text(value: str, api_key: str) -> str:
    if len(api_key) < SHORT_KEY:
        value = _short_key(api_key).sub("***", value)
        if not _short_forms(api_key):
            return value
    elif _pieces(api_key) is None:  # a key of punctuation only (never a real one): where it appears as is
        return value.replace(api_key, "***")
    # joining what was around a span may make one: a few rounds, then the text goes whole (pieces nested
    # thousands deep took one full rescan per layer: minutes for 40 KB)
    for _ in range(MAX_ROUNDS):
        spans = _spans(value, api_key)
        if not spans:
            return value
        kept, done = [], 0
        for begin, end in spans:
            kept += [value[done:begin], "***"]
            done = end
        value = "".join([*kept, value[done:]])
    return "***" if _spans(value, api_key) else value


# urllib sends through the proxy these variables name (either case), with the URL's user:password as
# Proxy-Authorization: a proxy echoing it in an error or a reply put the password on the error line or into
# prompts.txt and the cache, where only the API key was redacted
PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy")


def proxy_credentials() -> list[str]:
    """The credential in each proxy variable set now, as written and percent-decoded: its password, or its user
    where it has none (`http://TOKEN@proxy`: httpx, publish's client, sends it as Basic `TOKEN:`, and a proxy's 407
    quoting it reached publish's line; urllib sends no user alone). A value without a scheme is read as both
    clients read it, as http:// (`user:PASSWORD@proxy:3128` was urlsplit's scheme `user`: no password found, and
    the proxy's 407 echoing it reached every client's line). Blank ones are no secret: spaces are in every line."""
    found = set()
    for name, value in os.environ.items():
        if name.lower() in PROXY_VARIABLES:
            try:
                parts = urllib.parse.urlsplit(value if "://" in value else f"http://{value}")
            except ValueError:  # no URL urllib reads: it sends through no proxy then
                continue
            secret = parts.password or parts.username
            found |= {secret, urllib.parse.unquote(secret)} if secret else set()
    return sorted(secret for secret in found if secret.strip())


def redact_secrets(value: Any, api_key: str | None) -> Any:
    """redact_key for the API key and for every proxy's credential (proxy_credentials)."""
    for secret in [api_key, *proxy_credentials()]:
        value = redact_key(value, secret)
    return value
