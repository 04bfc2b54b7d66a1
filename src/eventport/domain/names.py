"""Rules for names, addresses and templates that users give us.

Each check raises :class:`InvalidInput` with a stable ``code`` (Scarf's codes where Scarf has
one) and a message that says what was wrong and what is allowed.
"""

from __future__ import annotations

import re
import unicodedata
from urllib.parse import SplitResult, urlsplit

from eventport.domain.errors import InvalidInput

ACCOUNT_NAME_MAX = 39
ACCOUNT_NAME_RE = re.compile(r"^[a-z0-9](?:[a-z0-9_-]{0,37}[a-z0-9])?$")
# Names that would shadow a route segment of the v1 API (/api/v1/{organization}/...).
RESERVED_ACCOUNT_NAMES = frozenset(
    {
        "api",
        "v1",
        "v2",
        "admin",
        "organizations",
        "packages",
        "pixels",
        "users",
        "imports",
        "tracking-pixels",
        "search",
        "healthz",
        "docs",
        "openapi",
        "me",
        "root",
        "eventport",
    }
)

PACKAGE_NAME_MAX = 214
PACKAGE_NAME_RE = re.compile(r"^[A-Za-z0-9@_][A-Za-z0-9._~@/+-]*$")
PYTHON_NAME_RE = re.compile(r"^([A-Z0-9]|[A-Z0-9][A-Z0-9._-]*[A-Z0-9])$", re.IGNORECASE)
DOCKER_SEGMENT_RE = re.compile(r"^[a-z0-9]+(?:[._-][a-z0-9]+)*$")
DOCKER_NAME_MAX = 255
REGISTRY_MAX = 255
HOST_RE = re.compile(
    r"^(?=.{1,253}$)[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*$"
)
REGISTRY_RE = re.compile(r"^[a-z0-9.-]+(?::[1-9][0-9]{0,4})?$")
_EMAIL_CHAR = r"[^@\s\x00-\x1f\x7f\ud800-\udfff]"  # no spaces, control characters or surrogates
EMAIL_RE = re.compile(rf"^{_EMAIL_CHAR}{{1,64}}@{_EMAIL_CHAR}+\.{_EMAIL_CHAR}+$")
SCHEME_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):(?![0-9]+(?:[/?#]|$))")
TEMPLATE_VAR_RE = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")

USER_AGENT_SUBSTRINGS_MAX = 100
USER_AGENT_SUBSTRING_MAX = 200

TEXT_LIMITS = {
    "short_description": 1_000,
    "long_description": 100_000,
    "description": 10_000,
    "website": 2_048,
    "name": 200,
}


def unstorable_reason(value: str) -> str | None:
    """Why a string cannot be stored or echoed back (NUL: PostgreSQL; lone surrogates: UTF-8)."""
    if "\x00" in value:
        return "must not contain NUL characters"
    if any("\ud800" <= c <= "\udfff" for c in value):
        return "must be valid Unicode text (it contains a lone surrogate)"
    return None


def _split_url(url: str, field: str, code: str) -> SplitResult:
    """urlsplit, turning its ValueError (bad IPv6 literal, port out of range) into bad input."""
    try:
        parts = urlsplit(url)
        _ = parts.port
    except ValueError as exc:
        raise InvalidInput(f"{field} {url[:80]!r} is not a valid URL: {exc}", code=code) from None
    return parts


def check_text(field: str, value: str | None, limit: int | None = None) -> str | None:
    """Free text: bounded length, no control characters that databases or terminals mangle."""
    if value is None:
        return None
    limit = limit or TEXT_LIMITS.get(field, 10_000)
    if len(value) > limit:
        raise InvalidInput(f"{field} is too long: {len(value)} characters, at most {limit}")
    if any(unicodedata.category(c) == "Cc" and c not in "\t\n\r" for c in value):
        raise InvalidInput(f"{field} contains control characters", code=f"invalid-{field}")
    reason = unstorable_reason(value)
    if reason is not None:
        raise InvalidInput(f"{field} {reason}", code=f"invalid-{field}")
    return value


def check_account_name(name: str, *, code: str = "invalid-name") -> str:
    if not ACCOUNT_NAME_RE.fullmatch(name):
        raise InvalidInput(
            f"invalid name {name[:80]!r}: use 1 to {ACCOUNT_NAME_MAX} lowercase letters, digits, "
            "'-' or '_', starting and ending with a letter or digit",
            code=code,
        )
    if name in RESERVED_ACCOUNT_NAMES:
        raise InvalidInput(f"the name {name!r} is reserved", code=code)
    return name


def check_email(email: str, *, code: str = "invalid-email") -> str:
    # The limit applies to what is stored: some characters grow when lowercased ('İ' is two).
    stored = email.lower()
    if len(stored) > 254 or not EMAIL_RE.fullmatch(email):
        raise InvalidInput(f"invalid email address {email[:80]!r}", code=code)
    return stored


def check_website(website: str | None, *, code: str = "invalid-website-url") -> str | None:
    if website is None or website == "":
        return None
    check_text("website", website)
    if any(c.isspace() for c in website):
        raise InvalidInput(f"invalid website {website[:80]!r}: no spaces allowed", code=code)
    scheme = SCHEME_RE.match(website)
    if scheme and scheme[1].lower() not in ("http", "https"):
        # Shown as a link, 'javascript:' or 'data:' would run or forge content. (A bare
        # 'host:8080/path' has no scheme: what follows its colon is a port.)
        raise InvalidInput(
            f"invalid website {website[:80]!r}: only http and https addresses", code=code
        )
    return website


def check_package_name(name: str, longest: int = PACKAGE_NAME_MAX) -> str:
    if name == "":
        raise InvalidInput("package name is empty", code="package-name-is-empty")
    if len(name) > longest:
        raise InvalidInput(
            f"package name is too long: {len(name)} characters, at most {longest}",
            code="invalid-package-name",
        )
    segments = name.split("/")
    if not PACKAGE_NAME_RE.fullmatch(name) or "" in segments or "." in segments or ".." in segments:
        raise InvalidInput(
            f"invalid package name {name[:80]!r}: use letters, digits and . _ ~ @ / + -, "
            "starting with a letter, digit, '@' or '_'",
            code="invalid-package-name",
        )
    return name


def check_python_name(name: str) -> str:
    if not PYTHON_NAME_RE.fullmatch(name):
        raise InvalidInput(
            f"{name[:80]!r} is not a valid Python project name (PEP 508)",
            code="invalid-python-project-name",
        )
    return name


def check_docker_image_name(name: str) -> str:
    if len(name) > DOCKER_NAME_MAX:
        raise InvalidInput(
            "docker image name is longer than 255 characters",
            code="docker-image-name-is-longer-than-255-characters",
        )
    segments = name.split("/")
    if any(s == "" for s in segments):
        raise InvalidInput(
            f"docker image name {name[:80]!r} has empty segments",
            code="docker-image-name-has-empty-segments",
        )
    for segment in segments:
        if not DOCKER_SEGMENT_RE.fullmatch(segment):
            raise InvalidInput(
                f"docker image name segment {segment[:80]!r} must match "
                "[a-z0-9]+(?:[._-][a-z0-9]+)*",
                code="docker-image-name-has-invalid-characters",
            )
    return name


def check_registry(registry: str | None) -> str:
    if not registry:
        raise InvalidInput("backend_registry is empty", code="backend-registry-is-empty")
    if (
        len(registry) > REGISTRY_MAX
        or not REGISTRY_RE.fullmatch(registry)
        or not HOST_RE.fullmatch(registry.split(":")[0])
        or int(registry.partition(":")[2] or 1) > 65535
    ):
        raise InvalidInput(
            f"backend_registry {registry[:80]!r} must be a host name, optionally with a port",
            code="backend-registry-has-invalid-characters",
        )
    return registry


def check_domain(domain: str, *, prefix: str = "domain") -> str:
    if domain == "":
        raise InvalidInput(f"{prefix.replace('-', ' ')} is empty", code=f"{prefix}-is-empty")
    if not HOST_RE.fullmatch(domain) or "." not in domain:
        raise InvalidInput(
            f"{domain[:80]!r} is not a valid domain name: lowercase letters, digits, '-' and '.'",
            code=f"{prefix}-has-invalid-characters",
        )
    return domain


def check_repository_url(url: str) -> str:
    parts = _split_url(url, "repository_url", "repository-url-invalid")
    if not parts.scheme or not parts.netloc or any(c.isspace() for c in url):
        raise InvalidInput(
            f"repository_url {url[:80]!r} is not a URL", code="repository-url-invalid"
        )
    if parts.scheme != "https":
        raise InvalidInput("repository_url must use https", code="repository-url-not-https")
    if not url.endswith("/"):
        raise InvalidInput(
            "repository_url must end with '/'", code="repository-url-missing-trailing-slash"
        )
    return url


def docker_url_parts(url: str, field: str) -> tuple[str, str]:
    """Split a v1 docker backendUrl/publicUrl into (host, image path), checking each path part."""
    parts = _split_url(url if "://" in url else f"https://{url}", field, f"invalid-{field}")
    host = (parts.hostname or "").lower()
    path = parts.path.strip("/")
    if not host or not HOST_RE.fullmatch(host) or any(c.isspace() for c in url):
        raise InvalidInput(f"{field} {url[:80]!r} is not a valid URL", code=f"invalid-{field}")
    if not path:
        raise InvalidInput(
            f"{field} must have at least one path component, e.g. https://docker.io/library/ubuntu",
            code=f"invalid-{field}",
        )
    if len(path) > DOCKER_NAME_MAX:
        raise InvalidInput(
            f"{field} path is longer than {DOCKER_NAME_MAX} characters", code=f"invalid-{field}"
        )
    for segment in path.split("/"):
        if not DOCKER_SEGMENT_RE.fullmatch(segment):
            raise InvalidInput(
                f"{field} path component {segment[:80]!r} must match [a-z0-9]+(?:[._-][a-z0-9]+)*",
                code=f"invalid-{field}",
            )
    netloc = host if parts.port is None else f"{host}:{parts.port}"
    if len(netloc) > REGISTRY_MAX:
        raise InvalidInput(
            f"{field} host is longer than {REGISTRY_MAX} characters", code=f"invalid-{field}"
        )
    return netloc, path


def _template_vars(template: str, field: str) -> set[str]:
    stripped = TEMPLATE_VAR_RE.sub("", template)
    if "{" in stripped or "}" in stripped:
        raise InvalidInput(
            f"{field} {template[:80]!r} has unbalanced or invalid {{variable}} placeholders",
            code=f"{field.replace('_', '-')}-invalid-url-template",
        )
    return set(TEMPLATE_VAR_RE.findall(template))


def check_route(incoming_path: str, outgoing_url: str) -> tuple[str, str]:
    """A file-package route: ``/downloads/{version}/x-{version}.tgz`` -> ``https://host/...``."""
    if not outgoing_url:
        raise InvalidInput("outgoing_url must not be empty", code="outgoing-url-must-not-be-empty")
    if not incoming_path:
        raise InvalidInput(
            "incoming_path must not be empty", code="incoming-path-must-not-be-empty"
        )
    check_text("incoming_path", incoming_path, 2_048)
    check_text("outgoing_url", outgoing_url, 2_048)
    if "://" in incoming_path:
        raise InvalidInput(
            "incoming_path must be a path, not a URL", code="incoming-path-must-be-relative"
        )
    if not incoming_path.startswith("/"):
        raise InvalidInput(
            "incoming_path must start with '/'", code="incoming-path-must-start-with-slash"
        )
    incoming_vars = _template_vars(incoming_path, "incoming_path")
    outgoing_vars = _template_vars(outgoing_url, "outgoing_url")
    parts = _split_url(outgoing_url, "outgoing_url", "outgoing-url-must-be-absolute")
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.port == 0:
        raise InvalidInput(
            "outgoing_url must be an absolute http(s) URL", code="outgoing-url-must-be-absolute"
        )
    missing = sorted(outgoing_vars - incoming_vars)
    if missing:
        raise InvalidInput(
            f"outgoing_url uses {', '.join('{' + m + '}' for m in missing)} "
            "which incoming_path does not define",
            code="incoming-path-missing-variables",
        )
    return incoming_path, outgoing_url


def check_user_agent_substrings(values: list[str]) -> list[str]:
    """An owner's excluded user-agent substrings, as stored: each stripped, and of entries that
    differ only in case the first kept (user agents are matched without regard to case)."""
    field, code = "excluded_user_agents", "invalid-excluded-user-agents"
    kept: dict[str, str] = {}
    for index, value in enumerate(values):
        where = f"{field}[{index}]"
        substring = value.strip()
        if not substring:
            raise InvalidInput(f"{where} is empty", code=code)
        if len(substring) > USER_AGENT_SUBSTRING_MAX:
            raise InvalidInput(
                f"{where} is too long: {len(substring)} characters, "
                f"at most {USER_AGENT_SUBSTRING_MAX}",
                code=code,
            )
        if any(unicodedata.category(c) == "Cc" for c in substring):
            raise InvalidInput(f"{where} contains control characters", code=code)
        if (reason := unstorable_reason(substring)) is not None:
            raise InvalidInput(f"{where} {reason}", code=code)
        kept.setdefault(substring.casefold(), substring)
    if len(kept) > USER_AGENT_SUBSTRINGS_MAX:
        raise InvalidInput(
            f"{field} has {len(kept)} distinct substrings, at most {USER_AGENT_SUBSTRINGS_MAX}",
            code=code,
        )
    return list(kept.values())
