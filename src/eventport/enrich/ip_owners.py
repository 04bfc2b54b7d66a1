"""Who owns a network and what kind of connection that makes: one curated table, one rule table.

An address's owner comes from an ASN look-up: the bundled geoip2fast data gives the owner's
organisation name (MaxMind's GeoLite2 "autonomous system organization") but not the AS number;
a configured GeoLite2-ASN database gives both. So each curated network lists the providers' own
AS numbers (matched when the number is known) and the organisation names MaxMind publishes for
those networks (matched otherwise). A unit test checks that every name is present in the bundled
data, so a data update that renames a provider fails a test instead of silently losing it.

Cloud providers are told apart by AS number or name only, not by their published prefix lists:
that needs no download, and a provider's own AS carries its customers' traffic. The price is
that a provider's corporate traffic on the same AS counts as cloud traffic too (Google's AS15169
announces both Google Cloud and Google's own services; Microsoft's AS8075 both Azure and
Microsoft 365), which is also how Scarf reports such traffic: hosting, the provider as company.

Everything else is classified by keyword rules on the organisation name, and only where the
name says so; "business" is stated in the curated table, and by the rule for banks and credit
unions, whose names ("Federal Credit Union", "Police Bank") would otherwise read as government.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

#: When the curated table was last checked against the bundled data (reported as its date).
TABLE_REVIEWED = "2026-12-07"


@dataclass(frozen=True, slots=True)
class Owner:
    """What an IP address's network owner contributes to a place."""

    company: str | None
    domain: str | None = None
    connection_type: str | None = None
    cloud_provider_name: str | None = None
    cloud_provider_domain: str | None = None


@dataclass(frozen=True, slots=True)
class KnownNetwork:
    """A curated owner and how to recognise its networks."""

    owner: Owner
    asns: tuple[int, ...]
    org_names: tuple[str, ...]


def _cloud(
    provider: str,
    provider_domain: str,
    company_domain: str,
    asns: tuple[int, ...],
    org_names: tuple[str, ...],
) -> KnownNetwork:
    owner = Owner(provider, company_domain, "hosting", provider, provider_domain)
    return KnownNetwork(owner, asns, org_names)


def _business(
    company: str, domain: str, asns: tuple[int, ...], org_names: tuple[str, ...]
) -> KnownNetwork:
    return KnownNetwork(Owner(company, domain, "business"), asns, org_names)


# fmt: off
KNOWN_NETWORKS: tuple[KnownNetwork, ...] = (
    # provider (also the company), its cloud's site, company domain, own ASNs, GeoLite2 org names
    _cloud("Amazon Web Services", "aws.amazon.com", "amazonaws.com", (16509, 14618, 8987),
           ("AMAZON-02", "AMAZON-AES", "Amazon Data Services Ireland Ltd")),
    _cloud("Google Cloud", "cloud.google.com", "google.com", (15169, 396982, 19527, 139070),
           ("GOOGLE", "GOOGLE-CLOUD-PLATFORM", "GOOGLE-2", "Google Asia Pacific Pte. Ltd.",
            "GOOGLE CLOUD NETWORKING", "Google Singapore Pte. Ltd.", "GOOGLE-PRIVATE-CLOUD")),
    _cloud("Microsoft Azure", "azure.microsoft.com", "microsoft.com", (8075,),
           ("MICROSOFT-CORP-MSN-AS-BLOCK",)),
    _cloud("DigitalOcean", "digitalocean.com", "digitalocean.com", (14061,), ("DIGITALOCEAN-ASN",)),
    _cloud("Hetzner", "hetzner.com", "hetzner.com", (24940, 213230, 212317),
           ("Hetzner Online GmbH",)),
    _cloud("OVHcloud", "ovhcloud.com", "ovhcloud.com", (16276,), ("OVH SAS",)),
    _cloud("Akamai Cloud (Linode)", "linode.com", "akamai.com", (63949,),
           ("Akamai Connected Cloud",)),
    _cloud("Akamai", "akamai.com", "akamai.com", (20940, 16625),
           ("Akamai International B.V.", "AKAMAI-AS", "AKAMAI", "Akamai Technologies Tokyo ASN")),
    _cloud("Oracle Cloud", "cloud.oracle.com", "oracle.com", (31898,), ("ORACLE-BMC-31898",)),
    _cloud("Alibaba Cloud", "alibabacloud.com", "alibabacloud.com", (45102, 37963),
           ("Alibaba US Technology Co., Ltd.", "Hangzhou Alibaba Advertising Co.,Ltd.",
            "Alibaba Cloud Singapore Private Limited")),
    _cloud("Cloudflare", "cloudflare.com", "cloudflare.com", (13335, 209242),
           ("CLOUDFLARENET", "Cloudflare London, LLC", "Cloudflare, Inc.", "Cloudflare Inc",
            "CLOUDFLARENET-SFO", "CLOUDFLARENET-SFO05", "Cloudflare Sydney, LLC")),
    _cloud("Vultr", "vultr.com", "vultr.com", (20473,), ("AS-CHOOPA", "AS-CHOOPA3")),
    _cloud("Scaleway", "scaleway.com", "scaleway.com", (12876,), ("Scaleway S.a.s.",)),
    _cloud("Tencent Cloud", "tencentcloud.com", "tencent.com", (132203, 45090),
           ("Tencent Building, Kejizhongyi Avenue",
            "Shenzhen Tencent Computer Systems Company Limited")),
    _cloud("IBM Cloud", "cloud.ibm.com", "ibm.com", (36351,), ("SOFTLAYER",)),
    _cloud("Fastly", "fastly.com", "fastly.com", (54113,), ("FASTLY",)),
    _cloud("GitHub", "github.com", "github.com", (36459,), ("GITHUB",)),
    _cloud("Contabo", "contabo.com", "contabo.com", (51167, 141995),
           ("Contabo GmbH", "Contabo Asia Private Limited")),
    _cloud("Huawei Cloud", "huaweicloud.com", "huawei.com", (136907,),
           ("HUAWEI CLOUDS", "Huawei Cloud Service data center")),
    _cloud("Leaseweb", "leaseweb.com", "leaseweb.com", (60781, 16265),
           ("LeaseWeb Netherlands B.V.", "LeaseWeb Network B.V.", "Leaseweb Deutschland GmbH",
            "Leaseweb Uk Limited", "Leaseweb Asia Pacific pte. ltd.", "Leaseweb Japan K.K.",
            "LEASEWEB AUSTRALIA PTY LIMITED", "LEASEWEB-USA-WDC", "LEASEWEB-USA-LAX",
            "LEASEWEB-USA-SEA", "LEASEWEB-USA-PHX", "LEASEWEB-USA-SFO", "LEASEWEB-USA-MIA",
            "LEASEWEB-USA-CHI", "LEASEWEB-USA-DAL", "LEASEWEB-USA-NYC")),
    # names only: their AS numbers are not checked here (a wrong one would claim a network)
    _cloud("IONOS", "ionos.com", "ionos.com", (), ("IONOS SE",)),
    _cloud("netcup", "netcup.com", "netcup.com", (), ("netcup GmbH",)),
    _cloud("Kamatera", "kamatera.com", "kamatera.com", (),
           ("KAMATERA", "Kamatera Inc", "Kamatera, Inc.")),
    _cloud("UpCloud", "upcloud.com", "upcloud.com", (), ("UpCloud Ltd", "UPCLOUDUSA")),
    _cloud("Hostwinds", "hostwinds.com", "hostwinds.com", (), ("HOSTWINDS",)),
    _cloud("Hostinger", "hostinger.com", "hostinger.com", (),
           ("Hostinger International Limited",)),
    # companies whose own networks carry their staff and services, not customers' machines
    _business("Apple", "apple.com", (714, 6185), ("APPLE-ENGINEERING", "APPLE-AUSTIN")),
    _business("Meta", "meta.com", (32934,), ("FACEBOOK",)),
    _business("Microsoft", "microsoft.com", (3598,), ("MICROSOFT-CORP-AS",)),
    _business("Google", "google.com", (), ("GOOGLE-IT", "Google Ireland Limited",
                                           "Google Switzerland GmbH")),
)

# First match wins, so the more specific kinds come first ("Federal University" is education,
# "Telecom Hosting" hosting). Patterns are matched case-insensitively against the org name.
CONNECTION_TYPE_RULES: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (kind, re.compile(pattern, re.IGNORECASE)) for kind, pattern in (
        # banks and credit unions before government: "Federal Credit Union", "Police Bank"
        ("business", r"credit[- ]union|\bbank\b|\bbanco\b|\bbancorp|caixa economica"
                     r"|savings bank|commercial join"),
        ("education", r"universi|college|school|academ|\bedu\b|\beducation|research network"
                      r"|hochschule|polytechnic|institute of technology"
                      # registry handles: HARVARD-UNIV, UNIV-OF-OKLAHOMA, MARSHALLUNIV; US
                      # school districts: HOUSTON-ISD, FORSYTH-K12-GA
                      r"|univ(?![a-z])|\bisd\b|\bk-?12\b"),
        ("government", r"government|\bgov\b|\.gov\b|\bministry\b|ministerio|minist[eè]re|federal"
                       r"|state agency|department of|\bcounty\b|municipal|city of |parliament"
                       r"|\bdod\b|armed forces|military|police|tribunal|prefeitura|procuradoria"),
        # "IDC": an internet data centre, as Asian hosts name themselves ("IDC Frontier")
        ("hosting", r"hosting|\bhost\b|data ?cent(er|re)|colocation|\bcolo\b|\bvps\b|\bidc\b"
                    r"|\bservers?\b|\bclouds?\b|\bcdn\b"),
        ("isp", r"tele(com|kom|communica|comunica|fon|phone)|broadband|\bcable|communications?\b"
                r"|mobile|wireless|cellular|\bisp\b|internet service|internet provider|\bdsl\b"
                r"|\bfib(er|re)\b"
                # large consumer ISPs whose AS names carry none of the words above
                r"|comcast|verizon|vodafone|orange|\bat&t\b|att-internet|\buunet\b"
                r"|charter|spectrum|\btwc\b|\bcox\b|\bcxa\b|centurylink|qwest|\blumen\b"
                r"|frontier|cellco|t-mobile|sprint|\bjio\b|infocomm|airtel|\bkpn\b|telstra"
                r"|bell canada|\bbacom\b|starlink|\bfree sas\b|rogers|telus|virgin media"),
    )
)
# fmt: on

# AS handles such as "COMCAST-7922", "AS-CHOOPA" or "DIGITALOCEAN-ASN" carry registry
# decoration around the name; only all-capital handles are touched, never a written-out name.
_AS_HANDLE = re.compile(r"[A-Z0-9][A-Z0-9-]*")
_HANDLE_DECORATION = re.compile(r"^ASN?-|-ASN?\d*$|-\d+$")


def connection_type_for(org_name: str) -> str | None:
    """The connection type an organisation name states, or None when it says nothing."""
    for kind, pattern in CONNECTION_TYPE_RULES:
        if pattern.search(org_name):
            return kind
    return None


def presentable_company(org_name: str) -> str:
    """The organisation name without AS-handle decoration; names are otherwise kept as given."""
    name = " ".join(org_name.split())
    if _AS_HANDLE.fullmatch(name):
        trimmed = _HANDLE_DECORATION.sub("", name)
        if trimmed:
            return trimmed
    return name


class OwnerDirectory:
    """Resolves (AS number, organisation name) to an Owner, remembering each answer.

    The memory is bounded by the data: one entry per distinct owner seen (the bundled data
    has ~72,000 organisation names), and it saves re-running the rules for every address.
    """

    def __init__(self, networks: tuple[KnownNetwork, ...] = KNOWN_NETWORKS) -> None:
        self._by_asn = {asn: net.owner for net in networks for asn in net.asns}
        self._by_name = {name.casefold(): net.owner for net in networks for name in net.org_names}
        self._seen: dict[tuple[int | None, str], Owner] = {}

    def owner(self, asn: int | None, org_name: str) -> Owner:
        key = (asn, org_name)
        owner = self._seen.get(key)
        if owner is None:
            owner = self._resolve(asn, org_name)
            self._seen[key] = owner
        return owner

    def _resolve(self, asn: int | None, org_name: str) -> Owner:
        known = self._by_asn.get(asn) if asn is not None else None
        if known is None:
            known = self._by_name.get(org_name.casefold())
        if known is not None:
            return known
        if not org_name:
            return Owner(None)
        return Owner(presentable_company(org_name), connection_type=connection_type_for(org_name))
