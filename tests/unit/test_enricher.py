"""The enrichment glue the pipeline uses: addresses, DNT, ids, keys and the per-import caches."""

from __future__ import annotations

import hashlib
import random
from pathlib import Path

import pyarrow as pa
import pytest

from eventport.domain.exclusions import ExclusionRules
from eventport.enrich import enricher as enricher_module
from eventport.enrich.agents import MAX_AGENT_CHARS
from eventport.enrich.enricher import (
    NO_PLACE,
    PLACE_COLUMNS,
    Enricher,
    canonical_address,
    do_not_track,
    open_enricher,
    origin_key,
)
from eventport.enrich.ip import IpEnricher
from tests.unit.extension import with_and_without
from tests.unit.test_enrich_ip import write_mmdb

KEY = bytes(range(32))


@pytest.fixture(scope="module")
def enricher() -> Enricher:
    made = open_enricher(enabled=True, key=KEY)
    assert made is not None
    return made


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("8.8.8.8", "8.8.8.8"),
        (" 8.8.8.8 ", "8.8.8.8"),
        ("::ffff:8.8.8.8", "8.8.8.8"),
        ("2001:4860:4860:0:0:0:0:8888", "2001:4860:4860::8888"),
        ("152.241.796.177", None),
        ("", None),
        ("example.com", None),
        # with a port, or a list (an enrichment hunt: refused as invalid before)
        ("45.33.21.77:443", "45.33.21.77"),
        ("[2600:3c00::42]:443", "2600:3c00::42"),
        ("[::ffff:8.8.8.8]", "8.8.8.8"),
        ("129.146.77.88, 10.0.0.1", "129.146.77.88"),
        (" 2001:db8::1 ,8.8.8.8", "2001:db8::1"),
        ("1.2.3.4:65536", None),
        ("1.2.3.4:", None),
        ("[1.2.3.4]:80", None),
        (", 8.8.8.8", None),
        ("example.com:443", None),
    ],
)
def test_canonical_address(text: str, canonical: str | None) -> None:
    assert canonical_address(text) == canonical


@pytest.mark.parametrize(
    ("headers", "dnt"),
    [
        (None, False),
        ([], False),
        ([("DNT", "1")], True),
        ([("dnt", " 1 ")], True),
        ([("Sec-GPC", "1")], True),
        ([("DNT", "0")], False),
        ([("X-DNT", "1")], False),
        ([("Accept", "*/*"), ("sec-gpc", "1")], True),
        # CGI's environment names (an enrichment hunt: not honoured before)
        ([("HTTP_DNT", "1")], True),
        ([("http_sec_gpc", "1")], True),
        ([("HTTP-DNT", "1")], False),  # no CGI name: a header of its own
    ],
)
def test_do_not_track(headers: list[tuple[str, str]] | None, dnt: bool) -> None:
    assert do_not_track(headers) is dnt


def test_origin_key_prefers_the_setting_and_checks_its_length() -> None:
    def stored() -> bytes:
        return b"s" * 32

    assert origin_key(None, stored) == b"s" * 32
    assert origin_key("00" * 16, stored) == bytes(16)
    assert origin_key("a passphrase of some length", stored) == b"a passphrase of some length"
    with pytest.raises(ValueError, match="16 bytes"):
        origin_key("short", stored)
    with pytest.raises(ValueError, match="16 bytes"):
        Enricher(b"short", None)
    # BLAKE2b's keys stop at 64 bytes: a longer secret is refused, not cut (two secrets that
    # differ past the 64th byte would give the same ids).
    assert origin_key("ab" * 64, stored) == b"\xab" * 64
    assert origin_key("x" * 64, stored) == b"x" * 64
    for longer in ("ab" * 65, "x" * 65):
        with pytest.raises(ValueError, match="at most 64 bytes"):
            origin_key(longer, stored)
    with pytest.raises(ValueError, match="at most 64 bytes"):
        Enricher(b"x" * 65, None)


def test_disabled_enrichment_is_none() -> None:
    assert open_enricher(enabled=False, key=KEY) is None


def test_places_and_ids(enricher: Enricher) -> None:
    run = enricher.for_import(ExclusionRules())
    google = dict(zip(PLACE_COLUMNS, run.place("8.8.8.8"), strict=True))
    assert google["origin_country"] == "US"
    assert google["cloud_provider_name"] == "Google Cloud"
    assert google["origin_connection_type"] == "hosting"
    private = run.place("10.0.0.1")
    assert private[1:] == NO_PLACE[1:]  # no location for a private address...
    assert private[0] != google["endpoint_id"]  # ...but an endpoint id of its own
    # Ids are keyed hashes: stable for the key, different for another key or input.
    origin = run.origin("8.8.8.8", "curl/8.5.0")
    assert len(origin) == 32
    assert int(origin, 16) >= 0
    assert run.origin("8.8.8.8", "curl/8.5.0") == origin
    assert run.origin("8.8.8.8", "curl/8.4.0") != origin
    assert run.origin("8.8.4.4", "curl/8.5.0") != origin
    other = Enricher(bytes(32), enricher.ip).for_import(ExclusionRules())
    assert other.origin("8.8.8.8", "curl/8.5.0") != origin
    assert other.place("8.8.8.8")[0] != google["endpoint_id"]
    # An origin id is not the endpoint id of the same address.
    assert origin != google["endpoint_id"]


def _addresses(count: int, seed: int) -> list[str]:
    """Public-looking IPv4 texts in 40 networks (so that many share a place), some twice, and a
    few that are not public."""
    rng = random.Random(seed)
    networks = [f"{rng.randint(1, 223)}.{rng.randint(0, 255)}" for _ in range(40)]
    texts = [
        f"{rng.choice(networks)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}" for _ in range(count)
    ]
    return texts + texts[: count // 10] + ["10.0.0.1", "192.168.1.1", "::1"]


def test_places_of_many_addresses_are_those_of_each_alone(enricher: Enricher) -> None:
    """Addresses of the same place share one Place object and one set of values (made once an
    import); the answers are those of each address looked up on its own."""
    texts = list(dict.fromkeys(_addresses(1500, seed=3)))
    run = enricher.for_import(ExclusionRules())
    together = run.places(texts)
    ip = IpEnricher()
    alone = []
    for text in texts:  # a new import for each: nothing remembered from the address before
        alone.append(Enricher(KEY, ip).for_import(ExclusionRules()).places([text])[0])
    assert together == alone
    assert enricher.ip is not None
    assert enricher.ip.shares_places
    shared = {id(place) for place in enricher.ip.lookup_many(texts).values()}
    assert len(shared) < len(texts) // 2
    assert len(run._made) < len(texts) // 2
    assert run.places(texts) == together  # made again from what the run remembers


def test_places_with_an_override_are_those_of_each_alone(tmp_path: Path) -> None:
    """An override answers by the address: nothing is shared, and the answers are the same as
    looked up one at a time."""
    asn_db = write_mmdb(
        tmp_path / "asn.mmdb",
        "GeoLite2-ASN",
        {"52.94.0.0/16": {"autonomous_system_number": 16509}, "8.0.0.0/8": {}},
    )
    ip = IpEnricher(asn_database=asn_db)
    assert not ip.shares_places
    texts = [*list(dict.fromkeys(_addresses(500, seed=4))), "52.94.76.1", "52.94.1.2"]
    run = Enricher(KEY, ip).for_import(ExclusionRules())
    together = run.places(texts)
    alone = [Enricher(KEY, ip).for_import(ExclusionRules()).place(text) for text in texts]
    assert [values for values, _ in together] == alone
    amazon = dict(zip(PLACE_COLUMNS, together[-1][0], strict=True))
    assert amazon["cloud_provider_name"] == "Amazon Web Services"  # the override's owner
    assert not run._made


def test_agents_and_owner_rules(enricher: Enricher) -> None:
    googlebot = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
    monitor = "My-Monitor/1.0 (+https://example.com)"
    default = enricher.for_import(ExclusionRules())
    values, excluded = default.agent(googlebot)
    assert excluded is True
    assert values[1] == "googlebot"
    assert default.agent(monitor)[1] is False
    assert default.agent(None) == (("unknownplatform", None, None, None, None), False)
    pip = (
        'pip/24.0 {"ci":true,"implementation":{"name":"CPython","version":"3.11.7"},'
        '"system":{"name":"Linux"}}'
    )
    assert default.agent(pip) == (("linux", "pip", "24.0", "CPython 3.11.7", "ci"), False)

    custom = enricher.for_import(
        ExclusionRules(exclude_bots=False, user_agent_substrings=("my-monitor",))
    )
    assert custom.agent(googlebot)[1] is False
    assert custom.agent(monitor)[1] is True


def test_a_huge_agent_is_matched_whole_and_not_remembered(enricher: Enricher) -> None:
    """An owner's substrings are looked for in the whole agent (its reading is of the first
    MAX_AGENT_CHARS characters), and an agent longer than that is not kept in the import's
    memo: 100,000 agents of up to 1 MiB each would have been."""
    rules = ExclusionRules(exclude_bots=False, user_agent_substrings=("tail-marker",))
    custom = enricher.for_import(rules)
    huge = "curl/8.5.0 " + "x" * 100_000 + " tail-marker"
    assert custom.agent(huge) == (("unknownplatform", "curl", "8.5.0", None, None), True)
    assert custom.agent(huge[:MAX_AGENT_CHARS])[1] is False
    assert huge not in custom._agents
    assert huge[:MAX_AGENT_CHARS] in custom._agents


TEXTS = [
    "",
    "8.8.8.8\ncurl/8.5.0",
    "2001:db8::1\n",
    "x" * 127,
    "y" * 128,  # one block exactly
    "z" * 129,
    "é€😀" * 100,  # several blocks of multi-byte text
]


@pytest.fixture(params=["C", "hashlib"])
def compiled(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> bool:
    return with_and_without(request, monkeypatch, enricher_module) == "C"


@pytest.mark.parametrize("width", [8, 4, 1], ids=["eight", "four", "one-by-one"])
def test_many_pairs_of_every_length_hash_as_hashlib_hashes_them(
    enricher: Enricher, width: int
) -> None:
    """pair_digests hashes eight messages at a time where the CPU can (AVX-512F), else four
    (AVX2): messages of one to four blocks side by side, a lane taking the next message when
    its own is done, and a last set of lanes left part empty; every digest is hashlib's."""
    hashing = enricher_module._hashing
    if hashing is None:
        pytest.skip("the _hashing extension is not compiled")
    was = hashing.blake2b_lanes()
    rng = random.Random(11)
    lengths = [0, 1, 14, 63, 126, 127, 128, 129, 200, 255, 256, 257, 400]
    firsts = ["".join(rng.choice("0123456789.:abé") for _ in range(n)) for n in lengths]
    seconds = ["".join(rng.choice("Mozilla/5.0 (X11) 😀") for _ in range(n)) for n in lengths]
    count = 1_003  # not a multiple of eight
    first_at = [rng.randrange(len(firsts)) for _ in range(count)]
    second_at = [rng.randrange(len(seconds)) for _ in range(count)]
    digester = enricher.pair_digester(b"origin")
    try:
        if hashing.blake2b_lanes(width) != width:
            pytest.skip(f"this CPU cannot hash {width} messages at a time")
        raw = digester(pa.array(firsts), pa.array(first_at), pa.array(seconds), pa.array(second_at))
    finally:
        hashing.blake2b_lanes(was)
    for k, (i, j) in enumerate(zip(first_at, second_at, strict=True)):
        message = f"{firsts[i]}\n{seconds[j]}".encode()
        want = hashlib.blake2b(message, key=KEY, digest_size=16, person=b"origin").digest()
        assert raw[16 * k : 16 * k + 16] == want, (len(message), k)


def test_a_column_hashes_as_each_value_does(enricher: Enricher, compiled: bool) -> None:
    one = enricher.hasher(b"origin")
    column = enricher.column_hasher(b"origin")
    texts = pa.array(["ignored", *TEXTS])[1:]  # a sliced array: offsets start past 0
    assert column(texts).to_pylist() == [one(t) for t in TEXTS]
    assert column(pa.array([], pa.string())).to_pylist() == []
    with pytest.raises(ValueError, match="missing"):
        column(pa.array(["a", None]))


def test_origins_of_two_columns_are_the_single_origins(enricher: Enricher) -> None:
    run = enricher.for_import(ExclusionRules())
    addresses = pa.array(["8.8.8.8", "8.8.8.8", "2001:db8::1"])
    agents = pa.array(["curl/8.5.0", None, "pip/24"])
    assert run.origins(addresses, agents).to_pylist() == [
        run.origin("8.8.8.8", "curl/8.5.0"),
        run.origin("8.8.8.8", None),
        run.origin("2001:db8::1", "pip/24"),
    ]


def test_pairs_hash_as_their_joined_texts(enricher: Enricher, compiled: bool) -> None:
    """Pairs named by position hash as the text ``first + "\\n" + second`` does, whichever
    128-byte block the newline falls in (sliced, null-holding and chunked inputs included)."""
    one = enricher.hasher(b"origin")
    pairs = enricher.pair_hasher(b"origin")
    firsts = pa.array(["ignored", "", "8.8.8.8", None, "a" * 127, "b" * 128, "é€😀" * 40])[1:]
    seconds = pa.chunked_array([["curl/8.5.0", ""], ["c" * 129, "😀" * 70]]).combine_chunks()
    usable = [i for i in range(len(firsts)) if firsts[i].is_valid]
    first_at = [i for i in usable for _ in range(len(seconds))]
    second_at = [j for _ in usable for j in range(len(seconds))]
    got = pairs(firsts, pa.array(first_at), seconds, pa.array(second_at, pa.int32()))
    want = [
        one(f"{firsts[i].as_py()}\n{seconds[j].as_py()}")
        for i, j in zip(first_at, second_at, strict=True)
    ]
    assert got.to_pylist() == want
    assert (
        pairs(firsts, pa.array([], pa.int64()), seconds, pa.array([], pa.int64())).to_pylist() == []
    )
    raw = enricher.pair_digester(b"origin")(
        firsts, pa.array(first_at), seconds, pa.array(second_at, pa.int32())
    )
    assert [raw[k : k + 16].hex() for k in range(0, len(raw), 16)] == want
    if compiled:
        with pytest.raises(ValueError, match="outside"):
            pairs(firsts, pa.array([len(firsts)]), seconds, pa.array([0]))
