"""RFC 3074 hash. RFC 3074 gives no worked examples (no test vectors); the known answers below
are worked by hand from its section 6 definition and mixing table."""

import random

import pytest

from hubspoke import assign
from hubspoke.rfc3074 import MIXING_TABLE, NUM_BUCKETS, bucket_of, client_bucket, client_hash_key


def test_table_is_a_permutation_in_the_rfc_order() -> None:
    assert sorted(MIXING_TABLE) == list(range(256))
    assert MIXING_TABLE[:8] == (251, 175, 119, 215, 81, 14, 79, 191)
    assert MIXING_TABLE[-6:] == (170, 68, 6, 169, 234, 151)
    assert NUM_BUCKETS == assign.NUM_BUCKETS == 256


@pytest.mark.parametrize(
    ("key", "bucket", "worked"),
    [
        (b"", 0, "hash starts as the length, 0; no bytes"),
        (b"\x00", 175, "T[1 ^ 0] = T[1]"),
        (b"\x01", 251, "T[1 ^ 1] = T[0]"),
        (b"\x00\x00", 150, "T[2] = 119, then T[119 ^ 0] = T[119]"),
        (b"\x01\x02", 170, "last byte first: T[2 ^ 2] = 251, then T[251 ^ 1] = T[250]"),
        (b"\x02\x01", 252, "T[2 ^ 1] = T[3] = 215, then T[215 ^ 2] = T[213]"),
    ],
)
def test_known_answers_worked_from_the_table(key: bytes, bucket: int, worked: str) -> None:
    assert bucket_of(key) == bucket, worked


def test_length_seeds_the_hash_modulo_256() -> None:
    # 256 zero bytes: the length seed wraps to 0, exactly as an empty seed would.
    h = 0
    for _ in range(256):
        h = MIXING_TABLE[h]
    assert bucket_of(bytes(256)) == h


@pytest.mark.parametrize(
    ("client_id", "chaddr", "expected"),
    [
        (
            b"\x01\xaa\xbb\xcc\xdd\xee\xff",
            b"\x00\x11\x22\x33\x44\x55",
            b"\x01\xaa\xbb\xcc\xdd\xee\xff",
        ),
        (None, b"\x00\x11\x22\x33\x44\x55", b"\x00\x11\x22\x33\x44\x55"),
        (b"", b"\x00\x11\x22\x33\x44\x55", b"\x00\x11\x22\x33\x44\x55"),
    ],
    ids=["option-61-wins", "no-option-61-uses-chaddr", "empty-option-61-uses-chaddr"],
)
def test_client_hash_key(client_id: bytes | None, chaddr: bytes, expected: bytes) -> None:
    assert client_hash_key(client_id, chaddr) == expected
    assert client_bucket(client_id, chaddr) == bucket_of(expected)


def chi_square(buckets: list[int]) -> float:
    counts = [0] * 256
    for b in buckets:
        counts[b] += 1
    expected = len(buckets) / 256
    return sum((c - expected) ** 2 / expected for c in counts)


def test_random_macs_spread_over_every_bucket() -> None:
    rng = random.Random(3074)
    buckets = [bucket_of(rng.randbytes(6)) for _ in range(256 * 100)]
    assert set(buckets) == set(range(256))
    # 255 degrees of freedom: mean 255, sd ~23. A loose bound, far above chance failures.
    assert chi_square(buckets) < 400


def test_sequential_macs_of_one_vendor_spread_over_every_bucket() -> None:
    base = int.from_bytes(bytes.fromhex("00163e000000"), "big")
    buckets = [bucket_of((base + i).to_bytes(6, "big")) for i in range(256 * 100)]
    assert set(buckets) == set(range(256))
    assert chi_square(buckets) < 400


def test_client_ids_with_the_hardware_type_byte_spread_too() -> None:
    rng = random.Random(61)
    buckets = [bucket_of(b"\x01" + rng.randbytes(6)) for _ in range(256 * 100)]
    assert chi_square(buckets) < 400
