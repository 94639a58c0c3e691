"""The built-in secret detectors: credentials that must never reach the log, a sink or an error.

Each detector is a regular expression for one kind of secret (an OpenAI key, a bearer token, a
password in a URL, a PEM private key block...). A match is replaced by ``[REDACTED:<kind>]``;
what identifies the secret's place but is not secret (``Authorization: Bearer``, the user and
host of a URL, ``aws_secret_access_key=``) is kept. The replacement is stable (the same text
always gives the same result) and idempotent (no detector matches a marker, so redacting twice
changes nothing).

This module sits at the bottom of ``engine/`` so that the model clients can redact the provider
bodies they put into their errors; ``policies/_redaction.py`` builds the engine's ``Redactor``
(user patterns, the off switch, the walk over events) on it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

MARKER = "[REDACTED:{kind}]"
"""What a secret of ``kind`` is replaced by."""

_TOKEN = r"[A-Za-z0-9._~+/-]"
"""Characters of an HTTP auth token (RFC 6750 ``b64token``), padding apart."""


@dataclass(frozen=True, slots=True)
class Detector:
    """One kind of secret: its name (in the marker) and its pattern.

    A group named ``keep`` in ``pattern`` is kept in front of the marker (the part that says
    where the secret was, not the secret). ``triggers`` are substrings of which one must occur
    in a text for the pattern to match it (in lower case, looked up in the lowered text, when
    ``fold_case``), so most texts are passed over without running the pattern.
    """

    kind: str
    pattern: str
    triggers: tuple[str, ...]
    fold_case: bool = False


BUILTIN_DETECTORS: tuple[Detector, ...] = (
    # Patterns start with a literal where they can (the boundary check is a lookbehind after it):
    # the regex engine then jumps from one occurrence of the literal to the next.
    #
    # A whole block, header to footer; a block cut short (no footer) loses all its base64 lines,
    # also when its newlines are JSON escapes (a tool call's raw arguments).
    Detector(
        "private_key",
        r"-----BEGIN[A-Z0-9 ]{0,40}PRIVATE KEY(?: BLOCK)?-----"
        r"(?:[\s\S]*?-----END[A-Z0-9 ]{0,40}PRIVATE KEY(?: BLOCK)?-----|[A-Za-z0-9+/=\s\\:-]*)",
        ("-----BEGIN",),
    ),
    # Anthropic's keys also start with "sk-": the OpenAI pattern leaves "sk-ant-" to this one.
    Detector(
        "anthropic_key",
        r"sk-ant-(?<![A-Za-z0-9_-]sk-ant-)[A-Za-z0-9_-]{20,}",
        ("sk-ant-",),
    ),
    # sk-..., sk-proj-..., sk-svcacct-...: at least one digit or capital among 20+ characters,
    # so prose such as "sk-learn-compatible-estimators" is left alone (a random key lacks both
    # with a chance of about 1 in 30 million).
    Detector(
        "openai_key",
        r"sk-(?<![A-Za-z0-9_-]sk-)(?!ant-)(?=[a-z_-]*[0-9A-Z])[A-Za-z0-9_-]{20,}",
        ("sk-",),
    ),
    Detector(
        "aws_access_key_id",
        r"(?:AKIA|ASIA|ABIA|ACCA)(?<![A-Z0-9]....)[A-Z0-9]{16}(?![A-Z0-9])",
        ("AKIA", "ASIA", "ABIA", "ACCA"),
    ),
    Detector(
        "aws_secret_key",
        r"(?P<keep>(?i:aws_secret_access_key|aws_secret_key|secret_access_key)"
        r"[\"'\\]{0,2}\s*[:=]\s*[\"'\\]{0,2})"
        r"[A-Za-z0-9/+=]{16,}(?![A-Za-z0-9/+=])",
        ("secret_access_key", "aws_secret_key"),
        fold_case=True,
    ),
    Detector(
        "github_token",
        r"gh[pousr]_(?<![A-Za-z0-9_]gh._)[A-Za-z0-9]{30,}"
        r"|github_pat_(?<![A-Za-z0-9_]github_pat_)[A-Za-z0-9_]{30,}",
        ("ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_"),
    ),
    Detector(
        "google_api_key",
        r"AIza(?<![A-Za-z0-9_-]AIza)[0-9A-Za-z_-]{35}(?![A-Za-z0-9_-])",
        ("AIza",),
    ),
    Detector(
        "slack_token",
        r"xox(?<![A-Za-z0-9]xox)[bpoasr]-[A-Za-z0-9-]{10,}",
        ("xox",),
    ),
    Detector(
        "stripe_key",
        r"(?:sk|rk)_(?:live|test)_(?<![A-Za-z0-9].k_...._)[A-Za-z0-9]{16,}",
        ("k_live_", "k_test_"),
    ),
    Detector(
        "huggingface_token",
        r"hf_(?<![A-Za-z0-9_]hf_)[A-Za-z0-9]{30,}",
        ("hf_",),
    ),
    # The header, with its scheme kept: "Authorization: Bearer [REDACTED:bearer_token]".
    Detector(
        "basic_auth",
        r"(?P<keep>(?i:authorization)[\"'\\]{0,2}\s*[:=]\s*[\"'\\]{0,2}(?i:basic)\s+)"
        r"[A-Za-z0-9+/]{4,}=*",
        ("authorization",),
        fold_case=True,
    ),
    Detector(
        "bearer_token",
        r"(?P<keep>(?i:authorization)[\"'\\]{0,2}\s*[:=]\s*[\"'\\]{0,2}"
        rf"(?i:bearer|token)\s+){_TOKEN}{{4,}}=*",
        ("authorization",),
        fold_case=True,
    ),
    # "Bearer <token>" outside a header: a token has a digit and 16+ characters, which the
    # English word followed by a word ("bearer instruments") has not.
    Detector(
        "bearer_token",
        rf"(?P<keep>(?i:bearer)(?<![A-Za-z]......)\s+)(?=[A-Za-z._~+/-]*[0-9]){_TOKEN}{{16,}}=*",
        ("bearer",),
        fold_case=True,
    ),
    # scheme://user:password@host keeps the user and the host. The password may hold '@' (the
    # last one before the path ends it), not a quote or a backslash (JSON around the URL).
    Detector(
        "url_password",
        r"(?P<keep>://[^\s:/@?#\"'\\<>\[\]]*:)(?!\[REDACTED:)[^\s/?#\"'\\<>]+(?=@)",
        ("://",),
    ),
)
"""Every built-in detector, in the order they run (each over what the ones before left)."""

BUILTIN_KINDS: tuple[str, ...] = tuple(dict.fromkeys(d.kind for d in BUILTIN_DETECTORS))
"""The kinds of secret the built-in detectors find (the names ``allow`` takes)."""

_SHORTEST = 6
"""No built-in detector matches a text shorter than this (the shortest is ``://:p@``)."""


class SecretDetectors:
    """The built-in detectors of the given kinds, compiled (see ``redact``)."""

    __slots__ = ("_compiled", "_exact", "_exact_gate", "_folded", "_folded_gate", "_kinds")

    def __init__(self, kinds: Iterable[str] = BUILTIN_KINDS) -> None:
        wanted = frozenset(kinds)
        unknown = wanted - set(BUILTIN_KINDS)
        if unknown:
            raise ValueError(f"unknown kinds of secret {sorted(unknown)}; known: {BUILTIN_KINDS}")
        chosen = [d for d in BUILTIN_DETECTORS if d.kind in wanted]
        self._kinds = tuple(dict.fromkeys(d.kind for d in chosen))
        # Each detector runs on its own, only over texts holding one of its triggers: one
        # alternation of them all would be tried at every position of every text (~0.4 us per
        # character), these skip from literal to literal.
        self._compiled = tuple(
            (
                re.compile(d.pattern),
                ("\\g<keep>" if "(?P<keep>" in d.pattern else "") + MARKER.format(kind=d.kind),
                frozenset(d.triggers),
            )
            for d in chosen
        )
        self._exact = tuple({t for d in chosen if not d.fold_case for t in d.triggers})
        self._folded = tuple({t for d in chosen if d.fold_case for t in d.triggers})
        self._exact_gate = _gate(self._exact)
        self._folded_gate = _gate(self._folded)

    @property
    def kinds(self) -> tuple[str, ...]:
        """The kinds of secret looked for."""
        return self._kinds

    def _any_trigger(self, text: str, lowered: str) -> bool:
        # A loop that stops at the first hit: any() over a generator costs more on short texts.
        for trigger in self._exact_gate:
            if trigger in text:
                return True
        return any(trigger in lowered for trigger in self._folded_gate)

    def redact(self, text: str) -> str:
        """``text`` with every secret replaced by its marker; ``text`` itself if it holds none."""
        if len(text) < _SHORTEST:
            return text
        lowered = text.lower()
        if not self._any_trigger(text, lowered):  # most texts leave here
            return text
        hits = [t for t in self._exact if t in text] + [t for t in self._folded if t in lowered]
        result = text
        for pattern, replacement, triggers in self._compiled:
            if not triggers.isdisjoint(hits):
                result = pattern.sub(replacement, result)
        # ``sub`` builds a new string even when it replaced nothing: give back the same object,
        # so callers can tell "unchanged" by identity.
        return text if result == text else result


def _gate(triggers: Iterable[str]) -> tuple[str, ...]:
    """The triggers without those that hold another one ("sk-ant-" holds "sk-"): the fewest
    lookups that tell whether any detector may match."""
    unique = set(triggers)
    return tuple(sorted(t for t in unique if not any(o != t and o in t for o in unique)))


DEFAULT_DETECTORS = SecretDetectors()
"""Every built-in detector."""


def redact_secrets(text: str) -> str:
    """``text`` with every secret the built-in detectors find replaced by ``[REDACTED:<kind>]``."""
    return DEFAULT_DETECTORS.redact(text)
