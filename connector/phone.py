"""A shortcut for phone numbers already written as `+` and digits, exact to `phonenumbers`.

`phonenumbers.parse` + `is_valid_number` cost ~75 us a number, most of a first sync's time.
Numbers written the canonical way (`+46701234567`) need little of that work: the country
code is a prefix of 1-3 digits, the rest is the national significant number, and the number
is valid when it matches the patterns of its region. `canonical_digits` does just that,
with the patterns of `phonenumbers`' own metadata compiled once per country code.

It answers only when it is sure, and with what `phonenumbers` gives: the E.164 digits of a
valid number. Anything else (another shape, a national prefix after the country code, a
number it finds invalid) gets `None`, and the caller takes the full path, which gives the
number or the reason it is refused. `tests/test_phone.py` checks it against the full path.

`phonenumbers` is imported when the first number is looked at (about 20 ms): a pass that
finds nothing changed maps no row and never needs it. `library_version` reads its version
from the installed package's metadata instead.
"""

from __future__ import annotations

import functools
import importlib.metadata
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from phonenumbers.phonemetadata import PhoneMetadata, PhoneNumberDesc

_CANONICAL = re.compile(r"\+([1-9][0-9]{2,19})", re.ASCII)
_NSN_LENGTHS = range(2, 18)  # what `phonenumbers.parse` keeps as a national number
_NON_GEO = "001"
_SEPARATORS = str.maketrans("", "", " -.()\u00a0")
_MAX_TEXT = 250  # `parse` refuses longer text, separators or not


@dataclass(frozen=True)
class _Desc:
    """One `PhoneNumberDesc`: the lengths it allows (empty: any) and its pattern."""

    lengths: frozenset[int]
    pattern: str | None  # None: matches nothing

    def allows(self, length: int) -> bool:
        return self.pattern is not None and (not self.lengths or length in self.lengths)


def _desc(desc: PhoneNumberDesc | None) -> _Desc:
    if desc is None or not desc.national_number_pattern:
        return _Desc(frozenset(), None)
    return _Desc(frozenset(desc.possible_length or ()), desc.national_number_pattern)


@dataclass(frozen=True)
class _Region:
    """One region's validity test: its general pattern, then any one of its number types,
    as one alternation per length (`phonenumbers`' `_number_type_helper` is not UNKNOWN
    exactly when the general description and one type description match). Each length's
    pattern is compiled when first needed: a country's numbers mostly have one or two
    lengths, and a short pass should not pay for the others."""

    leading: re.Pattern[str] | None  # leading_digits: which region of a shared code
    general: _Desc
    types: tuple[_Desc, ...]
    by_length: dict[int, re.Pattern[str] | None] = field(default_factory=dict)

    def valid(self, nsn: str) -> bool:
        length = len(nsn)
        if length not in self.by_length:
            self.by_length[length] = self._compile(length)
        pattern = self.by_length[length]
        return pattern is not None and pattern.fullmatch(nsn) is not None

    def _compile(self, length: int) -> re.Pattern[str] | None:
        if not self.general.allows(length):
            return None
        alternatives = [d.pattern for d in self.types if d.pattern is not None
                        and d.allows(length)]
        if not alternatives:
            return None
        any_type = "|".join(f"(?:{p})" for p in alternatives)
        return re.compile(f"(?=(?:{self.general.pattern})\\Z)(?:{any_type})")


def _region(metadata: PhoneMetadata) -> _Region:
    types = [metadata.premium_rate, metadata.toll_free, metadata.shared_cost, metadata.voip,
             metadata.personal_number, metadata.pager, metadata.uan, metadata.voicemail,
             metadata.fixed_line]
    if not metadata.same_mobile_and_fixed_line_pattern:
        types.append(metadata.mobile)
    leading = re.compile(metadata.leading_digits) if metadata.leading_digits else None
    return _Region(leading, _desc(metadata.general_desc), tuple(_desc(d) for d in types))


@dataclass(frozen=True)
class _Country:
    """One country calling code: the national prefix `parse` would strip, and its regions in
    the order `phonenumbers.region_code_for_number` tries them."""

    national_prefix: re.Pattern[str] | None
    regions: tuple[_Region, ...]

    def valid(self, nsn: str) -> bool:
        if len(self.regions) == 1:
            return self.regions[0].valid(nsn)
        for region in self.regions:  # as `_region_code_for_number_from_list`
            if region.leading is not None:
                if region.leading.match(nsn):
                    return region.valid(nsn)
            elif region.valid(nsn):
                return True
        return False


def _country(code: int) -> _Country | None:
    from phonenumbers.phonemetadata import PhoneMetadata

    names = _calling_codes()[code]
    if names == (_NON_GEO,):
        found = [PhoneMetadata.metadata_for_nongeo_region(code, None)]
    else:
        found = [PhoneMetadata.metadata_for_region(name, None) for name in names]
    metadata = [m for m in found if m is not None]
    if not metadata or len(metadata) != len(names):
        return None  # no metadata for one of them: leave it to the full path
    main = metadata[0]  # `region_code_for_country_code`: the code's main region
    prefix = main.national_prefix_for_parsing
    return _Country(re.compile(prefix) if prefix else None,
                    tuple(_region(m) for m in metadata))


_countries: dict[int, _Country | None] = {}


@functools.cache
def _calling_codes() -> Mapping[int, tuple[str, ...]]:
    from phonenumbers import COUNTRY_CODE_TO_REGION_CODE

    return COUNTRY_CODE_TO_REGION_CODE


@functools.cache
def library_version() -> str:
    """The installed `phonenumbers`' version (its metadata: shapes every mapped number)."""
    try:
        return importlib.metadata.version("phonenumbers")
    except importlib.metadata.PackageNotFoundError:  # not installed as a distribution
        import phonenumbers

        return str(phonenumbers.__version__)


def canonical_digits(text: str) -> str | None:
    """The E.164 digits (no `+`) of a valid number written `+` and digits, else None.
    Spaces, dashes, dots and parentheses between them are dropped first, as `parse` does."""
    match = _CANONICAL.fullmatch(text)
    if match is None and len(text) <= _MAX_TEXT:
        match = _CANONICAL.fullmatch(text.translate(_SEPARATORS))
    if match is None:
        return None
    digits = match.group(1)
    codes = _calling_codes()
    for size in (1, 2, 3):
        code = int(digits[:size])
        if code in codes:
            break
    else:
        return None
    nsn = digits[size:]
    if code not in _countries:
        _countries[code] = _country(code)
    country = _countries[code]
    if country is None or len(nsn) not in _NSN_LENGTHS:
        return None
    if country.national_prefix is not None and country.national_prefix.match(nsn):
        return None  # `parse` may strip it: the full path decides
    return digits if country.valid(nsn) else None
