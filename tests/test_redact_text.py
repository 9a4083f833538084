"""Text layers: offline Presidio pattern recognisers, secret detectors, and the fail-closed
pipeline (a layer that raises or times out drops the item; the re-scan drops leftovers)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from demotrace.privacy.pipeline import RedactionPipeline
from demotrace.privacy.policy import Policy, default_policy
from demotrace.privacy.redact_text import TextRedactor
from demotrace.privacy.secret_detect import Finding, detect_secrets
from privacy_corpus import BENIGN, BENIGN_COMMANDS, PLANTED


@pytest.fixture(scope="module")
def redactor() -> TextRedactor:
    return TextRedactor(default_policy())


# (text, the planted value, the entity expected) — worked out by hand from each format's rule
CASES = [
    ("pay with 4111 1111 1111 1111 today", "4111 1111 1111 1111", "CREDIT_CARD"),
    ("card 5555555555554444 exp 12/29", "5555555555554444", "CREDIT_CARD"),
    ("write to jane.roe@example.com please", "jane.roe@example.com", "EMAIL_ADDRESS"),
    ("call +1 415-555-0132 now", "+1 415-555-0132", "PHONE_NUMBER"),
    ("IBAN DE89 3704 0044 0532 0130 00 ok", "DE89 3704 0044 0532 0130 00", "IBAN_CODE"),
    ("ssn 536-22-8145 on file", "536-22-8145", "US_SSN"),
    ("NINO AB 12 34 56 C on file", "AB 12 34 56 C", "UK_NINO"),
    ("host 198.51.100.23 down", "198.51.100.23", "IP_ADDRESS"),
    ("open https://bob:Blue7Otter@intranet.example.org/x", "bob:Blue7Otter", "URL_CREDENTIALS"),
    ("key AKIAIOSFODNN7EXAMPLE here", "AKIAIOSFODNN7EXAMPLE", "AWS_ACCESS_KEY"),
    ("gcp AIzaSyA1b2C3d4E5f6G7h8I9j0KlMnOpQrStUvW x", "AIzaSyA1b2C3d4E5f6G7h8I9j0KlMnOpQrStUvW", "GCP_API_KEY"),
    ("tok ghp_R2d2C3poX9k7L1m0N8b6V4c2Z0a9S7d5F3g1 x", "ghp_R2d2C3poX9k7L1m0N8b6V4c2Z0a9S7d5F3g1", "GITHUB_TOKEN"),
    ("slack xoxb-2048-4096-Zq9Lm2Xp7Rt4Vb8N x", "xoxb-2048-4096-Zq9Lm2Xp7Rt4Vb8N", "SLACK_TOKEN"),
    ("stripe sk_live_4eC39HqLyjWDarjtT1zdp7dc x", "sk_live_4eC39HqLyjWDarjtT1zdp7dc", "STRIPE_KEY"),
    ("jwt " + PLANTED["jwt"][0] + " x", PLANTED["jwt"][0], "JWT"),
    ("password: Blue7Otter!Sky", "Blue7Otter!Sky", "PASSWORD_LABEL"),
    ("pwd=hunter22;next", "hunter22", "PASSWORD_LABEL"),
    ("my password is Tr0ub4dor&3", "Tr0ub4dor&3", "PASSWORD_LABEL"),
]


@pytest.mark.parametrize(("text", "value", "entity"), CASES)
def test_planted_value_found_and_removed(redactor: TextRedactor, text: str, value: str, entity: str) -> None:
    red = redactor.redact(text)
    assert value not in red.text
    assert f"<{entity}>" in red.text or any(f.entity == entity for f in red.findings), red
    start = text.index(value)
    assert any(f.start <= start and f.end >= start + len(value) - 1 for f in red.findings)


def test_pem_private_key_block() -> None:
    pem = "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEAsynthetic\nAbCdEf123\n-----END RSA PRIVATE KEY-----"
    text = f"config:\n{pem}\ntrailer"
    f = [x for x in detect_secrets(text) if x.entity == "PRIVATE_KEY"]
    assert len(f) == 1 and text[f[0].start:f[0].end] == pem
    truncated = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXk"
    assert [x.entity for x in detect_secrets(truncated) if x.entity == "PRIVATE_KEY"] == ["PRIVATE_KEY"]


def test_luhn_invalid_card_is_not_a_card(redactor: TextRedactor) -> None:
    # 4111 1111 1111 1112: check digit off by one (Luhn sum 31, not a multiple of 10)
    assert not [f for f in redactor.find("ref 4111 1111 1111 1112") if f.entity == "CREDIT_CARD"]


def test_benign_corpus_has_no_findings(redactor: TextRedactor) -> None:
    flagged = {b: redactor.find(b) for b in BENIGN}
    assert {b: f for b, f in flagged.items() if f} == {}


@pytest.mark.parametrize(("text", "value", "entity"), [
    ("ssh 192.168.1.20", "192.168.1.20", "IP_ADDRESS"),  # private ranges stay: they can name a person's machine
    ("connect 203.0.113.7 now", "203.0.113.7", "IP_ADDRESS"),
    ("ssh ida.n@build.example.net:~/x", "ida.n@build.example.net", "EMAIL_ADDRESS"),  # a person's login
    ("write to git@example.com today", "git@example.com", "EMAIL_ADDRESS"),  # no ':' after it
])
def test_addresses_next_to_the_benign_exceptions_are_still_found(redactor: TextRedactor, text: str, value: str,
                                                                 entity: str) -> None:
    assert [(text[f.start:f.end], f.entity) for f in redactor.find(text)] == [(value, entity)]


@pytest.mark.parametrize("command", BENIGN_COMMANDS)
def test_benign_command_numbers_are_no_phone_numbers(redactor: TextRedactor, command: str) -> None:
    assert redactor.find(command) == []
    assert redactor.find(command + "\n" + command) == []


# Each is written like a phone number (module doc of redact_text, phone_written_as_phone) —
# international prefix, parentheses, trunk prefix 0, 10 digits in one group, with "-" / ".",
# or spaced as the national format — and must stay found whole.
PHONES_WRITTEN = [
    "+1 415-555-0132", "+44 20 7946 0123", "+49 30 901820", "0049 30 901820", "(415) 555-0132",
    "020 7946 0123", "01 42 68 53 00", "03-1234567", "4155550132", "415-555-0132", "415.555.0132",
    "415 555 0132", "1-415-555-0132", "98765 43210",
]


@pytest.mark.parametrize("phone", PHONES_WRITTEN)
def test_phone_numbers_written_as_such_are_found(redactor: TextRedactor, phone: str) -> None:
    text = f"call {phone} today"
    found = [f for f in redactor.find(text) if f.entity == "PHONE_NUMBER"]
    assert [(f.start, f.end) for f in found] == [(5, 5 + len(phone))]


def test_analysis_never_touches_the_network() -> None:
    code = textwrap.dedent("""
        import socket
        calls = []
        def refuse(*a, **k):
            calls.append(a)
            raise OSError("network disabled in test")
        socket.socket.connect = refuse
        socket.create_connection = refuse
        socket.getaddrinfo = refuse
        from demotrace.privacy.policy import default_policy
        from demotrace.privacy.redact_text import TextRedactor
        r = TextRedactor(default_policy()).redact("mail jane.roe@example.com card 4111 1111 1111 1111")
        assert r.text == "mail <EMAIL_ADDRESS> card <CREDIT_CARD>", r.text
        import sys
        assert not [m for m in sys.modules if m.startswith("en_core")], "a spaCy model was loaded"
        print("calls", len(calls))
    """)
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert "calls 0" in p.stdout


class Boom:
    name = "boom"

    def __call__(self, text: str) -> list[Finding]:
        raise RuntimeError("analyzer crashed")


class Slow:
    name = "slow"

    def __call__(self, text: str) -> list[Finding]:
        time.sleep(3)
        return []


class FlagsPlaceholders:
    """Finds 'zz' (first pass) and then flags the placeholder itself on the re-scan."""

    name = "sticky"

    def __call__(self, text: str) -> list[Finding]:
        out = []
        for tok in ("zz", "<STICKY>"):
            i = text.find(tok)
            if i >= 0:
                out.append(Finding(i, i + len(tok), "STICKY"))
        return out


def test_pipeline_drops_on_layer_error() -> None:
    pipe = RedactionPipeline(default_policy(), text_layers=[Boom()], ocr=False)
    assert pipe.text("card 4111 1111 1111 1111", "title") is None
    assert pipe.counts.dropped == {"title:boom:error": 1}
    assert pipe.counts.items_out["title"] == 0
    pipe.close()


def test_pipeline_drops_on_layer_timeout() -> None:
    pol = Policy.from_toml('version = 1\nnotice = "n"\n[redaction]\nlayer_timeout_s = 0.2\nentities = []\n')
    pipe = RedactionPipeline(pol, text_layers=[Slow()], ocr=False)
    t0 = time.monotonic()
    assert pipe.text("anything at all", "url") is None
    assert time.monotonic() - t0 < 2.5  # did not wait for the 3 s layer
    assert pipe.counts.dropped == {"url:slow:timeout": 1}
    pipe.close()


def test_pipeline_rescan_drops_leftovers_and_passes_clean_text() -> None:
    pipe = RedactionPipeline(default_policy(), text_layers=[FlagsPlaceholders()], ocr=False)
    assert pipe.text("a zz b", "title") is None
    assert pipe.counts.dropped == {"title:rescan:found": 1}
    assert pipe.text("clean", "title") == "clean"
    real = RedactionPipeline(default_policy(), ocr=False)
    assert real.text("mail jane.roe@example.com", "title") == "mail <EMAIL_ADDRESS>"
    assert real.counts.entities == {"EMAIL_ADDRESS": 1}
    pipe.close()
    real.close()


# Tester issue #4: NAME_PASSWORD=value labels, flag and MySQL forms. Each value worked out by
# hand from the input line (the text after "=", after the flag's space, after "-p").
LABEL_FORMS = [
    ("export DB_PASSWORD=sunflower42", "sunflower42"),
    ("PGPASSWORD=sunflower42 psql -h db.example.org", "sunflower42"),
    ("MYSQL_PWD=sunflower42 mysql", "sunflower42"),
    ("mysqldump --password sunflower42 shop", "sunflower42"),
    ("mysql -u root -psunflower42 shop", "sunflower42"),
    ("PASSWORD=daffodil7", "daffodil7"),
    ("pwd=daffodil7", "daffodil7"),
    ("passwd=daffodil7", "daffodil7"),
    ("app --password=daffodil7 --verbose", "daffodil7"),
    ("api_key=daffodil7", "daffodil7"),
    ("GITHUB_TOKEN=daffodil7 make release", "daffodil7"),
    ("client_secret: daffodil7", "daffodil7"),
    ("openssl enc -pass pass:daffodil7", "pass:daffodil7"),
    # bug bash 2: credentials in command arguments (the password after "user:", after the flag)
    ("curl -u admin:Zq9xLmPw44 https://api.example.com", "Zq9xLmPw44"),
    ("curl -sSu admin:Zq9xLmPw44 https://api.example.com", "Zq9xLmPw44"),
    ("curl --user=admin:Zq9xLmPw44 -X POST https://api.example.com", "Zq9xLmPw44"),
    ("curl --proxy-user bob:Zq9xLmPw44 https://example.org", "Zq9xLmPw44"),
    ("curl -u 'admin:Zq9 xLm Pw44' https://api.example.com", "Zq9 xLm Pw44"),
    ("curl https://example.org:8443/api -u admin:Zq9xLmPw44", "Zq9xLmPw44"),
    ("http -a admin:Zq9xLmPw44 api.example.com/items", "Zq9xLmPw44"),
    ('curl -H "Authorization: Basic YWRtaW46WnE5eA==" https://api.example.com', "YWRtaW46WnE5eA=="),
    ("wget --user=admin --password=Zq9xLmPw44 https://example.org/f", "Zq9xLmPw44"),
    ("wget --http-password Zq9xLmPw44 https://example.org/f", "Zq9xLmPw44"),
    ("sshpass -p Zq9xLmPw44 ssh admin@build.example.org", "Zq9xLmPw44"),
    ("sshpass -pZq9xLmPw44 scp f admin@build.example.org:", "Zq9xLmPw44"),
    ("docker login -u admin -p Zq9xLmPw44 registry.example.org", "Zq9xLmPw44"),
    ("ldapsearch -x -D cn=admin,dc=example,dc=org -w Zq9xLmPw44 -b dc=example,dc=org", "Zq9xLmPw44"),
]


@pytest.mark.parametrize(("text", "value"), LABEL_FORMS)
def test_password_label_forms_redacted(redactor: TextRedactor, text: str, value: str) -> None:
    f = [x for x in detect_secrets(text, entropy=False) if x.entity == "PASSWORD_LABEL"]
    start = text.index(value)
    assert [(x.start, x.end) for x in f] == [(start, start + len(value))]
    red = redactor.redact(text)
    assert value not in red.text and "<PASSWORD_LABEL>" in red.text


# Benign look-alikes, decided (docs/privacy.md): a secret word that BEGINS an identifier names a
# setting, not a secret (PASSWORD_MIN_LENGTH, password_reset_url, TOKEN_URL); --password-file /
# --password-stdin take a path / nothing; "-p" is a password only for the MySQL / MariaDB
# clients and only attached; OLDPWD / $PWD are directories.
BENIGN_LABELS = [
    "PASSWORD_MIN_LENGTH=8",
    "password_reset_url=https://accounts.example.org/reset",
    "TOKEN_URL=https://auth.example.org/token",
    "docker login --password-stdin registry.example.org",
    "restic backup --password-file /etc/restic/pw /srv",
    "mkdir -p build/out",
    "gcc -pthread main.c",
    "ssh -p 2222 build.example.org",
    "mysql -u root -p shop",
    "OLDPWD=/srv/app",
    "cd $PWD/sub",
    # bug bash 2: "-u" / ":" that are no credentials
    "curl -u root https://api.example.com",  # no ':': curl prompts for the password
    "curl -u admin: https://api.example.com",  # empty password
    "useradd -u 1001 anna",
    "docker run -u 1000:1000 alpine id",  # uid:gid, not curl
    "sort -u names.txt",
    "curl -o out.txt https://example.org:8443/a",
    "psql --no-password -h db.example.org shop",
    "ssh -p 2222 anna@build.example.org",
]


@pytest.mark.parametrize("text", BENIGN_LABELS)
def test_password_label_benign_lookalikes_kept(text: str) -> None:
    assert [x for x in detect_secrets(text, entropy=False) if x.entity == "PASSWORD_LABEL"] == []


# Bug bash 2: sealing with a home policy `entities = []` went online (Presidio then loaded its
# whole predefined set; the stock e-mail recogniser's tldextract fetched the public-suffix list
# and cached it under ~/.cache/python-tldextract). The script below runs in a fresh interpreter
# (nothing cached from other tests) with HOME an empty folder, refuses every socket connect and
# name lookup that is not loopback, seals a session typing an e-mail, a URL with credentials and
# phone numbers under that policy, and redacts the same text with every recogniser.
_OFFLINE_SCRIPT = r'''
import ipaddress, json, socket, sys
from pathlib import Path

attempts = []
_connect, _getaddrinfo = socket.socket.connect, socket.getaddrinfo

def _loopback(host):
    if host in ("localhost", "", None):
        return True
    try:
        return ipaddress.ip_address(str(host).split("%")[0]).is_loopback
    except ValueError:
        return False

def connect(self, address):
    if self.family in (socket.AF_INET, socket.AF_INET6) and not _loopback(address[0]):
        attempts.append(["connect", str(address[0])])
        raise OSError("network disabled in test")
    return _connect(self, address)

def getaddrinfo(host, *a, **k):
    if not _loopback(host):
        attempts.append(["getaddrinfo", str(host)])
        raise socket.gaierror("name lookup disabled in test")
    return _getaddrinfo(host, *a, **k)

socket.socket.connect, socket.getaddrinfo = connect, getaddrinfo

from privacy_corpus import Builder
from demotrace.paths import Paths
from demotrace.privacy.bundle import open_bundle
from demotrace.privacy.policy import load_policy
from demotrace.privacy.redact_text import TextRedactor
from demotrace.privacy.seal import seal_session
from demotrace.schema import KeyDown
from demotrace.spool import DataKey, Spool

dt = Path(sys.argv[1])
paths = Paths(dt).ensure()
policy = load_policy(paths)
spool = Spool(paths.spool, DataKey.create(paths.key_file))
b = Builder(spool.key)
b.focus("XTerm", "xterm")
b.type_text(sys.argv[2] + "\n")
b.write(spool, "s1")
rep = seal_session(paths, spool, "s1", policy)
with open_bundle(paths, "s1") as bundle:
    typed = "".join(e.text or "" for e in bundle.iter_events() if isinstance(e, KeyDown))
red = TextRedactor(policy).redact(sys.argv[2]).text
print(json.dumps({"attempts": attempts, "entities": list(policy.redaction.entities),
                  "threshold": policy.redaction.score_threshold, "notes": list(policy.notes),
                  "counts": rep.counts, "typed": typed, "redacted": red}))
'''


def test_all_recognisers_stay_offline_with_an_empty_home(tmp_path: Path) -> None:
    import json
    import os

    home, dt = tmp_path / "home", tmp_path / "dt"
    home.mkdir()
    dt.mkdir(mode=0o700)
    (dt / "policy.toml").write_text('version = 2\nnotice = "We record clicks."\n'
                                    "[redaction]\nentities = []\nscore_threshold = 1.0\n", "utf-8")
    text = "mail anna.lindqvist@example.org via https://anna:Fj0rd7Sky@intranet.example.org tel +1 415-555-0132"
    env = {k: v for k, v in os.environ.items() if k not in ("XDG_CACHE_HOME", "TLDEXTRACT_CACHE", "DEMOTRACE_HOME")}
    env |= {"HOME": str(home), "PYTHONPATH": str(Path(__file__).parent)}
    p = subprocess.run([sys.executable, "-c", _OFFLINE_SCRIPT, str(dt), text], capture_output=True, text=True,
                       timeout=300, env=env)
    assert p.returncode == 0, p.stderr
    assert "ConnectionError" not in p.stderr and "Traceback" not in p.stderr, p.stderr
    out = json.loads(p.stdout.strip().splitlines()[-1])
    assert out["attempts"] == []  # no connect, no name lookup
    assert list(home.rglob("*")) == []  # no ~/.cache/python-tldextract (nor anything else) written
    # worked out by hand: the e-mail and the phone number are replaced; in the URL the user-info
    # "anna:Fj0rd7Sky" (URL_CREDENTIALS, 0.9) touches the e-mail-shaped "Fj0rd7Sky@intranet.example.org"
    # (EMAIL_ADDRESS, 1.0): one merged span named after the higher score
    assert out["redacted"] == "mail <EMAIL_ADDRESS> via https://<EMAIL_ADDRESS> tel <PHONE_NUMBER>"
    for value in ("anna.lindqvist@example.org", "Fj0rd7Sky", "415-555-0132"):
        assert value not in out["typed"]
    # the built-in floor: `entities = []` is the built-in set, the threshold stays at 0.35
    assert out["entities"] == ["EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD", "IBAN_CODE", "US_SSN", "UK_NINO",
                               "IP_ADDRESS", "URL_CREDENTIALS"]
    assert out["threshold"] == 0.35
    assert out["counts"]["entities"].get("PHONE_NUMBER") == 1


def test_the_socket_guard_of_the_offline_test_sees_tldextracts_own_download(tmp_path: Path) -> None:
    """The guard of the test above is not blind: tldextract's stock extractor, used without the
    offline set-up, tries to fetch the public-suffix list and the guard records it."""
    import json
    import os

    code = _OFFLINE_SCRIPT.split("from privacy_corpus")[0] + (
        "import tldextract\ntldextract.TLDExtract(cache_dir=None)('www.example.org')\n"
        "print(json.dumps(attempts))\n")
    env = {k: v for k, v in os.environ.items() if k not in ("XDG_CACHE_HOME", "TLDEXTRACT_CACHE",
                                                               "TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS")}
    env["HOME"] = str(tmp_path)
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert p.returncode == 0, p.stderr
    assert ["getaddrinfo", "publicsuffix.org"] in json.loads(p.stdout.strip().splitlines()[-1])
