"""The tables behind user-agent enrichment: tools, platforms, CI names, bots.

They live apart from the parsing code in :mod:`eventport.enrich.agents` so that teaching
eventport a new tool, bot or CI service is a one-line change reviewed without reading any
parsing logic.

Each tool rule is an anchored, case-insensitive pattern over the user agent as the tool's own
source builds it; the tests hold one such string per rule. A pattern may name these groups, all
optional:

* ``version``: the tool's version (a leading ``v`` is left out of the group);
* ``runtime``: the language runtime; prefixed with the rule's ``runtime_name`` when the agent
  gives only a number (``node/v20.11.0`` -> ``node 20.11.0``), else taken as written with its
  first ``/`` turned into a space (``CPython/3.12.2`` -> ``CPython 3.12.2``, ``go1.20.10``);
* ``os``: however the tool names the operating system, mapped through :data:`PLATFORM_WORDS`
  and :data:`PLATFORM_HINTS`;
* ``ci``: a CI name or comma-separated list (npm's ``ci/github-actions``, Bundler's
  ``ci/github,ci``), mapped through :data:`CI_ALIASES`;
* ``json``: the linehaul JSON that pip and uv append, which PyPI's own statistics read.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Rule:
    """One tool: its stable client name, the pattern of its agent, and what the agent implies.

    ``start`` is the lowercased first two characters every agent of the tool begins with: the
    parser looks rules up by it, so a browser's "Mozilla/…" is tried against no rule at all.
    """

    client: str
    start: str
    pattern: re.Pattern[str]
    runtime_name: str | None = None
    ci: str | None = None  # for CI runners, whose mere presence says which CI this is


def _rule(
    client: str, pattern: str, *, runtime_name: str | None = None, ci: str | None = None
) -> Rule:
    if not re.fullmatch(r"[A-Za-z]{2}", pattern[:2]):
        raise ValueError(f"the {client} pattern must start with two letters: {pattern!r}")
    compiled = re.compile(pattern, re.IGNORECASE)
    return Rule(client, pattern[:2].lower(), compiled, runtime_name, ci)


# A version starts with a digit; requiring one keeps "pip/latest"-style junk out of the tools.
_VERSION = r"v?(?P<version>\d[^\s/;()]*)"
# Python tools: pip's and uv's linehaul JSON, or requests-toolbelt's "CPython/3.12.2 Linux/6.5.0".
_PYTHON_TAIL = (
    r"(?: (?P<json>\{.*)"
    r"| (?P<runtime>(?:CPython|PyPy|GraalPy|Jython|IronPython)/\S+) (?P<os>\w+)/)?"
)
# AWS's SDKs since 2023: "Boto3/1.34.14 md/Botocore#1.34.14 ua/2.0 os/linux#6.5.0 md/arch#x86_64
# lang/python#3.11.7 …"; older ones "Boto3/1.26.0 Python/3.9.7 Linux/5.15.0 Botocore/1.29.0".
_AWS_SDK_TAIL = (
    r"(?:.*? os/(?P<os>[a-z]+)#(?:.*? lang/python#(?P<runtime>[\d.]+))?"
    r"| Python/[^\s/]+ (?P<old_os>\w+)/)?"
)
# JavaScript package managers copy npm's "node/v20.11.0 linux x64 workspaces/false ci/…".
_NODE_TAIL = (
    r"(?:(?: npm/\?)? node/v?(?P<runtime>[^\s/]+) (?P<os>\w+)(?:.*? ci/(?P<ci>[\w.,-]+))?)?"
)

# Tried in this order among the rules that share a start.
RULES: tuple[Rule, ...] = (
    # Python
    _rule("pip", r"pip/" + _VERSION + _PYTHON_TAIL),
    _rule("uv", r"uv/" + _VERSION + _PYTHON_TAIL),
    _rule("poetry", r"poetry/" + _VERSION + _PYTHON_TAIL),
    _rule("pdm", r"pdm/" + _VERSION + _PYTHON_TAIL),
    _rule("pipenv", r"pipenv/" + _VERSION + _PYTHON_TAIL),
    _rule("conda", r"conda/" + _VERSION + r"(?: requests/\S+)?" + _PYTHON_TAIL),
    _rule("mamba", r"mamba/" + _VERSION + r"(?: conda/\S+)?(?: requests/\S+)?" + _PYTHON_TAIL),
    _rule("micromamba", r"micromamba/" + _VERSION),
    _rule("python-requests", r"python-requests/" + _VERSION),
    _rule("python-httpx", r"python-httpx/" + _VERSION),
    _rule("aiohttp", r"Python/(?P<runtime>\d[\d.]*) aiohttp/" + _VERSION, runtime_name="Python"),
    # ua-parser calls this one a spider; it is Python's standard library downloading something.
    _rule("python-urllib", r"Python-urllib/(?P<runtime>\d[\d.]*)", runtime_name="Python"),
    # ua-parser calls these spiders too ("urllib", "Boto…"): an HTTP library, and AWS's CLI and
    # SDK, whose agents carry the platform and Python as "os/linux#6.5.0 lang/python#3.11.7".
    _rule("python-urllib3", r"python-urllib3/" + _VERSION),
    _rule(
        "aws-cli",
        r"aws-cli/" + _VERSION + r"(?: Python/(?P<runtime>[^\s/]+) (?P<os>\w+)/)?",
        runtime_name="Python",
    ),
    _rule("boto3", r"Boto3/" + _VERSION + _AWS_SDK_TAIL, runtime_name="Python"),
    _rule("botocore", r"Botocore/" + _VERSION + _AWS_SDK_TAIL, runtime_name="Python"),
    # JavaScript
    _rule("npm", r"npm/" + _VERSION + _NODE_TAIL, runtime_name="node"),
    _rule("yarn", r"yarn/" + _VERSION + _NODE_TAIL, runtime_name="node"),
    _rule("pnpm", r"pnpm/" + _VERSION + _NODE_TAIL, runtime_name="node"),
    _rule("bun", r"bun/" + _VERSION + _NODE_TAIL, runtime_name="node"),
    # Containers: Docker's daemon says "docker/24.0.7 go/go1.20.10 … os/linux arch/amd64"
    _rule(
        "docker",
        r"docker/(?:" + _VERSION + r"|dev)(?: go/(?P<runtime>go\S+))?(?:.*? os/(?P<os>\w+))?",
    ),
    # The docker CLI talking to a registry itself (login, search, manifest, buildx imagetools).
    _rule("docker", r"Docker-Client/" + _VERSION + r"(?: \((?P<os>\w+)\))?"),
    _rule("buildah", r"Buildah/" + _VERSION),
    # containers/image's own agent, for the tools built on it that set none.
    _rule("containers-image", r"containers/" + _VERSION + r" \(github\.com/containers/image\)"),
    _rule("containerd", r"containerd/" + _VERSION),
    _rule("podman", r"libpod/" + _VERSION),  # podman names its library, libpod
    _rule("buildkit", r"buildkit/" + _VERSION),
    _rule("skopeo", r"skopeo/" + _VERSION),
    _rule("cri-o", r"cri-o/" + _VERSION + r"(?: go/(?P<runtime>go\S+))?(?:.*? os/(?P<os>\w+))?"),
    # Go: the go command and Go programs send the standard client's agent, whose number is the
    # HTTP version, not Go's, so it gives no version.
    _rule("go", r"Go-http-client/\d"),
    _rule("go-module-mirror", r"GoModuleMirror/" + _VERSION),
    # Rust, the JVM, .NET, PHP, Ruby
    _rule("cargo", r"cargo[ /]" + _VERSION),  # "cargo/1.76.0 (…)"; older: "cargo 1.65.0 (…)"
    _rule(
        "maven",
        r"Apache-Maven/" + _VERSION + r"(?: \(Java (?P<runtime>[^;)]+); (?P<os>[^)]+)\))?",
        runtime_name="Java",
    ),
    _rule(
        "gradle",
        r"Gradle/" + _VERSION + r"(?: \((?P<os>[^;)]+);[^)]*\) \([^;)]*;(?P<runtime>[^;)]+);)?",
        runtime_name="Java",
    ),
    # ua-parser calls Java's built-in client a spider; Ivy, sbt and old Maven download with it.
    _rule("java", r"Java/(?P<runtime>\d[^\s/]*)", runtime_name="Java"),
    _rule("nuget", r"NuGet [^/]+/" + _VERSION + r"(?: \((?P<os>[^,;)]+))?"),
    _rule(
        "composer",
        r"Composer/" + _VERSION + r"(?: \((?P<os>[^;)]+); [^;)]*; (?P<runtime>(?:PHP|HHVM) [^;)]+)"
        r"(?:[^)]*; (?P<ci>CI)\))?)?",
    ),
    _rule(
        "rubygems",
        r"RubyGems/" + _VERSION + r"(?: (?P<os>\S+) Ruby/(?P<runtime>[^\s/]+))?",
        runtime_name="Ruby",
    ),
    # ... as it reaches a server: Ruby's Net::HTTP sends its own "Ruby" first, and gem adds its
    # agent to it ("Ruby, RubyGems/3.5.3 x86_64-linux Ruby/3.3.0 (…)"; rubygems.org reads this).
    _rule(
        "rubygems",
        r"Ruby, RubyGems/" + _VERSION + r"(?: (?P<os>\S+) Ruby/(?P<runtime>[^\s/]+))?",
        runtime_name="Ruby",
    ),
    _rule(
        "bundler",
        r"bundler/" + _VERSION + r"(?: rubygems/\S+ ruby/v?(?P<runtime>[^\s/]+) \((?P<os>[^)]+)\)"
        r"(?:.*? ci/(?P<ci>[\w.,-]+))?)?",
        runtime_name="Ruby",
    ),
    # Kubernetes, Homebrew, plain downloaders
    _rule("helm", r"Helm/" + _VERSION),
    _rule("homebrew", r"Homebrew/" + _VERSION + r"(?: \((?P<os>[^;)]+))?"),
    _rule("curl", r"curl/" + _VERSION),
    _rule("wget", r"Wget/" + _VERSION + r"(?: \((?P<os>[^)]+)\))?"),
    _rule("wget", r"Wget2/" + _VERSION),  # GNU Wget2, the wget of newer distributions
    _rule("git", r"git/" + _VERSION),
    # CI runners and their toolkits, which announce the CI by existing
    _rule(
        "github-actions-runner",
        r"GitHubActionsRunner-(?P<os>[a-z]+)-\w+/" + _VERSION,
        ci="github-actions",
    ),
    _rule("actions-toolkit", r"actions/[\w.-]+$", ci="github-actions"),  # actions/tool-cache
    _rule(
        "gitlab-runner",
        r"gitlab-runner " + _VERSION + r"(?: \([^;)]*; (?P<runtime>go[^;)]*); (?P<os>\w+)/)?",
        ci="gitlab-ci",
    ),
    _rule(
        "buildkite-agent", r"buildkite-agent/" + _VERSION + r"(?: \((?P<os>\w+))?", ci="buildkite"
    ),
    _rule(
        "azure-pipelines-agent",
        r"VSTSAgent\w*-(?P<os>[a-z]+)-\w+/" + _VERSION,
        ci="azure-pipelines",
    ),
    _rule("jenkins", r"Jenkins/" + _VERSION, ci="jenkins"),
)

UNKNOWN_PLATFORM = "unknownplatform"

# How tools name an operating system when it is one word: node's process.platform, Python's
# platform.system(), Go's GOOS, runner package names. A desktop tool that says "darwin" runs on
# macOS (npm, pip, conda and Homebrew do not run on iOS), hence macos.
PLATFORM_WORDS: dict[str, str] = {
    "linux": "linux",
    "darwin": "macos",
    "macos": "macos",
    "osx": "macos",
    "windows": "windows",
    "win32": "windows",
    "win": "windows",
    "freebsd": "freebsd",
    "openbsd": "openbsd",
    "sunos": "sunos",
    "solaris": "sunos",
    "aix": "aix",
    "android": "android",
    "ios": "ios",
}

# Substrings of longer descriptions ("Microsoft Windows NT 10.0", "arm64-darwin-23",
# "x64-mingw-ucrt", "Mac OS X 14.2"), first match wins: android before linux because Android
# agents also say Linux, darwin before the Windows words because "darwin" contains "win".
PLATFORM_HINTS: tuple[tuple[str, str], ...] = (
    ("android", "android"),
    ("darwin", "macos"),
    ("mac os", "macos"),
    ("macintosh", "macos"),
    ("linux", "linux"),
    ("freebsd", "freebsd"),
    ("openbsd", "openbsd"),
    ("sunos", "sunos"),
    ("solaris", "sunos"),
    ("aix", "aix"),
    ("windows", "windows"),
    ("mingw", "windows"),
    ("mswin", "windows"),
    ("cygwin", "windows"),
)

# ua-parser's OS families that the words above do not already place; Chrome OS runs a Linux
# kernel and Scarf has no platform of its own for it.
OS_FAMILY_PLATFORMS: dict[str, str] = {
    "Mac OS X": "macos",
    "Mac OS": "macos",
    "iOS": "ios",
    "Android": "android",
    "Windows": "windows",
    "Windows Phone": "windows",
    "Windows Mobile": "windows",
    "Chrome OS": "linux",
    "Ubuntu": "linux",
    "Kubuntu": "linux",
    "Lubuntu": "linux",
    "Debian": "linux",
    "Fedora": "linux",
    "Red Hat": "linux",
    "CentOS": "linux",
    "SUSE": "linux",
    "openSUSE": "linux",
    "Gentoo": "linux",
    "Slackware": "linux",
    "Mandriva": "linux",
    "Mageia": "linux",
    "PCLinuxOS": "linux",
    "FreeBSD": "freebsd",
    "OpenBSD": "openbsd",
    "Solaris": "sunos",
    "AIX": "aix",
}

# ua-parser families that are variants of one browser ("Chrome Mobile iOS", "Firefox Beta",
# "Opera Mini", "IE Mobile") collapse to their first word; Safari's variants start otherwise.
BROWSER_WORDS = frozenset({"chrome", "firefox", "safari", "edge", "opera", "ie"})
CLIENT_FAMILIES: dict[str, str] = {
    "Mobile Safari": "safari",
    "Mobile Safari UI/WKWebView": "safari",
}

# CI names as npm (ci-info, lowercased and hyphenated) and Bundler write them, to one spelling.
# "ci" is the generic answer of agents that only know they run in some CI (pip, uv, Composer).
CI_ALIASES: dict[str, str] = {
    "github": "github-actions",
    "gitlab": "gitlab-ci",
    "circle": "circleci",
    "travis": "travis-ci",
    "buildbox": "buildkite",
    "azure-devops": "azure-pipelines",
    "vsts": "azure-pipelines",
    "bitbucket": "bitbucket-pipelines",
}

# Substrings (lowercase) by which an agent without a CI field shows it runs in a CI. "vsts_" is
# Azure Pipelines' AZURE_HTTP_USER_AGENT, which Azure's CLI and SDKs append to their agents.
CI_MARKERS: tuple[tuple[str, str], ...] = (
    ("github-actions", "github-actions"),
    ("gitlab-ci", "gitlab-ci"),
    ("circleci", "circleci"),
    ("travis-ci", "travis-ci"),
    ("vsts_", "azure-pipelines"),
    ("azure-pipelines", "azure-pipelines"),
    ("teamcity", "teamcity"),
    ("bitbucket-pipelines", "bitbucket-pipelines"),
    ("appveyor", "appveyor"),
)

# Bots, crawlers, link previewers and monitors (lowercase substrings), on top of everything
# ua-parser's device rules call a spider. Deliberately absent: curl, wget, python-requests,
# Python-urllib, Java, Go-http-client and the package managers: they are how people and their
# scripts download software, which is what an owner wants counted, and an owner who disagrees
# lists them among their own exclusions.
BOT_MARKERS: tuple[str, ...] = (
    "googlebot",
    "google-inspectiontool",
    "adsbot-google",
    "mediapartners-google",
    "bingbot",
    "bingpreview",
    "yandex.com/bots",
    "baiduspider",
    "duckduckbot",
    "ahrefsbot",
    "semrushbot",
    "mj12bot",
    "dotbot",
    "petalbot",
    "applebot",
    "facebookexternalhit",
    "meta-externalagent",
    "twitterbot",
    "linkedinbot",
    "slackbot",
    "discordbot",
    "telegrambot",
    "gptbot",
    "chatgpt-user",
    "oai-searchbot",
    "claudebot",
    "claude-web",
    "anthropic-ai",
    "perplexitybot",
    "ccbot",
    "bytespider",
    "amazonbot",
    "uptimerobot",
    "pingdom",
    "statuscake",
    "site24x7",
    "datadog/synthetics",
    "datadogsynthetics",
    "headlesschrome",
    # Google's other fetchers, Naver's (its mobile agent ends "(compatible; Yeti)"), Cohere's
    "googleother",
    "feedfetcher-google",
    "apis-google",
    "google-site-verification",
    "compatible; yeti",
    "cohere-ai",
    # health checks of load balancers and orchestrators
    "elb-healthchecker",
    "kube-probe",
    "googlehc/",
)

# Libraries whose agents ua-parser takes for spiders ("Bot…", "…urllib…"), though they are how
# scripts download: an agent naming one is not a bot unless a marker above says so. AWS's SDKs
# name themselves inside other tools' agents ("s3fs/… aiobotocore/… botocore/…").
NOT_SPIDERS: tuple[str, ...] = ("botocore", "boto3", "urllib3", "aws-cli", "aws-sdk")
