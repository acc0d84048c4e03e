"""Where a partition key lands: the service's placement, checked against vectors from the .NET and
JavaScript SDKs (both taken from the service's implementation) and against the JavaScript SDK itself."""

from __future__ import annotations

import json
import random
import shutil
import subprocess
from typing import Final

import pytest
from azure.eventhub._buffered_producer._partition_resolver import generate_hash_code
from hypothesis import given
from hypothesis import strategies as st

from tests.servers import ROOT
from worker.sending.placement import hash_code, partition_for_key

COUNTS: Final = (2, 4, 8, 32)


def ids(count: int) -> list[str]:
    return [str(i) for i in range(count)]


def placements(key: str) -> tuple[str, ...]:
    return tuple(partition_for_key(key, ids(count)) for count in COUNTS)


# The .NET SDK's hash-code vectors (PartitionResolverTests.PartitionHashTestCases), with the partition
# for 2, 4, 8 and 32 partitions worked out by hand from the hash alone: C#'s truncating remainder and
# Math.Abs, i.e. abs(hash) mod count (e.g. -15263: 15263 = 2*7631+1 = 4*3815+3 = 8*1907+7 = 32*476+31).
# Their UTF-8 lengths run from 1 to 120 bytes (91, 110 and 120 span several blocks; 120 ends on a full one).
DOTNET_VECTORS: Final = [
    ("7", -15263, ("1", "3", "7", "31")),
    ("131", 30562, ("0", "2", "2", "2")),
    ("7149583486996073602", 12977, ("1", "1", "1", "17")),
    ("FWfAT", -22341, ("1", "1", "5", "5")),
    ("sOdeEAsyQoEuEFPGerWO", -6503, ("1", "3", "7", "7")),
    (
        "FAyAIctPeCgmiwLKbJcyswoHglHVjQdvtBowLACDNORsYvOcLddNJYDmhAVkbyLOrHTKLneMNcbgWVlasVywOByANjs",
        5226,
        ("0", "2", "2", "10"),
    ),
    (
        "1XYM6!(7(lF5wq4k4m*e$Nc!1ezLJv*1YK1Y-C^*&B$O)lq^iUkG(TNzXG;Zi#z2Og*Qq0#^*k):vXh$3,C7We7%W0meJ;b3,rQCg^J;^twXgs5E$$hWKxqp",
        23950,
        ("0", "2", "6", "14"),
    ),
    (
        "E(x;RRIaQcJs*P;D&jTPau-4K04oqr:lF6Z):ERpo&;9040qyV@G1_c9mgOs-8_8/10Fwa-7b7-yP!T-!IH&968)FWuI;(^g$2fN;)HJ^^yTn:",
        -29304,
        ("0", "0", "0", "24"),
    ),
    ("!c*_!I@1^c", 15372, ("0", "0", "4", "12")),
    ("p4*!jioeO/z-!-;w:dh", -3104, ("0", "0", "0", "0")),
    ("$0cb", 26269, ("1", "1", "5", "29")),
    ("-4189260826195535198", 453, ("1", "1", "5", "5")),
]

# Non-ASCII keys, produced once with the JavaScript SDK (@azure/event-hubs 6.0.4,
# hashPartitionKey and mapPartitionKeyToId): (key, hash, partition for 2, 4, 8 and 32 partitions).
NON_ASCII: Final = [
    ("é", -24812, ("0", "0", "4", "12")),
    ("café", 23999, ("1", "3", "7", "31")),
    ("naïve-Zürich", 5438, ("0", "2", "6", "30")),
    ("Ünïcödé/runs/ärger", -11469, ("1", "1", "5", "13")),
    ("日本語", -23353, ("1", "1", "1", "25")),
    ("東京/実験/1", -1829, ("1", "1", "5", "5")),
    ("😀", -17126, ("0", "2", "6", "6")),
    ("🎉 run 🎉", 12742, ("0", "2", "6", "6")),
    ("ключ-раздела", -1209, ("1", "1", "1", "25")),
    ("مفتاح", 11293, ("1", "1", "5", "29")),
    ("Ω≈ç√∫\u02dcµ≤≥÷", 17213, ("1", "1", "5", "29")),
    ("experiments/ñandú/runs/run_ß", -13927, ("1", "3", "7", "7")),
    ("ÿ" * 13, -17271, ("1", "3", "7", "23")),
    ("a😀b", 3524, ("0", "0", "4", "4")),
]


@pytest.mark.parametrize(("key", "expected_hash", "expected"), DOTNET_VECTORS)
def test_the_dotnet_vectors(key: str, expected_hash: int, expected: tuple[str, ...]) -> None:
    assert hash_code(key) == expected_hash
    assert placements(key) == expected


@pytest.mark.parametrize(
    ("key", "count", "expected"),
    [("alphabet", 3, "0"), ("alphabet", 11, "4"), ("TheBestParitionEver", 4, "2"), ("TheWorstParitionEver", 15, "1")],
)
def test_the_javascript_vectors(key: str, count: int, expected: str) -> None:
    assert partition_for_key(key, ids(count)) == expected


@pytest.mark.parametrize(("key", "expected_hash", "expected"), NON_ASCII)
def test_non_ascii_keys_hash_their_utf8_bytes(key: str, expected_hash: int, expected: tuple[str, ...]) -> None:
    assert hash_code(key) == expected_hash
    assert placements(key) == expected


def test_an_empty_key_hashes_to_zero() -> None:
    assert hash_code("") == 0
    assert placements("") == ("0", "0", "0", "0")


def test_surrogates_hash_as_the_utf16_string_would_encode() -> None:
    """Two surrogate code points are one character, a lone one is U+FFFD, as .NET and Node encode them."""
    assert hash_code("\ud83d\ude00") == hash_code("😀")
    assert hash_code("a\ud800b") == hash_code("a\ufffdb")
    assert hash_code("\udc00\ud83d") == hash_code("\ufffd\ufffd")


def test_the_python_sdks_resolver_differs_from_the_service() -> None:
    """The Python SDK's buffered producer floors the remainder and hashes code points: with 4
    partitions it puts "7" (hash -15263, a .NET vector) on 1 and "é" on 1; the service on 3 and 0.
    That is why the hub does not use it."""
    sdk = {key: int(generate_hash_code(key)) for key in ("7", "é")}  # type: ignore[no-untyped-call]
    assert sdk == {"7": -15263, "é": -1243}
    assert {key: str(abs(sdk[key] % 4)) for key in sdk} == {"7": "1", "é": "1"}
    assert {key: partition_for_key(key, ids(4)) for key in sdk} == {"7": "3", "é": "0"}


@given(st.text(st.characters(exclude_categories=()), max_size=60), st.integers(min_value=1, max_value=2048))
def test_a_key_always_lands_on_one_partition_in_range(key: str, count: int) -> None:
    partition = partition_for_key(key, ids(count))
    assert 0 <= int(partition) < count
    assert -0x8000 <= hash_code(key) < 0x8000
    # Stable: the place depends on the key and the count alone, not on what the partitions are called.
    assert partition_for_key(key, [f"p{i}" for i in range(count)]) == f"p{partition}"


# The JavaScript SDK as an oracle -------------------------------------------------------------------

JS_MAPPER: Final = ROOT / "node_modules/@azure/event-hubs/dist/commonjs/impl/partitionKeyToIdMapper.js"
#: Reads a JSON list of keys, writes each key's [hash, partition for each count].
JS_ORACLE: Final = """
const mapper = require(process.argv[1]);
const counts = JSON.parse(process.argv[2]);
let input = "";
process.stdin.on("data", (chunk) => (input += chunk));
process.stdin.on("end", () => {
  const rows = JSON.parse(input).map((key) => [
    mapper.hashPartitionKey(key),
    ...counts.map((count) => String(mapper.mapPartitionKeyToId(key, count))),
  ]);
  process.stdout.write(JSON.stringify(rows));
});
"""


def oracle_keys() -> list[str]:
    """A few hundred keys: ASCII, Latin-1, CJK, emoji, lone surrogates, empty, and every tail length."""
    rng = random.Random(20250214)
    alphabets = [
        [chr(c) for c in range(0x20, 0x7F)],
        [chr(c) for c in range(0xA0, 0x100)],
        [chr(c) for c in range(0x4E00, 0x9FFF, 7)],
        [chr(c) for c in range(0x1F300, 0x1FAFF, 5)],
        ["a", "é", "語", "😀", "/", "-"],
    ]
    keys = ["", "\ud800", "a\udc00b", "\ud83d\ude00"]
    for alphabet in alphabets:
        keys += ["".join(rng.choices(alphabet, k=rng.randint(1, 40))) for _ in range(40)]
    # ASCII and mixed keys of every byte length from 1 to 49: every tail length after 0 to 4 blocks.
    keys += ["".join(rng.choices(alphabets[0], k=n)) for n in range(1, 50)]
    keys += [f"run/{'é' * n}" for n in range(20)]
    return keys


@pytest.mark.integration
def test_placement_matches_the_javascript_sdk() -> None:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed: the JavaScript SDK cannot be asked")
    if not JS_MAPPER.is_file():
        pytest.skip("@azure/event-hubs is not installed (npm ci): the JavaScript SDK cannot be asked")
    keys = oracle_keys()
    assert {len(key) % 12 for key in keys if key.isascii() and len(key) > 12} == set(range(12))  # every tail length
    done = subprocess.run(
        [node, "-e", JS_ORACLE, str(JS_MAPPER), json.dumps(COUNTS)],
        input=json.dumps(keys),
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    theirs = [tuple(row) for row in json.loads(done.stdout)]
    ours = [(hash_code(key), *placements(key)) for key in keys]
    assert len(theirs) == len(keys)
    assert [(key, o, t) for key, o, t in zip(keys, ours, theirs, strict=True) if o != t] == []
