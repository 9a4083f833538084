"""Secret detectors: credentials and keys in text (DESIGN.md §8.5, layer 4).

Each detector is a named regular expression; the formats are the issuers' published ones (the
same families gitleaks and detect-secrets ship rules for):

=====================  ==================================================================
entity                 rule
=====================  ==================================================================
AWS_ACCESS_KEY         ``AKIA`` / ``ASIA`` / ``AGPA`` / ``AIDA`` / ``AROA`` + 16 upper-case
                       alphanumerics (AWS IAM unique-id prefixes)
AWS_SECRET_KEY         40 base64 characters after an ``aws_secret_access_key`` label
GCP_API_KEY            ``AIza`` + 35 of ``[0-9A-Za-z_-]`` (Google API keys)
GITHUB_TOKEN           ``ghp_`` / ``gho_`` / ``ghu_`` / ``ghs_`` / ``ghr_`` + 36+ alphanumerics,
                       ``github_pat_`` + 22+ (GitHub token formats, 2021)
SLACK_TOKEN            ``xoxb-`` / ``xoxp-`` / ``xoxa-`` / ``xoxr-`` / ``xoxs-`` / ``xapp-`` …
SLACK_WEBHOOK          ``hooks.slack.com/services/T…/B…/…``
STRIPE_KEY             ``sk_live_`` / ``sk_test_`` / ``rk_live_`` / ``rk_test_`` + 16+
JWT                    three base64url segments, the first two starting ``eyJ`` (RFC 7519)
PRIVATE_KEY            a PEM block ``-----BEGIN … PRIVATE KEY-----`` up to its END line (or
                       the end of the text when truncated) (RFC 7468)
PASSWORD_LABEL         the value after ``password`` / ``passwd`` / ``pwd`` / ``passphrase`` /
                       ``secret`` / ``token`` / ``api_key`` / ``pin`` followed by ``:`` or
                       ``=`` (only the value is redacted); the word may end an identifier
                       (``DB_PASSWORD=``, ``PGPASSWORD=``, ``MYSQL_PWD=``, ``GITHUB_TOKEN=``)
                       but not begin one (``PASSWORD_MIN_LENGTH=8``, ``password_reset_url=``
                       are settings, not secrets: kept); also ``--password VALUE`` /
                       ``-pass VALUE`` flags (not ``--password-file``) and the MySQL /
                       MariaDB clients' attached ``-pVALUE`` (tester issue #4); and
                       (:data:`CREDENTIAL_RULES`, bug bash 2) the password of ``user:password``
                       after curl ``-u`` / ``--user`` / ``-U`` / ``--proxy-user`` and HTTPie
                       ``-a`` / ``--auth``, ``--http-password`` / ``--ftp-password`` …, an
                       ``Authorization: Basic|Bearer`` header's credentials, ``sshpass -p``,
                       ``docker|podman … login -p`` and the LDAP clients' ``-w`` (``-u root``
                       without a colon, ``useradd -u 1001``, ``docker run -u 1000:1000``: kept)
HIGH_ENTROPY_TOKEN     a run of 24+ ``[A-Za-z0-9+/=_-]`` mixing upper, lower and digits with
                       Shannon entropy ≥ 3.5 bits/char (catches keys of unknown issuers and
                       OCR-garbled known ones; lower-case hex such as git hashes is not
                       flagged)
=====================  ==================================================================
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass


@dataclass(frozen=True)
class Finding:
    """A span ``[start, end)`` of a text (character offsets) to redact, with its ``entity``
    type (Presidio entity names or the names above), ``score`` (0..1) and the ``layer`` that
    found it ("patterns" | "secrets")."""

    start: int
    end: int
    entity: str
    score: float = 1.0
    layer: str = "secrets"


_B64 = r"[A-Za-z0-9+/=_\-]"
DETECTORS: dict[str, re.Pattern[str]] = {
    "AWS_ACCESS_KEY": re.compile(r"\b(?:AKIA|ASIA|AGPA|AIDA|AROA|ANPA|ANVA|AIPA)[0-9A-Z]{16}\b"),
    "AWS_SECRET_KEY": re.compile(
        r"(?i:aws_?secret_?(?:access_?)?key)[\"']?\s*[:=]\s*[\"']?([A-Za-z0-9/+=]{40})(?![A-Za-z0-9/+=])"
    ),
    "GCP_API_KEY": re.compile(r"\bAIza[0-9A-Za-z_\-]{35}"),
    "GITHUB_TOKEN": re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{36,255}|github_pat_[A-Za-z0-9_]{22,255})"),
    "SLACK_TOKEN": re.compile(r"\bxox[abposr]-[A-Za-z0-9\-]{10,}|\bxapp-\d-[A-Za-z0-9\-]{10,}"),
    "SLACK_WEBHOOK": re.compile(r"hooks\.slack\.com/services/T[A-Za-z0-9_]+/B[A-Za-z0-9_]+/[A-Za-z0-9_]+"),
    "STRIPE_KEY": re.compile(r"\b(?:sk|rk|pk)_(?:live|test)_[0-9A-Za-z]{16,}"),
    "JWT": re.compile(r"\beyJ[A-Za-z0-9_\-]{4,}\.eyJ[A-Za-z0-9_\-]{4,}\.[A-Za-z0-9_\-]{8,}"),
    "PRIVATE_KEY": re.compile(
        r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----[\s\S]*?(?:-----END [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----|\Z)"
    ),
    "PASSWORD_LABEL": re.compile(
        # 1. a password word, alone or ending an identifier (DB_PASSWORD, PGPASSWORD, MYSQL_PWD),
        #    then ":" / "=" / "is"; an identifier CONTINUING after it (PASSWORD_MIN_LENGTH,
        #    password_reset_url) is not a password label
        r"(?i:(?<![A-Za-z0-9])(?:[A-Za-z0-9]*_)?(?:[A-Za-z0-9]*pass(?:word|wd|phrase)|pass(?:code)?|pwd)"
        r"(?![A-Za-z0-9_])[\"']?[ \t]*(?:[:=]|\bis\b)"
        # 2. other secret words, alone or ending an identifier (GITHUB_TOKEN=, client_secret:)
        r"|(?<![A-Za-z0-9])(?:[A-Za-z0-9]*_)?(?:secret|token|api[_\- ]?key|access[_\- ]?key|pin)"
        r"(?![A-Za-z0-9_])[\"']?[ \t]*[:=]"
        # 3. command-line flags with the value after a space or "=" (--password s3cret, -pass x);
        #    not --password-file / --password-stdin, not a following flag
        r"|(?<![\w\-])--?(?:(?:http|https|ftp|proxy|admin|db|bind|store|key)-)?(?:password|passwd|passphrase|pass|pwd)"
        r"(?:[ \t]+|=)(?=[^\s\-])"
        # 4. the MySQL / MariaDB client's attached -p<password> (mysql -u root -ps3cret)
        r"|\b(?:mysql|mysqldump|mysqladmin|mariadb|mariadb-dump|mariadb-admin)\b[^\n|;&]*?[ \t]-p(?=[^\s\-]))"
        r"[ \t]*(?!<[A-Z_]+>)(\"[^\"\n]{1,128}\"|'[^'\n]{1,128}'|[^\s\"',;]{1,128})"
    ),
}
#: Command-line credentials that are not ``label: value`` forms (tester issue #4, bug bash 2);
#: each finds PASSWORD_LABEL, and only the password is redacted (the first group that took part
#: in the match). A command word must start a word that is not part of a path or URL
#: (``(?<![\w/.-])``), and the flag must be in the same command (no ``|``, ``;``, ``&`` or new
#: line between them).
_CMD = r"(?<![\w/.\-]){cmd}\b[^\n|;&]*?(?<![\w\-])"
#: ``user:password`` as one argument: quoted ("admin:pw x" / 'admin:pw x') or bare (up to a
#: space or quote); the user part is kept, the password after the first ':' is the value.
_USERINFO = r"(?:\"[^\s:\"]*:([^\"\n]{1,128})\"|'[^\s:']*:([^'\n]{1,128})'|[^\s:\"']*:([^\s\"']{1,128}))"
#: A password argument after its flag: quoted or bare (the PASSWORD_LABEL value forms).
_PWARG = r"(?:\"([^\"\n]{1,128})\"|'([^'\n]{1,128})'|([^\s\"']{1,128}))"
CREDENTIAL_RULES: tuple[re.Pattern[str], ...] = (
    # curl -u / --user / -U / --proxy-user user:password (curl(1) "-u, --user <user:password>");
    # short flags may be combined (-su) or attached (-uadmin:pw). `-u root` (no ':') makes curl
    # prompt: nothing to redact.
    re.compile(_CMD.format(cmd="curl") + r"(?:-[A-Za-z]*[uU][ \t]*|--(?:proxy-)?user(?:[ \t]+|=))" + _USERINFO),
    # HTTPie: http / https -a / --auth user:password (httpie.io/docs/cli/authentication)
    re.compile(_CMD.format(cmd="(?:https?|httpie)") + r"(?:-a[ \t]*|--auth(?:[ \t]+|=))" + _USERINFO),
    # an HTTP Authorization header's credentials (RFC 7617 Basic = base64 of user:password,
    # RFC 6750 Bearer): -H "Authorization: Basic ZGVtbzpw...", Proxy-Authorization likewise
    re.compile(r"(?i:(?<![\w\-])(?:proxy-)?authorization[\"']?[ \t]*[:=][ \t]*[\"']?(?:basic|bearer|token)[ \t]+)"
               r"([A-Za-z0-9+/=._~\-]{4,})"),
    # sshpass -p PASSWORD (sshpass(1); -pPASSWORD attached too)
    re.compile(_CMD.format(cmd="sshpass") + r"-p[ \t]*" + _PWARG),
    # docker / podman / buildah / skopeo / helm registry login -p PASSWORD
    re.compile(_CMD.format(cmd=r"(?:docker|podman|buildah|skopeo|helm(?:[ \t]+registry)?)[ \t]+login")
               + r"-p[ \t]*" + _PWARG),
    # OpenLDAP clients: ldapsearch / ldapmodify / ... -w PASSWORD (the simple-bind password)
    re.compile(_CMD.format(cmd=r"ldap[a-z]*") + r"-w[ \t]*" + _PWARG),
)

_ENTROPY_RE = re.compile(rf"(?<!{_B64}){_B64}{{24,}}(?!{_B64})")

#: Entities whose value is a capture group (only the value is redacted, not the label).
_GROUP_ENTITIES = {"AWS_SECRET_KEY", "PASSWORD_LABEL"}


def shannon_entropy(s: str) -> float:
    """Shannon entropy of ``s`` in bits per character (0 for an empty string)."""
    if not s:
        return 0.0
    n = len(s)
    return -sum(c / n * math.log2(c / n) for c in Counter(s).values())


def _high_entropy(tok: str) -> bool:
    return (
        any(c.isupper() for c in tok)
        and any(c.islower() for c in tok)
        and any(c.isdigit() for c in tok)
        and shannon_entropy(tok) >= 3.5
    )


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance between ``a`` and ``b`` (insertions, deletions, substitutions;
    Wagner-Fischer dynamic programming, O(len(a)·len(b)))."""
    if len(a) < len(b):
        a, b = b, a
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def detect_secrets(text: str, *, entropy: bool = True) -> list[Finding]:
    """All secret findings in ``text`` (possibly overlapping; callers merge spans).

    ``entropy``: also run the HIGH_ENTROPY_TOKEN rule.
    """
    out: list[Finding] = []
    for name, rx in DETECTORS.items():
        for m in rx.finditer(text):
            if name in _GROUP_ENTITIES:
                s, e = m.span(1)
            else:
                s, e = m.span()
            if e > s:
                out.append(Finding(s, e, name, 1.0, "secrets"))
    for rx in CREDENTIAL_RULES:
        for m in rx.finditer(text):
            s, e = next(m.span(i) for i in range(1, (m.lastindex or 0) + 1) if m.group(i) is not None)
            if e > s:
                out.append(Finding(s, e, "PASSWORD_LABEL", 1.0, "secrets"))
    if entropy:
        for m in _ENTROPY_RE.finditer(text):
            if _high_entropy(m.group()):
                out.append(Finding(m.start(), m.end(), "HIGH_ENTROPY_TOKEN", 0.8, "secrets"))
    return out
