"""A direct upload's parts: sizes that cover the file, within S3's limits."""

from common.files import direct

MIB = 1024 * 1024
PART = 8 * MIB


def test_part_sizes_cover_the_file():
    assert direct.part_sizes(1, PART) == [1]
    assert direct.part_sizes(PART, PART) == [PART]
    assert direct.part_sizes(PART + 1, PART) == [PART, 1]
    sizes = direct.part_sizes(40 * MIB + 3, PART)
    assert sum(sizes) == 40 * MIB + 3 and len(sizes) == 6 and sizes[-1] == 3
