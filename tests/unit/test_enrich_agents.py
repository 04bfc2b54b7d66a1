"""User-agent enrichment: client, version, platform, runtime, CI and bots from real agents."""

from __future__ import annotations

import pytest

from eventport.enrich import agents as agents_module
from eventport.enrich.agents import MAX_AGENT_CHARS, PLATFORMS, Agent, matches_any, parse_agent

PIP_LINUX = (
    'pip/23.2.1 {"ci":null,"cpu":"x86_64","distro":{"id":"bookworm","libc":{"lib":"glibc",'
    '"version":"2.36"},"name":"Debian GNU/Linux","version":"12"},"implementation":{"name":'
    '"CPython","version":"3.11.7"},"installer":{"name":"pip","version":"23.2.1"},'
    '"openssl_version":"OpenSSL 3.0.11 19 Sep 2023","python":"3.11.7","rustc_version":"1.75.0",'
    '"setuptools_version":"65.5.0","system":{"name":"Linux","release":"6.1.0-17-amd64"}}'
)
PIP_MACOS_CI = (
    'pip/23.3.2 {"ci":true,"cpu":"arm64","distro":{"name":"macOS","version":"14.2.1"},'
    '"implementation":{"name":"CPython","version":"3.12.1"},"installer":{"name":"pip",'
    '"version":"23.3.2"},"openssl_version":"OpenSSL 3.0.12 24 Oct 2023","python":"3.12.1",'
    '"setuptools_version":"69.0.3","system":{"name":"Darwin","release":"23.2.0"}}'
)
PIP_WINDOWS_PYPY = (
    'pip/24.0 {"ci":null,"cpu":"AMD64","implementation":{"name":"PyPy","version":"7.3.15"},'
    '"installer":{"name":"pip","version":"24.0"},"python":"3.10.13",'
    '"system":{"name":"Windows","release":"10"}}'
)
UV_LINUX_CI = (
    'uv/0.1.24 {"installer":{"name":"uv","version":"0.1.24"},"python":"3.12.2",'
    '"implementation":{"name":"CPython","version":"3.12.2"},"distro":{"name":"Ubuntu",'
    '"version":"22.04","id":"jammy","libc":{"lib":"glibc","version":"2.35"}},"system":{"name":'
    '"Linux","release":"6.5.0-1016-azure"},"cpu":"x86_64","openssl_version":null,'
    '"setuptools_version":null,"rustc_version":null,"ci":true}'
)
DOCKER = (
    "docker/24.0.7 go/go1.20.10 git-commit/311b9ff kernel/6.1.0-17-amd64 os/linux arch/amd64 "
    r"UpstreamClient(Docker-Client/24.0.7 \(linux\))"
)

# One real agent per tool: (agent, client, version, platform).
TOOLS = [
    (PIP_LINUX, "pip", "23.2.1", "linux"),
    (UV_LINUX_CI, "uv", "0.1.24", "linux"),
    ("poetry/1.8.2 CPython/3.12.2 Linux/6.5.0-1016-azure", "poetry", "1.8.2", "linux"),
    ("pdm/2.11.2 CPython/3.11.7 Darwin/23.2.0", "pdm", "2.11.2", "macos"),
    ("pipenv/2023.11.15", "pipenv", "2023.11.15", "unknownplatform"),
    (
        "conda/23.11.0 requests/2.31.0 CPython/3.11.5 Linux/6.1.0-17-amd64 debian/12 glibc/2.36 "
        "solver/libmamba conda-libmamba-solver/23.12.0 libmambapy/1.5.5",
        "conda",
        "23.11.0",
        "linux",
    ),
    (
        "conda/23.11.0 requests/2.31.0 CPython/3.11.5 Windows/10 Windows/10.0.22631",
        "conda",
        "23.11.0",
        "windows",
    ),
    (
        "mamba/1.5.6 conda/23.11.0 requests/2.31.0 CPython/3.11.7 Darwin/23.2.0 OSX/14.2",
        "mamba",
        "1.5.6",
        "macos",
    ),
    ("micromamba/1.5.6", "micromamba", "1.5.6", "unknownplatform"),
    ("python-requests/2.31.0", "python-requests", "2.31.0", "unknownplatform"),
    ("python-httpx/0.26.0", "python-httpx", "0.26.0", "unknownplatform"),
    ("Python/3.11 aiohttp/3.9.1", "aiohttp", "3.9.1", "unknownplatform"),
    ("npm/10.2.4 node/v20.11.0 linux x64 workspaces/false", "npm", "10.2.4", "linux"),
    ("npm/9.8.1 node/v18.18.2 darwin arm64 workspaces/false", "npm", "9.8.1", "macos"),
    ("yarn/1.22.21 npm/? node/v20.11.0 win32 x64", "yarn", "1.22.21", "windows"),
    ("pnpm/8.14.0 npm/? node/v20.11.0 freebsd x64", "pnpm", "8.14.0", "freebsd"),
    ("Bun/1.0.21", "bun", "1.0.21", "unknownplatform"),
    (DOCKER, "docker", "24.0.7", "linux"),
    ("containerd/v1.7.11", "containerd", "1.7.11", "unknownplatform"),
    ("libpod/4.9.0", "podman", "4.9.0", "unknownplatform"),
    ("buildkit/v0.12.4", "buildkit", "0.12.4", "unknownplatform"),
    ("cri-o/1.28.2 go/go1.20.10 os/linux arch/amd64", "cri-o", "1.28.2", "linux"),
    ("skopeo/1.14.0", "skopeo", "1.14.0", "unknownplatform"),
    ("Go-http-client/1.1", "go", None, "unknownplatform"),
    (
        "GoModuleMirror/1.0 (+https://proxy.golang.org)",
        "go-module-mirror",
        "1.0",
        "unknownplatform",
    ),
    ("cargo 1.75.0 (1d8b05cdd 2023-11-20)", "cargo", "1.75.0", "unknownplatform"),
    ("cargo/1.76.0 (c84b36747 2024-01-18)", "cargo", "1.76.0", "unknownplatform"),
    ("Apache-Maven/3.9.6 (Java 17.0.9; Linux 6.1.0-17-amd64)", "maven", "3.9.6", "linux"),
    ("Apache-Maven/3.8.8 (Java 11.0.21; Mac OS X 14.2)", "maven", "3.8.8", "macos"),
    (
        "Gradle/8.5 (Linux;6.1.0-17-amd64;amd64) (Eclipse Adoptium;17.0.9;17.0.9+9)",
        "gradle",
        "8.5",
        "linux",
    ),
    ("NuGet Command Line/6.8.0 (Microsoft Windows NT 10.0.22631.0)", "nuget", "6.8.0", "windows"),
    (
        "NuGet .NET Core MSBuild Task/6.8.0.122 (Linux 6.1.0-17-amd64 #1 SMP PREEMPT_DYNAMIC "
        "Debian 6.1.69-1 (2023-12-30))",
        "nuget",
        "6.8.0.122",
        "linux",
    ),
    (
        "Composer/2.6.6 (Linux; 6.1.0-17-amd64; PHP 8.3.1; cURL 8.5.0; Platform-PHP 8.1.0)",
        "composer",
        "2.6.6",
        "linux",
    ),
    ("Composer/2.6.6 (Windows NT; 10.0; PHP 8.3.1; cURL 8.4.0)", "composer", "2.6.6", "windows"),
    (
        "RubyGems/3.5.3 x86_64-linux Ruby/3.3.0 (2023-12-25 patchlevel 0)",
        "rubygems",
        "3.5.3",
        "linux",
    ),
    (
        "RubyGems/3.4.19 x64-mingw-ucrt Ruby/3.2.2 (2023-03-30 patchlevel 53)",
        "rubygems",
        "3.4.19",
        "windows",
    ),
    # as it reaches a server, after Net::HTTP's own "Ruby" (an enrichment hunt: not recognised)
    (
        "Ruby, RubyGems/3.5.3 x86_64-linux Ruby/3.3.0 (2023-12-25 patchlevel 0)",
        "rubygems",
        "3.5.3",
        "linux",
    ),
    # ua-parser's spiders (an enrichment hunt: excluded as bots by default)
    ("python-urllib3/2.1.0", "python-urllib3", "2.1.0", "unknownplatform"),
    (
        "aws-cli/1.32.0 Python/3.11.7 Linux/6.5.0-14-generic botocore/1.34.0",
        "aws-cli",
        "1.32.0",
        "linux",
    ),
    (
        "Boto3/1.34.14 md/Botocore#1.34.14 ua/2.0 os/linux#6.5.0 md/arch#x86_64 "
        "lang/python#3.11.7 md/pyimpl#CPython cfg/retry-mode#legacy Botocore/1.34.14",
        "boto3",
        "1.34.14",
        "linux",
    ),
    ("Boto3/1.26.0 Python/3.9.7 Windows/10 Botocore/1.29.0", "boto3", "1.26.0", "windows"),
    (
        "Botocore/1.34.14 ua/2.0 os/macos#23.2.0 md/arch#arm64 lang/python#3.12.1",
        "botocore",
        "1.34.14",
        "macos",
    ),
    (
        "bundler/v2.5.3 rubygems/v3.5.3 ruby/v3.3.0 (x86_64-pc-linux-gnu) command/install "
        "options/jobs,retry 3c3d2d0b7c4b6b1e",
        "bundler",
        "2.5.3",
        "linux",
    ),
    ("Helm/3.13.3", "helm", "3.13.3", "unknownplatform"),
    ("Homebrew/4.2.0 (Macintosh; arm64 Mac OS X 14.2) curl/8.4.0", "homebrew", "4.2.0", "macos"),
    ("Homebrew/4.2.0 (Linux; x86_64 Ubuntu 22.04.3 LTS) curl/7.81.0", "homebrew", "4.2.0", "linux"),
    ("curl/8.5.0", "curl", "8.5.0", "unknownplatform"),
    ("Wget/1.21.4", "wget", "1.21.4", "unknownplatform"),
    ("Wget/1.20.3 (linux-gnu)", "wget", "1.20.3", "linux"),
    ("git/2.43.0", "git", "2.43.0", "unknownplatform"),
    ("GitHubActionsRunner-linux-x64/2.311.0", "github-actions-runner", "2.311.0", "linux"),
    ("actions/tool-cache", "actions-toolkit", None, "unknownplatform"),
    (
        "gitlab-runner 16.6.1 (16-6-stable; go1.20.10; linux/amd64)",
        "gitlab-runner",
        "16.6.1",
        "linux",
    ),
    ("buildkite-agent/3.59.0.7436 (linux; amd64)", "buildkite-agent", "3.59.0.7436", "linux"),
    ("VSTSAgentCore-win-x64/3.232.1", "azure-pipelines-agent", "3.232.1", "windows"),
    ("Jenkins/2.426.2", "jenkins", "2.426.2", "unknownplatform"),
]

# (agent, client, version, platform)
BROWSERS = [
    (
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/120.0.0.0 Safari/537.36",
        "chrome",
        "120.0.0.0",
        "windows",
    ),
    (
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_2 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like "
        "Gecko) Version/17.2 Mobile/15E148 Safari/604.1",
        "safari",
        "17.2",
        "ios",
    ),
    (
        "Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0",
        "firefox",
        "121.0",
        "linux",
    ),
    (
        "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/120.0.6099.144 Mobile Safari/537.36",
        "chrome",
        "120.0.6099.144",
        "android",
    ),
    (
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/120.0.0.0 Safari/537.36 Edg/120.0.2210.91",
        "edge",
        "120.0.2210.91",
        "windows",
    ),
    (
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
        "Version/17.2 Safari/605.1.15",
        "safari",
        "17.2",
        "macos",
    ),
    (
        "Mozilla/5.0 (iPad; CPU OS 17_2 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
        "CriOS/120.0.6099.119 Mobile/15E148 Safari/604.1",
        "chrome",
        "120.0.6099.119",
        "ios",
    ),
    (
        "Mozilla/5.0 (X11; CrOS x86_64 14541.0.0) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/120.0.0.0 Safari/537.36",
        "chrome",
        "120.0.0.0",
        "linux",
    ),
    (
        "Mozilla/5.0 (X11; FreeBSD amd64; rv:121.0) Gecko/20100101 Firefox/121.0",
        "firefox",
        "121.0",
        "freebsd",
    ),
    (
        "Mozilla/5.0 (X11; OpenBSD amd64; rv:121.0) Gecko/20100101 Firefox/121.0",
        "firefox",
        "121.0",
        "openbsd",
    ),
    (
        "Mozilla/5.0 (X11; SunOS i86pc; rv:102.0) Gecko/20100101 Firefox/102.0",
        "firefox",
        "102.0",
        "sunos",
    ),
    ("Mozilla/4.0 (compatible; MSIE 6.0; AIX 5.3)", "ie", "6.0", "aix"),
]

BOTS = [
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    "Mozilla/5.0 (Linux; Android 6.0.1; Nexus 5X Build/MMB29P) AppleWebKit/537.36 (KHTML, like "
    "Gecko) Chrome/120.0.6099.129 Mobile Safari/537.36 (compatible; Googlebot/2.1; "
    "+http://www.google.com/bot.html)",
    "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
    "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; GPTBot/1.0; "
    "+https://openai.com/gptbot)",
    "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; ClaudeBot/1.0; "
    "+claudebot@anthropic.com)",
    "Mozilla/5.0 (compatible; UptimeRobot/2.0; http://www.uptimerobot.com/)",
    "facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)",
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "HeadlessChrome/120.0.6099.109 Safari/537.36",
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 "
    "Safari/537.36 DatadogSynthetics",
    # not flagged before (an enrichment hunt)
    "Mozilla/5.0 (compatible; GoogleOther)",
    "FeedFetcher-Google; (+http://www.google.com/feedfetcher.html)",
    "APIs-Google (+https://developers.google.com/webmasters/APIs-Google.html)",
    "Google-Site-Verification/1.0",
    "Mozilla/5.0 (Linux; Android 10) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 "
    "Mobile Safari/537.36 (compatible; Yeti)",
    "cohere-ai",
    "ELB-HealthChecker/2.0",
    "kube-probe/1.29",
    "GoogleHC/1.0",
]

UNKNOWN = Agent(None, None, "unknownplatform", False)


@pytest.mark.parametrize(("agent", "client", "version", "platform"), TOOLS)
def test_tools(agent: str, client: str, version: str | None, platform: str) -> None:
    parsed = parse_agent(agent)
    assert (parsed.client, parsed.client_version, parsed.platform) == (client, version, platform)
    assert not parsed.bot


@pytest.mark.parametrize(("agent", "client", "version", "platform"), BROWSERS)
def test_browsers(agent: str, client: str, version: str, platform: str) -> None:
    assert parse_agent(agent) == Agent(client, version, platform, bot=False)


@pytest.mark.parametrize(
    ("agent", "runtime", "platform", "ci"),
    [
        (PIP_LINUX, "CPython 3.11.7", "linux", None),
        (PIP_MACOS_CI, "CPython 3.12.1", "macos", "ci"),
        (PIP_WINDOWS_PYPY, "PyPy 7.3.15", "windows", None),
        (UV_LINUX_CI, "CPython 3.12.2", "linux", "ci"),
        (
            'pip/23.3.2 {"system":{"name":"FreeBSD","release":"14.0-RELEASE"}}',
            None,
            "freebsd",
            None,
        ),
    ],
)
def test_pip_and_uv_json(agent: str, runtime: str | None, platform: str, ci: str | None) -> None:
    parsed = parse_agent(agent)
    assert (parsed.runtime, parsed.platform, parsed.ci) == (runtime, platform, ci)


@pytest.mark.parametrize(
    ("agent", "runtime", "platform", "ci"),
    [
        # A proxy cut the agent short: what arrived whole still counts.
        (PIP_MACOS_CI[:200], "CPython 3.12.1", "unknownplatform", "ci"),
        (PIP_MACOS_CI.replace('"cpu"', "cpu"), "CPython 3.12.1", "macos", "ci"),
        ("pip/23.3.2 {not json at all", None, "unknownplatform", None),
        ('pip/23.3.2 {"ci":true,"x":"\ud800","system":{"name":"Linux"}}', None, "linux", "ci"),
        (
            'pip/23.3.2 {"implementation":"CPython","system":["Linux"],"ci":"yes"}',
            None,
            "unknownplatform",
            None,
        ),
    ],
)
def test_pip_with_broken_json(
    agent: str, runtime: str | None, platform: str, ci: str | None
) -> None:
    parsed = parse_agent(agent)
    assert (parsed.client, parsed.client_version) == ("pip", "23.3.2")
    assert (parsed.runtime, parsed.platform, parsed.ci) == (runtime, platform, ci)


@pytest.mark.parametrize(
    ("agent", "runtime", "ci"),
    [
        (
            "npm/10.2.4 node/v20.11.0 linux x64 workspaces/false ci/github-actions",
            "node 20.11.0",
            "github-actions",
        ),
        ("poetry/1.8.2 CPython/3.12.2 Linux/6.5.0-1016-azure", "CPython 3.12.2", None),
        (DOCKER, "go1.20.10", None),
        ("Apache-Maven/3.9.6 (Java 17.0.9; Linux 6.1.0-17-amd64)", "Java 17.0.9", None),
        (
            "Gradle/8.5 (Linux;6.1.0-17-amd64;amd64) (Eclipse Adoptium;17.0.9;17.0.9+9)",
            "Java 17.0.9",
            None,
        ),
        (
            "Composer/2.6.6 (Linux; 6.1.0-17-amd64; PHP 8.3.1; cURL 8.5.0; Platform-PHP 8.1.0; CI)",
            "PHP 8.3.1",
            "ci",
        ),
        ("RubyGems/3.5.3 x86_64-linux Ruby/3.3.0 (2023-12-25 patchlevel 0)", "Ruby 3.3.0", None),
        (
            "bundler/v2.5.3 rubygems/v3.5.3 ruby/v3.3.0 (arm64-apple-darwin23) command/install "
            "options/jobs ci/github,ci 5f8a6e2c4d1b3a7e",
            "Ruby 3.3.0",
            "github-actions",
        ),
        ("gitlab-runner 16.6.1 (16-6-stable; go1.20.10; linux/amd64)", "go1.20.10", "gitlab-ci"),
        ("GitHubActionsRunner-linux-x64/2.311.0", None, "github-actions"),
        ("VSTSAgentCore-win-x64/3.232.1", None, "azure-pipelines"),
        ("Python-urllib/3.11", "Python 3.11", None),
        (
            "AZURECLI/2.55.0 (DEB) azsdk-python-core/1.29.5 Python/3.11.5 (Linux-6.2.0-1018-azure-"
            "x86_64-with-glibc2.35) VSTS_0fb41ef4-5012-48a9-bf39-4ee3de03ee35_build_2_0",
            None,
            "azure-pipelines",
        ),
    ],
)
def test_runtime_and_ci(agent: str, runtime: str | None, ci: str | None) -> None:
    parsed = parse_agent(agent)
    assert (parsed.runtime, parsed.ci) == (runtime, ci)


@pytest.mark.parametrize("agent", BOTS)
def test_bots(agent: str) -> None:
    assert parse_agent(agent).bot


@pytest.mark.parametrize(
    "agent",
    [
        "curl/8.5.0",
        "Wget/1.21.4",
        "python-requests/2.31.0",
        # ua-parser calls these two spiders; they are how scripts and build tools download.
        "Python-urllib/3.11",
        "Java/17.0.9",
        "Go-http-client/2.0",
        PIP_LINUX,
        # tools built on AWS's SDK, whose "Boto…" ua-parser takes for a bot's name
        "s3fs/2023.12.2 aiobotocore/2.9.0 botocore/1.33.13",
        "dvc/3.38.1 Boto3/1.34.0",
    ],
)
def test_download_tools_are_not_bots(agent: str) -> None:
    assert not parse_agent(agent).bot


def test_bot_names_are_clients() -> None:
    assert parse_agent(BOTS[0]) == Agent("googlebot", "2.1", "unknownplatform", bot=True)


@pytest.mark.parametrize(
    ("agent", "client", "version"),
    [
        (
            "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; ChatGPT-User/1.0; "
            "+https://openai.com/bot)",
            "chatgpt-user",
            "1.0",
        ),
        ("Barkrowler/0.9 (+https://babbar.tech/crawler)", "barkrowler", "0.9"),
    ],
)
def test_a_crawler_ua_parser_names_by_its_kind_is_named_by_its_product(
    agent: str, client: str, version: str
) -> None:
    """ua-parser calls these "com/bot" and "crawler" (clients "com-bot" and "crawler")."""
    assert parse_agent(agent) == Agent(client, version, "unknownplatform", bot=True)


@pytest.mark.parametrize(
    "agent",
    [
        None,
        "",
        "   ",
        "garbage string here",
        "-",
        "\x00\x01",
        "pip/latest",
        "\ud800 lone surrogate",
    ],
)
def test_unknown_agents(agent: str | None) -> None:
    assert parse_agent(agent) == UNKNOWN


def test_darwin_only_when_the_agent_names_nothing_but_the_kernel() -> None:
    # CFNetwork/Darwin agents come from apps on macOS and iOS alike; only "darwin" is certain.
    assert parse_agent("MyApp/1.0 CFNetwork/1410.0.3 Darwin/22.6.0").platform == "darwin"
    # Developer tools that say darwin run on a Mac.
    assert parse_agent("npm/9.8.1 node/v18.18.2 darwin arm64 workspaces/false").platform == "macos"


def test_every_platform_is_scarfs() -> None:
    agents = [row[0] for row in TOOLS + BROWSERS] + BOTS
    assert {parse_agent(agent).platform for agent in agents} <= set(PLATFORMS)


def test_parse_is_memoized() -> None:
    assert parse_agent(PIP_LINUX) is parse_agent(PIP_LINUX)


def test_a_huge_agent_is_read_only_as_far_as_any_client_writes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """ua-parser's native resolver holds the GIL for as long as it reads: a hostile agent of
    1 MB (an import line may hold one) took seconds, and the whole server, its HTTP answers
    too, stalled meanwhile. Only the first MAX_AGENT_CHARS characters are read, so such an
    agent reads as its beginning does; and the memo keeps no longer key."""
    given: list[int] = []
    resolve = agents_module._resolve
    monkeypatch.setattr(
        agents_module, "_resolve", lambda text: given.append(len(text)) or resolve(text)
    )
    chrome = (
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/120.0.0.0 Safari/537.36 "
    )
    for filler in ("abot", "Mozilla/5.0 ", " x"):
        huge = chrome + filler * (1_000_000 // len(filler))
        assert parse_agent(huge) == parse_agent(huge[:MAX_AGENT_CHARS])
    read = parse_agent(chrome + " x" * 500_000)
    assert (read.client, read.platform) == ("chrome", "windows")
    assert given
    assert max(given) <= MAX_AGENT_CHARS
    assert len(PIP_LINUX) <= MAX_AGENT_CHARS  # the longest agents clients send, read whole


@pytest.mark.parametrize(
    ("agent", "substrings", "expected"),
    [
        ("Mozilla/5.0 (compatible; Googlebot/2.1)", ["googlebot"], True),
        ("my-internal-mirror/1.0", ["other", "INTERNAL-MIRROR"], True),
        ("curl/8.5.0", ["wget", "pip/"], False),
        ("curl/8.5.0", [], False),
        ("curl/8.5.0", [""], False),
        (None, ["curl"], False),
        ("", ["curl"], False),
    ],
)
def test_matches_any(agent: str | None, substrings: list[str], expected: bool) -> None:
    assert matches_any(agent, substrings) is expected


@pytest.mark.parametrize(
    ("agent", "client", "version", "platform"),
    [
        pytest.param("Docker-Client/24.0.7 (linux)", "docker", "24.0.7", "linux", id="docker-cli"),
        pytest.param("Buildah/1.33.2", "buildah", "1.33.2", "unknownplatform", id="buildah"),
        pytest.param(
            "containers/5.29.1 (github.com/containers/image)",
            "containers-image",
            "5.29.1",
            "unknownplatform",
            id="containers-image",
        ),
        pytest.param("Wget2/2.1.0", "wget", "2.1.0", "unknownplatform", id="wget2"),
        pytest.param(
            "docker/dev go/go1.20.4 git-commit/abc kernel/6.5.0 os/linux arch/arm64",
            "docker",
            None,
            "linux",
            id="docker-dev-build",
        ),
    ],
)
def test_more_container_tools_and_downloaders(
    agent: str, client: str, version: str | None, platform: str
) -> None:
    """Found by importing real agents into a live server: these had no client (or, Wget2, no
    version)."""
    parsed = parse_agent(agent)
    assert (parsed.client, parsed.client_version, parsed.platform) == (client, version, platform)


def test_a_cut_short_pip_json_written_with_spaces_still_tells_platform_and_runtime() -> None:
    spaced = (
        'pip/24.0 {"ci": true, "cpu": "x86_64", "implementation": {"name": "CPython", '
        '"version": "3.12.1"}, "system": {"name": "Linux", "rele'
    )
    parsed = parse_agent(spaced)
    assert (parsed.platform, parsed.runtime, parsed.ci) == ("linux", "CPython 3.12.1", "ci")
